//! The request path, in the order a request travels it:
//! classify → decode → transform → sign → forward → respond.

pub mod classify;
pub mod decode;
pub mod forward;
pub mod framing;
mod range;
pub mod respond;
pub mod sign;
pub mod transform;

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::{ProxyBody, boxed, empty, full};
use crate::error::ProxyError;
use crate::format::{
    EnvelopeMetadata, HEADER_LEN, Header, META_PREFIX, Opener, Sealer, VERSION, segment_span,
};
use crate::keys::KeyService;
use classify::{Operation, S3Request, classify};
use decode::{BodyEncoding, ChecksumVerifier, ChunkedDecoder};
use forward::Forwarder;
use framing::UploadFraming;
use range::{ByteRange, RangeRequest};
use sign::{Payload, Signer, strip_workload_auth};
use transform::{OpenedDownload, SealedUpload};

/// Largest body the proxy holds in memory: control requests (DeleteObjects,
/// tagging, policies) and listings. Object bodies always stream.
const MAX_BUFFERED_BODY: usize = 16 << 20;

/// Headers that describe the plaintext body the client sent; the upstream
/// gets the ciphertext's instead.
const PLAINTEXT_BODY_HEADERS: &[&str] = &[
    "content-length",
    "content-md5",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-type",
];

pub struct RequestPath {
    keys: Arc<KeyService>,
    signer: Signer,
    forwarder: Forwarder,
    virtual_host_suffix: String,
}

impl RequestPath {
    pub fn new(
        keys: Arc<KeyService>,
        signer: Signer,
        forwarder: Forwarder,
        virtual_host_suffix: String,
    ) -> Self {
        Self {
            keys,
            signer,
            forwarder,
            virtual_host_suffix,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let request_id = request_id();
        let (parts, body) = req.into_parts();
        let head = parts.method == Method::HEAD;
        let s3 = match classify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &self.virtual_host_suffix,
        ) {
            Ok(s3) => s3,
            Err(e) => return e.to_response(parts.uri.path(), &request_id, head),
        };
        let result = match s3.operation {
            Operation::PutObject => self.put_object(&s3, parts, body).await,
            Operation::GetObject => self.get_object(&s3, parts).await,
            Operation::HeadObject => self.head_object(&s3, parts).await,
            Operation::ListObjects | Operation::ListObjectsV2 => {
                self.list_objects(&s3, parts).await
            }
            Operation::CopyObject => self.copy_object(&s3, parts).await,
            Operation::CreateMultipartUpload
            | Operation::UploadPart
            | Operation::UploadPartCopy => Err(ProxyError::NotImplemented(
                "Multipart uploads through the encrypting proxy are not enabled yet.".into(),
            )),
            Operation::Unsupported(why) => Err(ProxyError::NotImplemented(format!("{why}."))),
            Operation::PassThrough => self.pass_through(&s3, parts, body).await,
        };
        match result {
            Ok(mut resp) => {
                tracing::info!(operation = ?s3.operation, bucket = s3.bucket.as_deref().unwrap_or(""), status = resp.status().as_u16(), request_id, "request");
                resp.headers_mut()
                    .entry("x-amz-request-id")
                    .or_insert_with(|| HeaderValue::from_str(&request_id).expect("hex id"));
                resp
            }
            Err(e) => {
                tracing::warn!(operation = ?s3.operation, bucket = s3.bucket.as_deref().unwrap_or(""), status = e.status().as_u16(), code = e.code(), error = %e, request_id, "request failed");
                e.to_response(&s3.resource(), &request_id, head)
            }
        }
    }

