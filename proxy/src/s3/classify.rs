//! Step 1: work out which S3 operation a request is, and on what.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::percent_decode_str;

use crate::error::{ArgumentError, PresignError, ProxyError, QueryNames, Unsupported};
use crate::format::META_PREFIX;

use super::operations::find;
pub use super::operations::{Operation, Target};

/// A request's operation and target, with the query decoded.
#[derive(Debug, Clone)]
pub struct S3Request {
    pub operation: Operation,
    /// The AWS API name of the operation (`PutObject`, `GetBucketPolicy`, …).
    pub name: &'static str,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// Decoded query parameters in their original order, presign ones removed.
    pub query: Vec<(String, String)>,
    /// The object's SSE-C key, sent with every upstream request made for
    /// this one (`sse_c`).
    pub sse_c: Option<super::sse_c::CustomerKey>,
}

impl S3Request {
    /// A request the proxy makes on its own behalf (admin commands, probes).
    pub fn internal(bucket: &str, key: Option<&str>, query: Vec<(String, String)>) -> Self {
        Self {
            operation: Operation::Forward,
            name: "Internal",
            bucket: Some(bucket.to_owned()),
            key: key.map(str::to_owned),
            query,
            sse_c: None,
        }
    }

    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Replaces a query parameter's value (the upload id the upstream knows).
    pub fn set_query(&mut self, name: &str, value: String) {
        if let Some((_, v)) = self.query.iter_mut().find(|(k, _)| k == name) {
            *v = value;
        }
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

/// Headers that change what an object write means in a way the proxy cannot
/// encrypt: S3 Express appends write at an offset into an existing object.
const REFUSED_WRITE_HEADERS: &[&str] = &["x-amz-write-offset-bytes"];

/// `virtual_host_suffix` is the domain under which `<bucket>.<suffix>` hosts
/// address buckets (e.g. `localhost`).
///
/// Fails closed: a request that matches no row of the allow-list
/// (`operations.rs`), repeats a query parameter, names a reserved metadata
/// field, or addresses a malformed bucket or key is refused, and nothing is
/// forwarded.
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
    if let Some(b) = &bucket {
        check_bucket(b)?;
    }
    if let Some(k) = &key {
        check_key(k)?;
    }
    if let Some(k) = headers.keys().find(|k| k.as_str().starts_with(META_PREFIX)) {
        return Err(reserved(k.as_str()));
    }
    // A form body is a browser upload wherever it is sent (s3s reads one on
    // `POST /b?delete` as PostObject); the proxy never needs one.
    let form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if form {
        return Err(Unsupported::FormPost.into());
    }
    let target = match (&bucket, &key) {
        (None, _) => Target::Service,
        (Some(_), None) => Target::Bucket,
        (Some(_), Some(_)) => Target::Object,
    };
    let names = query.iter().map(|(k, _)| k.as_str());
    let spec = find(method.as_str(), target, names).ok_or_else(|| unrecognised(method, target, &query))?;
    let copy = headers.contains_key("x-amz-copy-source");
    let (operation, name) = match spec.operation {
        Operation::PutObject if copy => (Operation::CopyObject, "CopyObject"),
        Operation::UploadPart if copy => (Operation::UploadPartCopy, "UploadPartCopy"),
        Operation::ListObjectsV2 if query.iter().any(|(k, v)| k == "list-type" && v != "2") => {
            return Err(ArgumentError::ListType.into());
        }
        op => (op, spec.name),
    };
    // The SDKs' routing hint must agree with the classification: s3s-based
    // upstreams route by it, so a mismatch would run another operation than
    // the one checked (`?tagging&x-id=PutObject` stored plaintext).
    if let Some((_, hint)) = query.iter().find(|(k, _)| k == "x-id")
        && hint != name
    {
        return Err(ArgumentError::RoutingHint { hint: hint.clone(), operation: name }.into());
    }
    let query: Vec<(String, String)> = query.into_iter().filter(|(k, _)| k != "x-id").collect();
    if matches!(operation, Operation::PutObject | Operation::UploadPart)
        && let Some(h) = REFUSED_WRITE_HEADERS.iter().find(|h| headers.contains_key(**h))
    {
        return Err(Unsupported::Append { header: h }.into());
    }
    let sse_c = super::sse_c::CustomerKey::of_object(headers)?;
    Ok(S3Request { operation, name, bucket, key, query, sse_c })
}

fn reserved(name: &str) -> ProxyError {
    ProxyError::ReservedMetadata(name.to_owned())
}

fn unrecognised(method: &Method, target: Target, query: &[(String, String)]) -> ProxyError {
    let target = match target {
        Target::Service => "the service",
        Target::Bucket => "a bucket",
        Target::Object => "an object",
    };
    let params = QueryNames(query.iter().map(|(k, _)| k.clone()).collect());
    Unsupported::Shape { method: method.clone(), target, params }.into()
}

/// Bucket names as S3 and its compatibles accept them (legacy names may
/// have upper case and underscores). A name like `..` would let a path
/// normalising hop reach another bucket, past `CLOUDTASER_S3PROXY_BUCKETS`.
fn check_bucket(bucket: &str) -> Result<(), ProxyError> {
    let ok = (1..=255).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !matches!(bucket, "." | "..");
    if ok { Ok(()) } else { Err(ProxyError::InvalidBucketName) }
}

/// Keys with NUL or `.`/`..` segments: a path-normalising hop (or a
/// file-system backed upstream) could take them to another key or bucket.
pub fn check_key(key: &str) -> Result<(), ProxyError> {
    if key.contains('\0') {
        return Err(ArgumentError::NulInKey.into());
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(ArgumentError::DotSegment.into());
    }
    Ok(())
}

/// Moves `x-amz-*` parameters of a presigned URL (SDKs hoist signed headers
/// into the query) into headers, so they get the same checks as headers do
/// and the upstream sees them where it expects them. Reserved envelope
/// names are refused wherever they appear.
pub fn hoist_query_headers(uri: &http::Uri, headers: &mut HeaderMap) -> Result<Option<http::Uri>, ProxyError> {
    let Some(raw) = uri.query() else { return Ok(None) };
    let mut kept = Vec::new();
    let mut hoisted = false;
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(k)?.to_ascii_lowercase();
        if name.starts_with(META_PREFIX) {
            return Err(reserved(&name));
        }
        if !name.starts_with("x-amz-") || PRESIGN_PARAMS.contains(&name.as_str()) {
            kept.push(pair);
            continue;
        }
        let invalid = || ArgumentError::QueryNotHeader { name: name.to_owned() };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(&decode(v)?).map_err(|_| invalid())?;
        match headers.get(&header) {
            Some(existing) if existing != value => {
                return Err(ArgumentError::HeaderAndQueryDiffer { name: name.to_owned() }.into());
            }
            Some(_) => {}
            None => {
                headers.insert(header, value);
            }
        }
        hoisted = true;
    }
    if !hoisted {
        return Ok(None);
    }
    let path = uri.path();
    let rebuilt = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    rebuilt.parse().map(Some).map_err(|_| ArgumentError::Uri.into())
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
    let invalid = || ProxyError::from(ArgumentError::CopySource);
    let raw = headers.get("x-amz-copy-source").and_then(|v| v.to_str().ok()).ok_or_else(invalid)?;
    // Characters that URL parsers read differently before any decoding (a
    // fragment, a Windows separator, white space): moto took everything
    // after `#` for a fragment and copied another object than the one
    // checked. Encoded (`%23`), they are part of the key like any other.
    if raw.bytes().any(|b| matches!(b, b'#' | b'\\' | b' ' | b'\t') || b.is_ascii_control()) {
        return Err(invalid());
    }
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    // S3 reads `?versionId=` and nothing else here; s3s takes everything
    // before `?versionId=` as the key. Anything else would let the proxy and
    // the upstream pick different sources.
    let version_only = query.strip_prefix("versionId=").is_some_and(|v| !v.contains(['&', '?', '/']));
    if !query.is_empty() && !version_only {
        return Err(invalid());
    }
    let path = decode(path)?;
    let (bucket, key) = path.trim_start_matches('/').split_once('/').ok_or_else(invalid)?;
    if bucket.is_empty() || key.is_empty() {
        return Err(invalid());
    }
    check_bucket(bucket)?;
    check_key(key)?;
    Ok(S3Request {
        operation: Operation::HeadObject,
        name: "HeadObject",
        bucket: Some(bucket.to_owned()),
        key: Some(key.to_owned()),
        query: parse_query(query)?,
        sse_c: super::sse_c::CustomerKey::of_copy_source(headers)?,
    })
}

