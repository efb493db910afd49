use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use zeroize::Zeroizing;

use cloudtaser_s3proxy::config::{Cli, LogFormat, ProxyConfig};
use cloudtaser_s3proxy::credentials::CredentialSource;
use cloudtaser_s3proxy::keys::{KeyService, TransitClient, TransitConfig};
use cloudtaser_s3proxy::request::RequestPath;
use cloudtaser_s3proxy::request::forward::Forwarder;
use cloudtaser_s3proxy::request::sign::Signer;
use cloudtaser_s3proxy::server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.proxy;
    if let Err(e) = config.validate() {
        eprintln!("cloudtaser-s3proxy: {e}");
        return ExitCode::from(2);
    }
    init_tracing(&config);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cloudtaser-s3proxy stopped");
            eprintln!("cloudtaser-s3proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &ProxyConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: ProxyConfig) -> Result<(), String> {
    let upstream = config.upstream().map_err(|e| e.to_string())?;
    let ca_cert_pem = match &config.vault_cacert {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("VAULT_CACERT {}: {e}", path.display()))?),
        None => None,
    };
    let transit = TransitClient::new(TransitConfig {
        address: config.vault_addr.clone(),
        token: Zeroizing::new(config.vault_token.clone()),
        namespace: config.vault_namespace.clone(),
        ca_cert_pem,
        mount: config.transit_mount.clone(),
        key_name: config.transit_key.clone(),
        timeout: config.vault_timeout(),
    })
    .map_err(|e| e.to_string())?;
    let keys = Arc::new(KeyService::new(transit, config.key_cache_size, config.key_cache_ttl()));
    let credentials = Arc::new(CredentialSource::from_default_chain(&upstream.region).await);
    let signer = Signer::new(credentials, upstream.region.clone());
    let forwarder = Forwarder::new(upstream.clone()).map_err(|e| e.to_string())?;
    let plaintext_reads = config.plaintext_read_policy().map_err(|e| e.to_string())?;
    let path = Arc::new(RequestPath::new(keys.clone(), signer, forwarder, plaintext_reads, "localhost".to_owned()));

    let s3 =
        server::bind(config.listen).await.map_err(|e| format!("CLOUDTASER_S3PROXY_LISTEN {}: {e}", config.listen))?;
    let health = server::bind(config.health_listen)
        .await
        .map_err(|e| format!("CLOUDTASER_S3PROXY_HEALTH_LISTEN {}: {e}", config.health_listen))?;
    tracing::info!(listen = %config.listen, health = %config.health_listen, upstream = %upstream.endpoint, region = %upstream.region, "cloudtaser-s3proxy started");
    tokio::spawn(server::serve_health(health, keys));
    server::serve_s3(s3, path, shutdown_signal()).await.map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
