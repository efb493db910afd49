//! `cloudtaser-s3proxy seal`: writes the manifest of multipart objects that
//! have none (docs/FORMAT.md, format 2):
//!
//! - objects left `multipart-pending` when the proxy stopped (or sealing
//!   failed) between the upstream's CompleteMultipartUpload and sealing,
//!   which readers refuse until they are sealed;
//! - format-1 multipart objects, whose truncation to a prefix of their parts
//!   is otherwise not detected.
//!
//! A seal makes whatever is stored authentic, so nothing is sealed before it
//! is checked: the ETag's part count (`-N`, which only a
//! CompleteMultipartUpload writes) must equal the number of streams, every
//! stream header must parse and match the part table (format 1: equal parts
//! numbered 1..N; pending: the table the headers describe, ending where the
//! object ends), and every segment of every stream must verify under the
//! object's data key (the whole object is read once and decrypted into
//! nothing). An object that fails is refused and counted, with a message
//! saying it may have been tampered with. What remains possible is a cut
//! back to a prefix of whole parts made with a new multipart upload under the
//! same envelope: nothing unsealed records the part count
//! (docs/THREAT-MODEL.md). Like `rewrap`, the seal itself copies no body
//! bytes through the proxy (a server-side self-copy), keeps content headers,
//! user metadata and tags, skips objects changed meanwhile (If-Match), and
//! resumes from `--state-file`. `--key` seals one object.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::CommandError;
use super::listing::{KeyPages, body_of, read_state, s3_error, say, write_state};
use crate::app;
use crate::cli::SealArgs;
use crate::error::ProxyError;
use crate::format::{DataKey, EnvelopeMetadata, FormatError, ObjectLayout, Opener, StoredLayout};
use crate::keys::KeyService;
use crate::request::RequestPath;
use crate::s3::classify::S3Request;
use crate::settings::Settings;

enum Outcome {
    Sealed,
    WouldSeal,
    AlreadySealed,
    NotMultipart,
    Refused(Refusal),
}

/// Why an object was not sealed: what is stored is not a whole, authentic
/// multipart object, so sealing it would vouch for tampering.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "its ETag carries no part count, so it was rewritten by a single PUT or a copy, and a cut to a prefix of \
         its parts cannot be ruled out"
    )]
    NoPartCount,
    #[error("its ETag says {etag} part(s) but its body holds {streams} stream(s)")]
    PartCount { etag: u64, streams: u64 },
    #[error("its streams do not match a part table: {0}")]
    Layout(ProxyError),
    #[error("a segment failed verification: {0}")]
    Segment(FormatError),
}

/// The part count of a multipart ETag (`"…-N"`), if it has one.
fn etag_parts(etag: &HeaderValue) -> Option<u64> {
    let (_, n) = etag.to_str().ok()?.trim().trim_matches('"').rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Reads the whole stored object, at the version `etag` names, through an
/// opener for `layout`, and discards the plaintext: every header and every
/// segment's tag is checked, nothing is kept.
async fn verify_every_segment(
    path: &RequestPath,
    object: &S3Request,
    etag: &HeaderValue,
    stored_len: u64,
    opener: &mut Opener,
) -> Result<Option<Refusal>, CommandError> {
    let mut pinned = HeaderMap::new();
    pinned.insert(http::header::IF_MATCH, etag.clone());
    let resp = path.upstream().send_buffered(Method::GET, object, pinned, Bytes::new()).await?;
    let declared = resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match resp.status() {
        StatusCode::OK if declared == Some(stored_len) => {}
        StatusCode::PRECONDITION_FAILED => return Err(ProxyError::ObjectChanged("verified").into()),
        StatusCode::OK => return Err(CommandError::Object("the GET's length is not the HEAD's")),
        status => {
            let (_, _, body) = body_of(resp).await?;
            return Err(s3_error("GET", status, &body));
        }
    }
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CommandError::Body)?;
        if let Some(data) = frame.data_ref() {
            out.clear();
            if let Err(e) = opener.update(data, &mut out) {
                return Ok(Some(Refusal::Segment(e)));
            }
        }
    }
    out.clear();
    Ok(opener.finish(&mut out).err().map(Refusal::Segment))
}

/// The checks before a seal; `None` when the object may be sealed.
async fn check(
    path: &RequestPath,
    object: &S3Request,
    envelope: &EnvelopeMetadata,
    key: &Arc<DataKey>,
    layout: &ObjectLayout,
    etag: &HeaderValue,
    stored_len: u64,
) -> Result<Option<Refusal>, CommandError> {
    match etag_parts(etag) {
        None => return Ok(Some(Refusal::NoPartCount)),
        Some(n) if n != layout.parts => return Ok(Some(Refusal::PartCount { etag: n, streams: layout.parts })),
        Some(_) => {}
    }
    let opener = Opener::whole(key.clone(), layout.clone());
    // A pending object's streams are format 2, which an opener accepts only
    // under a manifest: the one this seal is about to write over `layout`.
    let mut opener = match envelope.layout {
        // A format-3 upload's parts are version 3, and nothing else.
        StoredLayout::MultipartPending if envelope.auth.is_some() => {
            opener.manifest_checked().require_version(crate::format::VERSION_3)
        }
        StoredLayout::MultipartPending => opener.manifest_checked(),
        _ => opener,
    };
    verify_every_segment(path, object, etag, stored_len, &mut opener).await
}

