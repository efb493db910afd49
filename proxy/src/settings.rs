//! The settings a command runs with, typed and checked: what
//! `config::ProxyConfig` (the flags and environment variables) resolves to,
//! once, at start-up. Grouped by the unit that uses them, so `app` assembles
//! each unit from its own group and nothing reads a flag later.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::keys::{AuthMethod, PoolSettings};
use crate::logging::LogFormat;
use crate::request::policy::{AccessPolicy, PlaintextReadPolicy};
use crate::request::seal::SealMethod;
use crate::s3::metadata::KeepDigests;
use crate::server::ListenerLimits;
use crate::upstream::{Upstream, UpstreamTimeouts};

/// Everything `serve` and the bucket tools (`rewrap`, `scan`, `migrate`,
/// `seal`) need: `ProxyConfig::resolve`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub vault: VaultSettings,
    pub keys: KeySettings,
    pub upstream: UpstreamSettings,
    pub request: RequestSettings,
    pub listeners: ListenerSettings,
}

/// What `decrypt` needs, and no more: Vault and the key service, without
/// an upstream (`ProxyConfig::resolve_vault`).
#[derive(Debug, Clone)]
pub struct VaultAccess {
    pub vault: VaultSettings,
    pub keys: KeySettings,
}

/// The process around any command: `ProxyConfig::process`, which cannot fail.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    pub worker_threads: usize,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing `EnvFilter`; one that does not parse logs at `info`.
    pub filter: String,
    pub format: LogFormat,
}

/// Where Vault is and how the proxy logs in.
#[derive(Clone)]
pub struct VaultSettings {
    /// An `http(s)://` URL with a host.
    pub address: String,
    pub namespace: Option<String>,
    /// A PEM bundle, read when the session is built.
    pub ca_cert: Option<PathBuf>,
    /// Per call.
    pub timeout: Duration,
    pub auth: AuthMethod,
    /// Between background checks that Vault answers (`serve` only).
    pub probe_interval: Duration,
}

/// Names the auth method, never its secrets.
impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSettings")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth.name())
            .field("probe_interval", &self.probe_interval)
            .finish()
    }
}

/// The key service: which Transit keys, the cache of unwrapped keys, and
/// the pool of pre-wrapped ones.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// The Transit mount, as configured (checked: segments of key-name characters).
    pub transit_mount: String,
    /// The key that wraps new data keys. A valid key name for [`Settings`];
    /// for [`VaultAccess`] it may be empty (`decrypt --key-name` names one).
    pub write_key: String,
    /// Every key whose data keys may be unwrapped: the write key first.
    pub readable: Vec<String>,
    /// Which key wraps new objects where, and every key's mount (`None`
    /// for [`VaultAccess`], which only reads: the write key and
    /// `readable` on `transit_mount`).
    pub routes: Option<crate::keys::KeyRoutes>,
    /// Bucket keys for single objects (`None`: a data key per object).
    pub bucket_keys: Option<crate::keys::BucketKeySettings>,
    /// Unwrapped data keys kept for reads (0: no cache).
    pub cache_size: usize,
    pub cache_ttl: Duration,
    /// How often `serve` checks the write key's current version
    /// (`CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS`); `rewrap` waits twice
    /// this after a rotation.
    pub version_check: Duration,
    /// The pool of pre-wrapped data keys `serve` keeps (`None`: off, and
    /// always for [`VaultAccess`]).
    pub pool: Option<PoolSettings>,
}

/// The upstream and the proxy's identity there.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub upstream: Upstream,
    pub credentials: CredentialSettings,
    /// How long a connection and a response head may take.
    pub timeouts: UpstreamTimeouts,
}

#[derive(Debug, Clone)]
pub struct CredentialSettings {
    pub origin: CredentialOrigin,
    /// Expiring credentials are renewed this long before they expire.
    pub refresh_margin: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialOrigin {
    /// A mounted Secret directory, re-read when it changes.
    Directory(PathBuf),
    /// The AWS default chain for the upstream's region.
    DefaultChain,
}

/// What `serve`'s request path does with a client's request.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    pub access: AccessPolicy,
    pub plaintext_reads: PlaintextReadPolicy,
    /// Whether request log lines name object keys.
    pub log_keys: bool,
    /// How long a control request may take to send its body.
    pub body_deadline: Duration,
    /// How long an object body may send nothing before it is cut off.
    pub body_idle_timeout: Duration,
    /// How Complete seals a multipart object: never `Auto` (resolved for the upstream).
    pub seal_method: SealMethod,
    /// Whether format-1 multipart objects (no manifest) are read.
    pub format_1_multipart_reads: bool,
    /// Which name a new object's envelope MAC binds (format 3).
    pub name_binding: crate::format::Binding,
    /// Whether objects of formats 1 and 2 are read.
    pub legacy_reads: bool,
    /// Whether format-2 upload ids (`ctu1.`) are accepted.
    pub legacy_upload_ids: bool,
    /// How long Complete waits for its seal before keep-alive spaces, and their interval.
    pub complete_keepalive: Duration,
    /// The domain under which `<bucket>.<suffix>` hosts address buckets;
    /// empty: virtual-hosted addressing is off.
    pub virtual_host_suffix: String,
    /// Whether plaintext digests in user metadata are stored or removed.
    pub keep_digests: KeepDigests,
}

/// The S3 listener and the health listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    pub s3: Listener,
    pub health: Listener,
}

#[derive(Debug, Clone, Copy)]
pub struct Listener {
    pub address: SocketAddr,
    pub limits: ListenerLimits,
}
