//! `podiam agent`: the node agent (EKS Pod Identity container credentials, optional IMDS), and
//! `podiam agent manifests` to deploy it as a DaemonSet.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use podiam_agent::aws_chain::ChainKey;
use podiam_agent::http_source::{HttpSourceConfig, node_role_session_name};
use podiam_agent::imds::{InstanceIdentity, PodIpMap, instance_id_for};
use podiam_agent::manifests::{ImdsManifest, ManifestOptions, render};
use podiam_agent::metrics::Metrics;
use podiam_agent::pod_watch::watch_node_pods;
use podiam_agent::server::{DEFAULT_LISTEN, ImdsOptions, ServeOptions, start};
use podiam_agent::{AgentClock, CacheConfig, CredentialCache, HttpSource};
use podiam_identity::sigv4::KeySource;
use podiam_webhook::flags::parse_go_duration;
use podiam_webhook::server::{KubeOptions, kube_client};

use crate::exit;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Print the DaemonSet and ServiceAccount for `kubectl apply -f -`.
    Manifests(ManifestArgs),
}

#[derive(Args)]
struct ManifestArgs {
    /// Namespace to deploy into.
    #[arg(long, default_value = "podiam")]
    namespace: String,
    /// Name of the objects.
    #[arg(long, default_value = "podiam-agent")]
    name: String,
    /// Image whose entrypoint is the `podiam` binary (the one `scripts/build-image` builds, pushed
    /// to your registry).
    #[arg(long, default_value = podiam_agent::manifests::IMAGE)]
    image: String,
    /// Image with `ip`, for the init container that adds the link-local addresses.
    #[arg(long, default_value = "busybox:1.37")]
    init_image: String,
    /// The cluster's name in podiam (`podiam cluster create NAME`).
    #[arg(
        long = "cluster",
        visible_alias = "cluster-name",
        default_value = "my-cluster"
    )]
    cluster_name: String,
    /// podiam's URL as nodes reach it.
    #[arg(long, default_value = "https://podiam.example.com")]
    server: String,
    /// Signing region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The agent role, assumed by web identity with each agent's projected ServiceAccount token
    /// (one session per node, bound to it).
    #[arg(long, default_value = "arn:aws:iam::000000000000:role/podiam-agent")]
    role_arn: String,
    /// Audience of the projected token (a client ID of the OIDC provider of the cluster's issuer).
    #[arg(long, default_value = "sts.amazonaws.com")]
    token_audience: String,
    /// Instead of the role: a Secret with `aws_access_key_id` and `aws_secret_access_key` for the
    /// agent (a long-lived key on every node).
    #[arg(long, conflicts_with = "role_arn")]
    key_secret: Option<String>,
    /// Probe and metrics port.
    #[arg(long, default_value_t = 2705)]
    probe_port: u16,
    /// UID of the agent container (needs an image granting NET_BIND_SERVICE as a file capability
    /// when not 0).
    #[arg(long, default_value_t = 0)]
    run_as_user: i64,
    /// Turn IMDS on at this address, its callers known from a watch of the node's pods (adds
    /// RBAC get/list/watch on pods and the API token).
    #[arg(long, requires = "imds_node_role_arn")]
    imds_listen: Option<String>,
    /// The role IMDS hands out (with --imds-listen).
    #[arg(long, requires = "imds_listen")]
    imds_node_role_arn: Option<String>,
    /// Namespace whose pods may read the node role (repeatable; with --imds-listen).
    #[arg(long, requires = "imds_listen")]
    imds_allow_namespace: Vec<String>,
    /// Extra `podiam agent` flags, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).ok_or_else(|| format!("`{s}` is not a duration like 500ms, 10s or 5m"))
}

