//! Multipart uploads. Each part is its own stream under the upload's data
//! key (a fresh salt per attempt, so a retried part never reuses a key/nonce
//! pair). The key travels in the upload id, so no state is kept between calls.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::answers::{self, ControlAnswer, Step};
use super::respond;
use super::seal::Sealed;
use super::stored::object_name;
use super::{RequestPath, collect_small, header_value, read_small_body, reject_reserved_metadata};
use crate::body::ProxyBody;
use crate::error::{ArgumentError, InternalError, MissingPart, ProxyError, RequestError, UpstreamFailure};
use crate::format::{
    EnvelopeMetadata, MAX_PART_TABLE_LEN, MULTIPART_VERSION, ObjectLayout, StoredLayout, VERSION_3, encode_part_table,
    open_customer_key, plaintext_len, seal_customer_key, upload_id_tag, verify_upload_id_tag, with_mac,
};
use crate::s3::classify::{S3Request, copy_source};
use crate::s3::headers::remove_checksum_headers;
use crate::s3::sse_c::CustomerKey;
use crate::s3::upload_id::{self, UploadId, UploadKey};
use crate::s3::xml;
use crate::stream::checksum::{
    ChecksumAlgorithm, MultipartChecksumType, PartDigests, VerifiedObjectChecksum, requested_object_checksum,
    verify_object_checksum,
};
use futures_util::StreamExt;

use crate::format::MAX_PARTS;
/// S3's minimum size of every part but the last.
const MIN_PART_LEN: u64 = 5 << 20;

/// An upload id the proxy did not issue: its parts could not be encrypted
/// under the upload's key, so it is treated as unknown, as S3 treats ids
/// it never issued.
fn no_such_upload() -> ProxyError {
    ProxyError::NoSuchUpload
}

/// Swaps the workload's upload id for the upstream's in the request.
fn upstream_upload(s3: &mut S3Request) -> Result<UploadId, ProxyError> {
    let id = upload_id::decode(s3.query_value("uploadId").ok_or_else(no_such_upload)?);
    s3.set_query("uploadId", id.upstream.clone());
    Ok(id)
}

fn part_number(s3: &S3Request) -> Result<u32, ProxyError> {
    s3.query_value("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| ArgumentError::PartNumber.into())
}

/// An upstream answer the proxy cannot go on from (no upload id, no ETag).
fn answered(step: &'static str, status: http::StatusCode) -> ProxyError {
    UpstreamFailure::Answered { step, status, code: String::new() }.into()
}

/// The parts a CompleteMultipartUpload names, checked as S3 checks them:
/// ascending (`InvalidPartOrder`), each uploaded with the ETag given
/// (`InvalidPart`, before any size rule), and every part but the last at
/// least 5 MiB of plaintext (`EntityTooSmall`). Any sizes and gaps S3
/// accepts are accepted: the manifest records the table (format 2).
fn checked_layout(named: &[(u32, String)], stored: &[StoredPart]) -> Result<ObjectLayout, ProxyError> {
    if named.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(ProxyError::InvalidPartOrder);
    }
    let mut table = Vec::with_capacity(named.len());
    for (number, etag) in named {
        let found = stored.iter().find(|p| p.number == *number && unquoted(&p.etag) == unquoted(etag));
        let len =
            found.and_then(|p| plaintext_len(p.size)).ok_or_else(|| ProxyError::from(MissingPart { part: *number }))?;
        table.push((*number, len));
    }
    if let Some((_, rest)) = table.split_last()
        && rest.iter().any(|(_, len)| *len < MIN_PART_LEN)
    {
        return Err(ProxyError::EntityTooSmall);
    }
    ObjectLayout::from_parts(&table).map_err(|_| ProxyError::MalformedXml)
}

/// A completed upload's seal in progress.
type Sealing = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Sealed, ProxyError>> + Send>>;

/// A seal task's result. A panic is the seal's own and goes on; a task
/// cancelled (the runtime stopping) leaves the object pending, which
/// `cloudtaser-s3proxy seal` or a retried Complete finishes.
fn joined(done: Result<Result<Sealed, ProxyError>, tokio::task::JoinError>) -> Result<Sealed, ProxyError> {
    match done {
        Ok(sealed) => sealed,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ProxyError::SealPending),
    }
}

