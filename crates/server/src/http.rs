//! The HTTP edge: two protocol adapters around the typed handlers, and the plain routes.
//!
//! - awsQuery (STS, IAM): a form (query string and/or body) in, XML out;
//! - REST-JSON (EKS, EKS Auth): path + JSON body in, JSON out, `x-amzn-errortype` on errors.
//!
//! Each adapter authenticates, builds the request's [`Ctx`] (its one reading of the clock among
//! the facts), calls the operation, and renders its `Result` with [`crate::error`]'s table.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::audit::{self, Audit};
use crate::auth::{self, Caller, RequestFacts, SignedRequest};
use crate::ctx::Ctx;
use crate::error::{AwsError, ErrorKind, Protocol};
use crate::query::Params;
use crate::state::Shared;
use crate::{eks, eks_auth, iam, sts, xml};

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    audit: Audit,
    /// Served over HTTPS: `aws:SecureTransport` is true.
    tls: bool,
}

/// Policy documents are at most a few KiB; form bodies larger than this are refused.
const MAX_BODY: usize = 256 * 1024;

pub(crate) fn router(shared: Arc<Shared>, audit: Audit, tls: bool) -> Router {
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

/// Ready when the database answers (the state was loaded at start, so caches are warm) and, in
/// broker mode, the broker's upstream identity is known.
async fn readyz(AxumState(app): AxumState<App>) -> Response {
    if let Some(upstream) = app.shared.upstream()
        && let Err(why) = upstream.identity()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the broker's identity at upstream STS `{}` is not resolved: {why}\n",
                upstream.endpoint()
            ),
        )
            .into_response();
    }
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
    let doc = app.shared.keys().issuer.jwks(app.shared.clock.now());
    json_response(&doc)
}

fn json_response(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a JSON response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
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
        // Uniqueness within the process comes from the counter below; a failed draw leaves a
        // fixed base, which only makes IDs of different processes collide.
        if let Err(e) = podiam_identity::Rng::fill(&podiam_identity::SystemRng, &mut b) {
            tracing::warn!(error = %e, "no random base for request IDs");
        }
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

/// `x-amzn-requestid`, made once (a name given as text is copied into a new one per insert).
static REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-amzn-requestid");

/// The answer, with the request ID header made from the ID's own buffer (no copy).
fn xml_response(status: StatusCode, body: String, request_id: String) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(request_id)) {
        r.headers_mut().insert(REQUEST_ID.clone(), v);
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
    let action = params.get("Action").unwrap_or("");
    let is_sts = match params.get("Version") {
        Some("2011-06-15") => true,
        Some("2010-05-08") => false,
        _ => matches!(
            action,
            "AssumeRole" | "AssumeRoleWithWebIdentity" | "GetCallerIdentity"
        ),
    };
    let ns = if is_sts { sts::NS } else { iam::NS };
    let facts = request_facts(&app, peer, &headers);
    let result = async {
        if action.is_empty() {
            return Err(AwsError::new(ErrorKind::MissingAction, "Missing Action"));
        }
        facts.check_bounds()?;
        // Nothing XML 1.0 cannot carry is stored: it would break every later answer that
        // holds it (`aws iam list-roles` for everyone, after one bad `UpdateRole`).
        params.check_characters()?;
        // AssumeRoleWithWebIdentity is unsigned on AWS: the token is the credential.
        let caller = if is_sts && action == "AssumeRoleWithWebIdentity" {
            None
        } else {
            let signed = SignedRequest {
                method: &method,
                uri: &uri,
                headers: &headers,
                body: &body,
            };
            Some(auth::authenticate(
                &app.shared,
                &facts.clock(),
                &signed,
                &["sts", "iam"],
            )?)
        };
        let ctx = Ctx {
            shared: &app.shared,
            caller,
            facts,
            request_id: &rid,
            audit: &app.audit,
            offline: false,
        };
        if is_sts {
            sts::handle(&ctx, action, &params).await
        } else {
            let r = iam::handle(&ctx, action, &params).await;
            if let Err(e) = &r
                && e.kind() == ErrorKind::AccessDenied
            {
                app.audit.record(iam_denial_event(&ctx, action, &r));
            }
            r
        }
    }
    .await;
    let service = if is_sts { "sts" } else { "iam" };
    let label = crate::actions::query_action_label(is_sts, action);
    record_metrics(&app, service, label, &result, Protocol::Query, started);
    log_request(
        service,
        action,
        &result,
        Protocol::Query,
        started,
        &rid,
        peer,
    );
    match result {
        Ok(body) => xml_response(StatusCode::OK, body, rid),
        Err(e) => {
            log_failure(&e, Protocol::Query, &rid);
            let body = xml::Xml::error(ns, e.fault(), e.code(Protocol::Query), &e.message, &rid);
            xml_response(e.status(Protocol::Query), body, rid)
        }
    }
}