async fn seal_one(
    path: &RequestPath,
    keys: &Arc<KeyService>,
    bucket: &str,
    key: &str,
    dry_run: bool,
) -> Result<Outcome, CommandError> {
    let object = S3Request::internal(bucket, Some(key), vec![]);
    let resp = path.upstream().send_buffered(Method::HEAD, &object, HeaderMap::new(), Bytes::new()).await;
    let (status, head, body) = body_of(resp?).await?;
    if !status.is_success() {
        return Err(s3_error("HEAD", status, &body));
    }
    let envelope = match EnvelopeMetadata::from_headers(&head)? {
        Some(e) if matches!(e.layout, StoredLayout::MultipartPending | StoredLayout::Multipart) => e,
        Some(EnvelopeMetadata { layout: StoredLayout::MultipartSealed(_), .. }) => return Ok(Outcome::AlreadySealed),
        _ => return Ok(Outcome::NotMultipart),
    };
    let etag = head.get(http::header::ETAG).cloned().ok_or(CommandError::Object("the object has no ETag"))?;
    let stored_len: u64 = head
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or(CommandError::Object("the object has no length"))?;
    let layout = match path.claimed_layout(&object, &envelope, stored_len, Some(&etag)).await {
        Ok(layout) => layout,
        Err(e @ ProxyError::Ciphertext(_)) => return Ok(Outcome::Refused(Refusal::Layout(e))),
        Err(e) => return Err(e.into()),
    };
    let data_key = crate::format::object_key(
        keys.unwrap(&envelope.transit_key, &envelope.wrapped_key).await?,
        envelope.key_salt.as_ref(),
    );
    if let Some(refusal) = check(path, &object, &envelope, &data_key, &layout, &etag, stored_len).await? {
        return Ok(Outcome::Refused(refusal));
    }
    if dry_run {
        return Ok(Outcome::WouldSeal);
    }
    let sealed = path.copier().seal_completed(&object, &envelope, &data_key, &layout, &etag).await;
    sealed.map_err(CommandError::from_copy("sealed"))?;
    Ok(Outcome::Sealed)
}

#[derive(Default)]
struct Counts {
    sealed: u64,
    already: u64,
    other: u64,
    failed: usize,
    refused: usize,
}

impl Counts {
    fn add(&mut self, progress: &ProgressBar, key: &str, outcome: Result<Outcome, CommandError>) {
        match outcome {
            Ok(Outcome::Sealed | Outcome::WouldSeal) => self.sealed += 1,
            Ok(Outcome::AlreadySealed) => self.already += 1,
            Ok(Outcome::NotMultipart) => self.other += 1,
            Ok(Outcome::Refused(why)) => {
                say(
                    progress,
                    format!("refused: {key}: {why}; the object may have been tampered with, and is not sealed"),
                );
                self.refused += 1;
            }
            Err(e) => {
                say(progress, format!("failed: {key}: {e}"));
                self.failed += 1;
            }
        }
    }
}

pub async fn run(settings: &Settings, args: &SealArgs) -> Result<(), CommandError> {
    let walk = &args.walk;
    let (keys, path) = app::tool_request_path(settings).await?;
    let needs = [super::probe::of_seal(&path.copier())];
    super::probe::require_conditional_writes(path.upstream(), &walk.bucket, &needs, walk.assume_quiesced, walk.dry_run)
        .await?;
    let progress = if walk.quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    progress
        .set_style(ProgressStyle::with_template("{spinner} {elapsed} {pos} objects  {msg}").expect("static template"));
    let mut counts = Counts::default();
    if let Some(key) = &args.object {
        counts.add(&progress, key, seal_one(&path, &keys, &walk.bucket, key, walk.dry_run).await);
    } else {
        let resume = read_state(&walk.state_file);
        let mut pages = KeyPages::new(path.upstream(), &walk.bucket, &walk.prefix, resume);
        while let Some(page) = pages.next().await? {
            for key in page {
                counts.add(&progress, &key, seal_one(&path, &keys, &walk.bucket, &key, walk.dry_run).await);
                // The recorded point never passes a failure or a refusal, so
                // a rerun examines them again.
                if !walk.dry_run && counts.failed == 0 && counts.refused == 0 {
                    write_state(&walk.state_file, &key)?;
                }
                progress.inc(1);
                progress.set_message(format!(
                    "{} sealed, {} failed, {} refused",
                    counts.sealed, counts.failed, counts.refused
                ));
            }
        }
    }
    progress.finish_and_clear();
    let verb = if walk.dry_run { "would seal" } else { "sealed" };
    println!(
        "{verb}: {}, already sealed: {}, not multipart or not encrypted: {}, failed: {}, refused: {}",
        counts.sealed, counts.already, counts.other, counts.failed, counts.refused
    );
    if counts.refused > 0 {
        return Err(CommandError::NotAll {
            verb: "sealed",
            failed: counts.failed,
            skipped: 0,
            refused: counts.refused,
        });
    }
    if counts.failed > 0 {
        return Err(CommandError::Incomplete { count: counts.failed, verb: "sealed" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_counts_come_from_multipart_etags_only() {
        let count = |s: &'static str| etag_parts(&HeaderValue::from_static(s));
        assert_eq!(count("\"9dd4e461268c8034f5c8564e155c67a6-3\""), Some(3));
        assert_eq!(count("9dd4e461268c8034f5c8564e155c67a6-12"), Some(12));
        assert_eq!(count("\"9dd4e461268c8034f5c8564e155c67a6\""), None);
        assert_eq!(count("\"abc-\""), None);
        assert_eq!(count("\"abc-+3\""), None);
        let refusal = Refusal::PartCount { etag: 2, streams: 3 };
        assert_eq!(refusal.to_string(), "its ETag says 2 part(s) but its body holds 3 stream(s)");
    }
}
