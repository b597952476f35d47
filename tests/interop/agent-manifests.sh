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
assert "--cluster-name=prod" in agent["args"] and agent["args"][0] == "agent"
env = {e["name"]: e for e in agent["env"]}
for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
    assert env[k]["valueFrom"]["secretKeyRef"]["name"] == "podiam-agent-key", env[k]
init = spec["initContainers"][0]
assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
assert "169.254.170.23/32" in init["command"][-1] and "fd00:ec2::23/128" in init["command"][-1]
print("INFO agent DaemonSet: hostNetwork, NET_BIND_SERVICE only, read-only root, key from a Secret")
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
