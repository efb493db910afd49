//! An in-memory S3, as the proxy's [`Transport`]: it receives exactly what
//! the proxy puts on the wire (path-style URIs, SigV4-signed headers,
//! aws-chunked bodies with a CRC32C trailer) and answers as S3 does for the
//! operations it implements, statefully (buckets of objects with bytes,
//! metadata, tags and ETags; multipart uploads with parts). Every request is
//! recorded so that tests can assert on what reached the upstream, a hook
//! can answer any request with a canned response or a dropped connection,
//! and stored objects can be read and tampered with at rest.
//!
//! Not implemented: versioning, ACLs, bucket configuration, SSE. Requests
//! outside what is implemented are answered `501 NotImplemented`, so a test
//! notices the proxy sending one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use md5::Digest as _;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::body::{BoxError, ProxyBody, full};
use crate::stream::aws_chunked::ChunkedDecoder;
use crate::stream::checksum::Crc32c;
use crate::upstream::forward::Transport;

/// The access key id the proxy signs with in tests.
pub const PROXY_ACCESS_KEY: &str = "AKIAPROXYFAKE0000001";
/// S3's minimum size of every part but the last.
const MIN_PART: usize = 5 << 20;

/// One request as it reached the upstream.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The raw path, percent-encoded as sent.
    pub path: String,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// The payload, aws-chunked framing undone.
    pub body: Bytes,
}

impl Recorded {
    pub fn has_query(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `METHOD /path?query` for messages.
    pub fn line(&self) -> String {
        let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} {}?{}", self.method, self.path, q.join("&"))
    }
}

/// What a hook makes the upstream do instead of answering.
pub enum Fault {
    /// This response, as the upstream's.
    Answer { status: u16, headers: Vec<(&'static str, String)>, body: Bytes },
    /// The connection fails before any response.
    Disconnect,
    /// The request is answered as usual, after this long (on tokio's clock).
    Delay(std::time::Duration),
}

type Hook = Box<dyn Fn(&Recorded) -> Option<Fault> + Send + Sync>;

/// A stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub body: Bytes,
    /// `x-amz-meta-*` and the content headers S3 keeps with an object.
    pub meta: HeaderMap,
    /// Quoted, as S3 sends it.
    pub etag: String,
    pub tags: Vec<(String, String)>,
    /// Lengths of the parts of a multipart object (empty for a single PUT).
    pub parts: Vec<u64>,
    pub last_modified: SystemTime,
}

impl StoredObject {
    fn new(body: Bytes, meta: HeaderMap, tags: Vec<(String, String)>) -> Self {
        let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
        Self { body, meta, etag, tags, parts: Vec::new(), last_modified: SystemTime::now() }
    }
}

#[derive(Debug, Clone)]
struct Part {
    body: Bytes,
    etag: String,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    meta: HeaderMap,
    tags: Vec<(String, String)>,
    parts: BTreeMap<u32, Part>,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, BTreeMap<String, StoredObject>>,
    uploads: HashMap<String, Upload>,
    next_upload: u64,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    log: Mutex<Vec<Recorded>>,
    hook: Mutex<Option<Hook>>,
}

/// The in-memory S3; clones share one store.
#[derive(Clone, Default)]
pub struct FakeS3 {
    inner: Arc<Inner>,
}

/// An S3 error: status, code, message.
struct S3Error(StatusCode, &'static str, String);

type Answer = Result<Response<ProxyBody>, S3Error>;

fn err(status: u16, code: &'static str, message: impl Into<String>) -> S3Error {
    S3Error(StatusCode::from_u16(status).expect("status"), code, message.into())
}

fn no_such_key() -> S3Error {
    err(404, "NoSuchKey", "The specified key does not exist.")
}

fn no_such_upload() -> S3Error {
    err(404, "NoSuchUpload", "The specified upload does not exist.")
}

fn precondition_failed() -> S3Error {
    err(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
}

fn http_date(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::HttpDate).unwrap_or_default()
}

fn iso_date(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default()
}

fn parse_http_date(v: &str) -> Option<i64> {
    aws_smithy_types::DateTime::from_str(v.trim(), aws_smithy_types::date_time::Format::HttpDate).ok().map(|d| d.secs())
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn xml(status: StatusCode, doc: String) -> Response<ProxyBody> {
    let doc = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{doc}");
    let mut resp = Response::new(full(Bytes::from(doc.clone())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(doc.len()));
    resp
}

/// An object body in the pieces a socket delivers it in, not one buffer.
fn streamed(bytes: Bytes) -> ProxyBody {
    const PIECE: usize = 16 << 10;
    let pieces: Vec<Bytes> =
        (0..bytes.len()).step_by(PIECE).map(|i| bytes.slice(i..(i + PIECE).min(bytes.len()))).collect();
    let frames = futures_util::stream::iter(pieces.into_iter().map(|b| Ok::<_, BoxError>(http_body::Frame::data(b))));
    crate::body::boxed(http_body_util::StreamBody::new(frames))
}

fn ok_xml(doc: String) -> Answer {
    Ok(xml(StatusCode::OK, doc))
}

fn empty(status: u16) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp
}

/// Every `<tag>` text in document order (the proxy's own reader).
fn texts(doc: &[u8], tag: &[u8]) -> Result<Vec<String>, S3Error> {
    crate::s3::xml::texts_of(doc, tag).map_err(|_| err(400, "MalformedXML", "The XML you provided was not well-formed"))
}

/// Headers S3 keeps with an object besides `x-amz-meta-*`.
const CONTENT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-amz-storage-class",
    "x-amz-website-redirect-location",
];

/// The object metadata a write's headers set.
fn object_meta(headers: &HeaderMap) -> HeaderMap {
    let mut meta = HeaderMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-amz-meta-") || CONTENT_HEADERS.contains(&name.as_str()) {
            meta.append(name.clone(), value.clone());
        }
    }
    // S3 keeps the content codings but not aws-chunked, which framed the upload.
    crate::s3::headers::set_content_encoding(&mut meta, false);
    meta
}

