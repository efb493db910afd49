//! `cloudtaser-s3proxy doctor`: checks, in order, everything the proxy
//! depends on with the settings it would run with, and prints one line per
//! check with what it found and, for what fails, the fix (modelled on
//! `linkerd check --proxy`). Run where the proxy runs (`kubectl exec … --
//! cloudtaser-s3proxy doctor`) so it sees the same network, CA bundle,
//! service-account token and credentials.
//!
//! It never prints a secret: no token, no access key id, no data key, no
//! object key (bucket sample results are counts and versions only).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::listing::{KeyPages, body_of};
use super::probe::{Condition, PROBE_PREFIX, unenforced_condition};
use crate::app;
use crate::cli::{DoctorArgs, OutputFormat};
use crate::config::ConfigError;
use crate::format::{EnvelopeMetadata, MAGIC};
use crate::keys::{AuthMethod, Session, VaultError, key_version};
use crate::s3::classify::S3Request;
use crate::settings::{CredentialOrigin, Settings};
use crate::upstream::UpstreamClient;

/// SigV4 refuses a request whose `X-Amz-Date` is this far from the server's clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The probe object's body: constant, non-secret, and says what it is.
const PROBE_BODY: &[u8] = b"cloudtaser-s3proxy doctor write probe; safe to delete\n";

/// What a check concluded. Only `Fail` makes the command exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but something deserves a look (a broader policy than needed).
    Warn,
    /// Not run: not asked for, not permitted, or an earlier check failed.
    Skipped,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Skipped => "skip",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub found: String,
    /// What to do about it; set for `Fail` and `Warn`.
    pub fix: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn push(&mut self, name: &'static str, status: Status, found: impl Into<String>, fix: Option<String>) {
        let check = Check { name, status, found: found.into(), fix };
        self.checks.push(check);
    }

    fn ok(&mut self, name: &'static str, found: impl Into<String>) {
        self.push(name, Status::Ok, found, None);
    }

    fn fail(&mut self, name: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Status::Fail, found, Some(fix.into()));
    }

    fn warn(&mut self, name: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Status::Warn, found, Some(fix.into()));
    }

    fn skip(&mut self, name: &'static str, found: impl Into<String>) {
        self.push(name, Status::Skipped, found, None);
    }

    /// The report as printed: one line a check, the fix indented below it.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => {
                let checks: Vec<_> = self
                    .checks
                    .iter()
                    .map(|c| {
                        json!({
                            "check": c.name,
                            "status": match c.status {
                                Status::Ok => "ok",
                                Status::Warn => "warn",
                                Status::Skipped => "skipped",
                                Status::Fail => "fail",
                            },
                            "found": c.found,
                            "fix": c.fix,
                        })
                    })
                    .collect();
                let summary = json!({ "ok": !self.failed(), "checks": checks });
                format!("{summary:#}\n")
            }
            OutputFormat::Text => {
                let mut out = String::from("cloudtaser-s3proxy doctor\n-------------------------\n");
                for c in &self.checks {
                    out.push_str(&format!("{:<4}  {}: {}\n", c.status.label(), c.name, c.found));
                    if let Some(fix) = &c.fix {
                        out.push_str(&format!("      fix: {fix}\n"));
                    }
                }
                let failed = self.checks.iter().filter(|c| c.status == Status::Fail).count();
                out.push_str(&match failed {
                    0 => "\nStatus check results are ok\n".to_owned(),
                    n => format!("\n{n} check(s) failed\n"),
                });
                out
            }
        }
    }
}

/// Runs every check. `settings` is what the flags and environment resolved
/// to (a failure is the first check's finding); `configured_buckets` are
/// the `CLOUDTASER_S3PROXY_BUCKETS` entries, whose buckets are checked too.
pub async fn run(settings: Result<Settings, ConfigError>, configured_buckets: &[String], args: &DoctorArgs) -> Report {
    let mut report = Report::default();
    let settings = match settings {
        Ok(s) => {
            report.ok("settings", "the flags and environment variables parse and are consistent");
            s
        }
        Err(e) => {
            report.fail("settings", e.to_string(), "correct the setting named above (flag or environment variable)");
            return report;
        }
    };
    let buckets = buckets_to_check(&args.bucket, configured_buckets);
    let vault = check_vault(&mut report, &settings).await;
    let upstream = check_credentials(&mut report, &settings).await;
    let Some(upstream) = upstream else {
        for name in ["buckets", "key versions of stored objects", "write probe", "clock", "conditional writes"] {
            report.skip(name, "not run: the upstream client could not be built");
        }
        return report;
    };
    let (answering, date) = check_buckets(&mut report, &upstream, &buckets).await;
    // Only the buckets that answered: the others' failure is reported once, above.
    let sampled: Vec<String> = args.bucket.iter().filter(|b| answering.contains(b)).cloned().collect();
    match &vault {
        Some(vault) => sample_versions(&mut report, &settings, vault, &upstream, &sampled, args.sample).await,
        None if !args.bucket.is_empty() => report.skip("key versions of stored objects", "not run: Vault failed above"),
        None => {}
    }
    check_write_probe(&mut report, &settings, &upstream, &answering, args.write_probe).await;
    check_clock(&mut report, date, SystemTime::now());
    check_conditional_writes(&mut report, &upstream, &answering, args.write_probe).await;
    report
}

