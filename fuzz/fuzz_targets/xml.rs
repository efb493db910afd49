//! The XML the proxy rewrites on its way back to the workload:
//! `request::xml::{rewrite, texts_of}` with the text maps the handlers use
//! (CreateMultipartUpload, ListParts, CopyObject/UploadPartCopy results,
//! CompleteMultipartUpload), `respond::listing_response` (ListObjects sizes),
//! `respond::client_etag`, and the S3 error document of `ProxyError`.
//!
//! Byte 0 picks what to run; the rest is the document (or text) as an
//! upstream or a workload could send it. Nothing may panic; a document the
//! rewriter accepted must come out well-formed enough to be rewritten again.
#![no_main]

use bytes::Bytes;
use cloudtaser_s3proxy::error::{ProxyError, RequestError};
use cloudtaser_s3proxy::format::plaintext_len;
use cloudtaser_s3proxy::request::respond::{error_response, listing_response};
use cloudtaser_s3proxy::s3::etag::client_etag;
use cloudtaser_s3proxy::s3::upload_id::{UploadKey, encode};
use cloudtaser_s3proxy::s3::xml::{rewrite, texts_of};
use futures_util::FutureExt;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;

fn body_of(resp: http::Response<cloudtaser_s3proxy::body::ProxyBody>) -> Bytes {
    resp.into_body().collect().now_or_never().expect("buffered bodies are ready").expect("infallible").to_bytes()
}

/// `respond::plaintext_sizes` computes `(parts - 1) * HEADER_LEN` from the
/// part count of a listed ETag (`"…-N"`), which overflows for N above
/// u64::MAX / 52 (fuzz/regressions/xml/listing-etag-part-count-overflow).
/// Until that is fixed, listings with 17 or more digits in a row are skipped
/// so the rest is still fuzzed; `FUZZ_XML_UNFILTERED=1` turns the skip off
/// (to reproduce the crash, or once the fix is in).
fn has_huge_part_count(xml: &[u8]) -> bool {
    static UNFILTERED: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("FUZZ_XML_UNFILTERED").is_some_and(|v| v == "1"));
    if *UNFILTERED {
        return false;
    }
    let mut digits = 0;
    for &b in xml {
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= 17 {
                return true;
            }
        } else {
            digits = 0;
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let [mode, doc @ ..] = data else { return };
    let key = UploadKey {
        transit_key: "orders".into(),
        wrapped_key: "vault:v1:abc".into(),
        tag: Some(vec![7; 16]),
        sse_c: None,
    };
    let client_id = encode("upstream-id", &key);
    let result = match mode % 6 {
        // CreateMultipartUpload: the upstream's upload id becomes ours.
        0 => rewrite(doc, &|name: &[u8], text: &str| (name == b"UploadId").then(|| encode(text, &key))),
        // ListParts: sizes in plaintext, our upload id.
        1 => rewrite(doc, &|name: &[u8], text: &str| match name {
            b"UploadId" => Some(client_id.clone()),
            b"Size" => text.trim().parse().ok().and_then(plaintext_len).map(|n| n.to_string()),
            _ => None,
        }),
        // CopyObject / UploadPartCopy results: ETags as the workload sees them.
        2 => rewrite(doc, &|name: &[u8], text: &str| (name == b"ETag").then(|| client_etag(text))),
        // CompleteMultipartUpload result, and the request's PartNumber/ETag lists.
        3 => {
            let _ = texts_of(doc, b"PartNumber");
            let _ = texts_of(doc, b"ETag");
            let _ = texts_of(doc, b"Code");
            rewrite(doc, &|_, _| None)
        }
        // ListObjects(V2): sizes become plaintext sizes.
        4 => {
            if has_huge_part_count(doc) {
                return;
            }
            let status = if mode & 0x80 == 0 { StatusCode::OK } else { StatusCode::NOT_FOUND };
            match listing_response(HeaderMap::new(), status, Bytes::copy_from_slice(doc)) {
                Ok(resp) => {
                    let body = body_of(resp);
                    if status.is_success() {
                        // The rewritten listing is a listing again.
                        assert!(
                            listing_response(HeaderMap::new(), status, body).is_ok(),
                            "rewritten listing no longer parses"
                        );
                    } else {
                        assert_eq!(&body[..], doc, "error documents pass unchanged");
                    }
                }
                Err(_) => {}
            }
            return;
        }
        // Text, not a document: ETags and error documents.
        _ => {
            let text = String::from_utf8_lossy(doc);
            let etag = client_etag(&text);
            // Marking is idempotent: a marked ETag is left as it is.
            assert_eq!(client_etag(&etag), etag);
            let err = ProxyError::InvalidRequest(RequestError::RepeatedHeader { name: text.clone().into_owned() });
            let xml = body_of(error_response(&err, &text, "REQ", false));
            let resource = texts_of(&xml, b"Resource").expect("our error document is well-formed");
            let message = texts_of(&xml, b"Message").expect("our error document is well-formed");
            // Text survives escaping, up to what XML cannot carry (CR, and
            // whitespace-only text that quick-xml reports as no event).
            let norm = |s: &str| s.replace('\r', "\n");
            if !text.trim().is_empty() && !text.contains('\r') {
                assert_eq!(resource.iter().map(|s| norm(s)).collect::<Vec<_>>(), vec![norm(&text)]);
                assert!(message[0].contains(&*text));
            }
            assert!(body_of(error_response(&err, &text, "REQ", true)).is_empty(), "HEAD has no body");
            return;
        }
    };
    if let Ok(out) = result {
        // What we send back must itself be a document we could read again.
        assert!(rewrite(&out, &|_, _| None).is_ok(), "rewritten document no longer parses");
    }
});
