//! podiam's STS + IAM server (awsQuery over HTTP, XML out) with the built-in OIDC issuer.
//!
//! `start` opens the store, bootstraps it on first start (account, administrator key, issuer
//! and session keys, the issuer's own OIDC provider, AWS managed policies), and serves:
//! - `POST /` and `GET /?Action=…`: STS (Version 2011-06-15) and IAM (Version 2010-05-08);
//! - `GET /.well-known/openid-configuration` and `GET /openid/v1/jwks`: the built-in issuer;
//! - `GET /healthz`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use podiam_identity::{
    AccessKeyKind, HttpRequest, SigV4Auth, SigV4Error, SystemClock, VerifyOptions,
};
use podiam_store::{Change, State, Store, User};

pub mod audit;
pub mod auth;
pub mod eks;
pub mod error;
pub mod iam;
mod ids;
pub mod issuer;
pub mod jwks;
pub mod local;
mod managed;
pub mod metrics;
pub mod query;
mod simulate;
pub mod state;
pub mod sts;
mod tokens;
pub mod xml;

use audit::Audit;
use auth::{Caller, RequestFacts};
use error::AwsError;
use query::Params;
use state::{Config, Shared};

/// What one request handler sees.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub caller: Option<Caller>,
    pub facts: RequestFacts,
    pub request_id: &'a str,
    pub audit: &'a Audit,
}

impl Ctx<'_> {
    /// The authenticated caller; unsigned requests get `MissingAuthenticationToken`.
    pub fn signed_caller(&self) -> Result<&Caller, AwsError> {
        self.caller.as_ref().ok_or_else(missing_authentication)
    }
}

fn missing_authentication() -> AwsError {
    AwsError::new(
        "MissingAuthenticationToken",
        StatusCode::FORBIDDEN,
        "Request is missing Authentication Token",
    )
}

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
        // No new connections; requests already being answered finish (their connections' tasks
        // outlive the accept loop), within the grace period.
        self.task.abort();
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("stopping with requests still being answered");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // A response just produced is still being written by its connection task.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let grace = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(std::time::Duration::from_secs(1));
        if !self.audit.flush(grace).await {
            tracing::warn!("stopping before every audit event was written");
        }
        // Closing the pool checkpoints SQLite's write-ahead log and removes its -wal/-shm files.
        self.shared.store().close().await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const ADMIN_USER: &str = "podiam-admin";

pub async fn start(options: Options) -> Result<Server, StartError> {
    start_with(options, false).await
}

/// [`start`], plus `POST /__bench/noop`: reads the form body and answers a fixed 200, the
/// baseline `podiam bench` compares AssumeRoleWithWebIdentity against. Not served otherwise.
pub async fn start_with_bench_noop(options: Options) -> Result<Server, StartError> {
    start_with(options, true).await
}

async fn start_with(options: Options, bench_noop: bool) -> Result<Server, StartError> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir.join("aws")).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let store = match &options.database_url {
        Some(url) => Store::open(url).await?,
        None => Store::open_sqlite(&dir.join("podiam.db")).await?,
    }
    .with_master_key(options.master_key.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: options.listen,
        source,
    })?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = format!("{scheme}://{addr}");

    let mut state = store.load().await?;
    let mut first_start = false;
    if !state.settings.contains_key("account_id") {
        // Replicas starting together on an empty database: the first bootstrap wins, the others
        // load what it wrote (and do not report a first start).
        (state, first_start) =
            write_unless_raced(&store, state, bootstrap(&options, &endpoint)?).await?;
    }
    // Shipped AWS managed policies follow the binary: add any this version knows and the store lacks.
    let partition = "aws".to_string();
    let missing: Vec<Change> = managed::aws_managed(&partition)
        .into_iter()
        .filter(|p| !state.policies.contains_key(&p.arn))
        .map(|p| Change::Policy(p.arn.clone(), Some(p)))
        .collect();
    if !missing.is_empty() {
        state = write_unless_raced(&store, state, missing).await?.0;
    }
    let setting = |k: &str| state.settings.get(k).cloned().unwrap_or_default();
    let config = Config {
        account_id: setting("account_id"),
        region: setting("region"),
        partition,
        explain_denials: options.explain_denials,
        limits: podiam_policy::Limits::default(),
        issuer_url: setting("issuer_url"),
    };
    let (config_file, credentials_file) = write_aws_files(dir, &state, &config, &endpoint)?;
    let account_id = config.account_id.clone();
    let shared = Arc::new(Shared::new(config, store, state)?);
    let audit = Audit::start(
        dir.join("audit.log"),
        audit::DatabaseSink::for_server(&shared, options.replica_name.clone()),
    );
    tokio::spawn(watch_store(Arc::clone(&shared)));
    let mut app = router(Arc::clone(&shared), audit.clone(), options.tls.is_some());
    if bench_noop {
        app = app.route(
            "/__bench/noop",
            axum::routing::post(|body: Bytes| async move {
                std::hint::black_box(body);
                "ok\n"
            }),
        );
    }
    // Counts requests being answered, so that a stop lets them finish (see `Server::shutdown`).
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::clone(&in_flight),
        count_in_flight,
    ));
    let task = match options.tls.clone() {
        None => tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        }),
        Some(tls) => tokio::spawn(serve_tls(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            app,
        )),
    };
    Ok(Server {
        addr,
        endpoint,
        first_start,
        aws_config_file: config_file,
        aws_credentials_file: credentials_file,
        account_id,
        shared,
        audit,
        in_flight,
        task,
    })
}