/// The buckets of `--bucket` and of the `CLOUDTASER_S3PROXY_BUCKETS`
/// entries (`bucket` or `bucket/prefix`), each once, in that order.
fn buckets_to_check(given: &[String], configured: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let configured = configured.iter().filter_map(|e| e.trim().split('/').next());
    for bucket in given.iter().map(|b| b.trim()).chain(configured) {
        if !bucket.is_empty() && !out.iter().any(|b| b == bucket) {
            out.push(bucket.to_owned());
        }
    }
    out
}

/// What the Vault checks hand on to the bucket sample.
struct VaultState {
    mount: String,
    /// Per Transit key the proxy may read: `min_decryption_version`, when it could be read.
    min_decryption: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct Health {
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
struct TransitKey {
    data: TransitKeyData,
}

#[derive(Deserialize)]
struct TransitKeyData {
    latest_version: u32,
    #[serde(default)]
    min_decryption_version: u32,
    #[serde(default)]
    min_encryption_version: u32,
}

/// Vault reachable (and its TLS trusted), login, the token's capabilities,
/// and each Transit key.
async fn check_vault(report: &mut Report, settings: &Settings) -> Option<VaultState> {
    let skip_rest = |report: &mut Report, why: &str| {
        for name in ["vault login", "vault policy", "transit keys"] {
            report.skip(name, format!("not run: {why}"));
        }
    };
    let vault = &settings.vault;
    let session = match app::vault_session(vault) {
        Ok(s) => s,
        Err(e) => {
            report.fail("vault reachable", e.to_string(), "point VAULT_CACERT at a readable PEM bundle of Vault's CA");
            skip_rest(report, "Vault could not be reached");
            return None;
        }
    };
    // Unauthenticated: tells an unreachable or untrusted Vault from a refused login.
    let health =
        session.http().call::<Health>(Method::GET, "sys/health?standbyok=true&perfstandbyok=true", None, None).await;
    match health {
        Ok(h) => report.ok(
            "vault reachable",
            format!(
                "{} answered (OpenBao/Vault {}{})",
                vault.address,
                h.version,
                if h.sealed { ", sealed" } else { "" }
            ),
        ),
        Err(e) => {
            let (found, fix) = vault_unreachable(&vault.address, &e);
            report.fail("vault reachable", found, fix);
            skip_rest(report, "Vault could not be reached");
            return None;
        }
    }
    let token = match session.token().await {
        Ok(t) => {
            report.ok("vault login", format!("logged in with the {} method", vault.auth.name()));
            t
        }
        Err(e) => {
            report.fail("vault login", format!("{} login failed: {e}", vault.auth.name()), login_fix(&vault.auth));
            for name in ["vault policy", "transit keys"] {
                report.skip(name, "not run: no Vault token");
            }
            return None;
        }
    };
    let mount = settings.keys.transit_mount.trim_matches('/').to_owned();
    let targets = key_targets(settings, &mount);
    check_capabilities(report, &session, &token, &targets).await;
    let min_decryption = check_transit_keys(report, &session, &token, &targets).await;
    Some(VaultState { mount, min_decryption })
}

fn vault_unreachable(address: &str, e: &VaultError) -> (String, String) {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let fix = if lower.contains("certificate") || lower.contains("tls") || lower.contains("unknownissuer") {
        "Vault's TLS certificate is not trusted: set VAULT_CACERT to the CA bundle that signed it (and check the \
         certificate names the host in VAULT_ADDR)"
            .to_owned()
    } else if let VaultError::Refused { status: 503, .. } = e {
        "Vault is sealed: unseal it (bao operator unseal), or wait for auto-unseal".to_owned()
    } else if let VaultError::Refused { status: 501, .. } = e {
        "Vault is not initialized: bao operator init".to_owned()
    } else {
        "check VAULT_ADDR, and that this pod may reach it (DNS, NetworkPolicy, firewall)".to_owned()
    };
    (format!("{address}: {text}"), fix)
}

fn login_fix(auth: &AuthMethod) -> String {
    match auth {
        AuthMethod::Token(_) => {
            "VAULT_TOKEN (or its file) is not a valid token: issue one with the proxy's policy".into()
        }
        AuthMethod::Kubernetes { mount, role, .. } => format!(
            "check that the Kubernetes auth role `{role}` (mount auth/{mount}) binds this pod's service account and \
             namespace, that its audience matches the projected token's, and that the token reviewer may call \
             TokenReview (system:auth-delegator)"
        ),
        AuthMethod::AppRole { mount, .. } => {
            format!("check the AppRole role_id and secret_id (mount auth/{mount}); a secret_id may have expired")
        }
    }
}

/// A configured Transit key: its mount, its name, and whether it wraps new
/// data keys (the default, a rule's, an allowed id's) or is only read.
struct KeyTarget {
    mount: String,
    name: String,
    write: bool,
}

/// Every configured key on its own mount (the routing rules may name
/// several mounts).
fn key_targets(settings: &Settings, mount: &str) -> Vec<KeyTarget> {
    match &settings.keys.routes {
        Some(routes) => {
            let writers: Vec<&str> = routes.writers().map(|k| k.name.as_str()).collect();
            routes
                .readable()
                .iter()
                .filter_map(|n| routes.get(n))
                .map(|k| KeyTarget {
                    mount: k.mount.clone(),
                    name: k.name.clone(),
                    write: writers.contains(&k.name.as_str()),
                })
                .collect()
        }
        None => settings
            .keys
            .readable
            .iter()
            .enumerate()
            .map(|(i, k)| KeyTarget { mount: mount.to_owned(), name: k.clone(), write: i == 0 })
            .collect(),
    }
}

/// The Transit paths the proxy calls for `key`: the write key needs all
/// three, the keys it only reads need `decrypt`.
fn needed_paths(mount: &str, key: &str, write: bool) -> Vec<String> {
    let mut paths = vec![format!("{mount}/decrypt/{key}")];
    if write {
        paths.push(format!("{mount}/encrypt/{key}"));
        paths.push(format!("{mount}/datakey/plaintext/{key}"));
    }
    paths
}

/// Whether `caps` (from `sys/capabilities-self`) allow the POST the proxy
/// sends to a Transit path: `update` (or `create` for `encrypt`, which
/// Transit accepts either way), or a root token.
fn allows(path: &str, caps: &[String]) -> bool {
    caps.iter().any(|c| c == "update" || c == "root" || (c == "create" && path.contains("/encrypt/")))
}

async fn check_capabilities(report: &mut Report, session: &Session, token: &str, keys: &[KeyTarget]) {
    const NAME: &str = "vault policy";
    let paths: Vec<String> = keys.iter().flat_map(|k| needed_paths(&k.mount, &k.name, k.write)).collect();
    let answer = session
        .http()
        .call::<serde_json::Value>(Method::POST, "sys/capabilities-self", Some(token), Some(json!({ "paths": paths })))
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            report.fail(
                NAME,
                format!("sys/capabilities-self: {e}"),
                "the token's policies must allow `update` on sys/capabilities-self (Vault's default policy does)",
            );
            return;
        }
    };
    // Vault answers each path under `data` and, for older clients, at the top level too.
    let data = answer.get("data").filter(|d| d.is_object()).unwrap_or(&answer);
    let caps_of = |path: &str| -> Vec<String> {
        data.get(path)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let missing: Vec<&String> = paths.iter().filter(|p| !allows(p, &caps_of(p))).collect();
    if !missing.is_empty() {
        let list = missing.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
        let hcl = missing
            .iter()
            .map(|p| format!("path \"{p}\" {{ capabilities = [\"update\"] }}"))
            .collect::<Vec<_>>()
            .join(" ");
        report.fail(NAME, format!("the token may not call {list}"), format!("add to the proxy's policy: {hcl}"));
        return;
    }
    // `create` on an encrypt path lets Transit's encrypt recreate a deleted
    // key of the same name: a crypto-shredded tenant key would come back
    // empty on the next write, the proxy could not tell it was ever
    // erased, and a bucket-key window wrapped by the old key would go on
    // deriving keys nobody can unwrap (docs/SECURITY.md, "Bucket keys").
    let upserts: Vec<&str> = paths
        .iter()
        .filter(|p| p.contains("/encrypt/") && caps_of(p).iter().any(|c| c == "create"))
        .map(String::as_str)
        .collect();
    if !upserts.is_empty() {
        let hcl = upserts
            .iter()
            .map(|p| format!("path \"{p}\" {{ capabilities = [\"update\"] }}"))
            .collect::<Vec<_>>()
            .join(" ");
        report.fail(
            NAME,
            format!(
                "the token may create Transit keys through {}: an erased (deleted) key would be recreated by the next write, undoing the erasure unnoticed",
                upserts.join(", ")
            ),
            format!("grant `update` without `create` on those paths: {hcl}"),
        );
        return;
    }
    let broad = paths.iter().any(|p| caps_of(p).iter().any(|c| c == "root" || c == "sudo"));
    if broad {
        report.warn(
            NAME,
            format!("the token may call all {} Transit paths the proxy needs, and more (root or sudo)", paths.len()),
            "give the proxy a token whose policy grants only `update` on the paths above",
        );
    } else {
        report.ok(
            NAME,
            format!("the token may call the {} Transit paths the proxy needs ({})", paths.len(), paths.join(", ")),
        );
    }
}

/// Each key's versions: `GET <mount>/keys/<key>`, which the proxy itself
/// does not need, so a refusal skips the check rather than failing it.
async fn check_transit_keys(
    report: &mut Report,
    session: &Session,
    token: &str,
    keys: &[KeyTarget],
) -> BTreeMap<String, u32> {
    const NAME: &str = "transit keys";
    let mut min_decryption = BTreeMap::new();
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for KeyTarget { mount, name: key, .. } in keys {
        let path = format!("{mount}/keys/{key}");
        match session.http().call::<TransitKey>(Method::GET, &path, Some(token), None).await {
            Ok(k) => {
                let d = k.data;
                found.push(format!(
                    "{key}: latest v{}, min_decryption_version {}, min_encryption_version {}",
                    d.latest_version, d.min_decryption_version, d.min_encryption_version
                ));
                min_decryption.insert(key.clone(), d.min_decryption_version);
            }
            Err(VaultError::Refused { status: 404, .. }) => {
                report.fail(
                    NAME,
                    format!("the Transit key {path} does not exist"),
                    format!(
                        "create it (bao write -f {path} type=aes256-gcm96), or correct CLOUDTASER_S3PROXY_TRANSIT_KEY / \
                         _TRANSIT_READ_KEYS / _TRANSIT_MOUNT"
                    ),
                );
                return min_decryption;
            }
            Err(VaultError::Refused { status: 403, .. }) => skipped.push(path),
            Err(e) => {
                report.fail(NAME, format!("{path}: {e}"), "check that Vault is healthy and answers on VAULT_ADDR");
                return min_decryption;
            }
        }
    }
    if !found.is_empty() {
        report.ok(NAME, found.join("; "));
    }
    if !skipped.is_empty() {
        report.skip(
            NAME,
            format!(
                "not checked: the token may not read {} (the proxy does not need to; grant `read` to check)",
                skipped.join(", ")
            ),
        );
    }
    min_decryption
}

/// The upstream credentials resolve (and when they expire); builds the
/// upstream client the remaining checks use.
async fn check_credentials(report: &mut Report, settings: &Settings) -> Option<UpstreamClient> {
    const NAME: &str = "upstream credentials";
    let upstream = &settings.upstream;
    let source = app::credential_source(upstream).await;
    match source.current().await {
        // The provider's name and the expiry only: never the key id.
        Ok(c) => {
            let expiry = match c.expiry() {
                Some(at) => format!("expire at {}", timestamp(at)),
                None => "do not expire".to_owned(),
            };
            let from = match &upstream.credentials.origin {
                CredentialOrigin::Directory(dir) => format!("the directory {}", dir.display()),
                CredentialOrigin::DefaultChain => "the AWS default chain".to_owned(),
            };
            let found = format!("resolved from {from}; they {expiry}");
            match c.expiry() {
                Some(at) if at <= SystemTime::now() + upstream.credentials.refresh_margin => report.warn(
                    NAME,
                    found,
                    "they expire within the refresh margin: check that their source renews them",
                ),
                _ => report.ok(NAME, found),
            }
        }
        Err(e) => report.fail(
            NAME,
            e.to_string(),
            "provide the proxy's upstream credentials: CLOUDTASER_S3PROXY_CREDENTIALS_DIR, AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or the pod's IRSA / Pod Identity / workload identity",
        ),
    }
    match app::upstream_client_with(upstream, source) {
        Ok(client) => Some(client),
        Err(e) => {
            report.fail("upstream client", e.to_string(), "check CLOUDTASER_S3PROXY_S3_ENDPOINT");
            None
        }
    }
}

fn timestamp(at: SystemTime) -> String {
    aws_smithy_types::DateTime::from(at)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "an unprintable time".to_owned())
}