#[derive(Args)]
struct ServeArgs {
    /// The cluster's name in podiam (EKS Auth `clusterName`; `--cluster-name`, as
    /// eks-pod-identity-agent spells it, works too).
    #[arg(long = "cluster", visible_alias = "cluster-name", env = "CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// podiam's base URL (EKS Auth and, unless --sts-endpoint, STS).
    #[arg(long, env = "PODIAM_SERVER")]
    server: Option<String>,
    /// STS base URL for the node role (default: --server).
    #[arg(long)]
    sts_endpoint: Option<String>,
    /// SigV4 signing region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// AWS shared-credentials file with the agent's key (re-read when it changes). Without it,
    /// the AWS SDK's standard credential chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY;
    /// AWS_PROFILE in AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE (credential_process too);
    /// web identity (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_SESSION_NAME, with STS
    /// at AWS_ENDPOINT_URL_STS: the DaemonSet's default); container credentials; IMDS.
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Profile in --credentials-file (the chain reads AWS_PROFILE).
    #[arg(long, default_value = "default")]
    profile: String,
    /// Container credentials address (repeatable). One that cannot be bound is skipped.
    #[arg(long = "listen", default_values = DEFAULT_LISTEN)]
    listen: Vec<SocketAddr>,
    /// Address for /healthz, /readyz and /metrics ("off" disables it).
    #[arg(long, default_value = "0.0.0.0:2705")]
    probe_listen: String,
    /// Background renewals per second, across all pods.
    #[arg(long, default_value_t = 10)]
    renewals_per_second: u32,
    /// Stop renewing for a pod once the credentials it last received have been expired this long.
    #[arg(long, default_value = "5m", value_parser = duration)]
    idle_grace: Duration,
    /// Most pods cached.
    #[arg(long, default_value_t = 20_000)]
    max_cache_size: usize,
    /// Per-attempt timeout for calls to podiam.
    #[arg(long, default_value = "3s", value_parser = duration)]
    server_timeout: Duration,
    /// IMDS address (repeatable); IMDS is off without one.
    #[arg(long)]
    imds_listen: Vec<SocketAddr>,
    /// Answer IMDSv1 (no session token). Off: such requests get 401.
    #[arg(long)]
    imds_v1: bool,
    /// Namespace whose pods may read the node role's credentials (repeatable).
    #[arg(long)]
    imds_allow_namespace: Vec<String>,
    /// JSON {"POD_IP": "namespace"} identifying IMDS callers; re-read when it changes.
    #[arg(long, conflicts_with = "watch_pods")]
    pod_ip_map: Option<PathBuf>,
    /// Identify IMDS callers by watching this node's pods (--node-name) through the Kubernetes
    /// API (RBAC: get, list, watch pods). An address not (yet) known is refused.
    #[arg(long)]
    watch_pods: bool,
    /// kubeconfig for --watch-pods; default: in-cluster config, then $KUBECONFIG or ~/.kube/config.
    #[arg(long, requires = "watch_pods")]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes API server URL for --watch-pods, overriding the kubeconfig's.
    #[arg(long, requires = "watch_pods")]
    kube_api: Option<String>,
    /// How often --pod-ip-map is checked for changes.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pod_ip_map_interval: Duration,
    /// Role whose credentials IMDS serves (STS AssumeRole with the agent's key).
    #[arg(long)]
    node_role_arn: Option<String>,
    /// This node's name (session name, instance id).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// IMDS instance-id (default: derived from the node name).
    #[arg(long)]
    instance_id: Option<String>,
    /// IMDS placement/availability-zone (default: region + "a").
    #[arg(long)]
    availability_zone: Option<String>,
    #[command(flatten)]
    connections: crate::connections::ConnectionArgs,
}

struct Prepared {
    source: HttpSource,
    /// The key `source` signs with (a clone sharing its cache).
    key: KeySource,
    cache: CacheConfig,
    serve: ServeOptions,
    pod_ip_map: Option<(Arc<PodIpMap>, Duration)>,
    /// `--watch-pods`: how to reach the API, this node, and the map the watch fills.
    pod_watch: Option<(KubeOptions, String, Arc<PodIpMap>)>,
}

