//! aws-chunked request bodies: `ChunkedDecoder` and `ChecksumVerifier`.
//!
//! Input layout: byte 0 picks how the body is split into `feed` calls,
//! byte 1 picks a checksum to verify, the rest is the body as a client sent it.
//!
//! Properties:
//! - nothing panics, whatever the bytes and however they are split;
//! - the result does not depend on the split: accepted or refused alike, and
//!   when accepted the same plaintext and trailers (a decoder that accepts a
//!   body only when it arrives in one piece is a bug);
//! - trailers are lower-case names without surrounding whitespace;
//! - a body we frame ourselves from the plaintext decodes back to it;
//! - the checksum verifier never panics, and gives the same verdict when the
//!   plaintext is fed in pieces as in one.
#![no_main]

use bytes::Bytes;
use cloudtaser_s3proxy::stream::aws_chunked::ChunkedDecoder;
use cloudtaser_s3proxy::stream::checksum::{ChecksumAlgorithm, ChecksumVerifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

type Decoded = (Vec<u8>, Vec<(String, String)>);

/// Feeds `body` cut at the points `cuts` yields; `None` when refused.
fn decode(body: &[u8], mut cuts: impl FnMut() -> usize) -> Option<Decoded> {
    let mut d = ChunkedDecoder::any_trailers();
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = cuts().clamp(1, rest.len());
        let (part, tail) = rest.split_at(n);
        rest = tail;
        d.feed(Bytes::copy_from_slice(part), &mut out).ok()?;
    }
    d.finish().ok()?;
    Some((out.concat(), d.trailers().to_vec()))
}

/// A deterministic stream of split lengths derived from one seed byte.
fn cutter(seed: u8) -> impl FnMut() -> usize {
    let mut state = u32::from(seed) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        match seed % 4 {
            0 => 1,
            1 => (state % 7) as usize + 1,
            2 => (state % 300) as usize + 1,
            _ => (state % 5000) as usize + 1,
        }
    }
}

/// Frames `plain` as aws-chunked with `chunk`-byte chunks and a trailer.
fn frame(plain: &[u8], chunk: usize, signed: bool) -> Vec<u8> {
    let ext = if signed { format!(";chunk-signature={}", "0".repeat(64)) } else { String::new() };
    let mut body = Vec::new();
    for c in plain.chunks(chunk.max(1)) {
        body.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
        body.extend_from_slice(c);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("0{ext}\r\n").as_bytes());
    body.extend_from_slice(b"x-amz-checksum-crc32c:AAAAAA==\r\n\r\n");
    body
}

const ALGORITHMS: [ChecksumAlgorithm; 6] = [
    ChecksumAlgorithm::Md5,
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

/// Runs the verifier over `plain` for the checksum picked by `pick`; the
/// expected value comes from the trailers (or a header) of the input.
fn verify(plain: &[u8], trailers: &[(String, String)], pick: u8) {
    let alg = ALGORITHMS[usize::from(pick) % ALGORITHMS.len()];
    let mut headers = HeaderMap::new();
    let value = trailers.first().map(|(_, v)| v.as_str()).unwrap_or("");
    if pick & 0x80 != 0 || alg == ChecksumAlgorithm::Md5 {
        // As a header: the value is the first trailer's value, whatever it is.
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(alg.header_name()), v);
        }
    } else {
        headers.insert("x-amz-trailer", HeaderValue::from_static(alg.header_name()));
    }
    if pick & 0x40 != 0 {
        // A second checksum header must be refused, never crash.
        headers.insert("x-amz-checksum-sha1", HeaderValue::from_static("2jmj7l5rSw0yVb/vlWAYkK/YBwk="));
    }
    let whole = ChecksumVerifier::from_headers(&headers).ok().map(|mut v| {
        v.update(plain);
        v.finish(trailers).map(|ok| ok.into_iter().map(|c| (c.header_name, c.value)).collect::<Vec<_>>())
    });
    let pieces = ChecksumVerifier::from_headers(&headers).ok().map(|mut v| {
        for c in plain.chunks(usize::from(pick % 13) + 1) {
            v.update(c);
        }
        v.finish(trailers).map(|ok| ok.into_iter().map(|c| (c.header_name, c.value)).collect::<Vec<_>>())
    });
    match (whole, pieces) {
        (None, None) => {}
        (Some(a), Some(b)) => assert_eq!(a.as_ref().ok(), b.as_ref().ok(), "verdict depends on how the plaintext is fed"),
        _ => unreachable!("from_headers is deterministic"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [split, pick, body @ ..] = data else { return };

    let one_piece = decode(body, || usize::MAX);
    let split_up = decode(body, cutter(*split));
    assert_eq!(one_piece, split_up, "the decoded body depends on how it was split");

    if let Some((plain, trailers)) = &one_piece {
        for (name, value) in trailers {
            assert_eq!(name, &name.to_ascii_lowercase());
            assert_eq!(name.trim(), name);
            assert_eq!(value.trim(), value);
        }
        verify(plain, trailers, *pick);
    }

    // Positive direction: our own framing of the input decodes back to it.
    let framed = frame(body, usize::from(*split) + 1, pick & 1 == 1);
    let (plain, trailers) = decode(&framed, cutter(pick.wrapping_add(*split))).expect("a well-formed body is refused");
    assert_eq!(plain, body);
    assert_eq!(trailers, vec![("x-amz-checksum-crc32c".to_owned(), "AAAAAA==".to_owned())]);
});