/// HEAD on each bucket; returns the buckets that answered, and the
/// upstream's `Date` from the first answer.
async fn check_buckets(
    report: &mut Report,
    upstream: &UpstreamClient,
    buckets: &[String],
) -> (Vec<String>, Option<String>) {
    const NAME: &str = "buckets";
    let mut answering = Vec::new();
    if buckets.is_empty() {
        report.skip(NAME, "no bucket given (--bucket, or CLOUDTASER_S3PROXY_BUCKETS)");
        return (answering, None);
    }
    let mut date = None;
    for bucket in buckets {
        let s3 = S3Request::internal(bucket, None, vec![]);
        let resp = match upstream.send_buffered(Method::HEAD, &s3, HeaderMap::new(), Bytes::new()).await {
            Ok(r) => r,
            Err(e) => {
                report.fail(
                    NAME,
                    format!("{bucket}: {e}"),
                    "check CLOUDTASER_S3PROXY_S3_ENDPOINT and that this pod may reach it",
                );
                continue;
            }
        };
        let headers = resp.headers();
        if date.is_none() {
            date = headers.get(http::header::DATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        }
        let region = headers.get("x-amz-bucket-region").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        match resp.status() {
            s if s.is_success() => {
                report.ok(NAME, format!("{bucket} answers HEAD ({s})"));
                answering.push(bucket.clone());
            }
            StatusCode::NOT_FOUND => report.fail(
                NAME,
                format!("{bucket} does not exist (404)"),
                "create the bucket upstream, or correct --bucket / CLOUDTASER_S3PROXY_BUCKETS",
            ),
            StatusCode::FORBIDDEN => report.fail(
                NAME,
                format!("{bucket}: the upstream refused the proxy's credentials (403)"),
                "check the proxy's upstream credentials (a wrong or revoked key, or a clock far off), and that their \
                 policy allows s3:ListBucket on the bucket",
            ),
            StatusCode::BAD_REQUEST | StatusCode::MOVED_PERMANENTLY if !region.is_empty() => report.fail(
                NAME,
                format!("{bucket} is in region {region} ({})", resp.status()),
                format!("set CLOUDTASER_S3PROXY_S3_REGION={region}"),
            ),
            s => report.fail(NAME, format!("{bucket} answered HEAD with {s}"), "check the upstream and the bucket"),
        }
    }
    (answering, date)
}

/// A sample of each `--bucket`'s objects: every data key's Transit
/// version must still be decryptable (at or above `min_decryption_version`).
async fn sample_versions(
    report: &mut Report,
    settings: &Settings,
    vault: &VaultState,
    upstream: &UpstreamClient,
    buckets: &[String],
    sample: u32,
) {
    const NAME: &str = "key versions of stored objects";
    for bucket in buckets {
        match sample_bucket(upstream, bucket, sample as usize).await {
            Err(e) => report.fail(NAME, format!("{bucket}: {e}"), "check the bucket answers ListObjectsV2 and HEAD"),
            Ok(versions) => {
                let (found, fix) = judge_versions(bucket, &versions, &vault.min_decryption, &settings.keys.readable);
                match fix {
                    Some(fix) => report.fail(NAME, found, fix.replace("<mount>", &vault.mount)),
                    None => report.ok(NAME, found),
                }
            }
        }
    }
}

/// What one sampled object says about its data key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sampled {
    /// Wrapped under `key`, version `version`.
    Encrypted {
        key: String,
        version: u32,
    },
    Plaintext,
    /// An envelope that does not parse.
    Malformed,
}

