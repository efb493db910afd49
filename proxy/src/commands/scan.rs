//! `cloudtaser-s3proxy scan`: evidence that a bucket holds only ciphertext.
//! Every object under the prefix is classified from its metadata as
//! encrypted (single PUT or multipart), plaintext (no envelope), tampered
//! (no envelope, but the body is CloudTaser ciphertext: its first bytes are
//! the format's magic, read with one ranged GET), or unreadable; `--verify`
//! also reads every encrypted object through the proxy's own read path, so a
//! damaged one counts as unreadable. Exit status: 0 when everything is
//! encrypted and readable, 1 when anything is plaintext, tampered or
//! damaged, 2 when the scan itself failed.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::CommandError;
use super::listing::{KeyPages, Lead, VersionPages, body_of, lead_of, s3_error, say};
use crate::app;
use crate::cli::ScanArgs;
use crate::format::{EnvelopeMetadata, StoredLayout};
use crate::keys::key_version;
use crate::request::RequestPath;
use crate::s3::classify::S3Request;
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    EncryptedSingle,
    EncryptedMultipart,
    Plaintext,
    /// Ciphertext without its envelope: stripped or replaced by someone
    /// with the upstream's credentials. Not plaintext, and not readable
    /// until the envelope is put back.
    Tampered,
    Unreadable,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub key: String,
    /// The version, when the scan examined every version (`--all-versions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub class: Class,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub bucket: String,
    pub prefix: String,
    pub verified: bool,
    /// Every version was examined, noncurrent ones included.
    pub all_versions: bool,
    /// Objects, or with `all_versions` object versions, examined.
    pub objects: u64,
    /// Of those, noncurrent versions.
    pub noncurrent: u64,
    pub encrypted_single: u64,
    pub encrypted_multipart: u64,
    pub plaintext: u64,
    /// Ciphertext whose envelope is gone (see [`Class::Tampered`]).
    pub tampered: u64,
    pub unreadable: u64,
    /// Objects per `transit-key:vN`.
    pub key_versions: BTreeMap<String, u64>,
    /// Every object that is plaintext, tampered or unreadable.
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.plaintext == 0 && self.tampered == 0 && self.unreadable == 0
    }

    fn add(&mut self, item: Item, class: Class, version: Option<String>, reason: String) {
        self.objects += 1;
        if !item.is_latest {
            self.noncurrent += 1;
        }
        match class {
            Class::EncryptedSingle => self.encrypted_single += 1,
            Class::EncryptedMultipart => self.encrypted_multipart += 1,
            Class::Plaintext => self.plaintext += 1,
            Class::Tampered => self.tampered += 1,
            Class::Unreadable => self.unreadable += 1,
        }
        if let Some(v) = version {
            *self.key_versions.entry(v).or_default() += 1;
        }
        if class.is_finding() {
            self.findings.push(Finding { key: item.key, version_id: item.version_id, class, reason });
        }
    }
}

/// What is examined: an object's current version, or one named version.
#[derive(Debug, Clone)]
struct Item {
    key: String,
    version_id: Option<String>,
    is_latest: bool,
}

impl Class {
    fn is_finding(self) -> bool {
        matches!(self, Class::Plaintext | Class::Tampered | Class::Unreadable)
    }

    fn label(self) -> &'static str {
        match self {
            Class::EncryptedSingle | Class::EncryptedMultipart => "encrypted",
            Class::Plaintext => "plaintext",
            Class::Tampered => "tampered",
            Class::Unreadable => "unreadable",
        }
    }
}

/// The reason given for an object whose envelope is gone but whose body is ciphertext.
pub const STRIPPED: &str = "the body is CloudTaser ciphertext (it starts with CTS3) but carries no encryption \
                            envelope: its metadata was stripped or replaced, so it may have been tampered with; \
                            put the envelope back from a backup or an earlier version";

/// An object without an envelope: plaintext, unless its first bytes are
/// the format's magic (one ranged read of the version the HEAD examined).
async fn without_envelope(path: &RequestPath, s3: &S3Request, head: &HeaderMap) -> (Class, Option<String>, String) {
    let len = head.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (Some(len), Some(etag)) = (len, head.get(http::header::ETAG)) else {
        return (Class::Unreadable, None, "HEAD gave no length or ETag".to_owned());
    };
    match lead_of(path.upstream(), s3, etag, len).await {
        Ok(Lead::Ciphertext) => (Class::Tampered, None, STRIPPED.to_owned()),
        Ok(Lead::Other) => (Class::Plaintext, None, "no encryption envelope".to_owned()),
        Ok(Lead::Changed) => (Class::Unreadable, None, "changed while it was being examined; scan again".to_owned()),
        Err(e) => (Class::Unreadable, None, format!("reading its first bytes failed: {e}")),
    }
}

