//! podiam's STS + IAM server (awsQuery over HTTP, XML out), EKS Pod Identity (REST-JSON) and the
//! built-in OIDC issuer.
//!
//! This file only wires: the module list, [`Options`], [`Server`] and [`start`]. Where things
//! are:
//!
//! | module | is |
//! |---|---|
//! | `start` | bootstrap on first start, the store watch, TLS, the drain on stop |
//! | `http` | the two protocol adapters (awsQuery → XML, REST-JSON) and the plain routes |
//! | `auth` | SigV4 authentication, the caller's policies and context, `authorize` |
//! | `actions` | every authorised action and the condition keys AWS documents for it |
//! | `error` | every AWS error code and status, per protocol |
//! | `issuance` | token → verified claims → trust policy → minted session (STS and EKS Auth) |
//! | `sts`, `eks_auth` | the STS and EKS Auth operations on top of `issuance` |
//! | `iam` (+ `roles`, `policies`, `oidc`, `users`), `simulate` | the IAM API |
//! | `eks` | clusters and pod identity associations |
//! | `local` | typed operations the CLI runs on a data directory, no HTTP |
//! | `instance` | one server per data directory (its lock), and the CLI's sync socket |
//! | `upstream` | broker mode: another account's roles, from its STS (`--upstream-sts`) |
//! | `broker` | what EKS Auth and STS (IRSA) do alike for an upstream role |
//!
//! Served: `POST /` and `GET /?Action=…` (STS 2011-06-15, IAM 2010-05-08), the EKS and EKS Auth
//! REST paths under `/clusters`, `GET /.well-known/openid-configuration` and
//! `GET /openid/v1/jwks` (the built-in issuer), `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use podiam_identity::Clock;

pub(crate) mod actions;
pub mod audit;
pub(crate) mod auth;
mod broker;
pub(crate) mod ctx;
pub(crate) mod eks;
pub(crate) mod eks_auth;
pub mod error;
pub(crate) mod http;
pub mod iam;
mod ids;
pub mod instance;
pub(crate) mod issuance;
pub mod issuer;
pub mod jwks;
pub mod local;
mod managed;
pub(crate) mod metrics;
/// The awsQuery form reader: public for the `query_form` fuzz target (fuzz/), not an API.
#[doc(hidden)]
pub mod query;
mod simulate;
mod start;
pub mod state;
pub(crate) mod sts;
pub mod text;
mod tokens;
pub mod upstream;
pub(crate) mod xml;

use audit::Audit;
use state::Shared;

/// How to run a server.
#[derive(Clone, Debug)]
pub struct Options {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Fixed at first start; later starts keep the stored one.
    pub account_id: String,
    pub region: String,
    /// The built-in issuer's URL; by default the server's own URL at first start.
    pub issuer_url: Option<String>,
    pub explain_denials: bool,
    /// `postgres://…` for several replicas on one database; `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Seals secrets at rest (administrator keys, issuer and session-token keys).
    pub master_key: Option<podiam_store::MasterKey>,
    /// Serve HTTPS with this configuration (its certificate resolver may reload from files).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Names this server in the audit events it writes to PostgreSQL; by default the hostname.
    pub replica_name: Option<String>,
    /// Where every request reads its time (once); the system clock unless a test fixes it.
    pub clock: ServerClock,
    /// Broker mode: sessions of other accounts' roles come from this STS. `None`: only
    /// podiam's own account.
    pub upstream: Option<upstream::UpstreamOptions>,
    /// How the audit trail is kept on disk (rotation, sampling of unauthenticated refusals).
    pub audit: audit::AuditOptions,
    /// Header, body and TLS handshake timeouts, and the bound on concurrent connections.
    pub connections: podiam_net::ConnectionLimits,
    /// EKS Auth refuses pod tokens that name no node, and agents whose session is bound to no
    /// node (`--require-node-binding`); a token and an agent that both name a node must agree
    /// either way.
    pub require_node_binding: bool,
}

/// The clock a server reads, shared by its requests (as rustls's `ServerConfig` holds a
/// `TimeProvider`).
#[derive(Clone)]
pub struct ServerClock(pub Arc<dyn Clock + Send + Sync>);

impl ServerClock {
    pub fn now(&self) -> SystemTime {
        self.0.now()
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        auth::millis(self.now())
    }
}

impl Default for ServerClock {
    fn default() -> Self {
        ServerClock(Arc::new(podiam_identity::SystemClock))
    }
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerClock")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory `{path}`: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] podiam_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] issuer::KeyError),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the account ID must be 12 digits, not `{0}`")]
    AccountId(String),
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub first_start: bool,
    pub aws_config_file: PathBuf,
    pub aws_credentials_file: PathBuf,
    pub account_id: String,
    pub shared: Arc<Shared>,
    audit: Audit,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves until the process ends or the serving task fails.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    pub fn abort(&self) {
        self.task.abort();
    }

    /// Serves until `stop` completes (then [`Server::shutdown`]) or the serving task fails.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let ended = tokio::select! {
            r = &mut self.task => Some(r),
            () = stop => None,
        };
        match ended {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(std::io::Error::other(e)),
            None => {
                self.shutdown(std::time::Duration::from_secs(5)).await;
                Ok(())
            }
        }
    }

    /// Stops accepting connections, lets the requests being answered finish, waits until every
    /// audit event recorded so far is in `audit.log` (a stop, Ctrl-C or SIGTERM, loses no
    /// decision already made: all within `grace`), and closes the database.
    pub async fn shutdown(self, grace: std::time::Duration) {
        start::drain(self, grace).await;
    }
}

/// Opens the store (bootstrapping it on first start), binds, and serves in the background.
pub async fn start(options: Options) -> Result<Server, StartError> {
    start::run(options, false).await
}

/// [`start`], plus `POST /__bench/noop`: reads the form body and answers a fixed 200, the
/// baseline `podiam bench` compares AssumeRoleWithWebIdentity against. Not served otherwise.
pub async fn start_with_bench_noop(options: Options) -> Result<Server, StartError> {
    start::run(options, true).await
}
