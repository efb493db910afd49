//! How the ciphertext travels upstream so the upstream can verify it: an
//! aws-chunked body with a CRC32C trailer computed on the fly (S3 checks it
//! before storing), or the bare ciphertext where aws-chunked is not accepted
//! (GCS). Lengths are exact, so Content-Length is known before the first byte.

use bytes::{Bytes, BytesMut};

use super::checksum::Crc32c;
use crate::format::{HEADER_LEN, Room, SEGMENT_LEN, TAG_LEN, ciphertext_len, segment_count};

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

/// A chunk-size line for any sealed buffer: up to 6 hex digits and CRLF
/// (a segment is 65,552 bytes, 5 digits).
const CHUNK_LINE_ROOM: usize = 8;

pub enum UploadFraming {
    Raw,
    Crc32cTrailer(Box<Crc32c>),
}

impl UploadFraming {
    pub fn new(integrity: UploadIntegrity) -> Self {
        match integrity {
            UploadIntegrity::Crc32cTrailer | UploadIntegrity::Auto => UploadFraming::Crc32cTrailer(Box::default()),
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

    /// Bytes on the wire for a stream sealed from `plaintext_len` bytes. The
    /// sealer emits the header, then one buffer per segment; each is one chunk.
    pub fn framed_len(&self, plaintext_len: u64) -> u64 {
        let UploadFraming::Crc32cTrailer(_) = self else {
            return ciphertext_len(plaintext_len);
        };
        let segments = segment_count(plaintext_len);
        let last = plaintext_len - (segments - 1) * SEGMENT_LEN + TAG_LEN as u64;
        chunk_len(HEADER_LEN as u64)
            + (segments - 1) * chunk_len(SEGMENT_LEN + TAG_LEN as u64)
            + chunk_len(last)
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
    /// one buffer per chunk, since a write per tiny frame costs more than a
    /// copy, and a copy is not needed.
    pub fn frame(&mut self, mut buf: BytesMut, out: &mut Vec<Bytes>) {
        let Room { front, back } = self.room();
        let len = buf.len() - front - back;
        if let UploadFraming::Crc32cTrailer(crc) = self {
            crc.update(&buf[front..front + len]);
            let line = format!("{len:x}\r\n");
            let start = front - line.len();
            buf[start..front].copy_from_slice(line.as_bytes());
            buf[front + len..].copy_from_slice(b"\r\n");
            out.push(buf.freeze().slice(start..));
        } else {
            out.push(buf.freeze());
        }
    }

    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if let UploadFraming::Crc32cTrailer(crc) = self {
            out.push(Bytes::from(format!("0\r\n{TRAILER_NAME}:{}\r\n\r\n", crc.base64())));
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

    fn sealed(len: u64, room: Room) -> Vec<BytesMut> {
        let mut sealer = Sealer::new(&[1; 32], Header::new(0, len, [2; 32]).unwrap()).with_room(room);
        let mut sealed = Vec::new();
        sealer.update(&vec![7u8; len as usize], &mut sealed).unwrap();
        sealer.finish(&mut sealed).unwrap();
        sealed
    }

    #[test]
    fn frames_in_place_to_exact_length_and_decodable_chunks() {
        for len in [0u64, 1, SEGMENT_LEN - 1, SEGMENT_LEN, SEGMENT_LEN + 1, 5 * SEGMENT_LEN + 77] {
            let mut framing = UploadFraming::new(UploadIntegrity::Crc32cTrailer);
            let mut wire = Vec::new();
            for c in sealed(len, framing.room()) {
                framing.frame(c, &mut wire);
            }
            framing.finish(&mut wire);
            let total: usize = wire.iter().map(Bytes::len).sum();
            assert_eq!(total as u64, framing.framed_len(len), "len={len}");

            let mut decoder = crate::stream::aws_chunked::ChunkedDecoder::default();
            let mut decoded = Vec::new();
            decoder.feed(Bytes::from(wire.concat()), &mut decoded).unwrap();
            decoder.finish().unwrap();
            let ciphertext = sealed(len, Room::default()).concat();
            assert_eq!(decoded.concat(), ciphertext, "len={len}");
            let mut crc = Crc32c::default();
            crc.update(&ciphertext);
            assert_eq!(decoder.trailers(), [(TRAILER_NAME.to_owned(), crc.base64())], "len={len}");
        }
    }
}