/// Middleware: one more request in flight until its response is produced (or it is dropped).
async fn count_in_flight(
    AxumState(in_flight): AxumState<Arc<std::sync::atomic::AtomicUsize>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    struct Guard(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
    in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let _guard = Guard(in_flight);
    next.run(request).await
}

/// Writes start-up changes unless another replica wrote them first, and returns the state after
/// and whether these changes were the ones written.
async fn write_unless_raced(
    store: &Store,
    mut state: State,
    changes: Vec<Change>,
) -> Result<(State, bool), StartError> {
    let checked: Vec<(Change, Change)> = changes
        .iter()
        .map(|c| (c.clone(), state.current(c)))
        .collect();
    match store.apply_checked(&checked).await {
        Ok(()) => {
            for c in &changes {
                state.apply(c);
            }
            Ok((state, true))
        }
        Err(podiam_store::StoreError::Conflict { .. }) => Ok((store.load().await?, false)),
        Err(e) => Err(e.into()),
    }
}

/// HTTPS: TLS handshakes (bounded in time) then HTTP/1.1 or HTTP/2 on the same router.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) -> std::io::Result<()> {
    const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let _ = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How often to look for writes made by other processes (`podiam create iamserviceaccount`,
/// `podiam issuer rotate`, another replica).
const STORE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the in-memory state in step with writes made elsewhere: PostgreSQL `LISTEN/NOTIFY`
/// (immediate), and a version poll as the fallback should a notification be lost.
async fn watch_store(shared: Arc<Shared>) {
    match shared.store().listen().await {
        Ok(Some(mut listener)) => {
            let notified = Arc::clone(&shared);
            tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(_) => {
                            if let Err(e) = notified.refresh().await {
                                tracing::error!(error = %e.message, "cannot reload the state");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the database notification channel; polling until it is back");
                            tokio::time::sleep(STORE_POLL).await;
                        }
                    }
                }
            });
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot listen for writes; polling"),
    }
    poll_store(shared).await;
}

async fn poll_store(shared: Arc<Shared>) {
    let mut last = shared.store().version().await.ok();
    let mut tick = tokio::time::interval(STORE_POLL);
    loop {
        tick.tick().await;
        let Ok(v) = shared.store().version().await else {
            continue;
        };
        if Some(v) != last {
            last = Some(v);
            if let Err(e) = shared.refresh().await {
                tracing::error!(error = %e.message, "cannot reload the state");
            }
        }
    }
}

