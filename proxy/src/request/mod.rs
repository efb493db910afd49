//! Dispatch and the per-operation handlers: a request is admitted
//! (`s3::classify`, `policy`), handled (`object`, `multipart`, `attributes`,
//! `seal`, with `stored` settling layouts), its bodies run through `stream`,
//! sent by `upstream`, and answered by `respond`; errors become S3 documents
//! here, at the edge.

mod answers;
mod attributes;
mod layout_cache;
mod multipart;
pub use multipart::EncryptedUpload;
mod object;
pub mod policy;
pub mod respond;
pub mod seal;
mod stored;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;

use crate::body::{CollectError, ProxyBody, collect_limited};
use crate::error::{BodyError, InternalError, ProxyError, Unsupported, UpstreamFailure};
use crate::format::{EnvelopeMetadata, META_PREFIX};
use crate::keys::KeyService;
use crate::keys::audit::{self, Audit, Reason};
use crate::metrics::{RefusalReason, metrics};
use crate::request::policy::PlaintextReadPolicy;
use crate::s3::classify::{Operation, S3Request, classify};
use crate::stream::aws_chunked::{BodyEncoding, ChunkedDecoder};
use crate::upstream::UpstreamClient;

/// Largest body the proxy holds in memory: control requests (DeleteObjects,
/// tagging, CompleteMultipartUpload) and XML responses. Objects always stream.
const MAX_BUFFERED_BODY: usize = 16 << 20;

/// S3's limit on a request's header section (names, values and separators):
/// larger requests get `400 RequestHeaderSectionTooLarge`, as from S3.
const MAX_HEADER_SECTION: usize = 8 << 10;

/// The operation label of requests refused before they were recognised.
const UNRECOGNISED: &str = "Unrecognised";

/// The largest request body read and dropped before an error is answered
/// (`discard_small_body`); larger ones close the connection instead.
const MAX_DISCARD: u64 = 64 << 10;

/// Objects whose layout ranged reads remember (about 200 bytes each).
const LAYOUT_CACHE_SIZE: usize = 4096;

/// Uploaded parts whose plaintext digests Complete can verify a
/// whole-object checksum from (about 300 bytes each; S3 allows 10,000
/// parts in one upload).
const PART_DIGESTS_SIZE: usize = 20_000;

pub struct RequestPath {
    keys: Arc<KeyService>,
    layouts: layout_cache::LayoutCache,
    /// Each uploaded part's ETag and plaintext digests, by upstream upload
    /// id and part number (`multipart`): a checksum of the whole object at
    /// Complete is verified from them, or refused.
    part_digests: crate::bounded_map::BoundedMap<(String, u32), (String, crate::stream::checksum::PartDigests)>,
    upstream: Arc<UpstreamClient>,
    plaintext_reads: PlaintextReadPolicy,
    policy: policy::AccessPolicy,
    /// Whether request log lines name the object key (`CLOUDTASER_S3PROXY_LOG_KEYS`).
    log_keys: bool,
    /// How long a control request (DeleteObjects, tagging, Complete) may
    /// take to send its body of at most 16 MiB.
    body_deadline: Duration,
    /// How long an object body may send nothing (`stream::idle`).
    body_idle_timeout: Duration,
    virtual_host_suffix: String,
    /// How completed multipart uploads are sealed (never `Auto` here).
    seal_method: seal::SealMethod,
    /// Whether format-1 multipart objects (no manifest) are read
    /// (`CLOUDTASER_S3PROXY_FORMAT1_MULTIPART`).
    format_1_multipart_reads: bool,
    /// Which name a new object's envelope MAC binds (`CLOUDTASER_S3PROXY_NAME_BINDING`).
    binding: crate::format::Binding,
    /// Whether objects of formats 1 and 2 are read (`CLOUDTASER_S3PROXY_LEGACY_FORMATS`).
    legacy_reads: bool,
    /// Whether `ctu1.` upload ids are accepted (`CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS`).
    legacy_upload_ids: bool,
    /// How long Complete waits for the seal before answering 200 with
    /// keep-alive spaces, and the time between spaces.
    complete_keepalive: Duration,
    /// Whether plaintext digests in user metadata are stored (`s3::metadata`).
    keep_digests: crate::s3::metadata::KeepDigests,
    /// Seals running at CompleteMultipartUpload, each its own task, which
    /// the shutdown drain waits for.
    seals: Arc<seal::SealTasks>,
}

