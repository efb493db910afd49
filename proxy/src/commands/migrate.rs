//! `cloudtaser-s3proxy migrate`: brings objects written before the proxy
//! under encryption, in place. Each plaintext object is read from the
//! upstream (pinned with `If-Match` to the ETag it was listed with) and
//! written back through the proxy's own PutObject path with `If-Match` on
//! the same ETag, so an object changed meanwhile is skipped and reported,
//! never clobbered (where the upstream honours conditional writes, as S3
//! does). Objects larger than the part size are rewritten as multipart
//! uploads, one pinned ranged read per part. Content headers, user
//! metadata, tags and storage class are kept.
//! Progress is recorded after every object, so a rerun continues.
//!
//! Only plaintext is encrypted. An object without an envelope whose body
//! starts with the format's magic is ciphertext whose envelope was stripped
//! (tampering), and an object whose earlier version (on a versioned bucket)
//! carried an envelope was written around the proxy: both are refused, as is
//! a `multipart-pending` leftover (unfinished, not plaintext). Anything
//! refused or skipped makes the command exit non-zero, and the progress
//! state never passes it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};

use super::CommandError;
use super::listing::{KeyPages, Lead, VersionPages, body_of, lead_of, read_state, s3_error, say, write_state};
use super::scan::STRIPPED;
use crate::app;
use crate::cli::MigrateArgs;
use crate::format::{EnvelopeMetadata, ObjectLayout, StoredLayout};
use crate::request::RequestPath;
use crate::request::seal::{kept_headers, object_tagging};
use crate::s3::classify::S3Request;
use crate::s3::xml;
use crate::settings::Settings;

#[derive(Debug, Default)]
pub struct Summary {
    pub encrypted: u64,
    /// Format 1 or 2 rewritten as format 3 (`--upgrade`).
    pub upgraded: u64,
    pub would_encrypt: u64,
    pub already_encrypted: u64,
    /// Changed after it was listed: left as it is (a rerun retries it).
    pub skipped: Vec<(String, String)>,
    /// Not plaintext, or not finished: possibly tampered with, left as it is.
    pub refused: Vec<(String, String)>,
    pub failed: Vec<(String, CommandError)>,
}

impl Summary {
    /// Nothing so far failed, was skipped or refused.
    fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.refused.is_empty()
    }
}

enum Outcome {
    Encrypted,
    Upgraded,
    WouldEncrypt,
    AlreadyEncrypted,
    Skipped(String),
    Refused(String),
}

/// Why a `multipart-pending` object is not migrated.
const PENDING: &str = "a multipart object completed but never sealed: unfinished, not plaintext; \
                       `cloudtaser-s3proxy seal --key` verifies it, then seals it";
/// Why an object whose earlier version was encrypted is not migrated.
const EARLIER_ENCRYPTED: &str = "an earlier version of it is encrypted, so this version was written around the \
                                 proxy (or by someone with the upstream's credentials) and may have been tampered \
                                 with; not encrypted";

/// Where the bytes written come from: the stored plaintext (pre-proxy
/// objects), or the plaintext of a format-1 or 2 object, read and verified
/// through the proxy's read path (`--upgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Plaintext,
    Legacy,
}

/// A (ranged) read of the object's content as examined at `etag`: `None`
/// when it changed since. A legacy object's reads go through the read
/// path, which verifies every segment and its envelope, pinned with the
/// ETag the workload-facing side shows (`s3::etag::client_etag`).
async fn read_source(
    path: &RequestPath,
    object: &S3Request,
    source: Source,
    etag: &HeaderValue,
    range: Option<(u64, u64)>,
) -> Result<Option<http::Response<crate::body::ProxyBody>>, CommandError> {
    let mut read = HeaderMap::new();
    if let Some((start, end)) = range {
        read.insert(http::header::RANGE, HeaderValue::from_str(&format!("bytes={start}-{end}"))?);
    }
    let resp = match source {
        Source::Plaintext => {
            read.insert(http::header::IF_MATCH, etag.clone());
            path.upstream().send_buffered(Method::GET, object, read, Bytes::new()).await?
        }
        Source::Legacy => {
            let client = crate::s3::etag::client_etag(etag.to_str().unwrap_or_default());
            read.insert(http::header::IF_MATCH, HeaderValue::from_str(&client)?);
            path.read_object(object, read).await?
        }
    };
    let expected = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    match resp.status() {
        StatusCode::PRECONDITION_FAILED => Ok(None),
        s if s == expected => Ok(Some(resp)),
        _ => {
            let (status, _, body) = body_of(resp).await?;
            Err(s3_error(if range.is_some() { "ranged GET" } else { "GET" }, status, &body))
        }
    }
}

