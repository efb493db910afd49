//! `cloudtaser-s3proxy seal`: writes the manifest of multipart objects that
//! have none (docs/FORMAT.md, format 2):
//!
//! - objects left `multipart-pending` when the proxy stopped (or sealing
//!   failed) between the upstream's CompleteMultipartUpload and sealing,
//!   which readers refuse until they are sealed;
//! - format-1 multipart objects, whose truncation to a prefix of their parts
//!   is otherwise not detected.
//!
//! The part table is read from the stream headers as they are stored at that
//! moment and trusted: an object cut short by someone with the upstream's
//! credentials before it is sealed is sealed as it is. Seal soon after an
//! interruption, and run `scan --verify` afterwards. Like `rewrap`, it copies
//! no body bytes through the proxy (a server-side self-copy), keeps content
//! headers, user metadata and tags, skips objects changed meanwhile (If-Match),
//! and resumes from `--state-file`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use indicatif::{ProgressBar, ProgressStyle};

use super::CommandError;
use super::listing::{KeyPages, body_of, read_state, s3_error, write_state};
use crate::app;
use crate::cli::SealArgs;
use crate::format::{EnvelopeMetadata, StoredLayout};
use crate::keys::KeyService;
use crate::request::RequestPath;
use crate::s3::classify::S3Request;
use crate::settings::Settings;

enum Outcome {
    Sealed,
    WouldSeal,
    AlreadySealed,
    NotMultipart,
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
    if dry_run {
        return Ok(Outcome::WouldSeal);
    }
    let etag = head.get(http::header::ETAG).cloned().ok_or(CommandError::Object("the object has no ETag"))?;
    let stored_len: u64 = head
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or(CommandError::Object("the object has no length"))?;
    let layout = path.claimed_layout(&object, &envelope, stored_len, Some(&etag)).await?;
    let data_key = keys.unwrap(&envelope.transit_key, &envelope.wrapped_key).await?;
    let sealed = path.copier().seal_completed(&object, &envelope, &data_key, &layout, &etag).await;
    sealed.map_err(CommandError::from_copy("sealed"))?;
    Ok(Outcome::Sealed)
}

pub async fn run(settings: &Settings, args: &SealArgs) -> Result<(), CommandError> {
    let (keys, path) = app::tool_request_path(settings).await?;
    let needs = [super::probe::of_seal(&path.copier())];
    super::probe::require_conditional_writes(path.upstream(), &args.bucket, &needs, args.assume_quiesced, args.dry_run)
        .await?;
    let progress = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    progress
        .set_style(ProgressStyle::with_template("{spinner} {elapsed} {pos} objects  {msg}").expect("static template"));
    let resume = read_state(&args.state_file);
    let (mut sealed, mut already, mut other, mut failed) = (0u64, 0u64, 0u64, 0usize);
    let mut pages = KeyPages::new(path.upstream(), &args.bucket, &args.prefix, resume);
    while let Some(page) = pages.next().await? {
        for key in page {
            match seal_one(&path, &keys, &args.bucket, &key, args.dry_run).await {
                Ok(Outcome::Sealed | Outcome::WouldSeal) => sealed += 1,
                Ok(Outcome::AlreadySealed) => already += 1,
                Ok(Outcome::NotMultipart) => other += 1,
                Err(e) => {
                    // On standard error whatever the progress bar (see `rewrap`).
                    progress.suspend(|| eprintln!("failed: {key}: {e}"));
                    failed += 1;
                }
            }
            // The recorded point never passes a failure, so a rerun retries it.
            if !args.dry_run && failed == 0 {
                write_state(&args.state_file, &key)?;
            }
            progress.inc(1);
            progress.set_message(format!("{sealed} sealed, {failed} failed"));
        }
    }
    progress.finish_and_clear();
    let verb = if args.dry_run { "would seal" } else { "sealed" };
    println!("{verb}: {sealed}, already sealed: {already}, not multipart or not encrypted: {other}, failed: {failed}");
    if failed > 0 {
        return Err(CommandError::Incomplete { count: failed, verb: "sealed" });
    }
    Ok(())
}