impl RequestPath {
    pub fn new(
        keys: Arc<KeyService>,
        upstream: UpstreamClient,
        plaintext_reads: PlaintextReadPolicy,
        virtual_host_suffix: String,
    ) -> Self {
        Self {
            keys,
            layouts: layout_cache::LayoutCache::new(LAYOUT_CACHE_SIZE),
            part_digests: crate::bounded_map::BoundedMap::new(PART_DIGESTS_SIZE),
            upstream: Arc::new(upstream),
            plaintext_reads,
            policy: policy::AccessPolicy::default(),
            log_keys: false,
            body_deadline: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            virtual_host_suffix,
            seal_method: seal::SealMethod::PartCopy,
            format_1_multipart_reads: true,
            binding: crate::format::Binding::default(),
            legacy_reads: true,
            legacy_upload_ids: false,
            complete_keepalive: Duration::from_secs(5),
            keep_digests: Default::default(),
            seals: Default::default(),
        }
    }

    /// The seals running now, for the shutdown drain to wait for.
    pub fn seals(&self) -> &seal::SealTasks {
        &self.seals
    }

    /// How long CompleteMultipartUpload waits for its seal before it
    /// answers `200` and keeps the connection alive with spaces, as S3 does.
    pub fn with_complete_keepalive(mut self, every: Duration) -> Self {
        self.complete_keepalive = every;
        self
    }

    /// Whether multipart objects without a manifest (format 1, written
    /// before format 2) are read at all. Once `seal` has upgraded a
    /// bucket, refusing them also stops a sealed object from being
    /// relabelled as format 1 and cut short.
    pub fn with_legacy_formats(mut self, reads: bool, upload_ids: bool) -> Self {
        self.legacy_reads = reads;
        self.legacy_upload_ids = upload_ids;
        self
    }

    pub fn with_name_binding(mut self, binding: crate::format::Binding) -> Self {
        self.binding = binding;
        self
    }

    pub fn with_format_1_multipart_reads(mut self, on: bool) -> Self {
        self.format_1_multipart_reads = on;
        self
    }

    /// How completed multipart uploads are sealed; `Auto` picks a whole-object
    /// copy on GCS, whose XML API has no UploadPartCopy.
    pub fn with_seal_method(mut self, method: seal::SealMethod, is_gcs: bool) -> Self {
        self.seal_method = match method {
            seal::SealMethod::Auto if is_gcs => seal::SealMethod::ObjectCopy,
            seal::SealMethod::Auto => seal::SealMethod::PartCopy,
            other => other,
        };
        self
    }

    /// How long a control request may take to send its body.
    pub fn with_body_deadline(mut self, deadline: Duration) -> Self {
        self.body_deadline = deadline;
        self
    }

    /// How long an object body may send nothing before it is cut off.
    pub fn with_body_idle_timeout(mut self, limit: Duration) -> Self {
        self.body_idle_timeout = limit;
        self
    }

    /// Names object keys in request log lines (off by default: keys can be personal data).
    pub fn with_key_logging(mut self, on: bool) -> Self {
        self.log_keys = on;
        self
    }

    /// Stores the plaintext digests some clients put in user metadata
    /// (`CLOUDTASER_S3PROXY_KEEP_PLAINTEXT_DIGESTS`); removed by default.
    pub fn with_plaintext_digests(mut self, keep: crate::s3::metadata::KeepDigests) -> Self {
        self.keep_digests = keep;
        self
    }

