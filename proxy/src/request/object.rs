//! Single-object operations: PutObject, GetObject (whole, ranged, by part),
//! HeadObject and CopyObject.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::answers::{self, Answer, Step, accept};
use super::layout_cache::{KnownLayout, LayoutCache};
use super::respond::{self, PlaintextView};
use super::stored::malformed;
use super::{RequestPath, envelope_of, header_value, reject_reserved_metadata};
use crate::body::{ProxyBody, boxed, empty};
use crate::error::{ArgumentError, InternalError, ProxyError, RequestError, UpstreamFailure};
use crate::format::{
    Authenticated, EnvelopeMetadata, FormatError, HEADER_LEN, Header, Sealer, StoredLayout, VERSION_3, ciphertext_len,
    with_mac,
};
use crate::keys::{DataKey, NewDataKey};
use crate::metrics::{BytesKind, Direction, metrics};
use crate::s3::classify::S3Request;
use crate::s3::conditional;
use crate::s3::headers::{remove_checksum_headers, set_content_encoding};
use crate::s3::range::{ByteRange, RangeRequest};
use crate::stream::aws_chunked::{self, BodyEncoding, ChunkedDecoder};
use crate::stream::checksum::ChecksumVerifier;
use crate::stream::framing::UploadFraming;
use crate::stream::idle::IdleLimited;
use crate::stream::transform::{KeyCheck, OpenedDownload, SealedUpload, read_prefix};
use crate::upstream::sign::Payload;

/// Headers that describe the plaintext body the client sent; the upstream
/// gets the ciphertext's instead.
/// SSE-KMS request fields: a workload's key selection when
/// `CLOUDTASER_S3PROXY_KMS_KEY_IDS` is set.
const SSE_ALGORITHM: &str = "x-amz-server-side-encryption";
const SSE_KMS_KEY_ID: &str = "x-amz-server-side-encryption-aws-kms-key-id";
const SSE_KMS_CONTEXT: &str = "x-amz-server-side-encryption-context";
const SSE_BUCKET_KEY: &str = "x-amz-server-side-encryption-bucket-key-enabled";
const SSE_KMS_FIELDS: &[&str] = &[SSE_ALGORITHM, SSE_KMS_KEY_ID, SSE_KMS_CONTEXT, SSE_BUCKET_KEY];

/// With `CLOUDTASER_S3PROXY_KMS_KEY_IDS` set, SSE-KMS fields are the
/// proxy's on every request: the operations that create an object read them
/// (`write_key`), and every other one (UploadPart, Complete, tagging, …)
/// drops them, so none reaches the upstream.
pub(super) fn strip_sse_kms(headers: &mut HeaderMap) {
    for name in SSE_KMS_FIELDS {
        headers.remove(*name);
    }
}

const PLAINTEXT_BODY_HEADERS: &[&str] =
    &["content-length", "content-md5", "x-amz-decoded-content-length", "x-amz-trailer"];

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// What a PutObject adds to `seal_and_send` (UploadPart has neither): the
/// object's envelope, and the check that its data key is still current
/// when the body has arrived.
pub(super) struct WholeObject {
    envelope: EnvelopeMetadata,
    key_check: KeyCheck,
}

impl RequestPath {
    /// The format-3 envelope of a new object under the configured Transit
    /// key. A single stream's salt is filled in once the stream draws it,
    /// and the MAC once everything it covers is known.
    pub(super) fn envelope(&self, data_key: &NewDataKey, layout: StoredLayout) -> EnvelopeMetadata {
        EnvelopeMetadata {
            wrapped_key: data_key.wrapped.clone(),
            transit_key: data_key.transit_key.clone(),
            layout,
            salt: None,
            auth: Some(Authenticated { binding: self.binding, mac: None }),
            key_salt: data_key.key_salt,
        }
    }

    /// Encrypts `body` (`headers` carry its Content-Length and the object's
    /// metadata) into `bucket/key` as one stream, exactly as a PutObject
    /// would; `migrate` brings pre-proxy objects under encryption with it.
    pub async fn put_encrypted<B>(
        &self,
        bucket: &str,
        key: &str,
        mut headers: HeaderMap,
        body: B,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        reject_reserved_metadata(&headers)?;
        crate::s3::metadata::remove_plaintext_digests(&mut headers, self.keep_digests);
        let plaintext_len = aws_chunked::plaintext_length(&headers, BodyEncoding::Raw)?;
        let data_key = self.keys.generate_for_object(self.keys.routes().route(bucket, key)).await?;
        let envelope = self.envelope(&data_key, StoredLayout::Single(plaintext_len));
        let s3 = S3Request {
            operation: crate::s3::classify::Operation::PutObject,
            name: "PutObject",
            ..S3Request::internal(bucket, Some(key), vec![])
        };
        let whole = WholeObject { envelope, key_check: self.key_check(&data_key) };
        self.seal_and_send(&s3, headers, body, &data_key.key, (0, VERSION_3), Some(whole)).await
    }

