//! S3 request headers the proxy rewrites whatever the operation.

use http::{HeaderMap, HeaderValue};

/// Removes every checksum header: they describe a body the upstream does
/// not receive (plaintext the proxy encrypts, or a body it re-frames).
pub fn remove_checksum_headers(headers: &mut HeaderMap) {
    let names: Vec<_> = headers.keys().filter(|k| k.as_str().starts_with("x-amz-checksum-")).cloned().collect();
    for name in names {
        headers.remove(name);
    }
    for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm", "x-amz-checksum-type"] {
        headers.remove(name);
    }
}

/// Keeps the client's own content codings (stored as object metadata) and
/// sets aws-chunked exactly when the upstream body is framed that way.
pub fn set_content_encoding(headers: &mut HeaderMap, chunked: bool) {
    let others: Vec<String> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .map(str::to_owned)
        .collect();
    let all: Vec<String> = chunked.then(|| "aws-chunked".to_owned()).into_iter().chain(others).collect();
    headers.remove(http::header::CONTENT_ENCODING);
    if !all.is_empty()
        && let Ok(v) = HeaderValue::from_str(&all.join(","))
    {
        headers.insert(http::header::CONTENT_ENCODING, v);
    }
}