/// An IAM call the policy engine refused, as an audit event: a role session's denial belongs to
/// its role (`podiam audit --role`, also in the database), with the ServiceAccount (and pod) it
/// was issued to when the session says: Pod Identity sessions name the pod, IRSA sessions the
/// ServiceAccount of their token's `sub`.
fn iam_denial_event(ctx: &Ctx<'_>, action: &str, r: &Result<String, AwsError>) -> audit::Event {
    let mut ev = audit::Event::new(ctx, action.to_string());
    ev.subject = ctx.caller.as_ref().map(|c| c.arn().to_string());
    if let Some(Caller::Session(s)) = &ctx.caller {
        ev.role = Some(s.role_arn.clone());
        ev.session_name = Some(s.role_session_name.clone());
        match &s.source {
            podiam_identity::session::SessionSource::PodIdentity {
                namespace,
                service_account,
                pod_name,
                ..
            } => {
                ev.namespace = Some(namespace.clone());
                ev.service_account = Some(service_account.clone());
                ev.pod = Some(pod_name.clone());
            }
            // An IRSA session: its verified token's `sub` names the ServiceAccount.
            podiam_identity::session::SessionSource::WebIdentity { subject, .. } => {
                if let Some((namespace, service_account)) = subject
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                {
                    ev.namespace = Some(namespace.to_string());
                    ev.service_account = Some(service_account.to_string());
                }
            }
            podiam_identity::session::SessionSource::AssumeRole { .. } => {}
        }
    }
    ev.finish(r, Protocol::Query);
    ev
}

fn record_metrics<T>(
    app: &App,
    service: &'static str,
    action: &'static str,
    result: &Result<T, AwsError>,
    protocol: Protocol,
    started: std::time::Instant,
) {
    app.shared.metrics.record(
        service,
        action,
        result
            .as_ref()
            .err()
            .map(|e| (e.code(protocol), e.is_denial())),
        started.elapsed().as_secs_f64(),
    );
}

/// The request log: one `debug` event per request on the target `podiam::request`
/// (`podiam up --log-level debug`, or `RUST_LOG=podiam::request=debug` for it alone). It names
/// the call, never its parameters, credentials or tokens. Its fields are only computed when the
/// event is enabled: off, it costs one check of a static.
fn log_request<T>(
    service: &'static str,
    action: &str,
    result: &Result<T, AwsError>,
    protocol: Protocol,
    started: std::time::Instant,
    request_id: &str,
    peer: SocketAddr,
) {
    tracing::debug!(
        target: "podiam::request",
        service,
        action = %crate::text::printable(action, 64),
        status = result.as_ref().map_or_else(|e| e.status(protocol).as_u16(), |_| 200),
        code = result.as_ref().err().map_or("", |e| e.code(protocol)),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        request_id,
        source_ip = %peer.ip(),
        "request"
    );
}

fn log_failure(e: &AwsError, protocol: Protocol, request_id: &str) {
    if e.status(protocol).is_server_error() {
        tracing::error!(code = e.code(protocol), message = %e.message, request_id = %request_id, "request failed");
    }
}

/// What policies may test about the request itself: `aws:SourceIp`, `aws:SecureTransport`, …,
/// and the request's time, read once.
fn request_facts(app: &App, peer: SocketAddr, headers: &HeaderMap) -> RequestFacts {
    RequestFacts {
        source_ip: Some({
            use std::fmt::Write as _;
            // Sized for the longest IPv6 text: written without growing.
            let mut ip = String::with_capacity(39);
            let _ = write!(ip, "{}", peer.ip());
            ip
        }),
        secure_transport: app.tls,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        now: app.shared.clock.now_ms(),
    }
}

/// The REST-JSON operation a method and path name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestOperation {
    ListClusters,
    CreateCluster,
    DescribeCluster,
    DeleteCluster,
    ListPodIdentityAssociations,
    CreatePodIdentityAssociation,
    DescribePodIdentityAssociation,
    UpdatePodIdentityAssociation,
    DeletePodIdentityAssociation,
    AssumeRoleForPodIdentity,
}