    pub(super) async fn put_object(
        &self,
        s3: &S3Request,
        parts: Parts,
        body: ProxyBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        reject_reserved_metadata(&parts.headers)?;
        let encoding = BodyEncoding::of(&parts.headers);
        let plaintext_len = aws_chunked::plaintext_length(&parts.headers, encoding)?;
        ChecksumVerifier::from_headers(&parts.headers)?;
        let mut headers = parts.headers;
        let transit_key = self.write_key(s3, &mut headers)?;
        // Nothing is sent upstream unless a data key was issued.
        let data_key = self.keys.generate_for_object(&transit_key).await?;
        let envelope = self.envelope(&data_key, StoredLayout::Single(plaintext_len));
        crate::s3::metadata::remove_plaintext_digests(&mut headers, self.keep_digests);
        conditional::to_upstream_etags(&mut headers);
        let whole = WholeObject { envelope, key_check: self.key_check(&data_key) };
        self.seal_and_send(s3, headers, body, &data_key.key, (0, VERSION_3), Some(whole)).await
    }

    /// The Transit key a new object or upload is wrapped by: the one the
    /// workload selected with `x-amz-server-side-encryption-aws-kms-key-id`
    /// if selecting is configured (an id off the allow-list is refused
    /// here, before any Vault call), else the one the routing rules name
    /// for its bucket and key. Selected SSE-KMS headers are the proxy's and
    /// are taken out of what goes upstream; without an allow-list they are
    /// the provider's and stay.
    pub(super) fn write_key(&self, s3: &S3Request, headers: &mut HeaderMap) -> Result<String, ProxyError> {
        let routes = self.keys.routes();
        if routes.selects_by_id() {
            let sse = headers.get(SSE_ALGORITHM).map(|v| v.as_bytes().to_vec());
            let id = headers.get(SSE_KMS_KEY_ID).map(|v| v.to_str().map(str::to_owned));
            strip_sse_kms(headers);
            match (sse.as_deref(), id) {
                (_, Some(Ok(id))) => {
                    return routes.kms_key(&id).map(str::to_owned).ok_or(ProxyError::KmsKeyNotAllowed);
                }
                (_, Some(Err(_))) => return Err(ProxyError::KmsKeyNotAllowed),
                (Some(b"aws:kms" | b"aws:kms:dsse") | None, None) => {}
                // AES256 (SSE-S3) is the provider's: the proxy encrypts anyway.
                (Some(_), None) => {}
            }
        }
        let (bucket, key) = (s3.bucket.as_deref().unwrap_or(""), s3.key.as_deref().unwrap_or(""));
        Ok(routes.route(bucket, key).to_owned())
    }

    /// Whether a single object's data key is still current when its body
    /// has arrived: a PUT that streamed across a rotation would otherwise
    /// store an object under the old version after `rewrap` walked past
    /// its key, and raising `min_decryption_version` would lose it. Parts
    /// keep their upload's key (`rewrap` reports open uploads).
    fn key_check(&self, data_key: &NewDataKey) -> KeyCheck {
        let (keys, transit_key, wrapped) = (self.keys.clone(), data_key.transit_key.clone(), data_key.wrapped.clone());
        Box::new(move || keys.is_current(&transit_key, &wrapped))
    }

