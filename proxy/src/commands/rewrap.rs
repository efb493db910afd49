//! `cloudtaser-s3proxy rewrap`: moves the data keys of every object under a
//! bucket or prefix to the newest Transit key version, and to the Transit
//! key its routing rule names now (or `--to-key`). Within one key, Transit
//! `rewrap` never returns a plaintext key; a move to another key unwraps the
//! data key (as any read does), checks the envelope under it and wraps it
//! under the new key. The object body never moves through the proxy:
//! a metadata-only self-copy replaces the envelope (stream-aligned
//! UploadPartCopy for multipart objects, which also covers objects above the
//! 5 GiB single-copy limit). Progress is recorded after every object, so an
//! interrupted run continues where it stopped.

use std::collections::HashMap;

/// Why an object is left alone: its envelope names a key not configured.
const OUTSIDE: &str = "the object names a Transit key outside CLOUDTASER_S3PROXY_TRANSIT_KEY, _KEY_RULES, _KMS_KEY_IDS and _TRANSIT_READ_KEYS; not touched";

/// Passes over objects written during the walk, at most.
const MAX_FOLLOW_UP_PASSES: usize = 5;
/// How far the upstream's `LastModified` clock may be behind this one.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};

use crate::app;
use crate::cli::RewrapArgs;
use crate::format::{EnvelopeMetadata, StoredLayout};
use crate::keys::{KeyService, key_version};
use crate::request::RequestPath;
use crate::s3::classify::S3Request;
use crate::settings::Settings;
use crate::upstream::UpstreamClient;

use super::listing::{KeyPages, ObjectVersion, VersionPages, body_of, read_state, s3_error, write_state};
use super::{CommandError, open_uploads};

#[derive(Default, Debug)]
pub struct Summary {
    pub rewrapped: u64,
    pub would_rewrap: u64,
    /// Of `rewrapped` / `would_rewrap`: moved to another Transit key.
    pub moved: u64,
    pub current: u64,
    pub not_encrypted: u64,
    pub failed: Vec<(String, CommandError)>,
}

enum Outcome {
    Rewrapped,
    WouldRewrap,
    Moved,
    WouldMove,
    Current,
    NotEncrypted,
}

struct Rewrapper<'a> {
    path: &'a RequestPath,
    upstream: &'a UpstreamClient,
    /// The configured keys, each on its mount: an envelope naming any
    /// other is not the proxy's to touch, here as on the request path.
    keys: &'a KeyService,
    /// `--to-key`: every object goes there, whatever its rule says.
    to_key: Option<String>,
    bucket: String,
    dry_run: bool,
    latest: HashMap<String, u32>,
}

fn request(bucket: &str, key: Option<&str>, query: Vec<(String, String)>) -> S3Request {
    S3Request::internal(bucket, key, query)
}

