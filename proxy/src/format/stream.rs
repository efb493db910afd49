//! Incremental sealing and opening of a whole stream, fed in arbitrary chunks.

use bytes::{Bytes, BytesMut};

use super::FormatError;
use super::header::{HEADER_LEN, Header};
use super::segment::{SegmentCipher, TAG_LEN};
use super::size::{SEGMENT_LEN, segment_count};

/// Turns plaintext chunks into the header followed by sealed segments.
pub struct Sealer {
    cipher: SegmentCipher,
    segments: u64,
    next_index: u64,
    remaining: u64,
    pending: Vec<u8>,
    header_sent: bool,
}

impl Sealer {
    pub fn new(data_key: &[u8; 32], header: Header) -> Self {
        Self {
            cipher: SegmentCipher::new(data_key, &header),
            segments: segment_count(header.plaintext_len),
            next_index: 0,
            remaining: header.plaintext_len,
            pending: Vec::with_capacity(SEGMENT_LEN as usize + TAG_LEN),
            header_sent: false,
        }
    }

    /// Feeds plaintext; sealed output (the header first) is pushed to `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        self.emit_header(out);
        if input.len() as u64 > self.remaining {
            return Err(FormatError::LengthMismatch {
                declared: self.declared(),
                actual: self.declared() - self.remaining + input.len() as u64,
            });
        }
        while !input.is_empty() {
            let want = (SEGMENT_LEN as usize - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..want]);
            input = &input[want..];
            self.remaining -= want as u64;
            let segment_full = self.pending.len() == SEGMENT_LEN as usize;
            // The last segment is sealed in finish(), once the end is confirmed.
            if segment_full && self.remaining > 0 {
                out.push(self.seal_pending(false));
            }
        }
        Ok(())
    }

    /// Ends the stream; fails unless exactly the declared length was fed.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        self.emit_header(out);
        if self.remaining != 0 {
            return Err(FormatError::LengthMismatch {
                declared: self.declared(),
                actual: self.declared() - self.remaining,
            });
        }
        if self.next_index < self.segments {
            out.push(self.seal_pending(true));
        }
        Ok(())
    }

    fn declared(&self) -> u64 {
        u64::from_be_bytes(
            self.cipher.header_bytes()[12..20]
                .try_into()
                .expect("8 bytes"),
        )
    }

    fn emit_header(&mut self, out: &mut Vec<Bytes>) {
        if !self.header_sent {
            self.header_sent = true;
            out.push(Bytes::copy_from_slice(self.cipher.header_bytes()));
        }
    }

    fn seal_pending(&mut self, last: bool) -> Bytes {
        let mut buf = std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(SEGMENT_LEN as usize + TAG_LEN),
        );
        let index = u32::try_from(self.next_index).expect("segment count checked by Header::new");
        self.cipher.seal(index, last, &mut buf);
        self.next_index += 1;
        Bytes::from(buf)
    }
}

/// Turns ciphertext (the header, then segments from `first_segment` on) into
/// plaintext, verifying every segment it needs and where the stream ends.
pub struct Opener {
    data_key: zeroize::Zeroizing<[u8; 32]>,
    expected_len: Option<u64>,
    stream: Option<OpenStream>,
    next_index: u64,
    buf: BytesMut,
    skip: u64,
    take: u64,
}

struct OpenStream {
    cipher: SegmentCipher,
    plaintext_len: u64,
    segments: u64,
    /// The last segment the requested range needs.
    end_segment: u64,
}

impl Opener {
    /// `expected_len` is the plaintext length recorded in the object's
    /// metadata, checked against the header. `skip`/`take` select the
    /// plaintext range out of the segments, starting at `first_segment`.
    pub fn new(
        data_key: &[u8; 32],
        expected_len: Option<u64>,
        first_segment: u64,
        skip: u64,
        take: u64,
    ) -> Self {
        Self {
            data_key: zeroize::Zeroizing::new(*data_key),
            expected_len,
            stream: None,
            next_index: first_segment,
            buf: BytesMut::new(),
            skip,
            take,
        }
    }

    /// The header can arrive separately from the segments (ranged reads).
    pub fn set_header(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        let header = Header::decode(bytes)?;
        let plaintext_len = header.plaintext_len;
        if let Some(expected) = self.expected_len {
            if expected != plaintext_len {
                return Err(FormatError::LengthMismatch {
                    declared: expected,
                    actual: plaintext_len,
                });
            }
        }
        let segments = segment_count(plaintext_len);
        let range_end = self.next_index * SEGMENT_LEN + self.skip + self.take;
        let end_segment = if self.take == 0 {
            self.next_index
        } else {
            (range_end - 1) / SEGMENT_LEN
        };
        if end_segment >= segments || range_end > plaintext_len.max(self.next_index * SEGMENT_LEN) {
            return Err(FormatError::Truncated);
        }
        self.stream = Some(OpenStream {
            cipher: SegmentCipher::new(&self.data_key, &header),
            plaintext_len,
            segments,
            end_segment,
        });
        Ok(())
    }