    /// Encrypts a client body into one stream and sends it upstream
    /// (PutObject, UploadPart). `stream` is the part number (0 for a whole
    /// object) and the stream version: 3, or 2 for a part of an upload
    /// opened before format 3 (a `ctu1.` id).
    pub(super) async fn seal_and_send<B>(
        &self,
        s3: &S3Request,
        mut headers: HeaderMap,
        body: B,
        data_key: &DataKey,
        (part_number, version): (u32, u8),
        whole: Option<WholeObject>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let (envelope, key_check) = whole.map(|w| (w.envelope, w.key_check)).unzip();
        let encoding = BodyEncoding::of(&headers);
        let plaintext_len = aws_chunked::plaintext_length(&headers, encoding)?;
        // A part's own CRC64NVME lets Complete verify a full-object checksum.
        let verifier = ChecksumVerifier::from_headers(&headers)?.observing_crc64nvme(part_number > 0);
        let decoder = (encoding == BodyEncoding::AwsChunked).then(|| ChunkedDecoder::declared_by(&headers));
        let header = Header::random(part_number, plaintext_len).map_err(ArgumentError::TooLarge)?;
        // The version is every segment's associated data: a format-3 stream
        // never reads under an older label, and a part only once sealed.
        let header = match version {
            VERSION_3 => header.format_3(),
            _ if part_number > 0 => header.multipart_v2(),
            _ => header,
        };
        let name = super::stored::object_name(s3);
        let envelope = match envelope.map(|e| EnvelopeMetadata { salt: Some(header.salt), ..e }) {
            Some(e) if e.auth.is_some() => Some(with_mac(data_key.bytes(), e, name).ok_or(InternalError::Envelope)?),
            other => other,
        };
        let framing = UploadFraming::new(self.upstream.integrity(), plaintext_len);
        let sealer = Sealer::new(data_key.bytes(), header).with_room(framing.room());

        for name in PLAINTEXT_BODY_HEADERS {
            headers.remove(*name);
        }
        remove_checksum_headers(&mut headers);
        set_content_encoding(&mut headers, framing.is_chunked());
        let envelope_headers = envelope.as_ref().map(EnvelopeMetadata::to_headers).into_iter().flatten();
        for (name, value) in envelope_headers.chain(framing.headers(plaintext_len)) {
            headers.insert(name, header_value(&value)?);
        }
        let payload = if framing.is_chunked() { Payload::StreamingTrailer } else { Payload::Unsigned };
        let wire_len = framing.framed_len(plaintext_len);
        let body = IdleLimited::new(body, self.body_idle_timeout);
        let (sealed, outcome) = SealedUpload::new(body, decoder, verifier, sealer, framing, wire_len, key_check);
        let req = self.upstream.request(Method::PUT, s3, headers, boxed(sealed), payload).await?;
        let sent = self.upstream.send_raw(req).await;
        // A failure inside the body (bad digest, short body) explains an upstream error.
        let (verified, digests) = {
            let mut outcome = outcome.lock().expect("outcome lock");
            if let Some(failure) = outcome.failure.take() {
                return Err(failure);
            }
            (std::mem::take(&mut outcome.verified), outcome.digests.take())
        };
        let resp = match accept(Step::ObjectWrite, sent.map_err(UpstreamFailure::Unreachable)?, false).await? {
            Answer::Expected(resp) => resp,
            Answer::Verdict(v) => return Ok(v),
        };
        metrics().bytes(Direction::In, BytesKind::Plaintext, plaintext_len);
        metrics().bytes(Direction::Out, BytesKind::Ciphertext, ciphertext_len(plaintext_len));
        let transit_key = envelope.as_ref().map(|e| e.transit_key.as_str());
        let mut resp = respond::write_response(resp, &verified, transit_key, envelope.is_some());
        if let Some(digests) = digests {
            resp.extensions_mut().insert(digests);
        }
        Ok(resp)
    }

    /// GetObject through the read path, for the admin tools (`migrate
    /// --upgrade`): verified plaintext, or an S3 error.
    pub async fn read_object(&self, s3: &S3Request, headers: HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
        self.get_object(s3, headers).await
    }

    /// HeadObject through the read path, for the admin tools: the object's
    /// plaintext length once its envelope and layout are checked.
    pub async fn head_object_checked(
        &self,
        s3: &S3Request,
        headers: HeaderMap,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut request = http::Request::new(());
        *request.method_mut() = Method::HEAD;
        *request.headers_mut() = headers;
        let (parts, ()) = request.into_parts();
        self.head_object(s3, parts).await
    }

