//! `podiam bench`: AssumeRoleWithWebIdentity throughput and latency against a no-op endpoint of
//! the same server, under the same load generator.
//!
//! Starts a server in-process on `127.0.0.1:0` in a temporary data directory (with the bench-only
//! `POST /__bench/noop` route), creates an IRSA role and a projected token from the built-in
//! issuer, then drives `--connections` keep-alive HTTP/1.1 connections in a closed loop (each sends
//! its next request when the previous answer is read) for `--warmup` then `--duration` seconds,
//! first against the no-op route and then against `POST /` AssumeRoleWithWebIdentity with the same
//! form body. Every response must be a 200; anything else counts as an error. The load generator is
//! a minimal hand-written HTTP/1.1 client on the same tokio runtime as the server, so both runs pay
//! the same client cost.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use podiam_identity::ServiceAccountToken;
use podiam_identity::jwt::ObjectRef;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::exit;

const ACCOUNT: &str = "000000000000";
const NAMESPACE: &str = "bench";
const SERVICE_ACCOUNT: &str = "bench-sa";
const ROLE: &str = "bench-role";
/// A response head or body larger than this is a protocol error.
const MAX_RESPONSE: usize = 64 * 1024;
/// One request may take at most this long; slower is an error (the connection is reopened).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct BenchArgs {
    /// Concurrent keep-alive connections (each one request in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per endpoint.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds per endpoint before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Runtime worker threads shared by the server and the load generator (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// `table` for a person, `json` for a script.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Keep the state in this PostgreSQL database (`postgres://…`) instead of SQLite: the hot
    /// path must not touch the database, so the two should be within a few percent.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Serialize)]
struct Report {
    connections: usize,
    duration_seconds: u64,
    warmup_seconds: u64,
    worker_threads: usize,
    body_bytes: usize,
    noop: Run,
    assume_role_with_web_identity: Run,
    /// AssumeRoleWithWebIdentity requests/s over no-op requests/s.
    ratio: f64,
    /// No-op CPU per request over AssumeRoleWithWebIdentity CPU per request: the ratio on a
    /// machine where nothing else competes for the cores.
    cpu_ratio: Option<f64>,
}

