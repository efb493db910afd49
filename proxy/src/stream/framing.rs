//! How the ciphertext travels upstream so the upstream can verify it: an
//! aws-chunked body with a CRC32C trailer computed on the fly (S3 checks it
//! before storing), or the bare ciphertext where aws-chunked is not accepted
//! (GCS). Lengths are exact, so Content-Length is known before the first byte.

use bytes::Bytes;

use super::checksum::Crc32c;
use crate::format::{HEADER_LEN, Room, SEGMENT_LEN, SegmentBuf, TAG_LEN, ciphertext_len};

/// How the upstream body is framed and protected (`CLOUDTASER_S3PROXY_UPLOAD_INTEGRITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UploadIntegrity {
    /// CRC32C trailer, except on GCS, which cannot take one.
    Auto,
    /// aws-chunked body with an `x-amz-checksum-crc32c` trailer over the ciphertext.
    Crc32cTrailer,
    /// `UNSIGNED-PAYLOAD`: the upstream relies on TLS alone.
    Unsigned,
}

const TRAILER_NAME: &str = "x-amz-checksum-crc32c";
/// `x-amz-checksum-crc32c:` + 8 base64 characters + CRLF.
const TRAILER_LINE_LEN: u64 = TRAILER_NAME.len() as u64 + 1 + 8 + 2;

/// Sealed segments per aws-chunk (the first chunk carries the stream header
/// too): 16 × 65,552 bytes, just over 1 MiB. Against one chunk per segment
/// this cut the in-memory upstream's decoding by about a quarter and the
/// proxy's CPU per PUT GB by about 5%, at the edge of the noise
/// (docs/PERFORMANCE.md, issue 15). The chunk is only
/// framing: no bytes are held back to build it, the segments still go out
/// one buffer each as they are sealed, so memory stays as it was.
const SEGMENTS_PER_CHUNK: u64 = 16;
const CHUNK_BODY_LEN: u64 = SEGMENTS_PER_CHUNK * SEALED_SEGMENT_LEN;
const SEALED_SEGMENT_LEN: u64 = SEGMENT_LEN + TAG_LEN as u64;

/// A chunk-size line for any chunk: up to 6 hex digits and CRLF
/// (a chunk is at most 1,048,884 bytes, 6 digits).
const CHUNK_LINE_ROOM: usize = 8;

pub enum UploadFraming {
    Raw,
    Crc32cTrailer(Box<Chunker>),
}

/// Where the aws-chunked body stands: the trailer's running CRC32C and the
/// bytes left in the stream and in the open chunk.
pub struct Chunker {
    crc: Crc32c,
    /// Ciphertext bytes not yet framed.
    stream_left: u64,
    /// Bytes of the open chunk still to come; 0 before a chunk starts.
    chunk_left: u64,
    first: bool,
}

impl UploadFraming {
    /// The framing for a stream sealed from `plaintext_len` bytes.
    pub fn new(integrity: UploadIntegrity, plaintext_len: u64) -> Self {
        match integrity {
            UploadIntegrity::Crc32cTrailer | UploadIntegrity::Auto => UploadFraming::Crc32cTrailer(Box::new(Chunker {
                crc: Crc32c::default(),
                stream_left: ciphertext_len(plaintext_len),
                chunk_left: 0,
                first: true,
            })),
            UploadIntegrity::Unsigned => UploadFraming::Raw,
        }
    }

    /// Upstream headers describing this framing: (name, value) pairs.
    pub fn headers(&self, plaintext_len: u64) -> Vec<(&'static str, String)> {
        match self {
            UploadFraming::Raw => {
                vec![("content-length", ciphertext_len(plaintext_len).to_string())]
            }
            UploadFraming::Crc32cTrailer(_) => vec![
                ("content-length", self.framed_len(plaintext_len).to_string()),
                ("x-amz-decoded-content-length", ciphertext_len(plaintext_len).to_string()),
                ("x-amz-trailer", TRAILER_NAME.to_owned()),
                // Declares the trailer's algorithm as the SDKs do. S3 requires
                // it (or Content-MD5, impossible here without buffering) on
                // writes that set or inherit an object-lock retention period.
                ("x-amz-sdk-checksum-algorithm", "CRC32C".to_owned()),
            ],
        }
    }

    pub fn is_chunked(&self) -> bool {
        matches!(self, UploadFraming::Crc32cTrailer(_))
    }

