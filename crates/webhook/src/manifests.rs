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
    /// Also read Pod Identity associations from podiam (`--podiam-endpoint`, `--cluster`).
    pub podiam: Option<PodiamAssociations>,
}

/// `--podiam-endpoint` mode: the flags, and the key read from a Secret the operator creates
/// (never printed here), mounted read-only as a shared-credentials file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodiamAssociations {
    /// podiam's URL (`--podiam-endpoint`).
    pub endpoint: String,
    /// The cluster as registered with podiam (`--cluster`).
    pub cluster: String,
    /// The Secret with key [`CREDENTIALS_KEY`]: a shared-credentials file whose `[default]` profile
    /// is the webhook's access key.
    pub credentials_secret: String,
    /// A Secret whose `ca.crt` is the CA of podiam's serving certificate (an `https` endpoint with a
    /// private CA), trusted through `SSL_CERT_FILE`; `None`: the image's CA certificates.
    pub ca_secret: Option<String>,
}

/// The Secret's key holding the shared-credentials file.
pub const CREDENTIALS_KEY: &str = "credentials";
/// Where that Secret is mounted.
pub const CREDENTIALS_DIR: &str = "/etc/podiam/webhook-credentials";
/// Where the CA Secret is mounted (`SSL_CERT_FILE` is its `ca.crt`).
pub const CA_DIR: &str = "/etc/podiam/server-ca";
/// The group the webhook runs as; the pod's fsGroup, so the key file can be mode 0440.
const GID: i64 = 65532;
/// Secret files: root's, group [`GID`], readable by nobody else.
const CREDENTIALS_MODE: i64 = 0o440;

/// The image `scripts/build-image` (and the Dockerfile) builds from this workspace: `podiam:VERSION`.
/// Push it to a registry and pass its name there (`--image`).
pub const IMAGE: &str = concat!("podiam:", env!("CARGO_PKG_VERSION"));

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            namespace: "podiam".to_owned(),
            name: "podiam-webhook".to_owned(),
            image: IMAGE.to_owned(),
            replicas: 2,
            extra_args: Vec::new(),
            podiam: None,
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
    let mut mounts = vec![json!({ "name": "certs", "mountPath": CERT_DIR, "readOnly": true })];
    let mut volumes = vec![json!({ "name": "certs", "secret": { "secretName": secret } })];
    let mut env: Vec<Value> = Vec::new();
    let mut pod_security = json!({
        "runAsNonRoot": true, "runAsUser": GID, "runAsGroup": GID,
        "seccompProfile": { "type": "RuntimeDefault" }
    });
    if let Some(p) = &o.podiam {
        args.push(format!("--podiam-endpoint={}", p.endpoint));
        args.push(format!("--cluster={}", p.cluster));
        args.push(format!(
            "--podiam-credentials-file={CREDENTIALS_DIR}/{CREDENTIALS_KEY}"
        ));
        mounts.push(
            json!({ "name": "podiam-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true }),
        );
        volumes.push(json!({
            "name": "podiam-credentials",
            "secret": {
                "secretName": p.credentials_secret,
                "items": [{ "key": CREDENTIALS_KEY, "path": CREDENTIALS_KEY }],
                "defaultMode": CREDENTIALS_MODE
            }
        }));
        pod_security["fsGroup"] = json!(GID);
        if let Some(ca) = &p.ca_secret {
            mounts.push(json!({ "name": "server-ca", "mountPath": CA_DIR, "readOnly": true }));
            volumes.push(json!({
                "name": "server-ca",
                "secret": { "secretName": ca, "items": [{ "key": "ca.crt", "path": "ca.crt" }] }
            }));
            env.push(json!({ "name": "SSL_CERT_FILE", "value": format!("{CA_DIR}/ca.crt") }));
        }
    }
    args.extend(o.extra_args.iter().cloned());
    let probe = json!({ "httpGet": { "path": "/healthz", "port": "https", "scheme": "HTTPS" }, "periodSeconds": 10 });
    let mut container = json!({
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
        "volumeMounts": mounts
    });
    if !env.is_empty() {
        container["env"] = json!(env);
    }
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
                        "securityContext": pod_security,
                        "containers": [container],
                        "volumes": volumes
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
    fn the_webhook_runs_the_image_this_workspace_builds() {
        // scripts/build-image tags its archive podiam:<workspace version>; deploy/ names it too.
        let objs = objects(&ManifestOptions::default());
        let d = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let image = &d["spec"]["template"]["spec"]["containers"][0]["image"];
        assert_eq!(image, &format!("podiam:{}", env!("CARGO_PKG_VERSION")));
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

    fn podiam_mode(ca: Option<&str>) -> ManifestOptions {
        ManifestOptions {
            podiam: Some(PodiamAssociations {
                endpoint: "https://podiam.podiam.svc:8443".into(),
                cluster: "prod".into(),
                credentials_secret: "podiam-webhook-credentials".into(),
                ca_secret: ca.map(str::to_owned),
            }),
            ..ManifestOptions::default()
        }
    }

    fn deployment(objs: &[Value]) -> &Value {
        &objs.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]
    }

    #[test]
    fn podiam_mode_mounts_the_credentials_file_the_flag_names() {
        let objs = objects(&podiam_mode(None));
        let pod = deployment(&objs);
        let c = &pod["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(args.contains(&"--podiam-endpoint=https://podiam.podiam.svc:8443"));
        assert!(args.contains(&"--cluster=prod"));
        let file = args
            .iter()
            .find_map(|a| a.strip_prefix("--podiam-credentials-file="))
            .unwrap();
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "podiam-credentials")
            .unwrap();
        assert_eq!(mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "podiam-credentials")
            .unwrap();
        let item = &volume["secret"]["items"][0];
        assert_eq!(
            file,
            format!(
                "{}/{}",
                mount["mountPath"].as_str().unwrap(),
                item["path"].as_str().unwrap()
            )
        );
        assert_eq!(volume["secret"]["secretName"], "podiam-webhook-credentials");
        assert_eq!(item["key"], CREDENTIALS_KEY);
        // Group-readable only, by the pod's fsGroup, which is the webhook's group.
        assert_eq!(volume["secret"]["defaultMode"], 0o440);
        assert_eq!(
            pod["securityContext"]["fsGroup"],
            pod["securityContext"]["runAsGroup"]
        );
        // No Secret is printed: its value is the operator's.
        assert!(objs.iter().all(|o| o["kind"] != "Secret"));
        assert!(c.get("env").is_none());
    }

    #[test]
    fn podiam_mode_trusts_a_private_ca_only_when_asked() {
        let objs = objects(&podiam_mode(Some("podiam-server-tls")));
        let pod = deployment(&objs);
        let c = &pod["containers"][0];
        assert_eq!(c["env"][0]["name"], "SSL_CERT_FILE");
        assert_eq!(c["env"][0]["value"], format!("{CA_DIR}/ca.crt"));
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == CA_DIR)
        );
        let default = objects(&ManifestOptions::default());
        let pod = deployment(&default);
        assert!(pod["securityContext"].get("fsGroup").is_none());
        assert_eq!(pod["volumes"].as_array().unwrap().len(), 1);
        assert!(!render(&ManifestOptions::default()).contains("podiam-credentials"));
    }
}
