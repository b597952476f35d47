//! Broker mode in process: a second server plays AWS (account 111122223333); the broker
//! (account 000000000000, `upstream` pointing at it, with "AWS"'s administrator key as the
//! broker's credentials) verifies pods and gets their sessions from it with `aws-sdk-sts`.
//! `tests/interop/broker.sh` runs the same path end to end with the binaries, the agent, boto3
//! and an IAM user as the broker.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use podiam_identity::jwt::ObjectRef;
use podiam_identity::sigv4::{SigningCredentials, SigningParams, sign};
use podiam_identity::{Clock, HttpRequest, ServiceAccountToken};
use podiam_server::local::{Admin, CreateCluster, CreateRole};
use podiam_server::upstream::UpstreamOptions;
use podiam_server::{Options, Server, ServerClock, start};
use serde_json::{Value, json};

const OWN: &str = "000000000000";
const AWS: &str = "111122223333";

/// The system clock moved by an offset the test controls (seconds).
#[derive(Default)]
struct Shifted(AtomicU64);

impl Clock for Shifted {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

async fn server(
    dir: &Path,
    account: &str,
    upstream: Option<UpstreamOptions>,
    clock: Arc<Shifted>,
) -> Server {
    start(Options {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        account_id: account.into(),
        region: "us-east-1".into(),
        issuer_url: None,
        explain_denials: true,
        database_url: None,
        master_key: None,
        tls: None,
        replica_name: None,
        clock: ServerClock(clock),
        upstream,
        audit: Default::default(),
        connections: Default::default(),
        require_node_binding: false,
    })
    .await
    .unwrap()
}

fn admin_key(dir: &Path) -> SigningCredentials {
    let text = std::fs::read_to_string(dir.join("aws/credentials")).unwrap();
    SigningCredentials::from_shared_credentials(&text, "podiam").unwrap()
}

/// Upstream options for `aws`, signing with its administrator's key.
fn upstream_of(aws: &Server, aws_dir: &Path) -> UpstreamOptions {
    let key = admin_key(aws_dir);
    let mut o = UpstreamOptions::new(aws.endpoint.clone(), "us-east-1");
    o.credentials = Some(aws_sdk_sts::config::SharedCredentialsProvider::new(
        aws_sdk_sts::config::Credentials::new(
            key.access_key_id.as_str(),
            key.secret_access_key.expose_secret(),
            None,
            None,
            "test",
        ),
    ));
    o
}

/// A role in "AWS" that the account's administrator (the broker here) may assume for the pods
/// of cluster `c1`, as `podiam upstream trust-policy` prints it.
fn broker_trust(extra: Value) -> String {
    let mut p = podiam_server::upstream::trust_policy(
        &format!("arn:aws:iam::{AWS}:root"),
        "c1",
        None,
        None,
        true,
    )
    .to_value();
    if let Value::Object(m) = extra {
        for (k, v) in m {
            p["Statement"][0]["Condition"]["StringEquals"][k] = v;
        }
    }
    p.to_string()
}

async fn create_role(aws: &Server, name: &str, trust: String) {
    let admin = Admin::on(&aws.shared).unwrap();
    admin
        .create_role(CreateRole {
            role_name: name.into(),
            assume_role_policy_document: trust,
            ..CreateRole::default()
        })
        .await
        .unwrap();
}

/// A signed REST-JSON call to `server` with its administrator's key.
async fn call(
    server: &Server,
    dir: &Path,
    method: &str,
    path: &str,
    service: &str,
    body: &Value,
) -> (u16, String, Value) {
    let creds = admin_key(dir);
    let host = server.addr.to_string();
    let body = body.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let signed = sign(
        &HttpRequest {
            method,
            path,
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams::new(&creds, "us-east-1", service, server.shared.clock.now()),
    )
    .unwrap();
    let mut request = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            format!("{}{path}", server.endpoint),
        )
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
        kind,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn associate(broker: &Server, dir: &Path, sa: &str, body: Value) -> (u16, String, Value) {
    let mut b = json!({"namespace": "ns", "serviceAccount": sa});
    if let (Value::Object(m), Value::Object(extra)) = (&mut b, body) {
        m.extend(extra);
    }
    call(
        broker,
        dir,
        "POST",
        "/clusters/c1/pod-identity-associations",
        "eks",
        &b,
    )
    .await
}

fn pod_token(broker: &Server, sa: &str, pod: &str) -> String {
    podiam_server::local::sign_token_on(&broker.shared, |issuer| ServiceAccountToken {
        issuer: issuer.to_string(),
        namespace: "ns".into(),
        service_account: ObjectRef {
            name: sa.into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
        },
        audiences: vec!["pods.eks.amazonaws.com".into()],
        expiration: Duration::from_secs(3600),
        pod: Some(ObjectRef {
            name: pod.into(),
            uid: format!("uid-{pod}"),
        }),
        node: None,
        jti: None,
    })
    .unwrap()
}

async fn assume(broker: &Server, dir: &Path, token: &str) -> (u16, String, Value) {
    call(
        broker,
        dir,
        "POST",
        "/clusters/c1/assume-role-for-pod-identity",
        "eks-auth",
        &json!({ "token": token }),
    )
    .await
}

/// "AWS" opens one of its own session tokens: what the upstream session carries.
fn upstream_session(aws: &Server, response: &Value) -> podiam_identity::SessionClaims {
    opened(
        aws,
        response["credentials"]["sessionToken"].as_str().unwrap(),
    )
}

fn opened(aws: &Server, session_token: &str) -> podiam_identity::SessionClaims {
    aws.shared
        .keys()
        .sessions
        .open(session_token, &podiam_identity::SystemClock)
        .unwrap()
}

fn session_tag(session: &podiam_identity::SessionClaims, key: &str) -> Option<String> {
    session
        .session_tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.clone())
}

/// The pod's session tags (of ServiceAccount `ns/sa`, cluster `c1`) and its source identity.
fn assert_pod_tags(session: &podiam_identity::SessionClaims, pod: &str) {
    let tag = |k: &str| session_tag(session, k);
    assert_eq!(tag("kubernetes-namespace").as_deref(), Some("ns"));
    assert_eq!(tag("kubernetes-service-account").as_deref(), Some("sa"));
    assert_eq!(tag("kubernetes-pod-name").as_deref(), Some(pod));
    assert_eq!(tag("kubernetes-pod-uid"), Some(format!("uid-{pod}")));
    assert_eq!(tag("eks-cluster-name").as_deref(), Some("c1"));
    assert_eq!(
        tag("eks-cluster-arn").as_deref(),
        Some(format!("arn:aws:eks:us-east-1:{OWN}:cluster/c1").as_str())
    );
    assert_eq!(session.source_identity, Some(format!("ns@{pod}")));
}

/// The audit log (once the writer caught up) and its first event of `action`.
async fn audit_event(dir: &Path, action: &str) -> (String, Value) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let event = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["action"] == action)
        .unwrap();
    (log, event)
}