/// The upstream's Complete result with the sealed object's ETag, as
/// workloads see it: its checksums (of ciphertext) dropped, and the
/// client's checksum of the whole object, verified, in their place.
fn completed_document(
    doc: &[u8],
    sealed: &Sealed,
    checksum: Option<&VerifiedObjectChecksum>,
) -> Result<Bytes, ProxyError> {
    let client_etag = crate::s3::etag::client_etag(&sealed.etag);
    let doc = xml::rewrite(doc, &|name: &[u8], _: &str| (name == b"ETag").then(|| client_etag.clone()))?;
    Ok(with_checksum(doc, checksum))
}

/// `doc` with the verified checksum elements before its root's end tag.
fn with_checksum(doc: Bytes, checksum: Option<&VerifiedObjectChecksum>) -> Bytes {
    let Some(c) = checksum else { return doc };
    let Some(end) = doc.windows(2).rposition(|w| w == b"</") else { return doc };
    let element = c.algorithm.element_name();
    let inserted = format!(
        "<{element}>{}</{element}><ChecksumType>{}</ChecksumType>",
        quick_xml::escape::escape(&c.value),
        c.kind.as_str()
    );
    let mut out = Vec::with_capacity(doc.len() + inserted.len());
    out.extend_from_slice(&doc[..end]);
    out.extend_from_slice(inserted.as_bytes());
    out.extend_from_slice(&doc[end..]);
    Bytes::from(out)
}

/// An ETag without its quotes, as ListParts and clients may differ in them.
fn unquoted(etag: &str) -> String {
    etag.trim().trim_matches('"').to_owned()
}

/// The whole-object checksum a Complete sent: algorithm, value, type.
type RequestedChecksum = (ChecksumAlgorithm, String, Option<MultipartChecksumType>);

/// A CompleteMultipartUpload whose seal outlasted `every`: `200` with the XML
/// declaration at once, a space every `every` so that clients and
/// intermediaries do not time out, then the result document, or an
/// `<Error>` document (which SDKs check for in a 200 Complete). The upload's
/// version id is not known when the headers go, so none is sent.
fn slow_complete(
    mut headers: HeaderMap,
    doc: Bytes,
    sealing: Sealing,
    every: std::time::Duration,
    resource: String,
    checksum: Option<VerifiedObjectChecksum>,
) -> Response<ProxyBody> {
    const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    for name in [http::header::CONTENT_LENGTH, http::header::ETAG] {
        headers.remove(name);
    }
    headers.remove("x-amz-version-id");
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let state = (Some(sealing), ticks, (doc, checksum), resource, true);
    let body = futures_util::stream::unfold(
        state,
        |(sealing, mut ticks, (doc, checksum), resource, first)| async move {
            if first {
                let chunk = Bytes::from_static(DECLARATION.as_bytes());
                return Some((chunk, (sealing, ticks, (doc, checksum), resource, false)));
            }
            let mut sealing = sealing?;
            let finished = tokio::select! {
                sealed = &mut sealing => Some(sealed),
                _ = ticks.tick() => None,
            };
            let chunk = match finished {
                None => {
                    return Some((Bytes::from_static(b" "), (Some(sealing), ticks, (doc, checksum), resource, false)));
                }
                Some(Ok(sealed)) => match completed_document(&doc, &sealed, checksum.as_ref()) {
                    Ok(done) => without_declaration(&done),
                    Err(e) => respond::error_document(&e, &resource, ""),
                },
                Some(Err(e)) => {
                    tracing::warn!(code = e.code(), error = %e, "sealing a completed upload failed; the object is left pending");
                    respond::error_document(&e, &resource, "")
                }
            };
            Some((chunk, (None, ticks, (doc, checksum), resource, false)))
        },
    );
    let body =
        http_body_util::StreamBody::new(body.map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b))));
    let mut resp = Response::new(crate::body::boxed(body));
    *resp.headers_mut() = headers;
    resp
}

/// A document without its XML declaration (already sent).
fn without_declaration(doc: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(doc);
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, after)| after).trim_start(),
        None => text.trim_start(),
    };
    Bytes::from(body.to_owned())
}

/// One uploaded part, as the upstream's ListParts reports it.
#[derive(Debug, Clone)]
struct StoredPart {
    number: u32,
    size: u64,
    etag: String,
}

/// A multipart upload the proxy started on its own behalf (`migrate`).
pub struct EncryptedUpload {
    pub bucket: String,
    pub key: String,
    /// The upstream's upload id.
    pub upload_id: String,
    pub data_key: crate::keys::NewDataKey,
    pub transit_key: String,
}

