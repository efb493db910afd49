//! The proxy's settings as the command line and environment give them:
//! each is an environment variable and a flag. [`ProxyConfig::resolve`]
//! checks them all once, at start-up, so a bad one stops the process with
//! one clear line naming it, and turns them into typed
//! [`Settings`](crate::settings::Settings) grouped by the unit that uses
//! them. Nothing reads a `ProxyConfig` after that. The command line around
//! them (subcommands and their arguments) is `cli`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use crate::config_error::ConfigError;
pub(crate) use crate::config_error::invalid;
use crate::keys::{AuthMethod, PoolSettings, Secret};
pub use crate::logging::LogFormat;
use crate::request::policy::{AccessPolicy, PlaintextReadPolicy};
use crate::request::seal::SealMethod;
use crate::s3::metadata::KeepDigests;
use crate::server::{HEALTH_HEADER_READ_TIMEOUT, ListenerLimits, S3_HEADER_READ_TIMEOUT};
use crate::settings::{
    CredentialOrigin, CredentialSettings, KeySettings, Listener, ListenerSettings, LogSettings, ProcessSettings,
    RequestSettings, Settings, UpstreamSettings, VaultAccess, VaultSettings,
};
pub use crate::stream::framing::UploadIntegrity;
use crate::upstream::{Upstream, UpstreamTimeouts};
use zeroize::Zeroizing;

/// `CLOUDTASER_S3PROXY_FORMAT1_MULTIPART`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format1Multipart {
    Read,
    Refuse,
}

/// `CLOUDTASER_S3PROXY_LEGACY_FORMATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LegacyFormats {
    Read,
    Refuse,
}

