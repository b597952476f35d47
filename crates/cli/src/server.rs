//! `podiam server`: the same server as `podiam up`, configured for a cluster: PostgreSQL shared by
//! several replicas, secrets sealed with a master key, denials not explained to callers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct ServerArgs {
    /// Where the audit log and the administrator's AWS config files go.
    #[arg(long, env = "PODIAM_DATA_DIR", default_value = "/var/lib/podiam")]
    data_dir: PathBuf,
    /// Address to serve on (HTTP, or HTTPS with --tls-cert); port 0 picks a free port (printed on start).
    #[arg(long, env = "PODIAM_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// `postgres://user:password@host:5432/db` (several replicas share it); without it, SQLite in
    /// the data directory.
    #[arg(long, env = "PODIAM_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// 32 bytes (raw or base64) sealing secrets at rest: `head -c 32 /dev/urandom | base64`.
    #[arg(long, env = "PODIAM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// The account ID, fixed at first start.
    #[arg(long, env = "PODIAM_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// The region, fixed at first start (what `aws configure` and the SDKs are given).
    #[arg(long, env = "PODIAM_REGION", default_value = "us-east-1")]
    region: String,
    /// The built-in issuer's public URL (every replica must agree), fixed at first start.
    #[arg(long, env = "PODIAM_ISSUER_URL")]
    issuer_url: Option<String>,
    /// Leave the failed check out of AccessDenied messages (it is always in the audit log).
    #[arg(long, env = "PODIAM_PRODUCTION")]
    production: bool,
    /// EKS Auth: refuse pod tokens that name no node (`kubernetes.io.node.name`) and agents
    /// whose session is bound to no node (a token and an agent that both name one must agree
    /// either way).
    #[arg(long, env = "PODIAM_REQUIRE_NODE_BINDING")]
    require_node_binding: bool,
    /// Serve HTTPS with this certificate (PEM chain), re-read when the file changes.
    #[arg(long, env = "PODIAM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert, re-read with it.
    #[arg(long, env = "PODIAM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// This replica's name in the audit events it writes to the database (`podiam audit
    /// --database-url` lists them all); default: the hostname, which on Kubernetes is the pod's
    /// name. Give replicas that share a host different names.
    #[arg(long, env = "PODIAM_REPLICA_NAME")]
    replica_name: Option<String>,
    #[command(flatten)]
    upstream: crate::upstream::UpstreamArgs,
    #[command(flatten)]
    audit: crate::audit::AuditLogArgs,
    #[command(flatten)]
    report: crate::up::Report,
    #[command(flatten)]
    connections: crate::connections::ConnectionArgs,
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    if args
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"))
        && args.master_key_file.is_none()
    {
        tracing::warn!("no --master-key-file: secrets are stored unsealed in the database");
        eprintln!("warning: no --master-key-file: secrets are stored unsealed in the database");
    }
    crate::up::serve(crate::up::Serve {
        data_dir: args.data_dir,
        listen: args.listen,
        account_id: args.account_id,
        region: args.region,
        issuer_url: args.issuer_url,
        production: args.production,
        require_node_binding: args.require_node_binding,
        database_url: args.database_url,
        master_key_file: args.master_key_file,
        tls: args.tls_cert.zip(args.tls_key),
        replica_name: args.replica_name,
        upstream: args.upstream,
        audit: args.audit.options(),
        report: args.report,
        connections: args.connections.limits(),
    })
}
