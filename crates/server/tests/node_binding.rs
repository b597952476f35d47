//! EKS Auth's node binding: the node agent's web identity session remembers the node its own
//! ServiceAccount token names (`kubernetes.io.node.name`), and a pod token naming another node is
//! refused (EKS Auth's AccessDeniedException, HTTP 400 as botocore has it) with both names and an
//! audit event. Tokens or callers bound to no node pass unless
//! the server requires node binding.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use podiam_identity::ServiceAccountToken;
use podiam_identity::jwt::ObjectRef;
use podiam_server::local::{CreateAssociation, CreateCluster, CreateRole, as_admin};
use serde_json::{Value, json};
use support::*;

const POD_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;

struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
}

async fn fixture(require_node_binding: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Options {
        require_node_binding,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let d = dir.path();
    // The agent's role (docs/operating.md): web identity of the agent's ServiceAccount, allowed
    // nothing but eks-auth:AssumeRoleForPodIdentity.
    let host = server.endpoint.trim_start_matches("http://").to_string();
    let agent_trust =
        support::web_identity_trust(&host, "system:serviceaccount:podiam:podiam-agent");
    for (name, trust) in [("agent", agent_trust.as_str()), ("pod", POD_TRUST)] {
        let role = CreateRole {
            role_name: name.into(),
            assume_role_policy_document: trust.into(),
            ..CreateRole::default()
        };
        as_admin(d, async |a| a.create_role(role).await)
            .await
            .unwrap();
    }
    cluster(d, "c", None).await;
    server.shared.refresh().await.unwrap();
    let admin = admin(d);
    ok(
        &server,
        &admin,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "agent"),
            ("PolicyName", "eks-auth"),
            (
                "PolicyDocument",
                &allow("eks-auth:AssumeRoleForPodIdentity"),
            ),
        ],
    )
    .await;
    Fixture { dir, server }
}

/// Cluster `name` (the built-in issuer's, or `issuer`'s) with an association of `ns/sa` to role
/// `pod`.
async fn cluster(d: &Path, name: &str, issuer: Option<String>) {
    let cluster = CreateCluster {
        name: name.into(),
        builtin: issuer.is_none(),
        issuer_url: issuer,
        ..CreateCluster::default()
    };
    as_admin(d, async |a| a.create_cluster(cluster).await)
        .await
        .unwrap();
    let association = CreateAssociation {
        namespace: "ns".into(),
        service_account: "sa".into(),
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/pod"),
        ..CreateAssociation::default()
    };
    as_admin(d, async |a| a.create_association(name, association).await)
        .await
        .unwrap();
}

/// A projected token of `namespace/sa` for pod `sa-0`, on `node` if any, from `f`'s issuer.
fn token(f: &Fixture, namespace: &str, sa: &str, aud: &str, node: Option<&str>) -> String {
    token_of(&f.server, namespace, sa, aud, node)
}

/// The same from `issuer`'s built-in issuer.
fn token_of(issuer: &Server, namespace: &str, sa: &str, aud: &str, node: Option<&str>) -> String {
    podiam_server::local::sign_token_on(&issuer.shared, |issuer| ServiceAccountToken {
        issuer: issuer.to_string(),
        namespace: namespace.into(),
        service_account: ObjectRef {
            name: sa.into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
        },
        audiences: vec![aud.into()],
        expiration: Duration::from_secs(3600),
        pod: Some(ObjectRef {
            name: format!("{sa}-0"),
            uid: "00000000-0000-4000-8000-000000000002".into(),
        }),
        node: node.map(|name| ObjectRef {
            name: name.into(),
            uid: "00000000-0000-4000-8000-000000000003".into(),
        }),
        jti: None,
    })
    .unwrap()
}

/// The agent's session on `node` (or on none): AssumeRoleWithWebIdentity with its own token, as
/// the SDK's web identity provider calls it (unsigned).
async fn agent_session(f: &Fixture, node: Option<&str>) -> SigningCredentials {
    let web_token = token(f, "podiam", "podiam-agent", "sts.amazonaws.com", node);
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/agent"))
        .append_pair("RoleSessionName", node.unwrap_or("somewhere"))
        .append_pair("WebIdentityToken", &web_token)
        .finish();
    let response = reqwest::Client::new()
        .post(format!("{}/", f.server.endpoint))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let xml = response.text().await.unwrap();
    SigningCredentials::from_shared_credentials(
        &format!(
            "[s]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            field(&xml, "AccessKeyId").unwrap(),
            field(&xml, "SecretAccessKey").unwrap(),
            field(&xml, "SessionToken").unwrap(),
        ),
        "s",
    )
    .unwrap()
}

