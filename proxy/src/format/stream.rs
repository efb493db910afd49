//! Incremental sealing and opening of a whole stream, fed in arbitrary chunks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::FormatError;
use super::buffer::SegmentBuf;
use super::constants::{HEADER_LEN, MULTIPART_VERSION, SEGMENT_LEN, TAG_LEN, VERSION};
use super::header::Header;
use super::key::DataKey;
use super::layout::{LayoutSpan, ObjectLayout};
use super::segment::SegmentCipher;
use super::size::segment_count;

/// Bytes left free before and after every buffer the sealer emits, so a
/// transport framing can wrap each one in place instead of copying it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    pub front: usize,
    pub back: usize,
}

/// Turns plaintext chunks into the header followed by sealed segments.
/// Each emitted buffer is `room.front` zero bytes, the sealed bytes, then
/// `room.back` zero bytes.
pub struct Sealer {
    cipher: SegmentCipher,
    segments: u64,
    next_index: u64,
    remaining: u64,
    /// A segment that arrived split across input chunks: the front room,
    /// then its plaintext so far, gathered where it will be sealed.
    pending: Option<SegmentBuf>,
    header_sent: bool,
    room: Room,
}

impl Sealer {
    pub fn new(data_key: &[u8; 32], header: Header) -> Self {
        Self {
            cipher: SegmentCipher::new(data_key, &header),
            segments: segment_count(header.plaintext_len),
            next_index: 0,
            remaining: header.plaintext_len,
            pending: None,
            header_sent: false,
            room: Room::default(),
        }
    }

    pub fn with_room(mut self, room: Room) -> Self {
        self.room = room;
        self
    }

    /// Feeds plaintext; sealed output (the header first) is pushed to `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<SegmentBuf>) -> Result<(), FormatError> {
        self.emit_header(out);
        if input.len() as u64 > self.remaining {
            return Err(FormatError::LengthMismatch {
                declared: self.declared(),
                actual: self.declared() - self.remaining + input.len() as u64,
            });
        }
        let segment = SEGMENT_LEN as usize;
        while !input.is_empty() {
            // The last segment is sealed in finish(), once the end is confirmed.
            if self.pending.is_none() && input.len() >= segment && self.remaining > segment as u64 {
                let (plain, rest) = input.split_at(segment);
                input = rest;
                self.remaining -= segment as u64;
                out.push(self.seal_from(plain));
                continue;
            }
            let front = self.room.front;
            let mut buf = match self.pending.take() {
                Some(buf) => buf,
                None => self.segment_buffer(self.remaining.min(segment as u64) as usize),
            };
            let want = (segment - (buf.len() - front)).min(input.len());
            buf.extend_from_slice(&input[..want]);
            input = &input[want..];
            self.remaining -= want as u64;
            if buf.len() - front == segment && self.remaining > 0 {
                out.push(self.seal(buf, false));
            } else {
                self.pending = Some(buf);
            }
        }
        Ok(())
    }

    /// Ends the stream; fails unless exactly the declared length was fed.
    pub fn finish(&mut self, out: &mut Vec<SegmentBuf>) -> Result<(), FormatError> {
        self.emit_header(out);
        if self.remaining != 0 {
            return Err(FormatError::LengthMismatch {
                declared: self.declared(),
                actual: self.declared() - self.remaining,
            });
        }
        if self.next_index < self.segments {
            let buf = match self.pending.take() {
                Some(buf) => buf,
                // An empty object's one (empty) segment.
                None => self.segment_buffer(0),
            };
            out.push(self.seal(buf, true));
        }
        Ok(())
    }

    fn declared(&self) -> u64 {
        u64::from_be_bytes(self.cipher.header_bytes()[12..20].try_into().expect("8 bytes"))
    }

    fn emit_header(&mut self, out: &mut Vec<SegmentBuf>) {
        if !self.header_sent {
            self.header_sent = true;
            let mut buf = SegmentBuf::with_capacity(self.room.front + HEADER_LEN + self.room.back);
            buf.extend_zeros(self.room.front);
            buf.extend_from_slice(self.cipher.header_bytes());
            buf.extend_zeros(self.room.back);
            out.push(buf);
        }
    }

    /// Seals a whole segment that lies in the input straight into a reused
    /// buffer: no copy, and nothing zeroed first (the cipher writes every byte).
    fn seal_from(&mut self, plain: &[u8]) -> SegmentBuf {
        let index = u32::try_from(self.next_index).expect("segment count checked by Header::new");
        let mut buf = self.segment_buffer(plain.len());
        self.cipher.seal_into(index, false, plain, buf.append_for_overwrite(plain.len() + TAG_LEN));
        buf.extend_zeros(self.room.back);
        self.next_index += 1;
        buf
    }

    /// A buffer for one segment of `plain_len` bytes (reused when segment
    /// sized), its front room already in place. A segment split across
    /// inputs is gathered here and sealed where it lies, so its bytes are
    /// copied once, as they must be to be gathered.
    fn segment_buffer(&self, plain_len: usize) -> SegmentBuf {
        let mut buf = SegmentBuf::with_capacity(self.room.front + plain_len + TAG_LEN + self.room.back);
        buf.extend_zeros(self.room.front);
        buf
    }

    /// Seals the plaintext behind the front room of `buf` in place and adds
    /// the tag and the back room.
    fn seal(&mut self, mut buf: SegmentBuf, last: bool) -> SegmentBuf {
        let index = u32::try_from(self.next_index).expect("segment count checked by Header::new");
        let tag = self.cipher.seal_in_place(index, last, &mut buf[self.room.front..]);
        buf.extend_from_slice(&tag);
        buf.extend_zeros(self.room.back);
        self.next_index += 1;
        buf
    }
}

