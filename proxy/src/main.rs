use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use cloudtaser_s3proxy::app;
use cloudtaser_s3proxy::cli::{Cli, Command, DecryptArgs, DoctorArgs, MigrateArgs, RewrapArgs, ScanArgs, SealArgs};
use cloudtaser_s3proxy::commands;
use cloudtaser_s3proxy::config::{ConfigError, LogFormat, ProxyConfig};
use cloudtaser_s3proxy::keys::audit::{self, Audit, Reason};
use cloudtaser_s3proxy::logging;
use cloudtaser_s3proxy::server;
use cloudtaser_s3proxy::settings::{LogSettings, Settings, VaultAccess};

// glibc malloc cost a fifth of the request path's CPU on small objects (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let process = cli.proxy.process();
    let job = match Job::resolve(cli.command.unwrap_or(Command::Serve), cli.proxy) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("cloudtaser-s3proxy: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&process.log);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(process.worker_threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `scan` tells findings (1) from a failed scan (2); the others fail with 1.
    let failure = if matches!(job, Job::Scan(..)) { ExitCode::from(2) } else { ExitCode::FAILURE };
    match runtime.block_on(job.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cloudtaser-s3proxy: {e}");
            failure
        }
    }
}

/// A command with the settings it runs with, resolved once before it starts:
/// each command checks only what it uses (`decrypt` needs no upstream,
/// `wait-ready` only the health address).
enum Job {
    Serve(Settings),
    Rewrap(Settings, RewrapArgs),
    Migrate(Settings, MigrateArgs),
    Seal(Settings, SealArgs),
    Scan(Settings, ScanArgs),
    Decrypt(VaultAccess, DecryptArgs),
    // Settings that do not resolve are `doctor`'s first finding, not an
    // exit before it; the `CLOUDTASER_S3PROXY_BUCKETS` entries are checked as buckets.
    Doctor(Vec<String>, Result<Settings, ConfigError>, DoctorArgs),
    WaitReady { health: SocketAddr, timeout: Duration },
    WaitIdle { health: SocketAddr, quiet: Duration, max: Duration },
}

impl Job {
    fn resolve(command: Command, config: ProxyConfig) -> Result<Self, ConfigError> {
        Ok(match command {
            Command::Serve => Job::Serve(config.resolve()?),
            Command::Rewrap(args) => Job::Rewrap(config.resolve()?, args),
            Command::Migrate(args) => Job::Migrate(config.resolve()?, args),
            Command::Seal(args) => Job::Seal(config.resolve()?, args),
            Command::Scan(args) => Job::Scan(config.resolve()?, args),
            Command::Decrypt(args) => Job::Decrypt(config.resolve_vault()?, args),
            Command::Doctor(args) => Job::Doctor(config.buckets.clone(), config.resolve(), args),
            Command::WaitReady { timeout_secs } => {
                Job::WaitReady { health: config.listeners().health.address, timeout: Duration::from_secs(timeout_secs) }
            }
            Command::WaitIdle { quiet_secs, max_secs } => Job::WaitIdle {
                health: config.listeners().health.address,
                quiet: Duration::from_secs(quiet_secs),
                max: Duration::from_secs(max_secs),
            },
        })
    }

    async fn run(self) -> Result<ExitCode, Box<dyn Error>> {
        match self {
            Job::Serve(settings) => done(serve(settings).await),
            Job::Rewrap(settings, args) => done(audited(Reason::Rewrap, commands::rewrap::run(&settings, &args)).await),
            Job::Migrate(settings, args) => {
                done(audited(Reason::Migrate, commands::migrate::run(&settings, &args)).await)
            }
            Job::Seal(settings, args) => done(audited(Reason::Seal, commands::seal::run(&settings, &args)).await),
            Job::Scan(settings, args) => audited(Reason::Scan, commands::scan::run(&settings, &args))
                .await
                .map(|report| if report.clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
                .map_err(Into::into),
            Job::Decrypt(access, args) => {
                done(audited(Reason::DecryptTool, commands::decrypt::run(&access, &args)).await)
            }
            Job::Doctor(buckets, settings, args) => {
                let report = commands::doctor::run(settings, &buckets, &args).await;
                print!("{}", report.render(args.output));
                Ok(if report.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
            }
            Job::WaitReady { health, timeout } => done(commands::wait_ready::run(health, timeout).await),
            Job::WaitIdle { health, quiet, max } => done(commands::wait_idle::run(health, quiet, max).await),
        }
    }
}

/// Runs an admin tool with one audit id for all its Transit calls, logged
/// so its Vault audit entries can be found (docs/OPERATIONS.md).
async fn audited<F: std::future::Future>(reason: Reason, work: F) -> F::Output {
    let audit = Audit::fresh(reason);
    tracing::info!(audit_id = audit.id, reason = reason.as_str(), "Transit calls carry this audit id");
    audit::scope(audit, work).await
}

/// A command that succeeded exits 0; its error is printed by `main`.
fn done(result: Result<(), impl Into<Box<dyn Error>>>) -> Result<ExitCode, Box<dyn Error>> {
    result.map(|()| ExitCode::SUCCESS).map_err(Into::into)
}

fn init_tracing(log: &LogSettings) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter::FilterExt};

    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter).unwrap_or_else(|_| "info".into());
    // Whatever the filter says, these never reach the log (docs/SECURITY.md).
    let filter =
        filter.and(tracing_subscriber::filter::filter_fn(|meta| logging::may_log(meta.target(), meta.level())));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match log.format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
}

async fn serve(settings: Settings) -> Result<(), Box<dyn Error>> {
    let session = app::vault_session(&settings.vault)?;
    let keys = app::serving_key_service(&settings.keys, session);
    let client = app::upstream_client(&settings.upstream).await?;
    let path = Arc::new(app::serving_request_path(&settings, keys.clone(), client));

    let (s3, health) = (settings.listeners.s3, settings.listeners.health);
    let s3_listener =
        server::bind(s3.address).await.map_err(|e| format!("CLOUDTASER_S3PROXY_LISTEN {}: {e}", s3.address))?;
    let health_listener = server::bind(health.address)
        .await
        .map_err(|e| format!("CLOUDTASER_S3PROXY_HEALTH_LISTEN {}: {e}", health.address))?;
    let upstream = &settings.upstream.upstream;
    tracing::info!(listen = %s3.address, health = %health.address, upstream = %upstream.endpoint, region = %upstream.region, "cloudtaser-s3proxy started");
    tokio::spawn(keys.clone().watch_vault(settings.vault.probe_interval));
    tokio::spawn(server::serve_health(health_listener, keys, health.limits));
    Ok(server::serve_s3(s3_listener, path, s3.limits, shutdown_signal()).await?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
