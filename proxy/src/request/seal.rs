//! Format 2's finishing step. A completed multipart upload is stored as
//! `multipart-pending`; sealing writes its part table and manifest into the
//! object's metadata with a server-side self-copy guarded by If-Match, so no
//! body byte moves through the proxy (docs/design/multipart-v2.md):
//!
//! - `PartCopy`: a multipart copy whose parts are exactly the object's
//!   streams (UploadPartCopy on their boundaries), which keeps the `-N` ETag
//!   listings need and has no 5 GiB limit;
//! - `ObjectCopy`: CopyObject onto itself with new metadata, for upstreams
//!   without UploadPartCopy (GCS's XML API).

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::RequestPath;
use super::answers::{self, ControlAnswer, Step};
use crate::body::ProxyBody;
use crate::error::{ProxyError, UpstreamFailure};
use crate::format::{
    EnvelopeMetadata, FormatError, HEADER_LEN, Header, MAX_PART_TABLE_LEN, ObjectLayout, ObjectName, SealedParts,
    StoredLayout, VERSION_3, encode_part_table, manifest_tag, streams_digest, verify_envelope, with_mac,
};
use crate::keys::DataKey;
use crate::s3::classify::S3Request;
use crate::s3::xml;
use crate::upstream::UpstreamClient;
use crate::upstream::forward::encode_key;

/// Headers that describe the object (not the request) and must survive a
/// metadata-replacing self-copy (also `rewrap`'s).
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-amz-website-redirect-location",
    "x-amz-storage-class",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
];

/// UploadPartCopy requests in flight while sealing one object. Each copies
/// one part server-side; measured on Garage (bench/seal_cost.py), a 1 GiB
/// object of 128 parts seals in 2.0 s.
const COPY_CONCURRENCY: usize = 8;

/// How a completed upload's manifest is written (`CLOUDTASER_S3PROXY_MULTIPART_SEAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SealMethod {
    /// `object-copy` on GCS, `part-copy` elsewhere.
    #[default]
    Auto,
    PartCopy,
    ObjectCopy,
}

/// The sealed object, as the upstream reports it.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Upstream ETag of the sealed object.
    pub etag: String,
    pub version_id: Option<HeaderValue>,
}

fn failed(step: &'static str, status: StatusCode, body: &[u8]) -> ProxyError {
    let code = xml::texts_of(body, b"Code").ok().and_then(|mut c| c.pop()).unwrap_or_default();
    UpstreamFailure::Seal { step, status, code }.into()
}

fn copy_source(object: &S3Request) -> Result<HeaderValue, ProxyError> {
    let (bucket, key) = (object.bucket.as_deref().unwrap_or(""), object.key.as_deref().unwrap_or(""));
    super::header_value(&format!("/{bucket}/{}", encode_key(key)))
}

/// `object` for requests that touch no object bytes (tags, deletes,
/// Complete and Abort of the copy upload): no SSE-C headers.
fn without_customer_key(object: &S3Request) -> S3Request {
    S3Request { sse_c: None, ..object.clone() }
}

/// What a self-copy writes over: the object, changed by another writer
/// since it was examined. Nothing was changed by the copy.
const CHANGED: ProxyError = ProxyError::ObjectChanged("copied onto itself");

/// Whether an S3 error says a condition of the copy failed: the source's
/// `x-amz-copy-source-if-match` or the destination's `If-Match` (`412`),
/// or S3's `409 ConditionalRequestConflict` (a write raced the Complete).
fn condition_failed(status: StatusCode, code: &str) -> bool {
    status == StatusCode::PRECONDITION_FAILED
        || code == "PreconditionFailed"
        || (status == StatusCode::CONFLICT && code == "ConditionalRequestConflict")
}

/// The document a self-copy step answered, judged by the answers table
/// (`200` and a document that is no object, nothing else). A failed
/// condition is `CHANGED`; any other error, or a `200` carrying an
/// `<Error>` (S3's late Complete failure), fails the step.
async fn judged(step: &'static str, resp: Response<ProxyBody>) -> Result<(HeaderMap, Bytes), ProxyError> {
    let (status, headers, body) = match answers::accept_control(Step::Control, resp).await? {
        ControlAnswer::Expected(parts, body) => (parts.status, parts.headers, body),
        ControlAnswer::Verdict(v) => {
            let (parts, body) = v.into_parts();
            (parts.status, parts.headers, super::collect_small(body).await?)
        }
    };
    let code = xml::texts_of(&body, b"Code").ok().and_then(|mut c| c.pop());
    if condition_failed(status, code.as_deref().unwrap_or_default()) {
        return Err(CHANGED);
    }
    if status != StatusCode::OK || code.is_some() {
        return Err(failed(step, status, &body));
    }
    Ok((headers, body))
}

