//! Every `ProxyError` through the one table (status and S3 code), and
//! through `respond::error_response` (the document, HEAD without a body).

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use http_body_util::BodyExt;

use crate::credentials::{CredentialSource, CredentialsError};
use crate::error::{
    ArgumentError, BodyError, DigestMismatch, DocumentError, InternalError, MissingPart, PolicyDenial, PresignError,
    ProxyError, RequestError, TrailerError, Unsupported, UpstreamFailure,
};
use crate::format::{FormatError, MetadataError};
use crate::keys::VaultError;
use crate::request::respond::error_response;

#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(aws_credential_types::provider::error::CredentialsError::not_loaded(
            "no source",
        )))
    }
}

async fn credentials_error() -> CredentialsError {
    CredentialSource::new(SharedCredentialsProvider::new(NoCredentials)).current().await.unwrap_err()
}

fn refused(status: u16) -> VaultError {
    VaultError::Refused { status, message: "vault's own words: permission denied on transit/decrypt/secret-key".into() }
}

/// One instance of every variant with the status and code S3 gives it. The
/// match below has no wildcard, so a new variant does not compile until it
/// has a row here.
async fn every_variant() -> Vec<(ProxyError, u16, &'static str)> {
    let all: Vec<(ProxyError, u16, &str)> = vec![
        (ProxyError::MissingContentLength, 411, "MissingContentLength"),
        (ArgumentError::PartNumber.into(), 400, "InvalidArgument"),
        (RequestError::RangeAndPartNumber.into(), 400, "InvalidRequest"),
        (Unsupported::FormPost.into(), 501, "NotImplemented"),
        (DigestMismatch::ContentMd5.into(), 400, "BadDigest"),
        (ProxyError::InvalidDigest, 400, "InvalidDigest"),
        (BodyError::EndedEarly.into(), 400, "IncompleteBody"),
        (TrailerError::TooLarge.into(), 400, "MalformedTrailerError"),
        (ProxyError::SlowDown, 503, "SlowDown"),
        (ProxyError::InvalidRange { object_len: 9 }, 416, "InvalidRange"),
        (PresignError::Expired.into(), 403, "AccessDenied"),
        (PolicyDenial::Operation { operation: "PutBucketPolicy", setting: "S" }.into(), 403, "AccessDenied"),
        (ProxyError::ReservedMetadata("x-amz-meta-cloudtaser-key".into()), 400, "InvalidArgument"),
        (ProxyError::InvalidBucketName, 400, "InvalidBucketName"),
        (ProxyError::RequestTimeout, 400, "RequestTimeout"),
        (ProxyError::RequestHeaderSectionTooLarge, 400, "RequestHeaderSectionTooLarge"),
        (ProxyError::MalformedXml, 400, "MalformedXML"),
        (DocumentError::Doctype.into(), 400, "MalformedXML"),
        (ProxyError::EntityTooSmall, 400, "EntityTooSmall"),
        (ProxyError::NotEncrypted, 403, "AccessDenied"),
        (ProxyError::NotEncryptedSource, 403, "AccessDenied"),
        (ProxyError::KeyRefused(refused(400)), 403, "KMS.AccessDeniedException"),
        (ProxyError::KmsKeyNotAllowed, 403, "KMS.AccessDeniedException"),
        (ProxyError::KeyServiceUnavailable(refused(503)), 503, "ServiceUnavailable"),
        (ProxyError::KeyServiceSlowDown(refused(429)), 503, "SlowDown"),
        (ProxyError::Credentials(credentials_error().await), 503, "ServiceUnavailable"),
        (UpstreamFailure::IncompletePartList.into(), 502, "BadGateway"),
        (ProxyError::Ciphertext(FormatError::Truncated), 500, "InternalError"),
        (ProxyError::Envelope(MetadataError("x-amz-meta-cloudtaser-key")), 500, "InternalError"),
        (ProxyError::PreconditionFailed, 412, "PreconditionFailed"),
        (ProxyError::InvalidPartNumber, 416, "InvalidPartNumber"),
        (ProxyError::ObjectChanged("read"), 503, "ServiceUnavailable"),
        (ProxyError::SealPending, 503, "ServiceUnavailable"),
        (ProxyError::KeyRotatedDuringUpload, 503, "ServiceUnavailable"),
        (ProxyError::Format1Refused, 403, "AccessDenied"),
        (ProxyError::LegacyFormatRefused, 403, "AccessDenied"),
        (ProxyError::NoSuchUpload, 404, "NoSuchUpload"),
        (MissingPart { part: 2 }.into(), 400, "InvalidPart"),
        (ProxyError::InvalidPartOrder, 400, "InvalidPartOrder"),
        (ProxyError::PartTableTooLong, 400, "InvalidRequest"),
        (ProxyError::UnexpectedObject, 502, "BadGateway"),
        (InternalError::CopySourceLength.into(), 500, "InternalError"),
    ];
    for (e, _, _) in &all {
        use ProxyError::*;
        match e {
            MissingContentLength
            | InvalidArgument(..)
            | InvalidRequest(..)
            | NotImplemented(..)
            | BadDigest(..)
            | InvalidDigest
            | IncompleteBody(..)
            | MalformedTrailer(..)
            | SlowDown
            | InvalidRange { .. }
            | AccessDenied(..)
            | Denied(..)
            | ReservedMetadata(..)
            | InvalidBucketName
            | RequestTimeout
            | RequestHeaderSectionTooLarge
            | MalformedXml
            | MalformedDocument(..)
            | EntityTooSmall
            | NotEncrypted
            | NotEncryptedSource
            | KeyRefused(..)
            | KmsKeyNotAllowed
            | KeyServiceUnavailable(..)
            | KeyServiceSlowDown(..)
            | Credentials(..)
            | UpstreamUnreachable(..)
            | Ciphertext(..)
            | Envelope(..)
            | PreconditionFailed
            | InvalidPartNumber
            | ObjectChanged(..)
            | SealPending
            | KeyRotatedDuringUpload
            | Format1Refused
            | NoSuchUpload
            | InvalidPart(..)
            | InvalidPartOrder
            | PartTableTooLong
            | LegacyFormatRefused
            | UnexpectedObject
            | Internal(..) => {}
        }
    }
    all
}