impl Rewrapper<'_> {
    async fn send(
        &self,
        method: Method,
        s3: &S3Request,
        headers: HeaderMap,
    ) -> Result<(StatusCode, HeaderMap, Bytes), CommandError> {
        self.send_body(method, s3, headers, Bytes::new()).await
    }

    async fn send_body(
        &self,
        method: Method,
        s3: &S3Request,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), CommandError> {
        let resp = self.upstream.send_buffered(method, s3, headers, body).await?;
        body_of(resp).await
    }

    async fn latest_version(&mut self, key_name: &str) -> Result<u32, CommandError> {
        if let Some(v) = self.latest.get(key_name) {
            return Ok(*v);
        }
        let transit = self.keys.transit_for(key_name).ok_or(CommandError::Object(OUTSIDE))?;
        let v = transit.latest_version(key_name).await?;
        self.latest.insert(key_name.to_owned(), v);
        Ok(v)
    }

    async fn rewrap_one(&mut self, key: &str) -> Result<Outcome, CommandError> {
        let object = request(&self.bucket, Some(key), vec![]);
        let (status, head, body) = self.send(Method::HEAD, &object, HeaderMap::new()).await?;
        if !status.is_success() {
            return Err(s3_error("HEAD", status, &body));
        }
        let Some(envelope) = EnvelopeMetadata::from_headers(&head)? else {
            return Ok(Outcome::NotEncrypted);
        };
        let Some(transit) = self.keys.transit_for(&envelope.transit_key) else {
            return Err(CommandError::Object(OUTSIDE));
        };
        let target = match &self.to_key {
            Some(to) => to.clone(),
            None => self.keys.routes().route(&self.bucket, key).to_owned(),
        };
        let moving = target != envelope.transit_key;
        let version =
            key_version(&envelope.wrapped_key).ok_or(CommandError::Object("the wrapped key has no version"))?;
        if !moving && version >= self.latest_version(&envelope.transit_key).await? {
            return Ok(Outcome::Current);
        }
        if self.dry_run {
            return Ok(if moving { Outcome::WouldMove } else { Outcome::WouldRewrap });
        }
        // The manifest's key derives from the data key, which both kinds
        // of rewrap keep: a sealed object's tag stays valid.
        let renewed = if moving {
            // The envelope MAC covers the Transit key's name: it is checked
            // under the data key before anything is written, then made anew.
            // The object's own data key moves, never a bucket key (that would
            // hand the new key every object of the window); the moved
            // object then has no key salt, and its MAC is made without one.
            let unwrapped = self.keys.unwrap(&envelope.transit_key, &envelope.wrapped_key).await?;
            let data_key = crate::format::object_key(unwrapped.clone(), envelope.key_salt.as_ref());
            let name = crate::format::ObjectName { bucket: &self.bucket, key };
            crate::format::verify_envelope(data_key.bytes(), &envelope, name)
                .map_err(|_| CommandError::Object("the envelope failed verification (tampered?); not touched"))?;
            let to = self.keys.transit_for(&target).ok_or(CommandError::Object(OUTSIDE))?;
            let wrapped_key = to.wrap_data_keys(std::slice::from_ref(&*data_key)).await?.remove(0);
            let moved =
                EnvelopeMetadata { wrapped_key, transit_key: target.clone(), key_salt: None, ..envelope.clone() };
            match moved.auth {
                Some(_) => crate::format::with_mac(data_key.bytes(), moved, name)
                    .ok_or(CommandError::Object("the envelope cannot carry a MAC"))?,
                None => moved,
            }
        } else {
            let wrapped_key = transit.rewrap(&envelope.transit_key, &envelope.wrapped_key).await?;
            EnvelopeMetadata { wrapped_key, ..envelope.clone() }
        };
        let etag = head.get(http::header::ETAG).cloned().ok_or(CommandError::Object("the object has no ETag"))?;
        let mut headers = crate::request::seal::kept_headers(&head);
        for (name, value) in renewed.to_headers() {
            headers.insert(name, HeaderValue::from_str(&value)?);
        }
        let stored_len = head
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or(CommandError::Object("the object has no length"))?;
        // Multipart objects are copied stream by stream, which keeps the
        // layout (and the `-N` ETag listings rely on) and has no size limit.
        let copied = match envelope.layout {
            StoredLayout::Single(_) => self.path.copier().self_copy_whole(&object, headers, &etag).await,
            StoredLayout::MultipartPending => {
                return Err(CommandError::Object(
                    "the upload was completed but never sealed; run cloudtaser-s3proxy seal first",
                ));
            }
            _ => {
                let layout = self.path.claimed_layout(&object, &envelope, stored_len, Some(&etag)).await?;
                // CreateMultipartUpload copies no tags from the source (a
                // CopyObject does, with the directive): they are carried.
                if head.get("x-amz-tagging-count").is_some_and(|c| c != "0")
                    && let Some(tags) = crate::request::seal::object_tagging(self.upstream, &object).await?
                {
                    headers.insert("x-amz-tagging", HeaderValue::from_str(&tags)?);
                }
                self.path.copier().self_copy_by_parts(&object, headers, &etag, &layout).await
            }
        };
        copied.map_err(CommandError::from_copy("rewrapped"))?;
        Ok(if moving { Outcome::Moved } else { Outcome::Rewrapped })
    }

    /// For a noncurrent version: the Transit key version it uses, when that
    /// is older than the newest. Such a version cannot be rewrapped: S3
    /// versions are immutable, and a copy would become the current version.
    async fn noncurrent_behind(&mut self, version: &ObjectVersion) -> Result<Option<String>, CommandError> {
        let object = request(&self.bucket, Some(&version.key), vec![("versionId".into(), version.version_id.clone())]);
        let (status, head, body) = self.send(Method::HEAD, &object, HeaderMap::new()).await?;
        if !status.is_success() {
            return Err(s3_error("HEAD", status, &body));
        }
        let Some(envelope) = EnvelopeMetadata::from_headers(&head)? else {
            return Ok(None);
        };
        let used = key_version(&envelope.wrapped_key).ok_or(CommandError::Object("the wrapped key has no version"))?;
        let behind = used < self.latest_version(&envelope.transit_key).await?;
        Ok(behind.then(|| format!("{}:v{used}", envelope.transit_key)))
    }
}

