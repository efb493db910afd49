//! Undoes aws-chunked framing, every SDK variant (signed and unsigned
//! chunks, trailers), fed in arbitrary pieces, with bounded lines.

use bytes::{Buf, Bytes};
use http::HeaderMap;

use crate::error::{ArgumentError, BodyError, ProxyError, TrailerError};

/// How the client framed the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Raw,
    AwsChunked,
}

impl BodyEncoding {
    pub fn of(headers: &HeaderMap) -> Self {
        let streaming = header_str(headers, "x-amz-content-sha256").is_some_and(|v| v.starts_with("STREAMING-"));
        let content_encoding = header_str(headers, "content-encoding")
            .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("aws-chunked")));
        if streaming || content_encoding { BodyEncoding::AwsChunked } else { BodyEncoding::Raw }
    }
}

/// The plaintext length the client declared.
pub fn plaintext_length(headers: &HeaderMap, encoding: BodyEncoding) -> Result<u64, ProxyError> {
    let name = match encoding {
        BodyEncoding::AwsChunked => "x-amz-decoded-content-length",
        BodyEncoding::Raw => "content-length",
    };
    match header_str(headers, name) {
        Some(v) => v.trim().parse().map_err(|_| ProxyError::from(ArgumentError::NotANumber { header: name })),
        None => Err(ProxyError::MissingContentLength),
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

const MAX_LINE: usize = 4096;

/// Most trailer lines a body may end with. SDKs send one checksum trailer
/// (`x-amz-checksum-crc32` by default in boto3 >= 1.36, the AWS CLI and
/// the JS SDK v3), plus `x-amz-trailer-signature` in the signed variant;
/// 8 leaves room for any SDK while no body can make the decoder keep more.
/// Without a bound, 40 MiB of trailer lines grew the proxy by 514 MiB.
const MAX_TRAILERS: usize = 8;

/// Most bytes of trailer lines (names and values) a body may carry: the
/// largest line an SDK sends is a SHA-256 trailer of about 70 bytes, or
/// the 64-hex-digit trailer signature.
const MAX_TRAILER_BYTES: usize = 8 << 10;

/// The trailer the signed variant (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`)
/// ends with; `x-amz-trailer` never names it.
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    SizeLine,
    Data(u64),
    DataEnd(u8),
    Trailers,
    Done,
}

/// Incremental aws-chunked decoder. Chunk signatures are not checked: the
/// workload is trusted on loopback and its credentials are never validated.
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
    trailers: Vec<(String, String)>,
    trailer_bytes: usize,
    /// The trailer names the request announced in `x-amz-trailer`; `None`:
    /// any name (the proxy's own framing, read back by tests and tools).
    declared: Option<Vec<String>>,
}

fn malformed(what: &'static str) -> ProxyError {
    BodyError::MalformedChunk(what).into()
}

impl ChunkedDecoder {
    /// A decoder for a client's body: only the trailers its `x-amz-trailer`
    /// header announced are accepted, as S3 does (an undeclared checksum
    /// trailer would otherwise be dropped unchecked).
    pub fn declared_by(headers: &HeaderMap) -> Self {
        let declared = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        Self { declared: Some(declared), ..Self::any_trailers() }
    }

    /// A decoder that accepts trailers of any name (still bounded): for
    /// reading back the proxy's own upstream framing.
    pub fn any_trailers() -> Self {
        Self { state: ChunkState::SizeLine, line: Vec::new(), trailers: Vec::new(), trailer_bytes: 0, declared: None }
    }