    pub(super) async fn head_object(&self, s3: &S3Request, parts: Parts) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        headers.remove(http::header::RANGE);
        headers.remove("x-amz-checksum-mode");
        // Part sizes are computed here from the layout, so the upstream sees a plain HEAD.
        let part = s3.query_value("partNumber").map(|n| n.parse::<u64>().ok().filter(|n| *n >= 1));
        let mut whole = s3.clone();
        whole.query.retain(|(k, _)| k != "partNumber");
        let mut upstream_headers = headers.clone();
        conditional::strip_etag_conditions(&mut upstream_headers);
        let resp = self.send_buffered(Method::HEAD, &whole, upstream_headers, Bytes::new()).await?;
        let resp = match accept(Step::ObjectHead, resp, true).await? {
            Answer::Expected(resp) => resp,
            Answer::Verdict(v) => return Ok(v),
        };
        if let Some(status) = conditional::evaluate(&headers, resp.headers()) {
            return not_modified_or_failed(status, resp.into_parts().0.headers);
        }
        if self.serves_plaintext(&whole, resp.headers()) {
            return Ok(respond::pass_through(resp));
        }
        let envelope = envelope_of(resp.headers())?;
        let stored_len = content_length(resp.headers()).ok_or(malformed("no stored length"))?;
        let etag = resp.headers().get(http::header::ETAG).cloned();
        let layout = self.stored_layout(&whole, &envelope, stored_len, etag.as_ref(), None).await?.layout;
        // As GET answers: a malformed number is 400, one past the count or
        // naming an empty part 416.
        let content_length = match part {
            None => layout.total,
            Some(None) => return Err(bad_part_number()),
            Some(Some(n)) if n <= layout.parts && (layout.stream_len(n - 1) > 0 || layout.total == 0) => {
                layout.stream_len(n - 1)
            }
            Some(Some(_)) => return Err(ProxyError::InvalidPartNumber),
        };
        let (parts, _) = resp.into_parts();
        let view = PlaintextView {
            status: parts.status,
            content_length,
            content_range: None,
            transit_key: envelope.transit_key,
        };
        let mut resp = respond::object_response(parts.headers, view, empty());
        if part.is_some() && envelope.layout.is_multipart() {
            resp.headers_mut().insert("x-amz-mp-parts-count", HeaderValue::from(layout.parts));
        }
        Ok(resp)
    }

    /// GetObject, also used to read a copy source as plaintext.
    pub(super) async fn get_object(
        &self,
        s3: &S3Request,
        mut headers: HeaderMap,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let range = headers.remove(http::header::RANGE).and_then(|v| RangeRequest::parse(v.to_str().ok()?));
        headers.remove("x-amz-checksum-mode");
        let part = match s3.query_value("partNumber") {
            Some(n) => Some(n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(bad_part_number)?),
            None => None,
        };
        match (part, range) {
            (Some(_), Some(_)) => Err(RequestError::RangeAndPartNumber.into()),
            (None, None) => self.get_whole(s3, headers).await,
            (Some(n), None) => {
                let mut whole = s3.clone();
                whole.query.retain(|(k, _)| k != "partNumber");
                self.get_range(&whole, headers, ReadSpec::Part(n)).await
            }
            (None, Some(range)) => self.get_range(s3, headers, ReadSpec::Range(range)).await,
        }
    }

    async fn get_whole(&self, s3: &S3Request, headers: HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
        let request_headers = headers.clone();
        let mut headers = headers;
        conditional::strip_etag_conditions(&mut headers);
        let resp = self.send_buffered(Method::GET, s3, headers, Bytes::new()).await?;
        let resp = match accept(Step::ObjectRead, resp, false).await? {
            Answer::Expected(resp) => resp,
            Answer::Verdict(v) => return Ok(v),
        };
        if let Some(status) = conditional::evaluate(&request_headers, resp.headers()) {
            return not_modified_or_failed(status, resp.into_parts().0.headers);
        }
        if self.serves_plaintext(s3, resp.headers()) {
            let (parts, mut body) = resp.into_parts();
            let first = read_prefix(&mut body, crate::format::MAGIC.len()).await?;
            answers::refuse_headless_stream(&first)?;
            return Ok(respond::pass_through(Response::from_parts(parts, prepend(first, body))));
        }
        let envelope = envelope_of(resp.headers())?;
        let stored_len = content_length(resp.headers()).ok_or(malformed("no stored length"))?;
        let key = self.object_data_key(&envelope).await?;
        let etag = resp.headers().get(http::header::ETAG).cloned();
        let (parts, mut body) = resp.into_parts();
        // A format-1 multipart object's part size is in its first header,
        // and a format-1 object's envelope is checked against it.
        let prefix = match envelope.layout {
            StoredLayout::Multipart => read_prefix(&mut body, HEADER_LEN).await?,
            StoredLayout::Single(_) if envelope.auth.is_none() => read_prefix(&mut body, HEADER_LEN).await?,
            _ => Bytes::new(),
        };
        let checked = self.stored_layout(s3, &envelope, stored_len, etag.as_ref(), prefix.get(..HEADER_LEN)).await?;
        let layout = &checked.layout;
        let mut download =
            OpenedDownload::new(body, checked.whole(&key, &envelope), layout.total).with_prefix(&prefix)?;
        download.verify_start().await?;
        metrics().bytes(Direction::In, BytesKind::Ciphertext, stored_len);
        metrics().bytes(Direction::Out, BytesKind::Plaintext, layout.total);
        let view = PlaintextView {
            status: StatusCode::OK,
            content_length: layout.total,
            content_range: None,
            transit_key: envelope.transit_key,
        };
        Ok(respond::object_response(parts.headers, view, boxed(download)))
    }

    /// Reads only the covering segments of the range, pinned to one object
    /// version with If-Match. Which segments those are depends on the
    /// object's layout: known from an earlier read of the same version, or
    /// learned by reading the stream header first (which also yields the
    /// metadata, the stored size and the part size).
    async fn get_range(
        &self,
        s3: &S3Request,
        headers: HeaderMap,
        spec: ReadSpec,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let id = LayoutCache::id(s3);
        if !conditional::any(&headers)
            && let Some(known) = self.layouts.get(&id)
        {
            match self.read_covering(s3, &headers, spec, &known).await {
                Ok(resp) => return Ok(resp),
                // Changed (412), deleted or unreadable since: nothing has
                // reached the client yet, so learn the layout again.
                Err(_) => self.layouts.remove(&id),
            }
        }
        let mut first = headers.clone();
        conditional::strip_etag_conditions(&mut first);
        first.insert(http::header::RANGE, HeaderValue::from_static(HEADER_RANGE));
        let resp = self.send_buffered(Method::GET, s3, first, Bytes::new()).await?;
        let resp = match accept(Step::HeaderProbe, resp, false).await? {
            Answer::Expected(resp) => resp,
            Answer::Verdict(v) => return Ok(v),
        };
        if let Some(status) = conditional::evaluate(&headers, resp.headers()) {
            return not_modified_or_failed(status, resp.into_parts().0.headers);
        }
        let stored_len = answers::range_answered(Step::HeaderProbe, resp.headers(), 0, HEADER_LEN as u64 - 1)?;
        if self.serves_plaintext(s3, resp.headers()) {
            // The probe was ours; the workload's own request is what the
            // upstream must answer, about the same object.
            let probed_etag = resp.headers().get(http::header::ETAG).cloned();
            answers::refuse_headless_stream(&super::collect_small(resp.into_body()).await?)?;
            let mut original = s3.clone();
            let mut headers = headers;
            match spec {
                ReadSpec::Range(range) => {
                    headers.insert(http::header::RANGE, header_value(&range.to_header())?);
                }
                ReadSpec::Part(n) => original.query.push(("partNumber".into(), n.to_string())),
            }
            let read = self.send_buffered(Method::GET, &original, headers, Bytes::new()).await?;
            let read = match accept(Step::PlaintextRead, read, false).await? {
                Answer::Expected(resp) => resp,
                Answer::Verdict(v) => return Ok(v),
            };
            if read.headers().get(http::header::ETAG) != probed_etag.as_ref()
                || !self.serves_plaintext(s3, read.headers())
            {
                return Err(ProxyError::ObjectChanged("read"));
            }
            return Ok(respond::pass_through(read));
        }
        let envelope = envelope_of(resp.headers())?;
        let etag = resp.headers().get(http::header::ETAG).cloned();
        let first_header = super::collect_small(resp.into_body()).await?;
        let checked = self.stored_layout(s3, &envelope, stored_len, etag.as_ref(), Some(&first_header)).await?;
        // The probe's envelope is the one every later read must find.
        let known = Arc::new(KnownLayout { etag, checked, first_header, envelope });
        self.layouts.insert(id, known.clone());
        self.read_covering(s3, &headers, spec, &known).await
    }

    /// The ranged read proper, once the layout is known.
    async fn read_covering(
        &self,
        s3: &S3Request,
        headers: &HeaderMap,
        spec: ReadSpec,
        known: &KnownLayout,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let layout = &known.checked.layout;
        let ByteRange { first: a, last: b } = match spec {
            ReadSpec::Range(range) => {
                range.resolve(layout.total).ok_or(ProxyError::InvalidRange { object_len: layout.total })?
            }
            ReadSpec::Part(n) if u64::from(n) > layout.parts => return Err(ProxyError::InvalidPartNumber),
            // The one part of an empty object is the empty object.
            ReadSpec::Part(_) if layout.total == 0 => return self.get_whole(s3, headers.clone()).await,
            ReadSpec::Part(n) => {
                let stream = layout.stream(u64::from(n - 1));
                if stream.plaintext_len == 0 {
                    // An empty last part has no bytes to range over.
                    return Err(ProxyError::InvalidPartNumber);
                }
                ByteRange { first: stream.plaintext_start, last: stream.plaintext_start + stream.plaintext_len - 1 }
            }
        };
        let span = layout.span(a, b);
        // The stream header is the first stream's, a small read of its own,
        // or inline when the range starts at a stream's first segment.
        let (fetch_from, header) = if span.header_start == 0 {
            (span.ciphertext_start, Some(known.first_header.clone()))
        } else if span.first_segment == 0 {
            (span.header_start, None)
        } else {
            let last = span.header_start + HEADER_LEN as u64 - 1;
            let header = self.read_known(s3, known, span.header_start, last).await?;
            answers::range_answered(Step::ObjectRead, header.headers(), span.header_start, last)?;
            (span.ciphertext_start, Some(super::collect_small(header.into_body()).await?))
        };
        let resp = self.read_known(s3, known, fetch_from, span.ciphertext_end).await?;
        let envelope = known.envelope.clone();
        let stored_len = answers::range_answered(Step::ObjectRead, resp.headers(), fetch_from, span.ciphertext_end)?;
        if stored_len != layout.stored_len() {
            return Err(ProxyError::Ciphertext(FormatError::LengthMismatch {
                declared: layout.stored_len(),
                actual: stored_len,
            }));
        }
        let key = self.object_data_key(&envelope).await?;
        let mut opener = known.checked.range(&key, &envelope, &span, b - a + 1);
        if let Some(header) = header {
            opener.set_header(&header).map_err(ProxyError::Ciphertext)?;
        }
        let (parts, body) = resp.into_parts();
        let mut download = OpenedDownload::new(body, opener, b - a + 1);
        download.verify_start().await?;
        metrics().bytes(Direction::In, BytesKind::Ciphertext, span.ciphertext_end + 1 - fetch_from);
        metrics().bytes(Direction::Out, BytesKind::Plaintext, b - a + 1);
        let view = PlaintextView {
            status: StatusCode::PARTIAL_CONTENT,
            content_length: b - a + 1,
            content_range: Some(format!("bytes {a}-{b}/{}", layout.total)),
            transit_key: envelope.transit_key,
        };
        let mut resp = respond::object_response(parts.headers, view, boxed(download));
        if matches!(spec, ReadSpec::Part(_)) && envelope.layout.is_multipart() {
            resp.headers_mut().insert("x-amz-mp-parts-count", HeaderValue::from(layout.parts));
        }
        Ok(resp)
    }

    /// A ranged read of the object version `known` describes. If-Match pins
    /// it where the upstream honours that (s3s-fs does not), and the answer
    /// must carry the same ETag and envelope either way: a layout checked
    /// for one object is never applied to another's bytes.
    async fn read_known(
        &self,
        s3: &S3Request,
        known: &KnownLayout,
        first: u64,
        last: u64,
    ) -> Result<http::Response<ProxyBody>, ProxyError> {
        let resp = self.read_stored(s3, known.etag.clone(), first, last).await?;
        let same_etag = resp.headers().get(http::header::ETAG) == known.etag.as_ref();
        if !same_etag || envelope_of(resp.headers())? != known.envelope {
            return Err(ProxyError::ObjectChanged("read"));
        }
        Ok(resp)
    }

    /// A server-side copy moves ciphertext and metadata together, so the copy
    /// stays readable. REPLACE would drop the envelope: it is carried over
    /// from the source explicitly. ETag conditions on the source are
    /// evaluated here, against the ETags workloads see.
    pub(super) async fn copy_object(&self, s3: &S3Request, parts: Parts) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        reject_reserved_metadata(&headers)?;
        crate::s3::metadata::remove_plaintext_digests(&mut headers, self.keep_digests);
        // Parsed once and sent as parsed: the envelope is carried over
        // exactly when the upstream will replace the metadata.
        let replace = match headers.get("x-amz-metadata-directive").map(|v| v.as_bytes().to_ascii_uppercase()) {
            None => false,
            Some(v) if v == b"COPY" => false,
            Some(v) if v == b"REPLACE" => true,
            Some(_) => return Err(RequestError::MetadataDirective.into()),
        };
        if headers.contains_key("x-amz-metadata-directive") {
            let directive = if replace { "REPLACE" } else { "COPY" };
            headers.insert("x-amz-metadata-directive", HeaderValue::from_static(directive));
        }
        let mut conditions = HeaderMap::new();
        for (copy_name, name) in crate::s3::classify::COPY_SOURCE_CONDITIONS {
            if let Some(v) = headers.remove(*copy_name) {
                conditions.insert(name.clone(), v);
            }
        }
        // The source is always examined: a copy of an object without an
        // envelope would store plaintext under a new name (and read it past
        // CLOUDTASER_S3PROXY_PLAINTEXT_READS), so it is refused. The copy
        // goes ahead only when the examination answered 200; otherwise it
        // is refused with the examination's status, and nothing is copied.
        let source = crate::s3::classify::copy_source(&headers)?;
        // The copy is a new object: wrapped by the key its own name routes
        // to (or the workload selected), not necessarily its source's. An
        // id off the allow-list is refused here, before the source is asked.
        let target = self.write_key(s3, &mut headers)?;
        let head = self.send_buffered(Method::HEAD, &source, source_check_headers(&headers), Bytes::new()).await?;
        let head = match accept(Step::CopySource, head, false).await? {
            Answer::Expected(head) => head,
            Answer::Verdict(v) => return Ok(v),
        };
        if conditional::evaluate(&conditions, head.headers()).is_some() {
            return Err(ProxyError::PreconditionFailed);
        }
        let envelope = match EnvelopeMetadata::from_headers(head.headers()) {
            Ok(Some(e)) => e,
            Ok(None) => return Err(ProxyError::NotEncryptedSource),
            Err(e) => return Err(ProxyError::Envelope(e)),
        };
        let etag = head.headers().get(http::header::ETAG).ok_or(malformed("no ETag on the copy source"))?;
        let mut multipart_layout = None;
        if envelope.auth.is_some() {
            // Format 3: the source is verified under its own name, and the
            // copy gets a MAC for its new name (a metadata-only REPLACE; no
            // body byte moves). A source that does not verify, such as one
            // copied onto its key by someone with the store's credentials,
            // is not copied.
            let stored_len = content_length(head.headers()).ok_or(malformed("no stored length"))?;
            let checked = self.stored_layout(&source, &envelope, stored_len, Some(etag), None).await?;
            multipart_layout = (checked.layout.parts > 1).then_some(checked.layout);
            // The data key the MAC is under (derived when the envelope wraps a bucket key).
            let key = self.object_data_key(&envelope).await?;
            let mut rebound =
                EnvelopeMetadata { auth: Some(Authenticated { binding: self.binding, mac: None }), ..envelope.clone() };
            if target != envelope.transit_key {
                // The object's own data key, wrapped anew by the destination's
                // key (one Transit `encrypt`): erasing either key then erases
                // only its own copy. Never a bucket key: that would hand the
                // destination's key every object of the source's window. The
                // copy's data key is then its own (no key salt).
                let transit = self.keys.transit_for(&target).ok_or(crate::keys::VaultError::KeyNotAllowed)?;
                let wrapped = transit.wrap_data_keys(std::slice::from_ref(&*key)).await?;
                rebound.wrapped_key = wrapped.into_iter().next().ok_or(InternalError::Envelope)?;
                rebound.transit_key = target;
                rebound.key_salt = None;
            }
            let rebound =
                with_mac(key.bytes(), rebound, super::stored::object_name(s3)).ok_or(InternalError::Envelope)?;
            if !replace {
                // COPY, as S3 does it: the source's metadata and content
                // headers, but not its provider-side encryption (S3 does not
                // carry that over either; the destination's is the request's).
                let mut kept = super::seal::kept_headers(head.headers());
                for name in SSE_KMS_FIELDS {
                    kept.remove(*name);
                }
                for name in kept.keys() {
                    headers.remove(name);
                }
                for (name, value) in kept.iter() {
                    headers.append(name.clone(), value.clone());
                }
            }
            headers.insert("x-amz-metadata-directive", HeaderValue::from_static("REPLACE"));
            for (name, value) in rebound.to_headers() {
                headers.insert(name, header_value(&value)?);
            }
        } else if !self.legacy_reads {
            return Err(ProxyError::LegacyFormatRefused);
        } else if replace {
            for (name, value) in envelope.to_headers() {
                headers.insert(name, header_value(&value)?);
            }
        }
        // Copy exactly what was examined: the source as parsed, re-encoded,
        // pinned to the ETag the examination saw.
        let source_header = header_value(&copy_source_header(&source))?;
        // A multipart source is copied part for part, as the seal does, so the
        // copy keeps its `-N` ETag and listings report its exact size; a
        // CopyObject would list 52 bytes too large per extra part. Not where
        // the upstream has no UploadPartCopy (GCS), nor under SSE-C.
        if let Some(layout) = multipart_layout
            && self.seal_method == super::seal::SealMethod::PartCopy
            && s3.sse_c.is_none()
            && source.sse_c.is_none()
        {
            return self.copy_multipart(s3, &source, headers, source_header, etag, &layout).await;
        }
        headers.insert("x-amz-copy-source", source_header);
        headers.insert("x-amz-copy-source-if-match", etag.clone());
        let resp = self.send_buffered(Method::PUT, s3, headers, Bytes::new()).await?;
        let (parts, doc) = match answers::accept_control(Step::Control, resp).await? {
            answers::ControlAnswer::Expected(parts, doc) => (parts, doc),
            answers::ControlAnswer::Verdict(v) => return Ok(v),
        };
        let map = |name: &[u8], text: &str| (name == b"ETag").then(|| crate::s3::etag::client_etag(text));
        let doc = crate::s3::xml::rewrite(&doc, &map)?;
        Ok(respond::buffered(parts.headers, parts.status, doc))
    }
}