/// One object: its class, the key version it uses, and why it is a finding.
async fn classify(path: &RequestPath, bucket: &str, item: &Item, verify: bool) -> (Class, Option<String>, String) {
    let (key, version_id) = (item.key.as_str(), item.version_id.as_deref());
    let query = version_id.map(|v| vec![("versionId".to_owned(), v.to_owned())]).unwrap_or_default();
    let head = S3Request::internal(bucket, Some(key), query);
    let resp = match path.upstream().send_buffered(Method::HEAD, &head, HeaderMap::new(), Bytes::new()).await {
        Ok(resp) => resp,
        Err(e) => return (Class::Unreadable, None, format!("HEAD failed: {e}")),
    };
    let (status, headers, body) = match body_of(resp).await {
        Ok(r) => r,
        Err(e) => return (Class::Unreadable, None, format!("HEAD failed: {e}")),
    };
    if !status.is_success() {
        return (Class::Unreadable, None, s3_error("HEAD", status, &body).to_string());
    }
    let envelope = match EnvelopeMetadata::from_headers(&headers) {
        Ok(Some(e)) => e,
        Ok(None) => return without_envelope(path, &head, &headers).await,
        Err(e) => return (Class::Unreadable, None, e.to_string()),
    };
    let version = key_version(&envelope.wrapped_key).map(|v| format!("{}:v{v}", envelope.transit_key));
    let class = match envelope.layout {
        StoredLayout::Single(_) => Class::EncryptedSingle,
        StoredLayout::Multipart | StoredLayout::MultipartSealed(_) => Class::EncryptedMultipart,
        StoredLayout::MultipartPending => {
            return (
                Class::Unreadable,
                version,
                "completed but never sealed: `cloudtaser-s3proxy seal --key` verifies it, then seals it".to_owned(),
            );
        }
    };
    if verify && let Err(e) = path.verify_object(bucket, key, version_id).await {
        return (Class::Unreadable, version, format!("{}: {e}", e.code()));
    }
    (class, version, String::new())
}

pub async fn run(settings: &Settings, args: &ScanArgs) -> Result<Report, CommandError> {
    // Plaintext reads stay off: a scan must see plaintext as plaintext.
    let (_, path) = app::tool_request_path(settings).await?;
    let progress = if args.quiet || args.json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    progress
        .set_style(ProgressStyle::with_template("{spinner} {elapsed} {pos} objects  {msg}").expect("static template"));
    let mut report = Report {
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        verified: args.verify,
        all_versions: args.all_versions,
        ..Default::default()
    };
    let mut keys = KeyPages::new(path.upstream(), &args.bucket, &args.prefix, None);
    let mut versions = VersionPages::new(path.upstream(), &args.bucket, &args.prefix);
    loop {
        let page: Vec<Item> = if args.all_versions {
            let Some(page) = versions.next().await? else { break };
            page.into_iter()
                .map(|v| Item { key: v.key, version_id: Some(v.version_id), is_latest: v.is_latest })
                .collect()
        } else {
            let Some(page) = keys.next().await? else { break };
            page.into_iter().map(|key| Item { key, version_id: None, is_latest: true }).collect()
        };
        let results: Vec<_> = futures_util::stream::iter(page)
            .map(|item| {
                let path = &path;
                async move {
                    let (class, version, reason) = classify(path, &args.bucket, &item, args.verify).await;
                    (item, class, version, reason)
                }
            })
            .buffered(usize::from(args.concurrency.max(1)))
            .collect()
            .await;
        for (item, class, version, reason) in results {
            if class.is_finding() {
                let which = item.version_id.as_deref().map(|v| format!(" (version {v})")).unwrap_or_default();
                say(&progress, format!("{}: {}{which}: {reason}", class.label(), item.key));
            }
            report.add(item, class, version, reason);
            progress.inc(1);
        }
        progress.set_message(format!(
            "{} plaintext, {} unreadable, {} tampered",
            report.plaintext, report.unreadable, report.tampered
        ));
    }
    progress.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "scanned {} {} in {}/{}: {} encrypted ({} single, {} multipart), {} plaintext, {} unreadable, {} tampered{}",
            report.objects,
            if report.all_versions { "object versions" } else { "objects" },
            report.bucket,
            report.prefix,
            report.encrypted_single + report.encrypted_multipart,
            report.encrypted_single,
            report.encrypted_multipart,
            report.plaintext,
            report.unreadable,
            report.tampered,
            if report.verified { " (every encrypted object decrypted and verified)" } else { "" }
        );
        for (version, n) in &report.key_versions {
            println!("  {version}: {n} objects");
        }
    }
    Ok(report)
}