async fn sample_bucket(
    upstream: &UpstreamClient,
    bucket: &str,
    limit: usize,
) -> Result<Vec<Sampled>, super::CommandError> {
    let mut pages = KeyPages::new(upstream, bucket, "", None);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(keys) = pages.next().await? else { break };
        for key in keys.into_iter().filter(|k| !k.starts_with(PROBE_PREFIX)) {
            if out.len() >= limit {
                break;
            }
            let s3 = S3Request::internal(bucket, Some(&key), vec![]);
            let resp = upstream.send_buffered(Method::HEAD, &s3, HeaderMap::new(), Bytes::new()).await?;
            if !resp.status().is_success() {
                // Deleted since the listing: not part of the sample.
                continue;
            }
            out.push(match EnvelopeMetadata::from_headers(resp.headers()) {
                Ok(Some(m)) => match key_version(&m.wrapped_key) {
                    Some(version) => Sampled::Encrypted { key: m.transit_key, version },
                    None => Sampled::Malformed,
                },
                Ok(None) => Sampled::Plaintext,
                Err(_) => Sampled::Malformed,
            });
        }
    }
    Ok(out)
}

/// The finding for a bucket's sample, and the fix when some objects could
/// not be read.
fn judge_versions(
    bucket: &str,
    sample: &[Sampled],
    min_decryption: &BTreeMap<String, u32>,
    readable: &[String],
) -> (String, Option<String>) {
    let mut versions: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    let (mut plaintext, mut malformed) = (0, 0);
    for s in sample {
        match s {
            Sampled::Encrypted { key, version } => *versions.entry((key.as_str(), *version)).or_default() += 1,
            Sampled::Plaintext => plaintext += 1,
            Sampled::Malformed => malformed += 1,
        }
    }
    let summary = versions.iter().map(|((k, v), n)| format!("{k} v{v}: {n}")).collect::<Vec<_>>().join(", ");
    let mut found = format!("{bucket}: {} object(s) sampled", sample.len());
    if !summary.is_empty() {
        found.push_str(&format!(" ({summary})"));
    }
    if plaintext > 0 {
        found.push_str(&format!(", {plaintext} without an envelope (plaintext; see `scan`)"));
    }
    let unknown: Vec<&str> =
        versions.keys().map(|(k, _)| *k).filter(|k| !readable.iter().any(|r| r == k)).collect::<Vec<_>>();
    if let Some(key) = unknown.first() {
        return (
            format!("{found}; objects under the Transit key {key}, which the proxy is not configured to read"),
            Some(format!("add {key} to CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS")),
        );
    }
    let too_old: Vec<(&str, u32, u32)> = versions
        .keys()
        .filter_map(|(k, v)| min_decryption.get(*k).filter(|min| v < min).map(|min| (*k, *v, *min)))
        .collect();
    if let Some((key, version, min)) = too_old.first() {
        return (
            format!("{found}; data keys under {key} v{version}, below its min_decryption_version {min}: unreadable"),
            Some(format!(
                "lower it (bao write <mount>/keys/{key}/config min_decryption_version={version}), then run \
                 `cloudtaser-s3proxy rewrap --bucket {bucket}` before raising it again"
            )),
        );
    }
    if malformed > 0 {
        return (
            format!("{found}; {malformed} with a malformed envelope"),
            Some(format!("run `cloudtaser-s3proxy scan --bucket {bucket}` to list them")),
        );
    }
    (found, None)
}

