//! AssumeRoleWithWebIdentity over HTTP against a real server: every way a token can be wrong gets
//! the AWS error code SDKs expect, and none of them hurts the server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use podiam_identity::IssuerKey;
use podiam_server::{Options, Server, start};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

const ACCOUNT: &str = "000000000000";
const ROLE: &str = "app";

struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    server: Server,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let server = start(Options {
        data_dir: data_dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        issuer_url: None,
        explain_denials: true,
        database_url: None,
        master_key: None,
        tls: None,
        replica_name: None,
        clock: Default::default(),
        upstream: None,
        audit: Default::default(),
        connections: Default::default(),
        require_node_binding: false,
    })
    .await
    .unwrap();
    let host = server.endpoint.trim_start_matches("http://").to_string();
    let trust = support::web_identity_trust(&host, "system:serviceaccount:ns:sa");
    create_role(&data_dir, ROLE, &trust).await;
    // The running server picks up writes from other processes within its poll interval.
    server.shared.refresh().await.unwrap();
    Fixture {
        _dir: dir,
        data_dir,
        server,
    }
}

async fn create_role(data_dir: &std::path::Path, name: &str, trust: &str) {
    let input = podiam_server::local::CreateRole {
        role_name: name.into(),
        assume_role_policy_document: trust.into(),
        ..Default::default()
    };
    podiam_server::local::as_admin(data_dir, async |a| a.create_role(input).await)
        .await
        .unwrap();
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn claims(f: &Fixture) -> serde_json::Map<String, serde_json::Value> {
    let n = now();
    json!({
        "iss": f.server.shared.config.issuer_url,
        "sub": "system:serviceaccount:ns:sa",
        "aud": ["sts.amazonaws.com"],
        "iat": n, "nbf": n, "exp": n + 3600,
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u1"}}
    })
    .as_object()
    .unwrap()
    .clone()
}

fn sign(f: &Fixture, claims: &serde_json::Map<String, serde_json::Value>) -> String {
    f.server
        .shared
        .keys()
        .issuer
        .sign(claims, std::time::SystemTime::now())
        .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// POSTs a form to the server; returns the status and body.
async fn post(addr: SocketAddr, form: &[(&str, &str)]) -> (u16, String) {
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        body.append_pair(k, v);
    }
    raw_post(addr, body.finish().as_bytes()).await
}

async fn raw_post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    read_response(&mut s).await
}

/// Reads a whole `Connection: close` response: its status and body.
async fn read_response(s: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn assume(f: &Fixture, token: &str) -> (u16, String) {
    post(
        f.server.addr,
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/{ROLE}")),
            ("RoleSessionName", "s1"),
            ("WebIdentityToken", token),
        ],
    )
    .await
}

fn code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
}

#[tokio::test]
async fn a_good_token_gets_credentials() {
    let f = fixture().await;
    let (status, body) = assume(&f, &sign(&f, &claims(&f))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(
        "<SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>"
    ));
    assert!(body.contains(&format!(
        "<Arn>arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/s1</Arn>"
    )));
    assert!(body.contains("<AccessKeyId>ASIA"));
    let (status, metrics) = raw_get(f.server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "podiam_sts_credentials_issued_total{action=\"AssumeRoleWithWebIdentity\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(raw_get(f.server.addr, "/readyz").await.0, 200);
}

/// `Action=` is the caller's to choose before any authentication: names podiam does not serve
/// are counted under one `Unknown` series, never one series each (memory held forever).
#[tokio::test]
async fn unknown_actions_share_one_metrics_series() {
    let f = fixture().await;
    // Unsigned: refused before dispatch, as on AWS, but counted all the same.
    for i in 0..20 {
        let name = format!("NoSuchAction{i}");
        let (status, body) = post(f.server.addr, &[("Action", &name)]).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(code(&body), "MissingAuthenticationToken", "{body}");
    }
    let (status, body) = post(
        f.server.addr,
        &[("Action", "GetRole"), ("Version", "2010-05-08")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, metrics) = raw_get(f.server.addr, "/metrics").await;
    assert!(!metrics.contains("NoSuchAction"), "{metrics}");
    assert!(
        metrics.contains(
            "podiam_requests_total{service=\"iam\",action=\"Unknown\",code=\"MissingAuthenticationToken\"} 20"
        ),
        "{metrics}"
    );
    // A served action keeps its own name.
    assert!(
        metrics.contains("action=\"GetRole\",code=\"MissingAuthenticationToken\""),
        "{metrics}"
    );
}

async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut s).await
}

