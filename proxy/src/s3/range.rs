//! The client's `Range` header, in plaintext coordinates.

/// `bytes a-b/total` from a Content-Range header, as (a, total). `None`
/// unless the whole value is well-formed and `a <= b < total`: the stored
/// length is taken from it, so a garbled one must not pass for a length.
pub fn content_range(headers: &http::HeaderMap) -> Option<(u64, u64)> {
    content_range_span(headers).map(|(first, _, total)| (first, total))
}

/// `Content-Range: bytes first-last/total` as `(first, last, total)`.
pub fn content_range_span(headers: &http::HeaderMap) -> Option<(u64, u64, u64)> {
    let v = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number =
        |s: &str| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    let (first, last, total) = (number(first)?, number(last)?, number(total)?);
    (first <= last && last < total).then_some((first, last, total))
}

/// One byte range as S3 accepts it (a single range; others are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=a-b` or `bytes=a-`
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`
    Suffix(u64),
}

/// An inclusive range inside the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl RangeRequest {
    /// `None` for anything S3 would ignore (malformed, multiple ranges),
    /// in which case the whole object is returned, as S3 does.
    pub fn parse(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (true, false) => Some(RangeRequest::Suffix(b.parse().ok()?)),
            (false, true) => Some(RangeRequest::From { first: a.parse().ok()?, last: None }),
            (false, false) => {
                let (first, last) = (a.parse().ok()?, b.parse().ok()?);
                (first <= last).then_some(RangeRequest::From { first, last: Some(last) })
            }
            (true, true) => None,
        }
    }

    /// The header value that asks for this range.
    pub fn to_header(self) -> String {
        match self {
            RangeRequest::From { first, last: Some(last) } => format!("bytes={first}-{last}"),
            RangeRequest::From { first, last: None } => format!("bytes={first}-"),
            RangeRequest::Suffix(n) => format!("bytes=-{n}"),
        }
    }

    /// `None` when unsatisfiable for an object of `len` bytes (S3: 416).
    pub fn resolve(self, len: u64) -> Option<ByteRange> {
        match self {
            RangeRequest::From { first, last } if first < len => {
                Some(ByteRange { first, last: last.map_or(len - 1, |l| l.min(len - 1)) })
            }
            RangeRequest::Suffix(n) if n > 0 && len > 0 => {
                Some(ByteRange { first: len.saturating_sub(n), last: len - 1 })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(RangeRequest::parse("bytes=0-9"), Some(RangeRequest::From { first: 0, last: Some(9) }));
        assert_eq!(RangeRequest::parse("bytes=5-"), Some(RangeRequest::From { first: 5, last: None }));
        assert_eq!(RangeRequest::parse("bytes=-3"), Some(RangeRequest::Suffix(3)));
        assert_eq!(RangeRequest::parse("bytes=9-2"), None);
        assert_eq!(RangeRequest::parse("bytes=0-1,4-5"), None);
        assert_eq!(RangeRequest::parse("items=0-1"), None);
        for h in ["bytes=0-9", "bytes=5-", "bytes=-3"] {
            assert_eq!(RangeRequest::parse(h).unwrap().to_header(), h);
        }
    }

    #[test]
    fn content_range_is_parsed_whole() {
        let cr = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_RANGE, v.parse().unwrap());
            content_range(&h)
        };
        assert_eq!(cr("bytes 0-51/1000"), Some((0, 1000)));
        assert_eq!(cr("bytes 999-999/1000"), Some((999, 1000)));
        // Found by fuzz/fuzz_targets/range.rs (fuzz/regressions/range/): the
        // end was never read, so garbage passed and the start could lie past the total.
        assert_eq!(cr("bytes 90-=/10"), None);
        assert_eq!(cr("bytes 5-3/10"), None);
        assert_eq!(cr("bytes 0-10/10"), None);
        assert_eq!(cr("bytes */10"), None);
        assert_eq!(cr("bytes +1-2/10"), None);
        assert_eq!(cr("bytes 0-1/"), None);
    }

    #[test]
    fn resolves_like_s3() {
        let r = |s: &str, len| RangeRequest::parse(s).unwrap().resolve(len);
        assert_eq!(r("bytes=0-9", 5), Some(ByteRange { first: 0, last: 4 }));
        assert_eq!(r("bytes=3-", 5), Some(ByteRange { first: 3, last: 4 }));
        assert_eq!(r("bytes=-2", 5), Some(ByteRange { first: 3, last: 4 }));
        assert_eq!(r("bytes=-9", 5), Some(ByteRange { first: 0, last: 4 }));
        assert_eq!(r("bytes=5-", 5), None);
        assert_eq!(r("bytes=-0", 5), None);
        assert_eq!(r("bytes=0-0", 0), None);
    }
}