/// First start: the account, an administrator with an access key, issuer and session keys, and
/// the built-in issuer registered as an OIDC provider for `sts.amazonaws.com`.
fn bootstrap(options: &Options, endpoint: &str) -> Result<Vec<Change>, StartError> {
    let account = &options.account_id;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StartError::AccountId(account.clone()));
    }
    let now = now_ms();
    let issuer_url = options
        .issuer_url
        .clone()
        .unwrap_or_else(|| endpoint.to_string());
    let id_err = |e: AwsError| StartError::Keys(issuer::KeyError::Generate(e.message));
    let (key_id, secret) = ids::access_key().map_err(id_err)?;
    let admin = User {
        user_name: ADMIN_USER.into(),
        path: "/".into(),
        user_id: ids::unique("AIDA").map_err(id_err)?,
        arn: format!("arn:aws:iam::{account}:user/{ADMIN_USER}"),
        create_date: now,
        tags: Vec::new(),
        inline_policies: Default::default(),
        attached_policy_arns: Vec::new(),
        admin: true,
    };
    let signing = issuer::new_signing_key(now)?;
    let sealing = issuer::new_sealing_key(1, now)?;
    let provider_host = iam::provider_id(&issuer_url).unwrap_or_default();
    let provider = podiam_store::OidcProvider {
        arn: format!("arn:aws:iam::{account}:oidc-provider/{provider_host}"),
        url: issuer_url.clone(),
        client_ids: vec!["sts.amazonaws.com".into()],
        thumbprints: Vec::new(),
        create_date: now,
        tags: Vec::new(),
        static_jwks: None,
    };
    Ok(vec![
        Change::Setting("account_id".into(), Some(account.clone())),
        Change::Setting("region".into(), Some(options.region.clone())),
        Change::Setting("issuer_url".into(), Some(issuer_url)),
        Change::Setting("admin_access_key_id".into(), Some(key_id.clone())),
        Change::User(ADMIN_USER.into(), Some(admin)),
        Change::AccessKey(
            key_id.clone(),
            Some(podiam_store::AccessKey {
                access_key_id: key_id,
                secret_access_key: secret,
                user_name: ADMIN_USER.into(),
                status: "Active".into(),
                create_date: now,
            }),
        ),
        Change::SigningKey(signing.kid.clone(), Some(signing)),
        Change::SealingKey(sealing.id.clone(), Some(sealing)),
        Change::OidcProvider(provider.arn.clone(), Some(provider)),
    ])
}

/// `DIR/aws/config` (rewritten every start: the port may change) and `DIR/aws/credentials`
/// (the administrator's key; only the owner may read it).
fn write_aws_files(
    dir: &Path,
    state: &State,
    config: &Config,
    endpoint: &str,
) -> Result<(PathBuf, PathBuf), StartError> {
    let config_path = dir.join("aws").join("config");
    let credentials_path = dir.join("aws").join("credentials");
    let write = |path: &Path, text: &str| -> Result<(), StartError> {
        let err = |source| StartError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    };
    write(
        &config_path,
        &format!(
            "[profile podiam]\nregion = {}\nendpoint_url = {endpoint}\noutput = json\n",
            config.region
        ),
    )?;
    let admin_key = state
        .settings
        .get("admin_access_key_id")
        .and_then(|id| state.access_keys.get(id));
    if let Some(key) = admin_key
        && (!credentials_path.exists()
            || std::fs::read_to_string(&credentials_path)
                .map_or(true, |t| !t.contains(&key.access_key_id)))
    {
        write(
            &credentials_path,
            &format!(
                "[podiam]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                key.access_key_id, key.secret_access_key
            ),
        )?;
    }
    Ok((config_path, credentials_path))
}

// === HTTP ===

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    audit: Audit,
    /// Served over HTTPS: `aws:SecureTransport` is true.
    tls: bool,
}

/// Policy documents are at most a few KiB; form bodies larger than this are refused.
const MAX_BODY: usize = 256 * 1024;

fn router(shared: Arc<Shared>, audit: Audit, tls: bool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|AxumState(app): AxumState<App>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    app.shared.metrics.render(),
                )
            }),
        )
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/openid/v1/jwks", get(jwks))
        .route("/", get(aws_query).post(aws_query))
        .route("/clusters", get(rest).post(rest))
        .route("/clusters/{name}", get(rest).delete(rest))
        .route(
            "/clusters/{name}/pod-identity-associations",
            get(rest).post(rest),
        )
        .route(
            "/clusters/{name}/pod-identity-associations/{id}",
            get(rest).post(rest).delete(rest),
        )
        .route(
            "/clusters/{name}/assume-role-for-pod-identity",
            axum::routing::post(rest),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(App { shared, audit, tls })
}

/// Ready when the database answers (the state was loaded at start, so caches are warm).
async fn readyz(AxumState(app): AxumState<App>) -> Response {
    match app.shared.store().version().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not reachable\n",
            )
                .into_response()
        }
    }
}

