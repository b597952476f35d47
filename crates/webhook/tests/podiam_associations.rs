//! `--podiam-endpoint`/`--cluster` end to end: the real podiam server (`podiam_server::start`, in
//! process, SQLite in a temporary data directory) with a cluster and Pod Identity associations
//! created as the administrator; the real webhook server polling its ListPodIdentityAssociations
//! (SigV4 `eks`, the administrator's key from `DATA_DIR/aws/credentials`) and a stand-in
//! Kubernetes API for the ServiceAccount watch. Every wait is a bounded poll.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use podiam_identity::sigv4::KeySource;
use podiam_server::local::{CreateAssociation, CreateCluster, CreateRole, as_admin};
use podiam_webhook::podiam::PodiamOptions;
use podiam_webhook::server::{KubeOptions, Options, Running, start};
use rustls::RootCertStore;
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::{connect, eventually, send};

const ACCOUNT: &str = "000000000000";
const CLUSTER: &str = "dev";
const ROLE: &str = "cart-role";
const POD_IDENTITY_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;
/// More than one page (100) of associations, so the webhook must follow `nextToken`.
const BULK: usize = 120;

async fn associate(data_dir: &Path, namespace: &str, service_account: &str) {
    let input = CreateAssociation {
        namespace: namespace.into(),
        service_account: service_account.into(),
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/{ROLE}"),
        ..CreateAssociation::default()
    };
    as_admin(data_dir, async |a| {
        a.create_association(CLUSTER, input).await
    })
    .await
    .unwrap();
}

/// podiam with cluster `dev`, role `cart-role` and associations for `default/cart` and
/// `bulk/sa-000…` (sorted before `default`, so `default/cart` is on the second page).
async fn podiam(dir: &Path) -> podiam_server::Server {
    let server = podiam_server::start(podiam_server::Options {
        data_dir: dir.to_path_buf(),
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
    let cluster = CreateCluster {
        name: CLUSTER.into(),
        builtin: true,
        ..CreateCluster::default()
    };
    as_admin(dir, async |a| a.create_cluster(cluster).await)
        .await
        .unwrap();
    let role = CreateRole {
        role_name: ROLE.into(),
        assume_role_policy_document: POD_IDENTITY_TRUST.into(),
        ..CreateRole::default()
    };
    as_admin(dir, async |a| a.create_role(role).await)
        .await
        .unwrap();
    for i in 0..BULK {
        associate(dir, "bulk", &format!("sa-{i:03}")).await;
    }
    associate(dir, "default", "cart").await;
    server.shared.refresh().await.unwrap();
    server
}

struct Harness {
    running: Running,
    _api: Arc<ApiServer>,
    _tls_dir: tempfile::TempDir,
    roots: RootCertStore,
}

impl Harness {
    async fn start(opts_podiam: PodiamOptions) -> Self {
        let api = Arc::new(ApiServer::default());
        api.put("default", "cart", &[], true);
        api.put("default", "other", &[], true);
        api.put("default", "late", &[], true);
        let url = api.start().await;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let tls_dir = tempfile::tempdir().unwrap();
        std::fs::write(tls_dir.path().join("tls.crt"), ck.cert.pem()).unwrap();
        std::fs::write(
            tls_dir.path().join("tls.key"),
            ck.signing_key.serialize_pem(),
        )
        .unwrap();
        let mut opts = Options::new(
            tls_dir.path().join("tls.crt"),
            tls_dir.path().join("tls.key"),
        );
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts.metrics_listen = None;
        opts.kube = KubeOptions {
            kubeconfig: None,
            kube_api: Some(url),
        };
        opts.podiam = Some(opts_podiam);
        let running = start(opts).await.unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let h = Self {
            running,
            _api: api,
            _tls_dir: tls_dir,
            roots,
        };
        eventually("the ServiceAccount watch", || async {
            (h.running.webhook.cached_service_accounts() == 3).then_some(())
        })
        .await;
        h
    }

    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        connect(self.running.addr, &self.roots).await.0
    }

    fn metrics(&self) -> String {
        self.running.webhook.metrics().render()
    }
}

fn pod(service_account: &str) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"generateName": "cart-", "namespace": "default", "labels": {"app": "cart"}},
        "spec": {
            "containers": [{"name": "app", "image": "amazonlinux"}],
            "serviceAccountName": service_account
        }
    })
}