/// Turns ciphertext into verified plaintext: a stream header, its segments,
/// and for multipart objects the next part's header and segments, and so on.
pub struct Opener {
    /// Shared with the key cache, never copied: each stream's key is derived from it.
    data_key: Arc<DataKey>,
    /// `None` for one stream of a length only its header knows (GET ?partNumber).
    layout: Option<ObjectLayout>,
    stream: Option<OpenStream>,
    /// Index in `layout` of the stream the next header starts.
    next_stream: u64,
    /// Part number the next header must carry when there is no layout.
    next_part: u32,
    next_index: u64,
    /// A stream header split across inputs.
    buf: BytesMut,
    /// A sealed segment split across inputs, gathered where it is opened.
    partial: Option<SegmentBuf>,
    skip: u64,
    take: u64,
    /// A whole read must also verify the final segment of the last stream.
    to_end: bool,
    final_seen: bool,
    /// The salt the object's metadata records for its (single) stream.
    expected_salt: Option<[u8; 32]>,
    /// Whether format-2 streams are accepted: only where a manifest has
    /// vouched for the layout.
    manifest_checked: bool,
    /// Format 3: every stream must be version 3, or (an object upgraded in
    /// place by `seal`/`rewrap`) the version its envelope MAC was made over.
    required_version: Option<u8>,
    /// Format 3, whole multipart reads: the SHA-256 the stream headers must
    /// hash to, checked before the last stream's first byte is released.
    streams: Option<(aws_lc_rs::digest::Context, [u8; 32])>,
}

struct OpenStream {
    cipher: SegmentCipher,
    plaintext_len: u64,
    segments: u64,
}

impl Opener {
    /// Reads a whole object.
    pub fn whole(data_key: Arc<DataKey>, layout: ObjectLayout) -> Self {
        let total = layout.total;
        Self::new(data_key, Some(layout), 0, 0, 0, 0, total, true)
    }

    /// Reads `take` plaintext bytes starting at `span`; the ciphertext fed
    /// starts at `span.ciphertext_start`, after the header given to `set_header`.
    pub fn range(data_key: Arc<DataKey>, layout: ObjectLayout, span: &LayoutSpan, take: u64) -> Self {
        Self::new(data_key, Some(layout), span.stream, span.part_number, span.first_segment, span.skip, take, false)
    }