fn parse_tags(value: &str) -> Vec<(String, String)> {
    value
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// A `bytes=…` range resolved against `len`: `None` when unsatisfiable,
/// `Some(None)` when the header is not a single range S3 honours.
fn resolve_range(spec: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let Some(spec) = spec.trim().strip_prefix("bytes=") else { return Some(None) };
    let Some((a, b)) = spec.split_once('-') else { return Some(None) };
    if spec.contains(',') {
        return Some(None);
    }
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else { return Some(None) };
        if n == 0 || len == 0 {
            return None;
        }
        return Some(Some((len.saturating_sub(n), len - 1)));
    }
    let Ok(first) = a.parse::<u64>() else { return Some(None) };
    let last = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(l) if l >= first => l.min(len.saturating_sub(1)),
            _ => return Some(None),
        }
    };
    if first >= len { None } else { Some(Some((first, last))) }
}

fn etag_in(condition: &str, etag: &str) -> bool {
    let etag = etag.trim_matches('"');
    condition.split(',').map(|c| c.trim().trim_start_matches("W/").trim_matches('"')).any(|c| c == "*" || c == etag)
}

/// S3's read conditions: `Some(304 or 412)` when they fail.
fn read_conditions(headers: &HeaderMap, obj: &StoredObject) -> Option<u16> {
    let modified = secs(obj.last_modified);
    let if_match = header(headers, "if-match");
    let if_none = header(headers, "if-none-match");
    if let Some(c) = if_match
        && !etag_in(c, &obj.etag)
    {
        return Some(412);
    }
    if if_match.is_none()
        && let Some(d) = header(headers, "if-unmodified-since").and_then(parse_http_date)
        && modified > d
    {
        return Some(412);
    }
    if let Some(c) = if_none
        && etag_in(c, &obj.etag)
    {
        return Some(304);
    }
    if if_none.is_none()
        && let Some(d) = header(headers, "if-modified-since").and_then(parse_http_date)
        && modified <= d
    {
        return Some(304);
    }
    None
}

