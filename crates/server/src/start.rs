//! Start-up and lifecycle: open the store, bootstrap it on first start, bind, serve (HTTP, or
//! HTTPS with TLS handshakes bounded in time), follow writes made elsewhere, and drain on stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::response::Response;
use podiam_store::{Change, State, Store, User};

use crate::audit::Audit;
use crate::error::AwsError;
use crate::state::{Config, Shared};
use crate::{Options, Server, StartError, ids};

const ADMIN_USER: &str = "podiam-admin";

pub(crate) async fn run(options: Options, bench_noop: bool) -> Result<Server, StartError> {
    let dir = &options.data_dir;
    // The data directory holds the audit log, the administrator's key and (SQLite) every
    // secret: its owner's only (created 0700; one others can read is refused).
    // A directory podiam has not started in yet is made private; a used one others can read
    // is refused with the `chmod` to run.
    let adopt = podiam_store::local::is_new(dir) || options.database_url.is_some();
    podiam_store::local::create_private_dir(dir, adopt)?;
    podiam_store::local::create_private_dir(&dir.join("aws"), adopt)?;
    // The audit log, created private before its writer opens it for appending.
    podiam_store::local::create_private_file(&dir.join("audit.log"), adopt)?;
    let store = match &options.database_url {
        Some(url) => Store::open(url)
            .await?
            .with_master_key(options.master_key.clone()),
        None => Store::open_local(dir, options.master_key.clone()).await?,
    };
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

    let (version, mut state) = store.load_versioned().await?;
    let mut version = Some(version);
    let mut first_start = false;
    if !state.settings.contains_key("account_id") {
        // Replicas starting together on an empty database: the first bootstrap wins, the others
        // load what it wrote (and do not report a first start).
        (state, first_start) =
            write_unless_raced(&store, state, &mut version, bootstrap(&options, &endpoint)?)
                .await?;
    }
    // Shipped AWS managed policies follow the binary: add any this version knows and the store lacks.
    let partition = "aws".to_string();
    let missing: Vec<Change> = crate::managed::aws_managed(&partition)
        .into_iter()
        .filter(|p| !state.policies.contains_key(&p.arn))
        .map(|p| Change::Policy(p.arn.clone(), Some(p)))
        .collect();
    if !missing.is_empty() {
        state = write_unless_raced(&store, state, &mut version, missing)
            .await?
            .0;
    }
    let setting = |k: &str| state.settings.get(k).cloned().unwrap_or_default();
    let config = Config {
        account_id: setting("account_id"),
        region: setting("region"),
        partition,
        explain_denials: options.explain_denials,
        require_node_binding: options.require_node_binding,
        limits: podiam_policy::Limits::default(),
        issuer_url: setting("issuer_url"),
    };
    let (config_file, credentials_file) = write_aws_files(dir, &state, &config, &endpoint)?;
    let account_id = config.account_id.clone();
    let shared = Arc::new(Shared::new(
        config,
        store,
        state,
        version,
        options.clock.clone(),
    )?);
    if let Some(upstream) = options.upstream.clone() {
        connect_upstream(&shared, upstream).await;
    }
    let audit = Audit::start(
        dir.join("audit.log"),
        crate::audit::DatabaseSink::for_server(&shared, options.replica_name.clone()),
        options.audit,
    );
    tokio::spawn(watch_store(Arc::clone(&shared)));
    let mut app = crate::http::router(Arc::clone(&shared), audit.clone(), options.tls.is_some());
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
    let task = tokio::spawn(serve(
        listener,
        options.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        app,
        options.connections,
    ));
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

/// How long the start waits for the broker's upstream identity before serving without it (and
/// not ready).
const UPSTREAM_IDENTITY_AT_START: std::time::Duration = std::time::Duration::from_secs(5);

/// Broker mode: the upstream client, and the broker's identity there (`GetCallerIdentity`);
/// until it is known, `/readyz` fails and a background task keeps asking.
async fn connect_upstream(shared: &Arc<Shared>, options: crate::upstream::UpstreamOptions) {
    let upstream = Arc::new(
        crate::upstream::Upstream::connect(options, shared.metrics.upstream.clone()).await,
    );
    shared.set_upstream(Arc::clone(&upstream));
    match upstream.resolve_identity(UPSTREAM_IDENTITY_AT_START).await {
        Ok(id) => {
            tracing::info!(upstream = %upstream.endpoint(), account = %id.account, principal = %id.arn, "broker mode");
        }
        Err(why) => {
            tracing::warn!(upstream = %upstream.endpoint(), %why, "the broker's upstream identity is not resolved; not ready until it is");
            tokio::spawn(upstream.keep_resolving());
        }
    }
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
/// and whether these changes were the ones written. `version` follows the state (as
/// `Shared::write` does): `None` once it is not known.
async fn write_unless_raced(
    store: &Store,
    mut state: State,
    version: &mut Option<podiam_store::StateVersion>,
    changes: Vec<Change>,
) -> Result<(State, bool), StartError> {
    let checked: Vec<(Change, Change)> = changes
        .iter()
        .map(|c| (c.clone(), state.current(c)))
        .collect();
    match store.apply_checked(&checked).await {
        Ok(committed) => {
            for c in &changes {
                state.apply(c);
            }
            *version = version.filter(|v| *v == committed - 1).map(|_| committed);
            Ok((state, true))
        }
        Err(podiam_store::StoreError::Conflict { .. }) => {
            let (v, state) = store.load_versioned().await?;
            *version = Some(v);
            Ok((state, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// HTTP, or HTTPS after a TLS handshake, then HTTP/1.1 or HTTP/2 on the same router, within
/// `limits` (`podiam_net`): headers, bodies and handshakes bounded in time, and at most
/// `max_connections` connections at once (one over it waits briefly for a slot, then is closed).
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: podiam_net::ConnectionLimits,
) -> std::io::Result<()> {
    let builder = limits.http();
    let gate = limits.gate();
    // Dropped when this loop stops (`Server::shutdown` aborts it): each connection then finishes
    // the request it is answering and closes, instead of serving on over keep-alive.
    let (_stopping, stopped) = tokio::sync::watch::channel(());
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
        // Over the bound: the connection waits here (the next ones in the kernel's backlog),
        // then is closed if no slot frees.
        let Some(slot) = gate.admit().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let builder = builder.clone();
        let router = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let req = limits.bound_body(req).map(axum::body::Body::new);
                hyper::service::Service::call(&router, req)
            });
        let tls = tls.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(stream) = podiam_net::accept(tls.as_ref(), tcp, &limits).await else {
                return;
            };
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
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
                        // This process's own write (or one its state already has): no reload.
                        Ok(Some(version)) if notified.has_committed(&version) => {}
                        Ok(Some(_)) => {
                            if let Err(e) = notified.refresh().await {
                                tracing::error!(error = %e.message, "cannot reload the state");
                            }
                        }
                        // The server is stopping; dropping the listener lets the store close.
                        Ok(None) => break,
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

/// Reloads when the store's version is not the one the state in memory is at: another process
/// wrote (the server's own writes move its known version along, so they cost no reload). A
/// version that went *back* (a database restored from a backup) reloads too.
async fn poll_store(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(STORE_POLL);
    loop {
        tick.tick().await;
        let Ok(v) = shared.store().version().await else {
            continue;
        };
        if shared.known_version() != Some(v)
            && let Err(e) = shared.refresh().await
        {
            tracing::error!(error = %e.message, "cannot reload the state");
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
    let now = options.clock.now_ms();
    let issuer_url = options
        .issuer_url
        .clone()
        .unwrap_or_else(|| endpoint.to_string());
    let id_err = |e: AwsError| StartError::Keys(crate::issuer::KeyError::Generate(e.message));
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
    let signing = crate::issuer::new_signing_key(now)?;
    let sealing = crate::issuer::new_sealing_key(1, now)?;
    let provider_host = crate::iam::provider_id(&issuer_url).unwrap_or_default();
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

/// How long a stop waits for the database pool to close.
const STORE_CLOSE: std::time::Duration = std::time::Duration::from_secs(5);

/// See [`Server::shutdown`].
pub(crate) async fn drain(server: Server, grace: std::time::Duration) {
    // No new connections; requests already being answered finish (their connections' tasks
    // outlive the accept loop), within the grace period.
    server.task.abort();
    let deadline = tokio::time::Instant::now() + grace;
    while server.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
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
    if !server.audit.flush(grace).await {
        tracing::warn!("stopping before every audit event was written");
    }
    // Closing the pool checkpoints SQLite's write-ahead log and removes its -wal/-shm files. It
    // waits for every connection to come back; a stop is bounded even if one never does.
    if tokio::time::timeout(STORE_CLOSE, server.shared.store().close())
        .await
        .is_err()
    {
        tracing::warn!("stopping with a database connection still in use");
    }
}