impl EncryptedUpload {
    /// The envelope the completed object carries until it is sealed.
    pub fn pending(&self) -> EnvelopeMetadata {
        EnvelopeMetadata {
            wrapped_key: self.data_key.wrapped.clone(),
            transit_key: self.transit_key.clone(),
            layout: StoredLayout::MultipartPending,
            salt: None,
            // Only the keys are compared with the stored envelope, from
            // which the seal builds the sealed one.
            auth: None,
            key_salt: None,
        }
    }
}

impl RequestPath {
    /// The data key an upload id carries. Vault refusing it for good (not a
    /// ciphertext Transit issued, a key this proxy may not use) means the id
    /// was never issued by a proxy: S3's answer to that is NoSuchUpload.
    async fn upload_data_key(&self, key: &UploadKey) -> Result<std::sync::Arc<crate::keys::DataKey>, ProxyError> {
        self.keys.unwrap(&key.transit_key, &key.wrapped_key).await.map_err(|e| {
            // An erased key is not a forged id: say so, as reads do.
            if e.is_permanent() && !e.is_key_gone() {
                tracing::info!(reason = e.client_message(), "an upload id's data key was refused");
                ProxyError::NoSuchUpload
            } else {
                ProxyError::from(e)
            }
        })
    }

    /// The data key of the upload `s3` (already carrying the upstream id)
    /// names, and the version its parts are written as. A format-3 id's tag
    /// must be the one issued for this upstream upload, bucket and key:
    /// otherwise, as for any id the proxy never issued, NoSuchUpload, and
    /// nothing is encrypted.
    async fn checked_upload(
        &self,
        s3: &S3Request,
        key: &UploadKey,
    ) -> Result<(std::sync::Arc<crate::keys::DataKey>, u8), ProxyError> {
        // A format-2 id binds nothing: taken only while uploads opened
        // before format 3 finish (CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS).
        if key.tag.is_none() && !self.legacy_upload_ids {
            tracing::info!("a format-2 upload id was refused");
            return Err(ProxyError::NoSuchUpload);
        }
        let data_key = self.upload_data_key(key).await?;
        let Some(tag) = &key.tag else { return Ok((data_key, MULTIPART_VERSION)) };
        let upstream = s3.query_value("uploadId").unwrap_or_default();
        verify_upload_id_tag(data_key.bytes(), object_name(s3), upstream, tag).map_err(|_| {
            tracing::info!("an upload id was presented for another upload or object");
            ProxyError::NoSuchUpload
        })?;
        Ok((data_key, VERSION_3))
    }

    /// The SSE-C customer key an upload id carries, for the seal; the one
    /// the request sent wins. `None` for an upload without one.
    fn customer_key(
        &self,
        s3: &S3Request,
        key: &UploadKey,
        data_key: &crate::keys::DataKey,
    ) -> Result<Option<CustomerKey>, ProxyError> {
        if let Some(sent) = &s3.sse_c {
            return Ok(Some(sent.clone()));
        }
        let Some(sealed) = &key.sse_c else { return Ok(None) };
        let upstream = s3.query_value("uploadId").unwrap_or_default();
        let bytes = open_customer_key(data_key.bytes(), object_name(s3), upstream, sealed)
            .map_err(|_| ProxyError::NoSuchUpload)?;
        CustomerKey::from_key_bytes(&bytes).map(Some).ok_or(ProxyError::NoSuchUpload)
    }

    pub(super) async fn create_multipart_upload(
        &self,
        s3: &S3Request,
        parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        reject_reserved_metadata(&headers)?;
        crate::s3::metadata::remove_plaintext_digests(&mut headers, self.keep_digests);
        // Sealing reads and copies the completed object, which needs the
        // customer key after CompleteMultipartUpload, where clients do not
        // send it: the upload id carries it, sealed under a key derived from
        // the data key (`format::seal_customer_key`).
        let customer = match &s3.sse_c {
            Some(key) => Some(key.key_bytes().ok_or(ArgumentError::SseC)?),
            None => None,
        };
        let transit_key = self.write_key(s3, &mut headers)?;
        let data_key = self.keys.generate_fresh(&transit_key).await?;
        // Pending until CompleteMultipartUpload seals the part table. Each
        // part stream has its own salt; the upload's key is never shared.
        let envelope = self.envelope(&data_key, StoredLayout::MultipartPending);
        // The pending envelope is bound to its name too: nobody can rebuild
        // the parts under another key for a seal to make authentic there.
        let envelope = with_mac(data_key.key.bytes(), envelope, object_name(s3)).ok_or(InternalError::Envelope)?;
        // Parts carry checksums of ciphertext the client never declared.
        remove_checksum_headers(&mut headers);
        for (name, value) in envelope.to_headers() {
            headers.insert(name, header_value(&value)?);
        }
        let resp = self.send_buffered(Method::POST, s3, headers, Bytes::new()).await?;
        let (parts, doc) = match answers::accept_control(Step::Control, resp).await? {
            ControlAnswer::Expected(parts, doc) => (parts, doc),
            ControlAnswer::Verdict(v) => return Ok(v),
        };
        let name = object_name(s3);
        let map = |element: &[u8], upstream: &str| {
            (element == b"UploadId")
                .then(|| {
                    let tag = upload_id_tag(data_key.key.bytes(), name, upstream).to_vec();
                    let sse_c = customer.as_ref().map(|c| seal_customer_key(data_key.key.bytes(), name, upstream, c));
                    let key = UploadKey {
                        transit_key: envelope.transit_key.clone(),
                        wrapped_key: envelope.wrapped_key.clone(),
                        tag: Some(tag),
                        sse_c: sse_c.transpose().ok()?,
                    };
                    Some(upload_id::encode(upstream, &key))
                })
                .flatten()
        };
        let xml = xml::rewrite(&doc, &map)?;
        Ok(respond::buffered(parts.headers, parts.status, xml))
    }