/// With `--write-probe`: an object written through the proxy's own request
/// path is ciphertext at rest, reads back, and is deleted.
async fn check_write_probe(
    report: &mut Report,
    settings: &Settings,
    upstream: &UpstreamClient,
    buckets: &[String],
    enabled: bool,
) {
    const NAME: &str = "write probe";
    if !enabled {
        report.skip(NAME, "not run (--write-probe writes, reads and deletes one small object)");
        return;
    }
    if buckets.is_empty() {
        report.skip(NAME, "no bucket that answers HEAD to write to (--bucket)");
        return;
    }
    let path = match app::tool_request_path(settings).await {
        Ok((_, path)) => path,
        Err(e) => {
            report.fail(NAME, e.to_string(), "fix the checks above first");
            return;
        }
    };
    for bucket in buckets {
        let mut salt = [0u8; 8];
        let key = match aws_lc_rs::rand::fill(&mut salt) {
            Ok(()) => format!("{PROBE_PREFIX}doctor-{}", hex::encode(salt)),
            Err(_) => {
                report.fail(NAME, "no randomness for the probe's key", "check the system's random source");
                return;
            }
        };
        match probe_round_trip(&path, upstream, bucket, &key).await {
            Ok(()) => report.ok(
                NAME,
                format!("{bucket}: written encrypted (CTS3 with its envelope at rest), read back intact, deleted"),
            ),
            Err(e) => report.fail(NAME, format!("{bucket}: {e}"), e.fix()),
        }
    }
}

