//! HTTPS AdmissionReviews per second against the real server on 127.0.0.1 (client and server
//! share the machine). The ServiceAccount is cached up front and the Kubernetes API points at a
//! closed port, so this measures TLS + HTTP + decode + mutate + encode.
//!
//! cargo run --release -p podiam-webhook --example loadgen -- [connections] [requests-per-connection]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use podiam_webhook::server::{KubeOptions, Options, start};
use rustls_pki_types::ServerName;
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let per_conn: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tls.crt"), ck.cert.pem())?;
    std::fs::write(dir.path().join("tls.key"), ck.signing_key.serialize_pem())?;
    let mut opts = Options::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    opts.listen = "127.0.0.1:0".parse()?;
    opts.metrics_listen = None;
    opts.kube = KubeOptions {
        kubeconfig: None,
        kube_api: Some("http://127.0.0.1:9".to_owned()),
    };
    let running = start(opts).await?;
    let role = BTreeMap::from([(
        "eks.amazonaws.com/role-arn".to_owned(),
        "arn:aws:iam::111122223333:role/web".to_owned(),
    )]);
    running
        .webhook
        .apply_service_account("default", "web", &role);

    let container = |name: &str| json!({"name": name, "image": "registry.example.com/app:1", "env": [{"name": "PORT", "value": "8080"}]});
    let body = Bytes::from(serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "namespace": "default", "operation": "CREATE", "object": {"metadata": {"generateName": "web-"},
            "spec": {"serviceAccountName": "web", "containers": [container("app"), container("envoy"), container("logs")]}}}}),
    )?);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone())?;
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let addr = running.addr;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, body) = (client.clone(), body.clone());
        tasks.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = tokio_rustls::TlsConnector::from(client)
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                let t = Instant::now();
                send.ready().await?;
                let req = hyper::Request::post("/mutate")
                    .header("host", "localhost")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                let resp = send.send_request(req).await?;
                let bytes = resp.into_body().collect().await?.to_bytes();
                if !bytes.windows(9).any(|w| w == b"JSONPatch") {
                    return Err::<Vec<Duration>, Error>("response without a patch".into());
                }
                latencies.push(t.elapsed());
            }
            Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{} reviews over {connections} keep-alive HTTPS connections in {:.2?}: {:.0} reviews/s, latency p50 {:.0?} p99 {:.0?}",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    running.shutdown().await;
    Ok(())
}