    /// Builds and signs the upstream request for `s3` with the given headers.
    async fn upstream_request(
        &self,
        method: Method,
        s3: &S3Request,
        mut headers: HeaderMap,
        body: ProxyBody,
        payload: Payload,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        strip_workload_auth(&mut headers);
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(self.forwarder.host_header())
                .map_err(|e| ProxyError::Internal(e.to_string()))?,
        );
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = self
            .forwarder
            .uri(s3.bucket.as_deref(), s3.key.as_deref(), &s3.query)?;
        *req.headers_mut() = headers;
        self.signer.sign(&mut req, payload).await?;
        Ok(req)
    }

    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, ProxyError> {
        self.forwarder
            .send(req)
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(error_chain(&e)))
    }

    async fn pass_through(
        &self,
        s3: &S3Request,
        parts: Parts,
        body: Incoming,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        let bytes = read_small_body(&mut headers, body).await?;
        let payload = Payload::of_bytes(&bytes);
        if !bytes.is_empty() || headers.contains_key(http::header::CONTENT_LENGTH) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        let req = self
            .upstream_request(parts.method, s3, headers, full(bytes), payload)
            .await?;
        Ok(respond::pass_through(self.send(req).await?))
    }

    async fn put_object(
        &self,
        s3: &S3Request,
        parts: Parts,
        body: Incoming,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        reject_reserved_metadata(&headers)?;
        let encoding = BodyEncoding::of(&headers);
        let plaintext_len = decode::plaintext_length(&headers, encoding)?;
        let verifier = ChecksumVerifier::from_headers(&headers)?;
        let decoder = (encoding == BodyEncoding::AwsChunked).then(ChunkedDecoder::default);
        // Nothing is sent upstream unless a data key was issued.
        let data_key = self.keys.generate().await?;
        let header = Header::random(0, plaintext_len)
            .map_err(|e| ProxyError::InvalidArgument(e.to_string()))?;
        let sealer = Sealer::new(data_key.key.bytes(), header);
        let framing = UploadFraming::new(self.forwarder.upstream().integrity);

        remove_plaintext_body_headers(&mut headers);
        set_upload_content_encoding(&mut headers, framing.is_chunked());
        let envelope = EnvelopeMetadata {
            format: VERSION,
            wrapped_key: data_key.wrapped.clone(),
            transit_key: self.keys.key_name().to_owned(),
            plaintext_len,
        };
        for (name, value) in envelope
            .to_headers()
            .into_iter()
            .chain(framing.headers(plaintext_len))
        {
            headers.insert(
                name,
                HeaderValue::from_str(&value).map_err(|e| ProxyError::Internal(e.to_string()))?,
            );
        }
        let payload = if framing.is_chunked() {
            Payload::StreamingTrailer
        } else {
            Payload::Unsigned
        };
        let wire_len = framing.framed_len(plaintext_len);
        let (sealed, outcome) =
            SealedUpload::new(body, decoder, verifier, sealer, framing, wire_len);
        let req = self
            .upstream_request(Method::PUT, s3, headers, boxed(sealed), payload)
            .await?;
        let sent = self.forwarder.send(req).await;
        // A failure inside the body (bad digest, short body) explains an upstream error.
        let mut outcome = outcome.lock().expect("outcome lock");
        if let Some(failure) = outcome.failure.take() {
            return Err(failure);
        }
        let resp = sent.map_err(|e| ProxyError::UpstreamUnreachable(error_chain(&e)))?;
        Ok(respond::write_response(
            resp,
            &outcome.verified,
            &envelope.transit_key,
        ))
    }

    async fn head_object(
        &self,
        s3: &S3Request,
        parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        reject_part_number(s3)?;
        let mut headers = parts.headers;
        headers.remove(http::header::RANGE);
        headers.remove("x-amz-checksum-mode");
        let req = self
            .upstream_request(Method::HEAD, s3, headers, empty(), Payload::empty())
            .await?;
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Ok(respond::pass_through(resp));
        }
        let envelope = envelope_of(resp.headers())?;
        let (parts, _) = resp.into_parts();
        let view = respond::PlaintextView {
            status: StatusCode::OK,
            content_length: envelope.plaintext_len,
            content_range: None,
            transit_key: envelope.transit_key,
        };
        Ok(respond::object_response(parts.headers, view, empty()))
    }

    async fn get_object(
        &self,
        s3: &S3Request,
        parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        reject_part_number(s3)?;
        let mut headers = parts.headers;
        let range = headers
            .remove(http::header::RANGE)
            .and_then(|v| RangeRequest::parse(v.to_str().ok()?));
        headers.remove("x-amz-checksum-mode");
        match range {
            None => self.get_whole(s3, headers).await,
            Some(range) => self.get_range(s3, headers, range).await,
        }
    }

    async fn get_whole(
        &self,
        s3: &S3Request,
        headers: HeaderMap,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let req = self
            .upstream_request(Method::GET, s3, headers, empty(), Payload::empty())
            .await?;
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Ok(respond::pass_through(resp));
        }
        let envelope = envelope_of(resp.headers())?;
        let key = self
            .keys
            .unwrap(&envelope.transit_key, &envelope.wrapped_key)
            .await?;
        let len = envelope.plaintext_len;
        let (parts, body) = resp.into_parts();
        let mut download =
            OpenedDownload::new(body, Opener::new(key.bytes(), Some(len), 0, 0, len), len);
        download.verify_start().await?;
        let view = respond::PlaintextView {
            status: StatusCode::OK,
            content_length: len,
            content_range: None,
            transit_key: envelope.transit_key,
        };
        Ok(respond::object_response(
            parts.headers,
            view,
            boxed(download),
        ))
    }

    /// Two upstream reads: the stream header (which also yields the object's
    /// metadata and size), then only the segments covering the range, pinned
    /// to the same object version with If-Match.
    async fn get_range(
        &self,
        s3: &S3Request,
        headers: HeaderMap,
        range: RangeRequest,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut first = headers.clone();
        first.insert(
            http::header::RANGE,
            HeaderValue::from_str(&format!("bytes=0-{}", HEADER_LEN - 1)).expect("ascii"),
        );
        let req = self
            .upstream_request(Method::GET, s3, first, empty(), Payload::empty())
            .await?;
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Ok(respond::pass_through(resp));
        }
        let envelope = envelope_of(resp.headers())?;
        let etag = resp.headers().get(http::header::ETAG).cloned();
        let header_bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(e.to_string()))?
            .to_bytes();
        let len = envelope.plaintext_len;
        let ByteRange { first: a, last: b } = range
            .resolve(len)
            .ok_or(ProxyError::InvalidRange { object_len: len })?;
        let key = self
            .keys
            .unwrap(&envelope.transit_key, &envelope.wrapped_key)
            .await?;
        let span = segment_span(len, a, b);
        let mut opener = Opener::new(
            key.bytes(),
            Some(len),
            span.first_segment,
            span.skip,
            b - a + 1,
        );
        opener
            .set_header(&header_bytes)
            .map_err(ProxyError::Ciphertext)?;

        let mut second = strip_conditionals(headers);
        if let Some(etag) = etag {
            second.insert(http::header::IF_MATCH, etag);
        }
        let range_value = format!("bytes={}-{}", span.ciphertext_start, span.ciphertext_end);
        second.insert(
            http::header::RANGE,
            HeaderValue::from_str(&range_value).expect("ascii"),
        );
        let req = self
            .upstream_request(Method::GET, s3, second, empty(), Payload::empty())
            .await?;
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Err(ProxyError::Retry(
                "The object changed while it was being read; retry the request.".into(),
            ));
        }
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Ok(respond::pass_through(resp));
        }
        let (parts, body) = resp.into_parts();
        let mut download = OpenedDownload::new(body, opener, b - a + 1);
        download.verify_start().await?;
        let view = respond::PlaintextView {
            status: StatusCode::PARTIAL_CONTENT,
            content_length: b - a + 1,
            content_range: Some(format!("bytes {a}-{b}/{len}")),
            transit_key: envelope.transit_key,
        };
        Ok(respond::object_response(
            parts.headers,
            view,
            boxed(download),
        ))
    }

    async fn list_objects(
        &self,
        s3: &S3Request,
        parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let req = self
            .upstream_request(Method::GET, s3, parts.headers, empty(), Payload::empty())
            .await?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let xml = Limited::new(body, MAX_BUFFERED_BODY)
            .collect()
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(e.to_string()))?
            .to_bytes();
        respond::listing_response(parts.headers, parts.status, xml)
    }

    /// A server-side copy moves ciphertext and metadata together, so the copy
    /// stays readable. REPLACE would drop the envelope: it is carried over
    /// from the source explicitly.
    async fn copy_object(
        &self,
        s3: &S3Request,
        parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut headers = parts.headers;
        reject_reserved_metadata(&headers)?;
        let replace = headers
            .get("x-amz-metadata-directive")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"REPLACE"));
        let source = classify::copy_source(&headers)?;
        let mut head_headers = HeaderMap::new();
        for (copy_name, name) in [
            ("x-amz-copy-source-if-match", http::header::IF_MATCH),
            (
                "x-amz-copy-source-if-none-match",
                http::header::IF_NONE_MATCH,
            ),
        ] {
            if let Some(v) = headers.get(copy_name) {
                head_headers.insert(name, v.clone());
            }
        }
        let req = self
            .upstream_request(
                Method::HEAD,
                &source,
                head_headers,
                empty(),
                Payload::empty(),
            )
            .await?;
        let head = self.send(req).await?;
        if head.status().is_success() {
            let envelope = envelope_of(head.headers())?;
            if replace {
                for (name, value) in envelope.to_headers() {
                    headers.insert(
                        name,
                        HeaderValue::from_str(&value)
                            .map_err(|e| ProxyError::Internal(e.to_string()))?,
                    );
                }
            }
        }
        // Missing sources and failed preconditions are reported by the copy itself.
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
        let req = self
            .upstream_request(Method::PUT, s3, headers, empty(), Payload::empty())
            .await?;
        Ok(respond::pass_through(self.send(req).await?))
    }
}