#[tokio::test]
async fn every_bad_token_is_refused_with_the_aws_code() {
    let f = fixture().await;
    let good = sign(&f, &claims(&f));
    let (header, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();

    let mut cases: Vec<(&str, String, u16, &str)> = Vec::new();

    // alg: none, with and without a signature.
    let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    cases.push((
        "alg none",
        format!("{none}.{payload}."),
        400,
        "InvalidIdentityToken",
    ));
    // HS256 keyed with the issuer's public key (algorithm confusion).
    let jwks = serde_json::to_vec(&f.server.shared.keys().issuer.jwks(SystemTime::now())).unwrap();
    let hs_header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &jwks);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{hs_header}.{payload}").as_bytes());
    cases.push((
        "HS256 with the public key",
        format!("{hs_header}.{payload}.{}", b64(tag.as_ref())),
        400,
        "InvalidIdentityToken",
    ));
    // A valid RS256 signature by a key the issuer never published.
    let stranger = IssuerKey::generate(SystemTime::now()).unwrap();
    cases.push((
        "unknown kid",
        stranger.sign(&claims(&f)).unwrap(),
        400,
        "InvalidIdentityToken",
    ));
    // A flipped signature byte.
    let mut sig = signature.to_string();
    let last = if sig.ends_with('A') { 'B' } else { 'A' };
    sig.pop();
    sig.push(last);
    cases.push((
        "bad signature",
        format!("{header}.{payload}.{sig}"),
        400,
        "InvalidIdentityToken",
    ));
    // Expired beyond the 5-minute skew.
    let mut c = claims(&f);
    c.insert("exp".into(), json!(now() - 600));
    c.insert("iat".into(), json!(now() - 4200));
    c.insert("nbf".into(), json!(now() - 4200));
    cases.push(("expired", sign(&f, &c), 400, "ExpiredTokenException"));
    // Not valid for another hour.
    let mut c = claims(&f);
    c.insert("nbf".into(), json!(now() + 3600));
    c.insert("exp".into(), json!(now() + 7200));
    cases.push(("not yet valid", sign(&f, &c), 400, "InvalidIdentityToken"));
    // Wrong audience.
    let mut c = claims(&f);
    c.insert("aud".into(), json!(["pods.eks.amazonaws.com"]));
    cases.push(("wrong aud", sign(&f, &c), 400, "InvalidIdentityToken"));
    // Wrong issuer: no provider for it.
    let mut c = claims(&f);
    c.insert("iss".into(), json!("https://elsewhere.example.com"));
    cases.push(("unknown issuer", sign(&f, &c), 400, "InvalidIdentityToken"));
    // The trust policy names another ServiceAccount.
    let mut c = claims(&f);
    c.insert("sub".into(), json!("system:serviceaccount:ns:other"));
    cases.push(("wrong sub", sign(&f, &c), 403, "AccessDenied"));
    // Oversized and garbage tokens.
    cases.push(("oversized", "a".repeat(20_001), 400, "ValidationError"));
    cases.push(("garbage", "....".into(), 400, "InvalidIdentityToken"));
    cases.push((
        "not base64",
        "%%%.%%%.%%%".into(),
        400,
        "InvalidIdentityToken",
    ));

    for (name, token, status, want) in cases {
        let (got_status, body) = assume(&f, &token).await;
        assert_eq!((got_status, code(&body)), (status, want), "{name}: {body}");
        assert!(body.contains("<RequestId>"), "{name}: {body}");
    }
    // Denials name the failed condition key.
    let mut c = claims(&f);
    c.insert("sub".into(), json!("system:serviceaccount:ns:other"));
    let (_, body) = assume(&f, &sign(&f, &c)).await;
    assert!(body.contains(":sub"), "{body}");

    // Still serving.
    let (status, _) = assume(&f, &good).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn duration_over_the_role_maximum_is_a_validation_error() {
    let f = fixture().await;
    let token = sign(&f, &claims(&f));
    let (status, body) = post(
        f.server.addr,
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/{ROLE}")),
            ("RoleSessionName", "s1"),
            ("WebIdentityToken", &token),
            ("DurationSeconds", "7200"),
        ],
    )
    .await;
    assert_eq!((status, code(&body)), (400, "ValidationError"), "{body}");
    assert!(body.contains("7200"), "{body}");
    let _ = &f.data_dir;
}

