//! The signed path to the upstream (sign, then forward), for the request
//! path and for the admin commands alike.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};

use super::Upstream;
use super::forward::{Transport, UpstreamAddress};
use super::sign::{Payload, Signer, strip_workload_auth};
use crate::body::{BoxError, ProxyBody, full};
use crate::error::{InternalError, ProxyError, UpstreamFailure};
use crate::s3::classify::S3Request;
use crate::stream::framing::UploadIntegrity;

pub struct UpstreamClient {
    signer: Signer,
    address: UpstreamAddress,
    transport: Arc<dyn Transport>,
}

impl UpstreamClient {
    pub fn new(signer: Signer, upstream: Upstream, transport: Arc<dyn Transport>) -> Self {
        Self { signer, address: UpstreamAddress::new(upstream), transport }
    }

    pub fn integrity(&self) -> UploadIntegrity {
        self.address.upstream().integrity
    }

    /// Builds and signs the upstream request for `s3` with the given headers.
    pub async fn request(
        &self,
        method: Method,
        s3: &S3Request,
        mut headers: HeaderMap,
        body: ProxyBody,
        payload: Payload,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        strip_workload_auth(&mut headers);
        let mut headers = super::headers::rebuild(headers);
        if let Some(key) = &s3.sse_c {
            key.apply(&mut headers);
        }
        if self.address.upstream().is_gcs {
            // GCS rejects the checksum headers of newer SDKs on passed-through requests.
            crate::s3::headers::remove_checksum_headers(&mut headers);
        }
        let host = HeaderValue::from_str(self.address.host_header()).map_err(InternalError::HeaderValue)?;
        headers.insert(http::header::HOST, host);
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = self.address.uri(s3.bucket.as_deref(), s3.key.as_deref(), &s3.query)?;
        *req.headers_mut() = headers;
        self.signer.sign(&mut req, payload).await?;
        Ok(req)
    }

    /// Sends a signed request; the raw client error lets the caller look for
    /// a failure its own request body recorded.
    pub async fn send_raw(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, BoxError> {
        // The method and any Range only: keys and bodies stay out of logs.
        // Field values are only computed when debug is on.
        tracing::debug!(
            method = %req.method(),
            range = req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or(""),
            "upstream request"
        );
        let method = match *req.method() {
            Method::GET => "GET",
            Method::PUT => "PUT",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        let started = std::time::Instant::now();
        let result = self.transport.send(req).await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        crate::metrics::metrics().upstream(method, status, started.elapsed());
        result
    }

    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        Ok(self.send_raw(req).await.map_err(UpstreamFailure::Unreachable)?)
    }

    /// Sends a request whose body is held in full, signed with its SHA-256.
    pub async fn send_buffered(
        &self,
        method: Method,
        s3: &S3Request,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if !body.is_empty()
            || headers.contains_key(http::header::CONTENT_LENGTH)
            || method == Method::POST
            || method == Method::PUT
        {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let payload = if body.is_empty() { Payload::empty() } else { Payload::of_bytes(&body) };
        let req = self.request(method, s3, headers, full(body), payload).await?;
        self.send(req).await
    }
}