impl FakeS3 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn create_bucket(&self, name: &str) {
        self.inner.state.lock().unwrap().buckets.entry(name.to_owned()).or_default();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.log.lock().unwrap().clone()
    }

    /// Answers requests for which `hook` returns a fault with that fault
    /// instead (replacing any earlier hook).
    pub fn set_hook(&self, hook: impl Fn(&Recorded) -> Option<Fault> + Send + Sync + 'static) {
        *self.inner.hook.lock().unwrap() = Some(Box::new(hook));
    }

    pub fn clear_hook(&self) {
        *self.inner.hook.lock().unwrap() = None;
    }

    /// The object as stored.
    pub fn object(&self, bucket: &str, key: &str) -> Option<StoredObject> {
        self.inner.state.lock().unwrap().buckets.get(bucket)?.get(key).cloned()
    }

    /// Every stored object of a bucket, by key.
    pub fn objects(&self, bucket: &str) -> BTreeMap<String, StoredObject> {
        self.inner.state.lock().unwrap().buckets.get(bucket).cloned().unwrap_or_default()
    }

    /// Changes a stored object at rest (its ETag stays, as on a disk that flipped a bit).
    pub fn tamper(&self, bucket: &str, key: &str, change: impl FnOnce(&mut StoredObject)) {
        let mut state = self.inner.state.lock().unwrap();
        let obj = state.buckets.get_mut(bucket).and_then(|b| b.get_mut(key)).expect("object to tamper with");
        change(obj);
    }

    /// Stores an object directly, as a writer without the proxy would.
    pub fn put_raw(&self, bucket: &str, key: &str, body: &[u8], meta: &[(&str, &str)]) {
        let mut headers = HeaderMap::new();
        for (k, v) in meta {
            headers.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let obj = StoredObject::new(Bytes::copy_from_slice(body), headers, Vec::new());
        self.inner.state.lock().unwrap().buckets.entry(bucket.to_owned()).or_default().insert(key.to_owned(), obj);
    }

    /// Multipart uploads in progress.
    pub fn upload_count(&self) -> usize {
        self.inner.state.lock().unwrap().uploads.len()
    }

    /// Reads the body as the upstream would, checking the framing, the
    /// declared lengths, the payload hash and the trailer checksum.
    fn payload(headers: &HeaderMap, raw: Bytes) -> Result<Bytes, S3Error> {
        if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok())
            && len != raw.len()
        {
            return Err(err(400, "IncompleteBody", "The request body is shorter or longer than Content-Length"));
        }
        let sha = header(headers, "x-amz-content-sha256")
            .ok_or_else(|| err(400, "InvalidRequest", "Missing required header x-amz-content-sha256"))?;
        let chunked = header(headers, "content-encoding").is_some_and(|v| v.contains("aws-chunked"));
        match sha {
            "UNSIGNED-PAYLOAD" if !chunked => Ok(raw),
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" if chunked => {
                let mut decoder = ChunkedDecoder::any_trailers();
                let mut out = Vec::new();
                let bad = |e: crate::error::ProxyError| err(400, "IncompleteBody", e.to_string());
                decoder.feed(raw, &mut out).map_err(bad)?;
                decoder.finish().map_err(bad)?;
                let body = Bytes::from(out.concat());
                let declared = header(headers, "x-amz-decoded-content-length").and_then(|v| v.parse::<usize>().ok());
                if declared != Some(body.len()) {
                    return Err(err(400, "IncompleteBody", "x-amz-decoded-content-length does not match the body"));
                }
                let trailer = header(headers, "x-amz-trailer").unwrap_or("");
                let sent = decoder.trailers().iter().find(|(n, _)| n == trailer).map(|(_, v)| v.clone());
                if trailer != "x-amz-checksum-crc32c" || sent.is_none() {
                    return Err(err(400, "InvalidRequest", format!("unexpected trailer {trailer:?}")));
                }
                let mut crc = Crc32c::default();
                crc.update(&body);
                if sent.as_deref() != Some(crc.base64().as_str()) {
                    return Err(err(
                        400,
                        "BadDigest",
                        "The CRC32C you specified did not match the calculated checksum.",
                    ));
                }
                Ok(body)
            }
            hash if hash.len() == 64 && !chunked => {
                let actual = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &raw));
                if actual != hash {
                    return Err(err(
                        400,
                        "XAmzContentSHA256Mismatch",
                        "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    ));
                }
                Ok(raw)
            }
            other => Err(err(400, "InvalidRequest", format!("unexpected x-amz-content-sha256 {other}"))),
        }
    }

    /// The proxy's signature, never the workload's.
    fn check_auth(headers: &HeaderMap) -> Result<(), S3Error> {
        let auth = header(headers, "authorization").unwrap_or("");
        let expected = format!("AWS4-HMAC-SHA256 Credential={PROXY_ACCESS_KEY}/");
        if !auth.starts_with(&expected) || !auth.contains("Signature=") || !headers.contains_key("x-amz-date") {
            return Err(err(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            ));
        }
        Ok(())
    }

    async fn serve(self, req: http::Request<ProxyBody>) -> Result<Response<ProxyBody>, BoxError> {
        let (parts, body) = req.into_parts();
        let raw = body.collect().await?.to_bytes();
        let path = parts.uri.path().to_owned();
        let decoded = decode(path.trim_start_matches('/'));
        let (bucket, key) = match decoded.split_once('/') {
            Some((b, k)) => (Some(b.to_owned()), (!k.is_empty()).then(|| k.to_owned())),
            None => ((!decoded.is_empty()).then_some(decoded.clone()), None),
        };
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        let payload = Self::payload(&parts.headers, raw.clone());
        let recorded = Recorded {
            method: parts.method.clone(),
            path,
            bucket,
            key,
            query,
            headers: parts.headers.clone(),
            body: payload.as_ref().cloned().unwrap_or(raw),
        };
        self.inner.log.lock().unwrap().push(recorded.clone());
        let fault = self.inner.hook.lock().unwrap().as_ref().and_then(|h| h(&recorded));
        if let Some(fault) = fault {
            return match fault {
                Fault::Delay(wait) => {
                    tokio::time::sleep(wait).await;
                    self.answer(&parts.method, &parts.headers, payload, &recorded)
                }
                Fault::Disconnect => Err("connection reset by peer".into()),
                Fault::Answer { status, headers, body } => {
                    let mut resp = Response::new(full(body.clone()));
                    *resp.status_mut() = StatusCode::from_u16(status)?;
                    for (k, v) in headers {
                        resp.headers_mut().append(k, HeaderValue::from_str(&v)?);
                    }
                    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                    Ok(resp)
                }
            };
        }
        self.answer(&parts.method, &parts.headers, payload, &recorded)
    }

    fn answer(
        &self,
        method: &Method,
        headers: &HeaderMap,
        payload: Result<Bytes, S3Error>,
        recorded: &Recorded,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let head = method == Method::HEAD;
        let answer = Self::check_auth(headers).and(payload).and_then(|body| self.dispatch(recorded, body));
        let mut resp = match answer {
            Ok(resp) => resp,
            Err(S3Error(status, code, message)) => {
                let resource = esc(&recorded.path);
                let doc = format!(
                    "<Error><Code>{code}</Code><Message>{}</Message><Resource>{resource}</Resource><RequestId>FAKE</RequestId></Error>",
                    esc(&message)
                );
                let mut resp = xml(status, doc);
                if head {
                    *resp.body_mut() = full(Bytes::new());
                }
                resp
            }
        };
        resp.headers_mut().insert("x-amz-request-id", HeaderValue::from_static("FAKES3REQ"));
        Ok(resp)
    }

    fn dispatch(&self, r: &Recorded, body: Bytes) -> Answer {
        let mut state = self.inner.state.lock().unwrap();
        let state = &mut *state;
        let Some(bucket) = r.bucket.clone() else {
            return Err(err(501, "NotImplemented", "ListBuckets is not implemented by the fake"));
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = state.buckets.entry(bucket.clone()) {
            if r.method == Method::PUT && r.key.is_none() && r.query.is_empty() {
                slot.insert(BTreeMap::new());
                return Ok(empty(200));
            }
            return Err(err(404, "NoSuchBucket", "The specified bucket does not exist"));
        }
        let m = r.method.clone();
        let Some(key) = r.key.clone() else {
            return match m {
                Method::GET if r.has_query("list-type") => list(state, &bucket, r, ListKind::V2),
                Method::GET if r.has_query("versions") => list(state, &bucket, r, ListKind::Versions),
                Method::GET if r.has_query("uploads") => list_uploads(state, &bucket),
                Method::GET if r.query.iter().all(|(k, _)| LIST_V1.contains(&k.as_str())) => {
                    list(state, &bucket, r, ListKind::V1)
                }
                Method::HEAD if r.query.is_empty() => Ok(empty(200)),
                Method::POST if r.has_query("delete") => delete_objects(state, &bucket, r, &body),
                _ => Err(err(501, "NotImplemented", format!("{} is not implemented by the fake", r.line()))),
            };
        };
        let upload = r.query_value("uploadId").map(str::to_owned);
        let copy = r.headers.contains_key("x-amz-copy-source");
        match (m, upload) {
            (Method::PUT, Some(id)) if copy => upload_part_copy(state, r, &id),
            (Method::PUT, Some(id)) => upload_part(state, r, &id, body),
            (Method::GET, Some(id)) => list_parts(state, r, &id),
            (Method::POST, Some(id)) => complete(state, &bucket, &key, r, &id, &body),
            (Method::DELETE, Some(id)) => match state.uploads.remove(&id) {
                Some(_) => Ok(empty(204)),
                None => Err(no_such_upload()),
            },
            (Method::POST, None) if r.has_query("uploads") => create_upload(state, &bucket, &key, r),
            (Method::PUT, None) if r.has_query("tagging") => {
                let (keys, values) = (texts(&body, b"Key")?, texts(&body, b"Value")?);
                let obj = object_mut(state, &bucket, &key)?;
                obj.tags = keys.into_iter().zip(values).collect();
                Ok(empty(200))
            }
            (Method::GET, None) if r.has_query("tagging") => {
                let obj = object_mut(state, &bucket, &key)?;
                let tags: String = obj
                    .tags
                    .iter()
                    .map(|(k, v)| format!("<Tag><Key>{}</Key><Value>{}</Value></Tag>", esc(k), esc(v)))
                    .collect();
                ok_xml(format!(
                    "<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>{tags}</TagSet></Tagging>"
                ))
            }
            (Method::DELETE, None) if r.has_query("tagging") => {
                object_mut(state, &bucket, &key)?.tags.clear();
                Ok(empty(204))
            }
            (Method::GET, None) if r.has_query("attributes") => attributes(state, &bucket, &key, r),
            (Method::PUT, None) if copy && r.query.is_empty() => copy_object(state, &bucket, &key, r),
            (Method::PUT, None) if r.query.is_empty() => put_object(state, &bucket, &key, r, body),
            (m @ (Method::GET | Method::HEAD), None)
                if r.query.iter().all(|(k, _)| READ_PARAMS.contains(&k.as_str())) =>
            {
                get_object(state, &bucket, &key, r, m == Method::HEAD)
            }
            (Method::DELETE, None) if r.query.is_empty() => {
                state.buckets.get_mut(&bucket).expect("bucket").remove(&key);
                Ok(empty(204))
            }
            _ => Err(err(501, "NotImplemented", format!("{} is not implemented by the fake", r.line()))),
        }
    }
}

