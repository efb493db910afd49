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
use cloudtaser_operator::{config_cache, controller, leader, tls};

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
    /// Inject the proxy into manifests offline (Pods, Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs), as the
    /// webhook would; the result goes to stdout, denials to stderr.
    Inject(InjectArgs),
    /// Check the installation in the cluster (CRD, webhook, certificate,
    /// Deployment, configs, pods, native sidecars), like `linkerd check`;
    /// exits 1 when a check fails.
    Check(CheckArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Human,
    Json,
}

/// The names default to the chart's for `--release` (`_helpers.tpl`).
#[derive(clap::Args)]
struct CheckArgs {
    /// The operator's (release's) namespace.
    #[arg(long, short = 'n', env = "CLOUDTASER_OPERATOR_NAMESPACE", default_value = "cloudtaser")]
    namespace: String,
    /// The Helm release name the chart was installed as.
    #[arg(long, env = "CLOUDTASER_OPERATOR_RELEASE", default_value = "cloudtaser")]
    release: String,
    /// The operator Deployment [default: <release>-cloudtaser-operator].
    #[arg(long, env = "CLOUDTASER_OPERATOR_DEPLOYMENT")]
    deployment: Option<String>,
    /// The webhook's Service [default: <release>-cloudtaser-operator].
    #[arg(long, env = "CLOUDTASER_OPERATOR_SERVICE")]
    service: Option<String>,
    /// The MutatingWebhookConfiguration [default: <release>-cloudtaser-operator].
    #[arg(long, env = "CLOUDTASER_OPERATOR_WEBHOOK_CONFIG")]
    webhook_config: Option<String>,
    /// The serving certificate's Secret [default: <release>-cloudtaser-operator-tls].
    #[arg(long, env = "CLOUDTASER_OPERATOR_TLS_SECRET")]
    tls_secret: Option<String>,
    /// The configured proxy image [default: the Deployment's CLOUDTASER_PROXY_IMAGE].
    #[arg(long, env = "CLOUDTASER_OPERATOR_PROXY_IMAGE")]
    proxy_image: Option<String>,
    /// Check configs and pods of this namespace only [default: all].
    #[arg(long, env = "CLOUDTASER_OPERATOR_WORKLOAD_NAMESPACE")]
    workload_namespace: Option<String>,
    #[arg(long, short = 'o', env = "CLOUDTASER_OPERATOR_OUTPUT", value_enum, default_value = "human")]
    output: OutputFormat,
}

#[derive(clap::Args)]
struct InjectArgs {
    /// S3ProxyConfig manifests (multi-document YAML); repeat for several files.
    #[arg(long = "config", required = true)]
    configs: Vec<PathBuf>,
    /// Manifests to inject; `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Native sidecar (init container, Kubernetes >= 1.29) or classic.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    native_sidecar: bool,
    /// The namespace of objects (and configs) that name none.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// An S3ProxyConfig spec (YAML) used as the cluster default.
    #[arg(long)]
    cluster_default: Option<PathBuf>,
    #[arg(long, default_value = "ghcr.io/cloudtaser/s3proxy:0.1.0")]
    proxy_image: String,
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
    /// The controller's leader-election Lease (in the operator's namespace);
    /// the self-managed certificate's is `<name>-tls`. Unique per release,
    /// so two releases in one namespace do not elect one leader between them.
    #[arg(long, env = "CLOUDTASER_LEASE_NAME", default_value = "cloudtaser-operator")]
    lease_name: String,
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
    #[arg(long, env = "CLOUDTASER_PROXY_CPU_LIMIT")]
    proxy_cpu_limit: Option<String>,
    #[arg(long, env = "CLOUDTASER_PROXY_LOG_LEVEL", default_value = "info")]
    proxy_log_level: String,
    /// OpenShift: leave the proxy's UID and GID to the SCC (restricted-v2
    /// assigns one from the namespace's range), unless a config names them.
    #[arg(long, env = "CLOUDTASER_PROXY_PLATFORM_ASSIGNS_USER", default_value_t = false, action = clap::ArgAction::Set)]
    proxy_platform_assigns_user: bool,
    /// YAML of an S3ProxyConfig spec used for `cloudtaser.io/s3-proxy: "true"`
    /// in namespaces without a `default` config.
    #[arg(long, env = "CLOUDTASER_CLUSTER_DEFAULT")]
    cluster_default: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Crd) => {
            print!("{}", crd_yaml());
            return ExitCode::SUCCESS;
        }
        Some(Command::Inject(args)) => return offline_inject(args),
        Some(Command::Check(args)) => return check(args),
        Some(Command::Run) | None => {}
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

