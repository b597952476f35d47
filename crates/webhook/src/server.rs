//! The HTTPS admission server (`/mutate`, `/healthz`), the plain-HTTP metrics server
//! (`/metrics`, `/healthz`), and [`start`], which wires them to the Kubernetes sources.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};

/// A request as the routes see it: its body must arrive within the body read timeout.
type Body = podiam_net::DeadlineBody<Incoming>;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::identity::ComposeRoleArn;
use crate::mutate::Config;
use crate::podiam::{PodiamOptions, PodiamSource};
use crate::source;
use crate::tls::{Reload, ReloadingCert, TlsError, server_config};
use crate::webhook::{EncodeError, LookupPolicy, Webhook};

/// The largest AdmissionReview we read (kube-apiserver objects are limited to ~3 MiB).
const MAX_BODY: usize = 8 << 20;

/// How to reach the Kubernetes API.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// `--kubeconfig`; without it, in-cluster config, then `$KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--kube-api`: overrides the API server URL (e.g. `http://127.0.0.1:8001` for `kubectl proxy`).
    pub kube_api: Option<String>,
}

/// Everything `podiam webhook` needs to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// HTTPS address for `/mutate` and `/healthz`.
    pub listen: SocketAddr,
    /// Plain-HTTP address for `/metrics`; `None` turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// `--tls-cert` (PEM chain, leaf first).
    pub tls_cert: PathBuf,
    /// `--tls-key` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub tls_key: PathBuf,
    /// `--tls-min-version`.
    pub tls_min_version: String,
    /// `--tls-cipher-suites`.
    pub tls_cipher_suites: String,
    /// How often the certificate files are re-read.
    pub tls_reload_interval: Duration,
    /// The mutation flags.
    pub config: Config,
    /// `--compose-role-arn`.
    pub compose_role_arn: Option<ComposeRoleArn>,
    /// The Kubernetes API.
    pub kube: KubeOptions,
    /// `--watch-config-map`: the namespace whose `pod-identity-webhook` ConfigMap is watched.
    pub watch_config_map: Option<String>,
    /// `--watch-container-credentials-config`.
    pub container_credentials_config: Option<PathBuf>,
    /// How often the identities file is re-read.
    pub container_credentials_poll: Duration,
    /// `--podiam-endpoint`/`--cluster`: associations polled from podiam's EKS API.
    pub podiam: Option<PodiamOptions>,
    /// The direct lookup on a cache miss.
    pub lookup: LookupPolicy,
    /// How long open connections get to finish on shutdown (upstream: 10 s).
    pub shutdown_grace: Duration,
    /// Header, body and TLS handshake timeouts, and the bound on connections (per listener).
    pub connections: podiam_net::ConnectionLimits,
}

impl Options {
    /// Upstream's defaults (on podiam's ports: HTTPS 8443, metrics 9999) for this certificate pair.
    pub fn new(tls_cert: impl Into<PathBuf>, tls_key: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], 9999))),
            tls_cert: tls_cert.into(),
            tls_key: tls_key.into(),
            tls_min_version: String::new(),
            tls_cipher_suites: String::new(),
            tls_reload_interval: Duration::from_secs(10),
            config: Config::default(),
            compose_role_arn: None,
            kube: KubeOptions::default(),
            watch_config_map: None,
            container_credentials_config: None,
            container_credentials_poll: Duration::from_secs(10),
            podiam: None,
            lookup: LookupPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
            connections: podiam_net::ConnectionLimits::default(),
        }
    }
}

