//! `mutate` on a typical 3-container pod (app + two sidecars, one init container), IRSA and Pod
//! Identity, plus the whole AdmissionReview round trip in process (decode, resolve, mutate,
//! encode) without the network.
//!
//! cargo bench -p podiam-webhook --bench mutate

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use podiam_webhook::webhook::{LookupPolicy, Webhook};
use podiam_webhook::{Config, Identity, mutate};
use serde_json::{Value, json};

fn three_container_pod() -> Value {
    let container = |name: &str| {
        json!({"name": name, "image": format!("registry.example.com/{name}:1.2.3"), "resources": {},
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "volumeMounts": [{"name": "kube-api-access-x", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7d9f8-", "namespace": "default", "labels": {"app": "web", "pod-template-hash": "7d9f8"},
            "annotations": {"kubectl.kubernetes.io/default-container": "app"}},
        "spec": {
            "serviceAccountName": "web", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "initContainers": [container("migrate")],
            "containers": [container("app"), container("envoy"), container("log-shipper")],
        }
    })
}

fn bench(c: &mut Criterion) {
    let pod: Pod = serde_json::from_value(three_container_pod()).unwrap_or_default();
    let cfg = Config {
        aws_default_region: "eu-west-1".into(),
        sts_regional_endpoint: true,
        ..Config::default()
    };
    let irsa = Identity::web_identity("arn:aws:iam::111122223333:role/web");
    let cc = Identity::container_credentials();
    c.bench_function("mutate/irsa/3-containers", |b| {
        b.iter(|| mutate(std::hint::black_box(&pod), &irsa, &cfg))
    });
    c.bench_function("mutate/pod-identity/3-containers", |b| {
        b.iter(|| mutate(std::hint::black_box(&pod), &cc, &cfg))
    });

    let webhook = Webhook::new(cfg, None, None, LookupPolicy::default());
    let annotations = BTreeMap::from([(
        "eks.amazonaws.com/role-arn".to_owned(),
        "arn:aws:iam::111122223333:role/web".to_owned(),
    )]);
    webhook.apply_service_account("default", "web", &annotations);
    let body = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "0c9a8d74", "namespace": "default", "operation": "CREATE", "object": three_container_pod()}}))
    .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread().build();
    let Ok(rt) = rt else { return };
    c.bench_function("review/irsa/3-containers", |b| {
        b.iter(|| rt.block_on(webhook.review(std::hint::black_box(&body))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