/// Validates everything before any port is bound.
fn prepare(a: ServeArgs, clock: AgentClock) -> anyhow::Result<Prepared> {
    let Some(cluster_name) = a.cluster_name else {
        bail!("--cluster is required: the name the cluster has in podiam (`podiam get cluster`)");
    };
    // botocore eks-auth: clusterName is 1-100 of [0-9A-Za-z][A-Za-z0-9\-_]*.
    let valid_name = cluster_name.len() <= 100
        && cluster_name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && cluster_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        bail!("--cluster `{cluster_name}` is not 1-100 of [0-9A-Za-z][A-Za-z0-9-_]*");
    }
    let Some(server) = a.server else {
        bail!("--server is required (podiam's URL, e.g. http://127.0.0.1:8080)");
    };
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("--server `{server}` is not an http(s) URL");
    }
    let key = match &a.credentials_file {
        Some(path) => KeySource::file(path, &a.profile)?,
        None => chain_key(&a.region, clock),
    };
    if a.watch_pods && a.node_name.is_none() {
        bail!("--watch-pods needs --node-name (NODE_NAME): the node whose pods to watch");
    }
    if a.watch_pods && a.imds_listen.is_empty() {
        bail!("--watch-pods identifies IMDS callers: give --imds-listen too");
    }
    let node_name = a
        .node_name
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".to_owned());
    let mut pod_watch = None;
    let source = HttpSource::new(
        HttpSourceConfig {
            sts_endpoint: a.sts_endpoint.unwrap_or_else(|| server.clone()),
            eks_auth_endpoint: server,
            region: a.region.clone(),
            node_role_arn: a.node_role_arn.clone(),
            node_role_session_name: node_role_session_name(&node_name),
            timeout: a.server_timeout,
            attempts: 2,
        },
        key.clone(),
        clock,
    )?;
    let mut cache = CacheConfig::new(cluster_name);
    if a.renewals_per_second == 0 {
        bail!("--renewals-per-second must be at least 1");
    }
    cache.renewals_per_second = a.renewals_per_second;
    cache.idle_grace = a.idle_grace;
    cache.max_entries = a.max_cache_size.max(1);

    let probe_listen = match a.probe_listen.as_str() {
        "off" | "" => None,
        s => Some(
            s.parse::<SocketAddr>()
                .with_context(|| format!("--probe-listen `{s}`"))?,
        ),
    };
    let mut pod_ip_map = None;
    let imds = if a.imds_listen.is_empty() {
        None
    } else {
        let Some(role_arn) = &a.node_role_arn else {
            bail!("--imds-listen needs --node-role-arn (the role IMDS hands out)");
        };
        // arn:PARTITION:iam::ACCOUNT:role/PATH/NAME
        let mut parts = role_arn.splitn(6, ':');
        let (Some("arn"), Some(_), Some("iam"), Some(_), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            bail!("--node-role-arn `{role_arn}` is not an IAM role ARN");
        };
        let Some(role_name) = resource
            .strip_prefix("role/")
            .and_then(|r| r.rsplit('/').next())
        else {
            bail!("--node-role-arn `{role_arn}` is not an IAM role ARN");
        };
        let pods = match &a.pod_ip_map {
            Some(path) => {
                let map = Arc::new(PodIpMap::load(path)?);
                pod_ip_map = Some((Arc::clone(&map), a.pod_ip_map_interval));
                map
            }
            None => Arc::new(PodIpMap::fixed(Default::default())),
        };
        if a.watch_pods {
            let kube = KubeOptions {
                kubeconfig: a.kubeconfig.clone(),
                kube_api: a.kube_api.clone(),
            };
            pod_watch = Some((kube, node_name.clone(), Arc::clone(&pods)));
        }
        Some(ImdsOptions {
            listen: a.imds_listen,
            identity: InstanceIdentity {
                role_name: role_name.to_owned(),
                instance_id: a.instance_id.unwrap_or_else(|| instance_id_for(&node_name)),
                availability_zone: a
                    .availability_zone
                    .unwrap_or_else(|| format!("{}a", a.region)),
                region: a.region,
                account_id: account.to_owned(),
                private_ip: None,
            },
            allow_v1: a.imds_v1,
            allow_namespaces: a.imds_allow_namespace.into_iter().collect::<HashSet<_>>(),
            pods,
        })
    };
    Ok(Prepared {
        source,
        key,
        cache,
        serve: ServeOptions {
            listen: a.listen,
            probe_listen,
            imds,
            shutdown_grace: Duration::from_secs(10),
            connections: a.connections.limits(),
        },
        pod_ip_map,
        pod_watch,
    })
}