    /// Which operations and buckets the workload may use (default: `AccessPolicy::default()`).
    pub fn with_policy(mut self, policy: policy::AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whether an object the upstream returned without an envelope may be
    /// served as it is (written before the proxy, in an allowed prefix).
    fn serves_plaintext(&self, s3: &S3Request, upstream: &HeaderMap) -> bool {
        matches!(EnvelopeMetadata::from_headers(upstream), Ok(None))
            && self.plaintext_reads.allows(s3.bucket.as_deref().unwrap_or(""), s3.key.as_deref().unwrap_or(""))
    }

    /// Answers one workload request. Generic over the body so that the
    /// server hands in hyper's `Incoming` and in-process tests a buffer;
    /// inside, every handler sees one boxed body type.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let started = std::time::Instant::now();
        let _in_flight = metrics().in_flight();
        let request_id = request_id();
        let (mut parts, body) = req.into_parts();
        let declared_len = declared_length(&parts.headers);
        // A handler that fails may leave a small body unread; what it leaves
        // is read before the error is answered, as for refusals. Bodies too
        // large to read that way (and requests without one) go unwrapped.
        let (body, leftover) = if declared_len.is_some_and(|len| len > 0 && len <= MAX_DISCARD) {
            let (body, leftover) = crate::body::Reclaimable::new(body);
            (crate::body::boxed(body), Some(leftover))
        } else {
            (crate::body::boxed(body), None)
        };
        let head = parts.method == Method::HEAD;
        let s3 = match self.admit(&mut parts) {
            Ok(s3) => s3,
            Err((operation, e)) => {
                let error = self.loggable(&e);
                tracing::warn!(operation, method = %parts.method, status = e.status().as_u16(), code = e.code(), error = %error, request_id, "request refused");
                self.count(operation, &e, started, false);
                drop(leftover);
                discard_small_body(declared_len, body).await;
                return respond::error_response(&e, parts.uri.path(), &request_id, head);
            }
        };
        // Every Transit call this request makes carries its id and why
        // (keys::audit), for Vault's audit log.
        let reason = match s3.operation {
            Operation::PutObject
            | Operation::CreateMultipartUpload
            | Operation::UploadPart
            | Operation::UploadPartCopy
            | Operation::CopyObject => Reason::Write,
            Operation::CompleteMultipartUpload => Reason::Complete,
            _ => Reason::Read,
        };
        if self.keys.routes().selects_by_id()
            && !matches!(s3.operation, Operation::PutObject | Operation::CreateMultipartUpload | Operation::CopyObject)
        {
            object::strip_sse_kms(&mut parts.headers);
        }
        let audit = Audit::new(request_id.clone(), reason);
        let result = audit::scope(audit, async {
            match s3.operation {
                Operation::PutObject => self.put_object(&s3, parts, body).await,
                Operation::GetObject => self.get_object(&s3, parts.headers).await,
                Operation::HeadObject => self.head_object(&s3, parts).await,
                Operation::ListObjects | Operation::ListObjectsV2 | Operation::ListObjectVersions => {
                    self.list_objects(&s3, parts).await
                }
                Operation::GetObjectAttributes => self.get_object_attributes(&s3, parts.headers).await,
                Operation::CopyObject => self.copy_object(&s3, parts).await,
                Operation::CreateMultipartUpload => self.create_multipart_upload(&s3, parts).await,
                Operation::UploadPart => self.upload_part(s3.clone(), parts, body).await,
                Operation::UploadPartCopy => self.upload_part_copy(s3.clone(), parts).await,
                Operation::CompleteMultipartUpload => self.complete_multipart_upload(s3.clone(), parts, body).await,
                Operation::ListParts => self.list_parts(s3.clone(), parts).await,
                Operation::AbortMultipartUpload => self.abort_multipart_upload(s3.clone(), parts, body).await,
                Operation::Refused(why) => Err(Unsupported::Operation(why).into()),
                Operation::Forward => self.forward(&s3, parts, body).await,
            }
        })
        .await;
        let bucket = s3.bucket.as_deref().unwrap_or("");
        match result {
            Ok(mut resp) => {
                let upstream_id = resp.headers().get("x-amz-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                let bytes =
                    resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info!(
                    operation = s3.name,
                    bucket,
                    key = self.log_keys.then_some(s3.key.as_deref()).flatten(),
                    status = resp.status().as_u16(),
                    duration_ms = started.elapsed().as_secs_f64() * 1e3,
                    bytes,
                    request_id,
                    upstream_request_id = upstream_id,
                    "request"
                );
                metrics().request(s3.name, resp.status().as_u16(), started.elapsed());
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    resp.headers_mut().entry("x-amz-request-id").or_insert(v.clone());
                    // Always the proxy's own: the id in its log and in Vault's audit log.
                    resp.headers_mut().insert(audit::ID_HEADER, v);
                }
                resp
            }
            Err(e) => {
                let error = self.loggable(&e);
                tracing::warn!(
                    operation = s3.name,
                    bucket,
                    key = self.log_keys.then_some(s3.key.as_deref()).flatten(),
                    status = e.status().as_u16(),
                    code = e.code(),
                    duration_ms = started.elapsed().as_secs_f64() * 1e3,
                    error = ?error,
                    request_id,
                    "request failed"
                );
                self.count(s3.name, &e, started, true);
                if let Some(rest) = leftover.and_then(|l| l.take()) {
                    discard_small_body(declared_len, rest).await;
                }
                let mut resp = respond::error_response(&e, &s3.resource(), &request_id, head);
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    resp.headers_mut().insert(audit::ID_HEADER, v);
                }
                resp
            }
        }
    }

    /// What a log line says of an error: all of it, unless it names an
    /// object key and key logging is off.
    fn loggable<'e>(&self, e: &'e ProxyError) -> Loggable<'e> {
        if self.log_keys || !e.names_object_key() { Loggable::Error(e) } else { Loggable::KeyWithheld }
    }

    /// Metrics for a failed request, with the reason when it was refused
    /// before anything was forwarded.
    fn count(&self, operation: &'static str, e: &ProxyError, started: std::time::Instant, admitted: bool) {
        metrics().request(operation, e.status().as_u16(), started.elapsed());
        if e.is_integrity_failure() {
            metrics().integrity_failure();
        }
        let reason = match e {
            ProxyError::Denied(_) => Some(RefusalReason::Policy),
            ProxyError::ReservedMetadata(_) => Some(RefusalReason::ReservedMetadata),
            ProxyError::NotImplemented(_) if !admitted => Some(RefusalReason::Unsupported),
            ProxyError::BadDigest(_) | ProxyError::InvalidDigest => Some(RefusalReason::BadChecksum),
            ProxyError::IncompleteBody(_) => Some(RefusalReason::Malformed),
            ProxyError::InvalidArgument(_) | ProxyError::InvalidBucketName if !admitted => {
                Some(RefusalReason::Malformed)
            }
            _ => None,
        };
        if let Some(reason) = reason {
            metrics().refused(reason);
        }
    }

    /// Reads a whole object through the read path and checks every byte,
    /// discarding the plaintext: `scan --verify`. `version` names one
    /// version of the object (`scan --all-versions`). The plaintext length on success.
    pub async fn verify_object(&self, bucket: &str, key: &str, version: Option<&str>) -> Result<u64, ProxyError> {
        let query = version.map(|v| vec![("versionId".to_owned(), v.to_owned())]).unwrap_or_default();
        let s3 = S3Request {
            operation: Operation::GetObject,
            name: "GetObject",
            ..S3Request::internal(bucket, Some(key), query)
        };
        let resp = self.get_object(&s3, HeaderMap::new()).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = collect_small(resp.into_body()).await.unwrap_or_default();
            let code = crate::s3::xml::texts_of(&body, b"Code").ok().and_then(|mut c| c.pop()).unwrap_or_default();
            return Err(UpstreamFailure::Answered { step: "GET", status, code }.into());
        }
        let mut body = resp.into_body();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ProxyError::Ciphertext(crate::format::FormatError::MalformedHeader(
                    if e.to_string().contains("verif") { "failed verification" } else { "read failed" },
                ))
            })?;
            len += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        Ok(len)
    }

    /// The signed client for the upstream (admin commands list with it).
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    async fn send_buffered(
        &self,
        method: Method,
        s3: &S3Request,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.upstream.send_buffered(method, s3, headers, body).await
    }

    /// Everything that decides whether a request may be forwarded, before
    /// its body is read: query headers hoisted, the operation recognised,
    /// the access policy applied.
    /// A refusal carries the operation's name once it is known.
    fn admit(&self, parts: &mut Parts) -> Result<S3Request, (&'static str, ProxyError)> {
        let unrecognised = |e| (UNRECOGNISED, e);
        let header_bytes: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if header_bytes > MAX_HEADER_SECTION {
            return Err(unrecognised(ProxyError::RequestHeaderSectionTooLarge));
        }
        // First of all: nothing below reads or adds a header before the
        // workload's hop has ended.
        crate::s3::headers::end_hop(&mut parts.headers).map_err(unrecognised)?;
        crate::s3::headers::refuse_repeated(&parts.headers).map_err(unrecognised)?;
        if let Some(uri) =
            crate::s3::classify::hoist_query_headers(&parts.uri, &mut parts.headers).map_err(unrecognised)?
        {
            parts.uri = uri;
        }
        let s3 =
            classify(&parts.method, &parts.uri, &parts.headers, &self.virtual_host_suffix).map_err(unrecognised)?;
        let named = |e| (s3.name, e);
        if let Operation::Refused(why) = s3.operation {
            return Err(named(Unsupported::Operation(why).into()));
        }
        let source = match s3.operation {
            Operation::CopyObject | Operation::UploadPartCopy => {
                Some(crate::s3::classify::copy_source(&parts.headers).map_err(named)?)
            }
            _ => None,
        };
        self.policy.check(&s3, source.as_ref()).map_err(named)?;
        self.policy.check_implied(&s3, &parts.headers).map_err(named)?;
        Ok(s3)
    }

    /// Operations with no object data (tags, deletes, configuration),
    /// forwarded re-signed. The response is checked, too: an upstream that
    /// answered with an object (it read the request as a GetObject) would
    /// hand the workload ciphertext.
    async fn forward(&self, s3: &S3Request, parts: Parts, body: ProxyBody) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        let mut bytes = read_small_body(&mut headers, body, self.body_deadline).await?;
        if s3.name == "DeleteObjects" {
            // The client's checksums describe the client's bytes: verified
            // there, as S3 would, before those bytes are replaced.
            let mut digests = crate::stream::checksum::ChecksumVerifier::from_headers(&headers)?;
            digests.update(&bytes);
            digests.finish(&[])?;
            // The keys are read strictly (`s3::delete`) and get the checks a
            // key in the path gets: `team-a/../team-b/x` would delete outside
            // the bucket scope on an upstream that normalises dot segments.
            let delete = crate::s3::delete::DeleteRequest::parse(&bytes)?;
            for key in delete.keys() {
                crate::s3::classify::check_key(key)?;
            }
            if self.policy.scopes_keys() || self.policy.scopes_buckets() {
                self.policy.check_keys(s3.bucket.as_deref().unwrap_or(""), delete.keys())?;
            }
            // The upstream gets the document written from the checked value,
            // never the client's (CDATA, another encoding or a namespace
            // trick would let it read keys the proxy did not check), with an
            // MD5 of that document, which S3 requires.
            bytes = Bytes::from(delete.to_xml());
            crate::s3::headers::remove_checksum_headers(&mut headers);
            let md5 = crate::s3::delete::content_md5(&bytes);
            headers.insert("content-md5", HeaderValue::from_str(&md5).map_err(InternalError::HeaderValue)?);
        }
        let resp = self.send_buffered(parts.method, s3, headers, bytes).await?;
        match answers::accept_control(answers::Step::Forwarded, resp).await? {
            answers::ControlAnswer::Expected(parts, body) => {
                Ok(respond::pass_through(Response::from_parts(parts, crate::body::full(body))))
            }
            answers::ControlAnswer::Verdict(v) => Ok(v),
        }
    }

    async fn list_objects(&self, s3: &S3Request, parts: Parts) -> Result<Response<ProxyBody>, ProxyError> {
        let resp = self.send_buffered(Method::GET, s3, parts.headers, Bytes::new()).await?;
        match answers::accept_control(answers::Step::Control, resp).await? {
            answers::ControlAnswer::Expected(parts, xml) => respond::listing_response(parts.headers, parts.status, xml),
            answers::ControlAnswer::Verdict(v) => Ok(v),
        }
    }
}

