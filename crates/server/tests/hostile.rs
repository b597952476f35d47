//! Attacks from issue 12 against a real server: retired keys stop verifying at the request's
//! time, a token's `iss` must be its provider's URL exactly, a failing issuer is asked once and
//! answered fast, and slow or stalled connections are cut.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podiam_identity::sigv4::{SigningCredentials, SigningParams, sign};
use podiam_identity::{AccessKeyId, Clock, HttpRequest, IssuerKey, IssuerKeyRing, SecretAccessKey};
use podiam_server::{Options, Server, ServerClock, start};
use serde_json::json;

const ACCOUNT: &str = "000000000000";

/// The system clock moved by an offset the test controls (seconds).
#[derive(Default)]
struct Shifted(AtomicU64);

impl Clock for Shifted {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<Shifted>,
    server: Server,
}

impl Fixture {
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn shift(&self, seconds: u64) {
        self.clock.0.store(seconds, Ordering::SeqCst);
    }
}

async fn fixture() -> Fixture {
    fixture_with(podiam_net::ConnectionLimits::default()).await
}

async fn fixture_with(connections: podiam_net::ConnectionLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Shifted::default());
    let server = start(Options {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        issuer_url: None,
        explain_denials: true,
        database_url: None,
        master_key: None,
        tls: None,
        replica_name: None,
        clock: ServerClock(Arc::clone(&clock) as Arc<dyn Clock + Send + Sync>),
        upstream: None,
        audit: Default::default(),
        connections,
        require_node_binding: false,
    })
    .await
    .unwrap();
    Fixture { dir, clock, server }
}