    /// Starts an encrypted multipart upload for `migrate`: the upstream's
    /// upload id and the upload's data key.
    pub async fn create_encrypted_upload(
        &self,
        bucket: &str,
        key: &str,
        mut headers: HeaderMap,
    ) -> Result<EncryptedUpload, ProxyError> {
        reject_reserved_metadata(&headers)?;
        crate::s3::metadata::remove_plaintext_digests(&mut headers, self.keep_digests);
        let data_key = self.keys.generate_fresh(self.keys.routes().route(bucket, key)).await?;
        let envelope = self.envelope(&data_key, StoredLayout::MultipartPending);
        let name = crate::format::ObjectName { bucket, key };
        let envelope = with_mac(data_key.key.bytes(), envelope, name).ok_or(InternalError::Envelope)?;
        for (name, value) in envelope.to_headers() {
            headers.insert(name, header_value(&value)?);
        }
        let s3 = S3Request::internal(bucket, Some(key), vec![("uploads".into(), String::new())]);
        let resp = self.send_buffered(Method::POST, &s3, headers, Bytes::new()).await?;
        let status = resp.status();
        let body = collect_small(resp.into_body()).await?;
        let id = xml::texts_of(&body, b"UploadId")?.pop().filter(|_| status.is_success());
        let upload_id = id.ok_or_else(|| answered("CreateMultipartUpload", status))?;
        let transit_key = envelope.transit_key;
        Ok(EncryptedUpload { bucket: bucket.to_owned(), key: key.to_owned(), upload_id, data_key, transit_key })
    }

