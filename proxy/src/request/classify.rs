//! Step 1: work out which S3 operation a request is, and on what.

use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use crate::error::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    PutObject,
    GetObject,
    HeadObject,
    CopyObject,
    ListObjects,
    ListObjectsV2,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    /// Object bodies the proxy cannot encrypt (browser POST uploads,
    /// S3 Select over ciphertext, appends); refused so nothing leaks.
    Unsupported(&'static str),
    /// Everything without an object body: forwarded as is, re-signed.
    PassThrough,
}

/// A request's operation and target, with the query decoded.
#[derive(Debug, Clone)]
pub struct S3Request {
    pub operation: Operation,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// Decoded query parameters in their original order, presign ones removed.
    pub query: Vec<(String, String)>,
}

impl S3Request {
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Replaces a query parameter's value (the upload id the upstream knows).
    pub fn set_query(&mut self, name: &str, value: String) {
        if let Some((_, v)) = self.query.iter_mut().find(|(k, _)| k == name) {
            *v = value;
        }
    }

    fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    /// `/bucket/key` as S3 names the resource in error documents.
    pub fn resource(&self) -> String {
        match (&self.bucket, &self.key) {
            (Some(b), Some(k)) => format!("/{b}/{k}"),
            (Some(b), None) => format!("/{b}"),
            _ => "/".to_owned(),
        }
    }
}

/// Query parameters of a presigned URL: the workload's signature, never forwarded.
const PRESIGN_PARAMS: &[&str] = &[
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signedheaders",
    "x-amz-signature",
    "x-amz-security-token",
    "awsaccesskeyid",
    "signature",
    "expires",
];

/// Object subresources whose GET/PUT/HEAD carry no object data.
const OBJECT_SUBRESOURCES: &[&str] =
    &["acl", "tagging", "attributes", "legal-hold", "retention", "torrent", "restore", "uploadId", "uploads"];

/// `virtual_host_suffix` is the domain under which `<bucket>.<suffix>` hosts
/// address buckets (e.g. `localhost`).
pub fn classify(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    virtual_host_suffix: &str,
) -> Result<S3Request, ProxyError> {
    let query = parse_query(uri.query().unwrap_or(""))?;
    let path = decode(uri.path())?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = match virtual_host_bucket(headers, virtual_host_suffix) {
        Some(bucket) => (Some(bucket), (!path.is_empty()).then(|| path.to_owned())),
        None => match path.split_once('/') {
            Some((b, k)) => (Some(b.to_owned()), (!k.is_empty()).then(|| k.to_owned())),
            None => ((!path.is_empty()).then(|| path.to_owned()), None),
        },
    };
    let mut req = S3Request { operation: Operation::PassThrough, bucket, key, query };
    req.operation = operation_of(method, headers, &req);
    Ok(req)
}

fn operation_of(method: &Method, headers: &HeaderMap, req: &S3Request) -> Operation {
    let has_key = req.key.is_some();
    let copy = headers.contains_key("x-amz-copy-source");
    let subresource = OBJECT_SUBRESOURCES.iter().any(|s| req.has(s));
    match *method {
        Method::PUT if has_key && req.has("partNumber") && req.has("uploadId") => {
            if copy {
                Operation::UploadPartCopy
            } else {
                Operation::UploadPart
            }
        }
        Method::PUT if has_key && !subresource => {
            if copy {
                Operation::CopyObject
            } else {
                Operation::PutObject
            }
        }
        Method::POST if has_key && req.has("uploadId") => Operation::CompleteMultipartUpload,
        Method::DELETE if has_key && req.has("uploadId") => Operation::AbortMultipartUpload,
        Method::GET if has_key && req.has("uploadId") => Operation::ListParts,
        Method::GET if has_key && !subresource => Operation::GetObject,
        Method::HEAD if has_key && !subresource => Operation::HeadObject,
        Method::GET if !has_key && req.bucket.is_some() && is_object_listing(req) => {
            if req.query_value("list-type") == Some("2") { Operation::ListObjectsV2 } else { Operation::ListObjects }
        }
        Method::POST if has_key && req.has("uploads") => Operation::CreateMultipartUpload,
        Method::POST if has_key && req.has("select") => {
            Operation::Unsupported("SelectObjectContent cannot read client-side encrypted objects")
        }
        Method::POST if !has_key && is_form_upload(headers) => {
            Operation::Unsupported("browser-form POST uploads are not encrypted by the proxy")
        }
        Method::PUT if has_key && req.has("append") => {
            Operation::Unsupported("appends to encrypted objects are not supported")
        }
        _ => Operation::PassThrough,
    }
}