pub async fn run(settings: &Settings, rewrap_args: &RewrapArgs) -> Result<(), CommandError> {
    let args = &rewrap_args.walk;
    let (keys, path) = app::tool_request_path(settings).await?;
    let upstream = path.upstream();
    // Single objects are copied whole, multipart ones by parts.
    let needs = [super::probe::Condition::Copy, super::probe::Condition::Complete];
    super::probe::require_conditional_writes(upstream, &args.bucket, &needs, args.assume_quiesced, args.dry_run)
        .await?;
    if let Some(to) = &rewrap_args.to_key
        && keys.routes().get(to).is_none()
    {
        return Err(CommandError::Usage("--to-key must name a Transit key the proxy's settings configure"));
    }
    let mut rewrapper = Rewrapper {
        path: &path,
        upstream,
        keys: &keys,
        to_key: rewrap_args.to_key.clone(),
        bucket: args.bucket.clone(),
        dry_run: args.dry_run,
        latest: HashMap::new(),
    };
    let progress = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    progress
        .set_style(ProgressStyle::with_template("{spinner} {elapsed} {pos} objects  {msg}").expect("static template"));
    // Proxies switch to a new key version within their version check of a
    // rotation; objects they write until then get the older one. Walking
    // the bucket before that would miss them, so the walk starts after it.
    let settle = settings.keys.version_check * 2;
    let newest = keys.transit().key_versions(keys.key_name()).await?;
    let settled_from = newest.latest_created.map(|created| created + settle);
    let unsettled = settled_from.and_then(|t| t.duration_since(SystemTime::now()).ok());
    match unsettled {
        Some(wait) if !args.dry_run => {
            progress.println(format!(
                "waiting {}s until every proxy uses key version v{} (CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS, twice)",
                wait.as_secs() + 1,
                newest.latest_version
            ));
            tokio::time::sleep(wait).await;
        }
        _ => {}
    }
    let walk_started = SystemTime::now();
    let resume = read_state(&args.state_file);
    if let Some(after) = &resume {
        progress.println(format!("resuming after {after}"));
    }
    let mut summary = Summary::default();
    let mut pages = KeyPages::new(upstream, &args.bucket, &args.prefix, resume.clone());
    while let Some(keys_page) = pages.next().await? {
        for key in keys_page {
            match rewrapper.rewrap_one(&key).await {
                Ok(Outcome::Rewrapped) => summary.rewrapped += 1,
                Ok(Outcome::WouldRewrap) => summary.would_rewrap += 1,
                Ok(Outcome::Moved) => {
                    summary.rewrapped += 1;
                    summary.moved += 1;
                }
                Ok(Outcome::WouldMove) => {
                    summary.would_rewrap += 1;
                    summary.moved += 1;
                }
                Ok(Outcome::Current) => summary.current += 1,
                Ok(Outcome::NotEncrypted) => summary.not_encrypted += 1,
                Err(e) => {
                    // On standard error whatever the progress bar: a hidden one (`--quiet`,
                    // no terminal) prints nothing, and no failure may go unreported.
                    progress.suspend(|| eprintln!("failed: {key}: {e}"));
                    summary.failed.push((key.clone(), e));
                }
            }
            // The recorded point never passes a failure, so a rerun retries it.
            if !args.dry_run && summary.failed.is_empty() {
                write_state(&args.state_file, &key)?;
            }
            progress.inc(1);
            progress.set_message(format!(
                "{} rewrapped, {} current, {} failed",
                summary.rewrapped + summary.would_rewrap,
                summary.current,
                summary.failed.len()
            ));
        }
    }
    // Objects written during the walk behind its position: a workload's
    // CopyObject keeps its source's envelope, so a copy of an object the
    // walk had not reached yet lands under the older version where the walk
    // has already been. Each further pass takes what changed since the last
    // one began, until a pass finds nothing to rewrap.
    let mut since = walk_started;
    for _ in 0..MAX_FOLLOW_UP_PASSES {
        if args.dry_run {
            break;
        }
        let pass_started = SystemTime::now();
        // An unknown time counts as changed: a pass too many costs a HEAD.
        let cutoff = since - CLOCK_SKEW;
        let mut changed = Vec::new();
        let mut listing = KeyPages::new(upstream, &args.bucket, &args.prefix, None);
        while let Some(page) = listing.next_objects().await? {
            changed.extend(page.into_iter().filter(|(_, at)| at.is_none_or(|t| t >= cutoff)).map(|(key, _)| key));
        }
        let before = summary.rewrapped;
        for key in changed {
            match rewrapper.rewrap_one(&key).await {
                Ok(Outcome::Rewrapped) => summary.rewrapped += 1,
                Ok(Outcome::Moved) => {
                    summary.rewrapped += 1;
                    summary.moved += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    progress.suspend(|| eprintln!("failed: {key}: {e}"));
                    summary.failed.push((key.clone(), e));
                }
            }
        }
        if summary.rewrapped == before {
            break;
        }
        since = pass_started;
    }
    // Printed after the progress bar, whether or not it is shown.
    let mut behind = Vec::new();
    if rewrap_args.all_versions {
        let mut versions = VersionPages::new(upstream, &args.bucket, &args.prefix);
        while let Some(page) = versions.next().await? {
            for version in page.iter().filter(|v| !v.is_latest) {
                match rewrapper.noncurrent_behind(version).await {
                    Ok(Some(uses)) => {
                        behind.push(format!("noncurrent: {} (version {}) uses {uses}", version.key, version.version_id))
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let what = format!("{} (version {})", version.key, version.version_id);
                        progress.println(format!("failed: {what}: {e}"));
                        summary.failed.push((what, e));
                    }
                }
            }
        }
    }
    // Uploads still open may complete under an older key version after the
    // walk has passed their key; they are left, and reported.
    let listed = open_uploads::list(upstream, &args.bucket, &args.prefix).await?;
    let open: Vec<_> =
        listed.iter().flatten().filter(|u| open_uploads::may_use_an_older_version(u.initiated, settled_from)).collect();
    progress.finish_and_clear();
    for upload in &open {
        println!(
            "open upload: {} (upload id {}) may be written under an older key version",
            upload.key, upload.upload_id
        );
    }
    if listed.is_none() {
        println!(
            "open uploads: unknown (the upstream does not list them); uploads begun before key version v{} was \
             seen by every proxy complete under an older version",
            newest.latest_version
        );
    }
    if rewrap_args.all_versions {
        for line in &behind {
            println!("{line}");
        }
        println!(
            "noncurrent versions under an older key version: {} (not rewritten; they stay readable until \
             min_decryption_version passes them)",
            behind.len()
        );
    }
    let verb = if args.dry_run { "would rewrap" } else { "rewrapped" };
    if summary.moved > 0 || rewrap_args.to_key.is_some() {
        let verb = if args.dry_run { "would move" } else { "moved" };
        println!("{verb} to another Transit key: {} (counted in the line below)", summary.moved);
    }
    println!(
        "{verb}: {}, already current: {}, not encrypted: {}, failed: {}",
        summary.rewrapped + summary.would_rewrap,
        summary.current,
        summary.not_encrypted,
        summary.failed.len()
    );
    // A rotation during the run: everything done is behind again.
    let now_newest = keys.transit().key_versions(keys.key_name()).await?.latest_version;
    if now_newest != newest.latest_version {
        println!(
            "the key was rotated during this run (v{} to v{now_newest}): run rewrap again before raising min_decryption_version",
            newest.latest_version
        );
    }
    let rotated_during_run = usize::from(now_newest != newest.latest_version);
    let left = summary.would_rewrap as usize + summary.failed.len() + open.len() + rotated_during_run;
    match unsettled.filter(|_| args.dry_run) {
        Some(wait) => println!(
            "left under older key versions: {left} so far; proxies may write under older versions for {}s more",
            wait.as_secs() + 1
        ),
        None if listed.is_none() => println!("left under older key versions: {left}, and any open uploads"),
        None => println!("left under older key versions: {left}"),
    }
    if !summary.failed.is_empty() {
        return Err(CommandError::Incomplete { count: summary.failed.len(), verb: "rewrapped" });
    }
    if !open.is_empty() && !args.dry_run {
        return Err(CommandError::OpenUploads { count: open.len() });
    }
    if rotated_during_run > 0 {
        return Err(CommandError::RotatedDuringRun { from: newest.latest_version, to: now_newest });
    }
    Ok(())
}
