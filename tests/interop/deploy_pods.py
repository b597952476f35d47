"""The pods of a rendered deploy/ overlay, checked against the real binary ($PODIAM_BIN).

    deploy_pods.py static  PODIAM_BIN OVERLAY RENDERED.yaml
    deploy_pods.py runtime PODIAM_BIN OVERLAY RENDERED.yaml KIND/NAME DATABASE_URL PG_SOCKET_DIR

static, for every container of every workload:
  - the subcommand exists and every `--flag` in args is one `podiam SUBCOMMAND --help` lists, with a
    value exactly when the flag takes one; every $(VAR) in args is defined;
  - every variable set on a podiam container is one the binary reads (`[env: …]` or named in
    --help), is used by a $(VAR) in args, or is in NON_CLI_ENV;
  - with readOnlyRootFilesystem, every directory the process writes (WRITES, resolved from args,
    env and the --help default as the binary would) is on a writable volume (emptyDir, PVC), and
    so is every mount below it;
  - every file it is told to read (an absolute path in an arg or env value) is on a mounted volume
    and, on a Secret or ConfigMap volume, is a key of it that its user may read (mode, fsGroup);
    every secretKeyRef key exists;
  - every probe asks a path the binary serves (ENDPOINTS) on the port of the option that serves it,
    with HTTPS exactly when that listener is TLS; every declared container port is one it listens on.

runtime, for one workload (run inside `unshare --mount --net`, as root): the container as kubelet
would run it, as far as it matters for files: a root of only the binary (and the host's /usr
libraries), read-only; the pod's volumes mounted where the pod mounts them (emptyDirs as tmpfs;
Secrets and ConfigMaps as files with the pod's modes and fsGroup, from the render, test values, or
self-signed certificates for cert-manager's); its args with $(VAR) expanded and its env; the pod's
uid, gid and groups. Then every probe must answer 200 as the kubelet asks it (the server must also
write an audit line for a refused call), the process must still run, and its log must show no
refused write. This is what finds a write WRITES does not know about.
"""
import base64
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

# The image scripts/build-image builds (podiam:VERSION); an overlay may rename it to a registry's copy.
PODIAM_IMAGE = "podiam"
# What each process writes: an option whose value is a directory the process writes into, or a
# fixed path. From the code: `podiam server` creates DATA_DIR/aws and writes aws/config,
# aws/credentials (through a .tmp rename) and appends DATA_DIR/audit.log at start
# (crates/server/src/lib.rs start_with, write_aws_files; audit.rs); the webhook and the agent write
# no files. PostgreSQL's image writes PGDATA, its socket directory and /tmp. The runtime check
# catches a write missing here.
WRITES = {
    ("podiam", "server"): [("option", "data-dir")],
    ("podiam", "webhook"): [],
    ("podiam", "agent"): [],
    ("busybox", None): [],
    ("postgres", None): [("env", "PGDATA", "/var/lib/postgresql/data"), ("path", "/var/run/postgresql"),
                         ("path", "/tmp")],
}
# Paths each subcommand serves, by the option whose address serves them, and whether that listener
# is TLS ("tls-cert": when that option is set). crates/server/src/lib.rs router,
# crates/webhook/src/server.rs route, crates/agent/src/server.rs probe.
ENDPOINTS = {
    "server": {"listen": ({"/healthz", "/readyz", "/metrics"}, "tls-cert")},
    "webhook": {"listen": ({"/healthz", "/mutate"}, True), "metrics-listen": ({"/metrics"}, False)},
    "agent": {"probe-listen": ({"/healthz", "/readyz", "/metrics"}, False)},
}
# Variables a podiam process reads that no --help names: tracing's filter, and the trusted roots of
# rustls-native-certs (reqwest's platform verifier) for the agent's calls to the server.
NON_CLI_ENV = {"RUST_LOG", "SSL_CERT_FILE"}
# Secrets the operator creates (docs/operating.md, "Install"), with their keys.
OPERATOR_SECRETS = {
    "podiam-database": {"url"},
    "podiam-master-key": {"key"},
    "podiam-agent-key": {"aws_access_key_id", "aws_secret_access_key"},
    "podiam-webhook-credentials": {"credentials"},
}
CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}
# Options whose value is a path in other pods (the webhook writes it into the pods it mutates), not
# a file the process reads.
NOT_READ = {"token-mount-path", "container-credentials-token-mount-path"}
WRITABLE_VOLUMES = ("emptyDir", "persistentVolumeClaim", "ephemeral")