/// Why the write probe failed, with its fix.
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("{step} answered {status}")]
    Refused { step: &'static str, status: StatusCode },
    #[error("the stored object {0}")]
    NotCiphertext(&'static str),
    #[error("the object read back is not the one written")]
    Differs,
    #[error(transparent)]
    Command(#[from] super::CommandError),
}

impl ProbeFailure {
    fn fix(&self) -> String {
        match self {
            ProbeFailure::Refused { status, .. } if *status == StatusCode::FORBIDDEN => {
                "the proxy's upstream credentials need s3:PutObject, s3:GetObject and s3:DeleteObject on the bucket"
                    .into()
            }
            ProbeFailure::Refused { .. } => "see the proxy's log for the request's error".into(),
            ProbeFailure::NotCiphertext(_) | ProbeFailure::Differs => {
                "the upstream changes what it stores (a transforming gateway?): do not use it with the proxy".into()
            }
            ProbeFailure::Command(_) => "check the upstream answers".into(),
        }
    }
}

async fn probe_round_trip(
    path: &crate::request::RequestPath,
    upstream: &UpstreamClient,
    bucket: &str,
    key: &str,
) -> Result<(), ProbeFailure> {
    let uri = format!("/{bucket}/{}", crate::upstream::forward::encode_key(key));
    let request = |method: Method, body: &'static [u8]| {
        Request::builder()
            .method(method)
            .uri(uri.as_str())
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(http_body_util::Full::new(Bytes::from_static(body)))
    };
    let build = |r: Result<_, http::Error>| {
        r.map_err(|_| ProbeFailure::Command(super::CommandError::Object("the probe request could not be built")))
    };
    let put = path.handle(build(request(Method::PUT, PROBE_BODY))?).await;
    if !put.status().is_success() {
        return Err(ProbeFailure::Refused { step: "PUT through the proxy", status: put.status() });
    }
    let result = probe_read(path, upstream, bucket, key, build(request(Method::GET, b""))?).await;
    let delete = path.handle(build(request(Method::DELETE, b""))?).await;
    result?;
    if !delete.status().is_success() {
        return Err(ProbeFailure::Refused { step: "DELETE through the proxy", status: delete.status() });
    }
    Ok(())
}

async fn probe_read(
    path: &crate::request::RequestPath,
    upstream: &UpstreamClient,
    bucket: &str,
    key: &str,
    get: Request<http_body_util::Full<Bytes>>,
) -> Result<(), ProbeFailure> {
    // What the storage holds, read with the proxy's upstream credentials.
    let s3 = S3Request::internal(bucket, Some(key), vec![]);
    let (status, headers, stored) = body_of(
        upstream
            .send_buffered(Method::GET, &s3, HeaderMap::new(), Bytes::new())
            .await
            .map_err(super::CommandError::from)?,
    )
    .await?;
    if !status.is_success() {
        return Err(ProbeFailure::Refused { step: "GET of the stored bytes", status });
    }
    if !stored.starts_with(&MAGIC) {
        return Err(ProbeFailure::NotCiphertext("does not start with CTS3"));
    }
    if !matches!(EnvelopeMetadata::from_headers(&headers), Ok(Some(_))) {
        return Err(ProbeFailure::NotCiphertext("carries no encryption envelope"));
    }
    if stored.windows(PROBE_BODY.len()).any(|w| w == PROBE_BODY) {
        return Err(ProbeFailure::NotCiphertext("contains the plaintext"));
    }
    let back = path.handle(get).await;
    let status = back.status();
    let (_, _, body) = body_of(back).await?;
    if !status.is_success() {
        return Err(ProbeFailure::Refused { step: "GET through the proxy", status });
    }
    if body != PROBE_BODY {
        return Err(ProbeFailure::Differs);
    }
    Ok(())
}

/// The local clock against the upstream's `Date`: SigV4 refuses requests
/// more than 15 minutes off.
fn check_clock(report: &mut Report, upstream_date: Option<String>, now: SystemTime) {
    const NAME: &str = "clock";
    let Some(date) = upstream_date else {
        report.skip(NAME, "not checked: no upstream answer with a Date header (give --bucket)");
        return;
    };
    let Some(theirs) = parse_http_date(&date) else {
        report.skip(NAME, format!("not checked: the upstream's Date `{date}` does not parse"));
        return;
    };
    let (skew, ahead) = match now.duration_since(theirs) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let found = format!(
        "this clock is {}s {} the upstream's (SigV4 allows {} min)",
        skew.as_secs(),
        if ahead { "ahead of" } else { "behind" },
        MAX_SKEW.as_secs() / 60
    );
    if skew > MAX_SKEW {
        report.fail(NAME, found, "synchronise this node's clock (NTP / chrony)");
    } else {
        report.ok(NAME, found);
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP servers send.
fn parse_http_date(date: &str) -> Option<SystemTime> {
    let mut parts = date.split_whitespace().skip(1);
    let day: u64 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u64 + 1;
    let year: u64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
}

/// With `--write-probe`: whether the upstream refuses writes whose
/// condition fails (`commands::probe`). `rewrap`, `seal` and `migrate`
/// rely on PutObject's; the copies' forms depend on the seal method.
async fn check_conditional_writes(report: &mut Report, upstream: &UpstreamClient, buckets: &[String], enabled: bool) {
    const NAME: &str = "conditional writes";
    if !enabled {
        report.skip(NAME, "not run (needs --write-probe: the probe writes and deletes an object)");
        return;
    }
    if buckets.is_empty() {
        report.skip(NAME, "no bucket that answers HEAD to probe (--bucket)");
    }
    for bucket in buckets {
        let mut unenforced = Vec::new();
        let mut probe_failed = false;
        for needs in [Condition::Put, Condition::Copy, Condition::Complete] {
            match unenforced_condition(upstream, bucket, &[needs]).await {
                Ok(None) => {}
                Ok(Some(check)) => {
                    unenforced.push(check);
                    if needs == Condition::Put {
                        break;
                    }
                }
                Err(e) => {
                    report.fail(NAME, format!("{bucket}: the probe failed: {e}"), "check the write probe above");
                    probe_failed = true;
                    break;
                }
            }
        }
        match unenforced.first() {
            _ if probe_failed => {}
            None => report.ok(NAME, format!("{bucket}: If-Match and If-None-Match are enforced on every form probed")),
            Some(&"PutObject with If-Match") | Some(&"PutObject with If-None-Match: *") => report.fail(
                NAME,
                format!("{bucket}: the upstream carried out {} instead of refusing it with 412", unenforced[0]),
                "rewrap, seal and migrate could revert concurrent writes here: run them only with every writer \
                 stopped (--assume-quiesced), or use an upstream that enforces conditional writes",
            ),
            Some(_) => report.warn(
                NAME,
                format!("{bucket}: PutObject's conditions are enforced; {} is not", unenforced.join(" and ")),
                "rewrap and seal use that form for some objects and refuse to run without --assume-quiesced",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_709_164_800);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn a_clock_beyond_sigv4_skew_fails() {
        let upstream = "Sun, 06 Nov 1994 08:49:37 GMT".to_owned();
        let theirs = parse_http_date(&upstream).unwrap();
        let mut report = Report::default();
        check_clock(&mut report, Some(upstream.clone()), theirs + Duration::from_secs(16 * 60));
        check_clock(&mut report, Some(upstream.clone()), theirs - Duration::from_secs(14 * 60));
        check_clock(&mut report, None, theirs);
        let statuses: Vec<Status> = report.checks.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [Status::Fail, Status::Ok, Status::Skipped]);
        assert!(report.checks[0].found.contains("960s ahead"), "{}", report.checks[0].found);
        assert!(report.checks[1].found.contains("840s behind"), "{}", report.checks[1].found);
        assert!(report.failed());
    }

    #[test]
    fn buckets_come_from_flags_and_the_bucket_setting_once() {
        let given = vec!["a".to_owned(), "b".to_owned()];
        let configured = vec!["b/prefix/".to_owned(), "c".to_owned(), " ".to_owned()];
        assert_eq!(buckets_to_check(&given, &configured), ["a", "b", "c"]);
    }

    #[test]
    fn the_write_key_needs_three_paths_a_read_key_one() {
        assert_eq!(needed_paths("transit", "k", false), ["transit/decrypt/k"]);
        assert_eq!(
            needed_paths("transit", "k", true),
            ["transit/decrypt/k", "transit/encrypt/k", "transit/datakey/plaintext/k"]
        );
        assert!(allows("transit/encrypt/k", &["create".into()]));
        assert!(!allows("transit/datakey/plaintext/k", &["create".into(), "read".into()]));
        assert!(allows("transit/datakey/plaintext/k", &["root".into()]));
        assert!(!allows("transit/decrypt/k", &["deny".into()]));
    }

    #[test]
    fn versions_below_min_decryption_fail_with_the_fix() {
        let readable = vec!["k".to_owned()];
        let min: BTreeMap<String, u32> = [("k".to_owned(), 2)].into();
        let sample = vec![
            Sampled::Encrypted { key: "k".into(), version: 1 },
            Sampled::Encrypted { key: "k".into(), version: 2 },
            Sampled::Plaintext,
        ];
        let (found, fix) = judge_versions("b", &sample, &min, &readable);
        assert!(found.contains("k v1, below its min_decryption_version 2"), "{found}");
        assert!(fix.unwrap().contains("min_decryption_version=1"));
        let (found, fix) = judge_versions("b", &sample[1..], &min, &readable);
        assert_eq!(fix, None, "{found}");
        assert!(found.contains("1 without an envelope"), "{found}");
        let other = vec![Sampled::Encrypted { key: "old".into(), version: 1 }];
        let (_, fix) = judge_versions("b", &other, &min, &readable);
        assert!(fix.unwrap().contains("TRANSIT_READ_KEYS"));
    }

    #[test]
    fn the_report_renders_as_text_and_json() {
        let mut report = Report::default();
        report.ok("settings", "fine");
        report.fail("buckets", "b does not exist (404)", "create it");
        let text = report.render(OutputFormat::Text);
        assert!(text.contains("ok    settings: fine\n"), "{text}");
        assert!(text.contains("FAIL  buckets: b does not exist (404)\n      fix: create it\n"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.render(OutputFormat::Json)).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "fail");
        assert_eq!(json["checks"][1]["fix"], "create it");
    }
}