#[tokio::test]
async fn garbage_bodies_get_aws_errors() {
    let f = fixture().await;
    for body in [
        &b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15"[..],
        b"\xff\xfe\x00",
        b"Action=DoesNotExist&Version=2011-06-15",
        b"Version=2010-05-08",
        b"Action=ListRoles&Version=2010-05-08",
    ] {
        let (status, text) = raw_post(f.server.addr, body).await;
        assert!((400..500).contains(&status), "{body:?}: {status} {text}");
        assert!(text.contains("<ErrorResponse"), "{text}");
    }
    let (status, text) = raw_post(f.server.addr, b"Action=ListRoles&Version=2010-05-08").await;
    assert_eq!((status, code(&text)), (403, "MissingAuthenticationToken"));
    let (status, text) = raw_post(f.server.addr, &vec![b'a'; 300 * 1024]).await;
    assert_eq!(status, 413, "{text}");
}

/// A role in `f` trusting `issuer`'s provider for `system:serviceaccount:ns:sa`.
async fn trust_issuer(f: &Fixture, issuer: &str, jwks: Option<&str>) -> String {
    let host = issuer.trim_start_matches("http://").to_string();
    let provider = podiam_server::local::CreateOpenIdConnectProvider {
        url: issuer.to_string(),
        client_ids: vec!["sts.amazonaws.com".into()],
        jwks: jwks.map(str::to_string),
        ..Default::default()
    };
    podiam_server::local::as_admin(&f.data_dir, async |a| {
        a.create_oidc_provider(provider).await
    })
    .await
    .unwrap();
    let port = issuer.rsplit(':').next().unwrap_or("x");
    let role = format!("remote-{port}");
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{host}")},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{host}:sub"): "system:serviceaccount:ns:sa"}}
        }]
    })
    .to_string();
    create_role(&f.data_dir, &role, &trust).await;
    f.server.shared.refresh().await.unwrap();
    format!("arn:aws:iam::{ACCOUNT}:role/{role}")
}

async fn assume_role(f: &Fixture, role_arn: &str, token: &str) -> (u16, String) {
    post(
        f.server.addr,
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", "s1"),
            ("WebIdentityToken", token),
        ],
    )
    .await
}