#[tokio::test]
async fn every_error_has_s3s_status_and_code() {
    for (e, status, code) in every_variant().await {
        assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e:?}");
        assert_eq!(e.is_integrity_failure(), matches!(e, ProxyError::Ciphertext(_) | ProxyError::Envelope(_)));
    }
}

#[tokio::test]
async fn every_error_renders_as_an_s3_document_and_heads_carry_none() {
    for (e, status, code) in every_variant().await {
        let resp = error_response(&e, "/b/k & <x>", "REQ123", false);
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.headers()["content-type"], "application/xml");
        assert_eq!(resp.headers()["x-amz-request-id"], "REQ123");
        let declared: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(declared, body.len());
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"), "{text}");
        assert_eq!(crate::s3::xml::texts_of(&body, b"Code").unwrap(), vec![code.to_owned()]);
        assert_eq!(crate::s3::xml::texts_of(&body, b"Message").unwrap(), vec![e.to_string()]);
        assert_eq!(crate::s3::xml::texts_of(&body, b"Resource").unwrap(), vec!["/b/k & <x>".to_owned()]);
        assert_eq!(crate::s3::xml::texts_of(&body, b"RequestId").unwrap(), vec!["REQ123".to_owned()]);
        // Key service errors never carry Vault's own text to the workload.
        assert!(!text.contains("vault's own words"), "{text}");
        let head = error_response(&e, "/b/k", "REQ123", true);
        assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()), (status, "0"));
        assert!(head.into_body().collect().await.unwrap().to_bytes().is_empty());
    }
}

#[test]
fn vault_errors_map_by_kind() {
    let code = |e: VaultError| ProxyError::from(e).code();
    assert_eq!(code(refused(400)), "KMS.AccessDeniedException");
    assert_eq!(code(refused(404)), "KMS.AccessDeniedException");
    assert_eq!(code(VaultError::KeyNotAllowed), "KMS.AccessDeniedException");
    assert_eq!(code(VaultError::MalformedWrappedKey), "KMS.AccessDeniedException");
    assert_eq!(code(refused(429)), "SlowDown");
    assert_eq!(code(refused(503)), "ServiceUnavailable");
    assert_eq!(code(VaultError::Unreachable("connection refused".into())), "ServiceUnavailable");
    assert_eq!(code(VaultError::Login("denied".into())), "ServiceUnavailable");
}