/// An error as a log line shows it (`loggable`).
enum Loggable<'e> {
    Error(&'e ProxyError),
    KeyWithheld,
}

const KEY_WITHHELD: &str = "(the message names an object key; CLOUDTASER_S3PROXY_LOG_KEYS is off)";

impl std::fmt::Display for Loggable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loggable::Error(e) => std::fmt::Display::fmt(e, f),
            Loggable::KeyWithheld => f.write_str(KEY_WITHHELD),
        }
    }
}

impl std::fmt::Debug for Loggable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loggable::Error(e) => std::fmt::Debug::fmt(e, f),
            Loggable::KeyWithheld => f.write_str(KEY_WITHHELD),
        }
    }
}

fn header_value(s: &str) -> Result<HeaderValue, ProxyError> {
    HeaderValue::from_str(s).map_err(|e| InternalError::HeaderValue(e).into())
}

fn envelope_of(headers: &HeaderMap) -> Result<EnvelopeMetadata, ProxyError> {
    match EnvelopeMetadata::from_headers(headers) {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(ProxyError::NotEncrypted),
        Err(e) => Err(ProxyError::Envelope(e)),
    }
}

/// The request's `Content-Length`, if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// Reads and drops the body of a refused or failed request when it is
/// small, so the answer is not lost and the connection stays in step:
/// - a socket closed with unread bytes in it is reset, and a client still
///   sending then loses the error document (botocore reported a bare `403`);
/// - a client that sent `Expect: 100-continue` and got an answer first
///   keeps the connection without sending the body (botocore does), and a
///   server that then still reads a body takes the next request's first
///   bytes for it: the e2e suite once saw an AbortMultipartUpload arrive as
///   `ELETE`. Reading the body before answering makes hyper send
///   `100 Continue` first, so the body comes and nothing is left pending.
///
/// Larger bodies are not read: the connection is closed instead, as any S3
/// endpoint would.
async fn discard_small_body(declared: Option<u64>, body: ProxyBody) {
    if declared.is_some_and(|len| len <= MAX_DISCARD) {
        let _ = tokio::time::timeout(Duration::from_secs(1), collect_limited(body, MAX_DISCARD as usize)).await;
    }
}