/// Admit a pod running as `sa` in `default`; returns the patched pod, `None` when not mutated.
async fn admit(sender: &mut SendRequest<Full<Bytes>>, sa: &str) -> Option<Value> {
    let uid = format!("uid-{sa}");
    let body = serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod(sa), "dryRun": false
        }
    }))
    .unwrap();
    let (status, body) = send(sender, "POST", "/mutate", "application/json", body).await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    let r = &out["response"];
    assert_eq!(r["uid"], uid.as_str());
    assert_eq!(r["allowed"], true, "{out}");
    let patch = r.get("patch")?;
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().unwrap())
        .unwrap();
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut doc = pod(sa);
    json_patch::patch(&mut doc, &ops).unwrap();
    Some(doc)
}

/// The Pod Identity mutation, exactly as with the identities file.
fn assert_pod_identity(patched: &Value) {
    let c = &patched["spec"]["containers"][0];
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials"
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
            ),
        ],
        "{patched}"
    );
    assert_eq!(
        c["volumeMounts"][0],
        json!({"name": "eks-pod-identity-token", "readOnly": true,
               "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"})
    );
    let volume = &patched["spec"]["volumes"][0];
    assert_eq!(volume["name"], "eks-pod-identity-token");
    let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "pods.eks.amazonaws.com");
    assert_eq!(token["path"], "eks-pod-identity-token");
}

fn admin_key(data_dir: &Path) -> KeySource {
    KeySource::file(data_dir.join("aws").join("credentials"), "podiam").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_come_from_podiam_and_survive_its_outage() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let server = podiam(dir.path()).await;
        let mut sync = PodiamOptions::new(&server.endpoint, CLUSTER, admin_key(dir.path()));
        sync.interval = Duration::from_millis(100);
        let h = Harness::start(sync).await;
        eventually("the first sync from podiam", || async {
            h.running
                .webhook
                .has_association("default", "cart")
                .then_some(())
        })
        .await;
        // All pages: the bulk associations (page 1) and default/cart (page 2).
        assert!(h.running.webhook.has_association("bulk", "sa-000"));
        assert!(
            h.running
                .webhook
                .has_association("bulk", &format!("sa-{:03}", BULK - 1))
        );
        let metrics = h.metrics();
        assert!(
            metrics.contains(&format!("podiam_webhook_podiam_associations {}", BULK + 1)),
            "{metrics}"
        );

        let mut c = h.connect().await;
        let patched = admit(&mut c, "cart")
            .await
            .expect("a ServiceAccount with an association mutates");
        assert_pod_identity(&patched);
        assert!(
            admit(&mut c, "other").await.is_none(),
            "no association, no annotation: not mutated"
        );

        // A new association is picked up by the next poll.
        assert!(admit(&mut c, "late").await.is_none());
        associate(dir.path(), "default", "late").await;
        server.shared.refresh().await.unwrap();
        eventually("the new association", || async {
            h.running
                .webhook
                .has_association("default", "late")
                .then_some(())
        })
        .await;
        assert_pod_identity(&admit(&mut c, "late").await.unwrap());

        // podiam goes away: failed polls are counted, the last good set is kept.
        server.abort();
        eventually("a failed sync", || async {
            h.metrics()
                .contains("podiam_webhook_podiam_syncs_total{result=\"error\"}")
                .then_some(())
        })
        .await;
        let errors = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("podiam_webhook_podiam_syncs_total{result=\"error\"}"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_default()
        };
        eventually("several failed syncs", || async {
            (errors(&h.metrics()) >= 3.0).then_some(())
        })
        .await;
        assert_pod_identity(&admit(&mut c, "cart").await.unwrap());
        assert_pod_identity(&admit(&mut c, "late").await.unwrap());
        assert!(admit(&mut c, "other").await.is_none());
        assert!(
            h.metrics()
                .contains(&format!("podiam_webhook_podiam_associations {}", BULK + 2)),
            "the gauge keeps the last good count"
        );
        h.running.shutdown().await;
    })
    .await
    .expect("test exceeded 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_counted_and_mutates_nothing() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let server = podiam(dir.path()).await;
        // A well-formed key podiam does not know: InvalidClientTokenId (403) on every poll.
        let stranger = dir.path().join("stranger");
        std::fs::write(
            &stranger,
            "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        )
        .unwrap();
        let mut sync = PodiamOptions::new(
            &server.endpoint,
            CLUSTER,
            KeySource::file(&stranger, "default").unwrap(),
        );
        sync.interval = Duration::from_millis(100);
        let h = Harness::start(sync).await;
        eventually("a refused sync", || async {
            h.metrics()
                .contains("podiam_webhook_podiam_syncs_total{result=\"error\"}")
                .then_some(())
        })
        .await;
        assert!(!h.metrics().contains("result=\"ok\""));
        let mut c = h.connect().await;
        assert!(admit(&mut c, "cart").await.is_none());
        h.running.shutdown().await;
        server.abort();
    })
    .await
    .expect("test exceeded 60 s");
}
