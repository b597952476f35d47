"""Checks on a rendered deploy/ overlay, after kubernetes-validate has passed it.

    deploy_check.py OVERLAY RENDERED.yaml VALIDATE-1.33.out VALIDATE-1.37.out [WEBHOOK.yaml] [AGENT.yaml]
    deploy_check.py --crd-only FILE.yaml     # only the CRD subset schemas (the negative control)

1. kubernetes-validate skipped exactly the CRD objects we expect (cert-manager Issuer and
   Certificate, prometheus-operator ServiceMonitor) and passed every other object.
2. Those CRD objects validate against strict subsets of their CRD schemas (the fields we use).
3. What a reviewer checks: security contexts, probes, resources, and that every reference
   (Secret, ConfigMap, Service selector and port, PDB, ServiceMonitor, Issuer) lands on something.
4. The webhook's objects carry what `podiam webhook manifests` prints (and the agent's what
   `podiam agent manifests` prints, once that exists).
5. OVERLAY+webhook-podiam-associations (the overlay with components/webhook-podiam-associations):
   the webhook reads podiam's associations with the agents' URL and cluster, from the
   podiam-webhook-credentials Secret mounted read-only, 0440, at the path its flag names.
"""
import re
import sys

import jsonschema
import yaml

CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
# Secrets the operator creates (docs/operating.md); everything else must be in the render or be
# written by a cert-manager Certificate.
OPERATOR_SECRETS = {
    "dev": set(),
    "production": {"podiam-database", "podiam-master-key"},
}
SERVER_REPLICAS = {"dev": 1, "production": 3}
# Containers that run as root, and why: the agent binds port 80 with NET_BIND_SERVICE (added
# capabilities reach non-root processes only through file capabilities), and its init step adds
# the link-local addresses with NET_ADMIN.
ROOT_CONTAINERS = {("podiam-agent", "agent"): {"NET_BIND_SERVICE"}, ("podiam-agent", "link"): {"NET_ADMIN"}}

S, I, B = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}


def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


def arr(items):
    return {"type": "array", "items": items}