async fn discovery(AxumState(app): AxumState<App>) -> Response {
    let doc = podiam_identity::OidcDiscovery::for_issuer(&app.shared.config.issuer_url);
    json_response(&doc)
}

async fn jwks(AxumState(app): AxumState<App>) -> Response {
    let doc = app.shared.keys().issuer.jwks(SystemTime::now());
    json_response(&doc)
}

fn json_response(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A request ID in AWS's form (a version 4 UUID). IDs must be unique, not secret: a random
/// per-process base with a counter mixed into its low half (SplitMix64, a bijection, so no two
/// requests of a process share one) costs no system call per request.
fn request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = BASE.get_or_init(|| {
        let mut b = [0u8; 16];
        let _ = podiam_identity::Rng::fill(&podiam_identity::SystemRng, &mut b);
        b
    });
    let mut z = COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut b = *base;
    for (dst, src) in b[8..].iter_mut().zip(z.to_be_bytes()) {
        *dst ^= src;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

async fn aws_query(
    AxumState(app): AxumState<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let rid = request_id();
    let query = uri.query().unwrap_or("");
    let mut params = Params::parse(query.as_bytes());
    if method == Method::POST {
        params.extend(Params::parse(&body));
    }
    // STS and IAM share the endpoint; the Version (or, without one, the action) says which.
    let action = params.get("Action").unwrap_or("").to_string();
    let is_sts = match params.get("Version") {
        Some("2011-06-15") => true,
        Some("2010-05-08") => false,
        _ => matches!(
            action.as_str(),
            "AssumeRole" | "AssumeRoleWithWebIdentity" | "GetCallerIdentity"
        ),
    };
    let ns = if is_sts { sts::NS } else { iam::NS };
    let facts = request_facts(&app, peer, &headers);
    let result = async {
        if action.is_empty() {
            return Err(AwsError::new(
                "MissingAction",
                StatusCode::BAD_REQUEST,
                "Missing Action",
            ));
        }
        // AssumeRoleWithWebIdentity is unsigned on AWS: the token is the credential.
        let caller = if is_sts && action == "AssumeRoleWithWebIdentity" {
            None
        } else {
            Some(authenticate(
                &app.shared,
                &method,
                &uri,
                &headers,
                &body,
                &["sts", "iam"],
            )?)
        };
        let ctx = Ctx {
            shared: &app.shared,
            caller,
            facts,
            request_id: &rid,
            audit: &app.audit,
        };
        if is_sts {
            sts::handle(&ctx, &action, &params).await
        } else {
            let r = iam::handle(&ctx, &action, &params).await;
            if let Err(e) = &r
                && e.code == "AccessDenied"
            {
                let mut ev = audit::Event::new(&ctx, &action);
                ev.subject = ctx.caller.as_ref().map(|c| c.arn().to_string());
                // A role session's denial belongs to its role (`podiam audit --role`, also in
                // the database), with the pod it was issued to when the session says.
                if let Some(auth::Caller::Session(s)) = &ctx.caller {
                    ev.role = Some(s.role_arn.clone());
                    ev.session_name = Some(s.role_session_name.clone());
                    if let podiam_identity::session::SessionSource::PodIdentity {
                        namespace,
                        service_account,
                        pod_name,
                        ..
                    } = &s.source
                    {
                        ev.namespace = Some(namespace.clone());
                        ev.service_account = Some(service_account.clone());
                        ev.pod = Some(pod_name.clone());
                    }
                }
                ev.finish(&r);
                app.audit.record(ev);
            }
            r
        }
    }
    .await;
    app.shared.metrics.record(
        if is_sts { "sts" } else { "iam" },
        &action,
        result.as_ref().err().map(|e| e.code),
        started.elapsed().as_secs_f64(),
    );
    match result {
        Ok(body) => xml_response(StatusCode::OK, body, &rid),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(code = e.code, message = %e.message, request_id = %rid, "request failed");
            }
            let body = xml::Xml::error(ns, e.fault(), e.code, &e.message, &rid);
            xml_response(e.status, body, &rid)
        }
    }
}

/// What policies may test about the request itself: `aws:SourceIp`, `aws:SecureTransport`, …
fn request_facts(app: &App, peer: SocketAddr, headers: &HeaderMap) -> RequestFacts {
    RequestFacts {
        source_ip: Some(peer.ip().to_string()),
        secure_transport: app.tls,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        now: now_ms(),
    }
}

