//! The listeners over real sockets on 127.0.0.1, with a fixed credential source.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podiam_agent::imds::{InstanceIdentity, PodIpMap};
use podiam_agent::metrics::Metrics;
use podiam_agent::server::{ImdsOptions, RunningAgent, ServeOptions, StartError, start};
use podiam_agent::testing::{StaticSource, pod_token};
use podiam_agent::{AgentClock, CacheConfig, CredentialCache};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn exp() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
        + 86_400
}

struct Fixture {
    agent: RunningAgent,
    source: StaticSource,
}

async fn agent(listen: Vec<SocketAddr>, imds_namespace: &str) -> Result<Fixture, StartError> {
    agent_with(listen, imds_namespace, Default::default()).await
}

async fn agent_with(
    listen: Vec<SocketAddr>,
    imds_namespace: &str,
    connections: podiam_net::ConnectionLimits,
) -> Result<Fixture, StartError> {
    let clock = AgentClock::system();
    let source = StaticSource::new(clock);
    let metrics = Arc::new(Metrics::default());
    let cache = CredentialCache::new(
        source.clone(),
        CacheConfig::new("c"),
        clock,
        Arc::clone(&metrics),
    );
    let pods = [("127.0.0.1".parse().unwrap(), imds_namespace.to_owned())].into();
    let agent = start(
        cache,
        metrics,
        ServeOptions {
            listen,
            probe_listen: Some("127.0.0.1:0".parse().unwrap()),
            imds: Some(ImdsOptions {
                listen: vec!["127.0.0.1:0".parse().unwrap()],
                identity: InstanceIdentity {
                    role_name: "node".into(),
                    instance_id: "i-0123456789abcdef0".into(),
                    region: "eu-west-1".into(),
                    availability_zone: "eu-west-1a".into(),
                    account_id: "111122223333".into(),
                    private_ip: None,
                },
                allow_v1: false,
                allow_namespaces: HashSet::from(["kube-system".to_owned()]),
                pods: Arc::new(PodIpMap::fixed(pods)),
            }),
            shutdown_grace: Duration::from_secs(1),
            connections,
        },
    )
    .await?;
    Ok(Fixture { agent, source })
}

/// One HTTP/1.1 request; returns (status, body).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn an_address_that_cannot_be_bound_is_skipped() {
    // 192.0.2.1 (TEST-NET-1) is on no interface here, like fd00:ec2::23 on an IPv4-only node.
    let f = agent(
        vec![
            "192.0.2.1:80".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ],
        "kube-system",
    )
    .await
    .unwrap();
    assert_eq!(f.agent.credential_addrs.len(), 1);
    let addr = f.agent.credential_addrs[0];
    let token = pod_token("uid-1", exp());
    let (status, body) =
        request(addr, "GET", "/v1/credentials", &[("Authorization", &token)]).await;
    assert_eq!(status, 200, "{body}");
    let probe = f.agent.probe_addr.unwrap();
    assert_eq!(request(probe, "GET", "/healthz", &[]).await.0, 200);
    f.agent.shutdown().await;
}

#[tokio::test]
async fn no_bindable_address_is_an_error() {
    let err = agent(vec!["192.0.2.1:80".parse().unwrap()], "kube-system")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::NoListener { .. }), "{err}");
}

#[tokio::test]
async fn container_credentials_as_the_sdks_read_them() {
    let f = agent(vec!["127.0.0.1:0".parse().unwrap()], "kube-system")
        .await
        .unwrap();
    let addr = f.agent.credential_addrs[0];
    let token = pod_token("uid-1", exp());
    let (status, body) =
        request(addr, "GET", "/v1/credentials", &[("Authorization", &token)]).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys: HashSet<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "AccountId",
            "Expiration"
        ])
    );
    assert_eq!(doc["AccountId"], "111122223333");
    // Cached: no second call.
    request(addr, "GET", "/v1/credentials", &[("Authorization", &token)]).await;
    assert_eq!(f.source.calls.load(Ordering::SeqCst), 1);

    let (status, body) = request(addr, "GET", "/v1/credentials", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "InvalidTokenException"
    );
    let expired = pod_token("uid-1", 1_000);
    let (status, body) = request(
        addr,
        "GET",
        "/v1/credentials",
        &[("Authorization", &expired)],
    )
    .await;
    assert_eq!(
        (status, body.contains("ExpiredTokenException")),
        (400, true)
    );
    let (status, _) = request(
        addr,
        "GET",
        "/v1/credentials",
        &[("Authorization", &token), ("Host", "attacker.example")],
    )
    .await;
    assert_eq!(status, 403, "a name in Host (DNS rebinding) is refused");
    assert_eq!(request(addr, "GET", "/", &[]).await.0, 404);
    f.agent.shutdown().await;
}