/// Why the operator, or `inject`, could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
enum StartupError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Yaml { path: PathBuf, source: serde_yaml::Error },
    #[error("{} (the chart's clusterDefault): {source}", path.display())]
    ClusterDefault { path: PathBuf, source: cloudtaser_operator::crd::InvalidSpec },
    #[error("{}: {source}", path.display())]
    Config { path: PathBuf, source: Box<cloudtaser_operator::offline::OfflineError> },
    #[error("stdin: {0}")]
    Stdin(std::io::Error),
    #[error("{0}")]
    Options(cloudtaser_operator::webhook::inject::BadSetting),
    #[error("{0} (check the chart's proxy values)")]
    ChartOptions(cloudtaser_operator::webhook::inject::BadSetting),
    #[error(transparent)]
    Offline(Box<cloudtaser_operator::offline::OfflineError>),
    #[error("Kubernetes client: {0}")]
    Kube(kube::Error),
    #[error(transparent)]
    Tls(#[from] tls::files::TlsError),
    #[error("{address}: {source}")]
    Listen { address: std::net::SocketAddr, source: std::io::Error },
}

fn read_file(path: &std::path::Path) -> Result<String, StartupError> {
    std::fs::read_to_string(path).map_err(|source| StartupError::Read { path: path.to_owned(), source })
}

fn read_cluster_default(path: &std::path::Path) -> Result<S3ProxyConfigSpec, StartupError> {
    let text = read_file(path)?;
    let spec: S3ProxyConfigSpec =
        serde_yaml::from_str(&text).map_err(|source| StartupError::Yaml { path: path.to_owned(), source })?;
    spec.validate().map_err(|source| StartupError::ClusterDefault { path: path.to_owned(), source })?;
    Ok(spec)
}

fn offline_inject(args: &InjectArgs) -> ExitCode {
    let run = || -> Result<cloudtaser_operator::offline::Output, StartupError> {
        let mut configs = cloudtaser_operator::offline::OfflineConfigs::default();
        for path in &args.configs {
            let text = read_file(path)?;
            configs
                .add_yaml(&text, &args.namespace)
                .map_err(|e| StartupError::Config { path: path.clone(), source: Box::new(e) })?;
        }
        if let Some(path) = &args.cluster_default {
            configs.set_cluster_default(read_cluster_default(path)?);
        }
        let manifests = if args.file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(StartupError::Stdin)?
        } else {
            read_file(&args.file)?
        };
        let options = InjectOptions {
            image: args.proxy_image.clone(),
            native_sidecar: args.native_sidecar,
            ..InjectOptions::default()
        };
        options.validate().map_err(StartupError::Options)?;
        cloudtaser_operator::offline::inject_manifests(&configs, &options, &manifests, &args.namespace)
            .map_err(|e| StartupError::Offline(Box::new(e)))
    };
    match run() {
        Ok(out) => {
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            if !out.denials.is_empty() {
                for d in &out.denials {
                    eprintln!("denied: {d}");
                }
                return ExitCode::FAILURE;
            }
            print!("{}", out.yaml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cloudtaser-operator inject: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    use cloudtaser_operator::check::{Report, Target};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut target = Target::for_release(&args.release, &args.namespace);
    let names = [
        (&args.deployment, &mut target.deployment),
        (&args.service, &mut target.service),
        (&args.webhook_config, &mut target.webhook_config),
        (&args.tls_secret, &mut target.tls_secret),
    ];
    for (given, name) in names {
        if let Some(given) = given {
            name.clone_from(given);
        }
    }
    target.proxy_image.clone_from(&args.proxy_image);
    target.workload_namespace.clone_from(&args.workload_namespace);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let report = runtime.block_on(async {
        match kube::Client::try_default().await {
            Ok(client) => cloudtaser_operator::check::run(client, &target).await,
            Err(e) => {
                let mut report = Report::default();
                report.fail(
                    "kubernetes-api",
                    format!("no Kubernetes client: {e}"),
                    "set KUBECONFIG or a kubeconfig context, or run check in the cluster",
                );
                report
            }
        }
    });
    print!(
        "{}",
        match args.output {
            OutputFormat::Human => report.to_human(),
            OutputFormat::Json => report.to_json(),
        }
    );
    ExitCode::from(report.exit_code())
}

/// A replica that stops renewing loses its Leases after this long.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// Who holds a Lease: the pod's name (the chart sets POD_NAME).
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| format!("cloudtaser-operator-{}", std::process::id()))
}