/// The REST-JSON APIs: EKS's clusters and pod identity associations, and EKS Auth.
async fn rest(
    AxumState(app): AxumState<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let rid = request_id();
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let eks_auth = segments.get(2) == Some(&"assume-role-for-pod-identity");
    let facts = request_facts(&app, peer, &headers);
    let result = async {
        let services: &[&str] = if eks_auth { &["eks-auth"] } else { &["eks"] };
        let caller = authenticate(&app.shared, &method, &uri, &headers, &body, services)?;
        let ctx = Ctx {
            shared: &app.shared,
            caller: Some(caller),
            facts,
            request_id: &rid,
            audit: &app.audit,
        };
        let json_body = || -> Result<serde_json::Value, AwsError> {
            if body.is_empty() {
                return Ok(serde_json::Value::Object(Default::default()));
            }
            serde_json::from_slice(&body).map_err(|e| {
                AwsError::new(
                    if eks_auth {
                        "InvalidRequestException"
                    } else {
                        "InvalidParameterException"
                    },
                    StatusCode::BAD_REQUEST,
                    format!("The request body is not valid JSON: {e}"),
                )
            })
        };
        let query = Params::parse(uri.query().unwrap_or("").as_bytes());
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["clusters"]) => eks::list_clusters(&ctx),
            (Method::POST, ["clusters"]) => eks::create_cluster(&ctx, &json_body()?).await,
            (Method::GET, ["clusters", name]) => eks::describe_cluster(&ctx, name),
            (Method::DELETE, ["clusters", name]) => eks::delete_cluster(&ctx, name).await,
            (Method::GET, ["clusters", name, "pod-identity-associations"]) => {
                eks::list_associations(&ctx, name, &query)
            }
            (Method::POST, ["clusters", name, "pod-identity-associations"]) => {
                eks::create_association(&ctx, name, &json_body()?).await
            }
            (Method::GET, ["clusters", name, "pod-identity-associations", id]) => {
                eks::describe_association(&ctx, name, id)
            }
            (Method::POST, ["clusters", name, "pod-identity-associations", id]) => {
                eks::update_association(&ctx, name, id, &json_body()?).await
            }
            (Method::DELETE, ["clusters", name, "pod-identity-associations", id]) => {
                eks::delete_association(&ctx, name, id).await
            }
            (Method::POST, ["clusters", name, "assume-role-for-pod-identity"]) => {
                eks::assume_role_for_pod_identity(&ctx, name, &json_body()?).await
            }
            _ => Err(AwsError::new(
                "NotFoundException",
                StatusCode::NOT_FOUND,
                format!("No such operation: {method} {}", uri.path()),
            )),
        }
    }
    .await;
    let operation = match (method.as_str(), segments.len(), segments.last().copied()) {
        (_, _, Some("assume-role-for-pod-identity")) => "AssumeRoleForPodIdentity",
        ("GET", 1, _) => "ListClusters",
        ("POST", 1, _) => "CreateCluster",
        ("GET", 2, _) => "DescribeCluster",
        ("DELETE", 2, _) => "DeleteCluster",
        ("GET", 3, _) => "ListPodIdentityAssociations",
        ("POST", 3, _) => "CreatePodIdentityAssociation",
        ("GET", 4, _) => "DescribePodIdentityAssociation",
        ("POST", 4, _) => "UpdatePodIdentityAssociation",
        ("DELETE", 4, _) => "DeletePodIdentityAssociation",
        _ => "Unknown",
    };
    let result = result.map_err(|e| eks::rest_error(e, eks_auth));
    app.shared.metrics.record(
        if eks_auth { "eks-auth" } else { "eks" },
        operation,
        result.as_ref().err().map(|e| e.code),
        started.elapsed().as_secs_f64(),
    );
    match result {
        Ok(v) => {
            let mut r = json_response(&v);
            if let Ok(h) = HeaderValue::from_str(&rid) {
                r.headers_mut().insert("x-amzn-requestid", h);
            }
            r
        }
        Err(e) => {
            let e = eks::rest_error(e, eks_auth);
            if e.status.is_server_error() {
                tracing::error!(code = e.code, message = %e.message, request_id = %rid, "request failed");
            }
            let body = serde_json::json!({"message": e.message, "__type": e.code});
            let mut r = (
                e.status,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
            if let Ok(h) = HeaderValue::from_str(e.code) {
                r.headers_mut().insert("x-amzn-errortype", h);
            }
            if let Ok(h) = HeaderValue::from_str(&rid) {
                r.headers_mut().insert("x-amzn-requestid", h);
            }
            r
        }
    }
}

