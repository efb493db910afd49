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

/// Hop-by-hop fields a workload's `Connection` may name: they concern the
/// connection to the proxy and end here.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "http2-settings"];

/// Ends the workload's hop at the proxy's door, before any handler reads
/// or adds a header: `Connection` and the hop-by-hop fields go, so that
/// nothing later (the upstream request in particular) acts on them.
///
/// `Connection` may only name hop-by-hop fields (and `close`). Naming an
/// end-to-end field that the request carries (`x-amz-meta-*`, a checksum,
/// `content-encoding`) is refused rather than obeyed: removing it would
/// make the proxy read another request than the client built, and a
/// `Connection` consulted later, on the upstream request, once removed
/// the envelope the proxy had added (the object was lost).
pub fn end_hop(headers: &mut HeaderMap) -> Result<(), crate::error::ProxyError> {
    for value in headers.get_all(http::header::CONNECTION) {
        let value = value.to_str().map_err(|_| crate::error::RequestError::ConnectionHeader)?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let token = token.to_ascii_lowercase();
            if token != "close" && !HOP_BY_HOP.contains(&token.as_str()) && headers.contains_key(token.as_str()) {
                return Err(crate::error::RequestError::ConnectionHeader.into());
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    Ok(())
}

/// Fields that may come more than once: lists whose repeats mean the same
/// as one comma-joined field, and that the proxy reads in full.
const REPEATABLE: &[&str] = &["accept", "accept-encoding", "accept-language", "x-amz-object-attributes"];

/// Refuses a request that repeats a field. The proxy reads the first value
/// of a field and an upstream may read the last, or all of them joined:
/// `x-amz-metadata-directive: COPY` then `REPLACE` would have the proxy
/// keep the envelope by COPY and the upstream replace it, storing an
/// object without its key. S3's own fields are single-valued.
pub fn refuse_repeated(headers: &HeaderMap) -> Result<(), crate::error::ProxyError> {
    for name in headers.keys() {
        if !REPEATABLE.contains(&name.as_str()) && headers.get_all(name).iter().nth(1).is_some() {
            return Err(crate::error::RequestError::RepeatedHeader { name: name.as_str().to_owned() }.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_hop_ends_at_the_proxy() {
        let mut h = headers(&[
            ("connection", "keep-alive, Upgrade, x-absent"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-amz-meta-color", "blue"),
        ]);
        end_hop(&mut h).unwrap();
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-amz-meta-color"]);
    }

    #[test]
    fn connection_cannot_remove_end_to_end_fields() {
        for named in ["x-amz-meta-color", "X-Amz-Meta-Color", "content-encoding", "x-amz-checksum-crc32"] {
            let mut h = headers(&[
                ("connection", &format!("close, {named}")),
                ("x-amz-meta-color", "blue"),
                ("content-encoding", "aws-chunked"),
                ("x-amz-checksum-crc32", "AAAAAA=="),
            ]);
            assert!(end_hop(&mut h).is_err(), "{named}");
        }
        // Split over two Connection fields, too.
        let mut h = headers(&[("connection", "close"), ("connection", "x-amz-meta-color"), ("x-amz-meta-color", "b")]);
        assert!(end_hop(&mut h).is_err());
    }

    #[test]
    fn repeated_fields_are_refused() {
        assert!(refuse_repeated(&headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br")])).is_ok());
        for name in ["x-amz-metadata-directive", "x-amz-copy-source", "x-amz-meta-a", "content-type", "range"] {
            let h = headers(&[(name, "COPY"), (name, "REPLACE")]);
            assert!(refuse_repeated(&h).is_err(), "{name}");
        }
    }
}