#[derive(Serialize)]
struct Run {
    endpoint: String,
    requests: u64,
    errors: u64,
    requests_per_second: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Process CPU time (server and load generator, user + system) per measured request.
    cpu_us_per_request: Option<f64>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.duration == 0 {
        bail!("--connections and --duration must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(bench(&args, threads))?;
    let text = match args.output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        Output::Table => table(&report),
    };
    crate::emit(&text)?;
    let errors = report.noop.errors + report.assume_role_with_web_identity.errors;
    Ok(ExitCode::from(if errors == 0 {
        exit::OK
    } else {
        exit::ERROR
    }))
}

async fn bench(args: &BenchArgs, threads: usize) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!(
        "podiam-bench-{}-{}",
        std::process::id(),
        podiam_identity::issuer::random_uuid(&podiam_identity::SystemRng)
            .map_err(|e| anyhow::anyhow!("{e}"))?
    ));
    let result = bench_in(args, threads, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench_in(
    args: &BenchArgs,
    threads: usize,
    data_dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let server = podiam_server::start_with_bench_noop(podiam_server::Options {
        data_dir: data_dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        issuer_url: None,
        explain_denials: true,
        database_url: args.database_url.clone(),
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
    .context("cannot start the server")?;
    // The issuer the server signs with (kept in the store: on a reused database it is the first
    // run's URL, not this run's endpoint).
    let issuer = server.shared.config.issuer_url.clone();
    let provider = issuer
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let trust = crate::create::role_trust_policy(ACCOUNT, provider, NAMESPACE, SERVICE_ACCOUNT);
    let admin = podiam_server::local::Admin::on(&server.shared)?;
    let created = admin
        .create_role(podiam_server::local::CreateRole {
            role_name: ROLE.into(),
            assume_role_policy_document: trust.clone(),
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => {}
        // A database kept from an earlier run (`--database-url`): make sure the trust policy
        // names this issuer.
        Err(e) if e.kind() == Some(podiam_server::error::ErrorKind::EntityAlreadyExists) => {
            admin
                .update_assume_role_policy(ROLE, &trust)
                .await
                .context("cannot update the existing bench role's trust policy")?;
        }
        Err(e) => return Err(e).context("cannot create the role"),
    }
    let token = podiam_server::local::sign_token_on(&server.shared, |issuer| ServiceAccountToken {
        issuer: issuer.to_string(),
        namespace: NAMESPACE.into(),
        service_account: ObjectRef {
            name: SERVICE_ACCOUNT.into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
        },
        audiences: vec!["sts.amazonaws.com".into()],
        expiration: Duration::from_secs(86_400),
        pod: None,
        node: None,
        jti: None,
    })
    .context("cannot create a token")?;
    let body = form_body(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/{ROLE}")),
        ("RoleSessionName", "bench"),
        ("WebIdentityToken", &token),
    ]);
    let addr = server.addr;
    // One request of each kind first: a broken setup fails here, not as a run full of errors.
    for path in ["/__bench/noop", "/"] {
        let mut conn = Conn::connect(addr, request(addr, path, &body)).await?;
        let (status, answer) = conn.send().await?;
        if status != 200 {
            bail!(
                "POST {path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    let noop = load(addr, "/__bench/noop", &body, args).await;
    let arwwi = load(addr, "/", &body, args).await;
    server.abort();
    let ratio = if noop.requests_per_second > 0.0 {
        arwwi.requests_per_second / noop.requests_per_second
    } else {
        0.0
    };
    let cpu_ratio = match (noop.cpu_us_per_request, arwwi.cpu_us_per_request) {
        (Some(n), Some(a)) if a > 0.0 => Some(n / a),
        _ => None,
    };
    Ok(Report {
        connections: args.connections,
        duration_seconds: args.duration,
        warmup_seconds: args.warmup,
        worker_threads: threads,
        body_bytes: body.len(),
        noop,
        assume_role_with_web_identity: arwwi,
        ratio,
        cpu_ratio,
    })
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                s.push(char::from(b));
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
    }
    s
}

fn request(addr: SocketAddr, path: &str, body: &str) -> Arc<[u8]> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nUser-Agent: podiam-bench\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r.into()
}

/// Runs `args.connections` closed-loop connections for warmup + duration; counts and times the
/// requests that start after the warmup and finish before the end.
async fn load(addr: SocketAddr, path: &str, body: &str, args: &BenchArgs) -> Run {
    let req = request(addr, path, body);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    // CPU time over the measured window.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = process_cpu();
        tokio::time::sleep_until(end.into()).await;
        Some(process_cpu()?.saturating_sub(before?))
    });
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(connection(addr, Arc::clone(&req), measure_from, end)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(stats) => {
                latencies.extend(stats.latencies_ns);
                errors += stats.errors;
            }
            Err(_) => errors += 1,
        }
    }
    latencies.sort_unstable();
    let q = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = (p * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1] as f64 / 1000.0
    };
    let requests = latencies.len() as u64;
    let cpu = cpu.await.ok().flatten();
    Run {
        endpoint: format!("POST {path}"),
        requests,
        errors,
        requests_per_second: requests as f64 / args.duration as f64,
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        max_us: q(1.0),
        cpu_us_per_request: cpu
            .filter(|_| requests > 0)
            .map(|c| c.as_secs_f64() * 1e6 / requests as f64),
    }
}

/// This process's user + system CPU time so far, all threads (Linux: `/proc/self/stat`, in
/// 10 ms clock ticks); `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime are
    // fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

#[derive(Default)]
struct Stats {
    latencies_ns: Vec<u64>,
    errors: u64,
}

