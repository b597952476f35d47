"""The image scripts/build-image built, checked against the Dockerfile and run.

    check.py ARCHIVE DOCKERFILE CARGO_TOML

1. The OCI archive: index.json names podiam:VERSION; every blob's sha256 is its name.
2. The config: the user is 65532:65532 (not root) and has a passwd entry; the entrypoint is the
   binary; no Cmd; the labels name VERSION (the workspace version in Cargo.toml).
3. The Dockerfile's final stage agrees: FROM scratch; its USER, ENTRYPOINT and labels (ARGs
   substituted: VERSION from its default, which must be Cargo.toml's) are the config's; every COPY
   destination is in the image, owned as its --chown says (root otherwise); it has no instruction
   that scripts/build-image does not do.
4. The files: only the binary, the C libraries it loads, the CA bundle, passwd/group/nsswitch.conf,
   /tmp and nonroot's home. No shell, nothing else executable, everything root's but the home,
   nothing writable by others but /tmp.
5. Runs. As a container: buildah reads the archive (containers/image, as podman and skopeo do)
   and runs the binary with its chroot isolation (the image's user and HOME, its /proc and /dev;
   no OCI runtime can start containers on this machine, so no `podman run`): `podiam version`,
   and `podiam up` answering /healthz with its state in nonroot's home. Then, as uid 65532 in a
   chroot of the extracted root: `podiam version` names VERSION and the revision label; `podiam up` on
   127.0.0.1 answers /healthz, keeping its state in nonroot's home; `podiam agent` starts and
   answers its probe (it builds its HTTPS client from the CA bundle at start) and, as a negative
   control, exits naming the HTTP client on a copy of the root without the bundle.
6. Negative controls for 2-4: a Dockerfile saying USER 0, another ENTRYPOINT, another version, an
   ENV the script does not set, an image with a shell or a file owned by nonroot must each fail.

Prints the image's size (compressed archive, uncompressed layers, and the binary).
"""
import copy
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

USER = "65532:65532"
ENTRYPOINT = ["/usr/local/bin/podiam"]
BINARY = "usr/local/bin/podiam"
BUNDLE = "etc/ssl/certs/ca-certificates.crt"
HOME = "home/nonroot"
# Every path the image may hold (directories leading to them included), and the C libraries.
FILES = {BINARY, BUNDLE, "etc/passwd", "etc/group", "etc/nsswitch.conf", "tmp", HOME}
LIBRARY = re.compile(r"^(usr/)?lib(64|32)?(/[a-z0-9_]+-linux-gnu)?/(ld-linux[a-z0-9_.-]*\.so\.\d+|lib[a-z0-9_+-]+\.so(\.\d+)*)$")
SHELLS = {"sh", "bash", "dash", "ash", "zsh", "busybox", "toybox"}
# What scripts/build-image does in the final stage; any other instruction there is one it misses.
BUILD_IMAGE_DOES = {"ARG", "COPY", "LABEL", "USER", "ENTRYPOINT"}


def problem_list():
    out = []
    return out, out.append


# === the archive ===