/// A bucket GET with no subresource other than listing parameters.
fn is_object_listing(req: &S3Request) -> bool {
    const LISTING: &[&str] = &[
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "continuation-token",
        "fetch-owner",
        "start-after",
    ];
    req.query.iter().all(|(k, _)| LISTING.contains(&k.as_str()))
}

fn is_form_upload(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// A copy's conditions on its source, and the read conditions they mean.
pub const COPY_SOURCE_CONDITIONS: &[(&str, http::HeaderName)] = &[
    ("x-amz-copy-source-if-match", http::header::IF_MATCH),
    ("x-amz-copy-source-if-none-match", http::header::IF_NONE_MATCH),
    ("x-amz-copy-source-if-modified-since", http::header::IF_MODIFIED_SINCE),
    ("x-amz-copy-source-if-unmodified-since", http::header::IF_UNMODIFIED_SINCE),
];

/// The source of a copy, from `x-amz-copy-source` (`[/]bucket/key[?versionId=v]`).
pub fn copy_source(headers: &HeaderMap) -> Result<S3Request, ProxyError> {
    let invalid = || {
        ProxyError::InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.".into(),
        )
    };
    let raw = headers.get("x-amz-copy-source").and_then(|v| v.to_str().ok()).ok_or_else(invalid)?;
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    let path = decode(path)?;
    let (bucket, key) = path.trim_start_matches('/').split_once('/').ok_or_else(invalid)?;
    if bucket.is_empty() || key.is_empty() {
        return Err(invalid());
    }
    Ok(S3Request {
        operation: Operation::HeadObject,
        bucket: Some(bucket.to_owned()),
        key: Some(key.to_owned()),
        query: parse_query(query)?.into_iter().filter(|(k, _)| k == "versionId").collect(),
    })
}

fn virtual_host_bucket(headers: &HeaderMap, suffix: &str) -> Option<String> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let bucket = name.strip_suffix(suffix)?.strip_suffix('.')?;
    (!bucket.is_empty()).then(|| bucket.to_owned())
}

fn decode(s: &str) -> Result<String, ProxyError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ProxyError::InvalidArgument("The request URI is not valid UTF-8 after percent-decoding.".into()))
}

/// Decodes the query, dropping presign parameters after checking that a
/// presigned URL is still inside its validity window: the proxy does not
/// verify the workload's signature, but it does not extend a URL's life.
fn parse_query(raw: &str) -> Result<Vec<(String, String)>, ProxyError> {
    let mut out = Vec::new();
    let mut presign = PresignWindow::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        let lower = k.to_ascii_lowercase();
        if PRESIGN_PARAMS.contains(&lower.as_str()) {
            let v = decode(v)?;
            match lower.as_str() {
                "x-amz-date" => presign.date = Some(v),
                "x-amz-expires" => presign.expires = Some(v),
                "expires" => presign.v2_expires = Some(v),
                _ => {}
            }
            continue;
        }
        out.push((k, decode(v)?));
    }
    presign.check(now_secs())?;
    Ok(out)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[derive(Default)]
struct PresignWindow {
    date: Option<String>,
    expires: Option<String>,
    v2_expires: Option<String>,
}

/// SigV4 presigned URLs live at most seven days.
const MAX_PRESIGN_SECS: i64 = 604_800;

impl PresignWindow {
    fn check(&self, now: i64) -> Result<(), ProxyError> {
        let expired = || ProxyError::AccessDenied("Request has expired".into());
        if let Some(expires) = &self.expires {
            let secs: i64 = expires.parse().map_err(|_| expired())?;
            if !(1..=MAX_PRESIGN_SECS).contains(&secs) {
                return Err(ProxyError::AccessDenied(
                    "X-Amz-Expires must be more than 0 and less than 604800 seconds".into(),
                ));
            }
            let signed = self.date.as_deref().and_then(parse_amz_date).ok_or_else(expired)?;
            if now > signed + secs {
                return Err(expired());
            }
        }
        if let Some(v2) = &self.v2_expires
            && now > v2.parse::<i64>().map_err(|_| expired())?
        {
            return Err(expired());
        }
        Ok(())
    }
}