    /// Encrypts one part of an upload made by `create_encrypted_upload`; its
    /// upstream ETag on success. `headers` carry the part's Content-Length.
    pub async fn put_encrypted_part<B>(
        &self,
        upload: &EncryptedUpload,
        number: u32,
        headers: HeaderMap,
        body: B,
    ) -> Result<String, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let query = vec![("partNumber".into(), number.to_string()), ("uploadId".into(), upload.upload_id.clone())];
        let s3 = S3Request {
            operation: crate::s3::classify::Operation::UploadPart,
            name: "UploadPart",
            ..S3Request::internal(&upload.bucket, Some(&upload.key), query)
        };
        let resp = self.seal_and_send(&s3, headers, body, &upload.data_key.key, (number, VERSION_3), None).await?;
        let status = resp.status();
        match resp.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()) {
            Some(etag) if status.is_success() => Ok(etag.to_owned()),
            _ => Err(answered("UploadPart", status)),
        }
    }

    pub(super) async fn upload_part(
        &self,
        mut s3: S3Request,
        parts: Parts,
        body: ProxyBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let number = part_number(&s3)?;
        let key = upstream_upload(&mut s3)?.key.ok_or_else(no_such_upload)?;
        let (data_key, version) = self.checked_upload(&s3, &key).await?;
        let resp = self.seal_and_send(&s3, parts.headers, body, &data_key, (number, version), None).await?;
        self.remember_part(&s3, number, &resp);
        Ok(resp)
    }

    /// Keeps a stored part's plaintext digests under its upstream ETag, for
    /// verifying a checksum of the whole object at Complete.
    fn remember_part(&self, s3: &S3Request, number: u32, resp: &Response<ProxyBody>) {
        let etag = resp.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok());
        if let (true, Some(upload), Some(etag), Some(digests)) =
            (resp.status().is_success(), s3.query_value("uploadId"), etag, resp.extensions().get::<PartDigests>())
        {
            self.part_digests.insert((upload.to_owned(), number), (unquoted(etag), digests.clone()));
        }
    }

    /// Verifies the checksum of the whole object a Complete sent, from the
    /// named parts' digests: BadDigest when it does not match, refused when
    /// the proxy cannot compute it (a part uploaded through another proxy
    /// process, or before a restart). `None` when none was sent.
    fn verify_complete_checksum(
        &self,
        s3: &S3Request,
        requested: Option<&RequestedChecksum>,
        named: &[(u32, String)],
    ) -> Result<Option<VerifiedObjectChecksum>, ProxyError> {
        let Some((algorithm, value, kind)) = requested else { return Ok(None) };
        let upload = s3.query_value("uploadId").unwrap_or("");
        let parts: Vec<PartDigests> = named
            .iter()
            .map(|(n, etag)| {
                self.part_digests
                    .get(&(upload.to_owned(), *n))
                    .filter(|(stored, _)| *stored == unquoted(etag))
                    .map(|(_, d)| d)
                    .ok_or_else(|| RequestError::UnverifiableChecksum { algorithm: algorithm.display_name() })
            })
            .collect::<Result<_, _>>()?;
        verify_object_checksum(*algorithm, value, *kind, &parts).map(Some)
    }

    /// Ciphertext ranges cannot be copied: the source range is read and
    /// decrypted here, then encrypted as this upload's part.
    pub(super) async fn upload_part_copy(
        &self,
        mut s3: S3Request,
        parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let number = part_number(&s3)?;
        let key = upstream_upload(&mut s3)?.key.ok_or_else(no_such_upload)?;
        let (data_key, version) = self.checked_upload(&s3, &key).await?;
        let source = copy_source(&parts.headers)?;
        let mut read_headers = HeaderMap::new();
        if let Some(range) = parts.headers.get("x-amz-copy-source-range") {
            read_headers.insert(http::header::RANGE, range.clone());
        }
        // The read below evaluates these against the ETags workloads see.
        for (copy_name, name) in crate::s3::classify::COPY_SOURCE_CONDITIONS {
            if let Some(v) = parts.headers.get(*copy_name) {
                read_headers.insert(name.clone(), v.clone());
            }
        }
        let requested_end = parts
            .headers
            .get("x-amz-copy-source-range")
            .map(|v| {
                let bad = || ProxyError::from(ArgumentError::CopySourceRange);
                let spec = v.to_str().ok().and_then(|v| v.trim().strip_prefix("bytes=")).ok_or_else(bad)?;
                let (a, b) = spec.split_once('-').ok_or_else(bad)?;
                let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b { Err(bad()) } else { Ok(b) }
            })
            .transpose()?;
        for (name, value) in super::object::source_check_headers(&parts.headers).iter() {
            read_headers.insert(name.clone(), value.clone());
        }
        // The source is read through the read path: only verified plaintext
        // (or a rebuilt error) comes back. A copy whose source condition
        // failed is S3's 412, whichever condition it was.
        let read = self.get_object(&source, read_headers).await?;
        match read.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_MODIFIED => return Err(ProxyError::PreconditionFailed),
            _ => return Ok(read),
        }
        // S3 refuses a copy range that runs past the source instead of clamping it.
        let total = crate::s3::range::content_range(read.headers()).map(|(_, total)| total);
        if let (Some(end), Some(total)) = (requested_end, total)
            && end >= total
        {
            return Err(ProxyError::InvalidRange { object_len: total });
        }
        let len = read.headers().get(http::header::CONTENT_LENGTH).cloned().ok_or(InternalError::CopySourceLength)?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, len);
        let uploaded = self.seal_and_send(&s3, headers, read.into_body(), &data_key, (number, version), None).await?;
        if !uploaded.status().is_success() {
            return Ok(uploaded);
        }
        let etag = uploaded.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        let doc = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{now}</LastModified><ETag>{}</ETag></CopyPartResult>",
            quick_xml::escape::escape(&etag)
        );
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        Ok(respond::buffered(headers, http::StatusCode::OK, Bytes::from(doc)))
    }

    /// Checks the named parts, completes the upload upstream, then seals
    /// its part table (format 2). The data key is unwrapped first, so an
    /// unreachable Vault fails the request before the object exists. Should
    /// sealing fail after the upstream completed, the object stays
    /// `multipart-pending` (never served) and the error says how to finish
    /// it (`cloudtaser-s3proxy seal`).
    pub(super) async fn complete_multipart_upload(
        &self,
        mut s3: S3Request,
        parts: Parts,
        body: ProxyBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let key = upstream_upload(&mut s3)?.key.ok_or_else(no_such_upload)?;
        let mut headers = parts.headers;
        let request = read_small_body(&mut headers, body, self.body_deadline).await?;
        // The client's document: anything quick-xml refuses (a DOCTYPE, an
        // entity) is the client's malformed XML, not an upstream failure.
        let texts = |name: &[u8]| xml::texts_of(&request, name).map_err(|_| ProxyError::MalformedXml);
        let numbers: Vec<u32> = texts(b"PartNumber")?
            .iter()
            .map(|n| n.trim().parse().map_err(|_| ProxyError::from(ArgumentError::CompletePartNumber)))
            .collect::<Result<_, _>>()?;
        let etags = texts(b"ETag")?;
        if numbers.is_empty() || numbers.len() != etags.len() {
            return Err(ProxyError::MalformedXml);
        }
        let named: Vec<(u32, String)> = numbers.into_iter().zip(etags).collect();
        let requested = requested_object_checksum(&headers)?;
        // The key first: an id no proxy issued is NoSuchUpload, and an
        // unreachable Vault fails the request before the object exists.
        let (data_key, version) = self.checked_upload(&s3, &key).await?;
        let customer = self.customer_key(&s3, &key, &data_key)?;
        let stored = match self.stored_parts(&s3).await {
            Ok(parts) if !parts.is_empty() => parts,
            // Gone (or, on s3s-fs, listed empty): perhaps a retry of a Complete
            // the upstream carried out but whose seal did not finish.
            listed @ (Ok(_) | Err(ProxyError::NoSuchUpload)) => {
                // A retry is answered 200 only with its checksum verified too.
                let checksum = self.verify_complete_checksum(&s3, requested.as_ref(), &named)?;
                if let Some(resp) =
                    self.finish_interrupted(&s3, &key, &data_key, &named, checksum.as_ref(), customer.clone()).await?
                {
                    return Ok(resp);
                }
                listed?
            }
            Err(e) => return Err(e),
        };
        let layout = checked_layout(&named, &stored)?;
        // Format 3 keeps every table in the metadata, so that no read of the
        // object walks its parts; one that cannot be kept is refused before
        // the upstream completes anything.
        if version == VERSION_3 && encode_part_table(&layout).len() > MAX_PART_TABLE_LEN {
            return Err(ProxyError::PartTableTooLong);
        }
        // Before the upstream completes anything: a wrong checksum leaves
        // no object (and whatever was at the key before stays).
        let checksum = self.verify_complete_checksum(&s3, requested.as_ref(), &named)?;
        // Only part numbers and ETags go upstream: the client's part checksums
        // describe plaintext the upstream never saw.
        let mut doc = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for (n, etag) in &named {
            doc.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag)
            ));
        }
        doc.push_str("</CompleteMultipartUpload>");
        remove_checksum_headers(&mut headers);
        headers.remove("content-md5");
        crate::s3::conditional::to_upstream_etags(&mut headers);
        let resp = self.send_buffered(Method::POST, &s3, headers, Bytes::from(doc)).await?;
        // S3 may answer a Complete 200 with an error document inside: that
        // one passes as S3 sent it (below); any other status than 200 is
        // an error rebuilt, or not taken at all.
        let (mut parts, doc) = match answers::accept_control(Step::Control, resp).await? {
            ControlAnswer::Expected(parts, doc) => (parts, doc),
            ControlAnswer::Verdict(v) => return Ok(v),
        };
        let completed =
            xml::texts_of(&doc, b"ETag")?.pop().filter(|_| !xml::texts_of(&doc, b"Code").is_ok_and(|c| !c.is_empty()));
        let Some(completed) = completed.filter(|_| parts.status.is_success()) else {
            return Ok(respond::buffered(parts.headers, parts.status, doc));
        };
        let pending = EnvelopeMetadata {
            wrapped_key: key.wrapped_key,
            transit_key: key.transit_key,
            layout: StoredLayout::MultipartPending,
            salt: None,
            auth: None,
            key_salt: None,
        };
        let etag = header_value(&completed)?;
        // The seal's requests carry the customer key; the Complete did not need it.
        let mut s3 = s3;
        s3.sse_c = customer;
        let copier = self.copier();
        let resource = s3.resource();
        // Its own task: a client that goes away, or a slow Complete's
        // response body being dropped, must not stop a seal half done (the
        // copy upload left open, the object pending); shutdown waits for it.
        let task =
            self.seals.spawn(async move { copier.seal_completed(&s3, &pending, &data_key, &layout, &etag).await });
        let mut sealing: Sealing = Box::pin(async move { joined(task.await) });
        match tokio::time::timeout(self.complete_keepalive, &mut sealing).await {
            Ok(sealed) => {
                let sealed = sealed?;
                if let Some(version) = &sealed.version_id {
                    parts.headers.insert("x-amz-version-id", version.clone());
                }
                Ok(respond::buffered(
                    parts.headers,
                    parts.status,
                    completed_document(&doc, &sealed, checksum.as_ref())?,
                ))
            }
            // S3's answer to a slow Complete: 200 now, spaces while the seal
            // runs, then the result, or an error document inside the 200.
            Err(_) => Ok(slow_complete(parts.headers, doc, sealing, self.complete_keepalive, resource, checksum)),
        }
    }

    /// A retried CompleteMultipartUpload whose first attempt completed the
    /// upload upstream but failed to seal it (the proxy stopped, or a copy
    /// failed): the object at the key is `multipart-pending` under this very
    /// upload's data key, with the part numbers the client names again. It is
    /// sealed now and answered as a Complete would have been. `None` when the
    /// object is anything else. The table comes from the stored headers, as
    /// `cloudtaser-s3proxy seal` reads it.
    async fn finish_interrupted(
        &self,
        s3: &S3Request,
        key: &UploadKey,
        data_key: &std::sync::Arc<crate::keys::DataKey>,
        named: &[(u32, String)],
        checksum: Option<&VerifiedObjectChecksum>,
        customer: Option<CustomerKey>,
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let mut object = S3Request::internal(s3.bucket.as_deref().unwrap_or(""), s3.key.as_deref(), vec![]);
        object.sse_c = customer;
        let head = self.send_buffered(Method::HEAD, &object, HeaderMap::new(), Bytes::new()).await?;
        if !head.status().is_success() {
            return Ok(None);
        }
        let envelope = match EnvelopeMetadata::from_headers(head.headers()) {
            Ok(Some(e))
                if e.layout == StoredLayout::MultipartPending
                    && e.wrapped_key == key.wrapped_key
                    && e.transit_key == key.transit_key =>
            {
                e
            }
            _ => return Ok(None),
        };
        let (Some(etag), Some(stored_len)) = (
            head.headers().get(http::header::ETAG).cloned(),
            head.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
        ) else {
            return Ok(None);
        };
        let layout = self.claimed_layout(&object, &envelope, stored_len, Some(&etag)).await?;
        let numbers: Vec<u32> = layout.streams().iter().map(|s| s.part_number).collect();
        if numbers != named.iter().map(|(n, _)| *n).collect::<Vec<_>>() {
            return Ok(None);
        }
        tracing::info!("a retried Complete finishes sealing an object its first attempt completed");
        // Its own task, as at a first Complete (see there).
        let (copier, data_key, target) = (self.copier(), data_key.clone(), object.clone());
        let task =
            self.seals.spawn(async move { copier.seal_completed(&target, &envelope, &data_key, &layout, &etag).await });
        let sealed = joined(task.await)?;
        let doc = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
            quick_xml::escape::escape(object.bucket.as_deref().unwrap_or("")),
            quick_xml::escape::escape(object.key.as_deref().unwrap_or("")),
            quick_xml::escape::escape(crate::s3::etag::client_etag(&sealed.etag)),
        );
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        if let Some(version) = sealed.version_id {
            headers.insert("x-amz-version-id", version);
        }
        Ok(Some(respond::buffered(headers, http::StatusCode::OK, with_checksum(Bytes::from(doc), checksum))))
    }

    /// Every uploaded part, from upstream ListParts.
    async fn stored_parts(&self, s3: &S3Request) -> Result<Vec<StoredPart>, ProxyError> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut page = s3.clone();
            page.query.retain(|(k, _)| k == "uploadId");
            page.query.push(("max-parts".into(), "1000".into()));
            if !marker.is_empty() {
                page.query.push(("part-number-marker".into(), marker.clone()));
            }
            let resp = self.send_buffered(Method::GET, &page, HeaderMap::new(), Bytes::new()).await?;
            let status = resp.status();
            let doc = collect_small(resp.into_body()).await?;
            let code = xml::texts_of(&doc, b"Code")?.pop().unwrap_or_default();
            // An id the upstream cannot parse, or never issued: S3's answer
            // to both is NoSuchUpload.
            if code == "NoSuchUpload" || (status.is_client_error() && status != http::StatusCode::FORBIDDEN) {
                return Err(ProxyError::NoSuchUpload);
            }
            if !status.is_success() {
                return Err(UpstreamFailure::ListParts { status, code }.into());
            }
            let numbers = xml::texts_of(&doc, b"PartNumber")?;
            let sizes = xml::texts_of(&doc, b"Size")?;
            let etags = xml::texts_of(&doc, b"ETag")?;
            if numbers.len() != sizes.len() || numbers.len() != etags.len() {
                return Err(UpstreamFailure::IncompletePartList.into());
            }
            for ((n, size), etag) in numbers.iter().zip(&sizes).zip(etags) {
                if let (Ok(number), Ok(size)) = (n.trim().parse(), size.trim().parse()) {
                    out.push(StoredPart { number, size, etag });
                }
            }
            let truncated = xml::texts_of(&doc, b"IsTruncated")?.first().is_some_and(|t| t == "true");
            match xml::texts_of(&doc, b"NextPartNumberMarker")?.pop() {
                Some(next) if truncated && next != marker => marker = next,
                _ => return Ok(out),
            }
        }
    }

    pub(super) async fn list_parts(&self, mut s3: S3Request, parts: Parts) -> Result<Response<ProxyBody>, ProxyError> {
        let client_id = s3.query_value("uploadId").unwrap_or("").to_owned();
        upstream_upload(&mut s3)?;
        let resp = self.send_buffered(Method::GET, &s3, parts.headers, Bytes::new()).await?;
        let (parts, doc) = match answers::accept_control(Step::Control, resp).await? {
            ControlAnswer::Expected(parts, doc) => (parts, doc),
            ControlAnswer::Verdict(v) => return Ok(v),
        };
        // Each part is one whole stream, so its plaintext size is exact.
        let map = |name: &[u8], text: &str| match name {
            b"UploadId" => Some(client_id.clone()),
            b"Size" => text.trim().parse().ok().and_then(plaintext_len).map(|n| n.to_string()),
            _ => None,
        };
        Ok(respond::buffered(parts.headers, parts.status, xml::rewrite(&doc, &map)?))
    }

    pub(super) async fn abort_multipart_upload(
        &self,
        mut s3: S3Request,
        parts: Parts,
        body: ProxyBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        upstream_upload(&mut s3)?;
        self.forward(&s3, parts, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ciphertext_len;

    fn stored(parts: &[(u32, u64)]) -> Vec<StoredPart> {
        parts
            .iter()
            .map(|(n, len)| StoredPart { number: *n, size: ciphertext_len(*len), etag: format!("\"e{n}\"") })
            .collect()
    }

    fn named(numbers: &[u32]) -> Vec<(u32, String)> {
        numbers.iter().map(|n| (*n, format!("e{n}"))).collect()
    }

    #[test]
    fn any_layout_s3_accepts_is_accepted() {
        let m = 5 << 20;
        let up = stored(&[(1, m + 1), (2, 3 * m), (3, m + 7), (5, 1), (6, 0)]);
        let layout = checked_layout(&named(&[1, 2, 3, 5]), &up).unwrap();
        assert_eq!(layout.total, 5 * m + 9);
        assert_eq!(layout.streams().iter().map(|s| s.part_number).collect::<Vec<_>>(), vec![1, 2, 3, 5]);
        assert_eq!(checked_layout(&named(&[6]), &up).unwrap().total, 0);
    }

    #[test]
    fn parts_are_checked_before_sizes() {
        let m = 5 << 20;
        let up = stored(&[(1, 10), (2, m), (3, 5)]);
        let code = |numbers: &[u32]| checked_layout(&named(numbers), &up).unwrap_err().code();
        // A missing part is InvalidPart even where a size rule also fails.
        assert_eq!(code(&[1, 4]), "InvalidPart");
        assert_eq!(code(&[1, 3]), "EntityTooSmall");
        assert_eq!(code(&[2, 1]), "InvalidPartOrder");
        assert_eq!(code(&[2, 2]), "InvalidPartOrder");
        let wrong_etag = vec![(2, "\"other\"".to_owned()), (3, "e3".to_owned())];
        assert_eq!(checked_layout(&wrong_etag, &up).unwrap_err().code(), "InvalidPart");
        assert!(checked_layout(&[(2, "\"e2\"".to_owned()), (3, "e3".to_owned())], &up).is_ok());
    }
}