/// Successful upstream `AssumeRole` calls so far.
async fn assume_role_calls(server: &Server) -> f64 {
    metric(
        server,
        "podiam_upstream_calls_total{operation=\"AssumeRole\",code=\"OK\"}",
    )
    .await
}

async fn metric(server: &Server, line_start: &str) -> f64 {
    reqwest::get(format!("{}/metrics", server.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// An association of ServiceAccount `ns/sa` with role `role` of "AWS".
async fn associate_role(f: &Fixture, sa: &str, role: &str) -> (u16, String, Value) {
    associate(
        &f.broker,
        f.dir.path(),
        sa,
        json!({"roleArn": format!("arn:aws:iam::{AWS}:role/{role}")}),
    )
    .await
}

struct Fixture {
    _aws_dir: tempfile::TempDir,
    aws: Server,
    dir: tempfile::TempDir,
    broker: Server,
    clock: Arc<Shifted>,
}

/// "AWS" with role `app` (trusting the broker for cluster `c1`), and a broker with cluster
/// `c1` (built-in issuer).
async fn fixture(tune: impl FnOnce(&mut UpstreamOptions)) -> Fixture {
    let aws_dir = tempfile::tempdir().unwrap();
    let aws = server(aws_dir.path(), AWS, None, Arc::default()).await;
    create_role(&aws, "app", broker_trust(json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Shifted::default());
    let mut options = upstream_of(&aws, aws_dir.path());
    tune(&mut options);
    let broker = server(dir.path(), OWN, Some(options), Arc::clone(&clock)).await;
    Admin::on(&broker.shared)
        .unwrap()
        .create_cluster(CreateCluster {
            name: "c1".into(),
            builtin: true,
            ..CreateCluster::default()
        })
        .await
        .unwrap();
    Fixture {
        _aws_dir: aws_dir,
        aws,
        dir,
        broker,
        clock,
    }
}

#[tokio::test]
async fn a_pod_gets_an_upstream_session_with_its_tags_and_source_identity() {
    let f = fixture(|_| {}).await;
    let id = f.broker.shared.upstream().unwrap().identity().unwrap();
    assert_eq!(id.account, AWS);
    assert_eq!(id.arn, format!("arn:aws:iam::{AWS}:user/podiam-admin"));
    let ready = reqwest::get(format!("{}/readyz", f.broker.endpoint))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let (status, kind, a) = associate_role(&f, "sa", "app").await;
    assert_eq!(status, 200, "{kind} {a}");

    let token = pod_token(&f.broker, "sa", "web-0");
    let (status, kind, r) = assume(&f.broker, f.dir.path(), &token).await;
    assert_eq!(status, 200, "{kind} {r}");
    let arn = r["assumedRoleUser"]["arn"].as_str().unwrap();
    assert!(
        arn.starts_with(&format!(
            "arn:aws:sts::{AWS}:assumed-role/app/eks-c1-web-0-"
        )),
        "{r}"
    );
    assert!(
        r["assumedRoleUser"]["assumeRoleId"]
            .as_str()
            .unwrap()
            .starts_with("AROA")
    );
    assert_eq!(
        r["podIdentityAssociation"]["associationId"],
        a["association"]["associationId"]
    );
    let session = upstream_session(&f.aws, &r);
    assert_pod_tags(&session, "web-0");
    assert_eq!(session.transitive_tag_keys.len(), 6);
    let lifetime = session
        .expires_at
        .duration_since(session.issued_at)
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600));

    // The same pod again: from the cache, no second upstream call.
    let (status, _, again) = assume(&f.broker, f.dir.path(), &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["credentials"]["accessKeyId"],
        r["credentials"]["accessKeyId"]
    );
    assert_eq!(assume_role_calls(&f.broker).await, 1.0);
    assert_eq!(
        metric(&f.broker, "podiam_upstream_cache_total{result=\"hit\"}").await,
        1.0
    );

    // The audit event lines up with upstream's: its request ID and session, never a secret.
    let (log, event) = audit_event(f.dir.path(), "AssumeRoleForPodIdentity").await;
    assert_eq!(event["outcome"], "allowed");
    assert_eq!(event["upstream_session_arn"], arn);
    assert_eq!(event["upstream_cache"], "miss");
    assert_eq!(event["upstream_request_ids"].as_array().unwrap().len(), 1);
    let secret = r["credentials"]["secretAccessKey"].as_str().unwrap();
    let upstream_token = r["credentials"]["sessionToken"].as_str().unwrap();
    assert!(!log.contains(secret) && !log.contains(upstream_token));
    let aws_log = std::fs::read_to_string(f._aws_dir.path().join("audit.log")).unwrap();
    let request_id = event["upstream_request_ids"][0].as_str().unwrap();
    assert!(
        aws_log.contains(request_id),
        "upstream's audit has the request ID"
    );
}

#[tokio::test]
async fn concurrent_first_requests_of_one_pod_make_one_upstream_call() {
    let f = fixture(|_| {}).await;
    associate_role(&f, "sa", "app").await;
    let token = pod_token(&f.broker, "sa", "web-1");
    let results = futures_join(8, || assume(&f.broker, f.dir.path(), &token)).await;
    let keys: std::collections::HashSet<String> = results
        .iter()
        .map(|(s, k, r)| {
            assert_eq!(*s, 200, "{k} {r}");
            r["credentials"]["accessKeyId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(assume_role_calls(&f.broker).await, 1.0);
}

/// Runs `n` copies of `f` at once.
async fn futures_join<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let futures: Vec<_> = (0..n).map(|_| f()).collect();
    let mut out = Vec::new();
    for r in join_all(futures).await {
        out.push(r);
    }
    out
}

async fn join_all<Fut: std::future::Future>(futures: Vec<Fut>) -> Vec<Fut::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<Fut::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn upstreams_trust_policy_decides_and_its_refusal_names_the_upstream() {
    let f = fixture(|_| {}).await;
    create_role(
        &f.aws,
        "only-x",
        broker_trust(json!({"aws:RequestTag/kubernetes-namespace": "x"})),
    )
    .await;
    associate(
        &f.broker,
        f.dir.path(),
        "sa",
        json!({"roleArn": format!("arn:aws:iam::{AWS}:role/only-x")}),
    )
    .await;
    let (status, kind, r) = assume(&f.broker, f.dir.path(), &pod_token(&f.broker, "sa", "p")).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "AccessDeniedException"),
        "{r}"
    );
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains(&f.aws.endpoint) && message.contains("only-x"),
        "{message}"
    );
}

#[tokio::test]
async fn a_chained_target_role_inherits_the_tags_and_the_source_identity() {
    let f = fixture(|_| {}).await;
    // Its trust policy is written once the association's external ID is known.
    let nobody = json!({"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]});
    create_role(&f.aws, "target", nobody.to_string()).await;
    let (status, kind, a) = associate(
        &f.broker,
        f.dir.path(),
        "sa",
        json!({
            "roleArn": format!("arn:aws:iam::{AWS}:role/app"),
            "targetRoleArn": format!("arn:aws:iam::{AWS}:role/target"),
        }),
    )
    .await;
    assert_eq!(status, 200, "{kind} {a}");
    // The target's owner trusts the association role's sessions presenting the external ID;
    // AWS: a session with a source identity chains only into roles allowing
    // sts:SetSourceIdentity.
    let external_id = a["association"]["externalId"].as_str().unwrap();
    let trust = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"AWS": format!("arn:aws:iam::{AWS}:role/app")},
        "Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"],
        "Condition":{"StringEquals":{"sts:ExternalId": external_id}}}]});
    Admin::on(&f.aws.shared)
        .unwrap()
        .update_assume_role_policy("target", &trust.to_string())
        .await
        .unwrap();
    let (status, kind, r) = assume(
        &f.broker,
        f.dir.path(),
        &pod_token(&f.broker, "sa", "web-2"),
    )
    .await;
    assert_eq!(status, 200, "{kind} {r}");
    let arn = r["assumedRoleUser"]["arn"].as_str().unwrap();
    assert!(
        arn.starts_with(&format!(
            "arn:aws:sts::{AWS}:assumed-role/target/eks-c1-web-2-"
        )),
        "{r}"
    );
    let session = upstream_session(&f.aws, &r);
    assert!(
        session
            .session_tags
            .iter()
            .any(|t| t.key == "kubernetes-namespace" && t.value == "ns"),
        "transitive tags pass into the chained session: {:?}",
        session.session_tags
    );
    // AWS: the source identity persists through chaining (the broker does not send it again).
    assert_eq!(session.source_identity.as_deref(), Some("ns@web-2"));
    let lifetime = session
        .expires_at
        .duration_since(session.issued_at)
        .unwrap();
    assert!(lifetime <= Duration::from_secs(3600));
    assert_eq!(assume_role_calls(&f.broker).await, 2.0);
}

