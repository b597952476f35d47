#!/usr/bin/env bash
# `podiam webhook manifests` validates offline against the Kubernetes JSON schemas that PyPI
# kubernetes-validate ships (strict: unknown fields are errors), for the oldest (1.33) and newest
# (1.37) Kubernetes the manifests target.
#
# kubernetes-validate has no schemas for CRDs: it prints a WARN and passes them. So we check that
# the only objects it skips are cert-manager's Issuer and Certificate, and validate those two
# against a strict subset of cert-manager's v1 CRD schema (the fields we print) with jsonschema,
# which kubernetes-validate depends on. A negative control proves strict mode rejects a bad field.
set -euo pipefail
: "${PODIAM_BIN:?PODIAM_BIN must point at the podiam binary}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PODIAM_BIN" webhook manifests --namespace iam-system > "$tmp/manifests.yaml"
# The association mode (--podiam-endpoint): its key from a Secret, its CA from another.
"$PODIAM_BIN" webhook manifests --namespace iam-system --podiam-endpoint https://podiam.podiam.svc:8443 \
  --cluster prod --podiam-ca-secret podiam-server-tls > "$tmp/podiam-mode.yaml"

check() { # file version -> 0 if every built-in object passed and only cert-manager kinds were skipped
  local out rc=0
  out=$(kubernetes-validate --strict -k "$2" "$1") || rc=$?
  echo "$out"
  [ "$rc" -eq 0 ] || return 1
  python3 - "$1" "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = sys.argv[2].splitlines()
crd = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in crd]
passed = [l for l in out if l.startswith("INFO") and " passed " in l]
warned = [l for l in out if l.startswith("WARN")]
assert len(passed) == len(builtin), f"{len(passed)} passed of {len(builtin)} built-in objects"
assert len(warned) == len(docs) - len(builtin), warned
assert all("cert-manager.io/v1" in l for l in warned), warned
kinds = {d["kind"] for d in docs}
for k in ["Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
          "RoleBinding", "MutatingWebhookConfiguration", "Certificate", "Issuer"]:
    assert k in kinds, f"missing {k}"
PY
}

for version in 1.33.0 1.37.0; do
  check "$tmp/manifests.yaml" "$version"
  check "$tmp/podiam-mode.yaml" "$version"
done

# The association mode's Deployment: the flags are `podiam webhook`'s, the credentials file the
# flag names is the Secret's key where it is mounted (read-only, 0440, readable through fsGroup),
# SSL_CERT_FILE is the CA Secret's ca.crt, and no Secret value is printed.
"$PODIAM_BIN" webhook --help > "$tmp/help.txt"
python3 - "$tmp/podiam-mode.yaml" "$tmp/help.txt" <<'PY'
import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
known = set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9-]+)", open(sys.argv[2]).read(), re.M))
assert not [d for d in docs if d["kind"] == "Secret"], "a Secret was printed"
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
c = pod["containers"][0]
assert c["args"][0] == "webhook"
flags = dict(a[2:].split("=", 1) for a in c["args"][1:])
assert set(flags) <= known, set(flags) - known
assert flags["podiam-endpoint"] == "https://podiam.podiam.svc:8443" and flags["cluster"] == "prod", flags
mounts = {m["name"]: m for m in c["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}
def mounted(path):
    m = next(m for m in mounts.values() if path.startswith(m["mountPath"].rstrip("/") + "/"))
    v = volumes[m["name"]]["secret"]
    item = next(i for i in v["items"] if f"{m['mountPath']}/{i['path']}" == path)
    return m, v, item
m, v, item = mounted(flags["podiam-credentials-file"])
assert m["readOnly"] is True and v["secretName"] == "podiam-webhook-credentials" and item["key"] == "credentials", (m, v)
assert item.get("mode", v.get("defaultMode")) == 0o440, v
assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == pod["securityContext"]["runAsUser"]
env = {e["name"]: e["value"] for e in c["env"]}
m, v, item = mounted(env["SSL_CERT_FILE"])
assert v["secretName"] == "podiam-server-tls" and item["key"] == "ca.crt", v
print(f"INFO association mode: --podiam-credentials-file={flags['podiam-credentials-file']} is Secret "
      "podiam-webhook-credentials' key credentials, mounted read-only, mode 0440")
PY

# cert-manager objects: a strict subset of the cert-manager.io/v1 CRD schema.
python3 - "$tmp/manifests.yaml" <<'PY'
import sys, yaml, jsonschema
S, I, B = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}
meta = {"type": "object", "required": ["name", "namespace"]}
certificate = obj({
    "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"}, "metadata": meta,
    "spec": obj({
        "secretName": S, "duration": S, "renewBefore": S, "commonName": S,
        "dnsNames": {"type": "array", "items": S}, "ipAddresses": {"type": "array", "items": S},
        "issuerRef": obj({"name": S, "kind": S, "group": S}, ["name"]),
        "privateKey": obj({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": I,
                           "encoding": {"enum": ["PKCS1", "PKCS8"]}, "rotationPolicy": {"enum": ["Never", "Always"]}}),
        "usages": {"type": "array", "items": S}, "isCA": B,
    }, ["secretName", "issuerRef"]),
}, ["apiVersion", "kind", "metadata", "spec"])
issuer = obj({
    "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Issuer"}, "metadata": meta,
    "spec": obj({"selfSigned": obj({"crlDistributionPoints": {"type": "array", "items": S}})}),
}, ["apiVersion", "kind", "metadata", "spec"])
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
n = 0
for d in docs:
    schema = {"Certificate": certificate, "Issuer": issuer}.get(d["kind"]) if d["apiVersion"] == "cert-manager.io/v1" else None
    if schema:
        jsonschema.validate(d, schema)
        n += 1
        print(f"INFO cert-manager {d['kind'].lower()}/{d['metadata']['name']} passed the CRD subset")
assert n == 2, n
# The webhook's certificate covers the Service name the MutatingWebhookConfiguration calls.
cert = next(d for d in docs if d["kind"] == "Certificate")
mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
svc = mwc["webhooks"][0]["clientConfig"]["service"]
assert f"{svc['name']}.{svc['namespace']}.svc" in cert["spec"]["dnsNames"], cert["spec"]["dnsNames"]
assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
PY

# Negative control: strict validation must reject a field the schema does not know.
python3 - "$tmp/manifests.yaml" > "$tmp/bad.yaml" <<'PY'
import sys, yaml, json
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "Deployment":
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    print("---"); print(json.dumps(d))
PY
if kubernetes-validate --strict --quiet -k 1.37.0 "$tmp/bad.yaml" >/dev/null; then
  echo "FAIL: kubernetes-validate --strict accepted a misspelt field" >&2
  exit 1
fi
echo "webhook manifests (and with --podiam-endpoint): valid for Kubernetes 1.33 and 1.37"
