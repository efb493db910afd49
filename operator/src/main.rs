use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::Api;
use kube::runtime::events::Reporter;

use cloudtaser_operator::crd::{S3ProxyConfig, S3ProxyConfigSpec, crd_yaml};
use cloudtaser_operator::metrics::Metrics;
use cloudtaser_operator::webhook::admission::Admission;
use cloudtaser_operator::webhook::inject::InjectOptions;
use cloudtaser_operator::webhook::server::{self, Probes};
use cloudtaser_operator::{config_cache, controller, tls};

#[derive(Parser)]
#[command(name = "cloudtaser-operator", version, about = "Injects the CloudTaser S3 proxy into annotated pods")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook and run the controller (the default).
    Run,
    /// Print the S3ProxyConfig CRD as YAML.
    Crd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TlsMode {
    Files,
    SelfManaged,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, env = "CLOUDTASER_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    webhook_listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "CLOUDTASER_PROBE_LISTEN", default_value = "0.0.0.0:8080")]
    probe_listen: SocketAddr,
    /// `files`: a mounted Secret (existing or cert-manager's), reloaded when
    /// it changes. `self-managed`: the operator issues and rotates its own.
    #[arg(long, env = "CLOUDTASER_TLS_MODE", value_enum, default_value = "files")]
    tls_mode: TlsMode,
    /// Self-managed: the Secret holding the CA and serving certificate.
    #[arg(long, env = "CLOUDTASER_TLS_SECRET", default_value = "cloudtaser-operator-tls")]
    tls_secret: String,
    /// Self-managed: the MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(long, env = "CLOUDTASER_WEBHOOK_CONFIG", default_value = "cloudtaser-operator")]
    webhook_config: String,
    /// Self-managed: the webhook Service (names on the certificate).
    #[arg(long, env = "CLOUDTASER_SERVICE_NAME", default_value = "cloudtaser-operator")]
    service_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "cloudtaser")]
    namespace: String,
    #[arg(long, env = "CLOUDTASER_TLS_CERT", default_value = "/etc/cloudtaser/tls/tls.crt")]
    tls_cert: PathBuf,
    #[arg(long, env = "CLOUDTASER_TLS_KEY", default_value = "/etc/cloudtaser/tls/tls.key")]
    tls_key: PathBuf,
    #[arg(long, env = "CLOUDTASER_PROXY_IMAGE", default_value = "ghcr.io/cloudtaser/s3proxy:0.1.0")]
    proxy_image: String,
    /// Inject as a native sidecar (init container, restartPolicy Always); Kubernetes ≥ 1.29.
    #[arg(long, env = "CLOUDTASER_NATIVE_SIDECAR", default_value_t = true, action = clap::ArgAction::Set)]
    native_sidecar: bool,
    #[arg(long, env = "CLOUDTASER_PROXY_CPU_REQUEST", default_value = "50m")]
    proxy_cpu_request: String,
    #[arg(long, env = "CLOUDTASER_PROXY_MEMORY_REQUEST", default_value = "32Mi")]
    proxy_memory_request: String,
    #[arg(long, env = "CLOUDTASER_PROXY_MEMORY_LIMIT", default_value = "128Mi")]
    proxy_memory_limit: String,
    #[arg(long, env = "CLOUDTASER_PROXY_LOG_LEVEL", default_value = "info")]
    proxy_log_level: String,
    /// YAML of an S3ProxyConfig spec used for `cloudtaser.io/s3-proxy: "true"`
    /// in namespaces without a `default` config.
    #[arg(long, env = "CLOUDTASER_CLUSTER_DEFAULT")]
    cluster_default: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        print!("{}", crd_yaml());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudtaser-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for the first certificate (the leader issues it), then keeps it current.
async fn self_managed_tls(
    args: &RunArgs,
    client: kube::Client,
    metrics: Arc<Metrics>,
) -> Result<Arc<tls::ReloadingCert>, String> {
    let ns = &args.namespace;
    let manager = tls::self_managed::SelfManaged {
        secrets: Api::namespaced(client.clone(), ns),
        webhooks: Api::all(client.clone()),
        secret_name: args.tls_secret.clone(),
        webhook_name: args.webhook_config.clone(),
        dns_names: vec![
            format!("{}.{ns}.svc", args.service_name),
            format!("{}.{ns}.svc.cluster.local", args.service_name),
        ],
    };
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("cloudtaser-operator-{}", std::process::id()));
    let lease = tls::leader::LeaderLease::new(
        Api::namespaced(client, ns),
        "cloudtaser-operator-tls",
        &identity,
        Duration::from_secs(15),
    );
    let first = loop {
        if lease.try_acquire().await.unwrap_or(false)
            && let Err(e) = manager.reconcile(k8s_openapi::jiff::Timestamp::now().as_second()).await
        {
            tracing::warn!(error = %e, "issuing the webhook certificate");
        }
        if let Ok(Some(m)) = manager.load().await {
            break m;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let cert = tls::ReloadingCert::from_pem(first.cert.as_bytes(), first.key.as_bytes(), &metrics)
        .map_err(|e| e.to_string())?;
    tokio::spawn(manager.run(lease, cert.clone(), metrics, Duration::from_secs(5)));
    Ok(cert)
}

async fn run(args: RunArgs) -> Result<(), String> {
    let cluster_default: Option<S3ProxyConfigSpec> = match &args.cluster_default {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let spec: S3ProxyConfigSpec =
                serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            spec.validate().map_err(|e| format!("{} (the chart's clusterDefault): {e}", path.display()))?;
            Some(spec)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let client = kube::Client::try_default().await.map_err(|e| format!("Kubernetes client: {e}"))?;
    let cert = match args.tls_mode {
        TlsMode::Files => {
            let cert = tls::ReloadingCert::new(args.tls_cert.clone(), args.tls_key.clone(), &metrics)
                .map_err(|e| e.to_string())?;
            tokio::spawn(cert.clone().watch(Duration::from_secs(10), metrics.clone()));
            cert
        }
        TlsMode::SelfManaged => self_managed_tls(&args, client.clone(), metrics.clone()).await?,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let configs = config_cache::start(Api::<S3ProxyConfig>::all(client.clone()), cluster_default, ready.clone());
    let options = InjectOptions {
        image: args.proxy_image,
        native_sidecar: args.native_sidecar,
        cpu_request: args.proxy_cpu_request,
        memory_request: args.proxy_memory_request,
        memory_limit: args.proxy_memory_limit,
        cpu_limit: None,
        log_level: args.proxy_log_level,
    };
    let admission = Arc::new(Admission { configs, options, metrics: metrics.clone() });

    let listener = tokio::net::TcpListener::bind(args.webhook_listen).await.map_err(|e| e.to_string())?;
    tokio::spawn(server::serve_https(listener, cert.server_config(), server::webhook_router(admission)));
    tokio::spawn(server::serve_http(
        args.probe_listen,
        server::probes_router(Probes { metrics: metrics.clone(), ready }),
    ));
    let reporter = Reporter { controller: "cloudtaser-operator".into(), instance: std::env::var("POD_NAME").ok() };
    controller::run(Arc::new(controller::Context { client, metrics, reporter })).await;
    Ok(())
}
