//! Step 4: remove every trace of the workload's signature and sign the
//! upstream request with the proxy's own credentials (SigV4).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderMap, Request};

use crate::credentials::CredentialSource;
use crate::error::{ArgumentError, InternalError, ProxyError};

/// What the signature says about the body.
#[derive(Debug, Clone)]
pub enum Payload {
    /// SHA-256 of a body the proxy holds in full (empty included).
    Sha256(String),
    /// Streamed body the upstream verifies by its aws-chunked CRC32C trailer.
    StreamingTrailer,
    /// Streamed body without a trailer (GCS); TLS protects it in transit.
    Unsigned,
}

impl Payload {
    pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    pub fn empty() -> Self {
        Payload::Sha256(Self::EMPTY_SHA256.to_owned())
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        Payload::Sha256(hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)))
    }

    fn value(&self) -> &str {
        match self {
            Payload::Sha256(h) => h,
            Payload::StreamingTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            Payload::Unsigned => "UNSIGNED-PAYLOAD",
        }
    }
}

/// Headers that carry the workload's signature or describe a hop, never forwarded.
const STRIPPED: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    // S3 Express session credentials are the workload's too.
    "x-amz-s3session-token",
    "x-amz-content-sha256",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
];

/// Drops the workload's signing material and hop-by-hop headers. A
/// `Connection` is never consulted here: the workload's hop ended at the
/// proxy's door (`s3::headers::end_hop`), and a name it lists must not
/// remove a header the proxy has set since (the envelope).
pub fn strip_workload_auth(headers: &mut HeaderMap) {
    for name in STRIPPED {
        headers.remove(*name);
    }
}

pub struct Signer {
    credentials: Arc<CredentialSource>,
    region: String,
    /// Headers an intermediary may rewrite (GCS rewrites Accept-Encoding).
    unsigned_headers: Vec<Cow<'static, str>>,
}

impl Signer {
    /// `gcs`: GCS rewrites a signed Accept-Encoding, so it is never signed there.
    pub fn new(credentials: Arc<CredentialSource>, region: String, gcs: bool) -> Self {
        let mut unsigned = vec!["authorization", "user-agent", "x-amzn-trace-id", "transfer-encoding"];
        if gcs {
            unsigned.push("accept-encoding");
        }
        Self { credentials, region, unsigned_headers: unsigned.into_iter().map(Cow::Borrowed).collect() }
    }

    /// Signs `req` in place. The URI must already be the exact upstream URI.
    pub async fn sign<B>(&self, req: &mut Request<B>, payload: Payload) -> Result<(), ProxyError> {
        let identity: Identity = self.credentials.current().await?.into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.excluded_headers = Some(self.unsigned_headers.clone());
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| InternalError::SigningParams(e.into()))?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .map(|(k, v)| Ok((k.as_str(), v.to_str()?)))
            .collect::<Result<_, http::header::ToStrError>>()
            .map_err(|_| ArgumentError::HeaderNotAscii)?;
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Precomputed(payload.value().to_owned()),
        )
        .map_err(|e| InternalError::Signing(e.into()))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| InternalError::Signing(e.into()))?.into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_signature_and_hop_headers_only() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "AWS4-HMAC-SHA256 Credential=workload/..."),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-security-token", "tok"),
            ("x-amz-s3session-token", "express-session"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("connection", "keep-alive, x-amz-meta-cloudtaser-key"),
            ("x-amz-meta-cloudtaser-key", "vault:v1:the-proxy's"),
            ("x-amz-meta-color", "blue"),
            ("content-type", "text/plain"),
        ] {
            h.insert(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_workload_auth(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["content-type", "x-amz-meta-cloudtaser-key", "x-amz-meta-color"]);
    }
}
