//! `podiam agent manifests`: the node agent as a DaemonSet, with its ServiceAccount, for
//! `kubectl apply -f -` (a multi-document YAML stream; each document is JSON, which is YAML).
//!
//! - `hostNetwork`, so the agent answers on the node's link-local addresses; an init container
//!   (NET_ADMIN only) puts `169.254.170.23/32` and `fd00:ec2::23/128` on a dummy link. An IPv6
//!   failure is ignored, so IPv4-only nodes do not crash-loop (upstream #16).
//! - Port 80 is not declared as a container port: a declared hostNetwork port 80 blocks ingress
//!   controllers' `hostPort: 80` from scheduling (upstream #10). Only the probe port is declared.
//! - The agent drops every capability but NET_BIND_SERVICE, with a read-only root filesystem and
//!   no privilege escalation. It runs as UID 0 because Kubernetes does not pass added
//!   capabilities to non-root processes (no ambient capabilities); with an image whose `podiam`
//!   binary carries the file capability `cap_net_bind_service+ep`, set `--run-as-user`.
//! - No long-lived key on nodes: the agent's identity is a per-node session of the agent role
//!   (`eks-auth:AssumeRoleForPodIdentity` only), by web identity with a projected ServiceAccount
//!   token (audience `sts.amazonaws.com`, rotated by kubelet) through the AWS SDK's standard
//!   chain: `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_SESSION_NAME` = the node's
//!   name, STS at podiam (`AWS_ENDPOINT_URL_STS`). The token names the node
//!   (`kubernetes.io.node.name`), so podiam binds the session to it and exchanges only that
//!   node's pod tokens. `--key-secret` instead takes a key from a Secret (`aws_access_key_id`,
//!   `aws_secret_access_key`) the operator creates; it is referenced, never printed.

use serde_json::{Value, json};

/// What the printed objects say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestOptions {
    /// Namespace of the DaemonSet and ServiceAccount.
    pub namespace: String,
    /// Name of the objects (and the `app.kubernetes.io/name` label).
    pub name: String,
    /// Image with the `podiam` binary as its entrypoint.
    pub image: String,
    /// Image with `ip` (iproute2 or busybox) for the link-setup init container.
    pub init_image: String,
    /// `--cluster`.
    pub cluster_name: String,
    /// `--server`: podiam's URL as seen from nodes.
    pub server: String,
    /// `--region`.
    pub region: String,
    /// The agent role (`AWS_ROLE_ARN`), assumed by web identity with the projected token.
    pub role_arn: String,
    /// The projected token's audience (a client ID of podiam's OIDC provider for the cluster).
    pub token_audience: String,
    /// A Secret holding a key for the agent instead (no projected token).
    pub key_secret: Option<String>,
    /// Probe and metrics port.
    pub probe_port: u16,
    /// UID for the agent container (0 unless the image grants NET_BIND_SERVICE as a file
    /// capability).
    pub run_as_user: i64,
    /// Extra `podiam agent` flags.
    pub extra_args: Vec<String>,
    /// IMDS for the node role, its callers known from a watch of the node's pods.
    pub imds: Option<ImdsManifest>,
}

/// `podiam agent manifests --imds-listen …`: IMDS on, `--watch-pods`, and the RBAC (get, list,
/// watch pods: nothing else) and API token the watch needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsManifest {
    /// `--imds-listen`.
    pub listen: String,
    /// `--node-role-arn`.
    pub node_role_arn: String,
    /// `--imds-allow-namespace` (each).
    pub allow_namespaces: Vec<String>,
}

/// Where in-cluster Kubernetes clients find the API token, CA and namespace.
pub const KUBE_API_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The image `scripts/build-image` (and the Dockerfile) builds from this workspace: `podiam:VERSION`.
/// Push it to a registry and pass its name there (`--image`).
pub const IMAGE: &str = concat!("podiam:", env!("CARGO_PKG_VERSION"));

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            namespace: "podiam".to_owned(),
            name: "podiam-agent".to_owned(),
            image: IMAGE.to_owned(),
            init_image: "busybox:1.37".to_owned(),
            cluster_name: "my-cluster".to_owned(),
            server: "https://podiam.example.com".to_owned(),
            region: "us-east-1".to_owned(),
            role_arn: "arn:aws:iam::000000000000:role/podiam-agent".to_owned(),
            token_audience: "sts.amazonaws.com".to_owned(),
            key_secret: None,
            probe_port: 2705,
            run_as_user: 0,
            extra_args: Vec::new(),
            imds: None,
        }
    }
}

/// Where the agent's projected ServiceAccount token is mounted.
pub const TOKEN_DIR: &str = "/var/run/secrets/podiam/agent";

