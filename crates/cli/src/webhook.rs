//! `podiam webhook`: the admission webhook (flags as amazon-eks-pod-identity-webhook's), and
//! `podiam webhook manifests` to deploy it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use podiam_identity::sigv4::KeySource;
use podiam_webhook::flags::parse_go_duration;
use podiam_webhook::identity::{ComposeRoleArn, partition_for_region};
use podiam_webhook::manifests::{ManifestOptions, PodiamAssociations, render};
use podiam_webhook::mutate::{
    CaBundle, DEFAULT_ANNOTATION_PREFIX, DEFAULT_CA_BUNDLE_MOUNT_PATH, clamp_token_expiration,
    parse_go_bool,
};
use podiam_webhook::podiam::PodiamOptions;
use podiam_webhook::server::{KubeOptions, Options, start};
use podiam_webhook::webhook::LookupPolicy;
use podiam_webhook::{Config, ContainerCredentialsConfig};

use crate::exit;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WebhookArgs {
    #[command(subcommand)]
    command: Option<WebhookCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Print the Kubernetes objects (Deployment, Service, RBAC, cert-manager Certificate,
    /// MutatingWebhookConfiguration) for `kubectl apply -f -`.
    Manifests(ManifestArgs),
}

#[derive(Args)]
struct ManifestArgs {
    /// Namespace to deploy into.
    #[arg(long, default_value = "podiam")]
    namespace: String,
    /// Name of the objects.
    #[arg(long, default_value = "podiam-webhook")]
    name: String,
    /// Image whose entrypoint is the `podiam` binary (the one `scripts/build-image` builds, pushed
    /// to your registry).
    #[arg(long, default_value = podiam_webhook::manifests::IMAGE)]
    image: String,
    /// Deployment replicas.
    #[arg(long, default_value_t = 2)]
    replicas: i32,
    /// Also read Pod Identity associations from podiam at this URL (the webhook's
    /// --podiam-endpoint); the key comes from --podiam-credentials-secret.
    #[arg(long, requires = "cluster")]
    podiam_endpoint: Option<String>,
    /// The cluster as registered with podiam (the webhook's --cluster).
    #[arg(long, visible_alias = "cluster-name", requires = "podiam_endpoint")]
    cluster: Option<String>,
    /// Secret (that you create) whose key `credentials` is a shared-credentials file with the
    /// webhook's access key; mounted read-only (0440) for --podiam-credentials-file.
    #[arg(
        long,
        default_value = "podiam-webhook-credentials",
        requires = "podiam_endpoint"
    )]
    podiam_credentials_secret: String,
    /// Secret whose `ca.crt` signed podiam's serving certificate (an https --podiam-endpoint
    /// with a private CA, e.g. podiam-server-tls); trusted through SSL_CERT_FILE.
    #[arg(long, requires = "podiam_endpoint")]
    podiam_ca_secret: Option<String>,
    /// Extra `podiam webhook` flags for the Deployment, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

fn go_bool(s: &str) -> Result<bool, String> {
    parse_go_bool(s).ok_or_else(|| format!("`{s}` is not a boolean"))
}

fn go_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).ok_or_else(|| format!("`{s}` is not a duration like 500ms, 10s or 1m"))
}