failures = []


def fail(msg):
    failures.append(msg)


def image_kind(image):
    if re.match(rf"^{PODIAM_IMAGE}[:@]", image):
        return "podiam"
    for k in ("busybox", "postgres"):
        if re.match(rf"^(docker\.io/)?(library/)?{k}[:@]", image):
            return k
    return None


# === the binary's CLI ===

_cli = {}


def cli(binary, sub):
    """Options of `podiam SUB --help`: {name: (arity, env, default)}, plus every variable named."""
    if sub in _cli:
        return _cli[sub]
    text = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, check=True).stdout
    opts = {}
    blocks = re.split(r"^(?=\s+(?:-\w, )?--[a-z0-9-]+)", text, flags=re.M)
    for b in blocks:
        m = re.match(r"\s+(?:-\w, )?--([a-z0-9-]+)(?: (\[<[A-Z0-9_]+>\]|<[A-Z0-9_]+>))?", b)
        if not m:
            continue
        arity = "none" if not m[2] else ("optional" if m[2].startswith("[") else "required")
        env = re.search(r"\[env: ([A-Z0-9_]+)", b)
        default = re.search(r"\[default: ([^\]]*)\]", b)
        opts[m[1]] = (arity, env and env[1], default and default[1])
    named = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", text))
    _cli[sub] = (opts, named)
    return _cli[sub]


def subcommands(binary):
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    section = text.split("Commands:", 1)[1].split("\n\n", 1)[0]
    return {l.split()[0] for l in section.splitlines() if l.strip()}


def parse_args(args, opts, where):
    """{flag: value or None} from args after the subcommand, as clap would read them."""
    got, i = {}, 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--"):
            fail(f"{where}: stray argument {a!r}")
            continue
        name, eq, value = a[2:].partition("=")
        if name not in opts:
            fail(f"{where}: --{name} is not a flag of this subcommand (see its --help)")
            continue
        arity = opts[name][0]
        if arity == "none" and eq:
            fail(f"{where}: --{name} takes no value, got {a!r}")
        if arity == "required" and not eq:
            if i < len(args) and not args[i].startswith("--"):
                value, i = args[i], i + 1
            else:
                fail(f"{where}: --{name} needs a value")
        got[name] = value if (eq or arity == "required") else None
    return got


# === the render ===

class Render:
    def __init__(self, path):
        self.docs = [d for d in yaml.safe_load_all(open(path)) if d]
        self.by = {(d["kind"], d["metadata"]["name"]): d for d in self.docs}

    def keys(self, kind, name):
        """Keys of a Secret or ConfigMap, or None if nothing provides it."""
        d = self.by.get((kind, name))
        if d:
            return set(d.get("data") or {}) | set(d.get("stringData") or {}) | set(d.get("binaryData") or {})
        if kind == "Secret":
            if name in OPERATOR_SECRETS:
                return OPERATOR_SECRETS[name]
            if any(c["kind"] == "Certificate" and c["spec"]["secretName"] == name for c in self.docs):
                return CERT_MANAGER_KEYS
        return None

    def workloads(self):
        for d in self.docs:
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
                yield d