#[tokio::test]
async fn upstream_down_serves_cached_credentials_and_tells_new_pods_why() {
    let f = fixture(|_| {}).await;
    associate_role(&f, "sa", "app").await;
    let token = pod_token(&f.broker, "sa", "web-3");
    let (status, _, before) = assume(&f.broker, f.dir.path(), &token).await;
    assert_eq!(status, 200);
    let endpoint = f.aws.endpoint.clone();
    f.aws.shutdown(Duration::from_secs(1)).await;
    // 50 minutes on, the credentials are due for a refresh, which fails: the cached ones are
    // served until they expire.
    f.clock.0.store(50 * 60, Ordering::SeqCst);
    let (status, kind, during) = assume(&f.broker, f.dir.path(), &token).await;
    assert_eq!(status, 200, "{kind} {during}");
    assert_eq!(
        during["credentials"]["accessKeyId"],
        before["credentials"]["accessKeyId"]
    );
    assert_eq!(
        metric(&f.broker, "podiam_upstream_cache_total{result=\"stale\"}").await,
        1.0
    );
    // A pod with nothing cached is told which upstream failed.
    let (status, kind, r) = assume(
        &f.broker,
        f.dir.path(),
        &pod_token(&f.broker, "sa", "web-4"),
    )
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (503, "ServiceUnavailableException"),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains(&endpoint), "{r}");
    // Past their expiry, the cached ones are not served either.
    f.clock.0.store(61 * 60, Ordering::SeqCst);
    let (status, _, _) = assume(
        &f.broker,
        f.dir.path(),
        &pod_token(&f.broker, "sa", "web-3"),
    )
    .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn first_requests_of_many_pods_are_held_to_the_upstream_rate() {
    let f = fixture(|o| {
        o.max_rps = 10;
        o.timeout = Duration::from_millis(250);
    })
    .await;
    associate_role(&f, "sa", "app").await;
    // The identity check at start took the first slot; let the limit recover.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let tokens: Vec<String> = (0..8)
        .map(|i| pod_token(&f.broker, "sa", &format!("burst-{i}")))
        .collect();
    let started = std::time::Instant::now();
    let results = join_all(
        tokens
            .iter()
            .map(|t| assume(&f.broker, f.dir.path(), t))
            .collect(),
    )
    .await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let throttled: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    // One call every 100 ms within a 250 ms budget: three get through, the others are told to
    // slow down, with EKS Auth's code.
    assert!((2..=4).contains(&ok), "{ok} succeeded: {results:?}");
    assert_eq!(ok + throttled.len(), 8, "{results:?}");
    assert!(
        throttled.iter().all(|r| r.1 == "ThrottlingException"),
        "{throttled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(assume_role_calls(&f.broker).await, ok as f64);
}

#[tokio::test]
async fn without_an_upstream_another_accounts_role_is_refused_with_the_flag_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), OWN, None, Arc::default()).await;
    Admin::on(&s.shared)
        .unwrap()
        .create_cluster(CreateCluster {
            name: "c1".into(),
            builtin: true,
            ..CreateCluster::default()
        })
        .await
        .unwrap();
    let (status, kind, r) = associate(
        &s,
        dir.path(),
        "sa",
        json!({"roleArn": format!("arn:aws:iam::{AWS}:role/app")}),
    )
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "InvalidParameterException"),
        "{r}"
    );
    assert!(
        r["message"].as_str().unwrap().contains("--upstream-sts"),
        "{r}"
    );
}