/// Flags as upstream names them, plus `--listen`/`--metrics-listen`. Go booleans accept
/// `--flag`, `--flag=true` and `--flag=false`.
#[derive(Args)]
struct ServeArgs {
    /// HTTPS address for /mutate and /healthz.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Upstream's `--port`: overrides the port of --listen.
    #[arg(long)]
    port: Option<u16>,
    /// Plain-HTTP address for /metrics ("off" disables it).
    #[arg(long, default_value = "0.0.0.0:9999")]
    metrics_listen: String,
    /// Upstream's `--metrics-port`: overrides the port of --metrics-listen.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(long, default_value = "/etc/webhook/certs/tls.crt")]
    tls_cert: PathBuf,
    /// Serving private key (PEM).
    #[arg(long, default_value = "/etc/webhook/certs/tls.key")]
    tls_key: PathBuf,
    /// Comma-separated Go cipher suite names restricting TLS 1.2 (TLS 1.3 suites stay on).
    #[arg(long, default_value = "")]
    tls_cipher_suites: String,
    /// Minimum TLS version: 1.2 or 1.3 (1.0 and 1.1 mean 1.2).
    #[arg(long, default_value = "")]
    tls_min_version: String,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    tls_reload_interval: Duration,
    /// kubeconfig file; default: in-cluster config, then $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes API server URL, overriding the kubeconfig's.
    #[arg(long)]
    kube_api: Option<String>,
    /// Deprecated upstream CSR mode; podiam always serves --tls-cert/--tls-key (use cert-manager).
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    in_cluster: Option<bool>,
    /// Upstream CSR-mode flag; ignored.
    #[arg(long, hide = true)]
    service_name: Option<String>,
    /// Upstream CSR-mode flag; ignored.
    #[arg(long, hide = true)]
    tls_secret: Option<String>,
    /// Namespace of the `pod-identity-webhook` ConfigMap (--watch-config-map).
    #[arg(long, default_value = "eks")]
    namespace: String,
    /// Prefix of the ServiceAccount and pod annotations.
    #[arg(long, default_value = DEFAULT_ANNOTATION_PREFIX)]
    annotation_prefix: String,
    /// Default token audience.
    #[arg(long, default_value = "sts.amazonaws.com")]
    token_audience: String,
    /// Where the IRSA token volume is mounted.
    #[arg(
        long,
        default_value = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
    )]
    token_mount_path: String,
    /// Default token lifetime in seconds (at least 600).
    #[arg(long, default_value_t = 86_400)]
    token_expiration: i64,
    /// Inject AWS_DEFAULT_REGION and AWS_REGION with this value.
    #[arg(long, default_value = "")]
    aws_default_region: String,
    /// Inject AWS_STS_REGIONAL_ENDPOINTS=regional by default.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    sts_regional_endpoint: bool,
    /// podiam's STS URL: inject AWS_ENDPOINT_URL_STS into IRSA pods, so that their SDKs ask
    /// podiam (which brokers roles of other accounts) instead of AWS STS. The ServiceAccount
    /// annotation `<prefix>/sts-endpoint` overrides it (empty: none).
    #[arg(long, default_value = "")]
    sts_endpoint: String,
    /// With an STS endpoint: a ConfigMap (in the pod's namespace) with the CA bundle that
    /// verifies podiam's certificate, mounted and named by AWS_CA_BUNDLE. The SDKs use it for
    /// every AWS endpoint: it must hold the public roots as well as podiam's CA.
    #[arg(long)]
    ca_bundle_configmap: Option<String>,
    /// The key of the bundle in --ca-bundle-configmap.
    #[arg(
        long,
        default_value = "ca-bundle.pem",
        requires = "ca_bundle_configmap"
    )]
    ca_bundle_key: String,
    /// Where the CA bundle volume is mounted.
    #[arg(long, default_value = DEFAULT_CA_BUNDLE_MOUNT_PATH, requires = "ca_bundle_configmap")]
    ca_bundle_mount_path: String,
    /// Also read role mappings from the `pod-identity-webhook` ConfigMap in --namespace.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    watch_config_map: bool,
    /// Treat a role-arn annotation without `arn:` as a role name in --aws-account-id.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    compose_role_arn: bool,
    /// Account for --compose-role-arn (upstream reads it from IMDS; podiam does not call IMDS).
    #[arg(long)]
    aws_account_id: Option<String>,
    /// EKS Pod Identity associations file: {"identities":[{"namespace","serviceAccount"}]}.
    #[arg(long)]
    watch_container_credentials_config: Option<PathBuf>,
    /// podiam's URL: also read Pod Identity associations from its EKS API
    /// (ListPodIdentityAssociations for --cluster, SigV4 `eks`).
    #[arg(long, requires = "cluster")]
    podiam_endpoint: Option<String>,
    /// The cluster (as registered with `podiam cluster create`) whose associations are read.
    #[arg(long, visible_alias = "cluster-name", requires = "podiam_endpoint")]
    cluster: Option<String>,
    /// How often podiam's associations are read; the last good set is kept while it is down.
    #[arg(long, default_value = "30s", value_parser = go_duration)]
    podiam_sync_interval: Duration,
    /// Shared-credentials file with the key for --podiam-endpoint (re-read at every sync);
    /// default: the AWS SDK's standard credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    /// AWS_PROFILE, web identity with AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, ...).
    #[arg(long)]
    podiam_credentials_file: Option<PathBuf>,
    /// Profile in --podiam-credentials-file.
    #[arg(long, default_value = "default")]
    podiam_profile: String,
    /// Pod Identity token audience.
    #[arg(long, default_value = "pods.eks.amazonaws.com")]
    container_credentials_audience: String,
    /// Where the Pod Identity token volume is mounted.
    #[arg(
        long,
        default_value = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
    )]
    container_credentials_token_mount_path: String,
    /// Name of the Pod Identity token volume.
    #[arg(long, default_value = "eks-pod-identity-token")]
    container_credentials_token_volume_name: String,
    /// File name of the Pod Identity token in its volume.
    #[arg(long, default_value = "eks-pod-identity-token")]
    container_credentials_token_path: String,
    /// AWS_CONTAINER_CREDENTIALS_FULL_URI.
    #[arg(long, default_value = "http://169.254.170.23/v1/credentials")]
    container_credentials_full_uri: String,
    /// On a ServiceAccount cache miss, wait this long for a direct API read (0 turns it off).
    #[arg(long, default_value = "1s", value_parser = go_duration)]
    service_account_lookup_grace_period: Duration,
    /// Upstream informer resync; a watch needs none, so it is ignored.
    #[arg(long, hide = true)]
    resync_period: Option<String>,
    /// Upstream debug endpoints; not implemented, ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    enable_debugging_handlers: Option<bool>,
    #[command(flatten)]
    connections: crate::connections::ConnectionArgs,
}

