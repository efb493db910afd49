//! The command line: `serve` (the default) and the admin commands, with
//! their arguments. The proxy's own settings are `config::ProxyConfig`,
//! shared by every command and resolved once into `settings::Settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ProxyConfig;

#[derive(Debug, Parser)]
#[command(
    name = "cloudtaser-s3proxy",
    version,
    args_override_self = true,
    about = "Client-side envelope encryption proxy for S3"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub proxy: ProxyConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Re-wrap the data keys of every object under a bucket or prefix to
    /// the newest Transit key version (metadata-only self-copies).
    Rewrap(RewrapArgs),
    /// Classify every object under a bucket or prefix as encrypted,
    /// plaintext or unreadable (`--verify` also decrypts and authenticates
    /// each one). Exit status 0: all encrypted and readable; 1: plaintext or
    /// damaged objects found; 2: the scan failed.
    Scan(ScanArgs),
    /// Encrypt objects written before the proxy, in place (content headers,
    /// user metadata, tags and storage class kept; an object changed
    /// meanwhile is skipped, never clobbered).
    Migrate(MigrateArgs),
    /// Write the manifest of multipart objects that have none: objects an
    /// interrupted CompleteMultipartUpload left pending (never served until
    /// sealed) and format-1 multipart objects. Each is verified first (part
    /// count, streams, every segment) and refused if it fails.
    Seal(SealArgs),
    /// Decrypt a downloaded ciphertext file with its metadata and Vault
    /// access: the recovery path when the proxy is not in the way.
    Decrypt(DecryptArgs),
    /// Check, in order, everything the proxy depends on with the settings it
    /// would run with (Vault, login, the token's policy, the Transit keys,
    /// the upstream credentials, the buckets, the clock), one line each with
    /// the fix for what fails. Exit status 0: nothing failed; 1: a check failed.
    Doctor(DoctorArgs),
    /// Wait until the proxy next to this process is ready (a classic
    /// sidecar's postStart hook, so the workload starts after the proxy).
    WaitReady {
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Wait until the proxy next to this process has had no S3 request in
    /// flight for `--quiet-secs`, at most `--max-secs` (a classic sidecar's
    /// preStop hook, so uploads made while the application shuts down finish).
    WaitIdle {
        #[arg(long, default_value_t = 3)]
        quiet_secs: u64,
        #[arg(long, default_value_t = 25)]
        max_secs: u64,
    },
}