#[tokio::test]
async fn keys_of_another_issuer_come_from_its_discovery_document_or_a_static_jwks() {
    let a = fixture().await;
    let b = fixture().await;
    let issuer_b = b.server.shared.config.issuer_url.clone();
    let token_b = sign(&b, &claims(&b));

    // Fetched over HTTP: discovery, then jwks_uri.
    let fetched = trust_issuer(&a, &issuer_b, None).await;
    let (status, body) = assume_role(&a, &fetched, &token_b).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("<Provider>{issuer_b}</Provider>")),
        "{body}"
    );

    // A token from a key B never published is refused even after the forced refetch.
    let stranger = IssuerKey::generate(SystemTime::now()).unwrap();
    let (status, body) = assume_role(&a, &fetched, &stranger.sign(&claims(&b)).unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidIdentityToken"),
        "{body}"
    );

    // With B gone, A keeps verifying with the keys it cached.
    let jwks_b =
        serde_json::to_string(&b.server.shared.keys().issuer.jwks(SystemTime::now())).unwrap();
    b.server.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = assume_role(&a, &fetched, &token_b).await;
    assert_eq!(status, 200, "{body}");

    // An issuer that cannot be reached and was never cached: IDPCommunicationError.
    let c = fixture().await;
    let issuer_c = c.server.shared.config.issuer_url.clone();
    let token_c = sign(&c, &claims(&c));
    c.server.abort();
    let unreachable = trust_issuer(&a, &issuer_c, None).await;
    let (status, body) = assume_role(&a, &unreachable, &token_c).await;
    assert_eq!(
        (status, code(&body)),
        (400, "IDPCommunicationError"),
        "{body}"
    );
    assert!(body.contains("kubectl get --raw /openid/v1/jwks"), "{body}");

    // A static JWKS given at provider creation needs no network at all.
    let d = fixture().await;
    let issuer_d = d.server.shared.config.issuer_url.clone();
    let token_d = sign(&d, &claims(&d));
    let jwks_d =
        serde_json::to_string(&d.server.shared.keys().issuer.jwks(SystemTime::now())).unwrap();
    d.server.abort();
    let a2 = fixture().await;
    let stat = trust_issuer(&a2, &issuer_d, Some(&jwks_d)).await;
    let (status, body) = assume_role(&a2, &stat, &token_d).await;
    assert_eq!(status, 200, "{body}");
    // The static JWKS is parsed once: the same key set serves every request (so tokens verified
    // with it are remembered), and other keys make another one.
    let shared = &a2.server.shared;
    let first = shared.static_jwks(&jwks_d).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &first,
        &shared.static_jwks(&jwks_d).unwrap()
    ));
    let other = shared.static_jwks(&jwks_b).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &other));
    let (status, body) = assume_role(&a2, &stat, &token_d).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_is_gone() {
    let f = fixture().await;
    let token = sign(&f, &claims(&f));
    for _ in 0..3 {
        let (status, body) = assume(&f, &token).await;
        assert_eq!(status, 200, "{body}");
    }
    // Rotate with no grace: the old key leaves the published set at once.
    podiam_server::local::rotate_issuer(&f.data_dir, Duration::ZERO)
        .await
        .unwrap();
    f.server.shared.refresh().await.unwrap();
    let (status, body) = assume(&f, &token).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidIdentityToken"),
        "{body}"
    );
    // Tokens from the new key work.
    let (status, body) = assume(&f, &sign(&f, &claims(&f))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_slow_issuer_does_not_hold_up_the_requests_of_another() {
    let a = fixture().await;
    let b = fixture().await;
    let issuer_b = b.server.shared.config.issuer_url.clone();
    let token_b = sign(&b, &claims(&b));
    let from_b = trust_issuer(&a, &issuer_b, None).await;
    let (status, body) = assume_role(&a, &from_b, &token_b).await;
    assert_eq!(status, 200, "{body}");

    // An issuer that accepts and answers nothing for 3 s.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}", slow.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = slow.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                drop(stream);
            });
        }
    });
    let from_slow = trust_issuer(&a, &slow_url, None).await;
    let slow_token = format!(
        "{}.{}.c2ln",
        b64(br#"{"alg":"RS256","kid":"k"}"#),
        b64(
            json!({"iss": slow_url, "sub": "system:serviceaccount:ns:sa", "aud": ["sts.amazonaws.com"], "exp": 4_102_444_800_i64})
                .to_string()
                .as_bytes()
        )
    );
    // Both at once on one task: the slow issuer's request, and 300 ms into it one of B's.
    let slow_request = async {
        let started = std::time::Instant::now();
        let answer = post(
            a.server.addr,
            &[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", &from_slow),
                ("RoleSessionName", "s1"),
                ("WebIdentityToken", &slow_token),
            ],
        )
        .await;
        (answer, started.elapsed())
    };
    let b_request = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        (assume_role(&a, &from_b, &token_b).await, started.elapsed())
    };
    let (((slow_status, slow_body), slow_took), ((status, body), took)) =
        tokio::join!(slow_request, b_request);
    // B's token was answered at once from B's cached keys, while the slow fetch was under way.
    assert_eq!(status, 200, "{body}");
    assert!(
        slow_took > Duration::from_secs(2),
        "the slow issuer answered in {slow_took:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "another issuer's fetch held this request for {took:?}"
    );
    assert_eq!(
        (slow_status, code(&slow_body)),
        (400, "IDPCommunicationError"),
        "{slow_body}"
    );
}
