//! The proxy's errors and their S3-shaped responses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::{ProxyBody, full};
use crate::credentials::CredentialsError;
use crate::format::FormatError;
use crate::keys::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    BadDigest(String),
    #[error("The Content-MD5 or checksum value you specified is not valid.")]
    InvalidDigest,
    #[error("{0}")]
    IncompleteBody(String),
    #[error("The requested range is not satisfiable")]
    InvalidRange { object_len: u64 },
    #[error("{0}")]
    AccessDenied(String),
    /// Refused by `CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS` or `_BUCKETS`.
    #[error("{0}")]
    Denied(String),
    #[error("The metadata name {0} is reserved for the encryption envelope.")]
    ReservedMetadata(String),
    #[error("The specified bucket is not valid.")]
    InvalidBucketName,
    #[error("Your socket connection to the server was not read from or written to within the timeout period.")]
    RequestTimeout,
    #[error("Your request header section exceeds the maximum allowed size.")]
    RequestHeaderSectionTooLarge,
    #[error("The XML you provided was not well-formed or did not validate against our published schema")]
    MalformedXml,
    #[error("Your proposed upload is smaller than the minimum allowed object size.")]
    EntityTooSmall,
    #[error("The object was not written through CloudTaser and plaintext reads are disabled for it.")]
    NotEncrypted,
    #[error(
        "The copy source was not written through CloudTaser; a copy would store it unencrypted. Encrypt it first (cloudtaser-s3proxy migrate)."
    )]
    NotEncryptedSource,
    // Key service and credential errors carry their cause for the log only
    // (`Debug`); the client gets a fixed message, so a workload cannot use
    // the proxy to probe Vault.
    #[error("{}", .0.client_message())]
    KeyRefused(VaultError),
    #[error("The key service is unavailable.")]
    KeyServiceUnavailable(VaultError),
    #[error("The key service is rate-limiting requests.")]
    KeyServiceSlowDown(VaultError),
    #[error("The proxy has no usable upstream credentials.")]
    Credentials(#[from] CredentialsError),
    #[error("The upstream storage service could not be reached: {0}")]
    UpstreamUnreachable(String),
    #[error("The stored ciphertext failed verification: {0}")]
    Ciphertext(FormatError),
    #[error("The object's encryption metadata is missing or malformed ({0}).")]
    Envelope(#[from] crate::format::MetadataError),
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("The requested partnumber is not satisfiable")]
    InvalidPartNumber,
    #[error("{0}")]
    Retry(String),
    #[error(
        "The multipart object's part table was never sealed, so it cannot be verified. If a CompleteMultipartUpload for it was interrupted, cloudtaser-s3proxy seal finishes it; otherwise the object may have been tampered with."
    )]
    SealPending,
    #[error(
        "The object is a multipart object without a manifest (format 1), and CLOUDTASER_S3PROXY_FORMAT1_MULTIPART is refuse."
    )]
    Format1Refused,
    #[error(
        "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload,
    #[error("{0}")]
    InvalidPart(String),
    #[error("The list of parts was not in ascending order. Parts must be ordered by part number.")]
    InvalidPartOrder,
    #[error("The upstream answered a request without object data with an object; it was not passed on.")]
    UnexpectedObject,
    #[error("{0}")]
    Internal(String),
}

impl From<VaultError> for ProxyError {
    fn from(e: VaultError) -> Self {
        if e.is_permanent() {
            ProxyError::KeyRefused(e)
        } else if e.is_rate_limit() {
            ProxyError::KeyServiceSlowDown(e)
        } else {
            ProxyError::KeyServiceUnavailable(e)
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            MissingContentLength => StatusCode::LENGTH_REQUIRED,
            AccessDenied(_) | Denied(_) => StatusCode::FORBIDDEN,
            ReservedMetadata(_) => StatusCode::BAD_REQUEST,
            MalformedXml | EntityTooSmall | InvalidBucketName | RequestHeaderSectionTooLarge | RequestTimeout => {
                StatusCode::BAD_REQUEST
            }
            InvalidArgument(_) | InvalidRequest(_) | BadDigest(_) | InvalidDigest | IncompleteBody(_) => {
                StatusCode::BAD_REQUEST
            }
            NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            InvalidPartNumber => StatusCode::RANGE_NOT_SATISFIABLE,
            NotEncrypted | NotEncryptedSource | KeyRefused(_) | Format1Refused => StatusCode::FORBIDDEN,
            NoSuchUpload => StatusCode::NOT_FOUND,
            InvalidPart(_) | InvalidPartOrder => StatusCode::BAD_REQUEST,
            KeyServiceUnavailable(_) | KeyServiceSlowDown(_) | Credentials(_) | Retry(_) | SealPending => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamUnreachable(_) | UnexpectedObject => StatusCode::BAD_GATEWAY,
            Ciphertext(_) | Envelope(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ProxyError::*;
        match self {
            MissingContentLength => "MissingContentLength",
            AccessDenied(_) | Denied(_) => "AccessDenied",
            ReservedMetadata(_) => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            RequestTimeout => "RequestTimeout",
            RequestHeaderSectionTooLarge => "RequestHeaderSectionTooLarge",
            MalformedXml => "MalformedXML",
            EntityTooSmall => "EntityTooSmall",
            InvalidArgument(_) => "InvalidArgument",
            InvalidRequest(_) => "InvalidRequest",
            NotImplemented(_) => "NotImplemented",
            BadDigest(_) => "BadDigest",
            InvalidDigest => "InvalidDigest",
            IncompleteBody(_) => "IncompleteBody",
            InvalidRange { .. } => "InvalidRange",
            PreconditionFailed => "PreconditionFailed",
            InvalidPartNumber => "InvalidPartNumber",
            NotEncrypted | NotEncryptedSource | Format1Refused => "AccessDenied",
            KeyRefused(_) => "KMS.AccessDeniedException",
            KeyServiceUnavailable(_) => "ServiceUnavailable",
            KeyServiceSlowDown(_) => "SlowDown",
            Credentials(_) | Retry(_) | SealPending => "ServiceUnavailable",
            NoSuchUpload => "NoSuchUpload",
            InvalidPart(_) => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            UpstreamUnreachable(_) | UnexpectedObject => "BadGateway",
            Ciphertext(_) | Envelope(_) => "InternalError",
            Internal(_) => "InternalError",
        }
    }

    /// A stored object failed verification (counted as an integrity failure).
    pub fn is_integrity_failure(&self) -> bool {
        matches!(self, ProxyError::Ciphertext(_) | ProxyError::Envelope(_))
    }

    /// The S3 error document; HEAD responses carry no body.
    pub fn to_response(&self, resource: &str, request_id: &str, head: bool) -> Response<ProxyBody> {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
            self.code(),
            quick_xml::escape::escape(self.to_string()),
            quick_xml::escape::escape(resource),
            request_id
        );
        let len = xml.len();
        let mut resp = Response::new(if head { full(Bytes::new()) } else { full(Bytes::from(xml)) });
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(if head { 0 } else { len }));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-amz-request-id", v);
        }
        if let ProxyError::InvalidRange { object_len } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{object_len}"))
        {
            h.insert(http::header::CONTENT_RANGE, v);
        }
        resp
    }
}