impl RequestPath {
    /// CopyObject of a format-3 multipart source as a multipart copy (one
    /// UploadPartCopy per stream). `headers` are the copy's, with the
    /// destination's envelope in place; the source's tags go along unless
    /// the tagging directive replaces them, and the destination's
    /// conditions go with the Complete.
    async fn copy_multipart(
        &self,
        s3: &S3Request,
        source: &S3Request,
        mut headers: HeaderMap,
        source_header: HeaderValue,
        etag: &HeaderValue,
        layout: &crate::format::ObjectLayout,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let replace_tags = match headers.remove("x-amz-tagging-directive").map(|v| v.as_bytes().to_ascii_uppercase()) {
            None => false,
            Some(v) if v == b"COPY" => false,
            Some(v) if v == b"REPLACE" => true,
            Some(_) => return Err(RequestError::TaggingDirective.into()),
        };
        headers.remove("x-amz-metadata-directive");
        if !replace_tags {
            headers.remove("x-amz-tagging");
            let tagged = super::seal::object_tagging(&self.upstream, source).await?;
            if let Some(tags) = tagged {
                headers.insert("x-amz-tagging", header_value(&tags)?);
            }
        }
        let mut conditions = HeaderMap::new();
        for name in [http::header::IF_MATCH, http::header::IF_NONE_MATCH] {
            if let Some(v) = headers.remove(&name) {
                conditions.insert(name, v);
            }
        }
        let dest = S3Request { query: Vec::new(), ..s3.clone() };
        let copied = self.copier().copy_by_parts(&source_header, etag, &dest, headers, conditions, layout).await?;
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        let doc = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{now}</LastModified><ETag>{}</ETag></CopyObjectResult>",
            quick_xml::escape::escape(crate::s3::etag::client_etag(&copied.etag))
        );
        let mut out = HeaderMap::new();
        out.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        if let Some(version) = copied.version_id {
            out.insert("x-amz-version-id", version);
        }
        Ok(respond::buffered(out, StatusCode::OK, Bytes::from(doc)))
    }
}

