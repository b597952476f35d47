//! A bounded keep-alive load loop for the container credentials endpoint.
//!
//! In-process (an agent with a fixed source on 127.0.0.1, then the load on the same runtime):
//!   cargo run --release -p podiam-agent --example load -- [CONNECTIONS] [SECONDS]
//! Against a running agent:
//!   cargo run --release -p podiam-agent --example load -- 32 10 http://127.0.0.1:PORT/v1/credentials TOKEN_FILE

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "load generator")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use podiam_agent::metrics::Metrics;
use podiam_agent::server::{ServeOptions, start};
use podiam_agent::testing::{StaticSource, pod_token};
use podiam_agent::{AgentClock, CacheConfig, CredentialCache};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let connections: usize = args.get(1).map_or(32, |s| s.parse().unwrap());
    let seconds: u64 = args.get(2).map_or(10, |s| s.parse().unwrap());
    let (addr, token, _agent) = if let (Some(url), Some(file)) = (args.get(3), args.get(4)) {
        let hostport = url.trim_start_matches("http://").split('/').next().unwrap();
        let token = std::fs::read_to_string(file).unwrap().trim().to_owned();
        (hostport.parse::<SocketAddr>().unwrap(), token, None)
    } else {
        let clock = AgentClock::system();
        let metrics = Arc::new(Metrics::default());
        let cache = CredentialCache::new(
            StaticSource::new(clock),
            CacheConfig::new("load"),
            clock,
            Arc::clone(&metrics),
        );
        let agent = start(
            cache,
            metrics,
            ServeOptions {
                listen: vec!["127.0.0.1:0".parse().unwrap()],
                probe_listen: None,
                imds: None,
                shutdown_grace: Duration::from_secs(1),
                connections: Default::default(),
            },
        )
        .await
        .unwrap();
        (
            agent.credential_addrs[0],
            pod_token("uid-load", 4_000_000_000),
            Some(agent),
        )
    };
    let request =
        format!("GET /v1/credentials HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\r\n");
    let request = Arc::new(request.into_bytes());
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..connections {
        let (request, done, ok, bad) = (
            Arc::clone(&request),
            Arc::clone(&done),
            Arc::clone(&ok),
            Arc::clone(&bad),
        );
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            while !done.load(Ordering::Relaxed) {
                s.write_all(&request).await.unwrap();
                // One response: headers, then Content-Length bytes.
                let mut have = 0;
                loop {
                    let n = s.read(&mut buf[have..]).await.unwrap();
                    assert!(n > 0, "connection closed");
                    have += n;
                    let text = &buf[..have];
                    if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&text[..end]).unwrap();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if have >= end + 4 + len {
                            if head.starts_with("HTTP/1.1 200") {
                                ok.fetch_add(1, Ordering::Relaxed)
                            } else {
                                bad.fetch_add(1, Ordering::Relaxed)
                            };
                            break;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        "{connections} keep-alive connections, {seconds} s: {n} answers 200, {} other; {:.0} requests/s",
        bad.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
}