async fn connection(
    addr: SocketAddr,
    req: Arc<[u8]>,
    measure_from: Instant,
    end: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < end {
        let c = match conn.take() {
            Some(c) => c,
            None => match Conn::connect(addr, Arc::clone(&req)).await {
                Ok(c) => c,
                Err(_) => {
                    stats.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let mut c = c;
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, c.send()).await;
        let t1 = Instant::now();
        let measured = t0 >= measure_from && t1 <= end;
        match outcome {
            Ok(Ok((200, _))) => {
                if measured {
                    stats
                        .latencies_ns
                        .push(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
                }
                conn = Some(c);
            }
            Ok(Ok(_)) => {
                stats.errors += 1;
                conn = Some(c);
            }
            // I/O error, protocol error or timeout: count it and reconnect.
            Ok(Err(_)) | Err(_) => stats.errors += 1,
        }
    }
    stats
}

/// A keep-alive HTTP/1.1 connection that sends one fixed request at a time.
struct Conn {
    stream: TcpStream,
    req: Arc<[u8]>,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: SocketAddr, req: Arc<[u8]>) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            req,
            buf: Vec::with_capacity(8 * 1024),
        })
    }

    /// Sends the request and reads one response (`Content-Length` framed); returns the status and
    /// the body.
    async fn send(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        self.stream.write_all(&self.req).await?;
        self.buf.clear();
        let (head_len, status, content_length) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            if self.buf.len() > MAX_RESPONSE {
                bail!("response head too large");
            }
            self.read_more().await?;
        };
        let total = head_len + content_length;
        if total > MAX_RESPONSE {
            bail!("response too large");
        }
        while self.buf.len() < total {
            self.read_more().await?;
        }
        if self.buf.len() > total {
            bail!("unexpected bytes after the response");
        }
        Ok((status, self.buf[head_len..total].to_vec()))
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// `Some((head length, status, content length))` once the head is complete.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(usize, u16, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let mut content_length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = Some(v.trim().parse().context("bad Content-Length")?);
        }
    }
    let Some(content_length) = content_length else {
        bail!("response without Content-Length");
    };
    Ok(Some((end + 4, status, content_length)))
}

fn table(r: &Report) -> String {
    let mut s = format!(
        "podiam bench: {} connections, {} s warmup + {} s measured per endpoint, {} worker threads, {}-byte form body\n\n",
        r.connections, r.warmup_seconds, r.duration_seconds, r.worker_threads, r.body_bytes
    );
    s.push_str(&format!(
        "{:<34} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11}\n",
        "endpoint",
        "requests",
        "requests/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
        "errors",
        "CPU µs/req"
    ));
    for (name, run) in [
        ("no-op (POST /__bench/noop)", &r.noop),
        (
            "AssumeRoleWithWebIdentity (POST /)",
            &r.assume_role_with_web_identity,
        ),
    ] {
        s.push_str(&format!(
            "{:<34} {:>10} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7} {:>11}\n",
            name,
            run.requests,
            run.requests_per_second,
            run.p50_us,
            run.p90_us,
            run.p99_us,
            run.max_us,
            run.errors,
            run.cpu_us_per_request
                .map_or_else(|| "-".to_string(), |c| format!("{c:.1}"))
        ));
    }
    s.push_str(&format!(
        "\nAssumeRoleWithWebIdentity / no-op: {:.1} % of the requests/s",
        r.ratio * 100.0
    ));
    if let Some(c) = r.cpu_ratio {
        s.push_str(&format!(
            "; {:.1} % by CPU per request (server + load generator)",
            c * 100.0
        ));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_head() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: 3\r\n\r\nabc";
        assert!(matches!(parse_head(&r[..10]), Ok(None)));
        assert!(matches!(parse_head(r), Ok(Some((62, 200, 3)))));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn form_body_percent_encodes() {
        assert_eq!(
            form_body(&[("A", "x:y/z"), ("B", "a.b-c_d~")]),
            "A=x%3Ay%2Fz&B=a.b-c_d~"
        );
    }
}