    pub fn feed(&mut self, mut input: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProxyError> {
        while input.has_remaining() {
            match self.state {
                ChunkState::SizeLine | ChunkState::Trailers => {
                    let Some(line) = self.take_line(&mut input)? else {
                        continue;
                    };
                    self.state = if self.state == ChunkState::SizeLine {
                        match parse_size(&line)? {
                            0 => ChunkState::Trailers,
                            n => ChunkState::Data(n),
                        }
                    } else if line.is_empty() {
                        ChunkState::Done
                    } else {
                        self.push_trailer(&line)?;
                        ChunkState::Trailers
                    };
                }
                ChunkState::Data(remaining) => {
                    let n = remaining.min(input.len() as u64) as usize;
                    out.push(input.split_to(n));
                    self.state = if remaining == n as u64 {
                        ChunkState::DataEnd(0)
                    } else {
                        ChunkState::Data(remaining - n as u64)
                    };
                }
                ChunkState::DataEnd(seen) => {
                    let expected = b"\r\n"[seen as usize];
                    if input.get_u8() != expected {
                        return Err(malformed("chunk data is not followed by CRLF"));
                    }
                    self.state = if seen == 1 { ChunkState::SizeLine } else { ChunkState::DataEnd(1) };
                }
                ChunkState::Done => return Err(malformed("bytes after the final chunk")),
            }
        }
        Ok(())
    }

    pub fn finish(&self) -> Result<(), ProxyError> {
        match self.state {
            ChunkState::Done => Ok(()),
            _ => Err(BodyError::EndedEarly.into()),
        }
    }

    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Accumulates one CRLF-terminated line; `None` until it is complete.
    fn take_line(&mut self, input: &mut Bytes) -> Result<Option<String>, ProxyError> {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                // Checked here too, or the limit would hold only for lines split across inputs.
                if self.line.len() + i > MAX_LINE {
                    return Err(malformed("a framing line is too long"));
                }
                self.line.extend_from_slice(&input[..i]);
                input.advance(i + 1);
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                String::from_utf8(line).map(Some).map_err(|_| malformed("a framing line is not UTF-8"))
            }
            None => {
                self.line.extend_from_slice(input);
                input.advance(input.len());
                if self.line.len() > MAX_LINE {
                    return Err(malformed("a framing line is too long"));
                }
                Ok(None)
            }
        }
    }

    fn push_trailer(&mut self, line: &str) -> Result<(), ProxyError> {
        self.trailer_bytes += line.len();
        if self.trailers.len() >= MAX_TRAILERS || self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(TrailerError::TooLarge.into());
        }
        let (name, value) = line.split_once(':').ok_or(TrailerError::NoColon)?;
        let name = name.trim().to_ascii_lowercase();
        if let Some(declared) = &self.declared
            && name != TRAILER_SIGNATURE
            && !declared.contains(&name)
        {
            return Err(TrailerError::Undeclared { name }.into());
        }
        if self.trailers.iter().any(|(n, _)| *n == name) {
            return Err(TrailerError::Repeated { name }.into());
        }
        self.trailers.push((name, value.trim().to_owned()));
        Ok(())
    }
}