/// Errors starting the webhook.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS material or settings.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Kubernetes client could not be configured.
    #[error("while configuring the Kubernetes client: {0}")]
    Kube(String),
    /// The podiam association source could not be set up.
    #[error("--podiam-endpoint: {0}")]
    Podiam(#[from] crate::podiam::PodiamError),
    /// A listener could not be bound.
    #[error("while binding `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running webhook.
pub struct Running {
    /// The HTTPS address actually bound.
    pub addr: SocketAddr,
    /// The metrics address actually bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The webhook state (for tests and diagnostics).
    pub webhook: Arc<Webhook>,
    /// The certificate being served.
    pub cert: Arc<ReloadingCert>,
    shutdown: watch::Sender<bool>,
    servers: JoinSet<()>,
    background: JoinSet<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Stop accepting, let open connections finish (bounded by the grace period), stop the watches.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.servers.join_next().await.is_some() {}
        self.background.abort_all();
        while self.background.join_next().await.is_some() {}
    }

    /// Wait until the servers stop (they stop only through [`Running::shutdown`] or a signal).
    pub async fn wait(&mut self) {
        while self.servers.join_next().await.is_some() {}
    }

    /// A handle that triggers shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// A Kubernetes client as `opts` says (the node agent's pod watch uses it too).
///
/// # Errors
/// [`StartError::Kube`] when the configuration cannot be read.
pub async fn kube_client(opts: &KubeOptions) -> Result<kube::Client, StartError> {
    let err = |e: &dyn std::fmt::Display| StartError::Kube(e.to_string());
    let mut config = match (&opts.kubeconfig, &opts.kube_api) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        (None, Some(url)) => kube::Config::new(url.parse().map_err(|e| err(&e))?),
        (None, None) => kube::Config::infer().await.map_err(|e| err(&e))?,
    };
    if let (Some(_), Some(url)) = (&opts.kubeconfig, &opts.kube_api) {
        config.cluster_url = url.parse().map_err(|e| err(&e))?;
    }
    kube::Client::try_from(config).map_err(|e| err(&e))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Load the certificate, connect the sources, bind and serve.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    let cert = Arc::new(ReloadingCert::new(&opts.tls_cert, &opts.tls_key)?);
    let tls = Arc::new(server_config(
        cert.clone(),
        &opts.tls_min_version,
        &opts.tls_cipher_suites,
    )?);
    let podiam = opts.podiam.clone().map(PodiamSource::new).transpose()?;
    let client = kube_client(&opts.kube).await?;
    let lookup = Arc::new(source::KubeLookup::new(client.clone()));
    let webhook = Arc::new(Webhook::new(
        opts.config.clone(),
        opts.compose_role_arn.clone(),
        Some(lookup),
        opts.lookup.clone(),
    ));

    let listener = bind(opts.listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: opts.listen,
        source,
    })?;
    let metrics = match opts.metrics_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());

    let (shutdown, rx) = watch::channel(false);
    let mut background = JoinSet::new();
    background.spawn(source::watch_service_accounts(
        client.clone(),
        webhook.clone(),
    ));
    if let Some(ns) = opts.watch_config_map.clone() {
        background.spawn(source::watch_config_map(
            client.clone(),
            ns,
            webhook.clone(),
        ));
    }
    if let Some(path) = opts.container_credentials_config.clone() {
        background.spawn(source::poll_identities_file(
            path,
            opts.container_credentials_poll,
            webhook.clone(),
        ));
    }
    if let Some(source) = podiam {
        background.spawn(crate::podiam::poll_podiam(source, webhook.clone()));
    }
    background.spawn(poll_certificate(
        cert.clone(),
        opts.tls_reload_interval,
        webhook.clone(),
    ));

    let mut servers = JoinSet::new();
    servers.spawn(serve(
        listener,
        Some(TlsAcceptor::from(tls)),
        webhook.clone(),
        rx.clone(),
        opts.shutdown_grace,
        opts.connections.gate(),
    ));
    if let Some(l) = metrics {
        // Metrics and probes have slots of their own.
        let gate = opts.connections.gate();
        servers.spawn(serve(
            l,
            None,
            webhook.clone(),
            rx,
            opts.shutdown_grace,
            gate,
        ));
    }
    tracing::info!(%addr, ?metrics_addr, "webhook listening");
    Ok(Running {
        addr,
        metrics_addr,
        webhook,
        cert,
        shutdown,
        servers,
        background,
    })
}

async fn poll_certificate(cert: Arc<ReloadingCert>, interval: Duration, webhook: Arc<Webhook>) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match cert.poll() {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                tracing::info!("serving certificate reloaded");
                webhook.metrics().cert_reload("reloaded");
            }
            Reload::Refused(why) => {
                tracing::warn!(error = %why, "new certificate refused; still serving the previous one");
                webhook.metrics().cert_reload("refused");
            }
        }
    }
}

/// Accept connections until shutdown; with `tls`, the admission routes, else the metrics routes.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    webhook: Arc<Webhook>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    gate: podiam_net::Gate,
) {
    let graceful = GracefulShutdown::new();
    let limits = *gate.limits();
    let builder = limits.http();
    let admission = tls.is_some();
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the bound: wait briefly for a slot, else close.
        let Some(slot) = gate.admit().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let webhook = webhook.clone();
        let service = service_fn(move |req| {
            let webhook = webhook.clone();
            let req = limits.bound_body(req);
            async move { Ok::<_, Infallible>(route(req, &webhook, admission).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(stream) = podiam_net::accept(tls.as_ref(), tcp, &limits).await else {
                return;
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn is_json(req: &Request<Body>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn route(req: Request<Body>, webhook: &Webhook, admission: bool) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (verb, path) = (req.method().to_string(), req.uri().path().to_owned());
    let resp = match (admission, req.method(), path.as_str()) {
        (_, &Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (false, &Method::GET, "/metrics") => {
            let mut resp = Response::new(Full::new(Bytes::from(webhook.metrics().render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        (true, _, "/mutate") => mutate_route(req, webhook).await,
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    webhook.metrics().request(
        &verb,
        &path,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

async fn mutate_route(req: Request<Body>, webhook: &Webhook) -> Response<Full<Bytes>> {
    if !is_json(&req) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Invalid Content-Type, expected `application/json`\n",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable\n",
            );
        }
    };
    review_response(webhook.review(&body).await)
}

/// The AdmissionReview answer, or a 500 saying it could not be encoded (an empty 200 would be
/// an admission the API server cannot read).
fn review_response(answer: Result<Vec<u8>, EncodeError>) -> Response<Full<Bytes>> {
    match answer {
        Ok(answer) => {
            let mut resp = Response::new(Full::new(Bytes::from(answer)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "answering 500");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "couldn't encode the AdmissionReview response\n",
            )
        }
    }
}

#[cfg(test)]
mod tests;
