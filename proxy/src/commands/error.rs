//! What an admin command fails with. Each variant's message is the text the
//! commands have always printed (the e2e tests match on it).

use std::path::PathBuf;

use http::StatusCode;

use crate::app::AppError;
use crate::error::ProxyError;
use crate::format::{FormatError, MetadataError};
use crate::keys::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Assembling the Vault session, key service or upstream client.
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The stored ciphertext or part table.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The object's encryption envelope.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A file the command reads or writes, named.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Reading or writing the file being decrypted, mid-stream.
    #[error(transparent)]
    Stream(std::io::Error),
    /// Reading an upstream response body.
    #[error(transparent)]
    Body(crate::body::BoxError),
    /// A listing the upstream sent that does not parse.
    #[error(transparent)]
    Xml(#[from] quick_xml::Error),
    #[error(transparent)]
    HeaderValue(#[from] http::header::InvalidHeaderValue),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// An S3 error answer: `operation: status code`.
    #[error("{operation}: {status} {code}")]
    S3 { operation: &'static str, status: StatusCode, code: String },
    /// An answer with an unexpected status and no error document read.
    #[error("{operation} answered {status}")]
    Answered { operation: &'static str, status: StatusCode },
    /// Something about one object that stops the command from handling it.
    #[error("{0}")]
    Object(&'static str),
    /// A broken envelope is not plaintext: `migrate` leaves it untouched.
    #[error("malformed encryption metadata ({0}); not touched")]
    MalformedEnvelope(MetadataError),
    /// Something about a ciphertext file that stops `decrypt`.
    #[error("{0}")]
    Ciphertext(&'static str),
    /// Every stream verified, but the part table is not the manifest's.
    #[error("{0}: the file is not the whole object")]
    NotWholeObject(FormatError),
    /// A command-line argument that is missing or malformed.
    #[error("{0}")]
    Usage(&'static str),
    #[error("{url} was not ready within {}s", timeout.as_secs())]
    NotReady { url: String, timeout: std::time::Duration },
    /// Some objects were skipped (changed meanwhile) or refused (possibly
    /// tampered with, or unfinished); the summary and each object's reason
    /// have been printed.
    #[error(
        "not every object was {verb}: {failed} failed, {skipped} skipped (changed meanwhile; a rerun retries them), \
         {refused} refused (possibly tampered with, or unfinished; see the reasons above)"
    )]
    NotAll { verb: &'static str, failed: usize, skipped: usize, refused: usize },
    /// The upstream carried out a write whose condition did not hold
    /// (`commands::probe`): a rewrite could revert a concurrent write.
    #[error(
        "the upstream does not enforce conditional writes ({check} was carried out instead of refused with 412): \
         an object a workload writes while this command runs could be reverted to its old content. Stop every \
         writer to the bucket, then rerun with --assume-quiesced (CLOUDTASER_S3PROXY_ASSUME_QUIESCED=true)"
    )]
    NoConditionalWrites { check: &'static str },
    /// Another writer changed the object between its examination and the
    /// copy: the copy's condition failed and nothing was changed.
    #[error(
        "another writer changed the object while it was being {0}; it was left as that writer wrote it (rerun to retry)"
    )]
    ChangedByAnotherWriter(&'static str),
    /// Some objects failed; the summary has been printed.
    #[error("{count} object(s) could not be {verb}; rerun to retry them")]
    Incomplete { count: usize, verb: &'static str },
    /// Open uploads whose data keys may be under an older key version.
    #[error(
        "{count} open multipart upload(s) may be written under an older key version; complete or abort them, then run rewrap again"
    )]
    OpenUploads { count: usize },
    /// The Transit key got a newer version while the command ran.
    #[error("the key was rotated during this run (v{from} to v{to}); run rewrap again")]
    RotatedDuringRun { from: u32, to: u32 },
}

impl CommandError {
    /// `e`, told apart when it says another writer changed the object
    /// while it was being `verb` (a failed `If-Match`, `request::seal`).
    pub fn from_copy(verb: &'static str) -> impl FnOnce(ProxyError) -> Self {
        move |e| match e {
            ProxyError::ObjectChanged(_) => CommandError::ChangedByAnotherWriter(verb),
            e => CommandError::Proxy(e),
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CommandError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_printed_text() {
        let s3 = CommandError::S3 { operation: "HEAD", status: StatusCode::FORBIDDEN, code: "AccessDenied".into() };
        assert_eq!(s3.to_string(), "HEAD: 403 Forbidden AccessDenied");
        let incomplete = CommandError::Incomplete { count: 2, verb: "sealed" };
        assert_eq!(incomplete.to_string(), "2 object(s) could not be sealed; rerun to retry them");
        let not_ready = CommandError::NotReady {
            url: "http://127.0.0.1:1/readyz".into(),
            timeout: std::time::Duration::from_secs(3),
        };
        assert_eq!(not_ready.to_string(), "http://127.0.0.1:1/readyz was not ready within 3s");
        let put = CommandError::Answered { operation: "PUT", status: StatusCode::BAD_GATEWAY };
        assert_eq!(put.to_string(), "PUT answered 502 Bad Gateway");
    }
}