/// What the commands that rewrite a bucket's objects share.
#[derive(Debug, Clone, Args)]
pub struct RewriteArgs {
    #[arg(long)]
    pub bucket: String,
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Report what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress file: the last finished key is recorded here, and a rerun
    /// continues after it.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Show no progress bar (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Run even where the upstream does not enforce conditional writes
    /// (If-Match), which is probed first: there, an object written while
    /// the command runs could be reverted to its old content. Only once
    /// every writer to the bucket is stopped.
    #[arg(long, env = "CLOUDTASER_S3PROXY_ASSUME_QUIESCED")]
    pub assume_quiesced: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub walk: RewriteArgs,
    /// Also list the noncurrent versions (versioned buckets) whose data keys
    /// are under an older Transit key version. They are reported, never
    /// rewritten: a version cannot be changed in place, and copying one
    /// would make it the current version.
    #[arg(long)]
    pub all_versions: bool,
    /// Move every object to this Transit key (one the proxy's settings
    /// name), whatever its rule says. Without it, objects move to the key
    /// their rule (CLOUDTASER_S3PROXY_KEY_RULES) names now, and objects
    /// already there are brought to its newest version.
    #[arg(long, value_name = "TRANSIT_KEY")]
    pub to_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub walk: RewriteArgs,
    /// Seal this one object (its key) instead of a prefix: what a reader's
    /// 503 for a `multipart-pending` object asks for. It is checked like
    /// every object the command seals (part count, streams, every segment)
    /// and refused if it fails.
    #[arg(
        long = "key",
        value_name = "OBJECT_KEY",
        conflicts_with_all = ["prefix", "state_file"],
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub object: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub walk: RewriteArgs,
    /// Objects larger than this are rewritten as multipart uploads with
    /// parts of this size (MiB; at least 5, as S3 requires).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(5..=5120))]
    pub part_size_mib: u32,
    /// Also rewrite objects of formats 1 and 2 as format 3 (bound to their
    /// names, authenticated as a whole): each is read through the proxy's
    /// verified read path, pinned to the ETag it was examined at, and
    /// written back with If-Match on it, under a new data key. Afterwards
    /// `CLOUDTASER_S3PROXY_LEGACY_FORMATS=refuse` can be set.
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    #[arg(long)]
    pub bucket: String,
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Also read every encrypted object through the proxy's read path and
    /// verify every segment (reads the whole bucket's data).
    #[arg(long)]
    pub verify: bool,
    /// Write the report as JSON on standard output (compliance evidence).
    #[arg(long)]
    pub json: bool,
    /// Objects examined at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Show no progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Examine every version of every object (versioned buckets), not only
    /// the current ones: noncurrent versions written before the proxy are
    /// plaintext at rest too.
    #[arg(long)]
    pub all_versions: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DecryptArgs {
    /// The stored ciphertext, as downloaded from the bucket.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Where the plaintext goes.
    #[arg(long = "out")]
    pub output: PathBuf,
    /// The object's `x-amz-meta-cloudtaser-key` (`vault:vN:…`).
    #[arg(long)]
    pub wrapped_key: String,
    /// The object's `x-amz-meta-cloudtaser-transit-key`; defaults to
    /// CLOUDTASER_S3PROXY_TRANSIT_KEY.
    #[arg(long)]
    pub key_name: Option<String>,
    /// The object's `x-amz-meta-cloudtaser-manifest`, required for a
    /// format-2 multipart object: the part table read from the file is
    /// checked against it, so a file cut short at a part boundary fails.
    #[arg(long)]
    pub manifest: Option<String>,
    /// The object's `x-amz-meta-cloudtaser-salt`, required for a single-PUT
    /// object (as the proxy requires it): the stream's salt must be this
    /// one, so a body moved from another object under the same data key fails.
    #[arg(long)]
    pub salt: Option<String>,
    /// The object's `x-amz-meta-cloudtaser-size`, required for a single-PUT
    /// object and checked for a format-2 one: the plaintext length must be it.
    #[arg(long)]
    pub size: Option<u64>,
    /// Format 3: the object's `x-amz-meta-cloudtaser-mac`. The envelope is
    /// verified (over `--binding`, `--bucket`, `--object-key`, the salt or
    /// the part table and stream headers read from the file) before the
    /// plaintext file appears; every stream must be version 3.
    #[arg(long)]
    pub mac: Option<String>,
    /// Format 3: the object's `x-amz-meta-cloudtaser-binding`.
    #[arg(long, value_enum, default_value_t = crate::format::Binding::Key, requires = "mac")]
    pub binding: crate::format::Binding,
    /// Format 3: the object's key (as S3 names it, not URL-encoded), which
    /// the MAC binds unless the binding is `none`.
    #[arg(long, requires = "mac")]
    pub object_key: Option<String>,
    /// Format 3: the object's bucket, which the binding `bucket-key` binds.
    #[arg(long, requires = "mac")]
    pub bucket: Option<String>,
    /// Format 3 with a bucket key: the 64 hex digits of
    /// x-amz-meta-cloudtaser-key-salt. The wrapped key is then the bucket
    /// key, and the object's data key is derived from it (docs/FORMAT.md).
    #[arg(long, requires = "mac")]
    pub key_salt: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// A bucket to check (HEAD, and a sample of its objects' key versions);
    /// repeatable. The buckets of CLOUDTASER_S3PROXY_BUCKETS are checked too.
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub bucket: Vec<String>,
    /// Objects sampled per `--bucket` for their data keys' Transit versions.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub sample: u32,
    /// Also write a small probe object to each bucket through the proxy's
    /// own request path (checked to be ciphertext at rest, read back, deleted)
    /// and probe whether the upstream enforces conditional writes.
    #[arg(long)]
    pub write_probe: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}
