//! Ranges: `request::range::{RangeRequest::parse, RangeRequest::resolve,
//! content_range}`.
//!
//! Input: 8 bytes of object length (little-endian; byte 0's low bits also
//! pick a small length, so tiny objects are common), then a header value,
//! used both as `Range` and as `Content-Range`.
//!
//! Properties: nothing panics; a parsed range is ordered (`first <= last`);
//! it prints back to a header that parses to the same range; resolved
//! against a length it lies inside the object (`first <= last < len`),
//! covers what was asked for, and is refused only when S3 would refuse it
//! (416); a Content-Range the parser accepts names a start inside its total.
#![no_main]

use cloudtaser_s3proxy::s3::range::{ByteRange, RangeRequest, content_range};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn check_resolved(r: RangeRequest, len: u64) {
    match (r, r.resolve(len)) {
        (_, Some(ByteRange { first, last })) => {
            assert!(first <= last, "{r:?} on {len}: {first} > {last}");
            assert!(last < len, "{r:?} on {len}: last {last} outside");
            match r {
                RangeRequest::From { first: f, last: l } => {
                    assert_eq!(first, f);
                    assert_eq!(last, l.unwrap_or(u64::MAX).min(len - 1));
                }
                RangeRequest::Suffix(n) => {
                    assert_eq!(last - first + 1, n.min(len));
                }
            }
        }
        (RangeRequest::From { first, .. }, None) => assert!(first >= len, "{r:?} on {len} refused"),
        (RangeRequest::Suffix(n), None) => assert!(n == 0 || len == 0, "{r:?} on {len} refused"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len_bytes, value) = data.split_at(8);
    let raw = u64::from_le_bytes(len_bytes.try_into().unwrap());
    let len = if raw & 1 == 0 { (raw >> 1) % 64 } else { raw >> 1 };
    let value = String::from_utf8_lossy(value);

    if let Some(r) = RangeRequest::parse(&value) {
        if let RangeRequest::From { first, last: Some(last) } = r {
            assert!(first <= last, "{value:?} parsed to a reversed range");
        }
        let header = r.to_header();
        assert_eq!(RangeRequest::parse(&header), Some(r), "{value:?} -> {header:?} does not parse back");
        for l in [len, 0, 1, u64::MAX] {
            check_resolved(r, l);
        }
    }

    if let Ok(v) = HeaderValue::from_str(&value) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_RANGE, v);
        if let Some((first, total)) = content_range(&headers) {
            assert!(first < total, "Content-Range {value:?} starts at {first}, past its total {total}");
        }
    }
});
