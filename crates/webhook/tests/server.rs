//! The real webhook server (`podiam_webhook::server::start`, what `podiam webhook` runs) on
//! 127.0.0.1 with a self-signed certificate made here, against a stand-in Kubernetes API server
//! that speaks list/watch/get for ServiceAccounts. Every wait is a bounded poll.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use podiam_webhook::server::{KubeOptions, Options, Running, start};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::{connect, eventually, send};

const ROLE: &str = "arn:aws:iam::111122223333:role/s3-reader";

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Pair {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Pair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

struct Harness {
    api: Arc<ApiServer>,
    running: Running,
    dir: tempfile::TempDir,
    roots: RootCertStore,
}

impl Harness {
    async fn start(pair: &Pair) -> Self {
        let api = Arc::new(ApiServer::default());
        api.put(
            "default",
            "annotated",
            &[("eks.amazonaws.com/role-arn", ROLE)],
            true,
        );
        api.put("default", "plain", &[], true);
        let url = api.start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
        let mut opts = Options::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        opts.kube = KubeOptions {
            kubeconfig: None,
            kube_api: Some(url),
        };
        opts.tls_reload_interval = Duration::from_millis(50);
        opts.lookup.timeout = Duration::from_secs(5);
        let running = start(opts).await.unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(pair.der.clone()).unwrap();
        let h = Self {
            api,
            running,
            dir,
            roots,
        };
        // Ready once the initial list is cached and the watch is open.
        eventually("the ServiceAccount watch", || async {
            (h.running.webhook.cached_service_accounts() == 2
                && h.api.watches.load(Ordering::SeqCst) > 0)
                .then_some(())
        })
        .await;
        h
    }

    /// A new HTTPS connection; returns a request sender and the certificate the server presented.
    async fn connect(&self) -> (SendRequest<Full<Bytes>>, CertificateDer<'static>) {
        connect(self.running.addr, &self.roots).await
    }
}

fn pod(service_account: &str) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"generateName": "web-", "namespace": "default", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "containers": [{"name": "app", "image": "amazonlinux", "resources": {},
                "volumeMounts": [{"name": "kube-api-access-x", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "Always"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "serviceAccountName": service_account, "serviceAccount": service_account,
            "securityContext": {}, "schedulerName": "default-scheduler", "enableServiceLinks": true
        },
        "status": {}
    })
}

fn review(api_version: &str, uid: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": api_version,
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:authenticated"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

/// Post a review for a pod running as `sa`; returns the response and the patched pod (if any).
async fn admit(
    sender: &mut SendRequest<Full<Bytes>>,
    api_version: &str,
    sa: &str,
) -> (Value, Option<Value>) {
    let uid = format!("uid-{sa}");
    let (status, body) = send(
        sender,
        "POST",
        "/mutate",
        "application/json",
        review(api_version, &uid, pod(sa)),
    )
    .await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["apiVersion"], api_version, "TypeMeta echoed");
    assert_eq!(out["kind"], "AdmissionReview");
    let resp = &out["response"];
    assert_eq!(resp["uid"], uid.as_str());
    assert_eq!(resp["allowed"], true, "{resp}");
    let patched = resp.get("patch").map(|p| {
        assert_eq!(resp["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p.as_str().unwrap())
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut doc = pod(sa);
        json_patch::patch(&mut doc, &ops).unwrap();
        doc
    });
    (out, patched)
}

fn role_of(patched: &Value) -> Option<&str> {
    patched["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "AWS_ROLE_ARN")
        .and_then(|e| e["value"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_against_a_watched_cluster() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let h = Harness::start(&self_signed()).await;
        let (mut c, _) = h.connect().await;

        // An annotated ServiceAccount mutates (v1 and v1beta1 reviews).
        for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
            let (_, patched) = admit(&mut c, version, "annotated").await;
            let patched = patched.expect("annotated SA must mutate");
            assert_eq!(role_of(&patched), Some(ROLE));
            assert_eq!(patched["spec"]["volumes"][0]["name"], "aws-iam-token");
            assert_eq!(patched["spec"]["volumes"][1]["name"], "kube-api-access-x");
            assert_eq!(
                patched["spec"]["containers"][0]["volumeMounts"][1]["mountPath"],
                "/var/run/secrets/eks.amazonaws.com/serviceaccount"
            );
        }

        // An unannotated one does not: allowed, no patch.
        let (out, patched) = admit(&mut c, "admission.k8s.io/v1", "plain").await;
        assert!(
            patched.is_none() && out["response"].get("patchType").is_none(),
            "{out}"
        );

        // Created just before the pod, its watch event not delivered yet: the direct GET finds it.
        let gets_before = h.api.gets.load(Ordering::SeqCst);
        h.api.put(
            "default",
            "fresh",
            &[("eks.amazonaws.com/role-arn", ROLE)],
            false,
        );
        let (_, patched) = admit(&mut c, "admission.k8s.io/v1", "fresh").await;
        assert_eq!(role_of(&patched.expect("fresh SA must mutate")), Some(ROLE));
        assert_eq!(h.api.gets.load(Ordering::SeqCst), gets_before + 1);
        // ... and is cached from then on.
        admit(&mut c, "admission.k8s.io/v1", "fresh")
            .await
            .1
            .unwrap();
        assert_eq!(h.api.gets.load(Ordering::SeqCst), gets_before + 1);

        // A ServiceAccount that does not exist anywhere: allowed unmutated after one GET.
        let (_, patched) = admit(&mut c, "admission.k8s.io/v1", "ghost").await;
        assert!(patched.is_none());

        // Removing the annotation (a MODIFIED event) stops mutation.
        h.api.put("default", "annotated", &[], true);
        let mut tries = 0;
        while admit(&mut c, "admission.k8s.io/v1", "annotated")
            .await
            .1
            .is_some()
        {
            tries += 1;
            assert!(tries < 500, "annotation removal never reached the cache");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Adding it to a watched SA turns mutation on again, with the new role.
        let other = "arn:aws:iam::111122223333:role/other";
        h.api.put(
            "default",
            "plain",
            &[("eks.amazonaws.com/role-arn", other)],
            true,
        );
        let mut tries = 0;
        let patched = loop {
            if let Some(p) = admit(&mut c, "admission.k8s.io/v1", "plain").await.1 {
                break p;
            }
            tries += 1;
            assert!(tries < 500, "new annotation never reached the cache");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(role_of(&patched), Some(other));

        // Protocol edges: 415, undecodable body, health, metrics.
        let (status, _) = send(&mut c, "POST", "/mutate", "text/plain", b"{}".to_vec()).await;
        assert_eq!(status, 415);
        let (status, body) = send(
            &mut c,
            "POST",
            "/mutate",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
        assert_eq!(status, 200);
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(out["response"]["allowed"], false);
        assert!(
            out["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("decode"),
            "{out}"
        );
        let bad_pod = serde_json::to_vec(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "object": {"spec": {"containers": "nope"}}}}),
        )
        .unwrap();
        let (_, body) = send(&mut c, "POST", "/mutate", "application/json", bad_pod).await;
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (
                out["response"]["uid"].as_str(),
                out["response"]["allowed"].as_bool()
            ),
            (Some("u1"), Some(false))
        );
        let (status, body) = send(&mut c, "GET", "/healthz", "text/plain", Vec::new()).await;
        assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));

        let metrics_addr = h.running.metrics_addr.unwrap();
        let tcp = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        let (mut m, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let (status, body) = send(&mut m, "GET", "/metrics", "text/plain", Vec::new()).await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, 200);
        assert!(
            text.contains("pod_identity_webhook_pod_count_total{method=\"sts_web_identity\"}"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_webhook_missing_sa_count_total 1"),
            "{text}"
        );
        assert!(
            text.contains("podiam_webhook_serviceaccount_lookups_total{result=\"found\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("podiam_webhook_request_duration_seconds_bucket"),
            "{text}"
        );

        h.running.shutdown().await;
        drop(h.dir);
    })
    .await
    .expect("test exceeded 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_is_picked_up() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (first, second) = (self_signed(), self_signed());
        let mut h = Harness::start(&first).await;
        h.roots.add(second.der.clone()).unwrap();
        let (mut old_conn, presented) = h.connect().await;
        assert_eq!(presented, first.der);

        // A broken new pair is refused: the old certificate keeps being served.
        std::fs::write(
            h.dir.path().join("tls.crt"),
            "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        eventually("the broken pair to be refused", || async {
            h.running
                .webhook
                .metrics()
                .render()
                .contains("podiam_webhook_certificate_reloads_total{result=\"refused\"} 1")
                .then_some(())
        })
        .await;
        assert_eq!(h.connect().await.1, first.der);

        // Rotation: new handshakes get the new certificate.
        std::fs::write(h.dir.path().join("tls.key"), &second.key_pem).unwrap();
        std::fs::write(h.dir.path().join("tls.crt"), &second.cert_pem).unwrap();
        eventually("the rotated certificate", || async {
            (h.connect().await.1 == second.der).then_some(())
        })
        .await;

        // A connection opened before the rotation still works.
        let (status, _) = send(&mut old_conn, "GET", "/healthz", "text/plain", Vec::new()).await;
        assert_eq!(status, 200);
        h.running.shutdown().await;
    })
    .await
    .expect("test exceeded 60 s");
}