/// An upstream that throttles everything: the broker retries (three attempts in all), then
/// answers EKS Auth's ThrottlingException; its identity cannot be resolved, so it is not ready.
#[tokio::test]
async fn upstream_throttling_is_retried_then_answered_as_throttling() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: String| {
            let counted = Arc::clone(&counted);
            async move {
                if body.contains("Action=AssumeRole") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "text/xml"), ("x-amzn-requestid", "throttled-1")],
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>throttled-1</RequestId></ErrorResponse>",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut o = UpstreamOptions::new(fake.clone(), "us-east-1");
    o.credentials = Some(aws_sdk_sts::config::SharedCredentialsProvider::new(
        aws_sdk_sts::config::Credentials::new("AKIAEXAMPLEEXAMPLE12", "secret", None, None, "test"),
    ));
    let broker = server(dir.path(), OWN, Some(o), Arc::default()).await;
    let ready = reqwest::get(format!("{}/readyz", broker.endpoint))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains(&fake) && why.contains("Throttling"), "{why}");

    Admin::on(&broker.shared)
        .unwrap()
        .create_cluster(CreateCluster {
            name: "c1".into(),
            builtin: true,
            ..CreateCluster::default()
        })
        .await
        .unwrap();
    associate(
        &broker,
        dir.path(),
        "sa",
        json!({"roleArn": format!("arn:aws:iam::{AWS}:role/app")}),
    )
    .await;
    let (status, kind, r) = assume(&broker, dir.path(), &pod_token(&broker, "sa", "p")).await;
    assert_eq!((status, kind.as_str()), (429, "ThrottlingException"), "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("Rate exceeded"),
        "{r}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

// === IRSA: AssumeRoleWithWebIdentity of an upstream role ===

/// A projected IRSA token of ServiceAccount `sa` in `ns` (audience `sts.amazonaws.com`), bound
/// to `pod` when given.
fn irsa_token(broker: &Server, sa: &str, pod: Option<&str>) -> String {
    podiam_server::local::sign_token_on(&broker.shared, |issuer| ServiceAccountToken {
        issuer: issuer.to_string(),
        namespace: "ns".into(),
        service_account: ObjectRef {
            name: sa.into(),
            uid: "00000000-0000-4000-8000-000000000002".into(),
        },
        audiences: vec!["sts.amazonaws.com".into()],
        expiration: Duration::from_secs(3600),
        pod: pod.map(|p| ObjectRef {
            name: p.into(),
            uid: format!("uid-{p}"),
        }),
        node: None,
        jti: None,
    })
    .unwrap()
}

/// The Rust SDK's STS client against the broker, with no credentials (the call is unsigned).
fn sts_of(broker: &Server) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(broker.endpoint.clone())
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// `AssumeRoleWithWebIdentity` of `role` (of "AWS") that must fail: its code and message.
async fn irsa_refused(
    f: &Fixture,
    role: &str,
    token: String,
    policy: Option<&str>,
) -> (String, String) {
    use aws_sdk_sts::error::ProvideErrorMetadata as _;
    let e = sts_of(&f.broker)
        .assume_role_with_web_identity()
        .role_arn(format!("arn:aws:iam::{AWS}:role/{role}"))
        .role_session_name("s1")
        .web_identity_token(token)
        .set_policy(policy.map(str::to_string))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    (
        e.code().unwrap_or_default().to_string(),
        e.message().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn an_irsa_pod_gets_an_upstream_session_through_assume_role_with_web_identity() {
    let f = fixture(|_| {}).await;
    let role = format!("arn:aws:iam::{AWS}:role/app");
    let (status, kind, _) = associate_role(&f, "sa", "app").await;
    assert_eq!(status, 200, "{kind}");
    let token = irsa_token(&f.broker, "sa", Some("web-9"));
    let out = sts_of(&f.broker)
        .assume_role_with_web_identity()
        .role_arn(&role)
        .role_session_name("botocore-session-1")
        .web_identity_token(&token)
        .duration_seconds(1800)
        .send()
        .await
        .unwrap();
    let user = out.assumed_role_user().unwrap();
    assert_eq!(
        user.arn(),
        format!("arn:aws:sts::{AWS}:assumed-role/app/botocore-session-1")
    );
    assert!(user.assumed_role_id().starts_with("AROA"));
    assert_eq!(
        out.subject_from_web_identity_token(),
        Some("system:serviceaccount:ns:sa")
    );
    assert_eq!(out.audience(), Some("sts.amazonaws.com"));
    assert_eq!(
        out.provider(),
        Some(f.broker.shared.config.issuer_url.as_str())
    );
    assert_eq!(out.source_identity(), Some("ns@web-9"));
    // The credentials are upstream's: "AWS" opens the session token and finds the pod's tags.
    let creds = out.credentials().unwrap();
    let session = opened(&f.aws, creds.session_token());
    assert_pod_tags(&session, "web-9");
    assert_eq!(
        session
            .expires_at
            .duration_since(session.issued_at)
            .unwrap(),
        Duration::from_secs(1800)
    );

    // The audit event names the pod and upstream's session, never the secret.
    let (log, event) = audit_event(f.dir.path(), "AssumeRoleWithWebIdentity").await;
    assert_eq!(event["outcome"], "allowed", "{event}");
    assert_eq!(event["pod"], "web-9");
    assert_eq!(event["upstream_session_arn"], user.arn());
    assert_eq!(event["upstream_request_ids"].as_array().unwrap().len(), 1);
    assert!(!log.contains(creds.secret_access_key()) && !log.contains(creds.session_token()));
}

#[tokio::test]
async fn an_irsa_token_bound_to_no_pod_gets_the_service_account_tags_only() {
    let f = fixture(|_| {}).await;
    let role = format!("arn:aws:iam::{AWS}:role/app");
    associate_role(&f, "sa", "app").await;
    let out = sts_of(&f.broker)
        .assume_role_with_web_identity()
        .role_arn(&role)
        .role_session_name("plain")
        .web_identity_token(irsa_token(&f.broker, "sa", None))
        .send()
        .await
        .unwrap();
    let session = opened(&f.aws, out.credentials().unwrap().session_token());
    let keys: Vec<&str> = session
        .session_tags
        .iter()
        .map(|t| t.key.as_str())
        .collect();
    assert_eq!(keys.len(), 4, "no pod name or UID without a pod: {keys:?}");
    assert!(!keys.contains(&"kubernetes-pod-name"));
    assert_eq!(session.source_identity, None);
}

#[tokio::test]
async fn an_irsa_pod_without_a_binding_to_the_role_is_refused_naming_the_binding() {
    let f = fixture(|_| {}).await;
    create_role(&f.aws, "other", broker_trust(json!({}))).await;
    // No binding at all.
    let (code, message) = irsa_refused(
        &f,
        "app",
        irsa_token(&f.broker, "nobody", Some("p-0")),
        None,
    )
    .await;
    assert_eq!(code, "AccessDenied", "{message}");
    assert!(
        message.contains("podiam create iamserviceaccount --cluster c1 --namespace ns --name nobody --role-arn arn:aws:iam::111122223333:role/app"),
        "{message}"
    );
    // A binding to another role.
    associate_role(&f, "sa", "other").await;
    let (code, message) =
        irsa_refused(&f, "app", irsa_token(&f.broker, "sa", Some("p-0")), None).await;
    assert_eq!(code, "AccessDenied", "{message}");
    assert!(
        message.contains("is bound to arn:aws:iam::111122223333:role/other"),
        "{message}"
    );
    assert_eq!(
        metric(
            &f.broker,
            "podiam_upstream_calls_total{operation=\"AssumeRole\""
        )
        .await,
        0.0,
        "nothing was asked of upstream"
    );
}

#[tokio::test]
async fn an_irsa_token_of_an_unregistered_issuer_or_audience_or_with_a_policy_is_refused() {
    let f = fixture(|_| {}).await;
    associate_role(&f, "sa", "app").await;
    // An issuer no registered cluster has.
    let foreign = podiam_server::local::sign_token_on(&f.broker.shared, |_| {
        ServiceAccountToken::new("https://elsewhere.example", "ns", "sa", "sts.amazonaws.com")
    })
    .unwrap();
    let (code, message) = irsa_refused(&f, "app", foreign, None).await;
    assert_eq!(code, "InvalidIdentityToken", "{message}");
    assert!(
        message.contains(
            "No cluster is registered in podiam for the issuer https://elsewhere.example"
        ),
        "{message}"
    );
    // The pod identity audience is not an IRSA audience.
    let (code, message) = irsa_refused(&f, "app", pod_token(&f.broker, "sa", "web-0"), None).await;
    assert_eq!(code, "InvalidIdentityToken", "{message}");
    // Session policies are not passed on: they belong on the binding.
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let (code, message) = irsa_refused(
        &f,
        "app",
        irsa_token(&f.broker, "sa", Some("p")),
        Some(policy),
    )
    .await;
    assert_eq!(code, "ValidationError", "{message}");
    assert!(message.contains("pod identity association"), "{message}");
}

#[tokio::test]
async fn an_irsa_session_is_cached_per_session_name() {
    let f = fixture(|_| {}).await;
    associate_role(&f, "sa", "app").await;
    let token = irsa_token(&f.broker, "sa", Some("web-3"));
    let ask = |name: &'static str| {
        let sts = sts_of(&f.broker);
        let token = token.clone();
        async move {
            let out = sts
                .assume_role_with_web_identity()
                .role_arn(format!("arn:aws:iam::{AWS}:role/app"))
                .role_session_name(name)
                .web_identity_token(token)
                .send()
                .await
                .unwrap();
            let user = out.assumed_role_user().unwrap().arn().to_string();
            let key = out.credentials().unwrap().access_key_id().to_string();
            (user, key)
        }
    };
    let (first_arn, first_key) = ask("one").await;
    let (again_arn, again_key) = ask("one").await;
    assert_eq!(
        (&again_arn, &again_key),
        (&first_arn, &first_key),
        "the same request: cached"
    );
    let (other_arn, other_key) = ask("two").await;
    assert_eq!(
        other_arn,
        format!("arn:aws:sts::{AWS}:assumed-role/app/two")
    );
    assert_ne!(other_key, first_key);
    assert_eq!(assume_role_calls(&f.broker).await, 2.0);
}