async fn exchange(
    f: &Fixture,
    caller: &SigningCredentials,
    pod_token: &str,
) -> (u16, String, Value) {
    exchange_in(f, "c", caller, pod_token).await
}

/// `AssumeRoleForPodIdentity` in `cluster`, signed by `caller`.
async fn exchange_in(
    f: &Fixture,
    cluster: &str,
    caller: &SigningCredentials,
    pod_token: &str,
) -> (u16, String, Value) {
    rest(
        &f.server,
        caller,
        "POST",
        &format!("/clusters/{cluster}/assume-role-for-pod-identity"),
        "eks-auth",
        &json!({ "token": pod_token }),
    )
    .await
}

/// The audit log's `AssumeRoleForPodIdentity` events, once the writer caught up.
async fn eks_auth_events(dir: &Path, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let log = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
        let events: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["action"] == "AssumeRoleForPodIdentity")
            .collect();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} AssumeRoleForPodIdentity events in the audit log");
}

#[tokio::test]
async fn a_pod_token_of_another_node_is_refused_naming_both_nodes() {
    let f = fixture(false).await;
    let agent_a = agent_session(&f, Some("node-a")).await;
    let aud = "pods.eks.amazonaws.com";

    let (status, _, body) =
        exchange(&f, &agent_a, &token(&f, "ns", "sa", aud, Some("node-a"))).await;
    assert_eq!(status, 200, "the agent of the pod's node: {body}");

    let (status, kind, body) =
        exchange(&f, &agent_a, &token(&f, "ns", "sa", aud, Some("node-b"))).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "AccessDeniedException"),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("`node-b`") && message.contains("`node-a`") && message.contains("ns/sa-0"),
        "names the pod and both nodes: {message}"
    );

    let events = eks_auth_events(f.dir.path(), 2).await;
    assert_eq!(events[0]["outcome"], "allowed");
    assert_eq!(events[0]["agent_node"], "node-a");
    assert_eq!(events[1]["outcome"], "denied", "{}", events[1]);
    assert_eq!(events[1]["agent_node"], "node-a");
    assert!(
        events[1]["reason"].as_str().unwrap().contains("`node-b`"),
        "{}",
        events[1]
    );

    // Not required: a token without a node, or a caller bound to no node, still passes.
    let (status, _, body) = exchange(&f, &agent_a, &token(&f, "ns", "sa", aud, None)).await;
    assert_eq!(status, 200, "{body}");
    let unbound = agent_session(&f, None).await;
    let (status, _, body) =
        exchange(&f, &unbound, &token(&f, "ns", "sa", aud, Some("node-b"))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn required_node_binding_refuses_tokens_and_callers_bound_to_no_node() {
    let f = fixture(true).await;
    let aud = "pods.eks.amazonaws.com";
    let agent_a = agent_session(&f, Some("node-a")).await;
    let (status, _, body) =
        exchange(&f, &agent_a, &token(&f, "ns", "sa", aud, Some("node-a"))).await;
    assert_eq!(status, 200, "{body}");

    let (status, kind, body) = exchange(&f, &agent_a, &token(&f, "ns", "sa", aud, None)).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "AccessDeniedException"),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("names no node"),
        "{body}"
    );

    // A key (the administrator's, an IAM user's) is bound to no node.
    let admin = admin(f.dir.path());
    let (status, kind, body) =
        exchange(&f, &admin, &token(&f, "ns", "sa", aud, Some("node-a"))).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "AccessDeniedException"),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not an agent session bound to a node"),
        "{body}"
    );
}

/// Node names are unique only within a cluster: the agent of `node-a` of one cluster cannot
/// exchange the token of a pod on a `node-a` of another.
#[tokio::test]
async fn a_node_of_the_same_name_in_another_cluster_is_another_node() {
    let f = fixture(true).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = start(options(other_dir.path())).await.unwrap();
    let d = f.dir.path();
    cluster(d, "c2", Some(other.shared.config.issuer_url.clone())).await;
    f.server.shared.refresh().await.unwrap();

    let agent_a = agent_session(&f, Some("node-a")).await;
    let aud = "pods.eks.amazonaws.com";
    let (status, _, body) = exchange_in(
        &f,
        "c",
        &agent_a,
        &token(&f, "ns", "sa", aud, Some("node-a")),
    )
    .await;
    assert_eq!(status, 200, "its own cluster's node-a: {body}");
    let theirs = token_of(&other, "ns", "sa", aud, Some("node-a"));
    let (status, kind, body) = exchange_in(&f, "c2", &agent_a, &theirs).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "AccessDeniedException"),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&other.shared.config.issuer_url)
            && message.contains(&f.server.shared.config.issuer_url),
        "names both clusters' issuers: {message}"
    );
}
