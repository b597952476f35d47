//! The heap allocations one AssumeRoleWithWebIdentity costs the server, beyond a `/healthz`.
//!
//! Counted with `allocation-counter`, whose global allocator counts per thread: the server runs
//! on a current-thread runtime driven by this test's thread, so everything the request does on
//! the runtime (hyper, axum, the adapter, the handler, the mint, the response) is counted, and
//! the audit writer's own thread is not. The client side (a raw keep-alive connection, buffers
//! allocated beforehand) is the same for both requests, so the difference is what the STS call
//! adds. A budget, not a timing: it fails when a change adds allocations to the hot path.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

use allocation_counter::measure;
use serde_json::json;
use support::ACCOUNT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What AssumeRoleWithWebIdentity may allocate beyond `/healthz`. Measured 2026-12-07: 80
/// against 34, so 46 (70 before the policy context borrowed its keys and values, the token was
/// sealed in one buffer and the success metrics were cached; 83 before the answer took
/// `sub`/`aud` and the request ID by move). The few blocks of slack are for another
/// toolchain's std; `--nocapture` prints the counts.
const BUDGET: u64 = 51;

/// Sends one request on the kept-alive connection and reads the whole answer into `buf`.
async fn round_trip(conn: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> u16 {
    conn.write_all(request).await.unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end])
            .unwrap()
            .to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + len {
            return std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
        }
    }
}

#[test]
fn assume_role_with_web_identity_stays_within_its_allocation_budget() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(support::server(dir.path()));
    let host = server.endpoint.trim_start_matches("http://").to_string();
    let trust = support::web_identity_trust(&host, "system:serviceaccount:ns:sa");
    rt.block_on(async {
        let input = podiam_server::local::CreateRole {
            role_name: "app".into(),
            assume_role_policy_document: trust,
            ..Default::default()
        };
        podiam_server::local::as_admin(dir.path(), async |a| a.create_role(input).await)
            .await
            .unwrap();
        server.shared.refresh().await.unwrap();
    });
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let claims = json!({
        "iss": server.shared.config.issuer_url,
        "sub": "system:serviceaccount:ns:sa",
        "aud": ["sts.amazonaws.com"],
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u1"}}
    });
    let token = server
        .shared
        .keys()
        .issuer
        .sign(claims.as_object().unwrap(), std::time::SystemTime::now())
        .unwrap();
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/app"))
        .append_pair("RoleSessionName", "s1")
        .append_pair("WebIdentityToken", &token);
    let body = form.finish();
    let assume = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();

    let mut conn = rt.block_on(TcpStream::connect(server.addr)).unwrap();
    let mut buf = Vec::with_capacity(64 * 1024);
    // Warm: the verified-token cache, the compiled trust policy, the connection's buffers.
    for _ in 0..3 {
        assert_eq!(rt.block_on(round_trip(&mut conn, &assume, &mut buf)), 200);
        assert_eq!(rt.block_on(round_trip(&mut conn, &healthz, &mut buf)), 200);
    }
    // The fewest of several tries: a one-off (hyper's cached date, a map growing) is not the
    // request's own.
    let mut fewest = |request: &[u8]| {
        (0..5)
            .map(|_| {
                let mut status = 0;
                let info = measure(|| {
                    status = rt.block_on(round_trip(&mut conn, request, &mut buf));
                });
                assert_eq!(status, 200);
                info.count_total
            })
            .min()
            .unwrap()
    };
    let base = fewest(&healthz);
    let sts = fewest(&assume);
    println!("allocations: GET /healthz {base}, AssumeRoleWithWebIdentity {sts}");
    assert!(
        sts.saturating_sub(base) <= BUDGET,
        "AssumeRoleWithWebIdentity allocates {sts} blocks, /healthz {base}: {} over the no-op, the budget is {BUDGET}",
        sts.saturating_sub(base)
    );
}
