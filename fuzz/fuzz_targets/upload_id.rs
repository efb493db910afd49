//! Upload ids: `request::upload_id::{encode, decode}`.
//!
//! The input, split at its first four NUL bytes, is (upstream id, transit
//! key, wrapped key, tag, sealed SSE-C key; the last two absent when empty);
//! the whole input is also decoded as an id a workload sent.
//!
//! Properties: `decode` never panics; an id it does not recognise passes
//! through unchanged with no key; an id it does recognise is canonical
//! (encoding its parts again gives the same id back); and any
//! (upstream, key) survives encode then decode.
#![no_main]

use cloudtaser_s3proxy::s3::upload_id::{UploadId, UploadKey, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let id = decode(&text);
    match &id.key {
        None => assert_eq!(id.upstream, text, "an id without a key must pass through unchanged"),
        Some(key) => assert_eq!(encode(&id.upstream, key), text, "two ids decode to the same upload"),
    }

    let mut fields = text.splitn(5, '\0');
    let upstream = fields.next().unwrap_or("");
    let transit_key = fields.next().unwrap_or("").to_owned();
    let wrapped_key = fields.next().unwrap_or("").to_owned();
    let tag = fields.next().filter(|t| !t.is_empty()).map(|t| t.as_bytes().to_vec());
    // A sealed customer key only ever travels with a tag (`ctu3c.`).
    let sse_c = fields.next().filter(|s| !s.is_empty() && tag.is_some()).map(|s| s.as_bytes().to_vec());
    let key = UploadKey { transit_key, wrapped_key, tag, sse_c };
    let encoded = encode(upstream, &key);
    assert_eq!(decode(&encoded), UploadId { upstream: upstream.to_owned(), key: Some(key) });
});