fn reject_reserved_metadata(headers: &HeaderMap) -> Result<(), ProxyError> {
    match headers.keys().find(|k| k.as_str().starts_with(META_PREFIX)) {
        Some(k) => Err(ProxyError::ReservedMetadata(k.to_string())),
        None => Ok(()),
    }
}

/// A response body that must not be object data (listings, upload and
/// copy results, configuration): an upstream that answered with an object
/// (it ran another operation than the one checked) is caught here, before
/// ciphertext or its envelope could reach the workload.
async fn collect_control(headers: &HeaderMap, body: ProxyBody) -> Result<Bytes, ProxyError> {
    if headers.keys().any(|k| k.as_str().starts_with(META_PREFIX)) {
        return Err(ProxyError::UnexpectedObject);
    }
    let body = collect_small(body).await?;
    if !is_document(&body) {
        return Err(ProxyError::UnexpectedObject);
    }
    Ok(body)
}

/// Whether a control answer's body can be what S3 sends there: nothing, or
/// a text document (XML; JSON for bucket policies). Ciphertext is not valid
/// UTF-8 (a stream's header and tags are random bytes), so an object's
/// bytes are refused wherever they start, not only at the first byte: a
/// newline in front of a CTS3 stream passed a check of the prefix.
fn is_document(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else { return false };
    let text = text.trim_start_matches('\u{feff}').trim_start();
    text.is_empty() || text.starts_with('<') || text.starts_with('{')
}