/// An on/off setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LegacyUploadIds {
    Accept,
    Refuse,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyConfig {
    /// Address the S3 API listens on.
    #[arg(long, env = "CLOUDTASER_S3PROXY_LISTEN", default_value = "127.0.0.1:8190")]
    pub listen: SocketAddr,

    /// Address serving /healthz and /readyz.
    #[arg(long, env = "CLOUDTASER_S3PROXY_HEALTH_LISTEN", default_value = "127.0.0.1:8191")]
    pub health_listen: SocketAddr,

    /// Upstream S3 endpoint; AWS S3 for the region when unset.
    #[arg(long, env = "CLOUDTASER_S3PROXY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Signing region; `auto` for GCS.
    #[arg(long, env = "CLOUDTASER_S3PROXY_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Which S3 dialect the upstream speaks; `auto` recognises GCS by its host.
    #[arg(long, env = "CLOUDTASER_S3PROXY_S3_FLAVOR", value_enum, default_value = "auto")]
    pub s3_flavor: S3Flavor,

    /// Mounted files holding the proxy's static upstream keys (a Secret
    /// volume with `access-key-id`, `secret-access-key` and optionally
    /// `session-token`). Re-read when they change; takes precedence over the
    /// AWS default chain.
    #[arg(long, env = "CLOUDTASER_S3PROXY_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,

    /// Renew expiring upstream credentials (IRSA, Pod Identity) this many
    /// seconds before they expire.
    #[arg(long, env = "CLOUDTASER_S3PROXY_CREDENTIALS_REFRESH_SECS", default_value_t = 300)]
    pub credentials_refresh_secs: u64,

    /// How the ciphertext's integrity is proven to the upstream.
    #[arg(long, env = "CLOUDTASER_S3PROXY_UPLOAD_INTEGRITY", value_enum, default_value = "auto")]
    pub upload_integrity: UploadIntegrity,

    /// Vault or OpenBao address (required to serve).
    #[arg(long = "vault-addr", env = "VAULT_ADDR", default_value = "")]
    pub vault_addr: String,

    /// How the proxy logs in to Vault.
    #[arg(long, env = "VAULT_AUTH_METHOD", value_enum, default_value = "token")]
    pub vault_auth_method: VaultAuthMethod,

    #[arg(long = "vault-token", env = "VAULT_TOKEN", hide_env_values = true)]
    pub vault_token: Option<String>,

    /// A file holding the Vault token, re-read whenever the token is refused.
    #[arg(long, env = "VAULT_TOKEN_FILE")]
    pub vault_token_file: Option<PathBuf>,

    /// Mount path of the auth method (default: `kubernetes` or `approle`).
    #[arg(long, env = "VAULT_AUTH_MOUNT")]
    pub vault_auth_mount: Option<String>,

    /// Vault role for Kubernetes auth.
    #[arg(long, env = "VAULT_ROLE")]
    pub vault_role: Option<String>,

    /// The service account token presented to Kubernetes auth.
    #[arg(long, env = "VAULT_K8S_TOKEN_PATH", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub vault_k8s_token_path: PathBuf,

    /// AppRole role id.
    #[arg(long, env = "VAULT_ROLE_ID")]
    pub vault_role_id: Option<String>,

    /// AppRole secret id.
    #[arg(long, env = "VAULT_SECRET_ID", hide_env_values = true)]
    pub vault_secret_id: Option<String>,

    /// A file holding the AppRole secret id.
    #[arg(long, env = "VAULT_SECRET_ID_FILE")]
    pub vault_secret_id_file: Option<PathBuf>,

    /// PEM bundle trusted for Vault's TLS certificate.
    #[arg(long = "vault-cacert", env = "VAULT_CACERT")]
    pub vault_cacert: Option<PathBuf>,

    #[arg(long = "vault-namespace", env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,

    #[arg(long, env = "CLOUDTASER_S3PROXY_TRANSIT_MOUNT", default_value = "transit")]
    pub transit_mount: String,

    /// Transit key that wraps new data keys (required to serve).
    #[arg(long, env = "CLOUDTASER_S3PROXY_TRANSIT_KEY", default_value = "")]
    pub transit_key: String,

    /// Per-call timeout for Vault requests, in seconds.
    #[arg(long, env = "CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS", default_value_t = 10)]
    pub vault_timeout_secs: u64,

    /// Threads serving requests. One is right for most sidecars: on 2 cores it
    /// moved 1.2 GB/s of PUTs and 1.7 GB/s of GETs per stream, with 20% less
    /// CPU per GB than two. More help many concurrent large transfers.
    #[arg(long, env = "CLOUDTASER_S3PROXY_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: u16,

    /// Unwrapped data keys kept in memory for reads (0 disables the cache).
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_CACHE_SIZE", default_value_t = 16384)]
    pub key_cache_size: usize,

    /// Seconds an unwrapped data key stays cached.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_CACHE_TTL_SECS", default_value_t = 300)]
    pub key_cache_ttl_secs: u64,

    /// Pre-wrapped single-use data keys held for new objects, so a PUT does
    /// not wait on Vault (0: a Transit call per object). Each key is about
    /// 150 bytes of memory.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_POOL_SIZE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub key_pool_size: u32,

    /// Refill the pool once fewer keys than this remain (default: half the size).
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_POOL_LOW_WATER")]
    pub key_pool_low_water: Option<u32>,

    /// Seconds a pooled key may wait to be used; older ones are wiped and
    /// replaced. This bounds how long new objects keep the previous Transit
    /// key version after a rotation.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_POOL_MAX_AGE_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub key_pool_max_age_secs: u64,

    /// Seconds between checks of the Transit key's current version (the
    /// pool wraps one key and reads the version Transit used). After a
    /// rotation, no new object gets a key of the older version once this
    /// has passed: wait this long before `rewrap` (docs/OPERATIONS.md).
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub key_version_check_secs: u64,

    /// Where objects written without the proxy may be read as plaintext:
    /// comma-separated `bucket` or `bucket/prefix`. Everywhere else they are
    /// refused. Writes are always encrypted.
    #[arg(long, env = "CLOUDTASER_S3PROXY_PLAINTEXT_READS", value_delimiter = ',')]
    pub plaintext_reads: Vec<String>,

    /// S3 operations the workload may use, by their AWS API names
    /// (`GetObject,PutObject,…`), with `default` (object reads and writes,
    /// multipart, listing, HEAD, object tags, deletes), `all`, and `-Name` to
    /// take one away. Anything else gets 403 AccessDenied.
    #[arg(long, env = "CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS", value_delimiter = ',')]
    pub allowed_operations: Vec<String>,

    /// Buckets the workload may use: comma-separated `bucket` or
    /// `bucket/prefix`. Unset: any bucket the proxy's identity can reach.
    #[arg(long, env = "CLOUDTASER_S3PROXY_BUCKETS", value_delimiter = ',')]
    pub buckets: Vec<String>,

    /// Transit keys, besides CLOUDTASER_S3PROXY_TRANSIT_KEY, whose data keys
    /// the proxy may unwrap for reads (objects written under an earlier key
    /// name). An object or upload id naming any other key is refused.
    #[arg(long, env = "CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS", value_delimiter = ',')]
    pub transit_read_keys: Vec<String>,

    /// Which Transit key wraps new objects where: comma-separated
    /// `bucket[/prefix]=[mount/]key[:pool=N]`, the longest matching prefix
    /// first (a prefix is a string prefix: end it with `/` for a folder);
    /// everything else gets CLOUDTASER_S3PROXY_TRANSIT_KEY. Every routed
    /// key is also readable.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_RULES", value_delimiter = ',')]
    pub key_rules: Vec<String>,

    /// Bucket keys: single objects written within a window derive their
    /// data keys from one intermediate key per Transit key, wrapped once,
    /// so reading a window's objects costs one Transit decrypt, not one per
    /// object (docs/FORMAT.md, "Bucket keys"; SECURITY.md has the
    /// trade-offs). A rule's `:bucket-keys=on|off` overrides this per key.
    #[arg(long, env = "CLOUDTASER_S3PROXY_BUCKET_KEYS", value_enum, default_value = "off")]
    pub bucket_keys: Switch,

    /// Seconds a bucket key serves new objects before the next one.
    #[arg(long, env = "CLOUDTASER_S3PROXY_BUCKET_KEY_WINDOW_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub bucket_key_window_secs: u64,

    /// Objects one bucket key serves at most before the next one.
    #[arg(long, env = "CLOUDTASER_S3PROXY_BUCKET_KEY_MAX_OBJECTS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub bucket_key_max_objects: u64,

    /// A file of further rules in the form of CLOUDTASER_S3PROXY_KEY_RULES,
    /// one per line (`#` comments), for lists too long for a variable.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEY_RULES_FILE")]
    pub key_rules_file: Option<PathBuf>,

    /// Transit keys a workload may select per request with
    /// `x-amz-server-side-encryption-aws-kms-key-id`: comma-separated
    /// `id=[mount/]key`, or `[mount/]key` (the id is then the key's name).
    /// Once set, SSE-KMS request headers are the proxy's (not forwarded),
    /// and an id not on the list gets 403 before any Vault call.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KMS_KEY_IDS", value_delimiter = ',')]
    pub kms_key_ids: Vec<String>,

    /// Most connections the S3 listener holds open at once; more wait in the
    /// kernel's accept queue.
    #[arg(long, env = "CLOUDTASER_S3PROXY_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Most connections the health listener holds open at once (it is on the
    /// pod network in injected pods).
    #[arg(long, env = "CLOUDTASER_S3PROXY_HEALTH_MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub health_max_connections: u32,

    /// Seconds a control request (DeleteObjects, tagging, Complete) may
    /// take to send its body (at most 16 MiB); a client that never sends it
    /// would otherwise hold a connection slot and its buffer.
    #[arg(long, env = "CLOUDTASER_S3PROXY_BODY_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,

    /// Seconds an object body (PutObject, UploadPart) may send nothing
    /// before it is cut off: the upstream request is aborted, so nothing is
    /// stored, and the client gets `400 RequestTimeout`. 0 is refused: a
    /// stalled client would hold its connection and upstream request for ever.
    #[arg(long, env = "CLOUDTASER_S3PROXY_BODY_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_idle_timeout_secs: u64,

    /// How a completed multipart upload's part table and manifest are
    /// written into its metadata: `part-copy` (UploadPartCopy on the
    /// streams' boundaries, keeps the `-N` ETag, no size limit), or
    /// `object-copy` (CopyObject onto itself, for upstreams without
    /// UploadPartCopy; the ETag loses its `-N`). `auto`: `object-copy` on
    /// GCS, `part-copy` elsewhere.
    #[arg(long, env = "CLOUDTASER_S3PROXY_MULTIPART_SEAL", value_enum, default_value_t = SealMethod::Auto)]
    pub multipart_seal: SealMethod,

    /// Multipart objects without a manifest (format 1, written before
    /// format 2): `read` them (truncation to a prefix of their parts is not
    /// detected), or `refuse` them with 403. Set `refuse` once `seal` has
    /// upgraded every bucket: it also stops a sealed object being relabelled
    /// as format 1 and cut short.
    #[arg(long, env = "CLOUDTASER_S3PROXY_FORMAT1_MULTIPART", value_enum, default_value_t = Format1Multipart::Read)]
    pub format1_multipart: Format1Multipart,

    /// Which name of an object its envelope MAC binds (format 3): `key`
    /// (the object key: a copy onto another key is refused, a replica in
    /// another bucket under the same key reads), `bucket-key` (both), or
    /// `none`. Readers verify whatever binding each object records; this
    /// chooses it for new objects (docs/THREAT-MODEL.md).
    #[arg(long, env = "CLOUDTASER_S3PROXY_NAME_BINDING", value_enum, default_value_t = crate::format::Binding::Key)]
    pub name_binding: crate::format::Binding,

    /// Objects written before format 3 (formats 1 and 2: no envelope MAC,
    /// not bound to their names): `read` them, or `refuse` them with 403
    /// once every bucket holds only format-3 objects. Until then, an old
    /// object copied over a newer one's key by someone with the store's
    /// credentials reads as that key's content (docs/THREAT-MODEL.md).
    #[arg(long, env = "CLOUDTASER_S3PROXY_LEGACY_FORMATS", value_enum, default_value_t = LegacyFormats::Read)]
    pub legacy_formats: LegacyFormats,

    /// Upload ids of format 2 (`ctu1.`, no tag binding them to their
    /// upload and object): `refuse` (404 NoSuchUpload), or `accept` them
    /// while uploads opened by a proxy before format 3 finish.
    #[arg(long, env = "CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS", value_enum, default_value_t = LegacyUploadIds::Refuse)]
    pub legacy_upload_ids: LegacyUploadIds,

    /// Milliseconds CompleteMultipartUpload waits for the seal (format 2)
    /// before it answers `200` and sends a space every as many milliseconds
    /// until the result, as S3 does for a slow Complete, so clients do not
    /// time out.
    #[arg(long, env = "CLOUDTASER_S3PROXY_COMPLETE_KEEPALIVE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub complete_keepalive_ms: u64,

    /// Seconds between background checks that Vault answers with the
    /// proxy's token; skipped while real calls show it does. `/readyz`
    /// reads the result.
    #[arg(long, env = "CLOUDTASER_S3PROXY_VAULT_PROBE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub vault_probe_secs: u64,

    /// Name object keys in request log lines. Off by default: keys can hold
    /// personal data, and logs often leave the EU.
    #[arg(long, env = "CLOUDTASER_S3PROXY_LOG_KEYS", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_keys: bool,

    /// Store the plaintext digests some clients put in user metadata
    /// (s3cmd's `md5:` in `x-amz-meta-s3cmd-attrs`, rclone's
    /// `x-amz-meta-md5chksum`). Off by default: they are stored in the
    /// clear and let the provider confirm a guess of an object's contents.
    #[arg(long, env = "CLOUDTASER_S3PROXY_KEEP_PLAINTEXT_DIGESTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub keep_plaintext_digests: bool,

    /// Seconds to wait for a TCP connection to the upstream.
    #[arg(long, env = "CLOUDTASER_S3PROXY_UPSTREAM_CONNECT_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub upstream_connect_timeout_secs: u64,

    /// Seconds to wait for the upstream's response head once a request is
    /// sent (its body is not covered: objects stream for as long as they
    /// take). S3 answers a slow CompleteMultipartUpload or CopyObject with
    /// an early `200` and keep-alive spaces, so its head comes early.
    #[arg(long, env = "CLOUDTASER_S3PROXY_UPSTREAM_RESPONSE_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub upstream_response_timeout_secs: u64,

    /// The domain under which `<bucket>.<suffix>` hosts address buckets
    /// (virtual-hosted style, e.g. `my-bucket.localhost:8190`); empty turns
    /// virtual-hosted addressing off, leaving path style alone.
    #[arg(long, env = "CLOUDTASER_S3PROXY_VIRTUAL_HOST_SUFFIX", default_value = "localhost")]
    pub virtual_host_suffix: String,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "CLOUDTASER_S3PROXY_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "CLOUDTASER_S3PROXY_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum S3Flavor {
    Auto,
    Aws,
    /// Google Cloud Storage's XML API with HMAC keys.
    Gcs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VaultAuthMethod {
    Token,
    Kubernetes,
    Approle,
}

impl ProxyConfig {
    /// What every command's process needs: threads and logging. Clap has
    /// typed these already, so nothing can fail.
    pub fn process(&self) -> ProcessSettings {
        ProcessSettings {
            worker_threads: usize::from(self.worker_threads),
            log: LogSettings { filter: self.log.clone(), format: self.log_format },
        }
    }

    /// The listeners' addresses and limits (clap has checked their ranges).
    pub fn listeners(&self) -> ListenerSettings {
        ListenerSettings {
            s3: Listener {
                address: self.listen,
                limits: ListenerLimits {
                    max_connections: self.max_connections as usize,
                    header_read_timeout: S3_HEADER_READ_TIMEOUT,
                },
            },
            health: Listener {
                address: self.health_listen,
                limits: ListenerLimits {
                    max_connections: self.health_max_connections as usize,
                    header_read_timeout: HEALTH_HEADER_READ_TIMEOUT,
                },
            },
        }
    }

    /// Everything `serve` and the bucket tools need, checked and typed
    /// once; the first bad setting is the error, naming it.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let listeners = self.listeners();
        let vault = self.vault()?;
        let upstream = self.upstream()?;
        if !crate::keys::is_valid_key_name(&self.transit_key) {
            return Err(invalid("CLOUDTASER_S3PROXY_TRANSIT_KEY", "expected a Transit key name"));
        }
        let plaintext_reads = PlaintextReadPolicy::new(&self.plaintext_reads)?;
        let access = AccessPolicy::new(&self.allowed_operations, &self.buckets)?;
        let pool = self.key_pool()?;
        let routes = self.routes()?;
        let virtual_host_suffix = virtual_host_suffix(&self.virtual_host_suffix)?;
        let request = RequestSettings {
            access,
            plaintext_reads,
            log_keys: self.log_keys,
            body_deadline: Duration::from_secs(self.body_timeout_secs),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs),
            seal_method: match self.multipart_seal {
                SealMethod::Auto if upstream.is_gcs => SealMethod::ObjectCopy,
                SealMethod::Auto => SealMethod::PartCopy,
                other => other,
            },
            format_1_multipart_reads: self.format1_multipart == Format1Multipart::Read,
            name_binding: self.name_binding,
            legacy_reads: self.legacy_formats == LegacyFormats::Read,
            legacy_upload_ids: self.legacy_upload_ids == LegacyUploadIds::Accept,
            complete_keepalive: Duration::from_millis(self.complete_keepalive_ms),
            virtual_host_suffix,
            keep_digests: if self.keep_plaintext_digests { KeepDigests::Keep } else { KeepDigests::Strip },
        };
        let credentials = CredentialSettings {
            origin: match &self.credentials_dir {
                Some(dir) => CredentialOrigin::Directory(dir.clone()),
                None => CredentialOrigin::DefaultChain,
            },
            refresh_margin: Duration::from_secs(self.credentials_refresh_secs),
        };
        Ok(Settings {
            keys: KeySettings { pool, readable: routes.readable(), routes: Some(routes), ..self.keys() },
            vault,
            upstream: UpstreamSettings { upstream, credentials, timeouts: self.upstream_timeouts() },
            request,
            listeners,
        })
    }

    /// What `decrypt` needs: Vault and the key service (no pool), without
    /// an upstream or a write key.
    pub fn resolve_vault(self) -> Result<VaultAccess, ConfigError> {
        let vault = self.vault()?;
        // With a write key, the routed keys (on their mounts) are readable too.
        let keys = match crate::keys::is_valid_key_name(&self.transit_key) {
            true => {
                let routes = self.routes()?;
                KeySettings { readable: routes.readable(), routes: Some(routes), ..self.keys() }
            }
            false => self.keys(),
        };
        Ok(VaultAccess { vault, keys })
    }

    /// Vault, how to log in, and the Transit mount: what every command
    /// that reaches Vault checks first.
    fn vault(&self) -> Result<VaultSettings, ConfigError> {
        if self.vault_addr.is_empty() {
            return Err(invalid("VAULT_ADDR", "must be set"));
        }
        let addr: http::Uri = self.vault_addr.parse().map_err(|e| invalid("VAULT_ADDR", format!("{e}")))?;
        if !matches!(addr.scheme_str(), Some("http" | "https")) || addr.host().is_none() {
            return Err(invalid("VAULT_ADDR", "expected an http:// or https:// URL"));
        }
        let auth = self.vault_auth()?;
        let mount = self.transit_mount.trim_matches('/');
        if mount.is_empty() || !mount.split('/').all(crate::keys::is_valid_key_name) {
            return Err(invalid(
                "CLOUDTASER_S3PROXY_TRANSIT_MOUNT",
                "expected a mount path of segments made of letters, digits, `-`, `_` and `.`",
            ));
        }
        if self.vault_timeout_secs == 0 {
            return Err(invalid("CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS", "must be at least 1"));
        }
        Ok(VaultSettings {
            address: self.vault_addr.clone(),
            namespace: self.vault_namespace.clone(),
            ca_cert: self.vault_cacert.clone(),
            timeout: Duration::from_secs(self.vault_timeout_secs),
            auth,
            probe_interval: Duration::from_secs(self.vault_probe_secs),
        })
    }

    /// The routing of new objects to Transit keys and every key that may
    /// be read, checked against each other; each error names its setting.
    fn routes(&self) -> Result<crate::keys::KeyRoutes, ConfigError> {
        use crate::keys::{KeyRef, KeyRoutes, KeyRule, KmsKeyId};
        const RULES: &str = "CLOUDTASER_S3PROXY_KEY_RULES";
        const RULES_FILE: &str = "CLOUDTASER_S3PROXY_KEY_RULES_FILE";
        let mount = self.transit_mount.trim_matches('/');
        let default = KeyRef { mount: mount.to_owned(), name: self.transit_key.clone() };
        let listed = |values: &[String]| -> Vec<String> {
            values.iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect()
        };
        let mut rules = Vec::new();
        for entry in listed(&self.key_rules) {
            rules.push(KeyRule::parse(&entry, mount).map_err(|e| invalid(RULES, e.to_string()))?);
        }
        if let Some(path) = &self.key_rules_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(RULES_FILE, format!("cannot read {}: {e}", path.display())))?;
            for entry in crate::keys::routing::rules_file_entries(&text) {
                rules.push(KeyRule::parse(entry, mount).map_err(|e| invalid(RULES_FILE, e.to_string()))?);
            }
        }
        let mut ids = Vec::new();
        for entry in listed(&self.kms_key_ids) {
            ids.push(
                KmsKeyId::parse(&entry, mount).map_err(|e| invalid("CLOUDTASER_S3PROXY_KMS_KEY_IDS", e.to_string()))?,
            );
        }
        let mut read = Vec::new();
        for entry in listed(&self.transit_read_keys) {
            read.push(KeyRef::parse(&entry, mount).map_err(|_| {
                invalid("CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS", format!("`{entry}` is not a Transit key name"))
            })?);
        }
        KeyRoutes::new(default, rules, ids, read).map_err(|e| {
            // Conflicts span settings; name the one that adds keys to the default.
            let setting = match e {
                crate::keys::RouteError::DuplicateId(_) => "CLOUDTASER_S3PROXY_KMS_KEY_IDS",
                _ => RULES,
            };
            invalid(setting, e.to_string())
        })
    }

    /// The key service's settings without the pool; the caller has
    /// checked the key names it needs.
    fn keys(&self) -> KeySettings {
        let readable = std::iter::once(self.transit_key.clone())
            .chain(self.transit_read_keys.iter().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()))
            .collect();
        KeySettings {
            transit_mount: self.transit_mount.clone(),
            write_key: self.transit_key.clone(),
            readable,
            routes: None,
            cache_size: self.key_cache_size,
            cache_ttl: Duration::from_secs(self.key_cache_ttl_secs),
            bucket_keys: (self.bucket_keys == Switch::On).then(|| crate::keys::BucketKeySettings {
                window: Duration::from_secs(self.bucket_key_window_secs),
                max_objects: self.bucket_key_max_objects,
            }),
            version_check: Duration::from_secs(self.key_version_check_secs),
            pool: None,
        }
    }

    /// How long the upstream may take to accept a connection and to answer
    /// a request's head (clap has checked both are at least a second).
    fn upstream_timeouts(&self) -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: Duration::from_secs(self.upstream_connect_timeout_secs),
            response_head: Duration::from_secs(self.upstream_response_timeout_secs),
        }
    }

    fn upstream(&self) -> Result<Upstream, ConfigError> {
        const NAME: &str = "CLOUDTASER_S3PROXY_S3_ENDPOINT";
        if self.s3_region.is_empty() || !self.s3_region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid("CLOUDTASER_S3PROXY_S3_REGION", "expected a region name such as eu-central-1 or auto"));
        }
        let raw = match &self.s3_endpoint {
            Some(e) => e.clone(),
            None if self.s3_region == "auto" => {
                return Err(invalid(NAME, "region `auto` needs an explicit endpoint"));
            }
            None => format!("https://s3.{}.amazonaws.com", self.s3_region),
        };
        let endpoint: http::Uri = raw.parse().map_err(|e| invalid(NAME, format!("{e}")))?;
        match endpoint.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid(NAME, "expected an http:// or https:// URL")),
        }
        if endpoint.host().is_none() {
            return Err(invalid(NAME, "the URL has no host"));
        }
        if endpoint.query().is_some() || !matches!(endpoint.path(), "" | "/") {
            return Err(invalid(NAME, "expected scheme://host[:port] with no path or query"));
        }
        let is_gcs = match self.s3_flavor {
            S3Flavor::Gcs => true,
            S3Flavor::Aws => false,
            S3Flavor::Auto => endpoint.host().is_some_and(|h| h.eq_ignore_ascii_case("storage.googleapis.com")),
        };
        let integrity = match self.upload_integrity {
            UploadIntegrity::Auto if is_gcs => UploadIntegrity::Unsigned,
            UploadIntegrity::Auto => UploadIntegrity::Crc32cTrailer,
            other => other,
        };
        Ok(Upstream { endpoint, region: self.s3_region.clone(), is_gcs, integrity })
    }

    /// The Vault login method, with what it needs present.
    fn vault_auth(&self) -> Result<AuthMethod, ConfigError> {
        let secret = |value: &Option<String>, file: &Option<PathBuf>, name: &'static str| match (value, file) {
            (Some(v), _) if !v.trim().is_empty() => Ok(Secret::Value(Zeroizing::new(v.trim().to_owned()))),
            (_, Some(path)) => Ok(Secret::File(path.clone())),
            _ => Err(invalid(name, "must be set (or its _FILE variant)")),
        };
        let mount = |default: &str| self.vault_auth_mount.clone().unwrap_or_else(|| default.to_owned());
        Ok(match self.vault_auth_method {
            VaultAuthMethod::Token => {
                AuthMethod::Token(secret(&self.vault_token, &self.vault_token_file, "VAULT_TOKEN")?)
            }
            VaultAuthMethod::Kubernetes => AuthMethod::Kubernetes {
                mount: mount("kubernetes"),
                role: self
                    .vault_role
                    .clone()
                    .ok_or_else(|| invalid("VAULT_ROLE", "is required for Kubernetes auth"))?,
                jwt: Secret::File(self.vault_k8s_token_path.clone()),
            },
            VaultAuthMethod::Approle => AuthMethod::AppRole {
                mount: mount("approle"),
                role_id: self
                    .vault_role_id
                    .clone()
                    .ok_or_else(|| invalid("VAULT_ROLE_ID", "is required for AppRole auth"))?,
                secret_id: secret(&self.vault_secret_id, &self.vault_secret_id_file, "VAULT_SECRET_ID")?,
            },
        })
    }

    /// The data key pool (`None`: disabled with a size of 0).
    fn key_pool(&self) -> Result<Option<PoolSettings>, ConfigError> {
        let size = self.key_pool_size as usize;
        if size == 0 {
            return Ok(None);
        }
        let low_water = self.key_pool_low_water.map_or(size.div_ceil(2), |n| n as usize);
        if low_water == 0 || low_water > size {
            return Err(invalid(
                "CLOUDTASER_S3PROXY_KEY_POOL_LOW_WATER",
                format!("must be between 1 and the pool size ({size})"),
            ));
        }
        Ok(Some(PoolSettings {
            size,
            low_water,
            max_age: Duration::from_secs(self.key_pool_max_age_secs),
            version_check: Duration::from_secs(self.key_version_check_secs),
        }))
    }
}