/// The `ETag` element of a step's document.
fn etag_of(step: &'static str, body: &[u8]) -> Result<String, ProxyError> {
    xml::texts_of(body, b"ETag")?.pop().ok_or_else(|| failed(step, StatusCode::OK, body))
}

/// The seals the proxy runs at CompleteMultipartUpload, each as its own
/// task: a client that disconnects mid-seal does not cancel it (the copy
/// upload would be left open and the object pending), and the shutdown
/// drain waits for them (`server`).
#[derive(Debug, Default)]
pub struct SealTasks {
    running: AtomicUsize,
    idle: Notify,
}

/// Counts one running seal; the count drops when the task ends, however.
struct Running(Arc<SealTasks>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl SealTasks {
    /// Runs `seal` to completion on its own task; its result, when awaited.
    pub fn spawn<F>(self: &Arc<Self>, seal: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        tokio::spawn(async move {
            let _running = running;
            seal.await
        })
    }

    /// Seals running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Returns once no seal is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a seal that ends in
            // between still wakes this.
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The envelope a sealed object carries. Format 2: the manifest tag over
/// the table. Format 3 (`pending.auth` set): `streams` (the SHA-256 of the
/// stream headers) and the envelope MAC for `name`; its table is always
/// stored (Complete refuses one too long), or the seal fails.
pub fn sealed_envelope(
    pending: &EnvelopeMetadata,
    key: &DataKey,
    layout: &ObjectLayout,
    streams: Option<[u8; 32]>,
    name: ObjectName<'_>,
) -> Result<EnvelopeMetadata, ProxyError> {
    let table = layout.streams().iter().map(|s| (s.part_number, s.plaintext_len)).collect();
    // Too long a table is left for format-2 readers to learn from the headers.
    let table = (encode_part_table(layout).len() <= MAX_PART_TABLE_LEN).then_some(table);
    let Some(streams) = streams.filter(|_| pending.auth.is_some()) else {
        let sealed = SealedParts { total: layout.total, table, tag: manifest_tag(key.bytes(), layout) };
        return Ok(EnvelopeMetadata { layout: StoredLayout::MultipartSealed(sealed), salt: None, ..pending.clone() });
    };
    let sealed = SealedParts { total: layout.total, table, tag: streams };
    let envelope = EnvelopeMetadata { layout: StoredLayout::MultipartSealed(sealed), salt: None, ..pending.clone() };
    with_mac(key.bytes(), envelope, name).ok_or(ProxyError::PartTableTooLong)
}

/// The headers that describe the object in a HEAD answer and must survive a
/// metadata-replacing self-copy, envelope excluded.
pub fn kept_headers(head: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in head {
        let name_str = name.as_str();
        let meta = name_str.starts_with("x-amz-meta-") && !name_str.starts_with(crate::format::META_PREFIX);
        if meta || KEPT_HEADERS.contains(&name_str) {
            headers.append(name.clone(), value.clone());
        }
    }
    // Some upstreams (s3s-fs) record an aws-chunked upload's framing as a
    // content coding; it is not the object's.
    crate::s3::headers::set_content_encoding(&mut headers, false);
    headers
}

/// The object's tags as an `x-amz-tagging` value; `None` when it has none
/// or the upstream keeps no tags (501, 404, 405). Read from the current
/// version: GetObjectTagging has no conditional form, so callers pin the
/// write that follows instead.
pub async fn object_tagging(upstream: &UpstreamClient, object: &S3Request) -> Result<Option<String>, ProxyError> {
    let mut s3 = object.clone();
    s3.query.push(("tagging".into(), String::new()));
    let resp = upstream.send_buffered(Method::GET, &s3, HeaderMap::new(), Bytes::new()).await?;
    let status = resp.status();
    let body = super::collect_small(resp.into_body()).await?;
    if matches!(status, StatusCode::NOT_IMPLEMENTED | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED) {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(failed("GetObjectTagging", status, &body));
    }
    let (keys, values) = (xml::texts_of(&body, b"Key")?, xml::texts_of(&body, b"Value")?);
    if keys.is_empty() || keys.len() != values.len() {
        return Ok(None);
    }
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    Ok(Some(keys.iter().zip(&values).map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")))
}

/// The upstream side of sealing and of `rewrap`'s self-copies. It owns what
/// it needs (a shared upstream client), so a slow seal can run inside the
/// response body that keeps the client's connection alive.
#[derive(Clone)]
pub struct SelfCopier {
    upstream: Arc<UpstreamClient>,
    method: SealMethod,
}

impl RequestPath {
    /// The self-copier for this path's upstream and sealing method.
    pub fn copier(&self) -> SelfCopier {
        SelfCopier { upstream: self.upstream.clone(), method: self.seal_method }
    }
}

impl SelfCopier {
    /// How this copier seals: which conditional write its copies rely on.
    pub fn method(&self) -> SealMethod {
        self.method
    }

    /// Seals the object `s3` names, completed upstream as `etag`, whose
    /// streams are `layout`, under the data key `key` of `pending` (the
    /// upload id's, or what `seal` read). The sealed envelope is built from
    /// the envelope stored with the object, which must name the same
    /// Transit key and wrapped key as `pending`: the object is sealed only
    /// under the key it was written with, whatever an upload id claims.
    pub async fn seal_completed(
        &self,
        s3: &S3Request,
        pending: &EnvelopeMetadata,
        key: &DataKey,
        layout: &ObjectLayout,
        etag: &HeaderValue,
    ) -> Result<Sealed, ProxyError> {
        let mut object = S3Request::internal(s3.bucket.as_deref().unwrap_or(""), s3.key.as_deref(), vec![]);
        // An SSE-C object's reads and copies need its customer key.
        object.sse_c = s3.sse_c.clone();
        let mut pinned = HeaderMap::new();
        pinned.insert(http::header::IF_MATCH, etag.clone());
        let head = self.upstream.send_buffered(Method::HEAD, &object, pinned, Bytes::new()).await?;
        let head = match answers::accept(Step::ObjectHead, head, true).await {
            Ok(answers::Answer::Expected(head)) => head,
            // Replaced (412) or deleted (404) since the upstream completed it.
            Err(ProxyError::PreconditionFailed) => return Err(ProxyError::ObjectChanged("sealed")),
            Ok(answers::Answer::Verdict(v)) if v.status() == StatusCode::NOT_FOUND => {
                return Err(ProxyError::ObjectChanged("sealed"));
            }
            Ok(answers::Answer::Verdict(v)) => return Err(failed("HEAD", v.status(), b"")),
            Err(e) => return Err(e),
        };
        let stored = match EnvelopeMetadata::from_headers(head.headers())? {
            Some(e)
                if e.layout.is_multipart()
                    && e.wrapped_key == pending.wrapped_key
                    && e.transit_key == pending.transit_key =>
            {
                e
            }
            _ => return Err(ProxyError::ObjectChanged("sealed")),
        };
        // A format-3 pending envelope is bound to its name: parts rebuilt
        // under another key by someone with the store's credentials are
        // not made authentic there.
        let name = super::stored::object_name(&object);
        if stored.auth.is_some() {
            verify_envelope(key.bytes(), &stored, name).map_err(ProxyError::Ciphertext)?;
        }
        let mut headers = kept_headers(head.headers());
        if head.headers().get("x-amz-tagging-count").is_some_and(|c| c != "0")
            && let Some(tags) = object_tagging(&self.upstream, &without_customer_key(&object)).await?
        {
            headers.insert("x-amz-tagging", super::header_value(&tags)?);
        }
        // Format 3 seals the stream headers too: every salt, so that a
        // stream from another attempt at a part cannot stand in for it.
        let streams = match stored.auth {
            Some(_) => Some(self.stream_headers_digest(&object, etag, layout).await?),
            None => None,
        };
        for (name, value) in sealed_envelope(&stored, key, layout, streams, name)?.to_headers() {
            headers.insert(name, super::header_value(&value)?);
        }
        let unsealed_version = head.headers().get("x-amz-version-id").cloned();
        let sealed = match self.method {
            SealMethod::ObjectCopy => self.self_copy_whole(&object, headers, etag).await?,
            SealMethod::PartCopy | SealMethod::Auto => self.self_copy_by_parts(&object, headers, etag, layout).await?,
        };
        // In a versioned bucket the copy is a new version: the unsealed one
        // (never readable) would linger as a noncurrent version next to it,
        // so it is removed, by its exact id. Object lock may forbid that;
        // it then stays until its retention ends (docs/COMPATIBILITY.md).
        if let (Some(old), Some(new)) = (&unsealed_version, &sealed.version_id)
            && old != new
            && old != "null"
        {
            let mut version = without_customer_key(&object);
            version.query.push(("versionId".into(), old.to_str().unwrap_or_default().to_owned()));
            match self.upstream.send_buffered(Method::DELETE, &version, HeaderMap::new(), Bytes::new()).await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(status = resp.status().as_u16(), "the unsealed version could not be removed")
                }
                Err(e) => tracing::warn!(error = %e, "the unsealed version could not be removed"),
            }
        }
        Ok(sealed)
    }

    /// SHA-256 of the object's stream headers, read at the layout's stream
    /// offsets (one 52-byte ranged read each, eight at a time, pinned to
    /// `etag`). Each must be a version-3 header matching its table entry:
    /// the seal never vouches for a stream it has not looked at.
    async fn stream_headers_digest(
        &self,
        object: &S3Request,
        etag: &HeaderValue,
        layout: &ObjectLayout,
    ) -> Result<[u8; 32], ProxyError> {
        // Boxed for the same reason as `copy_streams`' futures.
        type Read<'a> =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<[u8; HEADER_LEN], ProxyError>> + Send + 'a>>;
        let reads: Vec<Read<'_>> = layout
            .streams()
            .iter()
            .map(|stream| {
                let stream = *stream;
                Box::pin(async move {
                    let last = stream.stored_start + HEADER_LEN as u64 - 1;
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        http::header::RANGE,
                        super::header_value(&format!("bytes={}-{last}", stream.stored_start))?,
                    );
                    headers.insert(http::header::IF_MATCH, etag.clone());
                    let resp = self.upstream.send_buffered(Method::GET, object, headers, Bytes::new()).await?;
                    if resp.status() == StatusCode::PRECONDITION_FAILED {
                        return Err(CHANGED);
                    }
                    answers::range_answered(Step::ObjectRead, resp.headers(), stream.stored_start, last)?;
                    let bytes = super::collect_small(resp.into_body()).await?;
                    let header = Header::decode(&bytes).map_err(ProxyError::Ciphertext)?;
                    if header.version != VERSION_3 {
                        return Err(ProxyError::Ciphertext(FormatError::VersionMismatch(header.version)));
                    }
                    if header.part_number != stream.part_number || header.plaintext_len != stream.plaintext_len {
                        return Err(ProxyError::Ciphertext(FormatError::MalformedHeader(
                            "stream is not the expected part",
                        )));
                    }
                    Ok::<_, ProxyError>(header.encode())
                }) as Read<'_>
            })
            .collect();
        let headers: Vec<[u8; HEADER_LEN]> =
            futures_util::stream::iter(reads).buffered(COPY_CONCURRENCY).try_collect().await?;
        Ok(streams_digest(&headers))
    }

    /// CopyObject onto itself with `headers` as the new metadata, only if
    /// the object is still `etag` (single objects up to 5 GiB; GCS any size).
    /// Both ends are pinned: the source with `x-amz-copy-source-if-match`,
    /// the destination with `If-Match`, so a write by someone else that
    /// lands before the copy does is never replaced by the old content
    /// (where the upstream enforces conditional writes: the admin tools
    /// probe that first, `commands::probe`). A failed condition is
    /// `ProxyError::ObjectChanged`, and nothing was written.
    pub async fn self_copy_whole(
        &self,
        object: &S3Request,
        mut headers: HeaderMap,
        etag: &HeaderValue,
    ) -> Result<Sealed, ProxyError> {
        headers.insert("x-amz-copy-source", copy_source(object)?);
        headers.insert("x-amz-copy-source-if-match", etag.clone());
        if let Some(key) = &object.sse_c {
            key.apply_as_copy_source(&mut headers);
        }
        headers.insert(http::header::IF_MATCH, etag.clone());
        headers.insert("x-amz-metadata-directive", HeaderValue::from_static("REPLACE"));
        headers.insert("x-amz-tagging-directive", HeaderValue::from_static("COPY"));
        let resp = self.upstream.send_buffered(Method::PUT, object, headers, Bytes::new()).await?;
        let (headers, body) = judged("CopyObject", resp).await?;
        Ok(Sealed { etag: etag_of("CopyObject", &body)?, version_id: headers.get("x-amz-version-id").cloned() })
    }

    /// A multipart copy onto itself whose parts are exactly the object's
    /// streams, with `headers` as the new metadata, only if the object is
    /// still `etag`: keeps the layout and the `-N` ETag, any size. Every
    /// UploadPartCopy pins the source and the Complete pins the destination
    /// (`If-Match`): a write by someone else between the last part copy and
    /// the Complete makes the Complete fail (`ProxyError::ObjectChanged`)
    /// instead of reverting it. On any failure the copy upload is aborted.
    pub async fn self_copy_by_parts(
        &self,
        object: &S3Request,
        headers: HeaderMap,
        etag: &HeaderValue,
        layout: &ObjectLayout,
    ) -> Result<Sealed, ProxyError> {
        let mut pinned = HeaderMap::new();
        pinned.insert(http::header::IF_MATCH, etag.clone());
        self.copy_by_parts(&copy_source(object)?, etag, object, headers, pinned, layout).await
    }

    /// A multipart copy of the source `source` names (pinned to `etag`) to
    /// `dest`, one UploadPartCopy per stream, so the copy keeps the `-N`
    /// ETag listings compute exact sizes from; `headers` are the new
    /// object's, `conditions` go with the Complete. Aborted on any failure.
    pub async fn copy_by_parts(
        &self,
        source: &HeaderValue,
        etag: &HeaderValue,
        dest: &S3Request,
        headers: HeaderMap,
        conditions: HeaderMap,
        layout: &ObjectLayout,
    ) -> Result<Sealed, ProxyError> {
        let object = dest;
        let mut create = object.clone();
        create.query.push(("uploads".into(), String::new()));
        let resp = self.upstream.send_buffered(Method::POST, &create, headers, Bytes::new()).await?;
        let (_, body) = judged("CreateMultipartUpload", resp).await?;
        let upload_id = xml::texts_of(&body, b"UploadId")?.pop();
        let upload_id = upload_id.ok_or_else(|| failed("CreateMultipartUpload", StatusCode::OK, &body))?;
        let mut upload = object.clone();
        upload.query.push(("uploadId".into(), upload_id));
        let result = self.copy_and_complete(&upload, source, etag, conditions, layout).await;
        if result.is_err() {
            // Aborted whatever failed, so no copy upload (and none of its
            // parts) lingers; its own failure changes nothing more.
            let abort = without_customer_key(&upload);
            let _ = self.upstream.send_buffered(Method::DELETE, &abort, HeaderMap::new(), Bytes::new()).await;
        }
        result
    }

    /// The part copies, then the Complete pinned to `etag`.
    async fn copy_and_complete(
        &self,
        upload: &S3Request,
        source: &HeaderValue,
        etag: &HeaderValue,
        conditions: HeaderMap,
        layout: &ObjectLayout,
    ) -> Result<Sealed, ProxyError> {
        let complete = self.copy_streams(upload, source, etag, layout).await?;
        let resp =
            self.upstream.send_buffered(Method::POST, &without_customer_key(upload), conditions, complete).await?;
        let (headers, body) = judged("CompleteMultipartUpload", resp).await?;
        let etag = etag_of("CompleteMultipartUpload", &body)?;
        Ok(Sealed { etag, version_id: headers.get("x-amz-version-id").cloned() })
    }

    /// One UploadPartCopy per stream; the CompleteMultipartUpload document.
    async fn copy_streams(
        &self,
        upload: &S3Request,
        source: &HeaderValue,
        etag: &HeaderValue,
        layout: &ObjectLayout,
    ) -> Result<Bytes, ProxyError> {
        // Boxed: a stream of borrowing futures is otherwise not provably
        // `Send` for every lifetime (rust-lang/rust#102211).
        type Copy<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, ProxyError>> + Send + 'a>>;
        let copies: Vec<Copy<'_>> = layout
            .streams()
            .iter()
            .enumerate()
            .map(|(i, stream)| {
                Box::pin(self.copy_stream(upload, source, etag, i as u32 + 1, stream.stored_start, stream.stored_len()))
                    as Copy<'_>
            })
            .collect();
        let etags: Vec<String> = futures_util::stream::iter(copies).buffered(COPY_CONCURRENCY).try_collect().await?;
        let mut doc = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for (i, etag) in etags.iter().enumerate() {
            doc.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                quick_xml::escape::escape(etag)
            ));
        }
        doc.push_str("</CompleteMultipartUpload>");
        Ok(Bytes::from(doc))
    }

    /// Copies `len` stored bytes from `start` as part `number`; its ETag.
    async fn copy_stream(
        &self,
        upload: &S3Request,
        source: &HeaderValue,
        etag: &HeaderValue,
        number: u32,
        start: u64,
        len: u64,
    ) -> Result<String, ProxyError> {
        let mut part = upload.clone();
        part.query.push(("partNumber".into(), number.to_string()));
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-copy-source", source.clone());
        headers.insert("x-amz-copy-source-if-match", etag.clone());
        headers.insert("x-amz-copy-source-range", super::header_value(&format!("bytes={start}-{}", start + len - 1))?);
        if let Some(key) = &upload.sse_c {
            key.apply_as_copy_source(&mut headers);
        }
        let resp = self.upstream.send_buffered(Method::PUT, &part, headers, Bytes::new()).await?;
        let (_, body) = judged("UploadPartCopy", resp).await?;
        etag_of("UploadPartCopy", &body)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::body::full;

    fn answer(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<ProxyBody> {
        let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            resp.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        resp
    }

    fn changed(r: &Result<(HeaderMap, Bytes), ProxyError>) -> bool {
        matches!(r, Err(ProxyError::ObjectChanged(_)))
    }

    #[tokio::test]
    async fn a_failed_condition_is_another_writers_change() {
        let precondition = "<Error><Code>PreconditionFailed</Code></Error>";
        for resp in [
            answer(412, &[], precondition),
            answer(412, &[], ""),
            // S3 may answer a Complete 200 with its failure inside.
            answer(200, &[], precondition),
            answer(409, &[], "<Error><Code>ConditionalRequestConflict</Code></Error>"),
        ] {
            assert!(changed(&judged("CompleteMultipartUpload", resp).await));
        }
    }

    #[tokio::test]
    async fn only_a_clean_200_document_is_taken() {
        let ok = "<CompleteMultipartUploadResult><ETag>\"e-2\"</ETag></CompleteMultipartUploadResult>";
        let (_, body) = judged("CompleteMultipartUpload", answer(200, &[], ok)).await.unwrap();
        assert_eq!(etag_of("CompleteMultipartUpload", &body).unwrap(), "\"e-2\"");
        for resp in [
            answer(200, &[], "<Error><Code>InternalError</Code></Error>"),
            answer(409, &[], "<Error><Code>OperationAborted</Code></Error>"),
            answer(500, &[], ""),
            answer(201, &[], ok),
            answer(200, &[("x-amz-meta-cloudtaser-key", "vault:v1:k")], ok),
            answer(200, &[], "CTS3 ciphertext"),
        ] {
            let r = judged("CompleteMultipartUpload", resp).await;
            assert!(r.is_err() && !changed(&r));
        }
        assert!(etag_of("CopyObject", b"<CopyObjectResult/>").is_err());
    }

    #[tokio::test]
    async fn a_seal_outlives_its_handle_and_idle_waits_for_it() {
        let tasks = Arc::new(SealTasks::default());
        tokio::time::timeout(Duration::from_millis(50), tasks.idle()).await.expect("idle with nothing running");
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        // The handle is dropped at once, as when a client goes away.
        drop(tasks.spawn(async move {
            let _ = wait.await;
            let _ = done.send(());
        }));
        assert_eq!(tasks.running(), 1);
        assert!(tokio::time::timeout(Duration::from_millis(50), tasks.idle()).await.is_err(), "a seal is running");
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), tasks.idle()).await.expect("idle once the seal ended");
        finished.await.expect("the seal ran to its end");
        assert_eq!(tasks.running(), 0);
    }
}