def expand(s, env):
    """Kubernetes' $(VAR) expansion: defined variables only, $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), s)


def container_env(render, c, resolve=None):
    """{name: value} of a container; values from Secrets/fields come from `resolve`, else a marker."""
    env = {}
    for e in c.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in e:
                name = e[ref]["name"]
                d = render.by.get((kind, name), {})
                for k in render.keys(kind, name) or ():
                    env[e.get("prefix", "") + k] = data_value(d, k) if d else (resolve or marker)(kind, name, k)
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif "valueFrom" in e:
            vf = e["valueFrom"]
            for kind, ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if ref in vf:
                    d = render.by.get((kind, vf[ref]["name"]))
                    env[e["name"]] = data_value(d, vf[ref]["key"]) if d else \
                        (resolve or marker)(kind, vf[ref]["name"], vf[ref]["key"])
            if "fieldRef" in vf:
                env[e["name"]] = {"spec.nodeName": "node-1", "metadata.name": "pod-1",
                                  "metadata.namespace": "podiam"}.get(vf["fieldRef"]["fieldPath"], "x")
        else:
            env[e["name"]] = ""
    return env


def marker(kind, name, key):
    return f"<{kind} {name} {key}>"


def data_value(d, key):
    if key in (d.get("stringData") or {}):
        return d["stringData"][key]
    if key in (d.get("data") or {}):
        return base64.b64decode(d["data"][key]).decode() if d["kind"] == "Secret" else d["data"][key]
    return None


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def rel(path, mount):
    return path[len(mount.rstrip("/")) + 1:]


def option_value(name, flags, env, opts):
    """An option's value as clap resolves it: the flag, then its env variable, then the default."""
    if name in flags:
        return flags[name]
    _, var, default = opts[name]
    if var and var in env:
        return env[var]
    return default


# === static ===