impl RestOperation {
    fn of(method: &Method, segments: &[&str]) -> Option<RestOperation> {
        use RestOperation as O;
        Some(match (method.as_str(), segments) {
            ("GET", ["clusters"]) => O::ListClusters,
            ("POST", ["clusters"]) => O::CreateCluster,
            ("GET", ["clusters", _]) => O::DescribeCluster,
            ("DELETE", ["clusters", _]) => O::DeleteCluster,
            ("GET", ["clusters", _, "pod-identity-associations"]) => O::ListPodIdentityAssociations,
            ("POST", ["clusters", _, "pod-identity-associations"]) => {
                O::CreatePodIdentityAssociation
            }
            ("GET", ["clusters", _, "pod-identity-associations", _]) => {
                O::DescribePodIdentityAssociation
            }
            ("POST", ["clusters", _, "pod-identity-associations", _]) => {
                O::UpdatePodIdentityAssociation
            }
            ("DELETE", ["clusters", _, "pod-identity-associations", _]) => {
                O::DeletePodIdentityAssociation
            }
            ("POST", ["clusters", _, "assume-role-for-pod-identity"]) => {
                O::AssumeRoleForPodIdentity
            }
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        use RestOperation as O;
        match self {
            O::ListClusters => "ListClusters",
            O::CreateCluster => "CreateCluster",
            O::DescribeCluster => "DescribeCluster",
            O::DeleteCluster => "DeleteCluster",
            O::ListPodIdentityAssociations => "ListPodIdentityAssociations",
            O::CreatePodIdentityAssociation => "CreatePodIdentityAssociation",
            O::DescribePodIdentityAssociation => "DescribePodIdentityAssociation",
            O::UpdatePodIdentityAssociation => "UpdatePodIdentityAssociation",
            O::DeletePodIdentityAssociation => "DeletePodIdentityAssociation",
            O::AssumeRoleForPodIdentity => "AssumeRoleForPodIdentity",
        }
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
    let operation = RestOperation::of(&method, &segments);
    let eks_auth = operation == Some(RestOperation::AssumeRoleForPodIdentity);
    let protocol = if eks_auth {
        Protocol::EksAuth
    } else {
        Protocol::Eks
    };
    let facts = request_facts(&app, peer, &headers);
    let result = async {
        facts.check_bounds()?;
        let services: &[&str] = if eks_auth { &["eks-auth"] } else { &["eks"] };
        let signed = SignedRequest {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: &body,
        };
        let caller = auth::authenticate(&app.shared, &facts.clock(), &signed, services)?;
        let ctx = Ctx {
            shared: &app.shared,
            caller: Some(caller),
            facts,
            request_id: &rid,
            audit: &app.audit,
            offline: false,
        };
        let json_body = || -> Result<serde_json::Value, AwsError> {
            if body.is_empty() {
                return Ok(serde_json::Value::Object(Default::default()));
            }
            serde_json::from_slice(&body).map_err(|e| {
                AwsError::validation(format!("The request body is not valid JSON: {e}"))
            })
        };
        let query = Params::parse(uri.query().unwrap_or("").as_bytes());
        let name = segments.get(1).copied().unwrap_or("");
        let id = segments.get(3).copied().unwrap_or("");
        use RestOperation as O;
        match operation {
            Some(O::ListClusters) => eks::list_clusters_json(&ctx),
            Some(O::CreateCluster) => eks::create_cluster_json(&ctx, &json_body()?).await,
            Some(O::DescribeCluster) => eks::describe_cluster(&ctx, name),
            Some(O::DeleteCluster) => eks::delete_cluster_json(&ctx, name).await,
            Some(O::ListPodIdentityAssociations) => eks::list_associations(&ctx, name, &query),
            Some(O::CreatePodIdentityAssociation) => {
                eks::create_association_json(&ctx, name, &json_body()?).await
            }
            Some(O::DescribePodIdentityAssociation) => eks::describe_association(&ctx, name, id),
            Some(O::UpdatePodIdentityAssociation) => {
                eks::update_association(&ctx, name, id, &json_body()?).await
            }
            Some(O::DeletePodIdentityAssociation) => {
                eks::delete_association_json(&ctx, name, id).await
            }
            Some(O::AssumeRoleForPodIdentity) => {
                eks_auth::assume_role_for_pod_identity(&ctx, name, &json_body()?).await
            }
            None => Err(AwsError::new(
                ErrorKind::UnknownOperation,
                format!("No such operation: {method} {}", uri.path()),
            )),
        }
    }
    .await;
    let service = if eks_auth { "eks-auth" } else { "eks" };
    let name = operation.map_or("Unknown", RestOperation::name);
    record_metrics(&app, service, name, &result, protocol, started);
    log_request(service, name, &result, protocol, started, &rid, peer);
    match result {
        Ok(v) => {
            let mut r = json_response(&v);
            if let Ok(h) = HeaderValue::from_str(&rid) {
                r.headers_mut().insert("x-amzn-requestid", h);
            }
            r
        }
        Err(e) => {
            log_failure(&e, protocol, &rid);
            let code = e.code(protocol);
            let body = serde_json::json!({"message": e.message, "__type": code});
            let mut r = (
                e.status(protocol),
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
            r.headers_mut()
                .insert("x-amzn-errortype", HeaderValue::from_static(code));
            if let Ok(h) = HeaderValue::from_str(&rid) {
                r.headers_mut().insert("x-amzn-requestid", h);
            }
            r
        }
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
