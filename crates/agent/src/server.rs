//! The agent's listeners: container credentials (`/v1/credentials`), IMDS, and the probe port
//! (`/healthz`, `/readyz`, `/metrics`).
//!
//! An address that cannot be bound (no `fd00:ec2::23` on an IPv4 node, a port taken by another
//! hostNetwork pod) is logged and skipped; the agent stops only when no credential listener binds
//! at all, so one missing address never becomes a crash loop.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

/// A request as handlers see it: its body must arrive within the body read timeout.
type Body = podiam_net::DeadlineBody<Incoming>;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::{CacheError, CredentialCache};
use crate::imds::{
    InstanceIdentity, PodIpMap, SessionTokens, authorize, canonical_ip, parse_token_ttl,
};
use crate::metrics::Metrics;
use crate::source::{CredentialSource, SourceError};
use crate::token::TokenError;
use crate::wire::error_json;

/// The link-local addresses EKS Pod Identity uses (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
pub const DEFAULT_LISTEN: [&str; 2] = ["169.254.170.23:80", "[fd00:ec2::23]:80"];

/// IMDS settings.
#[derive(Debug)]
pub struct ImdsOptions {
    /// Addresses to serve IMDS on.
    pub listen: Vec<SocketAddr>,
    /// What the metadata tree says.
    pub identity: InstanceIdentity,
    /// Answer requests without an IMDSv2 token.
    pub allow_v1: bool,
    /// Namespaces whose pods may read the node role's credentials.
    pub allow_namespaces: HashSet<String>,
    /// Source IP → namespace.
    pub pods: Arc<PodIpMap>,
}

/// Where to listen.
#[derive(Debug)]
pub struct ServeOptions {
    /// Container credentials listeners.
    pub listen: Vec<SocketAddr>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub probe_listen: Option<SocketAddr>,
    /// IMDS, if enabled.
    pub imds: Option<ImdsOptions>,
    /// How long open connections get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Header, body timeouts and the bound on connections, shared by every listener.
    pub connections: podiam_net::ConnectionLimits,
}

/// Starting failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not one credential listener could be bound.
    #[error("no container credentials listener could be bound (tried {tried})")]
    NoListener {
        /// The addresses, comma-separated.
        tried: String,
    },
    /// The IMDS session-token key.
    #[error(transparent)]
    Rng(#[from] crate::imds::RngFailed),
}

/// A running agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Bound container credentials addresses (the rest were skipped).
    pub credential_addrs: Vec<SocketAddr>,
    /// Bound IMDS addresses.
    pub imds_addrs: Vec<SocketAddr>,
    /// The probe address, if bound.
    pub probe_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningAgent {
    /// Stops accepting, lets open connections finish (up to the grace), and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind_all(kind: &str, addrs: &[SocketAddr]) -> Vec<TcpListener> {
    let mut bound = Vec::new();
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                let addr = l.local_addr().unwrap_or(*addr);
                tracing::info!(%addr, "{kind} listening");
                bound.push(l);
            }
            Err(e) => tracing::warn!(%addr, error = %e, "{kind}: address not bound; skipping it"),
        }
    }
    bound
}