    /// Bytes on the wire for a stream sealed from `plaintext_len` bytes: the
    /// header and the first [`SEGMENTS_PER_CHUNK`] segments make one chunk,
    /// every further [`SEGMENTS_PER_CHUNK`] segments one more, the rest the last.
    pub fn framed_len(&self, plaintext_len: u64) -> u64 {
        let sealed = ciphertext_len(plaintext_len);
        let UploadFraming::Crc32cTrailer(_) = self else {
            return sealed;
        };
        let first = sealed.min(HEADER_LEN as u64 + CHUNK_BODY_LEN);
        let rest = sealed - first;
        let full = rest / CHUNK_BODY_LEN;
        let tail = rest % CHUNK_BODY_LEN;
        chunk_len(first)
            + full * chunk_len(CHUNK_BODY_LEN)
            + if tail > 0 { chunk_len(tail) } else { 0 }
            + 3
            + TRAILER_LINE_LEN
            + 2
    }

    /// The room the sealer leaves around each buffer for [`Self::frame`]:
    /// a chunk-size line in front, CRLF behind.
    pub fn room(&self) -> Room {
        match self {
            UploadFraming::Raw => Room::default(),
            UploadFraming::Crc32cTrailer(_) => Room { front: CHUNK_LINE_ROOM, back: 2 },
        }
    }

    /// Frames one sealed buffer laid out as [`Self::room`] says, in place:
    /// the chunk-size line goes into the front room of a chunk's first
    /// buffer, the closing CRLF into the back room of its last, so no byte is
    /// copied and no tiny frame is written on its own.
    pub fn frame(&mut self, mut buf: SegmentBuf, out: &mut Vec<Bytes>) {
        let Room { front, back } = self.room();
        let len = buf.len() - front - back;
        let UploadFraming::Crc32cTrailer(chunker) = self else {
            out.push(buf.freeze());
            return;
        };
        chunker.crc.update(&buf[front..front + len]);
        let mut start = front;
        if chunker.chunk_left == 0 {
            let limit = if chunker.first { HEADER_LEN as u64 + CHUNK_BODY_LEN } else { CHUNK_BODY_LEN };
            chunker.first = false;
            chunker.chunk_left = chunker.stream_left.min(limit);
            let line = format!("{:x}\r\n", chunker.chunk_left);
            start = front - line.len();
            buf[start..front].copy_from_slice(line.as_bytes());
        }
        // The sealer emits the header, then whole segments, so a buffer never
        // straddles a chunk boundary; if it did, the body would not match the
        // Content-Length already sent.
        assert!(len as u64 <= chunker.chunk_left, "a sealed buffer straddles an aws-chunk boundary");
        chunker.chunk_left -= len as u64;
        chunker.stream_left -= len as u64;
        let mut end = front + len;
        if chunker.chunk_left == 0 {
            buf[end..end + 2].copy_from_slice(b"\r\n");
            end += 2;
        }
        out.push(buf.freeze().slice(start..end));
    }

    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if let UploadFraming::Crc32cTrailer(chunker) = self {
            out.push(Bytes::from(format!("0\r\n{TRAILER_NAME}:{}\r\n\r\n", chunker.crc.base64())));
        }
    }
}

