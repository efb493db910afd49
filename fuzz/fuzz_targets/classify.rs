//! Request classification: `request::classify::{hoist_query_headers,
//! classify, copy_source}`, in the order `RequestPath::admit` runs them.
//!
//! The input is a small HTTP request head in text: the first line is
//! `METHOD URI`, every further line `name: value`. Byte 0 (before the text)
//! picks the virtual-host suffix. Anything that does not make a valid
//! `Method`, `Uri` or header is skipped, as hyper would refuse it first.
//!
//! Properties: none of them panics, whatever the method, URI, query, host or
//! headers; hoisting is done in one pass (hoisting the rebuilt URI again
//! finds nothing); a classified request names a bucket and key that do not
//! smuggle `.`/`..` segments or NUL, and its resource string starts with `/`.
#![no_main]

use cloudtaser_s3proxy::s3::classify::{classify, copy_source, hoist_query_headers};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

const SUFFIXES: [&str; 4] = ["localhost", "s3.localhost", "", "."];

fn check(s3: &cloudtaser_s3proxy::s3::classify::S3Request) {
    if let Some(key) = &s3.key {
        assert!(!key.contains('\0'), "key with NUL accepted: {key:?}");
        assert!(!key.split('/').any(|seg| seg == "." || seg == ".."), "key with dot segment accepted: {key:?}");
    }
    if let Some(bucket) = &s3.bucket {
        assert!(bucket != "." && bucket != ".." && !bucket.contains('/'), "bucket accepted: {bucket:?}");
    }
    assert!(s3.resource().starts_with('/'));
}

fuzz_target!(|data: &[u8]| {
    let [pick, text @ ..] = data else { return };
    let text = String::from_utf8_lossy(text);
    let mut lines = text.split('\n');
    let Some(request_line) = lines.next() else { return };
    let (method, uri) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    let Ok(uri) = uri.parse::<Uri>() else { return };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let suffix = SUFFIXES[usize::from(*pick) % SUFFIXES.len()];
    let uri = match hoist_query_headers(&uri, &mut headers) {
        Ok(Some(rebuilt)) => {
            let mut again = headers.clone();
            assert!(
                matches!(hoist_query_headers(&rebuilt, &mut again), Ok(None)),
                "{rebuilt} still has headers to hoist"
            );
            rebuilt
        }
        Ok(None) => uri,
        Err(_) => return,
    };
    if let Ok(s3) = classify(&method, &uri, &headers, suffix) {
        check(&s3);
    }
    if let Ok(source) = copy_source(&headers) {
        check(&source);
    }
});