/// `yyyymmddThhmmssZ` as seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from the civil calendar (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3_600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, uri: &str, headers: &[(&str, &str)]) -> S3Request {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        classify(&method, &uri.parse().unwrap(), &h, "localhost").unwrap()
    }

    #[test]
    fn object_operations() {
        assert_eq!(op(Method::PUT, "/b/k", &[]).operation, Operation::PutObject);
        assert_eq!(op(Method::PUT, "/b/k", &[("x-amz-copy-source", "/a/b")]).operation, Operation::CopyObject);
        assert_eq!(op(Method::PUT, "/b/k?partNumber=1&uploadId=x", &[]).operation, Operation::UploadPart);
        assert_eq!(op(Method::GET, "/b/k", &[]).operation, Operation::GetObject);
        assert_eq!(op(Method::GET, "/b/k?tagging", &[]).operation, Operation::PassThrough);
        assert_eq!(op(Method::PUT, "/b/k?acl", &[]).operation, Operation::PassThrough);
        assert_eq!(op(Method::HEAD, "/b/k", &[]).operation, Operation::HeadObject);
        assert_eq!(op(Method::GET, "/b?list-type=2&prefix=a", &[]).operation, Operation::ListObjectsV2);
        assert_eq!(op(Method::GET, "/b", &[]).operation, Operation::ListObjects);
        assert_eq!(op(Method::GET, "/b?uploads", &[]).operation, Operation::PassThrough);
        assert_eq!(op(Method::POST, "/b/k?uploads", &[]).operation, Operation::CreateMultipartUpload);
        assert!(matches!(op(Method::POST, "/b/k?select&select-type=2", &[]).operation, Operation::Unsupported(_)));
        assert!(matches!(
            op(Method::POST, "/b", &[("content-type", "multipart/form-data; boundary=x")]).operation,
            Operation::Unsupported(_)
        ));
    }

    #[test]
    fn keys_are_decoded_and_presign_params_dropped() {
        let r = op(Method::GET, "/b/dir/a%20b%2Bc%C3%A9?X-Amz-Signature=abc&X-Amz-Credential=x&versionId=v1", &[]);
        assert_eq!(r.bucket.as_deref(), Some("b"));
        assert_eq!(r.key.as_deref(), Some("dir/a b+cé"));
        assert_eq!(r.query, vec![("versionId".to_owned(), "v1".to_owned())]);
        assert_eq!(r.operation, Operation::GetObject);
    }

    #[test]
    fn presign_windows() {
        assert_eq!(parse_amz_date("19700101T000010Z"), Some(10));
        assert_eq!(parse_amz_date("20261126T120000Z"), Some(1_795_694_400));
        let w = |date: &str, expires: &str| PresignWindow {
            date: Some(date.into()),
            expires: Some(expires.into()),
            v2_expires: None,
        };
        let signed = 1_795_694_400;
        assert!(w("20261126T120000Z", "60").check(signed + 59).is_ok());
        assert_eq!(w("20261126T120000Z", "60").check(signed + 61).unwrap_err().code(), "AccessDenied");
        assert!(w("20261126T120000Z", "0").check(signed).is_err());
        assert!(w("20261126T120000Z", "604801").check(signed).is_err());
        assert!(PresignWindow::default().check(signed).is_ok());
    }

    #[test]
    fn copy_sources() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-copy-source", "/src/a%20b.txt?versionId=v9".parse().unwrap());
        let s = copy_source(&h).unwrap();
        assert_eq!((s.bucket.as_deref(), s.key.as_deref()), (Some("src"), Some("a b.txt")));
        assert_eq!(s.query_value("versionId"), Some("v9"));
        h.insert("x-amz-copy-source", "justbucket".parse().unwrap());
        assert!(copy_source(&h).is_err());
    }

    #[test]
    fn virtual_hosted_style() {
        let r = op(Method::GET, "/some/key", &[("host", "my-bucket.localhost:8190")]);
        assert_eq!(r.bucket.as_deref(), Some("my-bucket"));
        assert_eq!(r.key.as_deref(), Some("some/key"));
        let r = op(Method::GET, "/my-bucket/key", &[("host", "localhost:8190")]);
        assert_eq!(r.bucket.as_deref(), Some("my-bucket"));
    }
}