#[tokio::test]
async fn imds_v2_sessions_and_the_allow_list() {
    let f = agent(vec!["127.0.0.1:0".parse().unwrap()], "kube-system")
        .await
        .unwrap();
    let imds = f.agent.imds_addrs[0];
    let creds = "/latest/meta-data/iam/security-credentials/node";
    assert_eq!(
        request(imds, "GET", creds, &[]).await.0,
        401,
        "IMDSv1 is off"
    );
    assert_eq!(
        request(imds, "PUT", "/latest/api/token", &[]).await.0,
        400,
        "TTL header required"
    );
    assert_eq!(
        request(
            imds,
            "PUT",
            "/latest/api/token",
            &[
                ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                ("X-Forwarded-For", "1.2.3.4")
            ]
        )
        .await
        .0,
        403,
        "a proxied token request is refused"
    );
    assert_eq!(request(imds, "GET", "/latest/api/token", &[]).await.0, 405);
    let (status, token) = request(
        imds,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    assert_eq!(status, 200);
    let auth = [("X-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(
        request(
            imds,
            "GET",
            "/latest/meta-data/iam/security-credentials/",
            &auth
        )
        .await,
        (200, "node".to_owned())
    );
    let (status, body) = request(imds, "GET", creds, &auth).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    assert_eq!(
        request(imds, "GET", "/latest/meta-data/instance-id", &auth).await,
        (200, "i-0123456789abcdef0".to_owned())
    );
    assert_eq!(
        request(
            imds,
            "GET",
            "/latest/meta-data/iam/security-credentials/other",
            &auth
        )
        .await
        .0,
        404
    );
    assert_eq!(
        request(
            imds,
            "GET",
            creds,
            &[("X-aws-ec2-metadata-token", "forged")]
        )
        .await
        .0,
        401
    );
    f.agent.shutdown().await;

    // The caller's namespace is not on the allow-list.
    let f = agent(vec!["127.0.0.1:0".parse().unwrap()], "default")
        .await
        .unwrap();
    let imds = f.agent.imds_addrs[0];
    let (_, token) = request(
        imds,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    let auth = [("X-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(request(imds, "GET", creds, &auth).await.0, 403);
    assert_eq!(
        request(imds, "GET", "/latest/meta-data/placement/region", &auth).await,
        (200, "eu-west-1".to_owned()),
        "non-credential metadata stays readable"
    );
    let (_, metrics) = request(f.agent.probe_addr.unwrap(), "GET", "/metrics", &[]).await;
    assert!(
        metrics.contains("podiam_agent_imds_denied_total{reason=\"namespace\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        f.source.calls.load(Ordering::SeqCst),
        0,
        "no credentials fetched for a refusal"
    );
    f.agent.shutdown().await;
}

/// Issue 12: idle and slow connections are closed after the header timeout, connections over
/// the bound are closed, and the probe port answers throughout.
#[tokio::test]
async fn slow_and_excess_connections_are_closed_and_probes_keep_answering() {
    let f = agent_with(
        vec!["127.0.0.1:0".parse().unwrap()],
        "kube-system",
        podiam_net::ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 2,
            connection_wait: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = f.agent.credential_addrs[0];
    let probe = f.agent.probe_addr.unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHo")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), extra.read_to_end(&mut out)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the third connection was not closed unanswered"
    );
    assert_eq!(request(probe, "GET", "/healthz", &[]).await.0, 200);
    for mut s in held {
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        assert!(
            closed.is_ok(),
            "a slow connection is still open after the header timeout"
        );
    }
    f.agent.shutdown().await;
}