const LIST_V1: &[&str] = &["prefix", "delimiter", "marker", "max-keys", "encoding-type"];
const READ_PARAMS: &[&str] = &["partNumber", "versionId"];

fn object_mut<'a>(state: &'a mut State, bucket: &str, key: &str) -> Result<&'a mut StoredObject, S3Error> {
    state.buckets.get_mut(bucket).and_then(|b| b.get_mut(key)).ok_or_else(no_such_key)
}

/// The `x-amz-copy-source` object, with its conditions checked.
fn copy_source(state: &State, r: &Recorded) -> Result<StoredObject, S3Error> {
    let raw = header(&r.headers, "x-amz-copy-source").unwrap_or("");
    let raw = raw.split_once('?').map_or(raw, |(p, _)| p);
    let decoded = decode(raw.trim_start_matches('/'));
    let (b, k) = decoded
        .split_once('/')
        .ok_or_else(|| err(400, "InvalidArgument", "Copy Source must mention the source bucket and key"))?;
    let src = state.buckets.get(b).ok_or_else(|| err(404, "NoSuchBucket", "The specified bucket does not exist"))?;
    let obj = src.get(k).ok_or_else(no_such_key)?.clone();
    if let Some(c) = header(&r.headers, "x-amz-copy-source-if-match")
        && !etag_in(c, &obj.etag)
    {
        return Err(precondition_failed());
    }
    if let Some(c) = header(&r.headers, "x-amz-copy-source-if-none-match")
        && etag_in(c, &obj.etag)
    {
        return Err(precondition_failed());
    }
    Ok(obj)
}

