"""EKS Pod Identity end to end: `podiam up`, a cluster and an association, then `podiam agent` on
127.0.0.1 as the DaemonSet runs it: a session of the least-privilege agent role (docs/operating.md's
agent role: allowed only eks-auth:AssumeRoleForPodIdentity, and sts:AssumeRole on the node role for
IMDS), which the AWS SDK's standard chain gets by web identity with the agent's own token on node
`node-a` (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_SESSION_NAME, AWS_ENDPOINT_URL_STS),
never the administrator's key. A pod token of another node is refused (node binding); a second agent
finds a user's key through AWS_PROFILE, as every AWS tool would. And boto3 configured with
nothing but what the pod identity webhook injects (AWS_CONTAINER_CREDENTIALS_FULL_URI and
AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE). Also boto3's IMDS provider (IMDSv2 only) for the node role,
the namespace allow-list refusing a caller, and the agent serving from its cache while the server
is down.

Run by tests/interop/pod-identity.sh; reuses the Podiam harness of irsa_test.py.
"""

import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from irsa_test import ACCOUNT, PODIAM, Podiam, write  # noqa: E402

CLUSTER = "e2e"
NS, SA, POD, UID = "shop", "cart", "cart-7d9f", "0b6f9c1e-9d0a-4d3e-8a53-6f1f0c2b1a11"
ROLE = "cart-role"
NODE_ROLE = "node-role"


NODE = "node-a"
AGENT_ROLE = "podiam-agent"


def agent_identity_env(p, tmp):
    """The DaemonSet's web identity (deploy/base/agent/daemonset.yaml), nothing else of AWS."""
    return clean_env(
        tmp,
        AWS_ROLE_ARN=f"arn:aws:iam::{ACCOUNT}:role/{AGENT_ROLE}",
        AWS_WEB_IDENTITY_TOKEN_FILE=os.path.join(tmp, "agent-token"),
        AWS_ROLE_SESSION_NAME=NODE,
        AWS_ENDPOINT_URL_STS=p.endpoint,
        AWS_EC2_METADATA_DISABLED="true",
    )