    /// Reads one whole stream whose length its header declares.
    pub fn single_stream(data_key: Arc<DataKey>, part_number: u32) -> Self {
        Self::new(data_key, None, 0, part_number, 0, 0, 0, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        data_key: Arc<DataKey>,
        layout: Option<ObjectLayout>,
        next_stream: u64,
        next_part: u32,
        next_index: u64,
        skip: u64,
        take: u64,
        to_end: bool,
    ) -> Self {
        Self {
            data_key,
            layout,
            stream: None,
            next_stream,
            next_part,
            next_index,
            buf: BytesMut::new(),
            partial: None,
            skip,
            take,
            to_end,
            final_seen: false,
            expected_salt: None,
            manifest_checked: false,
            required_version: None,
            streams: None,
        }
    }

    /// Accepts only streams of `version` (format 3's authenticated envelope
    /// names it).
    pub fn require_version(mut self, version: u8) -> Self {
        self.required_version = Some(version);
        self
    }

    /// Requires the stream headers, read from the first, to hash to
    /// `digest` (format 3's `cloudtaser-streams`). Only for whole reads.
    pub fn expect_streams(mut self, digest: [u8; 32]) -> Self {
        self.streams = Some((aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256), digest));
        self
    }

    /// Accepts format-2 streams: the caller has verified the layout
    /// against the object's manifest (`format::verify_manifest`).
    pub fn manifest_checked(mut self) -> Self {
        self.manifest_checked = true;
        self
    }

    /// Requires the stream's salt to be the one the object's metadata
    /// records, so a body moved from another object under the same data key fails.
    pub fn expect_salt(mut self, salt: Option<[u8; 32]>) -> Self {
        self.expected_salt = salt;
        self
    }

    /// Accepts a stream header; ranged reads fetch it separately.
    pub fn set_header(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        let header = Header::decode(bytes)?;
        let allowed = match self.required_version {
            Some(version) => header.version == version,
            // A format-3 stream is never read under a format-1 or 2 label.
            None if self.manifest_checked => header.version == VERSION || header.version == MULTIPART_VERSION,
            None => header.version == VERSION,
        };
        if !allowed {
            return Err(FormatError::VersionMismatch(header.version));
        }
        if self.expected_salt.is_some_and(|salt| salt != header.salt) {
            return Err(FormatError::MalformedHeader("stream belongs to another object"));
        }
        let plaintext_len = header.plaintext_len;
        match &self.layout {
            Some(layout) => {
                if self.next_stream >= layout.parts {
                    return Err(FormatError::TrailingData);
                }
                let expected = layout.stream(self.next_stream);
                if header.part_number != expected.part_number {
                    return Err(FormatError::MalformedHeader("stream is not the expected part"));
                }
                if expected.plaintext_len != plaintext_len {
                    return Err(FormatError::LengthMismatch {
                        declared: expected.plaintext_len,
                        actual: plaintext_len,
                    });
                }
            }
            None if header.part_number != self.next_part => {
                return Err(FormatError::MalformedHeader("stream is not the expected part"));
            }
            None => self.take = plaintext_len,
        }
        let segments = segment_count(plaintext_len);
        if self.next_index >= segments {
            return Err(FormatError::Truncated);
        }
        if let Some((ctx, _)) = self.streams.as_mut() {
            ctx.update(&bytes[..HEADER_LEN]);
            let last = self.layout.as_ref().is_some_and(|l| self.next_stream + 1 == l.parts);
            if last {
                let (ctx, digest) = self.streams.take().expect("checked above");
                if ctx.finish().as_ref() != digest {
                    return Err(FormatError::Streams);
                }
            }
        }
        self.stream =
            Some(OpenStream { cipher: SegmentCipher::new(self.data_key.bytes(), &header), plaintext_len, segments });
        Ok(())
    }