fn write_conditions(state: &State, bucket: &str, key: &str, r: &Recorded) -> Result<(), S3Error> {
    let existing = state.buckets.get(bucket).and_then(|b| b.get(key));
    if let Some(c) = header(&r.headers, "if-none-match")
        && c.trim() == "*"
        && existing.is_some()
    {
        return Err(precondition_failed());
    }
    if let Some(c) = header(&r.headers, "if-match") {
        match existing {
            Some(obj) if etag_in(c, &obj.etag) => {}
            Some(_) => return Err(precondition_failed()),
            None => return Err(no_such_key()),
        }
    }
    Ok(())
}

fn etag_response(status: u16, etag: &str) -> Response<ProxyBody> {
    let mut resp = empty(status);
    resp.headers_mut().insert(http::header::ETAG, HeaderValue::from_str(etag).expect("etag"));
    resp
}

fn put_object(state: &mut State, bucket: &str, key: &str, r: &Recorded, body: Bytes) -> Answer {
    write_conditions(state, bucket, key, r)?;
    if let Some(md5) = header(&r.headers, "content-md5")
        && STANDARD.encode(md5::Md5::digest(&body)) != md5
    {
        return Err(err(400, "BadDigest", "The Content-MD5 you specified did not match what we received."));
    }
    let tags = header(&r.headers, "x-amz-tagging").map(parse_tags).unwrap_or_default();
    let obj = StoredObject::new(body, object_meta(&r.headers), tags);
    let etag = obj.etag.clone();
    state.buckets.get_mut(bucket).expect("bucket").insert(key.to_owned(), obj);
    Ok(etag_response(200, &etag))
}

fn get_object(state: &mut State, bucket: &str, key: &str, r: &Recorded, head: bool) -> Answer {
    let obj = state.buckets.get(bucket).and_then(|b| b.get(key)).ok_or_else(no_such_key)?;
    match read_conditions(&r.headers, obj) {
        Some(412) => return Err(precondition_failed()),
        Some(status) => {
            let mut resp = etag_response(status, &obj.etag);
            resp.headers_mut()
                .insert(http::header::LAST_MODIFIED, HeaderValue::from_str(&http_date(obj.last_modified)).unwrap());
            return Ok(resp);
        }
        None => {}
    }
    let len = obj.body.len() as u64;
    let mut range = match header(&r.headers, "range").map(|v| resolve_range(v, len)) {
        None | Some(Some(None)) => None,
        Some(None) => {
            let mut e = err(416, "InvalidRange", "The requested range is not satisfiable");
            e.2 = format!("{} (object length {len})", e.2);
            return Err(e);
        }
        Some(Some(Some(r))) => Some(r),
    };
    let mut parts_count = None;
    if let Some(n) = r.query_value("partNumber") {
        let n: usize = n.parse().map_err(|_| err(400, "InvalidArgument", "Part number must be an integer"))?;
        let lens = if obj.parts.is_empty() { vec![len] } else { obj.parts.clone() };
        if n == 0 || n > lens.len() {
            return Err(err(416, "InvalidPartNumber", "The requested partnumber is not satisfiable"));
        }
        let start: u64 = lens[..n - 1].iter().sum();
        range = Some((start, start + lens[n - 1] - 1));
        parts_count = (!obj.parts.is_empty()).then_some(obj.parts.len());
    }
    let (status, bytes) = match range {
        Some((a, b)) => (206, obj.body.slice(a as usize..=b as usize)),
        None => (200, obj.body.clone()),
    };
    let len_sent = bytes.len();
    let mut resp = Response::new(if head { full(Bytes::new()) } else { streamed(bytes) });
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    let h = resp.headers_mut();
    for (k, v) in &obj.meta {
        h.append(k.clone(), v.clone());
    }
    h.entry(http::header::CONTENT_TYPE).or_insert(HeaderValue::from_static("binary/octet-stream"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len_sent));
    h.insert(http::header::ETAG, HeaderValue::from_str(&obj.etag).unwrap());
    h.insert(http::header::LAST_MODIFIED, HeaderValue::from_str(&http_date(obj.last_modified)).unwrap());
    h.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some((a, b)) = range {
        h.insert(http::header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).unwrap());
    }
    if let Some(n) = parts_count {
        h.insert("x-amz-mp-parts-count", HeaderValue::from(n));
    }
    if !obj.tags.is_empty() {
        h.insert("x-amz-tagging-count", HeaderValue::from(obj.tags.len()));
    }
    Ok(resp)
}