const LINK_SETUP: &str = "set -eu\n\
ip link add pod-id-link0 type dummy 2>/dev/null || true\n\
ip link set pod-id-link0 up\n\
ip addr add 169.254.170.23/32 dev pod-id-link0 2>/dev/null || ip addr show dev pod-id-link0 | grep -q 169.254.170.23\n\
# IPv6 is optional: an IPv4-only node must not fail here.\n\
ip -6 addr add fd00:ec2::23/128 dev pod-id-link0 2>/dev/null || echo 'fd00:ec2::23 not added (no IPv6?); continuing'\n";

/// The objects, in apply order.
#[must_use]
pub fn objects(o: &ManifestOptions) -> Vec<Value> {
    let (ns, name) = (o.namespace.as_str(), o.name.as_str());
    let labels = json!({ "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "podiam" });
    let meta = json!({ "name": name, "namespace": ns, "labels": labels });
    let mut args = vec![
        "agent".to_owned(),
        format!("--cluster={}", o.cluster_name),
        format!("--server={}", o.server),
        format!("--region={}", o.region),
        format!("--probe-listen=0.0.0.0:{}", o.probe_port),
    ];
    args.extend(o.extra_args.iter().cloned());
    let mut env = vec![
        json!({ "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } }),
    ];
    let (mut mounts, mut volumes) = (Vec::new(), Vec::new());
    match &o.key_secret {
        Some(secret) => {
            let key = |k: &str| json!({ "secretKeyRef": { "name": secret, "key": k } });
            env.push(json!({ "name": "AWS_ACCESS_KEY_ID", "valueFrom": key("aws_access_key_id") }));
            env.push(json!({ "name": "AWS_SECRET_ACCESS_KEY", "valueFrom": key("aws_secret_access_key") }));
        }
        None => {
            env.push(json!({ "name": "AWS_ROLE_ARN", "value": o.role_arn }));
            env.push(json!({ "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token") }));
            // The session name says which node; the binding itself is the token's node claim.
            env.push(json!({ "name": "AWS_ROLE_SESSION_NAME", "value": "$(NODE_NAME)" }));
            env.push(json!({ "name": "AWS_ENDPOINT_URL_STS", "value": o.server }));
            mounts.push(json!({ "name": "agent-token", "mountPath": TOKEN_DIR, "readOnly": true }));
            volumes.push(json!({ "name": "agent-token", "projected": { "sources": [{
                "serviceAccountToken": { "audience": o.token_audience, "expirationSeconds": 86_400, "path": "token" }
            }] } }));
        }
    }
    env.push(json!({ "name": "RUST_LOG", "value": "info" }));
    let mut rbac = Vec::new();
    if let Some(imds) = &o.imds {
        args.push(format!("--imds-listen={}", imds.listen));
        args.push(format!("--node-role-arn={}", imds.node_role_arn));
        args.extend(
            imds.allow_namespaces
                .iter()
                .map(|n| format!("--imds-allow-namespace={n}")),
        );
        args.push("--watch-pods".to_owned());
        mounts.push(
            json!({ "name": "kube-api-access", "mountPath": KUBE_API_DIR, "readOnly": true }),
        );
        volumes.push(json!({ "name": "kube-api-access", "projected": { "sources": [
            { "serviceAccountToken": { "path": "token", "expirationSeconds": 3607 } },
            { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "fieldPath": "metadata.namespace" } }] } }
        ] } }));
        let cluster_meta = json!({ "name": format!("{name}-pods"), "labels": labels });
        rbac.push(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": cluster_meta,
            "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] }] }));
        rbac.push(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": cluster_meta,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{name}-pods") },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }] }));
    }
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "probe" }, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3 });
    let non_root = o.run_as_user != 0;
    let mut objects = vec![
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": false }),
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": {
                "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
                "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "10%" } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": name,
                        "automountServiceAccountToken": false,
                        "hostNetwork": true,
                        "dnsPolicy": "ClusterFirstWithHostNet",
                        "priorityClassName": "system-node-critical",
                        "terminationGracePeriodSeconds": 30,
                        "nodeSelector": { "kubernetes.io/os": "linux" },
                        "tolerations": [{ "operator": "Exists" }],
                        "volumes": volumes,
                        "initContainers": [{
                            "name": "link",
                            "image": o.init_image,
                            "command": ["/bin/sh", "-c", LINK_SETUP],
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "runAsUser": 0,
                                "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN"] }
                            },
                            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": "32Mi" } }
                        }],
                        "containers": [{
                            "name": "agent",
                            "image": o.image,
                            "args": args,
                            "env": env,
                            "volumeMounts": mounts,
                            "ports": [{ "name": "probe", "containerPort": o.probe_port, "protocol": "TCP" }],
                            "livenessProbe": probe("/healthz"),
                            "readinessProbe": probe("/readyz"),
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "runAsUser": o.run_as_user,
                                "runAsNonRoot": non_root,
                                "capabilities": { "drop": ["ALL"], "add": ["NET_BIND_SERVICE"] },
                                "seccompProfile": { "type": "RuntimeDefault" }
                            },
                            "resources": { "requests": { "cpu": "25m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } }
                        }]
                    }
                }
            }
        }),
    ];
    objects.extend(rbac);
    objects
}