    fn done(&self) -> bool {
        if self.take != 0 || !self.to_end {
            return self.take == 0;
        }
        match &self.layout {
            // Every stream, empty trailing ones included, has been verified.
            Some(layout) => self.stream.is_none() && self.next_stream == layout.parts,
            None => self.final_seen,
        }
    }

    /// Feeds ciphertext; verified plaintext is pushed to `out`. Segments
    /// whole inside `input` are decrypted straight out of it; a segment split
    /// across inputs is gathered into the buffer it is then opened in.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        loop {
            if self.done() {
                return if self.buf.is_empty() && self.partial.is_none() && input.is_empty() {
                    Ok(())
                } else {
                    Err(FormatError::TrailingData)
                };
            }
            let Some(s) = self.stream.as_ref() else {
                if !gather(&mut self.buf, &mut input, HEADER_LEN) {
                    return Ok(());
                }
                let header = self.buf.split_to(HEADER_LEN);
                self.set_header(&header)?;
                continue;
            };
            let index = u32::try_from(self.next_index).map_err(|_| FormatError::TrailingData)?;
            let last = self.next_index + 1 == s.segments;
            let plain_len = if last { s.plaintext_len - self.next_index * SEGMENT_LEN } else { SEGMENT_LEN } as usize;
            let sealed_len = plain_len + TAG_LEN;
            if self.partial.is_none() && input.len() >= sealed_len {
                // Whole in the input: opened straight into a reused buffer
                // (no copy, nothing zeroed first; the cipher writes every byte).
                let (sealed, rest) = input.split_at(sealed_len);
                input = rest;
                let mut plain = SegmentBuf::with_capacity(plain_len);
                s.cipher.open_into(index, last, sealed, plain.append_for_overwrite(plain_len))?;
                self.emit(plain.freeze(), last, out);
                continue;
            }
            // Split across inputs: gathered into the buffer the plaintext
            // will leave in, and opened there.
            let mut segment = match self.partial.take() {
                Some(partial) => partial,
                None => SegmentBuf::with_capacity(sealed_len),
            };
            let n = (sealed_len - segment.len()).min(input.len());
            segment.extend_from_slice(&input[..n]);
            input = &input[n..];
            if segment.len() < sealed_len {
                self.partial = Some(segment);
                return Ok(());
            }
            let len = s.cipher.open(index, last, &mut segment)?;
            segment.truncate(len);
            self.emit(segment.freeze(), last, out);
        }
    }

    /// Ends the input: everything asked for must have been verified, and nothing more sent.
    pub fn finish(&mut self, _out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        if !self.done() {
            return Err(FormatError::Truncated);
        }
        if !self.buf.is_empty() || self.partial.is_some() {
            return Err(FormatError::TrailingData);
        }
        Ok(())
    }

    /// Hands on the wanted part of a verified segment's plaintext.
    fn emit(&mut self, mut plain: Bytes, last: bool, out: &mut Vec<Bytes>) {
        self.next_index += 1;
        self.final_seen = last;
        if last {
            // The next bytes, if any are wanted, start the next part's stream.
            self.stream = None;
            self.next_index = 0;
            self.next_part += 1;
            self.next_stream += 1;
        }
        let skip = self.skip.min(plain.len() as u64) as usize;
        self.skip -= skip as u64;
        let _ = plain.split_to(skip);
        let keep = self.take.min(plain.len() as u64) as usize;
        plain.truncate(keep);
        self.take -= keep as u64;
        if !plain.is_empty() {
            out.push(plain);
        }
    }
}