def check_container(render, w, spec, c, binary, subs, overlay):
    where = f"{overlay} {w['kind']}/{w['metadata']['name']} container {c['name']}"
    kind = image_kind(c["image"])
    if kind is None:
        fail(f"{where}: image {c['image']} is not in deploy_pods.py's WRITES; say what it writes")
        return
    env = container_env(render, c)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    mounts = c.get("volumeMounts", [])

    def volume_kind(m):
        if m["name"] in claims:
            return "persistentVolumeClaim"
        return next((k for k in volumes[m["name"]] if k != "name"), None)

    def covering(path):
        ms = [m for m in mounts if under(path, m["mountPath"])]
        return max(ms, key=lambda m: len(m["mountPath"])) if ms else None

    def writable(m):
        return m is not None and not m.get("readOnly") and volume_kind(m) in WRITABLE_VOLUMES

    psc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    written, reads, flags, sub = [], [], {}, None
    if kind == "podiam":
        args = c.get("args", [])
        if c.get("command"):
            fail(f"{where}: sets command; the image's entrypoint is podiam")
        if not args or args[0] not in subs:
            fail(f"{where}: args[0] must be a podiam subcommand ({sorted(subs)}), not {args[:1]}")
            return
        sub = args[0]
        if (kind, sub) not in WRITES:
            fail(f"{where}: `podiam {sub}` is not in deploy_pods.py's WRITES; say what it writes")
            return
        for a in args:
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                if var not in env:
                    fail(f"{where}: {a!r}: ${var} is not defined in the container's env")
        opts, named = cli(binary, sub)
        flags = parse_args([expand(a, env) for a in args[1:]], opts, where)
        read_by_binary = {o[1] for o in opts.values() if o[1]} | named | NON_CLI_ENV
        used = {v for a in args for v in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a)}
        for var in env:
            if var not in read_by_binary and var not in used:
                fail(f"{where}: env {var} is read by neither `podiam {sub}` nor a $({var}) in args")
        for spec_w in WRITES[(kind, sub)]:
            written.append(option_value(spec_w[1], flags, env, opts))
        reads = [v for v in [v for k, v in flags.items() if k not in NOT_READ] + list(env.values())
                 if isinstance(v, str) and v.startswith("/") and v not in written]
    else:
        for spec_w in WRITES[(kind, None)]:
            written.append(env.get(spec_w[1], spec_w[2]) if spec_w[0] == "env" else spec_w[1])

    # Writes.
    ro_root = sc.get("readOnlyRootFilesystem") is True
    for path in written:
        if not path or not path.startswith("/"):
            fail(f"{where}: writes {path!r}, which is not an absolute path")
            continue
        if ro_root:
            m = covering(path)
            if not writable(m):
                fail(f"{where}: writes {path} but the root filesystem is read-only and "
                     + ("nothing is mounted there" if m is None else
                        f"volume {m['name']} ({volume_kind(m)}{', readOnly' if m.get('readOnly') else ''}) is not writable"))
            for m in mounts:
                if under(m["mountPath"], path) and not writable(m):
                    fail(f"{where}: writes into {path}, but {m['mountPath']} below it is volume {m['name']}, not writable")

    # Reads: on a volume, and a key of a Secret/ConfigMap volume.
    for path in reads:
        m = covering(path)
        if m is None:
            fail(f"{where}: reads {path}, which is on no volume (the image holds only the binary)")
            continue
        v = volumes.get(m["name"], {})
        if "projected" in v:
            # kubelet writes each serviceAccountToken source at its path (mode 0600, owned by the
            # pod's user: its own token is readable by the container that mounts it).
            have = {src["serviceAccountToken"]["path"] for src in v["projected"]["sources"] if "serviceAccountToken" in src}
            if rel(path, m["mountPath"]) not in have:
                fail(f"{where}: reads {path}, but the projected volume {m['name']} at {m['mountPath']} has "
                     f"no token {rel(path, m['mountPath'])!r} (it has {sorted(have)})")
        for vk, kind_ in (("secret", "Secret"), ("configMap", "ConfigMap")):
            if vk in v:
                name = v[vk].get("secretName") or v[vk].get("name")
                items = v[vk].get("items")
                have = {i["path"] for i in items} if items else (render.keys(kind_, name) or set())
                if items:
                    keys = render.keys(kind_, name) or set()
                    for i in items:
                        if i["key"] not in keys:
                            fail(f"{where}: volume {m['name']}: {kind_} {name} has no key {i['key']}")
                if rel(path, m["mountPath"]) not in have:
                    fail(f"{where}: reads {path}, but {kind_} {name} mounted at {m['mountPath']} has "
                         f"no {rel(path, m['mountPath'])!r} (it has {sorted(have)})")
                # Secret and ConfigMap files are root's, group fsGroup when the pod sets one.
                item = next((i for i in items or [] if i["path"] == rel(path, m["mountPath"])), {})
                mode = item.get("mode", v[vk].get("defaultMode", 0o644))
                uid = sc.get("runAsUser", psc.get("runAsUser"))
                if uid != 0 and not mode & 0o004 and not (psc.get("fsGroup") is not None and mode & 0o040):
                    fail(f"{where}: reads {path} as uid {uid}, but its mode is {mode:#o}"
                         + ("" if psc.get("fsGroup") is not None else " and the pod sets no fsGroup"))
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            keys = render.keys("Secret", ref["name"])
            if keys is not None and ref["key"] not in keys:
                fail(f"{where}: env {e['name']}: Secret {ref['name']} has no key {ref['key']}")

    # Probes and ports.
    if kind == "podiam":
        opts, _ = cli(binary, sub)
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        listeners = {}
        for opt, (paths, tls) in ENDPOINTS[sub].items():
            addr = option_value(opt, flags, env, opts)
            if addr and addr != "off":
                https = tls if isinstance(tls, bool) else option_value(tls, flags, env, opts) is not None
                listeners[int(addr.rsplit(":", 1)[1])] = (paths, https)
        for p in c.get("ports", []):
            if p["containerPort"] not in listeners:
                fail(f"{where}: declares port {p['containerPort']}, on which `podiam {sub}` does not listen")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = c.get(probe, {}).get("httpGet")
            if not get:
                continue
            port = ports.get(get["port"], get["port"])
            if port not in listeners:
                fail(f"{where}: {probe} asks port {get['port']}, where nothing listens")
                continue
            paths, https = listeners[port]
            if get["path"] not in paths:
                fail(f"{where}: {probe} asks {get['path']}, which port {port} does not serve ({sorted(paths)})")
            if (get.get("scheme", "HTTP") == "HTTPS") != https:
                fail(f"{where}: {probe} asks {get.get('scheme', 'HTTP')} but port {port} serves "
                     + ("HTTPS" if https else "plain HTTP"))