def read_archive(path):
    """(index, manifest, config, [layer TarFile]) of a one-image OCI archive."""
    with tarfile.open(path) as t:
        blobs = {}
        for m in t.getmembers():
            if m.isfile():
                blobs[m.name.removeprefix("./")] = t.extractfile(m).read()
    problems, bad = problem_list()
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[1]:
                bad(f"{name}: its sha256 is not its name")
    index = json.loads(blobs["index.json"])
    if len(index["manifests"]) != 1:
        bad(f"index.json has {len(index['manifests'])} manifests, want 1")

    def blob(desc):
        data = blobs[f"blobs/{desc['digest'].replace(':', '/')}"]
        if len(data) != desc["size"]:
            bad(f"{desc['digest']}: {len(data)} bytes, the descriptor says {desc['size']}")
        return data

    manifest = json.loads(blob(index["manifests"][0]))
    config = json.loads(blob(manifest["config"]))
    layers = []
    for desc in manifest["layers"]:
        data = blob(desc)
        if desc["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        elif desc["mediaType"].endswith("+zstd"):
            bad(f"layer {desc['digest']} is zstd: not every runtime reads it")
            continue
        layers.append(tarfile.open(fileobj=io.BytesIO(data)))
    return index, manifest, config, layers, problems


def entries(layers):
    """path -> TarInfo of the image's root, layers applied in order (whiteouts are refused)."""
    out = {}
    for layer in layers:
        for m in layer.getmembers():
            name = m.name.removeprefix("./").rstrip("/")
            if name in ("", "."):
                continue
            out[name] = m
    return out


# === the Dockerfile ===

def instructions(text):
    """[(INSTRUCTION, rest)] with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def final_stage(text):
    """(global ARG defaults, the final stage's FROM, its instructions)."""
    ins = instructions(text)
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    if not froms:
        return {}, None, []
    args = {}
    for w, rest in ins[:froms[0]]:
        if w == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args, ins[froms[-1]][1], ins[froms[-1] + 1:]


def substitute(value, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


def dockerfile_problems(text, config, files, version):
    """How the Dockerfile's final stage and the built image disagree."""
    problems, bad = problem_list()
    args, base, stage = final_stage(text)
    cfg = config.get("config", {})
    labels = cfg.get("Labels") or {}
    if args.get("VERSION") != version:
        bad(f"Dockerfile: ARG VERSION={args.get('VERSION')}, Cargo.toml's version is {version}")
    if base != "scratch":
        bad(f"Dockerfile: the final stage is FROM {base}, scripts/build-image starts from scratch")
    # Build arguments that only the build knows (the commit) take the image's value.
    stage_args = dict(args)
    for w, rest in stage:
        if w == "ARG":
            name, _, default = rest.partition("=")
            stage_args.setdefault(name, default)
    stage_args["REVISION"] = labels.get("org.opencontainers.image.revision", "")
    seen = {"USER": None, "ENTRYPOINT": None}
    want_labels = {}
    for w, rest in stage:
        if w not in BUILD_IMAGE_DOES:
            bad(f"Dockerfile: the final stage has {w} {rest}, which scripts/build-image does not do")
        elif w == "USER":
            seen["USER"] = rest
        elif w == "ENTRYPOINT":
            try:
                seen["ENTRYPOINT"] = json.loads(rest)
            except json.JSONDecodeError:
                bad(f"Dockerfile: ENTRYPOINT {rest} is not the exec (JSON) form")
        elif w == "LABEL":
            for token in shlex.split(rest):
                k, _, v = token.partition("=")
                want_labels[k] = substitute(v, stage_args)
        elif w == "COPY":
            words = shlex.split(rest)
            flags = {f.split("=", 1)[0]: f.split("=", 1)[1] if "=" in f else "" for f in words if f.startswith("--")}
            dest = [x for x in words if not x.startswith("--")][-1].strip("/")
            uid, gid = (int(x) for x in flags.get("--chown", "0:0").split(":"))
            info = files.get(dest) if dest else None
            if dest and info is None:
                bad(f"Dockerfile: COPY to /{dest}, which the image does not have")
            elif info is not None and (info.uid, info.gid) != (uid, gid):
                bad(f"Dockerfile: COPY to /{dest} owned {uid}:{gid}, the image's is {info.uid}:{info.gid}")
    if seen["USER"] != cfg.get("User"):
        bad(f"Dockerfile: USER {seen['USER']}, the image's user is {cfg.get('User')!r}")
    if seen["ENTRYPOINT"] != cfg.get("Entrypoint"):
        bad(f"Dockerfile: ENTRYPOINT {seen['ENTRYPOINT']}, the image's is {cfg.get('Entrypoint')}")
    if want_labels != labels:
        bad(f"Dockerfile: labels {want_labels}, the image's are {labels}")
    return problems


# === the image ===

def config_problems(config, version, passwd):
    problems, bad = problem_list()
    cfg = config.get("config", {})
    if cfg.get("User") != USER:
        bad(f"user is {cfg.get('User')!r}, want {USER}")
    uid = (cfg.get("User") or "0").split(":")[0]
    if uid in ("", "0", "root"):
        bad("the image runs as root")
    if not any(line.split(":")[2:3] == [uid] for line in passwd.splitlines()):
        bad(f"/etc/passwd has no user {uid}")
    if cfg.get("Entrypoint") != ENTRYPOINT:
        bad(f"entrypoint is {cfg.get('Entrypoint')}, want {ENTRYPOINT}")
    if cfg.get("Cmd"):
        bad(f"Cmd is {cfg['Cmd']}: `docker run podiam:{version}` should print podiam's help")
    if (cfg.get("Labels") or {}).get("org.opencontainers.image.version") != version:
        bad(f"label org.opencontainers.image.version is not {version}")
    if config.get("architecture") != "amd64" or config.get("os") != "linux":
        bad(f"platform {config.get('os')}/{config.get('architecture')}")
    return problems


def file_problems(files):
    problems, bad = problem_list()
    wanted = set(FILES)
    for name in FILES:
        parts = name.split("/")
        wanted |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    for name, m in sorted(files.items()):
        base = name.rsplit("/", 1)[-1]
        if name.startswith("/") or ".." in name.split("/"):
            bad(f"{name}: not a path inside the root")
        elif base.startswith(".wh."):
            bad(f"{name}: a whiteout (the image has one layer of files)")
        elif base in SHELLS:
            bad(f"/{name}: a shell in the runtime image")
        elif name in wanted:
            pass
        elif m.isdir() and any(LIBRARY.match(f) and f.startswith(name + "/") for f in files):
            pass
        elif LIBRARY.match(name) and m.isfile():
            pass
        else:
            bad(f"/{name}: not something the image should hold")
        executable = m.isfile() and m.mode & 0o111
        if executable and name != BINARY and not LIBRARY.match(name):
            bad(f"/{name}: executable, and not the binary or a library")
        if m.issym() or m.islnk():
            bad(f"/{name}: a link (scripts/image-rootfs copies plain files)")
        owner = (65532, 65532) if name == HOME else (0, 0)
        if (m.uid, m.gid) != owner:
            bad(f"/{name}: owned {m.uid}:{m.gid}, want {owner[0]}:{owner[1]}")
        if m.mode & 0o002 and name != "tmp":
            bad(f"/{name}: writable by everyone")
    for name in FILES:
        if name not in files:
            bad(f"/{name}: missing")
    if BINARY in files and files[BINARY].mode & 0o7777 != 0o755:
        bad(f"/{BINARY}: mode {files[BINARY].mode:o}, want 755")
    if "tmp" in files and files["tmp"].mode & 0o7777 != 0o1777:
        bad(f"/tmp: mode {files['tmp'].mode:o}, want 1777")
    if not any(LIBRARY.match(n) and "libc.so" in n for n in files):
        bad("no libc: the binary is dynamically linked against glibc")
    return problems


def extract(layers, root):
    kwargs = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    for layer in layers:
        layer.extractall(root, numeric_owner=True, **kwargs)


# === running it ===

def chroot(root, *argv):
    """argv in a chroot of root as the image's user, with only the environment a runtime gives."""
    e = {"PATH": "/usr/local/bin", "HOME": "/" + HOME, "RUST_LOG": "info"}
    # The environment is the image's alone, so chroot is found on this machine's PATH first.
    return [shutil.which("chroot") or "/usr/sbin/chroot", f"--userspec={USER}", root, *argv], e


def run(root, *argv):
    cmd, env = chroot(root, *argv)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, log, attempts=300):
    """200 from url within attempts x 0.1 s while proc runs, else a reason."""
    for _ in range(attempts):
        if proc.poll() is not None:
            return f"exited with {proc.returncode} before answering {url}: {log()}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(0.1)
    return f"{url} did not answer 200: {log()}"


def wait_file(path, proc, log, attempts=300):
    for _ in range(attempts):
        if os.path.exists(path) and open(path).read().strip():
            return open(path).read().strip()
        if proc.poll() is not None:
            raise SystemExit(f"FAIL: podiam up exited with {proc.returncode}: {log()}")
        time.sleep(0.1)
    raise SystemExit(f"FAIL: podiam up wrote no port file in 30 s: {log()}")


def spawn(cmd, path, env=None):
    """cmd in a session of its own, its output in path: (process, the output's tail)."""
    logf = open(path, "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)

    def log():
        logf.flush()
        logf.seek(0)
        return logf.read()[-2000:]

    return proc, log


def start(root, tmp, name, *argv):
    cmd, env = chroot(root, *argv)
    return spawn(cmd, os.path.join(tmp, f"{name}.log"), env)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def agent(root, tmp, name, server):
    """The agent in ROOT: (started, probe answered or why not, log)."""
    probe = free_port()
    proc, log = start(root, tmp, name, "/" + BINARY, "agent", "--cluster-name=image-check",
                      f"--server={server}", "--region=us-east-1", f"--listen=127.0.0.1:{free_port()}",
                      f"--probe-listen=127.0.0.1:{probe}")
    try:
        why = wait_http(f"http://127.0.0.1:{probe}/healthz", proc, log)
    finally:
        stop(proc)
    return why, log()


def runtime_problems(layers, root, tmp, version, revision):
    problems, bad = problem_list()
    r = run(root, "/" + BINARY, "version", "--output", "json")
    if r.returncode != 0:
        bad(f"podiam version: exit {r.returncode}: {r.stderr}")
    else:
        v = json.loads(r.stdout)
        print(f"podiam version in the image: {v['version']}, commit {v['commit']}, {v['target']}")
        if v["version"] != version:
            bad(f"podiam version says {v['version']}, the image's label {version}")
        if v["commit"] != revision:
            bad(f"podiam version says commit {v['commit']}, the image's revision label {revision}")
    r = run(root, "/" + BINARY)
    if "Usage" not in r.stdout + r.stderr:
        bad(f"the entrypoint without arguments prints no usage: {r.stdout}{r.stderr}")

    # `podiam up` as nonroot, its data directory the default one in its home.
    port_file = "/tmp/up.port"
    proc, log = start(root, tmp, "up", "/" + BINARY, "up", "--listen=127.0.0.1:0", f"--port-file={port_file}")
    try:
        port = wait_file(root + port_file, proc, log)
        url = f"http://127.0.0.1:{port}"
        why = wait_http(f"{url}/healthz", proc, log)
        if why:
            bad(f"podiam up: {why}")
        else:
            print(f"podiam up in the image answers {url}/healthz")
        data = os.path.join(root, HOME, ".local/share/podiam")
        if not os.path.isdir(data) or os.stat(data).st_uid != 65532:
            bad(f"podiam up kept no state in /{HOME}/.local/share/podiam as 65532")
        # The agent builds its HTTPS client from the CA bundle at start.
        why, alog = agent(root, tmp, "agent", url)
        if why:
            bad(f"podiam agent: {why}")
        else:
            print("podiam agent in the image starts (its HTTP client has the CA bundle) and answers its probe")
        # Negative control: without the bundle it must not start.
        bare = os.path.join(tmp, "no-ca-root")
        extract(layers, bare)
        os.remove(os.path.join(bare, BUNDLE))
        why, alog = agent(bare, tmp, "agent-no-ca", url)
        if not why or "HTTP client" not in alog:
            bad(f"negative control: the agent without /{BUNDLE} did not exit naming its HTTP client: {why}: {alog}")
        else:
            print(f"negative control: without /{BUNDLE} the agent exits ({alog.strip().splitlines()[-1][:160]})")
    finally:
        stop(proc)
    return problems


def container_problems(archive, tmp, version):
    """The archive as a container tool reads it (buildah: containers/image, as podman and skopeo),
    run by buildah's chroot isolation (the image's user and HOME, its own /proc and /dev). An OCI
    runtime (crun, runc) cannot start containers on this machine, so podman cannot run it."""
    problems, bad = problem_list()
    b = ["buildah", "--root", os.path.join(tmp, "storage"), "--runroot", os.path.join(tmp, "run"),
         "--storage-driver", "vfs"]

    def buildah(*argv, **kw):
        return subprocess.run([*b, *argv], capture_output=True, text=True, timeout=120, check=True, **kw).stdout.strip()

    c = buildah("from", "--pull-never", f"oci-archive:{archive}")
    try:
        cfg = json.loads(buildah("inspect", "--type", "container", c))["OCIv1"]["config"]
        if cfg.get("User") != USER or cfg.get("Entrypoint") != ENTRYPOINT:
            bad(f"buildah reads user {cfg.get('User')} and entrypoint {cfg.get('Entrypoint')}")
        run_c = [*b, "run", "--isolation", "chroot", c, "--", "/" + BINARY]
        v = json.loads(subprocess.run([*run_c, "version", "--output", "json"], capture_output=True, text=True,
                                      timeout=120, check=True).stdout)
        if v["version"] != version:
            bad(f"in the container, podiam version says {v['version']}")
        proc, log = spawn([*run_c, "up", "--listen=127.0.0.1:0", "--port-file=/tmp/up.port"],
                          os.path.join(tmp, "container-up.log"))
        try:
            mnt = buildah("mount", c)
            port = wait_file(os.path.join(mnt, "tmp/up.port"), proc, log)
            why = wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
            data = os.path.join(mnt, HOME, ".local/share/podiam")
            if why:
                bad(f"podiam up in the container: {why}")
            elif not os.path.isdir(data) or os.stat(data).st_uid != 65532:
                bad(f"podiam up in the container kept no state in /{HOME}/.local/share/podiam as 65532")
            else:
                print(f"in a container (buildah run from the archive): podiam up as 65532 answers /healthz on port {port}")
        finally:
            stop(proc)
    finally:
        subprocess.run([*b, "rm", c], capture_output=True, timeout=120)
    return problems


def negative_controls(dockerfile, config, files, version, passwd):
    """Each fault must be found by the check written for it."""
    problems, bad = problem_list()
    cases = [
        ("USER 0", dockerfile_problems(dockerfile.replace(f"USER {USER}", "USER 0"), config, files, version)),
        ("another ENTRYPOINT", dockerfile_problems(dockerfile.replace('ENTRYPOINT ["/usr/local/bin/podiam"]', 'ENTRYPOINT ["/podiam"]'), config, files, version)),
        ("another version", dockerfile_problems(dockerfile, config, files, version + ".1")),
        ("an ENV", dockerfile_problems(dockerfile + "\nENV RUST_LOG=debug\n", config, files, version)),
        ("a COPY elsewhere", dockerfile_problems(dockerfile + "\nCOPY --from=builder /x /opt/x\n", config, files, version)),
        ("a label more", dockerfile_problems(dockerfile.replace("LABEL ", "LABEL extra=1 ", 1), config, files, version)),
    ]
    root_config = copy.deepcopy(config)
    root_config["config"]["User"] = "0:0"
    cases.append(("the image running as root", config_problems(root_config, version, passwd)))
    shell = tarfile.TarInfo("bin/sh")
    shell.mode = 0o755
    cases.append(("a shell", file_problems({**files, "bin/sh": shell})))
    owned = copy.copy(files[BINARY])
    owned.uid = owned.gid = 65532
    cases.append(("a binary owned by nonroot", file_problems({**files, BINARY: owned})))
    cases.append(("no CA bundle", file_problems({k: v for k, v in files.items() if k != BUNDLE})))
    for what, found in cases:
        if not found:
            bad(f"negative control: {what} was not found")
    print(f"negative controls: {len(cases)} faults, each found")
    return problems


def main():
    archive, dockerfile_path, cargo_toml = sys.argv[1:4]
    m = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', open(cargo_toml).read(), re.M | re.S)
    version = m[1]
    index, manifest, config, layers, problems = read_archive(archive)
    ref = index["manifests"][0].get("annotations", {}).get("org.opencontainers.image.ref.name")
    if ref != f"podiam:{version}":
        problems.append(f"index.json names {ref!r}, want podiam:{version}")
    files = entries(layers)
    dockerfile = open(dockerfile_path).read()

    size_layers = sum(m.size for m in files.values() if m.isfile())
    print(f"image podiam:{version}: archive {os.path.getsize(archive) / 1e6:.1f} MB, "
          f"{len(files)} entries, {size_layers / 1e6:.1f} MB of files, the binary {files[BINARY].size / 1e6:.1f} MB"
          if BINARY in files else f"image podiam:{version}: no binary")

    problems += file_problems(files)
    problems += dockerfile_problems(dockerfile, config, files, version)
    with tempfile.TemporaryDirectory(prefix="podiam-image-") as tmp:
        root = os.path.join(tmp, "root")
        if not problems:
            extract(layers, root)
            passwd = open(os.path.join(root, "etc/passwd")).read()
            problems += config_problems(config, version, passwd)
            bundle = open(os.path.join(root, BUNDLE)).read()
            n = bundle.count("-----BEGIN CERTIFICATE-----")
            if n < 50:
                problems.append(f"/{BUNDLE} has {n} certificates")
            else:
                print(f"/{BUNDLE}: {n} certificates")
            problems += negative_controls(dockerfile, config, files, version, passwd)
            if not problems:
                labels = config["config"].get("Labels") or {}
                problems += container_problems(archive, tmp, version)
                problems += runtime_problems(layers, root, tmp, version, labels.get("org.opencontainers.image.revision"))
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"OK: {archive} agrees with {dockerfile_path} and runs as {USER}")


if __name__ == "__main__":
    main()