    /// Feeds ciphertext; verified plaintext is pushed to `out`.
    pub fn update(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        self.buf.extend_from_slice(input);
        if self.stream.is_none() {
            if self.buf.len() < HEADER_LEN {
                return Ok(());
            }
            let header = self.buf.split_to(HEADER_LEN);
            self.set_header(&header)?;
        }
        let sealed = SEGMENT_LEN as usize + TAG_LEN;
        loop {
            let s = self.stream.as_ref().expect("header set");
            if self.next_index > s.end_segment {
                return if self.buf.is_empty() {
                    Ok(())
                } else {
                    Err(FormatError::TrailingData)
                };
            }
            // The final segment is opened in finish(), once the input has ended.
            if self.buf.len() < sealed || self.next_index + 1 >= s.segments {
                return Ok(());
            }
            let segment = self.buf.split_to(sealed);
            self.open_segment(segment, false, out)?;
        }
    }

    /// Ends the input: opens the last needed segment and checks nothing is missing or extra.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        let Some(s) = self.stream.as_ref() else {
            return Err(FormatError::Truncated);
        };
        if self.next_index > s.end_segment {
            return if self.buf.is_empty() {
                Ok(())
            } else {
                Err(FormatError::TrailingData)
            };
        }
        if self.next_index < s.end_segment {
            return Err(FormatError::Truncated);
        }
        let last = self.next_index + 1 == s.segments;
        let plain_len = if last {
            s.plaintext_len - self.next_index * SEGMENT_LEN
        } else {
            SEGMENT_LEN
        };
        let expected = plain_len as usize + TAG_LEN;
        if self.buf.len() < expected {
            return Err(FormatError::Truncated);
        }
        if self.buf.len() > expected {
            return Err(FormatError::TrailingData);
        }
        let segment = self.buf.split();
        self.open_segment(segment, last, out)
    }

    fn open_segment(
        &mut self,
        mut segment: BytesMut,
        last: bool,
        out: &mut Vec<Bytes>,
    ) -> Result<(), FormatError> {
        let s = self.stream.as_ref().expect("header set");
        let index = u32::try_from(self.next_index).map_err(|_| FormatError::TrailingData)?;
        let len = s.cipher.open(index, last, &mut segment)?;
        self.next_index += 1;
        segment.truncate(len);
        let mut plain = segment.freeze();
        let skip = self.skip.min(plain.len() as u64) as usize;
        self.skip -= skip as u64;
        let _ = plain.split_to(skip);
        let keep = self.take.min(plain.len() as u64) as usize;
        plain.truncate(keep);
        self.take -= keep as u64;
        if !plain.is_empty() {
            out.push(plain);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ciphertext_len, segment_span};

    const KEY: [u8; 32] = [7u8; 32];

    fn seal_all(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut sealer = Sealer::new(&KEY, Header::new(0, data.len() as u64, [3u8; 32]).unwrap());
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            sealer.update(c, &mut out).unwrap();
        }
        sealer.finish(&mut out).unwrap();
        out.concat()
    }

    fn open_all(ct: &[u8], chunk: usize, len: u64) -> Result<Vec<u8>, FormatError> {
        let mut opener = Opener::new(&KEY, Some(len), 0, 0, len);
        let mut out = Vec::new();
        for c in ct.chunks(chunk) {
            opener.update(c, &mut out)?;
        }
        opener.finish(&mut out)?;
        Ok(out.concat())
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
        assert_eq!(
            open_all(&flipped, 4096, len),
            Err(FormatError::Authentication(0))
        );
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
        let mut opener = Opener::new(&KEY, None, 0, 0, 2 * SEGMENT_LEN);
        let mut out = Vec::new();
        let r = opener
            .update(&relabeled[..cut], &mut out)
            .and_then(|_| opener.finish(&mut out));
        assert!(r.is_err());
    }

    #[test]
    fn reordered_segments_fail() {
        let seg = SEGMENT_LEN as usize + TAG_LEN;
        let data = vec![1u8; 3 * SEGMENT_LEN as usize];
        let ct = seal_all(&data, 65536);
        let mut swapped = ct.clone();
        swapped[HEADER_LEN..HEADER_LEN + seg]
            .copy_from_slice(&ct[HEADER_LEN + seg..HEADER_LEN + 2 * seg]);
        swapped[HEADER_LEN + seg..HEADER_LEN + 2 * seg]
            .copy_from_slice(&ct[HEADER_LEN..HEADER_LEN + seg]);
        assert!(open_all(&swapped, 9999, data.len() as u64).is_err());
    }

    #[test]
    fn ranged_open_returns_exact_slice() {
        let data: Vec<u8> = (0..(4 * SEGMENT_LEN as usize + 100))
            .map(|i| (i % 253) as u8)
            .collect();
        let ct = seal_all(&data, 50_000);
        let len = data.len() as u64;
        for (a, b) in [
            (0, 0),
            (5, 70_000),
            (SEGMENT_LEN, 2 * SEGMENT_LEN - 1),
            (len - 1, len - 1),
            (3, len - 1),
        ] {
            let span = segment_span(len, a, b);
            let mut opener = Opener::new(&KEY, Some(len), span.first_segment, span.skip, b - a + 1);
            opener.set_header(&ct[..HEADER_LEN]).unwrap();
            let mut out = Vec::new();
            opener
                .update(
                    &ct[span.ciphertext_start as usize..=span.ciphertext_end as usize],
                    &mut out,
                )
                .unwrap();
            opener.finish(&mut out).unwrap();
            assert_eq!(
                out.concat(),
                &data[a as usize..=b as usize],
                "range {a}-{b}"
            );
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
}