def static(binary, overlay, rendered):
    render = Render(rendered)
    subs = subcommands(binary)
    n = 0
    for w in render.workloads():
        spec = w["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            check_container(render, w, spec, c, binary, subs, overlay)
            n += 1
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"{overlay}: {n} containers: flags and variables known to {os.path.basename(binary)}, written "
          "paths on writable volumes, read paths on volumes, probes on served paths and ports")


# === runtime ===

def sh(*cmd):
    subprocess.run(cmd, check=True)


def size_of(limit):
    if not limit:
        return "64m"
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(limit))
    return m[1] + {"Ki": "k", "Mi": "m", "Gi": "g", None: ""}[m[2]]


def self_signed(workdir):
    key, crt = os.path.join(workdir, "tls.key"), os.path.join(workdir, "tls.crt")
    if not os.path.exists(crt):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=podiam.podiam.svc",
                        "-addext", "subjectAltName=DNS:podiam.podiam.svc"],
                       check=True, capture_output=True)
    return {"tls.key": open(key).read(), "tls.crt": open(crt).read(), "ca.crt": open(crt).read()}


def runtime(binary, overlay, rendered, target, database_url, socket_dir):
    render = Render(rendered)
    kind, name = target.split("/")
    w = render.by[(kind, name)]
    spec = w["spec"]["template"]["spec"]
    c = spec["containers"][0]
    psc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    workdir = tempfile.mkdtemp(prefix="deploy-pod-")
    master_key = secrets.token_bytes(32)

    def is_database(name_, key):
        # The dev overlay's is generated: kustomize appends a hash to its name.
        return key == "url" and re.fullmatch(r"podiam-database(-[a-z0-9]{10})?", name_)

    def resolve(kind_, name_, key):
        """Values for what the render does not hold: the operator's Secrets, cert-manager's."""
        if is_database(name_, key):
            return database_url
        if (name_, key) == ("podiam-master-key", "key"):
            return master_key
        if name_ == "podiam-agent-key":
            return {"aws_access_key_id": "AKIAPODIAMDEPLOYTEST", "aws_secret_access_key": "x" * 40}[key]
        if key in CERT_MANAGER_KEYS:
            return self_signed(workdir)[key]
        raise SystemExit(f"runtime: no test value for {kind_} {name_} key {key}")

    def value(kind_, name_, key):
        d = render.by.get((kind_, name_))
        # The database is the test's, whatever the overlay's Secret says.
        if d is not None and not is_database(name_, key):
            return data_value(d, key)
        return resolve(kind_, name_, key)

    env = {k: v for k, v in container_env(render, c, value).items()}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[e["name"]] = value("Secret", ref["name"], ref["key"])
    env = {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in env.items()}
    env.setdefault("HOME", "/")
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    args = [expand(a, env) for a in c.get("args", [])]
    uid = sc.get("runAsUser", psc.get("runAsUser", 0))
    gid = sc.get("runAsGroup", psc.get("runAsGroup", 0))
    fs_group = psc.get("fsGroup")
    groups = ([fs_group] if fs_group is not None else []) + psc.get("supplementalGroups", [])

    # The pod's root: only the binary (and, for the dynamic loader, the host's libraries) and CA
    # certificates.
    root = os.path.join(workdir, "root")
    os.makedirs(root)
    sh("mount", "-t", "tmpfs", "-o", "size=16m,mode=755", "tmpfs", root)
    for d in ("proc", "sys", "dev", "etc", "usr", "run/postgresql-test"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + d
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, d))
        elif os.path.isdir(host):
            os.makedirs(os.path.join(root, d))
            sh("mount", "--bind", host, os.path.join(root, d))
            sh("mount", "-o", "remount,bind,ro", os.path.join(root, d))
    for d in ("usr", "sys"):
        sh("mount", "--bind", "/" + d, os.path.join(root, d))
        sh("mount", "-o", "remount,bind,ro", os.path.join(root, d))
    sh("mount", "-t", "proc", "proc", os.path.join(root, "proc"))
    sh("mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", os.path.join(root, "dev"))
    for dev in ("null", "zero", "full", "random", "urandom"):
        open(os.path.join(root, "dev", dev), "w").close()
        sh("mount", "--bind", "/dev/" + dev, os.path.join(root, "dev", dev))
    os.makedirs(os.path.join(root, "dev/shm"))
    sh("mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "tmpfs", os.path.join(root, "dev/shm"))
    for f, text in (("hosts", "127.0.0.1 localhost\n::1 localhost\n"), ("hostname", "pod-1\n"),
                    ("resolv.conf", "nameserver 127.0.0.1\n")):
        with open(os.path.join(root, "etc", f), "w") as out:
            out.write(text)
    # The image's CA certificates: without any, the agent's and the server's HTTP clients cannot be
    # built (the agent exits at start, even talking plain HTTP to the server).
    os.makedirs(os.path.join(root, "etc/ssl/certs"))
    sh("mount", "--bind", "/etc/ssl/certs", os.path.join(root, "etc/ssl/certs"))
    sh("mount", "-o", "remount,bind,ro", os.path.join(root, "etc/ssl/certs"))
    entry = os.path.join(root, "podiam")
    open(entry, "w").close()
    sh("mount", "--bind", binary, entry)
    sh("mount", "-o", "remount,bind,ro", entry)
    sh("mount", "--bind", socket_dir, os.path.join(root, "run/postgresql-test"))

    # The pod's volumes, parents first.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    emptydirs = []
    for m in sorted(c.get("volumeMounts", []), key=lambda m: m["mountPath"].count("/")):
        v, path = volumes[m["name"]], root + m["mountPath"]
        os.makedirs(path, exist_ok=True)
        if "emptyDir" in v:
            sh("mount", "-t", "tmpfs", "-o", f"size={size_of(v['emptyDir'].get('sizeLimit'))},mode=777", "tmpfs", path)
            if fs_group is not None:
                os.chown(path, 0, fs_group)
                os.chmod(path, 0o2777)
            emptydirs.append(m["mountPath"])
        elif "secret" in v or "configMap" in v:
            vk = "secret" if "secret" in v else "configMap"
            kind_, name_ = ("Secret", v[vk]["secretName"]) if vk == "secret" else ("ConfigMap", v[vk]["name"])
            mode = v[vk].get("defaultMode", 0o644)
            sh("mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", path)
            items = v[vk].get("items") or [{"key": k, "path": k} for k in sorted(render.keys(kind_, name_))]
            for i in items:
                data = value(kind_, name_, i["key"])
                f = os.path.join(path, i["path"])
                os.makedirs(os.path.dirname(f), exist_ok=True)
                with open(f, "wb") as out:
                    out.write(data if isinstance(data, bytes) else data.encode())
                os.chown(f, 0, fs_group if fs_group is not None else 0)
                os.chmod(f, i.get("mode", mode))
            sh("mount", "-o", "remount,ro", path)
        elif "projected" in v and all("serviceAccountToken" in src for src in v["projected"]["sources"]):
            # A stand-in for kubelet's token: a JWT no issuer signed (nothing here verifies it).
            sh("mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", path)
            for src in v["projected"]["sources"]:
                f = os.path.join(path, src["serviceAccountToken"]["path"])
                with open(f, "w") as out:
                    out.write("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdGFuZC1pbiJ9.c3RhbmQtaW4")
                os.chown(f, uid, gid)
                os.chmod(f, 0o600)
            sh("mount", "-o", "remount,ro", path)
        else:
            raise SystemExit(f"runtime: volume {m['name']}: no stand-in for {sorted(v)}")
        if m.get("readOnly") and "emptyDir" in v:
            sh("mount", "-o", "remount,ro", path)
    sh("mount", "-o", "remount,ro", root)

    # The init container `link` of the agent: the link-local addresses, here on lo.
    sh("ip", "link", "set", "lo", "up")
    if spec.get("hostNetwork"):
        sh("ip", "addr", "add", "169.254.170.23/32", "dev", "lo")
        subprocess.run(["ip", "-6", "addr", "add", "fd00:ec2::23/128", "dev", "lo"], capture_output=True)

    def enter():
        os.chroot(root)
        os.chdir("/")
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)

    log = open(os.path.join(workdir, "log"), "w+")
    proc = subprocess.Popen(["/podiam"] + args, env=env, preexec_fn=enter, stdout=log, stderr=subprocess.STDOUT,
                            cwd="/")
    where = f"{overlay} {kind}/{name}"

    def output():
        log.flush()
        log.seek(0)
        return log.read()

    def base_url(probe):
        """Where the kubelet sends `probe`, without the path."""
        h = c[probe]["httpGet"]
        port = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}.get(h["port"], h["port"])
        return f"{h.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}"

    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE  # as the kubelet

    def get(probe):
        url = base_url(probe) + c[probe]["httpGet"]["path"]
        try:
            with urllib.request.urlopen(url, timeout=2, context=unverified) as r:
                return r.status, url
        except urllib.error.HTTPError as e:
            return e.code, url
        except OSError as e:
            return str(e), url

    try:
        first = "startupProbe" if "startupProbe" in c else "readinessProbe"
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"FAIL: {where}: exited with {proc.returncode} before {first} passed:\n{output()}")
            status, url = get(first)
            if status == 200:
                break
            if time.time() > deadline:
                raise SystemExit(f"FAIL: {where}: {first} {url} answered {status} for 60 s:\n{output()}")
            time.sleep(0.2)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                status, url = get(probe)
                if status != 200:
                    raise SystemExit(f"FAIL: {where}: {probe} {url} answered {status}:\n{output()}")
        if args[0] == "server":
            # A refused AssumeRoleWithWebIdentity is audited: a token that does not verify is a
            # refusal before authentication, in audit-unauthenticated.log.
            body = ("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=deploy-test"
                    "&WebIdentityToken=eyJhbGciOiJub25lIn0.e30.eA&RoleArn=arn:aws:iam::000000000000:role/none").encode()
            try:
                urllib.request.urlopen(base_url("readinessProbe") + "/", body, timeout=5, context=unverified)
            except urllib.error.HTTPError:
                pass
            data_dir = env.get("PODIAM_DATA_DIR") or next(
                (a.split("=", 1)[1] for a in args if a.startswith("--data-dir=")), "/var/lib/podiam")
            audit = root + data_dir + "/audit-unauthenticated.log"
            deadline = time.time() + 5
            while not (os.path.exists(audit) and os.path.getsize(audit) > 0):
                if time.time() > deadline:
                    raise SystemExit(f"FAIL: {where}: no line in {data_dir}/audit-unauthenticated.log after a refused call:\n{output()}")
                time.sleep(0.1)
        time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"FAIL: {where}: exited with {proc.returncode}:\n{output()}")
        bad = [l for l in output().splitlines()
               if re.search(r"read-only file system|permission denied|cannot (write|open|create)", l, re.I)
               and ".pgpass" not in l]
        if bad:
            raise SystemExit(f"FAIL: {where}: refused writes in its log:\n" + "\n".join(bad))
        wrote = sorted({os.path.join(d, f)[len(root):] for m in emptydirs
                        for d, _, fs in os.walk(root + m) for f in fs})
        print(f"{where}: runs on a read-only root as uid {uid}, every probe answers 200; wrote {wrote or 'nothing'}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        # The mounts are this namespace's; the directory is on the host's filesystem.
        subprocess.run(["umount", "-R", "-l", root], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "static":
        static(*sys.argv[2:5])
    elif mode == "runtime":
        runtime(*sys.argv[2:8])
    else:
        sys.exit(__doc__)
