//! Conditional reads (If-Match, If-None-Match, If-Modified-Since,
//! If-Unmodified-Since), evaluated against the upstream's ETag and
//! Last-Modified with S3's precedence. ETag conditions are evaluated only
//! here (workloads hold the ETags the proxy shows, see `respond::client_etag`);
//! date conditions go upstream too, and are re-checked for upstreams that
//! ignore them.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use http::{HeaderMap, StatusCode};

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn etag_matches(condition: &str, etag: &str) -> bool {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    condition.split(',').map(|c| c.trim().trim_start_matches("W/").trim_matches('"')).any(|c| c == "*" || c == etag)
}

fn date(value: &str) -> Option<i64> {
    DateTime::from_str(value.trim(), Format::HttpDate).ok().map(|d| d.secs())
}

/// Whether the request carries any condition on the object's version.
pub fn any(headers: &HeaderMap) -> bool {
    [
        http::header::IF_MATCH,
        http::header::IF_NONE_MATCH,
        http::header::IF_MODIFIED_SINCE,
        http::header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|name| headers.contains_key(name))
}

/// Removes the conditions the proxy decides itself before a read goes
/// upstream: the ETag conditions (workloads hold the proxy's ETags), and,
/// when one is present, the date conditions too, because S3's precedence
/// between the two kinds (`evaluate`) can only be applied to both at once.
/// Date conditions alone still go upstream, which then answers 304 or 412
/// without sending the body.
pub fn strip_etag_conditions(headers: &mut HeaderMap) {
    let etag_condition = headers.remove(http::header::IF_MATCH).is_some();
    if headers.remove(http::header::IF_NONE_MATCH).is_some() || etag_condition {
        headers.remove(http::header::IF_MODIFIED_SINCE);
        headers.remove(http::header::IF_UNMODIFIED_SINCE);
    }
}

/// Conditional writes (If-Match / If-None-Match on PutObject and
/// CompleteMultipartUpload) must be decided by the upstream atomically, so
/// the ETags workloads hold are turned back into the upstream's form.
pub fn to_upstream_etags(headers: &mut HeaderMap) {
    for name in [http::header::IF_MATCH, http::header::IF_NONE_MATCH] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        let upstream: Vec<String> = value
            .split(',')
            .map(|tag| {
                let inner = tag.trim().trim_matches('"');
                match inner.strip_suffix("-1") {
                    Some(hex) if !hex.contains('-') => format!("\"{hex}\""),
                    _ => tag.trim().to_owned(),
                }
            })
            .collect();
        if let Ok(v) = http::HeaderValue::from_str(&upstream.join(", ")) {
            headers.insert(name, v);
        }
    }
}

/// `Some(304 or 412)` when the request's conditions fail for an object with
/// this ETag and Last-Modified (both taken from the upstream's response).
pub fn evaluate(request: &HeaderMap, response: &HeaderMap) -> Option<StatusCode> {
    let etag = header(response, http::header::ETAG).unwrap_or("");
    // Workloads know the ETag in the form the proxy shows them.
    let shown = super::etag::client_etag(etag);
    let modified = header(response, http::header::LAST_MODIFIED).and_then(date);
    let matches = |c: &str| etag_matches(c, etag) || etag_matches(c, &shown);
    let if_match = header(request, http::header::IF_MATCH).map(matches);
    let if_none_match = header(request, http::header::IF_NONE_MATCH).map(matches);
    let since = |name| header(request, name).and_then(date).zip(modified);
    // S3: a true If-Match overrides a false If-Unmodified-Since; a false
    // If-None-Match overrides a true If-Modified-Since.
    match if_match {
        Some(false) => return Some(StatusCode::PRECONDITION_FAILED),
        Some(true) => {}
        None => {
            if since(http::header::IF_UNMODIFIED_SINCE).is_some_and(|(limit, m)| m > limit) {
                return Some(StatusCode::PRECONDITION_FAILED);
            }
        }
    }
    match if_none_match {
        Some(true) => Some(StatusCode::NOT_MODIFIED),
        Some(false) => None,
        None => {
            since(http::header::IF_MODIFIED_SINCE).filter(|(limit, m)| m <= limit).map(|_| StatusCode::NOT_MODIFIED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn write_conditions_use_upstream_etags() {
        let mut req = h(&[("if-match", "\"abc-1\""), ("if-none-match", "*")]);
        to_upstream_etags(&mut req);
        assert_eq!(req["if-match"], "\"abc\"");
        assert_eq!(req["if-none-match"], "*");
        let mut multipart = h(&[("if-match", "\"abc-3\"")]);
        to_upstream_etags(&mut multipart);
        assert_eq!(multipart["if-match"], "\"abc-3\"");
    }

    #[test]
    fn follows_s3_precedence() {
        let obj = h(&[("etag", "\"abc\""), ("last-modified", "Wed, 21 Oct 2026 07:28:00 GMT")]);
        let before = "Tue, 20 Oct 2026 07:28:00 GMT";
        let after = "Thu, 22 Oct 2026 07:28:00 GMT";
        assert_eq!(evaluate(&h(&[("if-match", "\"abc\"")]), &obj), None);
        assert_eq!(evaluate(&h(&[("if-match", "\"abc-1\"")]), &obj), None);
        assert_eq!(evaluate(&h(&[("if-match", "\"nope\"")]), &obj), Some(StatusCode::PRECONDITION_FAILED));
        assert_eq!(evaluate(&h(&[("if-none-match", "\"abc\"")]), &obj), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(evaluate(&h(&[("if-none-match", "*")]), &obj), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(evaluate(&h(&[("if-modified-since", after)]), &obj), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(evaluate(&h(&[("if-modified-since", before)]), &obj), None);
        assert_eq!(evaluate(&h(&[("if-unmodified-since", before)]), &obj), Some(StatusCode::PRECONDITION_FAILED));
        assert_eq!(evaluate(&h(&[("if-match", "\"abc\""), ("if-unmodified-since", before)]), &obj), None);
        assert_eq!(evaluate(&h(&[("if-none-match", "\"x\""), ("if-modified-since", after)]), &obj), None);
    }
}