/// A role `name` trusting the provider `host` (its ARN's host/path) for `ns/sa`.
async fn role_trusting(f: &Fixture, name: &str, host: &str) -> String {
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
    let input = podiam_server::local::CreateRole {
        role_name: name.into(),
        assume_role_policy_document: trust,
        ..Default::default()
    };
    podiam_server::local::as_admin(f.data_dir(), async |a| a.create_role(input).await)
        .await
        .unwrap();
    f.server.shared.refresh().await.unwrap();
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// A role trusting the built-in issuer.
async fn builtin_role(f: &Fixture) -> String {
    let host = f.server.endpoint.trim_start_matches("http://").to_string();
    role_trusting(f, "app", &host).await
}

/// A provider for `url` with a static JWKS (no network), and a role trusting it.
async fn provider_with_jwks(f: &Fixture, url: &str, jwks: Option<String>) -> String {
    let provider = podiam_server::local::CreateOpenIdConnectProvider {
        url: url.to_string(),
        client_ids: vec!["sts.amazonaws.com".into()],
        jwks,
        ..Default::default()
    };
    podiam_server::local::as_admin(f.data_dir(), async |a| {
        a.create_oidc_provider(provider).await
    })
    .await
    .unwrap();
    let host = podiam_server::iam::provider_id(url).unwrap();
    let name = format!("r{}", f.server.shared.snapshot().roles.len());
    role_trusting(f, &name, &host).await
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn claims(iss: &str) -> serde_json::Value {
    let n = now_s();
    json!({
        "iss": iss,
        "sub": "system:serviceaccount:ns:sa",
        "aud": ["sts.amazonaws.com"],
        "iat": n, "nbf": n, "exp": n + 3600,
        "jti": format!("{n}-{}", rand_suffix()),
    })
}

/// Makes each token distinct (a never-seen token, not a cache hit).
fn rand_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A token of the built-in issuer, signed with the key active at the server's time.
fn builtin_token(f: &Fixture, iss: &str) -> String {
    let now = f.server.shared.clock.now();
    f.server
        .shared
        .keys()
        .issuer
        .sign(&claims(iss), now)
        .unwrap()
}

async fn post(addr: SocketAddr, form: &[(&str, &str)]) -> (u16, String) {
    let body = {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        body.finish()
    };
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn assume(f: &Fixture, role_arn: &str, token: &str) -> (u16, String) {
    assume_at(f.server.addr, role_arn, token).await
}

async fn assume_at(addr: SocketAddr, role_arn: &str, token: &str) -> (u16, String) {
    post(
        addr,
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

fn code(body: &str) -> &str {
    element(body, "Code")
}

fn element<'b>(body: &'b str, name: &str) -> &'b str {
    body.split(&format!("<{name}>"))
        .nth(1)
        .and_then(|r| r.split(&format!("</{name}>")).next())
        .unwrap_or("")
}

// === item 3: retired keys stop verifying at the request's time ===

/// `podiam issuer rotate --keep-old-seconds 5`: a token of the old key that the server has
/// never seen is accepted inside the window and refused after it, and so is one it remembers;
/// the key set is not rebuilt in between (no reload happens).
#[tokio::test]
async fn a_retired_issuer_key_stops_verifying_at_the_requests_time() {
    let f = fixture().await;
    let role = builtin_role(&f).await;
    let iss = f.server.shared.config.issuer_url.clone();
    let (early, late) = (builtin_token(&f, &iss), builtin_token(&f, &iss));
    podiam_server::local::rotate_issuer(f.data_dir(), Duration::from_secs(5))
        .await
        .unwrap();
    f.server.shared.refresh().await.unwrap();
    let keys = f.server.shared.keys();

    let (status, body) = assume(&f, &role, &early).await;
    assert_eq!(status, 200, "inside the window: {body}");

    f.shift(6);
    let (status, body) = assume(&f, &role, &late).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidIdentityToken"),
        "{body}"
    );
    assert!(body.contains("retired"), "{body}");
    let (status, body) = assume(&f, &role, &early).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidIdentityToken"),
        "a remembered token of the retired key: {body}"
    );
    assert!(
        Arc::ptr_eq(&keys, &f.server.shared.keys()),
        "decided without rebuilding the key rings"
    );
    // The new key signs at the server's time and verifies.
    let (status, body) = assume(&f, &role, &builtin_token(&f, &iss)).await;
    assert_eq!(status, 200, "{body}");
}

/// GetCallerIdentity signed with temporary credentials, at the server's time.
async fn caller_identity(f: &Fixture, creds: &SigningCredentials) -> (u16, String) {
    let host = f.server.addr.to_string();
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let signed = sign(
        &HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams::new(creds, "us-east-1", "sts", f.server.shared.clock.now()),
    )
    .unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{}/", f.server.endpoint))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// `podiam session-keys rotate --keep-old-seconds 5`: a session sealed with the old key opens
/// inside the window and not after it.
#[tokio::test]
async fn a_session_sealed_with_a_retired_key_stops_opening_at_the_requests_time() {
    let f = fixture().await;
    let role = builtin_role(&f).await;
    let iss = f.server.shared.config.issuer_url.clone();
    let (status, body) = assume(&f, &role, &builtin_token(&f, &iss)).await;
    assert_eq!(status, 200, "{body}");
    let creds = SigningCredentials {
        access_key_id: AccessKeyId::parse(element(&body, "AccessKeyId")).unwrap(),
        secret_access_key: SecretAccessKey::new(element(&body, "SecretAccessKey")),
        session_token: Some(element(&body, "SessionToken").to_string()),
    };
    podiam_server::local::rotate_session_keys(f.data_dir(), Duration::from_secs(5))
        .await
        .unwrap();
    f.server.shared.refresh().await.unwrap();
    let (status, body) = caller_identity(&f, &creds).await;
    assert_eq!(status, 200, "inside the window: {body}");
    f.shift(6);
    let (status, body) = caller_identity(&f, &creds).await;
    assert_eq!(
        (status, code(&body)),
        (403, "InvalidClientTokenId"),
        "{body}"
    );
}

// === item 9: `iss` must be the provider's URL exactly ===

#[tokio::test]
async fn iss_must_equal_the_providers_url_exactly() {
    let f = fixture().await;
    let key = IssuerKey::generate(SystemTime::now()).unwrap();
    let ring = IssuerKeyRing::new(vec![key]);
    let jwks = serde_json::to_string(&ring.jwks(SystemTime::now())).unwrap();
    let url = "https://oidc.example.com/id/CLUSTER";
    let role = provider_with_jwks(&f, url, Some(jwks)).await;
    let token = |iss: &str| ring.sign(&claims(iss), SystemTime::now()).unwrap();

    let (status, body) = assume(&f, &role, &token(url)).await;
    assert_eq!(status, 200, "the exact URL: {body}");
    assert!(
        body.contains(&format!("<Provider>{url}</Provider>")),
        "{body}"
    );
    for variant in [
        "http://oidc.example.com/id/CLUSTER",
        "https://oidc.example.com/id/CLUSTER/",
    ] {
        let (status, body) = assume(&f, &role, &token(variant)).await;
        assert_eq!(
            (status, code(&body)),
            (400, "InvalidIdentityToken"),
            "`{variant}`: {body}"
        );
        assert!(
            body.contains("`iss` claim") && body.contains(variant),
            "`{variant}`: {body}"
        );
    }

    // The built-in issuer too: its URL with a trailing slash is another issuer.
    let builtin = builtin_role(&f).await;
    let iss = f.server.shared.config.issuer_url.clone();
    let (status, body) = assume(&f, &builtin, &builtin_token(&f, &iss)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = assume(&f, &builtin, &builtin_token(&f, &format!("{iss}/"))).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidIdentityToken"),
        "{body}"
    );
}

// === item 8: a failing issuer is asked once and answered fast ===

/// A stand-in issuer on 127.0.0.1: `answer` is what it writes to each request (none: it
/// accepts and never answers). Returns its URL and how many requests it has read.
async fn stand_in_issuer(answer: Option<&'static str>) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Some(a) => {
                        let _ = stream.write_all(a.as_bytes()).await;
                    }
                    // Black hole: hold the connection for longer than any test runs.
                    None => tokio::time::sleep(Duration::from_secs(120)).await,
                }
            });
        }
    });
    (url, hits)
}