fn with_port(mut addr: SocketAddr, port: Option<u16>) -> SocketAddr {
    if let Some(p) = port {
        addr.set_port(p);
    }
    addr
}

/// `--podiam-endpoint` and friends; `None` without it.
fn podiam_options(a: &ServeArgs) -> anyhow::Result<Option<PodiamOptions>> {
    let (Some(endpoint), Some(cluster)) = (&a.podiam_endpoint, &a.cluster) else {
        return Ok(None);
    };
    let key = match &a.podiam_credentials_file {
        Some(path) => KeySource::file(path, &a.podiam_profile)?,
        // The AWS SDK's standard chain (environment, AWS_PROFILE, web identity, ...).
        None => crate::agent::chain_key(
            if a.aws_default_region.is_empty() {
                "us-east-1"
            } else {
                &a.aws_default_region
            },
            podiam_agent::AgentClock::system(),
        ),
    };
    let mut opts = PodiamOptions::new(endpoint, cluster, key);
    opts.interval = a.podiam_sync_interval.max(Duration::from_millis(100));
    if !a.aws_default_region.is_empty() {
        opts.region.clone_from(&a.aws_default_region);
    }
    Ok(Some(opts))
}

fn options(a: ServeArgs) -> anyhow::Result<Options> {
    let podiam = podiam_options(&a)?;
    if a.in_cluster == Some(true) {
        tracing::warn!(
            "--in-cluster=true (upstream's CSR mode) is not supported; serving --tls-cert/--tls-key"
        );
    }
    let compose_role_arn = if a.compose_role_arn {
        let Some(account_id) = a.aws_account_id.clone() else {
            bail!("--compose-role-arn needs --aws-account-id (podiam does not read it from IMDS)");
        };
        Some(ComposeRoleArn {
            partition: partition_for_region(&a.aws_default_region).to_owned(),
            account_id,
        })
    } else {
        None
    };
    let metrics_listen = match a.metrics_listen.as_str() {
        "off" | "" => None,
        s => Some(with_port(
            s.parse()
                .with_context(|| format!("--metrics-listen `{s}`"))?,
            a.metrics_port,
        )),
    };
    let mut opts = Options::new(a.tls_cert, a.tls_key);
    opts.listen = with_port(a.listen, a.port);
    opts.metrics_listen = metrics_listen;
    opts.tls_min_version = a.tls_min_version;
    opts.connections = a.connections.limits();
    opts.tls_cipher_suites = a.tls_cipher_suites;
    opts.tls_reload_interval = a.tls_reload_interval.max(Duration::from_millis(100));
    opts.config = Config {
        annotation_prefix: a.annotation_prefix,
        token_audience: a.token_audience,
        token_mount_path: a.token_mount_path,
        token_expiration: clamp_token_expiration(a.token_expiration),
        aws_default_region: a.aws_default_region,
        sts_regional_endpoint: a.sts_regional_endpoint,
        container_credentials: ContainerCredentialsConfig {
            audience: a.container_credentials_audience,
            mount_path: a.container_credentials_token_mount_path,
            volume_name: a.container_credentials_token_volume_name,
            token_path: a.container_credentials_token_path,
            full_uri: a.container_credentials_full_uri,
        },
        sts_endpoint: a.sts_endpoint,
        ca_bundle: a.ca_bundle_configmap.map(|config_map| CaBundle {
            config_map,
            key: a.ca_bundle_key,
            mount_path: a.ca_bundle_mount_path,
        }),
    };
    opts.compose_role_arn = compose_role_arn;
    opts.kube = KubeOptions {
        kubeconfig: a.kubeconfig,
        kube_api: a.kube_api,
    };
    opts.watch_config_map = a.watch_config_map.then_some(a.namespace);
    opts.container_credentials_config = a.watch_container_credentials_config;
    opts.podiam = podiam;
    opts.lookup = LookupPolicy {
        timeout: a.service_account_lookup_grace_period,
        ..LookupPolicy::default()
    };
    Ok(opts)
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let mut running = start(opts).await?;
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await;
    Ok(())
}

pub fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(WebhookCommand::Manifests(m)) => {
            let opts = ManifestOptions {
                namespace: m.namespace,
                name: m.name,
                image: m.image,
                replicas: m.replicas,
                extra_args: m.extra,
                podiam: m.podiam_endpoint.zip(m.cluster).map(|(endpoint, cluster)| {
                    PodiamAssociations {
                        endpoint,
                        cluster,
                        credentials_secret: m.podiam_credentials_secret,
                        ca_secret: m.podiam_ca_secret,
                    }
                }),
            };
            crate::emit(&render(&opts))?;
            Ok(ExitCode::from(exit::OK))
        }
        None => {
            crate::init_logging(crate::LogColour::WhenTerminal);
            let opts = options(args.serve)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("while starting the async runtime")?;
            runtime.block_on(serve(opts))?;
            Ok(ExitCode::from(exit::OK))
        }
    }
}
