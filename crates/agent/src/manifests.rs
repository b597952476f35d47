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
//! - The agent's key comes from a Secret (`aws_access_key_id`, `aws_secret_access_key`) the
//!   operator creates; it is referenced, never printed.

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
    /// `--cluster-name`.
    pub cluster_name: String,
    /// `--server`: podiam's URL as seen from nodes.
    pub server: String,
    /// `--region`.
    pub region: String,
    /// The Secret holding the agent's key.
    pub key_secret: String,
    /// Probe and metrics port.
    pub probe_port: u16,
    /// UID for the agent container (0 unless the image grants NET_BIND_SERVICE as a file
    /// capability).
    pub run_as_user: i64,
    /// Extra `podiam agent` flags.
    pub extra_args: Vec<String>,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            namespace: "podiam".to_owned(),
            name: "podiam-agent".to_owned(),
            image: "ghcr.io/podiam/podiam:0.1.0".to_owned(),
            init_image: "busybox:1.37".to_owned(),
            cluster_name: "my-cluster".to_owned(),
            server: "https://podiam.example.com".to_owned(),
            region: "us-east-1".to_owned(),
            key_secret: "podiam-agent-key".to_owned(),
            probe_port: 2705,
            run_as_user: 0,
            extra_args: Vec::new(),
        }
    }
}

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
        format!("--cluster-name={}", o.cluster_name),
        format!("--server={}", o.server),
        format!("--region={}", o.region),
        format!("--probe-listen=0.0.0.0:{}", o.probe_port),
    ];
    args.extend(o.extra_args.iter().cloned());
    let key = |k: &str| json!({ "secretKeyRef": { "name": o.key_secret, "key": k } });
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "probe" }, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3 });
    let non_root = o.run_as_user != 0;
    vec![
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
                            "env": [
                                { "name": "AWS_ACCESS_KEY_ID", "valueFrom": key("aws_access_key_id") },
                                { "name": "AWS_SECRET_ACCESS_KEY", "valueFrom": key("aws_secret_access_key") },
                                { "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                                { "name": "RUST_LOG", "value": "info" }
                            ],
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
    ]
}

/// The objects as one YAML stream.
#[must_use]
pub fn render(o: &ManifestOptions) -> String {
    let mut out = String::from(
        "# podiam node agent. Create the key Secret first:\n\
         #   kubectl -n NAMESPACE create secret generic KEY_SECRET \\\n\
         #     --from-literal=aws_access_key_id=AKIA... --from-literal=aws_secret_access_key=...\n",
    );
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
}