/// Waits for the first certificate (the leader issues it), then keeps it current.
async fn self_managed_tls(
    args: &RunArgs,
    client: kube::Client,
    metrics: Arc<Metrics>,
) -> Result<Arc<tls::ReloadingCert>, StartupError> {
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
    let lease = tls::leader::LeaderLease::new(
        Api::namespaced(client, ns),
        &format!("{}-tls", args.lease_name),
        &identity(),
        LEASE_DURATION,
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
    let cert = tls::ReloadingCert::from_pem(first.cert.as_bytes(), first.key.as_bytes(), &metrics)?;
    tokio::spawn(manager.run(lease, cert.clone(), metrics, Duration::from_secs(5)));
    Ok(cert)
}

/// Native sidecars also need every kubelet at 1.29 or later: nodes with an
/// older one are counted in a metric and logged, every 5 minutes.
async fn watch_kubelets(client: kube::Client, metrics: Arc<Metrics>) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    loop {
        match nodes.list(&Default::default()).await {
            Ok(list) => {
                let old = cloudtaser_operator::capabilities::kubelets_without_native_sidecars(&list.items);
                metrics.nodes_without_native_sidecars.set(old.len() as i64);
                for (node, version) in &old {
                    tracing::warn!(%node, %version, "kubelet older than 1.29: injected pods scheduled here stay in Init (native sidecars); upgrade the node or set proxy.nativeSidecar=false");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list nodes to check their kubelet versions"),
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
}

async fn run(args: RunArgs) -> Result<(), StartupError> {
    // Bad defaults stop the operator here, instead of being blamed on pods.
    let cluster_default = args.cluster_default.as_deref().map(read_cluster_default).transpose()?;
    let options = InjectOptions {
        image: args.proxy_image.clone(),
        native_sidecar: args.native_sidecar,
        cpu_request: args.proxy_cpu_request.clone(),
        memory_request: args.proxy_memory_request.clone(),
        memory_limit: args.proxy_memory_limit.clone(),
        cpu_limit: args.proxy_cpu_limit.clone(),
        log_level: args.proxy_log_level.clone(),
        platform_assigns_user: args.proxy_platform_assigns_user,
    };
    options.validate().map_err(StartupError::ChartOptions)?;
    let mut options = options;
    let metrics = Arc::new(Metrics::default());
    let client = kube::Client::try_default().await.map_err(StartupError::Kube)?;
    if options.native_sidecar {
        // Pods stuck in Init for good are worse than classic sidecars.
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &args.namespace);
        match cloudtaser_operator::capabilities::api_keeps_native_sidecars(&pods, &options.image).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the API server drops restartPolicy on init containers (no native sidecars, Kubernetes < 1.29): injecting classic sidecars instead"
                );
                options.native_sidecar = false;
            }
            Err(e) => tracing::warn!(error = %e, "could not check native sidecar support; keeping the configured mode"),
        }
        tokio::spawn(watch_kubelets(client.clone(), metrics.clone()));
    }
    let cert = match args.tls_mode {
        TlsMode::Files => {
            let cert = tls::ReloadingCert::new(args.tls_cert.clone(), args.tls_key.clone(), &metrics)?;
            tokio::spawn(cert.clone().watch(Duration::from_secs(10), metrics.clone()));
            cert
        }
        TlsMode::SelfManaged => self_managed_tls(&args, client.clone(), metrics.clone()).await?,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let configs = config_cache::start(
        Api::<S3ProxyConfig>::all(client.clone()),
        Api::all(client.clone()),
        cluster_default,
        ready.clone(),
    );
    let proxy_image = options.image.clone();
    let admission = Arc::new(Admission { configs, options, metrics: metrics.clone() });

    let listener = tokio::net::TcpListener::bind(args.webhook_listen)
        .await
        .map_err(|source| StartupError::Listen { address: args.webhook_listen, source })?;
    let notifier = Arc::new(cloudtaser_operator::webhook::notify::Notifier::new(
        client.clone(),
        Reporter { controller: "cloudtaser-operator-webhook".into(), instance: std::env::var("POD_NAME").ok() },
    ));
    tokio::spawn(server::serve_https(
        listener,
        cert.server_config(),
        server::webhook_router_with_events(admission, Some(notifier)),
    ));
    tokio::spawn(server::serve_http(
        args.probe_listen,
        server::probes_router(Probes { metrics: metrics.clone(), ready }),
    ));
    let reporter = Reporter { controller: "cloudtaser-operator".into(), instance: std::env::var("POD_NAME").ok() };
    // Only the Lease holder runs the controller; every replica serves the webhook.
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    let lease = leader::LeaderLease::new(
        Api::namespaced(client.clone(), &args.namespace),
        &args.lease_name,
        &identity(),
        LEASE_DURATION,
    );
    tokio::spawn(leader::campaign(lease, LEASE_DURATION / 3, leading_tx));
    let settings = controller::Settings { client, metrics, reporter, proxy_image };
    tokio::select! {
        () = controller::run(settings, leading) => {}
        () = shutdown_signal() => {}
    }
    Ok(())
}

/// SIGTERM (the kubelet) or Ctrl-C. A follower has no controller whose own
/// signal handling would end the process.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