/// Headers of the workload's copy that the examination of its source
/// carries too: who pays, and who must own the source bucket.
pub(super) fn source_check_headers(copy: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = copy.get("x-amz-request-payer") {
        headers.insert("x-amz-request-payer", v.clone());
    }
    if let Some(v) = copy.get("x-amz-source-expected-bucket-owner") {
        headers.insert("x-amz-expected-bucket-owner", v.clone());
    }
    headers
}

/// `x-amz-copy-source` rebuilt from the parsed source: the upstream reads
/// the bucket, key and version the proxy examined, whatever spelling the
/// workload used.
pub(super) fn copy_source_header(source: &S3Request) -> String {
    use crate::upstream::forward::encode_key;
    let mut value = format!(
        "/{}/{}",
        encode_key(source.bucket.as_deref().unwrap_or_default()),
        encode_key(source.key.as_deref().unwrap_or_default())
    );
    if let Some(version) = source.query_value("versionId") {
        value.push_str("?versionId=");
        value.push_str(&encode_key(version));
    }
    value
}

const HEADER_RANGE: &str = "bytes=0-51";

fn bad_part_number() -> ProxyError {
    ArgumentError::PartNumber.into()
}

/// What a ranged read asks for: a byte range or one part, in plaintext terms.
#[derive(Debug, Clone, Copy)]
enum ReadSpec {
    Range(RangeRequest),
    Part(u32),
}

/// A failed condition: 304 with the validators, or S3's 412 error.
fn not_modified_or_failed(status: StatusCode, upstream: HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
    answers::not_modified_or_failed(status, upstream)
}

/// `first` and then the rest of `body`: a body whose first bytes were
/// read to be looked at.
fn prepend(first: Bytes, body: ProxyBody) -> ProxyBody {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    let head = futures_util::stream::once(async move { Ok::<_, crate::body::BoxError>(first) });
    let frames = head.chain(body.into_data_stream()).map(|chunk| chunk.map(http_body::Frame::data));
    boxed(http_body_util::StreamBody::new(frames))
}
const _: () = assert!(HEADER_LEN == 52);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::range::content_range;

    #[test]
    fn parses_content_range() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_RANGE, "bytes 0-51/1068".parse().unwrap());
        assert_eq!(content_range(&h), Some((0, 1068)));
    }
}
