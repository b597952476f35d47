//! `podiam webhook manifests`: everything needed to run the webhook on a cluster with cert-manager,
//! as a multi-document YAML stream (each document is JSON, which is YAML) for `kubectl apply -f -`.
//!
//! Targets Kubernetes 1.33 and later (k8s-openapi's `earliest`); the tests validate against 1.33
//! and 1.37 schemas.

use serde_json::{Value, json};

/// What the printed objects are named and where they go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestOptions {
    /// Namespace for the Deployment, Service, Certificate and RBAC.
    pub namespace: String,
    /// Name of every object (and the `app` label).
    pub name: String,
    /// Container image that has the `podiam` binary as its entrypoint.
    pub image: String,
    /// Deployment replicas.
    pub replicas: i32,
    /// Extra `podiam webhook` flags (e.g. `--aws-default-region=eu-west-1`).
    pub extra_args: Vec<String>,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            namespace: "podiam".to_owned(),
            name: "podiam-webhook".to_owned(),
            image: "ghcr.io/podiam/podiam:0.1.0".to_owned(),
            replicas: 2,
            extra_args: Vec::new(),
        }
    }
}

const CERT_DIR: &str = "/etc/webhook/certs";
const HTTPS_PORT: i32 = 8443;
const METRICS_PORT: i32 = 9999;

/// The objects, in apply order.
pub fn objects(o: &ManifestOptions) -> Vec<Value> {
    let (ns, name) = (o.namespace.as_str(), o.name.as_str());
    let labels = json!({ "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "podiam" });
    let meta = |namespaced: bool| {
        let mut m = json!({ "name": name, "labels": labels });
        if namespaced {
            m["namespace"] = json!(ns);
        }
        m
    };
    let secret = format!("{name}-tls");
    let mut args = vec![
        "webhook".to_owned(),
        format!("--listen=0.0.0.0:{HTTPS_PORT}"),
        format!("--metrics-listen=0.0.0.0:{METRICS_PORT}"),
        format!("--tls-cert={CERT_DIR}/tls.crt"),
        format!("--tls-key={CERT_DIR}/tls.key"),
        format!("--namespace={ns}"),
    ];
    args.extend(o.extra_args.iter().cloned());
    let probe = json!({ "httpGet": { "path": "/healthz", "port": "https", "scheme": "HTTPS" }, "periodSeconds": 10 });
    vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } }),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(true) }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(false),
            "rules": [{ "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch"] }]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(false),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }]
        }),
        // --watch-config-map reads only the `pod-identity-webhook` ConfigMap in our namespace.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(true),
            "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"] }]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(true),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }]
        }),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(true),
            "spec": {
                "selector": { "app.kubernetes.io/name": name },
                "ports": [
                    { "name": "https", "port": 443, "targetPort": "https", "protocol": "TCP" },
                    { "name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP" }
                ]
            }
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(true),
            "spec": {
                "replicas": o.replicas,
                "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
                        "containers": [{
                            "name": "webhook",
                            "image": o.image,
                            "args": args,
                            "ports": [
                                { "name": "https", "containerPort": HTTPS_PORT, "protocol": "TCP" },
                                { "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" }
                            ],
                            "readinessProbe": probe,
                            "livenessProbe": probe,
                            "resources": { "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "256Mi" } },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] }
                            },
                            "volumeMounts": [{ "name": "certs", "mountPath": CERT_DIR, "readOnly": true }]
                        }],
                        "volumes": [{ "name": "certs", "secret": { "secretName": secret } }]
                    }
                }
            }
        }),
        // cert-manager (a CRD): a self-signed issuer and the serving certificate, 90 days, renewed
        // 15 days ahead, as upstream's deploy/; the webhook reloads the files when they rotate.
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": meta(true),
            "spec": { "selfSigned": {} }
        }),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": meta(true),
            "spec": {
                "secretName": secret,
                "duration": "2160h",
                "renewBefore": "360h",
                "dnsNames": [format!("{name}.{ns}.svc"), format!("{name}.{ns}.svc.cluster.local")],
                "issuerRef": { "name": name, "kind": "Issuer", "group": "cert-manager.io" },
                "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" }
            }
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": name, "labels": labels,
                "annotations": { "cert-manager.io/inject-ca-from": format!("{ns}/{name}") }
            },
            "webhooks": [{
                "name": "pod-identity-webhook.podiam.io",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": { "service": { "name": name, "namespace": ns, "path": "/mutate", "port": 443 } },
                "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced" }],
                // Upstream's sample selector: pods can opt out with this label.
                "objectSelector": { "matchExpressions": [{ "key": "eks.amazonaws.com/skip-pod-identity-webhook", "operator": "DoesNotExist" }] },
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 10
            }]
        }),
    ]
}

/// The objects as a YAML stream of JSON documents separated by `---`.
pub fn render(o: &ManifestOptions) -> String {
    let mut out = String::new();
    for obj in objects(o) {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(&obj).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_configuration_is_safe_by_default() {
        let objs = objects(&ManifestOptions::default());
        let mwc = objs
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .unwrap();
        let w = &mwc["webhooks"][0];
        assert_eq!(
            (
                w["failurePolicy"].as_str(),
                w["sideEffects"].as_str(),
                w["reinvocationPolicy"].as_str()
            ),
            (Some("Ignore"), Some("None"), Some("IfNeeded"))
        );
        assert_eq!(
            mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "podiam/podiam-webhook"
        );
        let kinds: Vec<_> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        for k in [
            "Deployment",
            "Service",
            "ClusterRole",
            "Role",
            "Certificate",
            "Issuer",
        ] {
            assert!(kinds.contains(&k), "{k}");
        }
    }

    #[test]
    fn namespace_flows_everywhere() {
        let text = render(&ManifestOptions {
            namespace: "iam".into(),
            ..ManifestOptions::default()
        });
        assert!(
            text.contains("podiam-webhook.iam.svc")
                && text.contains("\"--namespace=iam\"")
                && !text.contains("\"namespace\": \"podiam\"")
        );
        assert_eq!(
            text.matches("---\n").count(),
            objects(&ManifestOptions::default()).len()
        );
    }
}