/// Moves bytes from `input` into `buf` until it holds `want`; whether it does.
fn gather(buf: &mut BytesMut, input: &mut &[u8], want: usize) -> bool {
    let n = want.saturating_sub(buf.len()).min(input.len());
    buf.extend_from_slice(&input[..n]);
    *input = &input[n..];
    buf.len() >= want
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ciphertext_len;

    const KEY: [u8; 32] = [7u8; 32];

    fn key() -> Arc<DataKey> {
        Arc::new(DataKey::from_slice(&KEY).unwrap())
    }

    fn seal_all(data: &[u8], chunk: usize) -> Vec<u8> {
        seal_part(data, chunk, 0)
    }

    fn seal_part(data: &[u8], chunk: usize, part: u32) -> Vec<u8> {
        seal_header(data, chunk, Header::new(part, data.len() as u64, [part as u8; 32]).unwrap())
    }

    fn seal_header(data: &[u8], chunk: usize, header: Header) -> Vec<u8> {
        let mut sealer = Sealer::new(&KEY, header);
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            sealer.update(c, &mut out).unwrap();
        }
        sealer.finish(&mut out).unwrap();
        out.concat()
    }

    fn open_with(mut opener: Opener, ct: &[u8], chunk: usize) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        for c in ct.chunks(chunk) {
            opener.update(c, &mut out)?;
        }
        opener.finish(&mut out)?;
        Ok(out.concat())
    }

    /// A ranged read as the proxy makes it: the stream header, then the
    /// covering segments only.
    fn read_range(layout: &ObjectLayout, ct: &[u8], a: u64, b: u64, checked: bool) -> Vec<u8> {
        let span = layout.span(a, b);
        let opener = Opener::range(key(), layout.clone(), &span, b - a + 1);
        let mut opener = if checked { opener.manifest_checked() } else { opener };
        let h = span.header_start as usize;
        opener.set_header(&ct[h..h + HEADER_LEN]).unwrap();
        let mut out = Vec::new();
        opener.update(&ct[span.ciphertext_start as usize..=span.ciphertext_end as usize], &mut out).unwrap();
        opener.finish(&mut out).unwrap();
        out.concat()
    }

    fn open_all(ct: &[u8], chunk: usize, len: u64) -> Result<Vec<u8>, FormatError> {
        open_with(Opener::whole(key(), ObjectLayout::single(len)), ct, chunk)
    }

    /// Fills the buffer pool with buffers holding `marker` everywhere.
    fn poison_pool(marker: u8) {
        let bufs: Vec<_> = (0..crate::format::buffer::POOL_LIMIT)
            .map(|_| {
                let mut b = SegmentBuf::with_capacity(crate::format::buffer::POOLED_CAPACITY);
                b.append_for_overwrite(crate::format::buffer::POOLED_CAPACITY).fill(marker);
                b
            })
            .collect();
        drop(bufs);
    }

    /// Reused buffers are never zeroed, so every byte the sealer and the
    /// opener hand on must be one they wrote: with the pool full of 0xAA and
    /// then of 0x55, sealing (with framing room, whole and split segments)
    /// and opening give the same bytes, and the room is zero.
    #[test]
    fn reused_buffers_never_leak_what_they_held() {
        let data: Vec<u8> = (0..3 * SEGMENT_LEN as usize + 77).map(|i| (i % 251) as u8).collect();
        let room = Room { front: 8, back: 2 };
        let seal_with_room = |chunk: usize| {
            let header = Header::new(0, data.len() as u64, [0; 32]).unwrap();
            let mut sealer = Sealer::new(&KEY, header).with_room(room);
            let mut out = Vec::new();
            for c in data.chunks(chunk) {
                sealer.update(c, &mut out).unwrap();
            }
            sealer.finish(&mut out).unwrap();
            out
        };
        for chunk in [1000, SEGMENT_LEN as usize, 3 * SEGMENT_LEN as usize + 1] {
            poison_pool(0xAA);
            let a = seal_with_room(chunk);
            poison_pool(0x55);
            let b = seal_with_room(chunk);
            assert!(a.concat() == b.concat(), "chunk={chunk}: stale bytes reached the output");
            for buf in &a {
                assert!(
                    buf[..room.front].iter().all(|&x| x == 0) && buf[buf.len() - room.back..].iter().all(|&x| x == 0)
                );
            }
            let ct: Vec<u8> = a.iter().flat_map(|b| b[room.front..b.len() - room.back].to_vec()).collect();
            assert!(ct == seal_all(&data, chunk), "the room aside, the same ciphertext as without room");
            poison_pool(0xAA);
            let opened = open_all(&ct, chunk, data.len() as u64).unwrap();
            poison_pool(0x55);
            assert!(opened == data);
            assert!(open_all(&ct, chunk, data.len() as u64).unwrap() == data);
        }
    }

    #[test]
    fn round_trips_at_boundaries_and_chunkings() {
        let seg = SEGMENT_LEN as usize;
        for len in [0, 1, seg - 1, seg, seg + 1, 3 * seg + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for chunk in [1usize, 1000, seg, 3 * seg] {
                if len > 100_000 && chunk == 1 {
                    continue;
                }
                let ct = seal_all(&data, chunk);
                assert_eq!(ct.len() as u64, ciphertext_len(len as u64));
                assert_eq!(open_all(&ct, 4093, len as u64).unwrap(), data);
            }
        }
    }

    #[test]
    fn detects_tamper_truncation_and_extension() {
        let data = vec![5u8; 2 * SEGMENT_LEN as usize + 9];
        let ct = seal_all(&data, 7777);
        let len = data.len() as u64;
        let mut flipped = ct.clone();
        flipped[HEADER_LEN + 100] ^= 1;
        assert_eq!(open_all(&flipped, 4096, len), Err(FormatError::Authentication(0)));
        // Dropping the final segment, or cutting one short, never yields a clean end.
        let cut = HEADER_LEN + 2 * (SEGMENT_LEN as usize + TAG_LEN);
        assert!(open_all(&ct[..cut], 4096, len).is_err());
        assert!(open_all(&ct[..ct.len() - 1], 4096, len).is_err());
        let mut longer = ct.clone();
        longer.push(0);
        assert!(open_all(&longer, 4096, len).is_err());
        // A header rewritten to claim a shorter object breaks every tag.
        let mut relabeled = ct.clone();
        relabeled[12..20].copy_from_slice(&(2 * SEGMENT_LEN).to_be_bytes());
        let mut opener = Opener::single_stream(key(), 0);
        let mut out = Vec::new();
        let r = opener.update(&relabeled[..cut], &mut out).and_then(|_| opener.finish(&mut out));
        assert!(r.is_err());
    }

    #[test]
    fn reordered_segments_fail() {
        let seg = SEGMENT_LEN as usize + TAG_LEN;
        let data = vec![1u8; 3 * SEGMENT_LEN as usize];
        let ct = seal_all(&data, 65536);
        let mut swapped = ct.clone();
        swapped[HEADER_LEN..HEADER_LEN + seg].copy_from_slice(&ct[HEADER_LEN + seg..HEADER_LEN + 2 * seg]);
        swapped[HEADER_LEN + seg..HEADER_LEN + 2 * seg].copy_from_slice(&ct[HEADER_LEN..HEADER_LEN + seg]);
        assert!(open_all(&swapped, 9999, data.len() as u64).is_err());
    }

    #[test]
    fn ranged_open_returns_exact_slice() {
        let data: Vec<u8> = (0..(4 * SEGMENT_LEN as usize + 100)).map(|i| (i % 253) as u8).collect();
        let ct = seal_all(&data, 50_000);
        let len = data.len() as u64;
        for (a, b) in [(0, 0), (5, 70_000), (SEGMENT_LEN, 2 * SEGMENT_LEN - 1), (len - 1, len - 1), (3, len - 1)] {
            let layout = ObjectLayout::single(len);
            assert_eq!(read_range(&layout, &ct, a, b, false), &data[a as usize..=b as usize], "range {a}-{b}");
        }
    }

    #[test]
    fn sealer_rejects_wrong_length() {
        let mut s = Sealer::new(&KEY, Header::new(0, 10, [0; 32]).unwrap());
        let mut out = Vec::new();
        assert!(s.update(&[0; 11], &mut out).is_err());
        let mut s = Sealer::new(&KEY, Header::new(0, 10, [0; 32]).unwrap());
        s.update(&[0; 9], &mut out).unwrap();
        assert!(s.finish(&mut out).is_err());
    }

    fn multipart(data: &[u8], part_len: usize) -> Vec<u8> {
        data.chunks(part_len).enumerate().flat_map(|(i, p)| seal_part(p, 10_000, i as u32 + 1)).collect()
    }

    #[test]
    fn multipart_objects_read_whole_and_by_range() {
        let p = 2 * SEGMENT_LEN as usize;
        let data: Vec<u8> = (0..(3 * p + 777)).map(|i| (i % 241) as u8).collect();
        let ct = multipart(&data, p);
        let layout = ObjectLayout::multipart(p as u64, ct.len() as u64).unwrap();
        assert_eq!(layout.total, data.len() as u64);
        let mut opener = Opener::whole(key(), layout.clone());
        let mut out = Vec::new();
        for c in ct.chunks(5000) {
            opener.update(c, &mut out).unwrap();
        }
        opener.finish(&mut out).unwrap();
        assert_eq!(out.concat(), data);
        let len = data.len() as u64;
        for (a, b) in [(0, 0), (p as u64 - 1, p as u64), (5, len - 1), (2 * p as u64 + 3, len - 2)] {
            assert_eq!(read_range(&layout, &ct, a, b, false), &data[a as usize..=b as usize], "range {a}-{b}");
        }
    }

    #[test]
    fn multipart_parts_swapped_or_dropped_fail() {
        let p = SEGMENT_LEN as usize;
        let data = vec![9u8; 3 * p];
        let parts: Vec<Vec<u8>> = data.chunks(p).enumerate().map(|(i, c)| seal_part(c, p, i as u32 + 1)).collect();
        let swapped = [parts[1].clone(), parts[0].clone(), parts[2].clone()].concat();
        let layout = ObjectLayout::multipart(p as u64, swapped.len() as u64).unwrap();
        let mut opener = Opener::whole(key(), layout.clone());
        assert!(opener.update(&swapped, &mut Vec::new()).is_err());
        let dropped = [parts[0].clone(), parts[1].clone()].concat();
        let mut opener = Opener::whole(key(), layout);
        let mut out = Vec::new();
        let r = opener.update(&dropped, &mut out).and_then(|_| opener.finish(&mut out));
        assert_eq!(r, Err(FormatError::Truncated));
    }

    fn seal_v2(data: &[u8], part: u32) -> Vec<u8> {
        seal_header(data, 10_000, Header::new(part, data.len() as u64, [part as u8; 32]).unwrap().multipart_v2())
    }

    fn open_layout(layout: &ObjectLayout, ct: &[u8], checked: bool) -> Result<Vec<u8>, FormatError> {
        let opener = Opener::whole(key(), layout.clone());
        open_with(if checked { opener.manifest_checked() } else { opener }, ct, 7001)
    }

    #[test]
    fn format_2_uneven_parts_read_whole_and_by_range() {
        let seg = SEGMENT_LEN as usize;
        let data: Vec<u8> = (0..(5 * seg + 12_345)).map(|i| (i % 239) as u8).collect();
        let cuts = [(3u32, 0, 2 * seg + 1), (4, 2 * seg + 1, 4 * seg + 7), (9, 4 * seg + 7, data.len())];
        let ct: Vec<u8> = cuts.iter().flat_map(|(n, a, b)| seal_v2(&data[*a..*b], *n)).collect();
        let table: Vec<(u32, u64)> = cuts.iter().map(|(n, a, b)| (*n, (b - a) as u64)).collect();
        let layout = ObjectLayout::from_parts(&table).unwrap();
        assert_eq!(layout.stored_len(), ct.len() as u64);
        assert_eq!(open_layout(&layout, &ct, true).unwrap(), data);
        // Format-2 streams are refused unless a manifest vouched for the layout.
        assert_eq!(open_layout(&layout, &ct, false), Err(FormatError::VersionMismatch(2)));
        let len = data.len() as u64;
        for (a, b) in
            [(0, len - 1), (2 * seg as u64, 2 * seg as u64 + 1), (2 * seg as u64 + 1, len - 2), (len - 1, len - 1)]
        {
            assert_eq!(read_range(&layout, &ct, a, b, true), &data[a as usize..=b as usize], "range {a}-{b}");
        }
        // Cut back to a prefix of whole parts, read with the full table: never a clean end.
        let prefix = &ct[..layout.stream(2).stored_start as usize];
        assert_eq!(open_layout(&layout, prefix, true), Err(FormatError::Truncated));
        // An empty last part is verified too.
        let with_empty = [ct.clone(), seal_v2(&[], 10)].concat();
        let table_empty: Vec<(u32, u64)> = table.iter().copied().chain([(10, 0)]).collect();
        let layout_empty = ObjectLayout::from_parts(&table_empty).unwrap();
        assert_eq!(open_layout(&layout_empty, &with_empty, true).unwrap(), data);
        assert_eq!(open_layout(&layout_empty, &ct, true), Err(FormatError::Truncated));
    }

    fn seal_v3(data: &[u8], part: u32, salt: u8) -> Vec<u8> {
        seal_header(data, 10_000, Header::new(part, data.len() as u64, [salt; 32]).unwrap().format_3())
    }

    fn headers_digest(ct: &[u8], layout: &ObjectLayout) -> [u8; 32] {
        let headers: Vec<[u8; HEADER_LEN]> = layout
            .streams()
            .iter()
            .map(|s| ct[s.stored_start as usize..s.stored_start as usize + HEADER_LEN].try_into().unwrap())
            .collect();
        crate::format::streams_digest(&headers)
    }

    #[test]
    fn format_3_whole_reads_check_every_header_before_the_last_stream() {
        let seg = SEGMENT_LEN as usize;
        let (a, b): (Vec<u8>, Vec<u8>) = ((0..2 * seg + 5).map(|i| i as u8).collect(), vec![9u8; 1000]);
        let ct = [seal_v3(&a, 1, 1), seal_v3(&b, 2, 2)].concat();
        let layout = ObjectLayout::from_parts(&[(1, a.len() as u64), (2, b.len() as u64)]).unwrap();
        let digest = headers_digest(&ct, &layout);
        let whole = |ct: &[u8], digest: [u8; 32]| {
            let opener = Opener::whole(key(), layout.clone()).manifest_checked().require_version(3);
            let mut out = Vec::new();
            let mut opener = opener.expect_streams(digest);
            let result = opener.update(ct, &mut out).and_then(|_| opener.finish(&mut out));
            (result, out.concat())
        };
        let (ok, plain) = whole(&ct, digest);
        assert_eq!((ok, plain), (Ok(()), [a.clone(), b.clone()].concat()));
        // Another attempt at part 2 (same number and length, another salt):
        // refused before any byte of it is released.
        let other = [seal_v3(&a, 1, 1), seal_v3(&b, 2, 3)].concat();
        let (err, plain) = whole(&other, digest);
        assert_eq!(err, Err(FormatError::Streams));
        assert!(plain.len() <= a.len() && !plain.windows(16).any(|w| w == &b[..16]));
        // Version-2 streams, or a v3 stream under an opener for formats 1/2, are refused.
        let v2 = [seal_v2(&a, 1), seal_v2(&b, 2)].concat();
        assert_eq!(whole(&v2, headers_digest(&v2, &layout)).0, Err(FormatError::VersionMismatch(2)));
        assert_eq!(open_layout(&layout, &ct, true), Err(FormatError::VersionMismatch(3)));
    }
}