/// Binds what it can and serves until [`RunningAgent::shutdown`].
///
/// # Errors
/// [`StartError::NoListener`] when no container credentials address could be bound.
pub async fn start<S: CredentialSource>(
    cache: CredentialCache<S>,
    metrics: Arc<Metrics>,
    options: ServeOptions,
) -> Result<RunningAgent, StartError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let credential_listeners = bind_all("container credentials", &options.listen).await;
    if credential_listeners.is_empty() {
        return Err(StartError::NoListener {
            tried: options
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let serving = Arc::new(AtomicI64::new(0));
    let gate = options.connections.gate();
    let credential_addrs = local_addrs(&credential_listeners);
    let creds = Arc::new(Credentials {
        cache: cache.clone(),
        metrics: Arc::clone(&metrics),
    });
    for l in credential_listeners {
        let creds = Arc::clone(&creds);
        tasks.spawn(serve(
            l,
            gate.clone(),
            shutdown_rx.clone(),
            options.shutdown_grace,
            Arc::clone(&serving),
            Arc::clone(&metrics),
            move |req, local, _peer| {
                let creds = Arc::clone(&creds);
                async move { creds.handle(req, local).await }
            },
        ));
    }

    let mut imds_addrs = Vec::new();
    if let Some(imds) = options.imds {
        let listeners = bind_all("IMDS", &imds.listen).await;
        if listeners.is_empty() {
            tracing::error!("IMDS is enabled but none of its addresses could be bound");
        }
        if imds.allow_namespaces.is_empty() {
            tracing::warn!(
                "IMDS: no --imds-allow-namespace given; nobody gets the node role's credentials"
            );
        }
        imds_addrs = local_addrs(&listeners);
        let state = Arc::new(Imds {
            cache: cache.clone(),
            metrics: Arc::clone(&metrics),
            tokens: SessionTokens::new()?,
            options: imds,
        });
        for l in listeners {
            let state = Arc::clone(&state);
            tasks.spawn(serve(
                l,
                gate.clone(),
                shutdown_rx.clone(),
                options.shutdown_grace,
                Arc::clone(&serving),
                Arc::clone(&metrics),
                move |req, _local, peer| {
                    let state = Arc::clone(&state);
                    async move { state.handle(req, peer).await }
                },
            ));
        }
    }

    let mut probe_addr = None;
    if let Some(addr) = options.probe_listen
        && let Some(l) = bind_all("probes and metrics", &[addr]).await.pop()
    {
        probe_addr = l.local_addr().ok();
        let metrics_for_probe = Arc::clone(&metrics);
        let serving_for_probe = Arc::clone(&serving);
        tasks.spawn(serve(
            l,
            // Probes have slots of their own: a flood on the credentials port must not fail
            // the kubelet's liveness probe.
            options.connections.gate(),
            shutdown_rx.clone(),
            options.shutdown_grace,
            Arc::new(AtomicI64::new(0)),
            Arc::clone(&metrics),
            move |req, _local, _peer| {
                let metrics = Arc::clone(&metrics_for_probe);
                let serving = Arc::clone(&serving_for_probe);
                async move { probe(&req, &metrics, &serving) }
            },
        ));
    }

    Ok(RunningAgent {
        credential_addrs,
        imds_addrs,
        probe_addr,
        shutdown,
        tasks,
    })
}

fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

type Answer = Response<Full<Bytes>>;

/// Accepts HTTP/1.1 connections (keep-alive) on `listener` until shutdown.
async fn serve<F, Fut>(
    listener: TcpListener,
    gate: podiam_net::Gate,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    serving: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
    handler: F,
) where
    F: Fn(Request<Body>, SocketAddr, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    serving.fetch_add(1, Ordering::Relaxed);
    metrics.listeners.inc();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over the bound: wait briefly for a slot, else close.
                let Some(slot) = gate.admit().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(peer);
                let handler = handler.clone();
                let limits = *gate.limits();
                let service = service_fn(move |req| {
                    let fut = handler(limits.bound_body(req), local, peer);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .header_read_timeout(limits.header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    serving.fetch_sub(1, Ordering::Relaxed);
    metrics.listeners.dec();
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    answer(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

// === container credentials ===

struct Credentials<S> {
    cache: CredentialCache<S>,
    metrics: Arc<Metrics>,
}

/// The `Host` header's host part as an IP (port and `[]` removed), if it is an IP literal.
fn host_ip(req: &Request<Body>) -> Option<IpAddr> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    let host = host.trim();
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next()?
    } else if host.matches(':').count() == 1 {
        host.split(':').next()?
    } else {
        host
    };
    bare.parse().ok().map(canonical_ip)
}

impl<S: CredentialSource> Credentials<S> {
    async fn handle(&self, req: Request<Body>, local: SocketAddr) -> Answer {
        let response = self.respond(&req, local).await;
        let status = response.status().as_u16();
        if status != 200 {
            self.metrics
                .credential_responses
                .get_or_create(&vec![("code", status.to_string())])
                .inc();
        }
        response
    }

    async fn respond(&self, req: &Request<Body>, local: SocketAddr) -> Answer {
        // Upstream serves /v1/credentials for any method and 404s the rest (its probes rely on it).
        if req.uri().path() != "/v1/credentials" {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        // Only a Host naming the address the request arrived on: a name (DNS rebinding from a
        // browser, a proxy forwarding to us) is refused, as upstream refuses any other host.
        if host_ip(req) != Some(canonical_ip(local.ip())) {
            return json_error(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "Access Denied. Called agent through an invalid address; use the IP address it listens on",
            );
        }
        let token = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map_or("", str::trim);
        match self.cache.pod_credentials(token).await {
            Ok(entry) => {
                let mut r = answer(StatusCode::OK, "application/json", entry.body().clone());
                // Never let a proxy or the SDK's HTTP stack keep credentials.
                r.headers_mut().insert(
                    hyper::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                );
                self.metrics
                    .credential_responses
                    .get_or_create(&vec![("code", "200".to_owned())])
                    .inc();
                r
            }
            Err(e) => {
                tracing::info!(error = %e, "container credentials refused");
                cache_error_response(&e)
            }
        }
    }
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Answer {
    answer(status, "application/json", error_json(code, message))
}

/// Local refusals keep EKS Auth's codes; the server's own errors pass through with its status.
fn cache_error_response(e: &CacheError) -> Answer {
    match e {
        CacheError::Token(TokenError::Expired { .. }) => json_error(
            StatusCode::BAD_REQUEST,
            "ExpiredTokenException",
            &e.to_string(),
        ),
        CacheError::Token(_) => json_error(
            StatusCode::BAD_REQUEST,
            "InvalidTokenException",
            &e.to_string(),
        ),
        CacheError::Source(SourceError::Service {
            status,
            code,
            message,
        }) => {
            let status = StatusCode::from_u16(*status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_error(status, code, message)
        }
        CacheError::Source(SourceError::Unavailable { .. }) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            &e.to_string(),
        ),
        // Ours, not the server's: EKS Auth's code for its own failures.
        CacheError::Encode(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            &e.to_string(),
        ),
    }
}

// === IMDS ===

struct Imds<S> {
    cache: CredentialCache<S>,
    metrics: Arc<Metrics>,
    tokens: SessionTokens,
    options: ImdsOptions,
}

const TOKEN_PATH: &str = "/latest/api/token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

impl<S: CredentialSource> Imds<S> {
    async fn handle(&self, req: Request<Body>, peer: SocketAddr) -> Answer {
        let response = self.respond(&req, peer).await;
        self.metrics
            .imds_responses
            .get_or_create(&vec![("code", response.status().as_u16().to_string())])
            .inc();
        response
    }

    fn now_ms(&self) -> u64 {
        let since = self
            .cache
            .clock()
            .wall()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    async fn respond(&self, req: &Request<Body>, peer: SocketAddr) -> Answer {
        let path = req.uri().path();
        if path == TOKEN_PATH {
            return self.issue_token(req);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        let authorized = match req.headers().get("x-aws-ec2-metadata-token") {
            Some(t) => t
                .to_str()
                .is_ok_and(|t| self.tokens.check(t, self.now_ms())),
            // AWS: with IMDSv2 required, a request without a token gets 401.
            None => self.options.allow_v1,
        };
        if !authorized {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        }
        let id = &self.options.identity;
        let plain = |s: String| answer(StatusCode::OK, "text/plain", Bytes::from(s));
        match path {
            "/latest/meta-data" | "/latest/meta-data/" => {
                plain("iam/\ninstance-id\nplacement/".to_owned())
            }
            "/latest/meta-data/instance-id" => plain(id.instance_id.clone()),
            "/latest/meta-data/placement" | "/latest/meta-data/placement/" => {
                plain("availability-zone\nregion".to_owned())
            }
            "/latest/meta-data/placement/region" => plain(id.region.clone()),
            "/latest/meta-data/placement/availability-zone" => plain(id.availability_zone.clone()),
            "/latest/dynamic/instance-identity/document" => match id.document() {
                Ok(doc) => answer(StatusCode::OK, "text/plain", doc),
                Err(e) => {
                    tracing::error!(error = %e, "IMDS: instance-identity document");
                    imds_error_response(&CacheError::Encode(e))
                }
            },
            p if p.starts_with("/latest/meta-data/iam") => self.node_role(p, peer).await,
            _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    fn issue_token(&self, req: &Request<Body>) -> Answer {
        if req.method() != Method::PUT {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        // AWS: a token PUT that went through a proxy (X-Forwarded-For) is refused, so an SSRF
        // through an open proxy cannot start a session.
        if req.headers().contains_key("x-forwarded-for") {
            return text(StatusCode::FORBIDDEN, "Forbidden\n");
        }
        let ttl = req
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok());
        let Some(ttl) = parse_token_ttl(ttl) else {
            return text(StatusCode::BAD_REQUEST, "Bad Request\n");
        };
        let expires = self
            .now_ms()
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut r = answer(
            StatusCode::OK,
            "text/plain",
            Bytes::from(self.tokens.issue(expires)),
        );
        if let Ok(v) = HeaderValue::from_str(&ttl.as_secs().to_string()) {
            r.headers_mut()
                .insert("x-aws-ec2-metadata-token-ttl-seconds", v);
        }
        r
    }

    async fn node_role(&self, path: &str, peer: SocketAddr) -> Answer {
        let pods = self.options.pods.current();
        if let Err(denial) = authorize(peer.ip(), &pods, &self.options.allow_namespaces) {
            tracing::warn!(reason = denial.reason(), %denial, path, "IMDS: node role credentials refused");
            self.metrics
                .imds_denied
                .get_or_create(&vec![("reason", denial.reason().to_owned())])
                .inc();
            return text(StatusCode::FORBIDDEN, "Forbidden\n");
        }
        let role = &self.options.identity.role_name;
        match path {
            "/latest/meta-data/iam" | "/latest/meta-data/iam/" => answer(
                StatusCode::OK,
                "text/plain",
                Bytes::from_static(b"security-credentials/"),
            ),
            CREDENTIALS_PATH | "/latest/meta-data/iam/security-credentials" => {
                answer(StatusCode::OK, "text/plain", Bytes::from(role.clone()))
            }
            p if p
                .strip_prefix(CREDENTIALS_PATH)
                .is_some_and(|r| r.trim_end_matches('/') == role) =>
            {
                match self.cache.node_credentials().await {
                    Ok(e) => answer(StatusCode::OK, "text/plain", e.body().clone()),
                    Err(e) => {
                        tracing::warn!(error = %e, "IMDS: node role credentials unavailable");
                        imds_error_response(&e)
                    }
                }
            }
            _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }
}

/// What IMDS answers when the node role's credentials cannot be served: EC2's `Failure`
/// document, 503 when the server failed us, 500 when we failed.
fn imds_error_response(e: &CacheError) -> Answer {
    let status = match e {
        CacheError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        CacheError::Token(_) | CacheError::Source(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = serde_json::json!({ "Code": "Failure", "Message": e.to_string() });
    answer(status, "text/plain", Bytes::from(body.to_string()))
}

// === probes ===

fn probe(req: &Request<Body>, metrics: &Metrics, serving: &AtomicI64) -> Answer {
    match req.uri().path() {
        "/healthz" | "/readyz" => {
            if serving.load(Ordering::Relaxed) > 0 {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no listener serving\n")
            }
        }
        "/metrics" => answer(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(metrics.encode()),
        ),
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}

#[cfg(test)]
mod tests;