fn copy_object(state: &mut State, bucket: &str, key: &str, r: &Recorded) -> Answer {
    let src = copy_source(state, r)?;
    let replace = header(&r.headers, "x-amz-metadata-directive").is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
    let same = header(&r.headers, "x-amz-copy-source")
        .map(|s| decode(s.split('?').next().unwrap_or("").trim_start_matches('/')))
        .is_some_and(|s| s == format!("{bucket}/{key}"));
    if same && !replace {
        return Err(err(
            400,
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let meta = if replace { object_meta(&r.headers) } else { src.meta.clone() };
    let tags = match header(&r.headers, "x-amz-tagging-directive") {
        Some(d) if d.eq_ignore_ascii_case("REPLACE") => {
            header(&r.headers, "x-amz-tagging").map(parse_tags).unwrap_or_default()
        }
        _ => src.tags.clone(),
    };
    // One CopyObject writes a single-part object, whatever the source was.
    let obj = StoredObject::new(src.body.clone(), meta, tags);
    let (etag, modified) = (obj.etag.clone(), obj.last_modified);
    state.buckets.get_mut(bucket).expect("bucket").insert(key.to_owned(), obj);
    ok_xml(format!(
        "<CopyObjectResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
        iso_date(modified),
        esc(&etag)
    ))
}

fn create_upload(state: &mut State, bucket: &str, key: &str, r: &Recorded) -> Answer {
    state.next_upload += 1;
    // Upload ids with characters a proxy must encode and carry intact.
    let id = format!("{}~Up.{:08x}", state.next_upload, state.next_upload.wrapping_mul(0x9e37_79b9));
    let tags = header(&r.headers, "x-amz-tagging").map(parse_tags).unwrap_or_default();
    let upload = Upload {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        meta: object_meta(&r.headers),
        tags,
        parts: BTreeMap::new(),
    };
    state.uploads.insert(id.clone(), upload);
    ok_xml(format!(
        "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        esc(bucket),
        esc(key),
        esc(&id)
    ))
}

fn upload_of<'a>(state: &'a mut State, r: &Recorded, id: &str) -> Result<&'a mut Upload, S3Error> {
    match state.uploads.get_mut(id) {
        Some(u) if Some(&u.bucket) == r.bucket.as_ref() && Some(&u.key) == r.key.as_ref() => Ok(u),
        _ => Err(no_such_upload()),
    }
}

fn part_number(r: &Recorded) -> Result<u32, S3Error> {
    r.query_value("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| err(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"))
}

fn upload_part(state: &mut State, r: &Recorded, id: &str, body: Bytes) -> Answer {
    let number = part_number(r)?;
    let upload = upload_of(state, r, id)?;
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
    upload.parts.insert(number, Part { body, etag: etag.clone() });
    Ok(etag_response(200, &etag))
}

fn upload_part_copy(state: &mut State, r: &Recorded, id: &str) -> Answer {
    let number = part_number(r)?;
    upload_of(state, r, id)?;
    let src = copy_source(state, r)?;
    let bytes = match header(&r.headers, "x-amz-copy-source-range") {
        None => src.body.clone(),
        Some(v) => {
            let bad = || {
                err(400, "InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last")
            };
            let (a, b) = v.trim().strip_prefix("bytes=").and_then(|s| s.split_once('-')).ok_or_else(bad)?;
            let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b || b >= src.body.len() {
                return Err(err(400, "InvalidRange", "The requested range is not satisfiable"));
            }
            src.body.slice(a..=b)
        }
    };
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&bytes)));
    upload_of(state, r, id)?.parts.insert(number, Part { body: bytes, etag: etag.clone() });
    ok_xml(format!(
        "<CopyPartResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyPartResult>",
        iso_date(SystemTime::now()),
        esc(&etag)
    ))
}