async fn collect_small(body: ProxyBody) -> Result<Bytes, ProxyError> {
    collect_limited(body, MAX_BUFFERED_BODY).await.map_err(|e| UpstreamFailure::Body(e).into())
}

/// Every request body held in memory at once, together (a control body
/// is at most `MAX_BUFFERED_BODY`): without it, eight concurrent 16 MiB
/// tagging bodies grew the proxy by 590 MiB.
const BUFFERED_BODIES_BUDGET: usize = 64 << 20;

/// How long a control body waits for room in the budget before it gets
/// `503 SlowDown` (SDKs retry that with backoff).
const BUFFERED_BODIES_WAIT: Duration = Duration::from_secs(5);

static BUFFERED_BODIES: std::sync::LazyLock<crate::body::BodyBudget> =
    std::sync::LazyLock::new(|| crate::body::BodyBudget::new(BUFFERED_BODIES_BUDGET, BUFFERED_BODIES_WAIT));

/// Reads a non-object body in full, undoing aws-chunked framing; a checksum
/// the client sent in a trailer moves into a header for the upstream.
async fn read_small_body(headers: &mut HeaderMap, body: ProxyBody, deadline: Duration) -> Result<Bytes, ProxyError> {
    // A client that sends headers and then never its body would otherwise
    // hold a connection slot, and up to 16 MiB, for ever.
    let (bytes, decoder) = tokio::time::timeout(deadline, buffer_body(headers, body, &BUFFERED_BODIES))
        .await
        .map_err(|_| ProxyError::RequestTimeout)??;
    let Some(decoder) = decoder else { return Ok(bytes) };
    for name in ["x-amz-decoded-content-length", "x-amz-trailer"] {
        headers.remove(name);
    }
    crate::s3::headers::set_content_encoding(headers, false);
    for (name, value) in decoder.trailers() {
        if name.starts_with("x-amz-checksum-")
            && let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        {
            headers.insert(n, v);
        }
    }
    Ok(bytes)
}