/// A token naming `iss` (its signature is never reached: the keys are missing).
fn token_of(iss: &str) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.c2ln",
        b64(br#"{"alg":"RS256","kid":"k"}"#),
        b64(claims(iss).to_string().as_bytes())
    )
}

/// `n` AssumeRoleWithWebIdentity calls at once; each one's status and error code.
async fn concurrently(f: &Fixture, role: &str, iss: &str, n: usize) -> Vec<(u16, String)> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (addr, role, token) = (f.server.addr, role.to_string(), token_of(iss));
        calls.spawn(async move {
            let (status, body) = assume_at(addr, &role, &token).await;
            (status, code(&body).to_string())
        });
    }
    calls.join_all().await
}

#[tokio::test]
async fn an_issuer_that_fails_is_fetched_once_for_many_concurrent_requests() {
    let f = fixture().await;
    let (url, hits) = stand_in_issuer(Some(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ))
    .await;
    let role = provider_with_jwks(&f, &url, None).await;
    let answers = concurrently(&f, &role, &url, 40).await;
    for a in &answers {
        assert_eq!(a, &(400, "IDPCommunicationError".to_string()));
    }
    let fetched = hits.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&fetched),
        "40 requests fetched discovery {fetched} times"
    );
    // The failure is answered from memory, with its cause, until it is 10 s old.
    let (status, body) = assume(&f, &role, &token_of(&url)).await;
    assert_eq!((status, code(&body)), (400, "IDPCommunicationError"));
    assert!(body.contains("HTTP status 500"), "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), fetched);
    f.shift(11);
    let (status, _) = assume(&f, &role, &token_of(&url)).await;
    assert_eq!(status, 400);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        fetched + 1,
        "asked again after 10 s"
    );
}

#[tokio::test]
async fn concurrent_requests_for_a_black_holed_issuer_fail_within_one_fetch_timeout() {
    let f = fixture().await;
    let (url, hits) = stand_in_issuer(None).await;
    let role = provider_with_jwks(&f, &url, None).await;
    let started = std::time::Instant::now();
    let answers = concurrently(&f, &role, &url, 10).await;
    let took = started.elapsed();
    for a in &answers {
        assert_eq!(a, &(400, "IDPCommunicationError".to_string()));
    }
    // One fetch of at most 5 s; queued one after another they took 5, 10, … 50 s.
    assert!(took < Duration::from_secs(9), "10 requests took {took:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// === item 10: slow and stalled clients are cut, connections are bounded ===

fn short_limits() -> podiam_net::ConnectionLimits {
    podiam_net::ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        max_connections: 64,
        connection_wait: Duration::from_millis(200),
        ..podiam_net::ConnectionLimits::default()
    }
}

/// Reads until the server closes the connection (or resets it); `None` if it is still open
/// after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

async fn healthz(addr: SocketAddr) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout_and_healthz_answers() {
    use tokio::io::AsyncWriteExt;
    let f = fixture_with(short_limits()).await;
    let addr = f.server.addr;
    let mut slow = Vec::new();
    for _ in 0..40 {
        slow.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // One byte of headers every 100 ms from each, for longer than the timeout.
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = vec![false; slow.len()];
    for byte in head.iter().take(25) {
        for (i, s) in slow.iter_mut().enumerate() {
            if !cut[i] && s.write_all(&[*byte]).await.is_err() {
                cut[i] = true;
            }
        }
        assert_eq!(healthz(addr).await, 200, "/healthz during the attack");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(3)).await.is_some(),
            "a slowloris connection is still open"
        );
    }
    assert_eq!(healthz(addr).await, 200);
}

#[tokio::test]
async fn a_stalled_body_is_cut() {
    use tokio::io::AsyncWriteExt;
    let f = fixture_with(short_limits()).await;
    let mut s = tokio::net::TcpStream::connect(f.server.addr).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nAction=GetCall",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(
        answer.is_some(),
        "the connection is still open with its body stalled"
    );
    let text = String::from_utf8_lossy(answer.as_deref().unwrap_or_default()).into_owned();
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
}

#[tokio::test]
async fn connections_over_the_bound_are_closed_and_a_freed_slot_serves_again() {
    let f = fixture_with(podiam_net::ConnectionLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(30),
        ..short_limits()
    })
    .await;
    let addr = f.server.addr;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Give the accept loop the four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = closed_within(&mut extra, Duration::from_secs(3)).await;
    assert_eq!(
        answer.as_deref(),
        Some(&b""[..]),
        "the fifth connection is closed unanswered"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(healthz(addr).await, 200, "a freed slot serves again");
}