/// The AWS SDK's standard chain, for the agent's and the webhook's own identity.
pub(crate) fn chain_key(region: &str, clock: AgentClock) -> KeySource {
    KeySource::Provider(Arc::new(ChainKey::standard(region, clock, |k| {
        std::env::var(k).ok()
    })))
}

/// Resolves the key once at start, so a missing identity is in the log at once; a failure is not
/// fatal (the chain is asked again at the first request: STS may just not be up yet).
pub(crate) async fn check_key(key: &KeySource, who: &str) {
    match tokio::time::timeout(Duration::from_secs(20), key.current()).await {
        Ok(Ok(k)) => {
            tracing::info!(access_key_id = %k.key.access_key_id.as_str(), "{who}: AWS credentials resolved")
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{who}: no AWS credentials yet; asking again at the first request")
        }
        Err(_) => tracing::error!(
            "{who}: the AWS credential chain did not answer within 20 s; asking again at the first request"
        ),
    }
}

async fn serve(p: Prepared, clock: AgentClock) -> anyhow::Result<()> {
    let key = p.key.clone();
    let metrics = Arc::new(Metrics::default());
    let cache = CredentialCache::new(p.source, p.cache, clock, Arc::clone(&metrics));
    let renewals = cache.spawn_renewals();
    let reload = p
        .pod_ip_map
        .map(|(map, interval)| map.spawn_reload(interval));
    let watch = match p.pod_watch {
        Some((kube, node, map)) => {
            let client = kube_client(&kube).await?;
            Some(tokio::spawn(watch_node_pods(client, node, map)))
        }
        None => None,
    };
    let running = start(cache, metrics, p.serve).await?;
    tokio::spawn(async move { check_key(&key, "agent").await });
    // Tests and scripts read the bound addresses (port 0 picks one) from stdout.
    let mut out = String::new();
    for a in &running.credential_addrs {
        out.push_str(&format!("credentials http://{a}/v1/credentials\n"));
    }
    for a in &running.imds_addrs {
        out.push_str(&format!("imds http://{a}\n"));
    }
    if let Some(a) = running.probe_addr {
        out.push_str(&format!("probe http://{a}\n"));
    }
    out.push_str("podiam agent ready\n");
    crate::emit(&out)?;
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
    renewals.abort();
    if let Some(r) = reload {
        r.abort();
    }
    if let Some(w) = watch {
        w.abort();
    }
    running.shutdown().await;
    Ok(())
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AgentCommand::Manifests(m)) => {
            let opts = ManifestOptions {
                namespace: m.namespace,
                name: m.name,
                image: m.image,
                init_image: m.init_image,
                cluster_name: m.cluster_name,
                server: m.server,
                region: m.region,
                role_arn: m.role_arn,
                token_audience: m.token_audience,
                key_secret: m.key_secret,
                probe_port: m.probe_port,
                run_as_user: m.run_as_user,
                extra_args: m.extra,
                imds: m
                    .imds_listen
                    .zip(m.imds_node_role_arn)
                    .map(|(listen, node_role_arn)| ImdsManifest {
                        listen,
                        node_role_arn,
                        allow_namespaces: m.imds_allow_namespace,
                    }),
            };
            crate::emit(&render(&opts))?;
            Ok(ExitCode::from(exit::OK))
        }
        None => {
            crate::init_logging(crate::LogColour::WhenTerminal);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("while starting the async runtime")?;
            runtime.block_on(async {
                let clock = AgentClock::system();
                let prepared = prepare(args.serve, clock)?;
                serve(prepared, clock).await
            })?;
            Ok(ExitCode::from(exit::OK))
        }
    }
}