META = {"type": "object", "required": ["name", "namespace"]}
ISSUER_REF = obj({"name": S, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": S}, ["name"])
SCHEMAS = {
    "Certificate": obj({
        "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"}, "metadata": META,
        "spec": obj({
            "secretName": S, "duration": S, "renewBefore": S, "commonName": S, "isCA": B,
            "dnsNames": arr(S), "ipAddresses": arr(S), "issuerRef": ISSUER_REF,
            "usages": arr({"enum": ["digital signature", "key encipherment", "server auth", "client auth",
                                    "cert sign", "crl sign"]}),
            "privateKey": obj({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": I,
                               "encoding": {"enum": ["PKCS1", "PKCS8"]},
                               "rotationPolicy": {"enum": ["Never", "Always"]}}),
        }, ["secretName", "issuerRef"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    "Issuer": obj({
        "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Issuer"}, "metadata": META,
        "spec": {"oneOf": [
            obj({"selfSigned": obj({"crlDistributionPoints": arr(S)})}, ["selfSigned"]),
            obj({"ca": obj({"secretName": S, "crlDistributionPoints": arr(S)}, ["secretName"])}, ["ca"]),
        ]},
    }, ["apiVersion", "kind", "metadata", "spec"]),
    "ServiceMonitor": obj({
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": META,
        "spec": obj({
            "selector": obj({"matchLabels": {"type": "object", "additionalProperties": S}}, ["matchLabels"]),
            "namespaceSelector": obj({"matchNames": arr(S), "any": B}),
            "jobLabel": S,
            "endpoints": arr(obj({
                "port": S, "path": S, "scheme": {"enum": ["http", "https"]},
                "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                "scrapeTimeout": S, "honorLabels": B,
                "tlsConfig": obj({
                    "serverName": S, "insecureSkipVerify": B,
                    "ca": obj({"secret": obj({"name": S, "key": S}, ["name", "key"])}),
                }),
                "relabelings": arr(obj({"sourceLabels": arr(S), "targetLabel": S, "regex": S,
                                        "replacement": S, "action": S, "separator": S})),
            }, ["port"])),
        }, ["selector", "endpoints"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
}


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def check_crds(docs):
    n = 0
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRD_KINDS:
            jsonschema.validate(d, SCHEMAS[d["kind"]])
            n += 1
    return n


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield d, d["spec"]["template"]


def main(overlay, rendered, outs, webhook, agent):
    overlay, _, component = overlay.partition("+")
    docs = load(rendered)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    crd = [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS]
    builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_KINDS]

    # 1. What kubernetes-validate passed and skipped.
    for out in outs:
        lines = open(out).read().splitlines()
        passed = [l for l in lines if l.startswith("INFO") and " passed " in l]
        warned = [l for l in lines if l.startswith("WARN")]
        assert len(passed) == len(builtin), f"{out}: {len(passed)} passed of {len(builtin)} built-in objects"
        assert len(warned) == len(crd), f"{out}: {warned}"
        assert all(any(a in l for a, _ in CRD_KINDS) for l in warned), warned
    # 2. CRD subsets.
    assert check_crds(docs) == len(crd)
    kinds = {d["kind"] for d in docs}
    for k in ["Namespace", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget", "ServiceAccount",
              "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "MutatingWebhookConfiguration",
              "Certificate", "Issuer"]:
        assert k in kinds, f"{overlay}: no {k}"
    assert all(d["metadata"].get("namespace") == "podiam" for d in docs
               if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"))

    # 3. Pods: security, probes, resources.
    secrets = {n for (k, n) in by if k == "Secret"} | {d["spec"]["secretName"] for d in docs if d["kind"] == "Certificate"}
    secrets |= OPERATOR_SECRETS[overlay]
    if component == "webhook-podiam-associations":
        secrets.add("podiam-webhook-credentials")
    configmaps = {n for (k, n) in by if k == "ConfigMap"}
    for w, tpl in pod_specs(docs):
        spec, wname = tpl["spec"], w["metadata"]["name"]
        psc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is not True
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{overlay} {w['kind']}/{wname} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert set(sc.get("capabilities", {}).get("add", [])) == ROOT_CONTAINERS.get((wname, c["name"]), set()), where
            assert "privileged" not in sc, where
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            assert seccomp == "RuntimeDefault", where
            if (wname, c["name"]) in ROOT_CONTAINERS:
                assert sc.get("runAsUser") == 0 and sc.get("runAsNonRoot") is False, where
            else:
                assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
                assert sc.get("runAsUser", psc.get("runAsUser", 0)) != 0, where
            assert c["resources"]["requests"].get("cpu") and c["resources"]["requests"].get("memory"), where
            assert c["resources"].get("limits", {}).get("memory"), where
            if c in spec["containers"]:
                assert c.get("livenessProbe") and c.get("readinessProbe"), where
            if c["image"].startswith("ghcr.io/podiam/podiam"):
                assert c["image"].count(":") == 1 and not c["image"].endswith(":latest"), where
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, f"{where}: Secret {ref['name']}"
            for e in c.get("envFrom", []):
                if "configMapRef" in e:
                    assert e["configMapRef"]["name"] in configmaps, f"{where}: ConfigMap {e['configMapRef']}"
                if "secretRef" in e:
                    assert e["secretRef"]["name"] in secrets, f"{where}: Secret {e['secretRef']}"
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])} | {
                t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}, where
        for v in spec.get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, f"{wname}: Secret {v['secret']['secretName']}"
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{wname}: ConfigMap {v['configMap']['name']}"
        sa = spec.get("serviceAccountName")
        if sa:
            assert ("ServiceAccount", sa) in by, f"{wname}: ServiceAccount {sa}"

    # Services, PDBs and ServiceMonitors select something, by port names that exist.
    def pods_matching(sel):
        return [(w, tpl) for w, tpl in pod_specs(docs)
                if all(tpl["metadata"]["labels"].get(k) == v for k, v in sel.items())]
    for d in docs:
        if d["kind"] == "Service":
            (w, tpl), = pods_matching(d["spec"]["selector"])
            names = {p.get("name") for c in tpl["spec"]["containers"] for p in c.get("ports", [])}
            for p in d["spec"]["ports"]:
                assert p["targetPort"] in names, f"Service {d['metadata']['name']} port {p}"
        if d["kind"] == "PodDisruptionBudget":
            assert len(pods_matching(d["spec"]["selector"]["matchLabels"])) == 1, d["metadata"]["name"]
        if d["kind"] == "ServiceMonitor":
            svcs = [s for s in docs if s["kind"] == "Service" and all(
                s["metadata"]["labels"].get(k) == v for k, v in d["spec"]["selector"]["matchLabels"].items())]
            assert len(svcs) == 1, d["metadata"]["name"]
            for e in d["spec"]["endpoints"]:
                assert e["port"] in {p["name"] for p in svcs[0]["spec"]["ports"]}, (d["metadata"]["name"], e)
                ca = e.get("tlsConfig", {}).get("ca", {}).get("secret")
                if ca:
                    assert ca["name"] in secrets
        if d["kind"] == "Certificate":
            ref = d["spec"]["issuerRef"]
            assert (ref.get("kind", "Issuer"), ref["name"]) in by, f"Certificate {d['metadata']['name']}: {ref}"
        if d["kind"] == "Issuer" and "ca" in d["spec"]:
            assert d["spec"]["ca"]["secretName"] in secrets

    # The server, its Service and the agent agree.
    server = by[("Deployment", "podiam-server")]
    assert server["spec"]["replicas"] == SERVER_REPLICAS[overlay], server["spec"]["replicas"]
    sargs = server["spec"]["template"]["spec"]["containers"][0]["args"]
    svc = by[("Service", "podiam")]
    assert svc["spec"]["ports"][0]["port"] == 8443
    agent_cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("podiam-agent-config"))
    url = agent_cm["data"]["PODIAM_SERVER_URL"]
    tls = any(a.startswith("--tls-cert=") for a in sargs)
    assert url == ("https" if tls else "http") + "://podiam.podiam.svc:8443", (url, tls)
    if tls:
        cert = next(d for d in docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == "podiam-server-tls")
        assert "podiam.podiam.svc" in cert["spec"]["dnsNames"]
    if overlay == "production":
        assert "--production" in sargs and tls
        assert "NetworkPolicy" in kinds and "ServiceMonitor" in kinds
        for name in ("podiam-server", "podiam-webhook"):
            spread = by[("Deployment", name)]["spec"]["template"]["spec"]["topologySpreadConstraints"]
            assert {t["topologyKey"] for t in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        # Default deny, then only allows.
        deny = by[("NetworkPolicy", "podiam-default-deny")]["spec"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        assert not deny.get("ingress") and not deny.get("egress")
    pdb = by[("PodDisruptionBudget", "podiam-server")]["spec"]
    assert pdb.get("minAvailable") == 1 or overlay == "dev", pdb
    ds = by[("DaemonSet", "podiam-agent")]["spec"]["template"]["spec"]
    assert ds["hostNetwork"] and ds["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not [p for c in ds["containers"] for p in c.get("ports", []) if p["containerPort"] == 80]

    # 5. The webhook's association mode.
    wpod = by[("Deployment", "podiam-webhook")]["spec"]["template"]["spec"]
    wc0 = wpod["containers"][0]
    wenv = {}
    for e in wc0.get("env", []):
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        wenv[e["name"]] = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"])[
            "data"][ref["key"]] if ref else e.get("value")
    wflags = dict(a[2:].split("=", 1) for a in wc0["args"][1:] if "=" in a)
    if component == "webhook-podiam-associations":
        assert wflags["podiam-endpoint"] == "$(PODIAM_SERVER_URL)" and wenv["PODIAM_SERVER_URL"] == url, wflags
        assert wflags["cluster"] == "$(PODIAM_CLUSTER_NAME)", wflags
        assert wenv["PODIAM_CLUSTER_NAME"] == agent_cm["data"]["PODIAM_CLUSTER_NAME"]
        path = wflags["podiam-credentials-file"]
        mount = next(m for m in wc0["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
        vol = next(v for v in wpod["volumes"] if v["name"] == mount["name"])["secret"]
        assert mount.get("readOnly") is True, mount
        assert vol["secretName"] == "podiam-webhook-credentials", vol
        item = next(i for i in vol["items"] if f"{mount['mountPath']}/{i['path']}" == path)
        assert item["key"] == "credentials", item
        assert item.get("mode", vol.get("defaultMode")) == 0o440, vol
        assert wpod["securityContext"]["fsGroup"] == wpod["securityContext"]["runAsGroup"] == 65532
        assert ("Secret", "podiam-webhook-credentials") not in by, "the webhook's key is the operator's"
        if url.startswith("https://"):
            ca = wenv["SSL_CERT_FILE"]
            m = next(m for m in wc0["volumeMounts"] if ca.startswith(m["mountPath"].rstrip("/") + "/"))
            v = next(v for v in wpod["volumes"] if v["name"] == m["name"])["secret"]
            assert v["secretName"] == "podiam-server-tls" and ca == f"{m['mountPath']}/ca.crt", (ca, v)
        if "NetworkPolicy" in kinds:
            egress = by[("NetworkPolicy", "podiam-webhook")]["spec"]["egress"]
            assert any(r.get("to") == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "podiam-server"}}}]
                       and {"protocol": "TCP", "port": 8443} in r.get("ports", []) for r in egress), egress
        print(f"INFO {overlay}+{component}: the webhook reads podiam's associations at {url} for cluster "
              f"{wenv['PODIAM_CLUSTER_NAME']} with the key mounted at {path}")
    else:
        assert component in ("", "agent-imds"), component
        assert "podiam-endpoint" not in wflags

    # 6. The agent's IMDS: a watch of its node's pods, with RBAC for exactly that.
    agent_c = ds["containers"][0]
    rbac = [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding") and d["metadata"]["name"] == "podiam-agent-pods"]
    if component == "agent-imds":
        role = by[("ClusterRole", "podiam-agent-pods")]
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}], role["rules"]
        binding = by[("ClusterRoleBinding", "podiam-agent-pods")]
        assert binding["roleRef"]["name"] == "podiam-agent-pods"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "podiam-agent", "namespace": "podiam"}], binding
        assert "--watch-pods" in agent_c["args"] and any(a.startswith("--imds-listen=") for a in agent_c["args"])
        mount = next(m for m in agent_c["volumeMounts"] if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        sources = next(v for v in ds["volumes"] if v["name"] == mount["name"])["projected"]["sources"]
        paths = {i["path"] for src in sources for i in src.get("configMap", src.get("downwardAPI", {})).get("items", [])}
        paths |= {src["serviceAccountToken"]["path"] for src in sources if "serviceAccountToken" in src}
        assert paths == {"token", "ca.crt", "namespace"}, paths
        print(f"INFO {overlay}+agent-imds: the agent watches its node's pods with get/list/watch on pods and nothing else")
    else:
        assert not rbac and "--watch-pods" not in agent_c["args"], "the agent needs the API only with agent-imds"
        assert not [m for m in agent_c.get("volumeMounts", []) if "kubernetes.io" in m["mountPath"]]

    # 4. The webhook's objects match `podiam webhook manifests` (modulo labels, our extra flags,
    # mounts and the image tag, which kustomize sets).
    if webhook:
        printed = {(d["kind"], d["metadata"]["name"]): d for d in load(webhook) if d["kind"] != "Namespace"}
        for key, want in printed.items():
            got = by[key]
            if key[0] == "Deployment":
                gc, wc = got["spec"]["template"]["spec"]["containers"][0], want["spec"]["template"]["spec"]["containers"][0]
                gargs = {re.sub(r"\$\(([A-Z_]+)\)", lambda m: wenv[m[1]], a) for a in gc["args"]}
                assert set(wc["args"]) <= gargs, set(wc["args"]) - gargs
                assert {e["name"] for e in wc.get("env", [])} <= set(wenv), wc.get("env")
                assert gc["ports"] == wc["ports"] and gc["image"] == wc["image"]
                for k in ("livenessProbe", "readinessProbe"):
                    assert gc[k]["httpGet"] == wc[k]["httpGet"], k
                for k, v in wc["securityContext"].items():
                    assert gc["securityContext"][k] == v, k
                assert all(m in gc["volumeMounts"] for m in wc["volumeMounts"])
                for k, v in want["spec"]["template"]["spec"]["securityContext"].items():
                    assert got["spec"]["template"]["spec"]["securityContext"][k] == v, k
                gvols = {v["name"]: v for v in got["spec"]["template"]["spec"]["volumes"]}
                for v in want["spec"]["template"]["spec"]["volumes"]:
                    assert gvols.get(v["name"]) == v, v
                assert got["spec"]["replicas"] >= 1
            else:
                for field in ("rules", "roleRef", "subjects", "webhooks"):
                    assert got.get(field) == want.get(field), (key, field)
                if "spec" in want:
                    assert got["spec"] == want["spec"], key
            for k, v in want["metadata"].get("annotations", {}).items():
                assert got["metadata"]["annotations"][k] == v, (key, k)
        print(f"INFO {overlay}: the webhook's {len(printed)} objects match 'podiam webhook manifests'")
    if agent:
        printed = [d for d in load(agent) if d["kind"] == "DaemonSet"]
        if printed:
            want = printed[0]["spec"]["template"]["spec"]
            wc, gc = want["containers"][0], ds["containers"][0]
            wargs = {a.split("=")[0] for a in wc["args"]}
            gargs = {a.split("=")[0] for a in gc["args"]}
            assert wargs <= gargs, f"flags in 'podiam agent manifests' but not in deploy/: {wargs - gargs}"
            for k in ("hostNetwork", "dnsPolicy", "priorityClassName", "automountServiceAccountToken"):
                assert want.get(k) == ds.get(k), k
            assert [(p["name"], p["containerPort"]) for p in wc["ports"]] == [(p["name"], p["containerPort"]) for p in gc["ports"]]
            for k in ("livenessProbe", "readinessProbe"):
                assert wc[k]["httpGet"] == gc[k]["httpGet"], k
            from_cm = {k for ef in gc.get("envFrom", []) for k in next(
                d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ef["configMapRef"]["name"])["data"]}
            assert {e["name"] for e in wc.get("env", [])} <= {e["name"] for e in gc.get("env", [])} | from_cm
            # The agent's own token: the same projected volume at the same place.
            gvols = {v["name"]: v for v in ds.get("volumes", [])}
            for v in want.get("volumes", []):
                assert gvols.get(v["name"]) == v, (v, gvols.get(v["name"]))
            assert all(m in gc.get("volumeMounts", []) for m in wc.get("volumeMounts", [])), gc.get("volumeMounts")
            for e in wc.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref in [g.get("valueFrom", {}).get("secretKeyRef") for g in gc["env"]], ref
            assert wc["securityContext"]["capabilities"] == gc["securityContext"]["capabilities"]
            assert want["initContainers"][0]["command"][-1] == ds["initContainers"][0]["command"][-1], "link setup script"
            assert want["initContainers"][0]["securityContext"]["capabilities"] == ds["initContainers"][0]["securityContext"]["capabilities"]
            print(f"INFO {overlay}: the agent's DaemonSet has the flags 'podiam agent manifests' prints")
    print(f"{overlay}: {len(builtin)} objects valid, {len(crd)} CRD objects valid against their subsets, "
          "references and security contexts checked")


if __name__ == "__main__":
    if sys.argv[1] == "--crd-only":
        check_crds(load(sys.argv[2]))
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3:5], sys.argv[5] if len(sys.argv) > 5 else "",
             sys.argv[6] if len(sys.argv) > 6 else "")
