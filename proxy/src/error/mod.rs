//! The proxy's errors, and the one table from each to its HTTP status and
//! S3 error code. The error document itself is rendered at the edge
//! (`request::respond::error_response`).

mod reason;

pub use reason::{
    ArgumentError, BodyError, DigestMismatch, DocumentError, InternalError, MissingPart, PolicyDenial, PresignError,
    QueryNames, RequestError, TrailerError, Unsupported, UpstreamFailure, UpstreamTimeout,
};

use http::StatusCode;

use crate::credentials::CredentialsError;
use crate::format::FormatError;
use crate::keys::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error(transparent)]
    InvalidArgument(#[from] ArgumentError),
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),
    #[error(transparent)]
    NotImplemented(#[from] Unsupported),
    #[error(transparent)]
    BadDigest(#[from] DigestMismatch),
    #[error("The Content-MD5 or checksum value you specified is not valid.")]
    InvalidDigest,
    #[error(transparent)]
    IncompleteBody(#[from] BodyError),
    #[error(transparent)]
    MalformedTrailer(#[from] TrailerError),
    #[error("The requested range is not satisfiable")]
    InvalidRange { object_len: u64 },
    #[error(transparent)]
    AccessDenied(#[from] PresignError),
    /// Refused by `CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS` or `_BUCKETS`.
    #[error(transparent)]
    Denied(#[from] PolicyDenial),
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
    /// A request document read strictly, with why it was refused.
    #[error("The XML you provided was not well-formed or did not validate against our published schema ({0}).")]
    MalformedDocument(#[from] DocumentError),
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
    /// `x-amz-server-side-encryption-aws-kms-key-id` named a key that is not
    /// on `CLOUDTASER_S3PROXY_KMS_KEY_IDS` (refused before any Vault call).
    #[error("The requested KMS key id is not one this proxy may encrypt with.")]
    KmsKeyNotAllowed,
    #[error("The key service is unavailable.")]
    KeyServiceUnavailable(VaultError),
    /// The memory for buffered request bodies stayed in use (`body::BodyBudget`).
    #[error("Please reduce your request rate.")]
    SlowDown,
    #[error("The key service is rate-limiting requests.")]
    KeyServiceSlowDown(VaultError),
    #[error("The proxy has no usable upstream credentials.")]
    Credentials(#[from] CredentialsError),
    #[error("The upstream storage service could not be reached: {0}")]
    UpstreamUnreachable(#[from] UpstreamFailure),
    #[error("The stored ciphertext failed verification: {0}")]
    Ciphertext(FormatError),
    #[error("The object's encryption metadata is missing or malformed ({0}).")]
    Envelope(#[from] crate::format::MetadataError),
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("The requested partnumber is not satisfiable")]
    InvalidPartNumber,
    /// The object changed between two upstream reads (or before sealing):
    /// nothing was served, and a retry reads the new version.
    #[error("The object changed while it was being {0}; retry the request.")]
    ObjectChanged(&'static str),
    #[error(
        "The multipart object's part table was never sealed, so it cannot be verified, and the object may have been tampered with. If a CompleteMultipartUpload for it was interrupted, the operator's cloudtaser-s3proxy seal --key <key> checks every part and segment before it seals the object, and refuses one that fails."
    )]
    SealPending,
    /// The Transit key was rotated while a PUT streamed: the object would be
    /// stored under a key version `rewrap` may already have passed, so it is
    /// not stored at all, and the client retries with a current key.
    #[error("The encryption key was rotated while this upload was in progress; nothing was stored. Retry the request.")]
    KeyRotatedDuringUpload,
    #[error(
        "The object is a multipart object without a manifest (format 1), and CLOUDTASER_S3PROXY_FORMAT1_MULTIPART is refuse."
    )]
    Format1Refused,
    #[error(
        "The object was written before format 3, so nothing binds it to its name, and CLOUDTASER_S3PROXY_LEGACY_FORMATS is refuse."
    )]
    LegacyFormatRefused,
    #[error(
        "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload,
    #[error(transparent)]
    InvalidPart(#[from] MissingPart),
    #[error("The list of parts was not in ascending order. Parts must be ordered by part number.")]
    InvalidPartOrder,
    /// Format 3 stores every object's part table in its metadata, so no
    /// read has to walk the parts (docs/FORMAT.md, "Bounded reads").
    #[error(
        "The parts' sizes are too irregular to record: upload parts of one size (the last may be smaller). Nothing was completed; the parts are still in the upload."
    )]
    PartTableTooLong,
    #[error("The upstream answered a request without object data with an object; it was not passed on.")]
    UnexpectedObject,
    #[error("{0}")]
    Internal(#[from] InternalError),
}

/// An XML document the proxy could not read or write, as an internal error.
/// quick-xml's error types vary by step; the text is kept for the log.
pub fn xml_error(context: &'static str, e: &dyn std::fmt::Display) -> ProxyError {
    InternalError::Xml { context, source: e.to_string().into() }.into()
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
    /// The one table from error to HTTP status and S3 error code.
    pub fn s3(&self) -> (StatusCode, &'static str) {
        use ProxyError::*;
        use StatusCode as S;
        match self {
            MissingContentLength => (S::LENGTH_REQUIRED, "MissingContentLength"),
            AccessDenied(_) | Denied(_) | NotEncrypted | NotEncryptedSource | Format1Refused | LegacyFormatRefused => {
                (S::FORBIDDEN, "AccessDenied")
            }
            KeyRefused(_) | KmsKeyNotAllowed => (S::FORBIDDEN, "KMS.AccessDeniedException"),
            ReservedMetadata(_) | InvalidArgument(_) => (S::BAD_REQUEST, "InvalidArgument"),
            InvalidBucketName => (S::BAD_REQUEST, "InvalidBucketName"),
            RequestTimeout => (S::BAD_REQUEST, "RequestTimeout"),
            RequestHeaderSectionTooLarge => (S::BAD_REQUEST, "RequestHeaderSectionTooLarge"),
            MalformedXml | MalformedDocument(_) => (S::BAD_REQUEST, "MalformedXML"),
            EntityTooSmall => (S::BAD_REQUEST, "EntityTooSmall"),
            InvalidRequest(_) => (S::BAD_REQUEST, "InvalidRequest"),
            BadDigest(_) => (S::BAD_REQUEST, "BadDigest"),
            InvalidDigest => (S::BAD_REQUEST, "InvalidDigest"),
            IncompleteBody(_) => (S::BAD_REQUEST, "IncompleteBody"),
            MalformedTrailer(_) => (S::BAD_REQUEST, "MalformedTrailerError"),
            InvalidPart(_) => (S::BAD_REQUEST, "InvalidPart"),
            InvalidPartOrder => (S::BAD_REQUEST, "InvalidPartOrder"),
            PartTableTooLong => (S::BAD_REQUEST, "InvalidRequest"),
            NoSuchUpload => (S::NOT_FOUND, "NoSuchUpload"),
            PreconditionFailed => (S::PRECONDITION_FAILED, "PreconditionFailed"),
            InvalidRange { .. } => (S::RANGE_NOT_SATISFIABLE, "InvalidRange"),
            InvalidPartNumber => (S::RANGE_NOT_SATISFIABLE, "InvalidPartNumber"),
            NotImplemented(_) => (S::NOT_IMPLEMENTED, "NotImplemented"),
            KeyServiceUnavailable(_) | Credentials(_) | ObjectChanged(_) | SealPending | KeyRotatedDuringUpload => {
                (S::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            KeyServiceSlowDown(_) | SlowDown => (S::SERVICE_UNAVAILABLE, "SlowDown"),
            // S3 has no code for it; SDKs retry a 504 as a transient error.
            UpstreamUnreachable(UpstreamFailure::Unreachable(e)) if e.is::<UpstreamTimeout>() => {
                (S::GATEWAY_TIMEOUT, "GatewayTimeout")
            }
            UpstreamUnreachable(_) | UnexpectedObject => (S::BAD_GATEWAY, "BadGateway"),
            Ciphertext(_) | Envelope(_) | Internal(_) => (S::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.s3().0
    }

    pub fn code(&self) -> &'static str {
        self.s3().1
    }

    /// Whether the message names an object key, which can be personal data:
    /// log lines carry it only with `CLOUDTASER_S3PROXY_LOG_KEYS`.
    pub fn names_object_key(&self) -> bool {
        matches!(
            self,
            ProxyError::Denied(
                PolicyDenial::Outside { .. } | PolicyDenial::CopySource { .. } | PolicyDenial::DeleteKey { .. }
            )
        )
    }

    /// A stored object failed verification (counted as an integrity failure).
    pub fn is_integrity_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Ciphertext(_)
                | ProxyError::Envelope(_)
                | ProxyError::UpstreamUnreachable(
                    UpstreamFailure::Unexpected { object_bytes: true, .. } | UpstreamFailure::WrongRange { .. }
                )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_s3s_status_and_code() {
        let cases: [(ProxyError, u16, &str); 9] = [
            (ProxyError::NoSuchUpload, 404, "NoSuchUpload"),
            (ProxyError::InvalidPart(MissingPart { part: 3 }), 400, "InvalidPart"),
            (ProxyError::ObjectChanged("read"), 503, "ServiceUnavailable"),
            (ProxyError::SealPending, 503, "ServiceUnavailable"),
            (ProxyError::KeyRotatedDuringUpload, 503, "ServiceUnavailable"),
            (ProxyError::Format1Refused, 403, "AccessDenied"),
            (ProxyError::ReservedMetadata("x-amz-meta-cloudtaser-key".into()), 400, "InvalidArgument"),
            (ProxyError::Ciphertext(FormatError::Manifest), 500, "InternalError"),
            (ProxyError::InvalidRange { object_len: 5 }, 416, "InvalidRange"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e:?}");
        }
        assert!(ProxyError::Ciphertext(FormatError::Truncated).is_integrity_failure());
        assert!(!ProxyError::NoSuchUpload.is_integrity_failure());
    }

    #[test]
    fn typed_reasons_keep_s3s_messages_and_codes() {
        let cases: [(ProxyError, u16, &str, &str); 10] = [
            (
                ArgumentError::DuplicateQuery { name: "uploadId".into() }.into(),
                400,
                "InvalidArgument",
                "The query parameter uploadId is given more than once.",
            ),
            (
                RequestError::RangeAndPartNumber.into(),
                400,
                "InvalidRequest",
                "Cannot specify both Range header and partNumber query parameter",
            ),
            (
                Unsupported::Shape {
                    method: http::Method::POST,
                    target: "an object",
                    params: QueryNames(vec!["restore".into()]),
                }
                .into(),
                501,
                "NotImplemented",
                "The encryption proxy does not support POST on an object with the query parameters restore; nothing was forwarded.",
            ),
            (
                Unsupported::Operation("SelectObjectContent reads stored bytes").into(),
                501,
                "NotImplemented",
                "SelectObjectContent reads stored bytes.",
            ),
            (
                DigestMismatch::ContentMd5.into(),
                400,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ),
            (
                BodyError::LengthMismatch { declared: 10, actual: 4 }.into(),
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header (declared 10, got 4).",
            ),
            (PresignError::Expired.into(), 403, "AccessDenied", "Request has expired"),
            (
                PolicyDenial::Operation {
                    operation: "PutBucketPolicy",
                    setting: "CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS",
                }
                .into(),
                403,
                "AccessDenied",
                "PutBucketPolicy is not allowed through this proxy (CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS).",
            ),
            (
                UpstreamFailure::ListParts { status: StatusCode::INTERNAL_SERVER_ERROR, code: "InternalError".into() }
                    .into(),
                502,
                "BadGateway",
                "The upstream storage service could not be reached: The upload's parts could not be listed (500 Internal Server Error InternalError).",
            ),
            (
                UpstreamFailure::Answered { step: "ranged read", status: StatusCode::OK, code: String::new() }.into(),
                502,
                "BadGateway",
                "The upstream storage service could not be reached: ranged read answered 200 OK",
            ),
        ];
        for (e, status, code, message) in cases {
            assert_eq!((e.status().as_u16(), e.code(), e.to_string().as_str()), (status, code, message), "{e:?}");
        }
        let e = ProxyError::from(UpstreamFailure::Unreachable("connection refused".into()));
        assert_eq!((e.status().as_u16(), e.code()), (502, "BadGateway"));
        let timeout = UpstreamTimeout::ResponseHead(std::time::Duration::from_secs(2));
        let e = ProxyError::from(UpstreamFailure::Unreachable(timeout.into()));
        assert_eq!((e.status().as_u16(), e.code()), (504, "GatewayTimeout"));
        assert_eq!(
            e.to_string(),
            "The upstream storage service could not be reached: no response from the upstream within 2 s"
        );
        let e = ProxyError::from(InternalError::Format(FormatError::Truncated));
        assert_eq!((e.status().as_u16(), e.code()), (500, "InternalError"));
        assert!(!e.is_integrity_failure(), "a write-side format fault is not a stored object failing verification");
    }

    #[test]
    fn vault_refusals_reach_the_client_without_vault_text() {
        let e = ProxyError::from(VaultError::Refused { status: 400, message: "secret detail from vault".into() });
        assert_eq!(e.code(), "KMS.AccessDeniedException");
        assert!(!e.to_string().contains("secret detail"), "{e}");
    }
}
