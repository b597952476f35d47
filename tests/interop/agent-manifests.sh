#!/usr/bin/env bash
# `podiam agent manifests` validates offline against the Kubernetes JSON schemas that PyPI
# kubernetes-validate ships (strict: unknown fields are errors), for the oldest (1.33) and newest
# (1.37) Kubernetes the manifests target; then checks what the DaemonSet must say, and that strict
# mode rejects a misspelt field (negative control).
set -euo pipefail
: "${PODIAM_BIN:?PODIAM_BIN must point at the podiam binary}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PODIAM_BIN" agent manifests --namespace iam-system --cluster-name prod \
  --server https://podiam.iam-system.svc:8443 > "$tmp/manifests.yaml"

for version in 1.33.0 1.37.0; do
  out=$(kubernetes-validate --strict -k "$version" "$tmp/manifests.yaml")
  echo "$out"
  n=$(grep -c '^INFO.* passed ' <<<"$out" || true)
  [ "$n" -eq 2 ] || { echo "FAIL: expected 2 objects to pass for $version, got $n" >&2; exit 1; }
  ! grep -q '^WARN' <<<"$out" || { echo "FAIL: an object was skipped" >&2; exit 1; }
done

python3 - "$tmp/manifests.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
assert set(kinds) == {"ServiceAccount", "DaemonSet"}, kinds.keys()
ds = kinds["DaemonSet"]
assert ds["metadata"]["namespace"] == "iam-system"
spec = ds["spec"]["template"]["spec"]
assert spec["hostNetwork"] is True
assert spec["automountServiceAccountToken"] is False
agent = spec["containers"][0]
sc = agent["securityContext"]
assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, sc["capabilities"]
# Port 80 is not declared (it would block ingress hostPort 80); probes use the probe port.
assert [p["containerPort"] for p in agent["ports"]] == [2705], agent["ports"]
assert agent["livenessProbe"]["httpGet"]["port"] == "probe"
assert "--cluster=prod" in agent["args"] and agent["args"][0] == "agent"
env = {e["name"]: e for e in agent["env"]}
# No long-lived key: web identity with a projected token of audience sts.amazonaws.com, a session
# of the agent role named after the node, STS at podiam.
assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env, env
assert env["AWS_ROLE_ARN"]["value"] == "arn:aws:iam::000000000000:role/podiam-agent", env
assert env["AWS_ROLE_SESSION_NAME"]["value"] == "$(NODE_NAME)"
assert list(env).index("NODE_NAME") < list(env).index("AWS_ROLE_SESSION_NAME"), "defined before use"
assert env["AWS_ENDPOINT_URL_STS"]["value"] == "https://podiam.iam-system.svc:8443"
token_file = env["AWS_WEB_IDENTITY_TOKEN_FILE"]["value"]
mount = next(m for m in agent["volumeMounts"] if token_file.startswith(m["mountPath"] + "/"))
assert mount["readOnly"] is True
vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
sat = vol["projected"]["sources"][0]["serviceAccountToken"]
assert sat["audience"] == "sts.amazonaws.com" and token_file == f"{mount['mountPath']}/{sat['path']}", (sat, token_file)
init = spec["initContainers"][0]
assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
assert "169.254.170.23/32" in init["command"][-1] and "fd00:ec2::23/128" in init["command"][-1]
print("INFO agent DaemonSet: hostNetwork, NET_BIND_SERVICE only, read-only root, web identity with a projected token")
PY

# IMDS with the pod watch: RBAC get/list/watch on pods and nothing else, the API token.
"$PODIAM_BIN" agent manifests --namespace iam-system --imds-listen 169.254.170.23:8080 \
  --imds-node-role-arn arn:aws:iam::000000000000:role/node --imds-allow-namespace kube-system > "$tmp/imds.yaml"
kubernetes-validate --strict --quiet -k 1.37.0 "$tmp/imds.yaml"
python3 - "$tmp/imds.yaml" <<'PY'
import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
assert set(docs) == {"ServiceAccount", "DaemonSet", "ClusterRole", "ClusterRoleBinding"}, docs.keys()
assert docs["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
assert docs["ClusterRoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "podiam-agent", "namespace": "iam-system"}]
agent = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
assert "--watch-pods" in agent["args"] and "--imds-listen=169.254.170.23:8080" in agent["args"], agent["args"]
assert any(m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" for m in agent["volumeMounts"])
print("INFO agent DaemonSet with IMDS: --watch-pods, get/list/watch on pods only, the API token mounted")
PY

# The option of a key in a Secret: valid too, and then no token volume.
"$PODIAM_BIN" agent manifests --namespace iam-system --key-secret agent-key > "$tmp/key.yaml"
kubernetes-validate --strict --quiet -k 1.37.0 "$tmp/key.yaml"
python3 - "$tmp/key.yaml" <<'PY'
import sys, yaml
ds = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "DaemonSet")
agent = ds["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e for e in agent["env"]}
for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
    assert env[k]["valueFrom"]["secretKeyRef"]["name"] == "agent-key", env[k]
assert "AWS_ROLE_ARN" not in env and not ds["spec"]["template"]["spec"]["volumes"]
print("INFO agent DaemonSet with --key-secret: the key from the Secret, no token volume")
PY

python3 - "$tmp/manifests.yaml" > "$tmp/bad.yaml" <<'PY'
import sys, yaml, json
for d in (d for d in yaml.safe_load_all(open(sys.argv[1])) if d):
    if d["kind"] == "DaemonSet":
        d["spec"]["template"]["spec"]["hostNetwrok"] = True
    print("---"); print(json.dumps(d))
PY
if kubernetes-validate --strict --quiet -k 1.37.0 "$tmp/bad.yaml" >/dev/null; then
  echo "FAIL: kubernetes-validate --strict accepted a misspelt field" >&2
  exit 1
fi
echo "agent manifests: valid for Kubernetes 1.33 and 1.37"