/// Rewrites a large object as an encrypted multipart upload, one ranged,
/// ETag-pinned read per part; `Complete` carries `If-Match` too.
#[allow(clippy::too_many_arguments)]
async fn migrate_multipart(
    path: &RequestPath,
    bucket: &str,
    key: &str,
    headers: HeaderMap,
    etag: &HeaderValue,
    len: u64,
    part_len: u64,
    from: Source,
) -> Result<Outcome, CommandError> {
    let object = S3Request::internal(bucket, Some(key), vec![]);
    let upload = path.create_encrypted_upload(bucket, key, headers).await?;
    let upload_id = upload.upload_id.clone();
    let abort = || async {
        let s3 = S3Request::internal(bucket, Some(key), vec![("uploadId".into(), upload_id.clone())]);
        let _ = path.upstream().send_buffered(Method::DELETE, &s3, HeaderMap::new(), Bytes::new()).await;
    };
    let mut completed = String::from("<CompleteMultipartUpload>");
    let mut table = Vec::new();
    for (index, start) in (0..len).step_by(part_len as usize).enumerate() {
        let end = (start + part_len).min(len) - 1;
        table.push((index as u32 + 1, end + 1 - start));
        let source = match read_source(path, &object, from, etag, Some((start, end))).await {
            Ok(Some(source)) => source,
            Ok(None) => {
                abort().await;
                return Ok(Outcome::Skipped("changed since it was listed".to_owned()));
            }
            Err(e) => {
                abort().await;
                return Err(e);
            }
        };
        let mut part_headers = HeaderMap::new();
        part_headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(end + 1 - start));
        let number = index as u32 + 1;
        match path.put_encrypted_part(&upload, number, part_headers, source.into_body()).await {
            Ok(part_etag) => completed.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(&part_etag)
            )),
            Err(e) => {
                abort().await;
                return Err(e.into());
            }
        }
    }
    completed.push_str("</CompleteMultipartUpload>");
    let s3 = S3Request::internal(bucket, Some(key), vec![("uploadId".into(), upload_id.clone())]);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::IF_MATCH, etag.clone());
    let resp = path.upstream().send_buffered(Method::POST, &s3, headers, Bytes::from(completed)).await?;
    let (status, _, body) = body_of(resp).await?;
    // A failed Complete can still answer 200 with an <Error> document.
    let failed = !status.is_success() || !xml::texts_of(&body, b"Code")?.is_empty();
    if failed {
        abort().await;
        if status == StatusCode::PRECONDITION_FAILED {
            return Ok(Outcome::Skipped("changed while it was being encrypted".to_owned()));
        }
        return Err(s3_error("CompleteMultipartUpload", status, &body));
    }
    // Format 2: the part table is sealed into the metadata, as the proxy
    // does at every CompleteMultipartUpload.
    let completed = xml::texts_of(&body, b"ETag")?.pop().ok_or(CommandError::Object("Complete gave no ETag"))?;
    let completed = HeaderValue::from_str(&completed)?;
    let layout = ObjectLayout::from_parts(&table)?;
    let done = if from == Source::Legacy { Outcome::Upgraded } else { Outcome::Encrypted };
    match path.copier().seal_completed(&object, &upload.pending(), &upload.data_key.key, &layout, &completed).await {
        Ok(_) => Ok(done),
        // Another writer replaced it after the Complete: theirs stands.
        Err(crate::error::ProxyError::ObjectChanged(_)) => {
            Ok(Outcome::Skipped("changed while it was being encrypted".to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a noncurrent version of `key` carries an envelope (versioned
/// buckets): then its current plaintext replaced an encrypted object. Stores
/// that cannot list versions answer nothing here; there a replacement body
/// that is not ciphertext cannot be told from the owner's plaintext
/// (docs/THREAT-MODEL.md).
async fn earlier_version_encrypted(path: &RequestPath, bucket: &str, key: &str) -> Result<bool, CommandError> {
    let mut pages = VersionPages::new(path.upstream(), bucket, key);
    loop {
        let page = match pages.next().await {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(false),
            // No ListObjectVersions on this store (s3s-fs): no versions to consult.
            Err(CommandError::S3 { status, .. })
                if status.is_client_error() || status == StatusCode::NOT_IMPLEMENTED =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        // Keys sort before every longer key they are a prefix of: once
        // another key shows up, this one's versions are done.
        let past = page.iter().any(|v| v.key != key);
        for version in page.into_iter().filter(|v| v.key == key && !v.is_latest) {
            let s3 = S3Request::internal(bucket, Some(key), vec![("versionId".to_owned(), version.version_id)]);
            let resp = path.upstream().send_buffered(Method::HEAD, &s3, HeaderMap::new(), Bytes::new()).await?;
            let (status, head, body) = body_of(resp).await?;
            if !status.is_success() {
                return Err(s3_error("HEAD of an earlier version", status, &body));
            }
            // A broken envelope is an envelope all the same.
            if !matches!(EnvelopeMetadata::from_headers(&head), Ok(None)) {
                return Ok(true);
            }
        }
        if past {
            return Ok(false);
        }
    }
}

async fn migrate_one(path: &RequestPath, bucket: &str, key: &str, args: &MigrateArgs) -> Result<Outcome, CommandError> {
    let dry_run = args.walk.dry_run;
    let object = S3Request::internal(bucket, Some(key), vec![]);
    let resp = path.upstream().send_buffered(Method::HEAD, &object, HeaderMap::new(), Bytes::new()).await?;
    let (status, head, body) = body_of(resp).await?;
    if !status.is_success() {
        return Err(s3_error("HEAD", status, &body));
    }
    let from = match EnvelopeMetadata::from_headers(&head) {
        Ok(Some(EnvelopeMetadata { layout: StoredLayout::MultipartPending, .. })) => {
            return Ok(Outcome::Refused(PENDING.to_owned()));
        }
        Ok(Some(e)) if e.auth.is_none() && args.upgrade => Source::Legacy,
        Ok(Some(_)) => return Ok(Outcome::AlreadyEncrypted),
        Ok(None) => Source::Plaintext,
        // A broken envelope is not plaintext: rewriting it would bury the evidence.
        Err(e) => return Err(CommandError::MalformedEnvelope(e)),
    };
    let stored_len: u64 = head
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or(CommandError::Object("HEAD gave no length"))?;
    let etag = head.get(http::header::ETAG).cloned().ok_or(CommandError::Object("HEAD gave no ETag"))?;
    let len = if from == Source::Plaintext {
        // Plaintext is what migrate encrypts; ciphertext without its
        // envelope is evidence, and encrypting it would lose the original
        // data key's only record.
        match lead_of(path.upstream(), &object, &etag, stored_len).await? {
            Lead::Ciphertext => return Ok(Outcome::Refused(STRIPPED.to_owned())),
            Lead::Changed => return Ok(Outcome::Skipped("changed since it was listed".to_owned())),
            Lead::Other => {}
        }
        if earlier_version_encrypted(path, bucket, key).await? {
            return Ok(Outcome::Refused(EARLIER_ENCRYPTED.to_owned()));
        }
        stored_len
    } else {
        // The plaintext length, from the verified read path's HEAD.
        let client = crate::s3::etag::client_etag(etag.to_str().unwrap_or_default());
        let mut pinned = HeaderMap::new();
        pinned.insert(http::header::IF_MATCH, HeaderValue::from_str(&client)?);
        let resp = path.head_object_checked(&object, pinned).await?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Ok(Outcome::Skipped("changed since it was listed".to_owned()));
        }
        if !resp.status().is_success() {
            return Err(CommandError::Answered { operation: "HEAD", status: resp.status() });
        }
        resp.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or(CommandError::Object("HEAD gave no length"))?
    };
    if dry_run {
        return Ok(Outcome::WouldEncrypt);
    }
    // What describes the object, as a seal or `rewrap` keeps it, plus its tags.
    let mut headers = kept_headers(&head);
    if let Some(tags) = object_tagging(path.upstream(), &S3Request::internal(bucket, Some(key), vec![])).await? {
        headers.insert(HeaderName::from_static("x-amz-tagging"), HeaderValue::from_str(&tags)?);
    }
    let part_len = u64::from(args.part_size_mib) << 20;
    if len > part_len {
        return migrate_multipart(path, bucket, key, headers, &etag, len, part_len, from).await;
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(http::header::IF_MATCH, etag.clone());
    // Read exactly what was examined: a change since the HEAD fails here.
    let Some(source) = read_source(path, &object, from, &etag, None).await? else {
        return Ok(Outcome::Skipped("changed since it was listed".to_owned()));
    };
    let written = path.put_encrypted(bucket, key, headers, source.into_body()).await?;
    match written.status() {
        s if s.is_success() && from == Source::Legacy => Ok(Outcome::Upgraded),
        s if s.is_success() => Ok(Outcome::Encrypted),
        StatusCode::PRECONDITION_FAILED => Ok(Outcome::Skipped("changed while it was being encrypted".to_owned())),
        status => Err(CommandError::Answered { operation: "PUT", status }),
    }
}

pub async fn run(settings: &Settings, args: &MigrateArgs) -> Result<(), CommandError> {
    let (_, path) = app::tool_request_path(settings).await?;
    let walk = &args.walk;
    // PutObject for single objects; Complete for large ones, then the seal.
    let needs =
        [super::probe::Condition::Put, super::probe::Condition::Complete, super::probe::of_seal(&path.copier())];
    super::probe::require_conditional_writes(path.upstream(), &walk.bucket, &needs, walk.assume_quiesced, walk.dry_run)
        .await?;
    let progress = if args.walk.quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    progress
        .set_style(ProgressStyle::with_template("{spinner} {elapsed} {pos} objects  {msg}").expect("static template"));
    let resume = read_state(&args.walk.state_file);
    if let Some(after) = &resume {
        say(&progress, format!("resuming after {after}"));
    }
    let mut summary = Summary::default();
    let mut pages = KeyPages::new(path.upstream(), &args.walk.bucket, &args.walk.prefix, resume.clone());
    while let Some(page) = pages.next().await? {
        for key in page {
            match migrate_one(&path, &args.walk.bucket, &key, args).await {
                Ok(Outcome::Encrypted) => summary.encrypted += 1,
                Ok(Outcome::Upgraded) => summary.upgraded += 1,
                Ok(Outcome::WouldEncrypt) => summary.would_encrypt += 1,
                Ok(Outcome::AlreadyEncrypted) => summary.already_encrypted += 1,
                Ok(Outcome::Skipped(why)) => {
                    say(&progress, format!("skipped: {key}: {why}"));
                    summary.skipped.push((key.clone(), why));
                }
                Ok(Outcome::Refused(why)) => {
                    say(&progress, format!("refused: {key}: {why}"));
                    summary.refused.push((key.clone(), why));
                }
                Err(e) => {
                    say(&progress, format!("failed: {key}: {e}"));
                    summary.failed.push((key.clone(), e));
                }
            }
            // The recorded point never passes a failure, a skip or a
            // refusal, so a rerun examines them again.
            if !args.walk.dry_run && summary.is_clean() {
                write_state(&args.walk.state_file, &key)?;
            }
            progress.inc(1);
            progress.set_message(format!(
                "{} encrypted, {} already encrypted, {} skipped, {} failed, {} refused",
                summary.encrypted + summary.would_encrypt,
                summary.already_encrypted,
                summary.skipped.len(),
                summary.failed.len(),
                summary.refused.len()
            ));
        }
    }
    progress.finish_and_clear();
    let verb = if args.walk.dry_run { "would encrypt" } else { "encrypted" };
    println!(
        "{verb}: {}, upgraded to format 3: {}, already encrypted: {}, skipped: {}, failed: {}, refused: {}",
        summary.encrypted + summary.would_encrypt,
        summary.upgraded,
        summary.already_encrypted,
        summary.skipped.len(),
        summary.failed.len(),
        summary.refused.len()
    );
    if !summary.skipped.is_empty() || !summary.refused.is_empty() {
        return Err(CommandError::NotAll {
            verb: "migrated",
            failed: summary.failed.len(),
            skipped: summary.skipped.len(),
            refused: summary.refused.len(),
        });
    }
    if !summary.failed.is_empty() {
        return Err(CommandError::Incomplete { count: summary.failed.len(), verb: "migrated" });
    }
    Ok(())
}