/// The bucket a `<bucket>.<suffix>` Host names; none with an empty suffix
/// (virtual-hosted addressing off).
fn virtual_host_bucket(headers: &HeaderMap, suffix: &str) -> Option<String> {
    if suffix.is_empty() {
        return None;
    }
    // Visible ASCII (`to_str`), so byte offsets are character boundaries.
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    // Host names are case-insensitive and may end in the root's dot; the
    // suffix setting is lower case, and so are virtual-hosted bucket names.
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = name.strip_suffix('.').unwrap_or(name);
    let split = name.len().checked_sub(suffix.len())?;
    if !name[split..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    let bucket = name[..split].strip_suffix('.')?;
    (!bucket.is_empty()).then(|| bucket.to_ascii_lowercase())
}

fn decode(s: &str) -> Result<String, ProxyError> {
    let bytes = s.as_bytes();
    let well_formed = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return Err(ArgumentError::PercentEncoding.into());
    }
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| ArgumentError::NotUtf8.into())
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
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(ArgumentError::DuplicateQuery { name: k }.into());
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
        let expired = || ProxyError::from(PresignError::Expired);
        if let Some(expires) = &self.expires {
            let secs: i64 = expires.parse().map_err(|_| expired())?;
            if !(1..=MAX_PRESIGN_SECS).contains(&secs) {
                return Err(PresignError::ExpiresOutOfRange.into());
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

    fn refused(method: Method, uri: &str, headers: &[(&str, &str)]) -> ProxyError {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        classify(&method, &uri.parse().unwrap(), &h, "localhost").unwrap_err()
    }

    #[test]
    fn object_operations() {
        let name = |m: Method, uri: &str, h: &[(&str, &str)]| op(m, uri, h).name;
        assert_eq!(op(Method::PUT, "/b/k", &[]).operation, Operation::PutObject);
        assert_eq!(op(Method::PUT, "/b/k?x-id=PutObject", &[]).operation, Operation::PutObject);
        assert_eq!(op(Method::PUT, "/b/k", &[("x-amz-copy-source", "/a/b")]).operation, Operation::CopyObject);
        assert_eq!(op(Method::PUT, "/b/k?partNumber=1&uploadId=x", &[]).operation, Operation::UploadPart);
        assert_eq!(op(Method::GET, "/b/k", &[]).operation, Operation::GetObject);
        assert_eq!(name(Method::GET, "/b/k?tagging", &[]), "GetObjectTagging");
        assert_eq!(name(Method::PUT, "/b/k?acl", &[]), "PutObjectAcl");
        assert_eq!(op(Method::HEAD, "/b/k", &[]).operation, Operation::HeadObject);
        assert_eq!(op(Method::GET, "/b?list-type=2&prefix=a", &[]).operation, Operation::ListObjectsV2);
        assert_eq!(op(Method::GET, "/b", &[]).operation, Operation::ListObjects);
        assert_eq!(name(Method::GET, "/b?uploads", &[]), "ListMultipartUploads");
        assert_eq!(name(Method::GET, "/", &[]), "ListBuckets");
        assert_eq!(name(Method::PUT, "/b", &[]), "CreateBucket");
        assert_eq!(name(Method::POST, "/b?delete", &[]), "DeleteObjects");
        assert_eq!(op(Method::POST, "/b/k?uploads", &[]).operation, Operation::CreateMultipartUpload);
        assert!(matches!(op(Method::POST, "/b/k?select&select-type=2", &[]).operation, Operation::Refused(_)));
        assert_eq!(op(Method::GET, "/b/k?attributes", &[]).operation, Operation::GetObjectAttributes);
        assert!(matches!(op(Method::POST, "/b", &[]).operation, Operation::Refused(_)));
        // A form body is refused wherever it is sent (s3s reads one on `?delete` as PostObject).
        for uri in ["/b", "/b?delete"] {
            let e = refused(Method::POST, uri, &[("content-type", "multipart/form-data; boundary=x")]);
            assert_eq!(e.code(), "NotImplemented", "{uri}");
        }
    }

    /// The shapes adversarial testing stored plaintext or returned ciphertext with.
    #[test]
    fn unknown_shapes_are_refused_before_forwarding() {
        for uri in [
            "/b/k?attributes",
            "/b/k?uploadId=zzz",
            "/b/k?uploadId=zzz&partnumber=1",
            "/b/k?torrent",
            "/b/k?restore",
            "/b/k?uploads",
            "/b/k?append",
            "/b/k?anything-new",
        ] {
            assert_eq!(refused(Method::PUT, uri, &[]).code(), "NotImplemented", "PUT {uri}");
        }
        for uri in ["/b/k?restore", "/b/k?uploads", "/b/k?partNumber=1&uploadId=x", "/b/k?foo=bar"] {
            assert_eq!(refused(Method::GET, uri, &[]).code(), "NotImplemented", "GET {uri}");
        }
        assert_eq!(refused(Method::POST, "/b/k", &[]).code(), "NotImplemented");
        assert_eq!(refused(Method::POST, "/b/k?uploads&x=1", &[]).code(), "NotImplemented");
        assert_eq!(refused(Method::PATCH, "/b/k", &[]).code(), "NotImplemented");
        assert_eq!(refused(Method::PUT, "/b/k?uploadId=a&uploadId=b&partNumber=1", &[]).code(), "InvalidArgument");
        assert_eq!(refused(Method::GET, "/b?list-type=1", &[]).code(), "InvalidArgument");
        assert_eq!(refused(Method::PUT, "/b/k", &[("x-amz-write-offset-bytes", "5")]).code(), "NotImplemented");
        assert_eq!(
            refused(Method::GET, "/b/k", &[("x-amz-meta-cloudtaser-layout", "multipart")]).code(),
            "InvalidArgument"
        );
    }

    /// `x-id` is the SDKs' routing hint; s3s routes by it, so it must name
    /// the operation that was checked, and it is never forwarded.
    #[test]
    fn x_id_must_agree_and_is_not_forwarded() {
        let r = op(Method::PUT, "/b/k?x-id=PutObject", &[]);
        assert!(r.query.is_empty());
        assert_eq!(op(Method::PUT, "/b/k?x-id=CopyObject", &[("x-amz-copy-source", "/a/b")]).name, "CopyObject");
        for (m, uri) in [
            (Method::PUT, "/b/k?tagging&x-id=PutObject"),
            (Method::PUT, "/b/k?tagging&x-id=CopyObject"),
            (Method::GET, "/b?location&x-id=ListObjects"),
            (Method::GET, "/b/k?uploadId=u&x-id=GetObject"),
            (Method::PUT, "/b/k?tagging&x-id=PutObjectAcl"),
        ] {
            assert_eq!(refused(m.clone(), uri, &[]).code(), "InvalidArgument", "{m} {uri}");
        }
    }

    #[test]
    fn copy_sources_take_only_a_version() {
        let mut h = HeaderMap::new();
        for bad in ["/allowed/x?/../../secret/top.txt", "/b/k?x=/../../c", "/b/k?versionId=1&x=2", "/b/k?versionId=a/b"]
        {
            h.insert("x-amz-copy-source", bad.parse().unwrap());
            assert!(copy_source(&h).is_err(), "{bad}");
        }
        h.insert("x-amz-copy-source", "/b/k?versionId=3HL4kqtJlcpXroDTDmJ".parse().unwrap());
        assert_eq!(copy_source(&h).unwrap().query_value("versionId"), Some("3HL4kqtJlcpXroDTDmJ"));
    }

    #[test]
    fn malformed_names_are_refused() {
        assert_eq!(refused(Method::GET, "/b/a/../c", &[]).code(), "InvalidArgument");
        assert_eq!(refused(Method::GET, "/b/./c", &[]).code(), "InvalidArgument");
        assert_eq!(refused(Method::PUT, "/b/a%00b", &[]).code(), "InvalidArgument");
        assert_eq!(refused(Method::GET, "/..%2Fother/k", &[]).code(), "InvalidBucketName");
        assert_eq!(refused(Method::GET, "/b%20c/k", &[]).code(), "InvalidBucketName");
        assert_eq!(refused(Method::GET, "/b/%zz", &[]).code(), "InvalidArgument");
        assert_eq!(refused(Method::GET, "/b/%C3%28", &[]).code(), "InvalidArgument");
        assert_eq!(op(Method::GET, "/b/a..b/.hidden/c.", &[]).key.as_deref(), Some("a..b/.hidden/c."));
    }

    #[test]
    fn query_headers_are_hoisted_and_reserved_names_refused() {
        let mut h = HeaderMap::new();
        let uri: http::Uri = "/b/k?X-Amz-Meta-Colour=red&x-id=PutObject&X-Amz-Signature=s".parse().unwrap();
        let rebuilt = hoist_query_headers(&uri, &mut h).unwrap().unwrap();
        assert_eq!(rebuilt.query(), Some("x-id=PutObject&X-Amz-Signature=s"));
        assert_eq!(h.get("x-amz-meta-colour").unwrap(), "red");
        let uri: http::Uri = "/b/k?x-amz-meta-cloudtaser-layout=multipart".parse().unwrap();
        assert_eq!(hoist_query_headers(&uri, &mut h).unwrap_err().code(), "InvalidArgument");
        let uri: http::Uri = "/b/k?X-AMZ-META-CLOUDTASER-SALT=00".parse().unwrap();
        assert_eq!(hoist_query_headers(&uri, &mut h).unwrap_err().code(), "InvalidArgument");
        let uri: http::Uri = "/b/k?x-amz-meta-colour=blue".parse().unwrap();
        assert_eq!(hoist_query_headers(&uri, &mut h).unwrap_err().code(), "InvalidArgument");
        let uri: http::Uri = "/b/k?versionId=1".parse().unwrap();
        assert!(hoist_query_headers(&uri, &mut h).unwrap().is_none());
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
        // Host names are case-insensitive and may be fully qualified.
        for host in ["My-Bucket.LOCALHOST:8190", "my-bucket.localhost.", "my-bucket.localhost.:8190"] {
            let r = op(Method::GET, "/some/key", &[("host", host)]);
            assert_eq!((r.bucket.as_deref(), r.key.as_deref()), (Some("my-bucket"), Some("some/key")), "{host}");
        }
        let r = op(Method::GET, "/my-bucket/key", &[("host", "localhost.")]);
        assert_eq!((r.bucket.as_deref(), r.key.as_deref()), (Some("my-bucket"), Some("key")));
    }

    #[test]
    fn an_empty_suffix_turns_virtual_hosted_style_off() {
        for host in ["my-bucket.localhost:8190", "my-bucket.", "my-bucket"] {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, host.parse().unwrap());
            let r = classify(&Method::GET, &"/other/key".parse().unwrap(), &h, "").unwrap();
            assert_eq!((r.bucket.as_deref(), r.key.as_deref()), (Some("other"), Some("key")), "{host}");
        }
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, "my-bucket.s3.example.com".parse().unwrap());
        let r = classify(&Method::GET, &"/some/key".parse().unwrap(), &h, "s3.example.com").unwrap();
        assert_eq!((r.bucket.as_deref(), r.key.as_deref()), (Some("my-bucket"), Some("some/key")));
    }
}