/// A control body in one buffer, its aws-chunked framing undone as it
/// arrives: the buffer is sized once from the declared length and holds
/// the body once, with its bytes reserved in `budget` until they are dropped.
async fn buffer_body(
    headers: &HeaderMap,
    mut body: ProxyBody,
    budget: &crate::body::BodyBudget,
) -> Result<(Bytes, Option<ChunkedDecoder>), ProxyError> {
    let mut decoder =
        (BodyEncoding::of(headers) == BodyEncoding::AwsChunked).then(|| ChunkedDecoder::declared_by(headers));
    let too_large = || BodyError::Read(CollectError::TooLarge { limit: MAX_BUFFERED_BODY }.into());
    let busy = |e: CollectError| match e {
        CollectError::Busy => ProxyError::SlowDown,
        e => BodyError::Read(e.into()).into(),
    };
    let declared = match decoder {
        Some(_) => headers.get("x-amz-decoded-content-length").and_then(|v| v.to_str().ok()?.trim().parse().ok()),
        None => http_body::Body::size_hint(&body).exact(),
    };
    let mut reservation = budget.reservation();
    let mut buf = Vec::new();
    if let Some(len) = declared {
        let len = usize::try_from(len).ok().filter(|l| *l <= MAX_BUFFERED_BODY).ok_or_else(too_large)?;
        reservation.grow(len).await.map_err(busy)?;
        buf.reserve_exact(len);
    }
    let mut raw = 0usize;
    let mut pieces = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else { continue };
        raw += data.len();
        if raw > MAX_BUFFERED_BODY {
            return Err(too_large().into());
        }
        match &mut decoder {
            Some(d) => d.feed(data, &mut pieces)?,
            None => pieces.push(data),
        }
        for piece in pieces.drain(..) {
            let needed = buf.len() + piece.len();
            if needed > buf.capacity() {
                // Past the declared length: grown (and reserved) by doubling, never past the limit.
                let capacity = (buf.capacity() * 2).clamp(needed, MAX_BUFFERED_BODY.max(needed));
                reservation.grow(capacity).await.map_err(busy)?;
                buf.reserve_exact(capacity - buf.len());
            }
            buf.extend_from_slice(&piece);
        }
    }
    if let Some(d) = &decoder {
        d.finish()?;
    }
    Ok((reservation.into_bytes(buf), decoder))
}

fn request_id() -> String {
    let mut id = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id);
    hex::encode_upper(id)
}

#[cfg(test)]
mod tests;