fn chunk_len(n: u64) -> u64 {
    let hex_digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as u64;
    hex_digits + 2 + n + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Header, Sealer};

    fn sealed(len: u64, room: Room) -> Vec<SegmentBuf> {
        let mut sealer = Sealer::new(&[1; 32], Header::new(0, len, [2; 32]).unwrap()).with_room(room);
        let mut sealed = Vec::new();
        sealer.update(&vec![7u8; len as usize], &mut sealed).unwrap();
        sealer.finish(&mut sealed).unwrap();
        sealed
    }

    /// Object sizes at the edges: empty, around a segment, around a chunk
    /// (16 segments, 1 MiB of plaintext) and around two chunks.
    fn boundary_sizes() -> Vec<u64> {
        let chunk = SEGMENTS_PER_CHUNK * SEGMENT_LEN;
        let mut sizes = vec![0, 1, SEGMENT_LEN - 1, SEGMENT_LEN, SEGMENT_LEN + 1, 5 * SEGMENT_LEN + 77];
        for edge in [chunk - SEGMENT_LEN, chunk, 2 * chunk, 3 * chunk + 5 * SEGMENT_LEN] {
            sizes.extend([edge - 1, edge, edge + 1]);
        }
        sizes
    }

    /// Frames a stream fed to the sealer `piece` bytes at a time.
    fn wire(len: u64, piece: usize) -> (UploadFraming, Vec<Bytes>) {
        let mut framing = UploadFraming::new(UploadIntegrity::Crc32cTrailer, len);
        let mut sealer = Sealer::new(&[1; 32], Header::new(0, len, [2; 32]).unwrap()).with_room(framing.room());
        let mut wire = Vec::new();
        let plain = vec![7u8; len as usize];
        let mut sealed = Vec::new();
        for p in plain.chunks(piece) {
            sealer.update(p, &mut sealed).unwrap();
        }
        sealer.finish(&mut sealed).unwrap();
        for c in sealed {
            framing.frame(c, &mut wire);
        }
        framing.finish(&mut wire);
        (framing, wire)
    }

    /// The data-chunk sizes named by the chunk-size lines of a framed body.
    fn chunk_sizes(mut wire: &[u8]) -> Vec<u64> {
        let mut sizes = Vec::new();
        loop {
            let eol = wire.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = u64::from_str_radix(std::str::from_utf8(&wire[..eol]).unwrap(), 16).unwrap();
            if size == 0 {
                return sizes;
            }
            sizes.push(size);
            wire = &wire[eol + 2 + size as usize + 2..];
        }
    }

    #[test]
    fn frames_in_place_to_exact_length_and_decodable_chunks() {
        for len in boundary_sizes() {
            for piece in [1000, SEGMENT_LEN as usize, 3 << 20] {
                let (framing, wire) = wire(len, piece);
                let total: usize = wire.iter().map(Bytes::len).sum();
                let fresh = UploadFraming::new(UploadIntegrity::Crc32cTrailer, len);
                assert_eq!(total as u64, fresh.framed_len(len), "len={len} piece={piece}");
                assert_eq!(framing.framed_len(len), fresh.framed_len(len));

                let wire = Bytes::from(wire.concat());
                let mut decoder = crate::stream::aws_chunked::ChunkedDecoder::any_trailers();
                let mut decoded = Vec::new();
                decoder.feed(wire.clone(), &mut decoded).unwrap();
                decoder.finish().unwrap();
                let ciphertext = sealed(len, Room::default()).concat();
                assert_eq!(decoded.concat(), ciphertext, "len={len}");
                let mut crc = Crc32c::default();
                crc.update(&ciphertext);
                assert_eq!(decoder.trailers(), [(TRAILER_NAME.to_owned(), crc.base64())], "len={len}");

                // The header rides in the first chunk; every chunk but the
                // last carries 16 whole segments.
                let sizes = chunk_sizes(&wire);
                assert_eq!(sizes.iter().sum::<u64>(), ciphertext.len() as u64);
                assert_eq!(sizes[0], (ciphertext.len() as u64).min(HEADER_LEN as u64 + CHUNK_BODY_LEN));
                for s in sizes.iter().skip(1).take(sizes.len().saturating_sub(2)) {
                    assert_eq!(*s, CHUNK_BODY_LEN, "len={len}");
                }
                let segments = crate::format::segment_count(len);
                assert_eq!(sizes.len() as u64, segments.div_ceil(SEGMENTS_PER_CHUNK), "len={len}");
            }
        }
    }

    #[test]
    fn framed_len_of_known_sizes() {
        let framing = UploadFraming::new(UploadIntegrity::Crc32cTrailer, 0);
        // 0 bytes: header + empty final segment = 68 bytes, "44\r\n" … "\r\n",
        // then "0\r\n", the trailer line and the final CRLF.
        assert_eq!(framing.framed_len(0), 4 + 68 + 2 + 3 + TRAILER_LINE_LEN + 2);
        // 1 MiB: one chunk of 52 + 16 × 65,552 = 1,048,884 bytes (6 hex digits).
        assert_eq!(framing.framed_len(1 << 20), 8 + 1_048_884 + 2 + 3 + TRAILER_LINE_LEN + 2);
        // 1 MiB + 1: that chunk, then a chunk of 1 + 16 bytes ("11").
        assert_eq!(framing.framed_len((1 << 20) + 1), 8 + 1_048_884 + 2 + 4 + 17 + 2 + 3 + TRAILER_LINE_LEN + 2);
        let raw = UploadFraming::new(UploadIntegrity::Unsigned, 0);
        for len in boundary_sizes() {
            assert_eq!(raw.framed_len(len), ciphertext_len(len));
        }
    }
}
