"""Broker mode end to end (issue 13): real AWS credentials for pods on any cluster, with a second
podiam playing AWS.

- "AWS" is `podiam up --account-id 111122223333` on a fixed port (it is stopped and started again
  on the same address). In it: the broker's IAM user `podiam-broker` with an access key (no
  policies: a role's trust policy naming a user of its own account is enough, as on AWS), the
  target role `shop-app` with the trust policy `podiam upstream trust-policy` printed and an ABAC
  policy on `${aws:PrincipalTag/kubernetes-namespace}` (and one on `aws:SourceIdentity`), and
  `shop-only`, whose trust admits namespace `shop` only.
- The broker is `podiam up --upstream-sts http://127.0.0.1:PORT` with the user's key in
  AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE / AWS_PROFILE; a second broker gets the same key
  from a `credential_process` script. Each registers cluster `e2e` (built-in issuer) and
  associations naming the upstream roles with `eks create-pod-identity-association`.
- Pods ask `podiam agent` as boto3's container provider does, and use what they get against "AWS".
- IRSA pods: `podiam create iamserviceaccount --cluster --role-arn` binds their ServiceAccount to
  the upstream role; boto3's web-identity provider (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE,
  AWS_ENDPOINT_URL_STS at the broker) gets the session through the broker's STS.
- moto's server is a second, independent upstream for the AssumeRole path.

Run by tests/interop/broker.sh; reuses the harnesses of irsa_test.py and pod_identity_test.py.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter

import boto3
import botocore.exceptions
from botocore.config import Config

sys.path.insert(0, os.path.dirname(__file__))
from irsa_test import PODIAM, write  # noqa: E402
from pod_identity_test import CLUSTER, Agent, boto3_who_am_i, clean_env, get  # noqa: E402

AWS = "111122223333"
BROKER_USER = "podiam-broker"
MAX_RPS = 10
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """`podiam up` in its own data directory; the banner's lines are kept."""

    def __init__(self, data_dir, *args, env=None):
        self.data_dir = data_dir
        self.args = args
        self.run_env = env
        self.proc = None
        self.endpoint = None
        self.banner = []
        os.makedirs(data_dir, exist_ok=True)

    def start(self):
        self.proc = subprocess.Popen(
            [PODIAM, "up", "--data-dir", self.data_dir, *self.args],
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.data_dir, "server.log"), "ab"),
            text=True,
            env=self.run_env,
        )
        self.banner = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"podiam up exited: {self.log()[-3000:]}"
            self.banner.append(line.rstrip("\n"))
            if line.startswith("export "):
                break
        assert self.banner[0].startswith("podiam is up at "), self.banner
        self.endpoint = self.banner[0].split()[4]
        deadline = time.time() + 10
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/healthz", timeout=1):
                    break
            except OSError:
                assert time.time() < deadline, "not healthy"
                time.sleep(0.05)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        return open(os.path.join(self.data_dir, "server.log")).read()

    def admin_key(self):
        creds = {}
        for line in open(os.path.join(self.data_dir, "aws", "credentials")):
            if "=" in line:
                k, v = (x.strip() for x in line.split("=", 1))
                creds[k] = v
        return creds["aws_access_key_id"], creds["aws_secret_access_key"]

    def client(self, service, key=None, token=None):
        key_id, secret = key or self.admin_key()
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name="us-east-1", config=NO_RETRY,
            aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token,
        )

    def podiam(self, *args):
        r = subprocess.run([PODIAM, *args, "--data-dir", self.data_dir], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"podiam {' '.join(args)} failed: {r.stderr}"
        return r.stdout

    def token(self, namespace, sa, pod, audience="pods.eks.amazonaws.com"):
        return self.podiam("token", "create", "--namespace", namespace, "--service-account", sa,
                           "--audience", audience, "--pod-name", pod, "--pod-uid", f"uid-{pod}")

    def audit(self):
        path = os.path.join(self.data_dir, "audit.log")
        return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def broker_env(tmp, **extra):
    """The broker's own AWS identity, as an operator gives it: profile files and AWS_PROFILE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.path.join(tmp, "broker-aws", "config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "broker-aws", "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(extra)
    return env


def associate(broker, namespace, sa, role):
    eks = broker.client("eks")
    deadline = time.time() + 5
    while True:
        try:
            return eks.create_pod_identity_association(
                clusterName=CLUSTER, namespace=namespace, serviceAccount=sa, roleArn=f"arn:aws:iam::{AWS}:role/{role}")
        except eks.exceptions.ResourceNotFoundException:
            # `podiam cluster create` wrote the store; the server sees it within its 1 s poll.
            assert time.time() < deadline
            time.sleep(0.2)


def pod_credentials(agent, token):
    status, body = get(agent.credentials, {"Authorization": token})
    return status, json.loads(body)


def error_code(fn):
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    return None, ""


class World:
    pass


def setup(tmp):
    w = World()
    w.tmp = tmp
    w.aws_port = free_port()
    w.aws = Instance(os.path.join(tmp, "aws"), "--account-id", AWS, "--listen", f"127.0.0.1:{w.aws_port}").start()
    iam = w.aws.client("iam")
    iam.create_user(UserName=BROKER_USER)
    key = iam.create_access_key(UserName=BROKER_USER)["AccessKey"]
    w.broker_key = (key["AccessKeyId"], key["SecretAccessKey"])
    os.makedirs(os.path.join(tmp, "broker-aws"))
    write(os.path.join(tmp, "broker-aws", "config"), "[profile broker]\nregion = us-east-1\n")
    write(os.path.join(tmp, "broker-aws", "credentials"),
          f"[broker]\naws_access_key_id = {key['AccessKeyId']}\naws_secret_access_key = {key['SecretAccessKey']}\n")
    w.env = broker_env(tmp, AWS_PROFILE="broker")
    upstream = f"http://127.0.0.1:{w.aws_port}"
    w.upstream = upstream

    # The trust policies, as the platform engineer gets them: from the broker's own credentials.
    def trust(*extra):
        r = subprocess.run([PODIAM, "upstream", "trust-policy", "--cluster", CLUSTER, "--upstream-sts", upstream, *extra],
                           capture_output=True, text=True, env=w.env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    w.trust = trust()
    w.trust_shop = trust("--namespace", "shop")
    iam.create_role(RoleName="shop-app", AssumeRolePolicyDocument=w.trust)
    iam.put_role_policy(RoleName="shop-app", PolicyName="abac", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "OwnNamespace", "Effect": "Allow", "Action": "iam:GetRole",
             "Resource": f"arn:aws:iam::{AWS}:role/ns-${{aws:PrincipalTag/kubernetes-namespace}}"},
            {"Sid": "ShopPodsBySourceIdentity", "Effect": "Allow", "Action": "iam:ListRoleTags", "Resource": "*",
             "Condition": {"StringLike": {"aws:SourceIdentity": "shop@*"}}},
        ],
    }))
    iam.create_role(RoleName="shop-only", AssumeRolePolicyDocument=w.trust_shop)
    anyone = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{AWS}:root"}, "Action": "sts:AssumeRole"}]})
    for ns in ("shop", "other"):
        iam.create_role(RoleName=f"ns-{ns}", AssumeRolePolicyDocument=anyone)

    w.broker = Instance(os.path.join(tmp, "broker"), "--listen", "127.0.0.1:0", "--upstream-sts", upstream,
                        "--upstream-max-rps", str(MAX_RPS), env=w.env).start()
    w.broker.podiam("cluster", "create", "--name", CLUSTER, "--builtin")
    associate(w.broker, "shop", "cart", "shop-app")
    associate(w.broker, "other", "cart", "shop-app")
    associate(w.broker, "other", "api", "shop-only")
    # The agent's own identity on the broker: a user allowed only the exchange (docs/operating.md's
    # agent user), in a shared credentials file with AWS_PROFILE, found by the SDK's standard chain.
    broker_iam = w.broker.client("iam")
    broker_iam.create_user(UserName="agent")
    broker_iam.put_user_policy(UserName="agent", PolicyName="exchange-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "eks-auth:AssumeRoleForPodIdentity", "Resource": "*"}]}))
    k = broker_iam.create_access_key(UserName="agent")["AccessKey"]
    agent_credentials = write(os.path.join(tmp, "agent-credentials"),
                              f"[agent]\naws_access_key_id = {k['AccessKeyId']}\naws_secret_access_key = {k['SecretAccessKey']}\n")
    agent_env = clean_env(tmp, AWS_PROFILE="agent", AWS_EC2_METADATA_DISABLED="true")
    agent_env["AWS_SHARED_CREDENTIALS_FILE"] = agent_credentials
    w.agent = Agent(w.broker, tmp, agent_env)
    w.token_file = write(os.path.join(tmp, "cart-token"), w.broker.token("shop", "cart", "cart-0"))
    # IRSA: ServiceAccounts bound to the upstream roles, as the platform engineer binds them.
    w.irsa_yaml = irsa_bind(w.broker, "shop", "web", "shop-app")
    irsa_bind(w.broker, "other", "web", "shop-app")
    irsa_bind(w.broker, "other", "batch", "shop-only")
    return w


def irsa_bind(broker, namespace, sa, role):
    return broker.podiam("create", "iamserviceaccount", "--cluster", CLUSTER, "--namespace", namespace,
                         "--name", sa, "--role-arn", f"arn:aws:iam::{AWS}:role/{role}")


# === the checks ===

def test_the_banner_names_the_broker_upstream_and_it_is_ready(w):
    line = w.broker.banner[1]
    assert line == f"upstream STS {w.upstream}: account {AWS}, principal arn:aws:iam::{AWS}:user/{BROKER_USER}", w.broker.banner
    status, body = get(w.broker.endpoint + "/readyz")
    assert status == 200, body


def test_the_printed_trust_policy_names_the_broker_and_the_tags(w):
    doc = json.loads(w.trust_shop)
    s = doc["Statement"][0]
    assert s["Principal"] == {"AWS": f"arn:aws:iam::{AWS}:user/{BROKER_USER}"}, doc
    assert s["Action"] == ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"], doc
    assert s["Condition"]["StringEquals"] == {
        "aws:RequestTag/eks-cluster-name": CLUSTER, "aws:RequestTag/kubernetes-namespace": "shop"}, doc


def test_boto3_container_provider_gets_credentials_of_the_upstream_account(w):
    env = clean_env(w.tmp, AWS_CONTAINER_CREDENTIALS_FULL_URI=w.agent.credentials, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=w.token_file)
    got = boto3_who_am_i(w.aws, env)  # GetCallerIdentity against "AWS"
    assert got["method"] == "container-role", got
    assert got["arn"].startswith(f"arn:aws:sts::{AWS}:assumed-role/shop-app/eks-{CLUSTER}-cart-0-"), got
    status, creds = pod_credentials(w.agent, open(w.token_file).read())
    assert status == 200 and creds["AccountId"] == AWS, creds
    # The broker's audit has upstream's request ID and session; "AWS"'s has the same request.
    time.sleep(0.2)
    event = next(e for e in w.broker.audit() if e["action"] == "AssumeRoleForPodIdentity" and e["outcome"] == "allowed")
    assert event["upstream_session_arn"].startswith(f"arn:aws:sts::{AWS}:assumed-role/shop-app/"), event
    ids = {e["request_id"] for e in w.aws.audit() if e["action"] == "AssumeRole"}
    assert set(event["upstream_request_ids"]) <= ids, (event, ids)
    assert creds["SecretAccessKey"] not in open(os.path.join(w.broker.data_dir, "audit.log")).read()


def pod_clients(w, namespace, sa, pod):
    status, c = pod_credentials(w.agent, w.broker.token(namespace, sa, pod))
    assert status == 200, c
    return w.aws.client("iam", key=(c["AccessKeyId"], c["SecretAccessKey"]), token=c["Token"])


def test_abac_on_the_namespace_tag_allows_the_own_namespace_only(w):
    shop = pod_clients(w, "shop", "cart", "cart-1")
    assert shop.get_role(RoleName="ns-shop")["Role"]["RoleName"] == "ns-shop"
    code, _ = error_code(lambda: shop.get_role(RoleName="ns-other"))
    assert code == "AccessDenied", code
    other = pod_clients(w, "other", "cart", "cart-1")
    assert other.get_role(RoleName="ns-other")["Role"]["RoleName"] == "ns-other"
    assert error_code(lambda: other.get_role(RoleName="ns-shop"))[0] == "AccessDenied"


def test_source_identity_reaches_upstream(w):
    # Only sessions whose SourceIdentity is `shop@…` may list role tags.
    shop = pod_clients(w, "shop", "cart", "cart-2")
    shop.list_role_tags(RoleName="ns-shop")
    other = pod_clients(w, "other", "cart", "cart-2")
    assert error_code(lambda: other.list_role_tags(RoleName="ns-shop"))[0] == "AccessDenied"


def test_a_trust_policy_for_one_namespace_refuses_another_despite_the_association(w):
    status, body = pod_credentials(w.agent, w.broker.token("other", "api", "api-0"))
    assert status == 400 and body["code"] == "AccessDeniedException", (status, body)
    assert w.upstream in body["message"] and "shop-only" in body["message"], body


def test_many_pods_first_requests_are_held_to_the_upstream_rate(w):
    n = 40
    tokens = [w.broker.token("shop", "cart", f"burst-{i}") for i in range(n)]
    results = [None] * n

    def ask(i):
        results[i] = pod_credentials(w.agent, tokens[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if r[0] == 200]
    throttled = [r for r in results if r[0] == 429]
    assert len(ok) + len(throttled) == n, results
    assert all(r[1]["code"] == "ThrottlingException" for r in throttled), throttled
    # A 2.5 s budget at one call per 100 ms: about 25 get through, the rest are told to retry.
    assert 15 <= len(ok) <= 30, len(ok)
    time.sleep(0.3)
    calls = [e for e in w.aws.audit() if e["action"] == "AssumeRole" and "burst" in (e.get("session_name") or "")]
    # Every credential served is one upstream call; under load a call may still complete upstream
    # after the pod was told to retry (its budget ran out), so a few more calls than answers.
    assert len(ok) <= len(calls) <= len(ok) + 3, (len(calls), len(ok))
    per_second = Counter(e["time"] for e in calls)
    assert max(per_second.values()) <= MAX_RPS + 1, per_second
    print(f"       {len(ok)} of {n} served, {len(throttled)} throttled, at most {max(per_second.values())} upstream calls in a second")


def test_upstream_stopped_cached_credentials_still_served_new_pods_refused(w):
    token = open(w.token_file).read()
    auth = w.broker.client("eks-auth")
    before = auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=token)["credentials"]
    w.aws.stop()
    try:
        during = auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=token)["credentials"]
        assert during["accessKeyId"] == before["accessKeyId"]
        code, message = error_code(lambda: auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=w.broker.token("shop", "cart", "late-0")))
        assert code == "ServiceUnavailableException" and w.upstream in message, (code, message)
        # Through the agent, the pod's SDK gets the same answer.
        status, body = pod_credentials(w.agent, w.broker.token("shop", "cart", "late-1"))
        assert status == 503 and w.upstream in body["message"], (status, body)
    finally:
        w.aws.start()
    # Upstream is back: new pods get credentials again.
    fresh = auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=w.broker.token("shop", "cart", "late-2"))
    assert fresh["assumedRoleUser"]["arn"].startswith(f"arn:aws:sts::{AWS}:assumed-role/shop-app/")


def test_broker_credentials_from_a_credential_process(w):
    key_id, secret = w.broker_key
    script = write(os.path.join(w.tmp, "credential-process.sh"),
                   "#!/bin/sh\n"
                   f"echo run >> {w.tmp}/credential-process.runs\n"
                   f"printf '%s' '{json.dumps({'Version': 1, 'AccessKeyId': key_id, 'SecretAccessKey': secret})}'\n")
    os.chmod(script, os.stat(script).st_mode | stat.S_IEXEC)
    config = write(os.path.join(w.tmp, "process-config"), f"[profile process]\nregion = us-east-1\ncredential_process = {script}\n")
    env = broker_env(w.tmp, AWS_PROFILE="process", AWS_CONFIG_FILE=config,
                     AWS_SHARED_CREDENTIALS_FILE=os.path.join(w.tmp, "none"))
    b = Instance(os.path.join(w.tmp, "broker-process"), "--listen", "127.0.0.1:0", "--upstream-sts", w.upstream, env=env).start()
    try:
        assert b.banner[1].endswith(f"principal arn:aws:iam::{AWS}:user/{BROKER_USER}"), b.banner
        b.podiam("cluster", "create", "--name", CLUSTER, "--builtin")
        associate(b, "shop", "cart", "shop-app")
        r = b.client("eks-auth").assume_role_for_pod_identity(clusterName=CLUSTER, token=b.token("shop", "cart", "proc-0"))
        assert r["assumedRoleUser"]["arn"].startswith(f"arn:aws:sts::{AWS}:assumed-role/shop-app/eks-{CLUSTER}-proc-0-"), r
        assert os.path.exists(os.path.join(w.tmp, "credential-process.runs")), "the script was run"
    finally:
        b.stop()


# === IRSA through the broker ===

def irsa_token_file(w, namespace, sa, pod):
    return write(os.path.join(w.tmp, f"irsa-{namespace}-{sa}-{pod}"), w.broker.token(namespace, sa, pod, audience="sts.amazonaws.com"))


def web_identity(w, namespace, sa, pod, role):
    """AssumeRoleWithWebIdentity at the broker's STS, unsigned, as the SDKs call it."""
    sts = boto3.client("sts", endpoint_url=w.broker.endpoint, region_name="us-east-1", config=Config(
        signature_version=botocore.UNSIGNED, retries={"max_attempts": 1, "mode": "standard"}))
    return sts.assume_role_with_web_identity(
        RoleArn=f"arn:aws:iam::{AWS}:role/{role}", RoleSessionName=f"{pod}-session",
        WebIdentityToken=open(irsa_token_file(w, namespace, sa, pod)).read())


def test_create_iamserviceaccount_prints_the_service_account_annotated_with_the_upstream_role(w):
    assert f"eks.amazonaws.com/role-arn: arn:aws:iam::{AWS}:role/shop-app" in w.irsa_yaml, w.irsa_yaml
    assert "name: web" in w.irsa_yaml and "namespace: shop" in w.irsa_yaml, w.irsa_yaml


def test_boto3_web_identity_provider_gets_credentials_of_the_upstream_account(w):
    env = clean_env(w.tmp, AWS_ROLE_ARN=f"arn:aws:iam::{AWS}:role/shop-app",
                    AWS_WEB_IDENTITY_TOKEN_FILE=irsa_token_file(w, "shop", "web", "web-0"),
                    AWS_ENDPOINT_URL_STS=w.broker.endpoint)
    got = boto3_who_am_i(w.aws, env)  # GetCallerIdentity against "AWS"
    assert got["method"] == "assume-role-with-web-identity", got
    assert got["arn"].startswith(f"arn:aws:sts::{AWS}:assumed-role/shop-app/"), got
    # The broker's audit names the pod and upstream's session and request.
    time.sleep(0.2)
    event = next(e for e in w.broker.audit() if e["action"] == "AssumeRoleWithWebIdentity" and e.get("pod") == "web-0")
    assert event["outcome"] == "allowed", event
    assert event["upstream_session_arn"] == got["arn"], (event, got)
    ids = {e["request_id"] for e in w.aws.audit() if e["action"] == "AssumeRole"}
    assert set(event["upstream_request_ids"]) <= ids and event["upstream_request_ids"], (event, ids)


def test_irsa_answer_has_the_token_subject_audience_and_source_identity(w):
    r = web_identity(w, "shop", "web", "web-1", "shop-app")
    assert r["SubjectFromWebIdentityToken"] == "system:serviceaccount:shop:web", r
    assert r["Audience"] == "sts.amazonaws.com", r
    assert r["SourceIdentity"] == "shop@web-1", r
    assert r["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{AWS}:assumed-role/shop-app/web-1-session", r


def irsa_iam(w, namespace, sa, pod, role="shop-app"):
    c = web_identity(w, namespace, sa, pod, role)["Credentials"]
    return w.aws.client("iam", key=(c["AccessKeyId"], c["SecretAccessKey"]), token=c["SessionToken"])


def test_irsa_abac_on_the_namespace_tag_allows_the_own_namespace_only(w):
    shop = irsa_iam(w, "shop", "web", "web-2")
    assert shop.get_role(RoleName="ns-shop")["Role"]["RoleName"] == "ns-shop"
    assert error_code(lambda: shop.get_role(RoleName="ns-other"))[0] == "AccessDenied"
    other = irsa_iam(w, "other", "web", "web-2")
    assert other.get_role(RoleName="ns-other")["Role"]["RoleName"] == "ns-other"
    assert error_code(lambda: other.get_role(RoleName="ns-shop"))[0] == "AccessDenied"


def test_irsa_a_trust_policy_for_one_namespace_refuses_another_despite_the_binding(w):
    code, message = error_code(lambda: web_identity(w, "other", "batch", "batch-0", "shop-only"))
    assert code == "AccessDenied", (code, message)
    assert w.upstream in message and "shop-only" in message, message


def test_irsa_without_a_binding_is_refused_naming_the_command(w):
    code, message = error_code(lambda: web_identity(w, "shop", "nobody", "n-0", "shop-app"))
    assert code == "AccessDenied", (code, message)
    assert f"podiam create iamserviceaccount --cluster {CLUSTER} --namespace shop --name nobody" in message, message


# === moto: an independent upstream for the AssumeRole path ===

def test_moto_as_upstream_accepts_the_brokers_assume_role(w):
    moto_port = free_port()
    log = open(os.path.join(w.tmp, "moto.log"), "ab")
    moto = subprocess.Popen([shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=log, stderr=log)
    moto_url = f"http://127.0.0.1:{moto_port}"
    b = None
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(moto_url + "/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                assert time.time() < deadline and moto.poll() is None, "moto_server did not start"
                time.sleep(0.2)
        moto_account = "123456789012"  # moto's default account
        boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_role(
            RoleName="moto-app", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{moto_account}:root"},
                 "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}]}))
        env = broker_env(w.tmp, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                         AWS_CONFIG_FILE=os.path.join(w.tmp, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(w.tmp, "none"))
        b = Instance(os.path.join(w.tmp, "broker-moto"), "--listen", "127.0.0.1:0", "--upstream-sts", moto_url, env=env).start()
        assert b.banner[1].startswith(f"upstream STS {moto_url}: account {moto_account}, principal "), b.banner
        b.podiam("cluster", "create", "--name", CLUSTER, "--builtin")
        eks = b.client("eks")
        deadline = time.time() + 5
        while True:
            try:
                eks.create_pod_identity_association(clusterName=CLUSTER, namespace="shop", serviceAccount="cart",
                                                    roleArn=f"arn:aws:iam::{moto_account}:role/moto-app")
                break
            except eks.exceptions.ResourceNotFoundException:
                assert time.time() < deadline
                time.sleep(0.2)
        r = b.client("eks-auth").assume_role_for_pod_identity(clusterName=CLUSTER, token=b.token("shop", "cart", "moto-0"))
        assert r["assumedRoleUser"]["arn"].startswith(f"arn:aws:sts::{moto_account}:assumed-role/moto-app/eks-{CLUSTER}-moto-0-"), r
        c = r["credentials"]
        # moto's credentials work against moto.
        who = boto3.client("sts", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=c["accessKeyId"],
                           aws_secret_access_key=c["secretAccessKey"], aws_session_token=c["sessionToken"]).get_caller_identity()
        assert who["Account"] == moto_account, who
    finally:
        if b:
            b.stop()
        moto.terminate()
        moto.wait(timeout=10)


def main():
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="podiam-broker-")
    w = None
    passed = failed = 0
    try:
        w = setup(tmp)
        for name, t in [(k, v) for k, v in globals().items() if k.startswith("test_")]:
            try:
                t(w)
                passed += 1
                print(f"ok     {name}")
            except Exception:
                failed += 1
                print(f"FAILED {name}")
                traceback.print_exc()
    except Exception:
        failed += 1
        traceback.print_exc()
    finally:
        if w:
            for part in ("agent", "broker", "aws"):
                if hasattr(w, part):
                    getattr(w, part).stop()
            if failed:
                for part in ("aws", "broker"):
                    if hasattr(w, part):
                        print(f"{part} log:\n{getattr(w, part).log()[-3000:]}")
                if hasattr(w, "agent"):
                    print(f"agent log:\n{open(w.agent.log).read()[-3000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"broker: {passed} passed, {failed} failed in {time.time() - started:.1f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