fn list_parts(state: &mut State, r: &Recorded, id: &str) -> Answer {
    let max: usize = r.query_value("max-parts").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let marker: u32 = r.query_value("part-number-marker").and_then(|v| v.parse().ok()).unwrap_or(0);
    let upload = upload_of(state, r, id)?;
    let after: Vec<(&u32, &Part)> = upload.parts.range(marker + 1..).collect();
    let page = &after[..after.len().min(max)];
    let truncated = after.len() > page.len();
    let next = page.last().map_or(marker, |(n, _)| **n);
    let parts: String = page
        .iter()
        .map(|(n, p)| {
            format!(
                "<Part><PartNumber>{n}</PartNumber><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Part>",
                iso_date(SystemTime::now()),
                esc(&p.etag),
                p.body.len()
            )
        })
        .collect();
    ok_xml(format!(
        "<ListPartsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId><PartNumberMarker>{marker}</PartNumberMarker><NextPartNumberMarker>{next}</NextPartNumberMarker><MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated>{parts}</ListPartsResult>",
        esc(&upload.bucket),
        esc(&upload.key),
        esc(id)
    ))
}

fn complete(state: &mut State, bucket: &str, key: &str, r: &Recorded, id: &str, body: &[u8]) -> Answer {
    let numbers = texts(body, b"PartNumber")?;
    let etags = texts(body, b"ETag")?;
    if numbers.is_empty() || numbers.len() != etags.len() {
        return Err(err(400, "MalformedXML", "The XML you provided was not well-formed"));
    }
    write_conditions(state, bucket, key, r)?;
    let upload = upload_of(state, r, id)?;
    let mut named = Vec::new();
    for (n, e) in numbers.iter().zip(&etags) {
        let n: u32 = n.trim().parse().map_err(|_| err(400, "MalformedXML", "PartNumber"))?;
        if named.last().is_some_and(|(last, _)| *last >= n) {
            return Err(err(400, "InvalidPartOrder", "The list of parts was not in ascending order."));
        }
        let part = upload.parts.get(&n).filter(|p| p.etag.trim_matches('"') == e.trim().trim_matches('"'));
        let part = part.ok_or_else(|| {
            err(400, "InvalidPart", format!("One or more of the specified parts could not be found (part {n})."))
        })?;
        named.push((n, part.clone()));
    }
    if named[..named.len() - 1].iter().any(|(_, p)| p.body.len() < MIN_PART) {
        return Err(err(
            400,
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed object size.",
        ));
    }
    let upload = state.uploads.remove(id).expect("upload");
    let mut digests = Vec::new();
    let mut whole = Vec::new();
    for (_, p) in &named {
        digests.extend_from_slice(&hex::decode(p.etag.trim_matches('"')).expect("hex etag"));
        whole.extend_from_slice(&p.body);
    }
    let etag = format!("\"{}-{}\"", hex::encode(md5::Md5::digest(&digests)), named.len());
    let mut obj = StoredObject::new(Bytes::from(whole), upload.meta, upload.tags);
    obj.etag = etag.clone();
    obj.parts = named.iter().map(|(_, p)| p.body.len() as u64).collect();
    state.buckets.get_mut(bucket).expect("bucket").insert(key.to_owned(), obj);
    ok_xml(format!(
        "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Location>http://fake/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        esc(bucket),
        esc(key),
        esc(bucket),
        esc(key),
        esc(&etag)
    ))
}

fn delete_objects(state: &mut State, bucket: &str, r: &Recorded, body: &[u8]) -> Answer {
    // S3 requires an integrity header on DeleteObjects.
    let md5 = header(&r.headers, "content-md5");
    let checksum = r.headers.keys().any(|k| k.as_str().starts_with("x-amz-checksum-"));
    if md5.is_none() && !checksum {
        return Err(err(400, "InvalidRequest", "Missing required header for this request: Content-Md5."));
    }
    if let Some(md5) = md5
        && STANDARD.encode(md5::Md5::digest(body)) != md5
    {
        return Err(err(400, "BadDigest", "The Content-MD5 you specified did not match what we received."));
    }
    let keys = texts(body, b"Key")?;
    let quiet = texts(body, b"Quiet")?.first().is_some_and(|q| q == "true");
    let objects = state.buckets.get_mut(bucket).expect("bucket");
    let mut doc = String::from("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for key in keys {
        objects.remove(&key);
        if !quiet {
            doc.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", esc(&key)));
        }
    }
    doc.push_str("</DeleteResult>");
    ok_xml(doc)
}

#[derive(PartialEq)]
enum ListKind {
    V1,
    V2,
    Versions,
}