fn parse_size(line: &str) -> Result<u64, ProxyError> {
    let hex = line.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| malformed("a chunk size is not hexadecimal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Decoded = (Vec<u8>, Vec<(String, String)>);

    fn decode_all(body: &[u8], split: usize) -> Result<Decoded, ProxyError> {
        decode_with(ChunkedDecoder::any_trailers(), body, split)
    }

    fn decode_with(mut d: ChunkedDecoder, body: &[u8], split: usize) -> Result<Decoded, ProxyError> {
        let mut out = Vec::new();
        for part in body.chunks(split) {
            d.feed(Bytes::copy_from_slice(part), &mut out)?;
        }
        d.finish()?;
        Ok((out.concat(), d.trailers().to_vec()))
    }

    #[test]
    fn unsigned_trailer_variant() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        for split in [1, 3, 1000] {
            let (plain, trailers) = decode_all(body, split).unwrap();
            assert_eq!(plain, b"hello world");
            assert_eq!(trailers, vec![("x-amz-checksum-crc32".to_owned(), "DUoRhQ==".to_owned())]);
        }
    }

    #[test]
    fn signed_chunk_variant() {
        let sig = "a".repeat(64);
        let body = format!("5;chunk-signature={sig}\r\nhello\r\n0;chunk-signature={sig}\r\n\r\n");
        let (plain, trailers) = decode_all(body.as_bytes(), 7).unwrap();
        assert_eq!(plain, b"hello");
        assert!(trailers.is_empty());
    }

    #[test]
    fn truncated_or_garbled_bodies_fail() {
        assert!(decode_all(b"5\r\nhel", 100).is_err());
        assert!(decode_all(b"5\r\nhelloXX0\r\n\r\n", 100).is_err());
        assert!(decode_all(b"zz\r\n", 100).is_err());
        assert!(decode_all(b"0\r\n\r\nextra", 100).is_err());
    }

    /// Found by fuzz/fuzz_targets/aws_chunked.rs (fuzz/regressions/aws_chunked/):
    /// a framing line over the limit was refused only when it arrived split
    /// across inputs, and accepted when it came in one piece.
    #[test]
    fn line_limit_does_not_depend_on_the_split() {
        let body = |len: usize| format!("0\r\nx-amz-meta-a:{}\r\n\r\n", "a".repeat(len - 13)).into_bytes();
        for split in [1, 7, 100_000] {
            // The limit counts the line's CR.
            assert!(decode_all(&body(MAX_LINE), split).is_err(), "split {split}");
            assert!(decode_all(&body(MAX_LINE - 1), split).is_ok(), "split {split}");
        }
    }

    fn declaring(trailer: &str) -> ChunkedDecoder {
        let mut h = HeaderMap::new();
        h.insert("x-amz-trailer", trailer.parse().unwrap());
        ChunkedDecoder::declared_by(&h)
    }

    #[test]
    fn only_declared_trailers_are_accepted() {
        let body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
        assert!(decode_with(declaring("x-amz-checksum-crc32"), body, 4).is_ok());
        assert!(decode_with(declaring("X-Amz-Checksum-CRC32 , x-amz-checksum-sha1"), body, 4).is_ok());
        let e = decode_with(declaring("x-amz-checksum-crc32c"), body, 4).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "MalformedTrailerError"));
        let e = decode_with(ChunkedDecoder::declared_by(&HeaderMap::new()), body, 4).unwrap_err();
        assert_eq!(e.code(), "MalformedTrailerError");
        // The signed variant's trailer signature is never declared.
        let signed =
            format!("0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:{}\r\n\r\n", "a".repeat(64));
        assert!(decode_with(declaring("x-amz-checksum-crc32"), signed.as_bytes(), 9).is_ok());
        // Sent twice: refused, so a later value cannot replace a checked one.
        let twice = b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        assert_eq!(
            decode_with(declaring("x-amz-checksum-crc32"), twice, 5).unwrap_err().code(),
            "MalformedTrailerError"
        );
    }

    #[test]
    fn trailers_are_bounded_in_count_and_bytes() {
        let many = |n: usize, len: usize| {
            let mut body = b"0\r\n".to_vec();
            for i in 0..n {
                body.extend_from_slice(format!("x-amz-meta-{i}:{}\r\n", "v".repeat(len)).as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            body
        };
        assert!(decode_all(&many(MAX_TRAILERS, 10), 100).is_ok());
        let e = decode_all(&many(MAX_TRAILERS + 1, 10), 100).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "MalformedTrailerError"));
        assert!(decode_all(&many(3, 3000), 100).unwrap_err().code() == "MalformedTrailerError");
        // Endless trailer lines stop at the bound: nothing grows past it.
        let mut d = ChunkedDecoder::any_trailers();
        let mut out = Vec::new();
        d.feed(Bytes::from_static(b"0\r\n"), &mut out).unwrap();
        let line = Bytes::from(format!("x-amz-meta-a:{}\r\n", "v".repeat(1000)));
        let refused = (0..100).find_map(|_| d.feed(line.clone(), &mut out).err());
        assert_eq!(refused.unwrap().code(), "MalformedTrailerError");
        assert!(d.trailers().len() <= MAX_TRAILERS);
    }
}