fn envelope_of(headers: &HeaderMap) -> Result<EnvelopeMetadata, ProxyError> {
    match EnvelopeMetadata::from_headers(headers) {
        Ok(Some(e)) if e.format == VERSION => Ok(e),
        Ok(Some(e)) => Err(ProxyError::Ciphertext(
            crate::format::FormatError::UnsupportedVersion(e.format),
        )),
        Ok(None) => Err(ProxyError::NotEncrypted),
        Err(e) => Err(ProxyError::Internal(e.to_string())),
    }
}

fn reject_part_number(s3: &S3Request) -> Result<(), ProxyError> {
    match s3.query_value("partNumber") {
        Some(_) => Err(ProxyError::NotImplemented(
            "Reading a single part of an encrypted object is not enabled yet.".into(),
        )),
        None => Ok(()),
    }
}

fn reject_reserved_metadata(headers: &HeaderMap) -> Result<(), ProxyError> {
    match headers.keys().find(|k| k.as_str().starts_with(META_PREFIX)) {
        Some(k) => Err(ProxyError::InvalidArgument(format!(
            "The metadata name {k} is reserved for the encryption envelope."
        ))),
        None => Ok(()),
    }
}

fn remove_plaintext_body_headers(headers: &mut HeaderMap) {
    for name in PLAINTEXT_BODY_HEADERS {
        headers.remove(*name);
    }
    let checksums: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amz-checksum-"))
        .cloned()
        .collect();
    for name in checksums {
        headers.remove(name);
    }
}