/// `CLOUDTASER_S3PROXY_VIRTUAL_HOST_SUFFIX`: a DNS name (letters, digits
/// and `-` in dot-separated labels), lower-cased; empty turns
/// virtual-hosted addressing off.
fn virtual_host_suffix(raw: &str) -> Result<String, ConfigError> {
    const NAME: &str = "CLOUDTASER_S3PROXY_VIRTUAL_HOST_SUFFIX";
    let suffix = raw.trim();
    if suffix.is_empty() {
        return Ok(String::new());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if suffix.len() > 253 || !suffix.split('.').all(label_ok) {
        return Err(invalid(
            NAME,
            format!("`{suffix}` is not a DNS name such as localhost or s3.example.com (empty: virtual hosts off)"),
        ));
    }
    Ok(suffix.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ProxyConfig, clap::Error> {
        let base =
            ["cloudtaser-s3proxy", "--vault-addr", "http://127.0.0.1:8200", "--vault-token", "t", "--transit-key", "k"];
        Cli::try_parse_from(base.iter().chain(args)).map(|c| c.proxy)
    }

    fn resolve(args: &[&str]) -> Result<Settings, ConfigError> {
        parse(args).unwrap().resolve()
    }

    /// The setting a resolve error names, with its whole message.
    fn refused(args: &[&str]) -> String {
        resolve(args).unwrap_err().to_string()
    }

    #[test]
    fn defaults_point_at_aws() {
        let s = resolve(&[]).unwrap();
        assert_eq!(s.listeners.s3.address.to_string(), "127.0.0.1:8190");
        assert_eq!(s.listeners.health.address.to_string(), "127.0.0.1:8191");
        let u = &s.upstream.upstream;
        assert_eq!(u.endpoint.to_string(), "https://s3.us-east-1.amazonaws.com/");
        assert_eq!(u.integrity, UploadIntegrity::Crc32cTrailer);
        assert!(!u.is_gcs);
        assert_eq!(s.upstream.credentials.origin, CredentialOrigin::DefaultChain);
        assert_eq!(s.request.virtual_host_suffix, "localhost");
        assert_eq!(s.request.seal_method, SealMethod::PartCopy);
        assert!(s.request.format_1_multipart_reads && !s.request.log_keys);
        assert_eq!(s.request.keep_digests, KeepDigests::Strip);
        let t = s.upstream.timeouts;
        assert_eq!((t.connect, t.response_head), (Duration::from_secs(10), Duration::from_secs(120)));
        assert_eq!(s.keys.readable, ["k"]);
    }

    #[test]
    fn a_full_configuration_resolves_into_each_units_settings() {
        let s = resolve(&[
            "--listen=0.0.0.0:9000",
            "--health-listen=0.0.0.0:9001",
            "--s3-endpoint=https://storage.googleapis.com",
            "--s3-region=auto",
            "--credentials-dir=/creds",
            "--credentials-refresh-secs=60",
            "--vault-auth-method=kubernetes",
            "--vault-role=proxy",
            "--vault-namespace=team",
            "--vault-cacert=/ca.pem",
            "--vault-timeout-secs=3",
            "--vault-probe-secs=7",
            "--transit-mount=/kv/transit/",
            "--transit-read-keys= old ,older",
            "--key-cache-size=10",
            "--key-cache-ttl-secs=20",
            "--key-pool-size=9",
            "--key-pool-low-water=3",
            "--key-pool-max-age-secs=30",
            "--plaintext-reads=legacy",
            "--allowed-operations=GetObject",
            "--buckets=data/in/",
            "--max-connections=5",
            "--health-max-connections=6",
            "--body-timeout-secs=11",
            "--body-idle-timeout-secs=12",
            "--format1-multipart=refuse",
            "--complete-keepalive-ms=250",
            "--log-keys=true",
            "--keep-plaintext-digests=true",
            "--upstream-connect-timeout-secs=4",
            "--upstream-response-timeout-secs=5",
            "--virtual-host-suffix=S3.Example.com",
        ])
        .unwrap();
        assert_eq!(s.vault.address, "http://127.0.0.1:8200");
        assert_eq!(s.vault.namespace.as_deref(), Some("team"));
        assert_eq!(s.vault.ca_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!((s.vault.timeout, s.vault.probe_interval), (Duration::from_secs(3), Duration::from_secs(7)));
        let AuthMethod::Kubernetes { mount, role, .. } = &s.vault.auth else { panic!("{:?}", s.vault) };
        assert_eq!((mount.as_str(), role.as_str()), ("kubernetes", "proxy"));
        assert!(!format!("{:?}", s.vault).contains("serviceaccount"), "the auth method is named, not shown");
        assert_eq!(s.keys.transit_mount, "/kv/transit/");
        assert_eq!(s.keys.write_key, "k");
        assert_eq!(s.keys.readable, ["k", "old", "older"]);
        assert_eq!((s.keys.cache_size, s.keys.cache_ttl), (10, Duration::from_secs(20)));
        assert_eq!(
            s.keys.pool,
            Some(PoolSettings {
                size: 9,
                low_water: 3,
                max_age: Duration::from_secs(30),
                version_check: Duration::from_secs(10)
            })
        );
        let u = &s.upstream.upstream;
        assert!(u.is_gcs && u.integrity == UploadIntegrity::Unsigned && u.region == "auto");
        assert_eq!(s.upstream.credentials.origin, CredentialOrigin::Directory(PathBuf::from("/creds")));
        assert_eq!(s.upstream.credentials.refresh_margin, Duration::from_secs(60));
        let r = &s.request;
        assert!(r.plaintext_reads.allows("legacy", "x") && !r.plaintext_reads.allows("data", "x"));
        assert!(r.log_keys && !r.format_1_multipart_reads);
        assert_eq!(r.keep_digests, KeepDigests::Keep);
        let t = s.upstream.timeouts;
        assert_eq!((t.connect, t.response_head), (Duration::from_secs(4), Duration::from_secs(5)));
        assert_eq!(r.body_deadline, Duration::from_secs(11));
        assert_eq!(r.body_idle_timeout, Duration::from_secs(12));
        assert_eq!(r.complete_keepalive, Duration::from_millis(250));
        assert_eq!(r.seal_method, SealMethod::ObjectCopy, "auto seals GCS by a whole-object copy");
        assert_eq!(r.virtual_host_suffix, "s3.example.com");
        let l = &s.listeners;
        assert_eq!((l.s3.address.port(), l.s3.limits.max_connections), (9000, 5));
        assert_eq!((l.health.address.port(), l.health.limits.max_connections), (9001, 6));
        assert_eq!(l.health.limits.header_read_timeout, HEALTH_HEADER_READ_TIMEOUT);
        let p = parse(&["--worker-threads=3", "--log=debug", "--log-format=text"]).unwrap().process();
        assert_eq!((p.worker_threads, p.log.filter.as_str(), p.log.format), (3, "debug", LogFormat::Text));
    }

    #[test]
    fn key_rules_ids_and_read_keys_route_with_their_mounts() {
        let dir = std::env::temp_dir().join(format!("cloudtaser-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules");
        std::fs::write(&file, "# more tenants\ndata/tenant-c/=tenant-c:pool=16\n").unwrap();
        let s = resolve(&[
            "--key-rules",
            "data/tenant-a/=tenant-a, data/tenant-b/=transit-eu/tenant-b",
            "--key-rules-file",
            file.to_str().unwrap(),
            "--kms-key-ids",
            "alias/a=tenant-a,transit-eu/tenant-b",
            "--transit-read-keys",
            "old,archive/older",
        ])
        .unwrap();
        let routes = s.keys.routes.as_ref().unwrap();
        assert_eq!(routes.route("data", "tenant-a/x"), "tenant-a");
        assert_eq!(routes.route("data", "tenant-b/x"), "tenant-b");
        assert_eq!(routes.route("data", "tenant-c/x"), "tenant-c");
        assert_eq!(routes.route("data", "other"), "k");
        assert_eq!(routes.get("tenant-b").unwrap().mount, "transit-eu");
        assert_eq!(routes.get("older").unwrap().mount, "archive");
        assert_eq!(routes.pool_size("tenant-c"), Some(16));
        assert_eq!(routes.kms_key("alias/a"), Some("tenant-a"));
        assert_eq!(routes.kms_key("tenant-b"), Some("tenant-b"));
        assert_eq!(s.keys.readable, ["k", "old", "older", "tenant-a", "tenant-b", "tenant-c"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_pool_settings() {
        let p = resolve(&[]).unwrap().keys.pool.unwrap();
        assert_eq!((p.size, p.low_water, p.max_age), (1024, 512, Duration::from_secs(300)));
        let p = resolve(&["--key-pool-size", "9", "--key-pool-low-water", "9"]).unwrap().keys.pool.unwrap();
        assert_eq!((p.size, p.low_water), (9, 9));
        assert!(resolve(&["--key-pool-size", "0"]).unwrap().keys.pool.is_none());
    }

    #[test]
    fn gcs_is_detected_and_drops_the_trailer() {
        let u = resolve(&["--s3-endpoint", "https://storage.googleapis.com", "--s3-region", "auto"]).unwrap();
        assert!(u.upstream.upstream.is_gcs);
        assert_eq!(u.upstream.upstream.integrity, UploadIntegrity::Unsigned);
        let forced = resolve(&["--s3-endpoint", "http://127.0.0.1:9", "--s3-flavor", "gcs"]).unwrap();
        assert!(forced.upstream.upstream.is_gcs && forced.upstream.upstream.integrity == UploadIntegrity::Unsigned);
        let aws = resolve(&["--s3-endpoint", "https://storage.googleapis.com", "--s3-flavor", "aws"]).unwrap();
        assert_eq!(aws.request.seal_method, SealMethod::PartCopy);
        let chosen = resolve(&["--s3-flavor", "gcs", "--s3-endpoint=http://x", "--multipart-seal=part-copy"]).unwrap();
        assert_eq!(chosen.request.seal_method, SealMethod::PartCopy, "an explicit method stays");
    }

    #[test]
    fn plaintext_read_policy_by_bucket_and_prefix() {
        let p = resolve(&["--plaintext-reads", "legacy,mixed/old/"]).unwrap().request.plaintext_reads;
        assert!(p.allows("legacy", "any/key"));
        assert!(p.allows("mixed", "old/file"));
        assert!(!p.allows("mixed", "new/file"));
        assert!(!p.allows("other", "old/file"));
        assert!(!PlaintextReadPolicy::default().allows("legacy", "x"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--vault-addr", ""], "VAULT_ADDR is invalid: must be set"),
            (&["--vault-addr", "ftp://vault"], "VAULT_ADDR is invalid: expected an http:// or https:// URL"),
            (&["--vault-token", ""], "VAULT_TOKEN is invalid: must be set (or its _FILE variant)"),
            (&["--vault-auth-method", "kubernetes"], "VAULT_ROLE is invalid: is required for Kubernetes auth"),
            (&["--vault-auth-method", "approle"], "VAULT_ROLE_ID is invalid: is required for AppRole auth"),
            (&["--vault-auth-method", "approle", "--vault-role-id", "r"], "VAULT_SECRET_ID is invalid: must be set"),
            (&["--transit-mount", "a//b"], "CLOUDTASER_S3PROXY_TRANSIT_MOUNT is invalid: expected a mount path"),
            (
                &["--key-rules", "data/a/"],
                "CLOUDTASER_S3PROXY_KEY_RULES is invalid: `data/a/` is not `bucket[/prefix]=",
            ),
            (&["--key-rules", "data/a/=x y"], "CLOUDTASER_S3PROXY_KEY_RULES is invalid: `x y`: the key name"),
            (
                &["--key-rules", "data/a/=eu/k"],
                "CLOUDTASER_S3PROXY_KEY_RULES is invalid: Transit key `k` is configured on two mounts",
            ),
            (
                &["--key-rules", "data/a/=t1,data/a/=t2"],
                "CLOUDTASER_S3PROXY_KEY_RULES is invalid: `data/a/` is routed twice",
            ),
            (
                &["--key-rules-file", "/nonexistent/rules"],
                "CLOUDTASER_S3PROXY_KEY_RULES_FILE is invalid: cannot read /nonexistent/rules",
            ),
            (&["--kms-key-ids", "a=t1,a=t2"], "CLOUDTASER_S3PROXY_KMS_KEY_IDS is invalid: key id `a` is listed twice"),
            (&["--kms-key-ids", "a=../x"], "CLOUDTASER_S3PROXY_KMS_KEY_IDS is invalid: `../x`: the mount"),
            (&["--vault-timeout-secs", "0"], "CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS is invalid: must be at least 1"),
            (&["--s3-region", "eu central"], "CLOUDTASER_S3PROXY_S3_REGION is invalid: expected a region name"),
            (&["--s3-region", "auto"], "CLOUDTASER_S3PROXY_S3_ENDPOINT is invalid: region `auto` needs an explicit"),
            (&["--s3-endpoint", "ftp://x"], "CLOUDTASER_S3PROXY_S3_ENDPOINT is invalid: expected an http:// or"),
            (
                &["--s3-endpoint", "http://x/bucket"],
                "CLOUDTASER_S3PROXY_S3_ENDPOINT is invalid: expected scheme://host",
            ),
            (&["--transit-key", "a/b"], "CLOUDTASER_S3PROXY_TRANSIT_KEY is invalid: expected a Transit key name"),
            (&["--transit-key", ""], "CLOUDTASER_S3PROXY_TRANSIT_KEY is invalid"),
            (&["--plaintext-reads", "/x"], "CLOUDTASER_S3PROXY_PLAINTEXT_READS is invalid: `/x` names no bucket"),
            (&["--allowed-operations", "Nope"], "CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS is invalid"),
            (&["--buckets", "a/../b"], "CLOUDTASER_S3PROXY_BUCKETS is invalid"),
            (
                &["--key-pool-size", "8", "--key-pool-low-water", "9"],
                "CLOUDTASER_S3PROXY_KEY_POOL_LOW_WATER is invalid",
            ),
            (&["--key-pool-low-water", "0"], "CLOUDTASER_S3PROXY_KEY_POOL_LOW_WATER is invalid: must be between 1"),
            (&["--transit-read-keys", "ok,a/b c"], "CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS is invalid: `a/b c` is not"),
            (
                &["--virtual-host-suffix", ".localhost"],
                "CLOUDTASER_S3PROXY_VIRTUAL_HOST_SUFFIX is invalid: `.localhost`",
            ),
        ];
        for (args, expected) in cases {
            let message = refused(args);
            assert!(message.starts_with(expected), "{args:?}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
        let e = parse(&["--key-pool-max-age-secs", "0"]).unwrap_err();
        assert!(e.to_string().contains("key-pool-max-age-secs"));
        // An idle limit of 0 would mean none: refused rather than read as "off".
        let e = parse(&["--body-idle-timeout-secs", "0"]).unwrap_err();
        assert!(e.to_string().contains("body-idle-timeout-secs"), "{e}");
        assert!(
            resolve(&["--vault-auth-method", "approle", "--vault-role-id", "r", "--vault-secret-id-file", "/x"])
                .is_ok()
        );
    }

    #[test]
    fn the_first_bad_setting_is_the_one_named() {
        // Vault before the upstream, the upstream before the keys, as before settings were typed.
        let message = refused(&["--vault-addr", "", "--s3-endpoint", "ftp://x", "--transit-key", ""]);
        assert!(message.starts_with("VAULT_ADDR"), "{message}");
        let message = refused(&["--s3-endpoint", "ftp://x", "--transit-key", ""]);
        assert!(message.starts_with("CLOUDTASER_S3PROXY_S3_ENDPOINT"), "{message}");
    }

    #[test]
    fn the_virtual_host_suffix_is_a_dns_name_or_empty() {
        for good in ["localhost", "s3.example.com", "a-b.c0", " localhost "] {
            assert_eq!(
                resolve(&[&format!("--virtual-host-suffix={good}")]).unwrap().request.virtual_host_suffix,
                good.trim()
            );
        }
        assert_eq!(resolve(&["--virtual-host-suffix", ""]).unwrap().request.virtual_host_suffix, "", "off");
        let long = format!("{}.com", "a".repeat(64));
        for bad in ["localhost.", "a..b", "-a.com", "a-.com", "a_b.com", "a:80", "*.example.com", long.as_str()] {
            let message = refused(&[&format!("--virtual-host-suffix={bad}")]);
            assert!(message.starts_with("CLOUDTASER_S3PROXY_VIRTUAL_HOST_SUFFIX is invalid"), "{bad}: {message}");
        }
    }

    #[test]
    fn decrypt_needs_vault_and_nothing_upstream() {
        let access = parse(&["--transit-key", "", "--s3-region", "auto", "--key-pool-low-water", "0"])
            .unwrap()
            .resolve_vault()
            .unwrap();
        assert_eq!(access.keys.write_key, "");
        assert!(access.keys.pool.is_none());
        let e = parse(&["--vault-addr", ""]).unwrap().resolve_vault().unwrap_err();
        assert!(e.to_string().starts_with("VAULT_ADDR"), "{e}");
    }
}
