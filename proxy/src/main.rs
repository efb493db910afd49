use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cloudtaser_s3proxy::app;
use cloudtaser_s3proxy::cli::{Cli, Command};
use cloudtaser_s3proxy::commands;
use cloudtaser_s3proxy::config::{Format1Multipart, LogFormat, ProxyConfig};
use cloudtaser_s3proxy::logging;
use cloudtaser_s3proxy::request::RequestPath;
use cloudtaser_s3proxy::server;

// glibc malloc cost a fifth of the request path's CPU on small objects (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.proxy;
    let command = cli.command.unwrap_or(Command::Serve);
    let checked = match &command {
        Command::Decrypt(_) => config.validate_vault(),
        Command::WaitReady { .. } => Ok(()),
        _ => config.validate(),
    };
    if let Err(e) = checked {
        eprintln!("cloudtaser-s3proxy: {e}");
        return ExitCode::from(2);
    }
    init_tracing(&config);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(config.worker_threads))
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `scan` tells findings (1) from a failed scan (2); the others fail with 1.
    let failure = if matches!(command, Command::Scan(_)) { ExitCode::from(2) } else { ExitCode::FAILURE };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => done(serve(config).await),
            Command::Rewrap(args) => done(commands::rewrap::run(&config, &args).await),
            Command::Migrate(args) => done(commands::migrate::run(&config, &args).await),
            Command::Seal(args) => done(commands::seal::run(&config, &args).await),
            Command::Scan(args) => commands::scan::run(&config, &args)
                .await
                .map(|report| if report.clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
                .map_err(Into::into),
            Command::Decrypt(args) => done(commands::decrypt::run(&config, &args).await),
            Command::WaitReady { timeout_secs } => done(
                commands::wait_ready::run(config.health_listen, std::time::Duration::from_secs(timeout_secs)).await,
            ),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cloudtaser-s3proxy: {e}");
            failure
        }
    }
}

/// A command that succeeded exits 0; its error is printed by `main`.
fn done(result: Result<(), impl Into<Box<dyn Error>>>) -> Result<ExitCode, Box<dyn Error>> {
    result.map(|()| ExitCode::SUCCESS).map_err(Into::into)
}

fn init_tracing(config: &ProxyConfig) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter::FilterExt};

    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    // Whatever the filter says, these never reach the log (docs/SECURITY.md).
    let filter =
        filter.and(tracing_subscriber::filter::filter_fn(|meta| logging::may_log(meta.target(), meta.level())));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match config.log_format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
}

async fn serve(config: ProxyConfig) -> Result<(), Box<dyn Error>> {
    let upstream = config.upstream()?;
    let session = app::vault_session(&config)?;
    let keys = app::serving_key_service(&config, session)?;
    let client = app::upstream_client(&config).await?;
    let plaintext_reads = config.plaintext_read_policy()?;
    let policy = config.access_policy()?;
    let path = Arc::new(
        RequestPath::new(keys.clone(), client, plaintext_reads, "localhost".to_owned())
            .with_policy(policy)
            .with_key_logging(config.log_keys)
            .with_body_deadline(std::time::Duration::from_secs(config.body_timeout_secs))
            .with_seal_method(config.multipart_seal, upstream.is_gcs)
            .with_format_1_multipart_reads(config.format1_multipart == Format1Multipart::Read)
            .with_complete_keepalive(std::time::Duration::from_millis(config.complete_keepalive_ms)),
    );

    let s3 =
        server::bind(config.listen).await.map_err(|e| format!("CLOUDTASER_S3PROXY_LISTEN {}: {e}", config.listen))?;
    let health = server::bind(config.health_listen)
        .await
        .map_err(|e| format!("CLOUDTASER_S3PROXY_HEALTH_LISTEN {}: {e}", config.health_listen))?;
    tracing::info!(listen = %config.listen, health = %config.health_listen, upstream = %upstream.endpoint, region = %upstream.region, "cloudtaser-s3proxy started");
    tokio::spawn(keys.clone().watch_vault(std::time::Duration::from_secs(config.vault_probe_secs)));
    let health_limits = server::ListenerLimits {
        max_connections: config.health_max_connections as usize,
        header_read_timeout: server::HEALTH_HEADER_READ_TIMEOUT,
    };
    tokio::spawn(server::serve_health(health, keys, health_limits));
    let s3_limits = server::ListenerLimits {
        max_connections: config.max_connections as usize,
        header_read_timeout: server::S3_HEADER_READ_TIMEOUT,
    };
    Ok(server::serve_s3(s3, path, s3_limits, shutdown_signal()).await?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