/// Keeps the client's own content codings (stored as object metadata) and
/// sets aws-chunked exactly when the upstream body is framed that way.
fn set_upload_content_encoding(headers: &mut HeaderMap, chunked: bool) {
    let others: Vec<String> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .map(str::to_owned)
        .collect();
    let all: Vec<String> = chunked
        .then(|| "aws-chunked".to_owned())
        .into_iter()
        .chain(others)
        .collect();
    headers.remove(http::header::CONTENT_ENCODING);
    if let Ok(v) = HeaderValue::from_str(&all.join(",")) {
        if !all.is_empty() {
            headers.insert(http::header::CONTENT_ENCODING, v);
        }
    }
}

/// The second read of a ranged GET is pinned by If-Match alone.
fn strip_conditionals(mut headers: HeaderMap) -> HeaderMap {
    for h in [
        http::header::IF_MATCH,
        http::header::IF_NONE_MATCH,
        http::header::IF_MODIFIED_SINCE,
        http::header::IF_UNMODIFIED_SINCE,
        http::header::IF_RANGE,
    ] {
        headers.remove(h);
    }
    headers
}

/// Reads a non-object body in full, undoing aws-chunked framing; the checksum
/// the client sent in a trailer moves into a header for the upstream.
async fn read_small_body(headers: &mut HeaderMap, body: Incoming) -> Result<Bytes, ProxyError> {
    let raw = Limited::new(body, MAX_BUFFERED_BODY)
        .collect()
        .await
        .map_err(|e| {
            ProxyError::IncompleteBody(format!("The request body could not be read: {e}"))
        })?
        .to_bytes();
    if BodyEncoding::of(headers) == BodyEncoding::Raw {
        return Ok(raw);
    }
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::new();
    decoder.feed(raw, &mut out)?;
    decoder.finish()?;
    for name in ["x-amz-decoded-content-length", "x-amz-trailer"] {
        headers.remove(name);
    }
    set_upload_content_encoding(headers, false);
    for (name, value) in decoder.trailers() {
        if name.starts_with("x-amz-checksum-") {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
    }
    Ok(Bytes::from(out.concat()))
}

fn request_id() -> String {
    let mut id = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id);
    hex::encode_upper(id)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
