//! EKS Auth's AssumeRoleForPodIdentity over HTTP, signed as the node agent signs it, on the same
//! issuance path as STS: a remote cluster issuer that rotates its key is followed at once, and
//! expiry is decided by the server's injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use podiam_identity::jwt::ObjectRef;
use podiam_identity::sigv4::{SigningCredentials, SigningParams, sign};
use podiam_identity::{Clock, HttpRequest, ServiceAccountToken};
use podiam_server::local::{CreateAssociation, CreateCluster, CreateRole, as_admin};
use podiam_server::{Options, Server, ServerClock, start};

const ACCOUNT: &str = "000000000000";
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;

/// The system clock moved by an offset the test controls (seconds).
#[derive(Default)]
struct Shifted(AtomicU64);

impl Clock for Shifted {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

async fn server(dir: &Path, clock: Arc<Shifted>) -> Server {
    start(Options {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        issuer_url: None,
        explain_denials: true,
        database_url: None,
        master_key: None,
        tls: None,
        replica_name: None,
        clock: ServerClock(clock),
        upstream: None,
        audit: Default::default(),
        connections: Default::default(),
        require_node_binding: false,
    })
    .await
    .unwrap()
}

/// Cluster `remote` in `dir`, whose tokens come from `issuer` (keys by OIDC discovery), with an
/// association for `ns/sa`.
async fn register(dir: &Path, issuer: &str) {
    let cluster = CreateCluster {
        name: "remote".into(),
        issuer_url: Some(issuer.to_string()),
        ..CreateCluster::default()
    };
    as_admin(dir, async |a| a.create_cluster(cluster).await)
        .await
        .unwrap();
    let role = CreateRole {
        role_name: "pod".into(),
        assume_role_policy_document: TRUST.into(),
        ..CreateRole::default()
    };
    as_admin(dir, async |a| a.create_role(role).await)
        .await
        .unwrap();
    let association = CreateAssociation {
        namespace: "ns".into(),
        service_account: "sa".into(),
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/pod"),
        ..CreateAssociation::default()
    };
    as_admin(dir, async |a| {
        a.create_association("remote", association).await
    })
    .await
    .unwrap();
}

fn pod_token(issuer_server: &Server) -> String {
    podiam_server::local::sign_token_on(&issuer_server.shared, |issuer| ServiceAccountToken {
        issuer: issuer.to_string(),
        namespace: "ns".into(),
        service_account: ObjectRef {
            name: "sa".into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
        },
        audiences: vec!["pods.eks.amazonaws.com".into()],
        expiration: Duration::from_secs(3600),
        pod: Some(ObjectRef {
            name: "web-0".into(),
            uid: "00000000-0000-4000-8000-000000000002".into(),
        }),
        node: None,
        jti: None,
    })
    .unwrap()
}

/// `POST /clusters/remote/assume-role-for-pod-identity`, signed with the administrator's key
/// (service `eks-auth`), as the agent does. Returns the status and the error type, if any.
async fn assume(server: &Server, dir: &Path, token: &str) -> (u16, String) {
    let text = std::fs::read_to_string(dir.join("aws/credentials")).unwrap();
    let creds = SigningCredentials::from_shared_credentials(&text, "podiam").unwrap();
    let host = server.addr.to_string();
    let path = "/clusters/remote/assume-role-for-pod-identity";
    let body = serde_json::json!({ "token": token }).to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let signed = sign(
        &HttpRequest {
            method: "POST",
            path,
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams::new(&creds, "us-east-1", "eks-auth", server.shared.clock.now()),
    )
    .unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.endpoint))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    (
        status,
        if kind.is_empty() {
            text
        } else {
            format!("{kind}: {text}")
        },
    )
}

/// After the cluster's issuer rotates its signing key, a token from the new key is accepted at
/// once: the unknown `kid` makes podiam refetch the issuer's keys (as STS does), instead of
/// refusing pods until the cached JWKS expires an hour later.
#[tokio::test]
async fn a_remote_issuer_that_rotates_its_key_is_followed_at_once() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a_clock = Arc::new(Shifted::default());
    let a = server(a_dir.path(), Arc::clone(&a_clock)).await;
    // B's clock runs ahead of the key-activation delay, so it signs with a new key at once.
    let b_clock = Arc::new(Shifted::default());
    let b = server(b_dir.path(), Arc::clone(&b_clock)).await;
    register(a_dir.path(), &b.shared.config.issuer_url).await;
    a.shared.refresh().await.unwrap();

    let (status, body) = assume(&a, a_dir.path(), &pod_token(&b)).await;
    assert_eq!(status, 200, "{body}");

    let old_kid = b
        .shared
        .keys()
        .issuer
        .active(b.shared.clock.now())
        .map(|k| k.kid().to_string());
    podiam_server::local::rotate_issuer(b_dir.path(), Duration::from_secs(3600))
        .await
        .unwrap();
    b.shared.refresh().await.unwrap();
    b_clock.0.store(60, Ordering::SeqCst);
    let new_kid = b
        .shared
        .keys()
        .issuer
        .active(b.shared.clock.now())
        .map(|k| k.kid().to_string());
    assert_ne!(old_kid, new_kid, "B must sign with its new key");

    // A refetches an issuer's keys at most every 30 s (a stream of tokens naming made-up keys
    // must not turn podiam into a load generator against the issuer): 31 s on, at A's clock.
    a_clock.0.store(31, Ordering::SeqCst);
    let (status, body) = assume(&a, a_dir.path(), &pod_token(&b)).await;
    assert_eq!(status, 200, "a token from the issuer's new key: {body}");
}

/// Expiry is decided at the server's time, from its injected clock: no test waits for it.
#[tokio::test]
async fn an_expired_pod_token_is_refused_at_the_servers_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Shifted::default());
    let s = server(dir.path(), Arc::clone(&clock)).await;
    register(dir.path(), &s.shared.config.issuer_url).await;
    s.shared.refresh().await.unwrap();
    let token = pod_token(&s);
    let (status, body) = assume(&s, dir.path(), &token).await;
    assert_eq!(status, 200, "{body}");
    // Two hours on: the one-hour token (plus five minutes of skew) is past its `exp`. The
    // request is signed at the server's time, so only the token's expiry can fail.
    clock.0.store(2 * 3600, Ordering::SeqCst);
    let (status, body) = assume(&s, dir.path(), &token).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("ExpiredTokenException"), "{body}");
}