fn list(state: &State, bucket: &str, r: &Recorded, kind: ListKind) -> Answer {
    let objects = &state.buckets[bucket];
    let prefix = r.query_value("prefix").unwrap_or("");
    let delimiter = r.query_value("delimiter").filter(|d| !d.is_empty());
    let max: usize = r.query_value("max-keys").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let after = match kind {
        ListKind::V1 => r.query_value("marker"),
        ListKind::V2 => r.query_value("continuation-token").or(r.query_value("start-after")),
        ListKind::Versions => r.query_value("key-marker"),
    }
    .unwrap_or("");
    let mut entries = String::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut count = 0;
    let mut last = None;
    let mut truncated = false;
    for (key, obj) in objects.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)) {
        if !key.starts_with(prefix) {
            continue;
        }
        if count == max {
            truncated = true;
            break;
        }
        if let Some(d) = delimiter
            && let Some(i) = key[prefix.len()..].find(d)
        {
            let common = key[..prefix.len() + i + d.len()].to_owned();
            if !prefixes.contains(&common) {
                prefixes.push(common);
                count += 1;
            }
            last = Some(key.clone());
            continue;
        }
        let common = format!(
            "<Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass>",
            esc(key),
            iso_date(obj.last_modified),
            esc(&obj.etag),
            obj.body.len()
        );
        if kind == ListKind::Versions {
            entries
                .push_str(&format!("<Version>{common}<VersionId>null</VersionId><IsLatest>true</IsLatest></Version>"));
        } else {
            entries.push_str(&format!("<Contents>{common}</Contents>"));
        }
        count += 1;
        last = Some(key.clone());
    }
    let common: String =
        prefixes.iter().map(|p| format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", esc(p))).collect();
    let next = last.filter(|_| truncated).unwrap_or_default();
    let head = format!(
        "<Name>{}</Name><Prefix>{}</Prefix><MaxKeys>{max}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        esc(bucket),
        esc(prefix)
    );
    let doc = match kind {
        ListKind::V1 => format!(
            "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{head}<Marker>{}</Marker>{}{entries}{common}</ListBucketResult>",
            esc(after),
            if truncated { format!("<NextMarker>{}</NextMarker>", esc(&next)) } else { String::new() }
        ),
        ListKind::V2 => format!(
            "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{head}<KeyCount>{count}</KeyCount>{}{entries}{common}</ListBucketResult>",
            if truncated {
                format!("<NextContinuationToken>{}</NextContinuationToken>", esc(&next))
            } else {
                String::new()
            }
        ),
        ListKind::Versions => format!(
            "<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{head}<KeyMarker>{}</KeyMarker>{entries}{common}</ListVersionsResult>",
            esc(after)
        ),
    };
    ok_xml(doc)
}

fn list_uploads(state: &State, bucket: &str) -> Answer {
    let uploads: String = state
        .uploads
        .iter()
        .filter(|(_, u)| u.bucket == bucket)
        .map(|(id, u)| format!("<Upload><Key>{}</Key><UploadId>{}</UploadId></Upload>", esc(&u.key), esc(id)))
        .collect();
    ok_xml(format!(
        "<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><IsTruncated>false</IsTruncated>{uploads}</ListMultipartUploadsResult>",
        esc(bucket)
    ))
}

fn attributes(state: &State, bucket: &str, key: &str, r: &Recorded) -> Answer {
    let obj = state.buckets[bucket].get(key).ok_or_else(no_such_key)?;
    let wanted: Vec<&str> = r
        .headers
        .get_all("x-amz-object-attributes")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if wanted.is_empty() {
        return Err(err(400, "InvalidArgument", "The x-amz-object-attributes header is missing"));
    }
    let mut doc = String::from("<GetObjectAttributesResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    if wanted.contains(&"ETag") {
        // S3 writes this ETag without quotes.
        doc.push_str(&format!("<ETag>{}</ETag>", esc(obj.etag.trim_matches('"'))));
    }
    if wanted.contains(&"ObjectParts") && !obj.parts.is_empty() {
        doc.push_str(&format!("<ObjectParts><PartsCount>{}</PartsCount></ObjectParts>", obj.parts.len()));
    }
    if wanted.contains(&"StorageClass") {
        doc.push_str("<StorageClass>STANDARD</StorageClass>");
    }
    if wanted.contains(&"ObjectSize") {
        doc.push_str(&format!("<ObjectSize>{}</ObjectSize>", obj.body.len()));
    }
    doc.push_str("</GetObjectAttributesResponse>");
    let mut resp = xml(StatusCode::OK, doc);
    resp.headers_mut()
        .insert(http::header::LAST_MODIFIED, HeaderValue::from_str(&http_date(obj.last_modified)).unwrap());
    Ok(resp)
}

impl Transport for FakeS3 {
    fn send(&self, req: http::Request<ProxyBody>) -> BoxFuture<'static, Result<Response<ProxyBody>, BoxError>> {
        Box::pin(self.clone().serve(req))
    }
}

/// A key percent-encoded for a path, as clients send it.
pub fn encode_path(key: &str) -> String {
    key.split('/').map(|s| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_as_s3_resolves_them() {
        assert_eq!(resolve_range("bytes=0-4", 10), Some(Some((0, 4))));
        assert_eq!(resolve_range("bytes=5-", 10), Some(Some((5, 9))));
        assert_eq!(resolve_range("bytes=-3", 10), Some(Some((7, 9))));
        assert_eq!(resolve_range("bytes=8-100", 10), Some(Some((8, 9))));
        assert_eq!(resolve_range("bytes=10-", 10), None);
        assert_eq!(resolve_range("bytes=5-2", 10), Some(None));
        assert_eq!(resolve_range("items=0-1", 10), Some(None));
    }
}