fn sigv4_error(e: &SigV4Error) -> AwsError {
    match e {
        SigV4Error::MissingAuthentication => missing_authentication(),
        SigV4Error::SignatureDoesNotMatch => AwsError::new(
            "SignatureDoesNotMatch",
            StatusCode::FORBIDDEN,
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ),
        SigV4Error::RequestExpired { .. }
        | SigV4Error::RequestNotYetValid { .. }
        | SigV4Error::PresignedExpired { .. } => AwsError::new(
            "RequestExpired",
            StatusCode::BAD_REQUEST,
            format!("Request has expired: {e}"),
        ),
        _ => AwsError::new(
            "IncompleteSignature",
            StatusCode::BAD_REQUEST,
            e.to_string(),
        ),
    }
}

fn invalid_client_token(message: &str) -> AwsError {
    AwsError::new("InvalidClientTokenId", StatusCode::FORBIDDEN, message)
}

/// SigV4: the access key names the secret (the store for `AKIA…`, the sealed session token for
/// `ASIA…`), then the signature is checked in constant time.
fn authenticate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    services: &[&str],
) -> Result<Caller, AwsError> {
    let mut header_pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    // HTTP/2 carries the host as `:authority`, which clients sign as `host`.
    if !headers.contains_key(header::HOST)
        && let Some(authority) = uri.authority()
    {
        header_pairs.push(("host", authority.as_str()));
    }
    let request = HttpRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &header_pairs,
        body,
    };
    let auth = SigV4Auth::parse(&request).map_err(|e| sigv4_error(&e))?;
    let options = VerifyOptions {
        region: None,
        services: services.iter().map(|s| (*s).to_string()).collect(),
        ..VerifyOptions::default()
    };
    let state = shared.snapshot();
    match auth.access_key_id.kind() {
        AccessKeyKind::LongTerm => {
            let key = state
                .access_keys
                .get(auth.access_key_id.as_str())
                .filter(|k| k.status == "Active")
                .ok_or_else(|| {
                    invalid_client_token("The security token included in the request is invalid.")
                })?;
            let user = state
                .users
                .get(&key.user_name.to_ascii_lowercase())
                .ok_or_else(|| {
                    invalid_client_token("The security token included in the request is invalid.")
                })?;
            auth.verify(
                &request,
                &podiam_identity::SecretAccessKey::new(key.secret_access_key.clone()),
                &options,
                &SystemClock,
            )
            .map_err(|e| sigv4_error(&e))?;
            Ok(Caller::User(user.clone()))
        }
        AccessKeyKind::Temporary => {
            let token = auth.security_token.as_deref().ok_or_else(|| {
                invalid_client_token("The security token included in the request is invalid.")
            })?;
            let session =
                shared
                    .keys()
                    .sessions
                    .open(token, &SystemClock)
                    .map_err(|e| match e {
                        podiam_identity::OpenError::Expired { .. } => AwsError::new(
                            "ExpiredToken",
                            StatusCode::FORBIDDEN,
                            "The security token included in the request is expired",
                        ),
                        _ => invalid_client_token(
                            "The security token included in the request is invalid.",
                        ),
                    })?;
            // AWS: the token must belong to the key that signed.
            if session.access_key_id != auth.access_key_id {
                return Err(invalid_client_token(
                    "The security token included in the request is invalid.",
                ));
            }
            auth.verify(&request, &session.secret_access_key, &options, &SystemClock)
                .map_err(|e| sigv4_error(&e))?;
            Ok(Caller::Session(Box::new(session)))
        }
        AccessKeyKind::Unknown => Err(invalid_client_token(
            "The security token included in the request is invalid.",
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = super::request_id();
            let b = id.as_bytes();
            assert_eq!(id.len(), 36, "{id}");
            assert!([8, 13, 18, 23].iter().all(|&i| b[i] == b'-'), "{id}");
            assert_eq!(b[14], b'4', "version nibble: {id}");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "variant: {id}");
            assert!(seen.insert(id));
        }
    }
}