/// The objects as one YAML stream.
#[must_use]
pub fn render(o: &ManifestOptions) -> String {
    let mut out = match &o.key_secret {
        Some(secret) => format!(
            "# podiam node agent. Create the key Secret first:\n\
             #   kubectl -n {} create secret generic {secret} \\\n\
             #     --from-literal=aws_access_key_id=AKIA... --from-literal=aws_secret_access_key=...\n",
            o.namespace
        ),
        None => format!(
            "# podiam node agent, as {role} by web identity (docs/operating.md, \"The agent's role\"):\n\
             # the role's trust policy admits system:serviceaccount:{}:{} with audience {}.\n",
            o.namespace,
            o.name,
            o.token_audience,
            role = o.role_arn
        ),
    };
    for obj in objects(o) {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(&obj).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn daemonset_is_host_network_with_least_privilege() {
        let objs = objects(&ManifestOptions::default());
        let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], true);
        let agent = &spec["containers"][0];
        assert_eq!(
            agent["securityContext"]["capabilities"]["add"],
            json!(["NET_BIND_SERVICE"])
        );
        assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            agent["ports"].as_array().unwrap().len(),
            1,
            "port 80 is not declared"
        );
        assert!(!render(&ManifestOptions::default()).contains("aws_secret_access_key\":\""));
    }

    #[test]
    fn the_agent_runs_the_image_this_workspace_builds() {
        // scripts/build-image tags its archive podiam:<workspace version>; deploy/ names it too.
        let objs = objects(&ManifestOptions::default());
        let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let image = &ds["spec"]["template"]["spec"]["containers"][0]["image"];
        assert_eq!(image, &format!("podiam:{}", env!("CARGO_PKG_VERSION")));
    }

    fn env(objs: &[Value]) -> serde_json::Map<String, Value> {
        let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        ds["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
            .collect()
    }

    #[test]
    fn by_default_the_agent_is_a_web_identity_session_of_its_node() {
        let o = ManifestOptions::default();
        let objs = objects(&o);
        let env = env(&objs);
        assert_eq!(env["AWS_ROLE_ARN"]["value"], o.role_arn);
        assert_eq!(env["AWS_ROLE_SESSION_NAME"]["value"], "$(NODE_NAME)");
        assert_eq!(env["AWS_ENDPOINT_URL_STS"]["value"], o.server);
        assert!(!env.contains_key("AWS_ACCESS_KEY_ID"), "no long-lived key");
        let spec = &objs[1]["spec"]["template"]["spec"];
        let token = &spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"], "sts.amazonaws.com");
        let file = env["AWS_WEB_IDENTITY_TOKEN_FILE"]["value"]
            .as_str()
            .unwrap();
        let mount = &spec["containers"][0]["volumeMounts"][0];
        assert_eq!(
            format!(
                "{}/{}",
                mount["mountPath"].as_str().unwrap(),
                token["path"].as_str().unwrap()
            ),
            file
        );
        assert_eq!(mount["readOnly"], true);
    }

    #[test]
    fn imds_brings_the_pod_watch_and_only_its_rbac() {
        assert_eq!(
            objects(&ManifestOptions::default()).len(),
            2,
            "no RBAC without IMDS"
        );
        let objs = objects(&ManifestOptions {
            imds: Some(ImdsManifest {
                listen: "169.254.170.23:8080".into(),
                node_role_arn: "arn:aws:iam::1:role/n".into(),
                allow_namespaces: vec!["kube-system".into()],
            }),
            ..ManifestOptions::default()
        });
        let role = objs.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
        assert_eq!(
            role["rules"],
            json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] }])
        );
        let binding = objs
            .iter()
            .find(|o| o["kind"] == "ClusterRoleBinding")
            .unwrap();
        assert_eq!(binding["subjects"][0]["name"], "podiam-agent");
        let agent = &objs[1]["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = agent["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            args.contains(&"--watch-pods") && args.contains(&"--imds-allow-namespace=kube-system")
        );
        assert!(
            agent["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == KUBE_API_DIR)
        );
    }

    #[test]
    fn a_key_secret_replaces_the_token() {
        let objs = objects(&ManifestOptions {
            key_secret: Some("k".into()),
            ..ManifestOptions::default()
        });
        let env = env(&objs);
        assert_eq!(
            env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"],
            "k"
        );
        assert!(!env.contains_key("AWS_ROLE_ARN"));
        assert_eq!(objs[1]["spec"]["template"]["spec"]["volumes"], json!([]));
    }
}