class Agent:
    """`podiam agent` on 127.0.0.1 with port 0 everywhere; addresses read from its stdout."""

    def __init__(self, p, tmp, env, name="agent", pods_from=None):
        self.pod_map = write(os.path.join(tmp, "pods.json"), json.dumps({"127.0.0.1": "kube-system"}))
        # Who the IMDS caller is: the map file, or a watch of node-a's pods at `pods_from`.
        pods = (["--pod-ip-map", self.pod_map, "--pod-ip-map-interval", "100ms"] if pods_from is None
                else ["--watch-pods", "--kube-api", pods_from, "--node-name", NODE])
        self.log = os.path.join(tmp, f"{name}.log")
        self.proc = subprocess.Popen(
            [
                PODIAM, "agent",
                "--cluster-name", CLUSTER,
                "--server", p.endpoint,
                "--listen", "127.0.0.1:0",
                # Bind failure on one address is logged and skipped (TEST-NET-1 is not local).
                "--listen", "192.0.2.1:80",
                "--probe-listen", "127.0.0.1:0",
                "--imds-listen", "127.0.0.1:0",
                "--node-role-arn", f"arn:aws:iam::{ACCOUNT}:role/{NODE_ROLE}",
                "--imds-allow-namespace", "kube-system",
                *pods,
            ],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "ab"),
            text=True,
            env={**env, "RUST_LOG": "info"},
        )
        self.credentials = self.imds = self.probe = None
        while True:
            line = self.proc.stdout.readline()
            assert line, f"agent exited: {open(self.log).read()[-3000:]}"
            kind, _, url = line.strip().partition(" ")
            if line.strip() == "podiam agent ready":
                break
            if kind == "credentials":
                assert self.credentials is None, "only 127.0.0.1 binds"
                self.credentials = url
            elif kind == "imds":
                self.imds = url
            elif kind == "probe":
                self.probe = url
        assert self.credentials and self.imds and self.probe

    def metric(self, name, labels=""):
        text = urllib.request.urlopen(self.probe + "/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(f"podiam_agent_{name}_total{labels} ") or line.startswith(f"podiam_agent_{name}_total{labels}{{"):
                return float(line.split()[-1])
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def clean_env(tmp, **extra):
    """No AWS credentials anywhere but what `extra` says: boto3 must find them itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.path.join(tmp, "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "no-credentials"),
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        **extra,
    )
    return env


BOTO3_WHO_AM_I = """
import json, sys, boto3
s = boto3.Session()
c = s.get_credentials()
if c is None:
    print(json.dumps({"method": None})); sys.exit(0)
f = c.get_frozen_credentials()
who = s.client("sts", endpoint_url=sys.argv[1]).get_caller_identity()
print(json.dumps({"method": c.method, "access_key": f.access_key, "arn": who["Arn"]}))
"""


def boto3_who_am_i(p, env):
    r = subprocess.run([sys.executable, "-c", BOTO3_WHO_AM_I, p.endpoint], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def setup(p, tmp):
    p.podiam("cluster", "create", "--name", CLUSTER, "--builtin")
    p.aws("iam", "create-policy", "--policy-name", "read-roles", "--policy-document",
          json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:GetRole", "Resource": "*"}]}))
    p.podiam("create", "podidentityassociation", "--cluster", CLUSTER, "--namespace", NS, "--service-account", SA,
             "--role-name", ROLE, "--permission-policy-arns", f"arn:aws:iam::{ACCOUNT}:policy/read-roles")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}
    p.aws("iam", "create-role", "--role-name", NODE_ROLE, "--assume-role-policy-document", json.dumps(trust))
    # The agent role (docs/operating.md, "The agent's role"): web identity of the agent's
    # ServiceAccount from the cluster's issuer, allowed only what the agent calls.
    host = p.issuer_host()
    agent_trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{host}:sub": "system:serviceaccount:podiam:podiam-agent", f"{host}:aud": "sts.amazonaws.com"}}}]}
    p.aws("iam", "create-role", "--role-name", AGENT_ROLE, "--assume-role-policy-document", json.dumps(agent_trust))
    p.aws("iam", "put-role-policy", "--role-name", AGENT_ROLE, "--policy-name", "eks-auth", "--policy-document",
          json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "eks-auth:AssumeRoleForPodIdentity", "Resource": "*"}]}))
    p.aws("iam", "put-role-policy", "--role-name", AGENT_ROLE, "--policy-name", "node-role", "--policy-document",
          json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/{NODE_ROLE}"}]}))
    # The agent's own projected token: kubelet's, of a pod on node-a.
    write(os.path.join(tmp, "agent-token"), p.podiam(
        "token", "create", "--namespace", "podiam", "--service-account", "podiam-agent", "--audience", "sts.amazonaws.com",
        "--pod-name", "podiam-agent-x7k2p", "--pod-uid", "5c1d0e4a-2f7b-4c3e-9a1d-7e6f5a4b3c2d", "--node-name", NODE).stdout.strip())
    # The option of a key: a user allowed the same (docs/operating.md, "A key instead").
    p.aws("iam", "create-user", "--user-name", "podiam-agent")
    p.aws("iam", "put-user-policy", "--user-name", "podiam-agent", "--policy-name", "eks-auth", "--policy-document",
          json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "eks-auth:AssumeRoleForPodIdentity", "Resource": "*"}]}))
    p.aws("iam", "put-user-policy", "--user-name", "podiam-agent", "--policy-name", "node-role", "--policy-document",
          json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/{NODE_ROLE}"}]}))
    key = p.aws_json("iam", "create-access-key", "--user-name", "podiam-agent")["AccessKey"]
    write(os.path.join(tmp, "agent-credentials"),
          f"[agent]\naws_access_key_id = {key['AccessKeyId']}\naws_secret_access_key = {key['SecretAccessKey']}\n")
    token = pod_token(p, NODE)
    # kubelet writes projected tokens without a trailing newline; botocore insists.
    return write(os.path.join(tmp, "eks-pod-identity-token"), token)


def pod_token(p, node):
    return p.podiam("token", "create", "--namespace", NS, "--service-account", SA, "--audience", "pods.eks.amazonaws.com",
                    "--pod-name", POD, "--pod-uid", UID, "--node-name", node).stdout.strip()


def audit_events(p, action):
    events = [json.loads(line) for line in open(os.path.join(p.data_dir, "audit.log")) if line.strip()]
    return [e for e in events if e.get("action") == action]


def test_boto3_container_provider_gets_the_pod_role(p, a, tmp, token_file):
    env = clean_env(tmp, AWS_CONTAINER_CREDENTIALS_FULL_URI=a.credentials, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=token_file)
    got = boto3_who_am_i(p, env)
    assert got["method"] == "container-role", got
    assert got["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/"), got
    again = boto3_who_am_i(p, env)
    assert again["access_key"] == got["access_key"], "the second process got the cached credentials"
    assert a.metric("cache_hits") >= 1


def test_container_endpoint_answers_as_the_sdks_expect(p, a, tmp, token_file):
    token = open(token_file).read()
    status, body = get(a.credentials, {"Authorization": token})
    assert status == 200, body
    doc = json.loads(body)
    assert set(doc) == {"AccessKeyId", "SecretAccessKey", "Token", "AccountId", "Expiration"}, doc
    assert doc["AccountId"] == ACCOUNT and doc["AccessKeyId"].startswith("ASIA") and doc["Expiration"].endswith("Z")
    status, body = get(a.credentials)
    assert status == 400 and json.loads(body)["code"] == "InvalidTokenException", (status, body)
    # A token for a ServiceAccount without an association: the server's refusal comes through.
    other = p.podiam("token", "create", "--namespace", NS, "--service-account", "nobody", "--audience", "pods.eks.amazonaws.com",
                     "--pod-name", "x", "--pod-uid", "uid-x").stdout.strip()
    status, body = get(a.credentials, {"Authorization": other})
    assert status == 404 and json.loads(body)["code"] == "ResourceNotFoundException", (status, body)
    # Same pod UID, token not signed by the cluster: never served from the cache.
    head, payload, _sig = token.split(".")
    status, body = get(a.credentials, {"Authorization": f"{head}.{payload}.AAAA"})
    assert status == 400 and json.loads(body)["code"] == "InvalidTokenException", (status, body)
    # A Host that names something else than the address we listen on (DNS rebinding).
    status, body = get(a.credentials, {"Authorization": token, "Host": "evil.example"})
    assert status == 403, (status, body)


def test_boto3_imds_provider_gets_the_node_role_over_imdsv2(p, a, tmp, token_file):
    env = clean_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=a.imds + "/", AWS_EC2_METADATA_V1_DISABLED="true")
    got = boto3_who_am_i(p, env)
    assert got["method"] == "iam-role", got
    assert got["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{NODE_ROLE}/"), got
    status, _ = get(a.imds + "/latest/meta-data/iam/security-credentials/")
    assert status == 401, "IMDSv1 is refused"
    status, tok = get(a.imds + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, method="PUT")
    assert status == 200
    h = {"X-aws-ec2-metadata-token": tok}
    assert get(a.imds + "/latest/meta-data/iam/security-credentials/", h) == (200, NODE_ROLE)
    status, doc = get(a.imds + "/latest/dynamic/instance-identity/document", h)
    assert status == 200 and json.loads(doc)["accountId"] == ACCOUNT
    assert get(a.imds + "/latest/meta-data/placement/region", h) == (200, "us-east-1")
    status, _ = get(a.imds + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21601"}, method="PUT")
    assert status == 400


def test_imds_refuses_a_namespace_not_on_the_allow_list(p, a, tmp, token_file):
    status, tok = get(a.imds + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, method="PUT")
    assert status == 200
    creds_url = a.imds + f"/latest/meta-data/iam/security-credentials/{NODE_ROLE}"
    assert get(creds_url, {"X-aws-ec2-metadata-token": tok})[0] == 200
    write(a.pod_map, json.dumps({"127.0.0.1": "default"}))  # the caller is now a pod in `default`
    deadline = time.time() + 10
    while get(creds_url, {"X-aws-ec2-metadata-token": tok})[0] != 403:
        assert time.time() < deadline, "map change not picked up"
        time.sleep(0.1)
    env = clean_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=a.imds + "/", AWS_EC2_METADATA_V1_DISABLED="true")
    assert boto3_who_am_i(p, env)["method"] is None, "boto3 finds no credentials"
    assert a.metric("imds_denied", '{reason="namespace"}') >= 1
    assert "namespace `default`" in open(a.log).read(), "the refusal is logged"
    write(a.pod_map, json.dumps({"127.0.0.1": "kube-system"}))


def test_the_agent_is_a_web_identity_session_of_the_agent_role_bound_to_its_node(p, a, tmp, token_file):
    assert get(a.credentials, {"Authorization": open(token_file).read()})[0] == 200
    time.sleep(0.3)  # the audit writer
    web = [e for e in audit_events(p, "AssumeRoleWithWebIdentity") if e.get("role", "").endswith(f"role/{AGENT_ROLE}")]
    assert web and web[0]["outcome"] == "allowed", web
    assert web[0]["session_name"] == NODE and web[0]["node"] == NODE, web[0]
    exchanges = audit_events(p, "AssumeRoleForPodIdentity")
    assert exchanges, "no EKS Auth call audited"
    for e in exchanges:
        assert e["subject"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{AGENT_ROLE}/{NODE}", e
        assert e.get("agent_node") == NODE or e["outcome"] != "allowed", e
    assert "AWS credentials resolved" in open(a.log).read()


def test_a_pod_token_of_another_node_is_refused(p, a, tmp, token_file):
    status, body = get(a.credentials, {"Authorization": pod_token(p, "node-b")})
    assert status == 400, (status, body)
    doc = json.loads(body)
    assert doc["code"] == "AccessDeniedException", doc
    assert "`node-b`" in doc["message"] and f"`{NODE}`" in doc["message"], doc
    time.sleep(0.3)
    denied = [e for e in audit_events(p, "AssumeRoleForPodIdentity") if e["outcome"] == "denied"]
    assert denied and "`node-b`" in denied[-1]["reason"], denied


def test_an_agent_finds_a_profile_through_the_standard_chain(p, a, tmp, token_file):
    # AWS_PROFILE in a shared credentials file, as every AWS tool reads it; no --credentials-file.
    env = clean_env(tmp, AWS_PROFILE="agent", AWS_EC2_METADATA_DISABLED="true")
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(tmp, "agent-credentials")
    b = Agent(p, tmp, env, name="profile-agent")
    try:
        status, body = get(b.credentials, {"Authorization": open(token_file).read()})
        assert status == 200, body
        time.sleep(0.3)
        last = audit_events(p, "AssumeRoleForPodIdentity")[-1]
        assert last["subject"] == f"arn:aws:iam::{ACCOUNT}:user/podiam-agent", last
    finally:
        b.stop()


class ApiServer:
    """A stand-in kube-apiserver for pods: a PodList, then `?watch=true` events on a chunked
    response, as the real one sends them."""

    def __init__(self, pods):
        self.pods, self.rv, self.queries, self.watchers = dict(pods), 1, [], []
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                me.queries.append(q)
                if url.path != "/api/v1/pods":
                    self.send_error(404)
                    return
                if q.get("watch") in ("true", "1"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    events = queue.Queue()
                    me.watchers.append(events)
                    while (event := events.get()) is not None:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.close_connection = True
                    return
                body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(me.rv)},
                                   "items": list(me.pods.values())}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def pod(uid, ns, ip, rv):
        return {"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": f"pod-{uid}", "namespace": ns, "uid": uid, "resourceVersion": str(rv)},
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}

    def send(self, kind, obj):
        for w in self.watchers:
            w.put({"type": kind, "object": obj})

    def stop(self):
        for w in self.watchers:
            w.put(None)
        self.server.shutdown()


def test_imds_knows_callers_from_a_watch_of_the_nodes_pods(p, a, tmp, token_file):
    api = ApiServer({"a": ApiServer.pod("a", "kube-system", "127.0.0.1", 1)})
    b = Agent(p, tmp, agent_identity_env(p, tmp), name="watch-agent", pods_from=api.url)
    try:
        creds_url = b.imds + f"/latest/meta-data/iam/security-credentials/{NODE_ROLE}"
        deadline = time.time() + 10
        while True:  # the map is empty (everyone refused) until the list arrives
            status, tok = get(b.imds + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, method="PUT")
            if get(creds_url, {"X-aws-ec2-metadata-token": tok})[0] == 200:
                break
            assert time.time() < deadline, open(b.log).read()[-2000:]
            time.sleep(0.1)
        assert api.queries[0]["fieldSelector"] == "spec.nodeName=node-a", api.queries[0]
        env = clean_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=b.imds + "/", AWS_EC2_METADATA_V1_DISABLED="true")
        assert boto3_who_am_i(p, env)["method"] == "iam-role"
        # The address passes to a pod of `default`, reported before the old pod's deletion.
        while not api.watchers:
            assert time.time() < deadline + 10
            time.sleep(0.05)
        api.send("ADDED", ApiServer.pod("b", "default", "127.0.0.1", 2))
        api.send("DELETED", ApiServer.pod("a", "kube-system", "127.0.0.1", 3))
        deadline = time.time() + 10
        while get(creds_url, {"X-aws-ec2-metadata-token": tok})[0] != 403:
            assert time.time() < deadline, "the watch's change was not picked up"
            time.sleep(0.1)
        assert any(w.get("watch") == "true" and w.get("resourceVersion") == "1" for w in api.queries), api.queries
    finally:
        b.stop()
        api.stop()


def test_server_outage_is_served_from_the_agent_cache(p, a, tmp, token_file):
    token = open(token_file).read()
    status, body = get(a.credentials, {"Authorization": token})
    assert status == 200
    p.stop()
    status, during = get(a.credentials, {"Authorization": token})
    assert status == 200, during
    assert json.loads(during)["AccessKeyId"] == json.loads(body)["AccessKeyId"]
    p.start()


def main():
    tmp = tempfile.mkdtemp(prefix="podiam-pod-identity-")
    p = Podiam(tmp).start()
    a = None
    passed = failed = 0
    try:
        token_file = setup(p, tmp)
        a = Agent(p, tmp, agent_identity_env(p, tmp))
        assert "192.0.2.1:80" in open(a.log).read(), "the unbindable address was logged"
        tests = [v for k, v in globals().items() if k.startswith("test_")]
        for t in tests:
            try:
                t(p, a, tmp, token_file)
                passed += 1
                print(f"ok     {t.__name__}")
            except Exception:
                failed += 1
                print(f"FAILED {t.__name__}")
                traceback.print_exc()
    except Exception:
        failed += 1
        traceback.print_exc()
    finally:
        if a:
            a.stop()
        p.stop()
        if failed:
            print(f"server log:\n{open(os.path.join(tmp, 'server.log')).read()[-3000:]}")
            if a:
                print(f"agent log:\n{open(a.log).read()[-3000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pod identity: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
