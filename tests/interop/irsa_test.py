"""The IRSA path with real AWS clients: the `aws` CLI and boto3 against a running `podiam up`.

Run by tests/interop/irsa.sh (scripts/test puts the venv's python, aws and boto3 on PATH and sets
PODIAM_BIN). Every check is a function; all run, and the script exits non-zero if any failed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import boto3
import botocore.exceptions
from botocore.config import Config

PODIAM = os.environ.get("PODIAM_BIN", "target/debug/podiam")
ACCOUNT = "000000000000"


class Podiam:
    """`podiam up` on a free port, in its own data directory."""

    def __init__(self, data_dir, server_args=()):
        self.data_dir = data_dir
        self.server_args = list(server_args)
        self.proc = None
        self.endpoint = None

    def start(self):
        self.proc = subprocess.Popen(
            [PODIAM, "up", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0", *self.server_args],
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.data_dir, "server.log"), "ab"),
            text=True,
        )
        first = self.proc.stdout.readline()
        assert first.startswith("podiam is up at "), f"unexpected first line: {first!r}"
        self.endpoint = first.split()[4]
        deadline = time.time() + 10
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise
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

    def env(self):
        return {
            **os.environ,
            "AWS_CONFIG_FILE": os.path.join(self.data_dir, "aws", "config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.data_dir, "aws", "credentials"),
            "AWS_PROFILE": "podiam",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def aws(self, *args, check=True, env=None):
        r = subprocess.run(["aws", *args], capture_output=True, text=True, env=env or self.env(), timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed: {r.stderr}")
        return r

    def aws_json(self, *args, env=None):
        return json.loads(self.aws(*args, env=env).stdout or "null")

    def podiam(self, *args, check=True):
        r = subprocess.run([PODIAM, *args, "--data-dir", self.data_dir], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"podiam {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def token(self, namespace="weasel", sa="weasel-eks-pod-sa", *extra):
        return self.podiam("token", "create", "--namespace", namespace, "--service-account", sa, *extra).stdout

    def issuer_host(self):
        return self.endpoint.removeprefix("http://")


def stopped_issuer(tmp, namespace, sa):
    """Another cluster's issuer (a second podiam, stopped before use): its URL, its JWKS (as
    `kubectl get --raw /openid/v1/jwks` prints it) in a file, and a token it signed for `namespace/sa`."""
    other_dir = tempfile.mkdtemp(prefix="podiam-cluster-")
    try:
        q = Podiam(other_dir).start()
        with urllib.request.urlopen(q.endpoint + "/openid/v1/jwks", timeout=5) as r:
            jwks = write(f"{tmp}/cluster-jwks-{namespace}-{sa}.json", r.read().decode())
        token = q.token(namespace, sa)
        q.stop()
        return q.endpoint, jwks, token
    finally:
        shutil.rmtree(other_dir, ignore_errors=True)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def trust_policy(host, sub="system:serviceaccount:weasel:weasel-eks-pod-sa"):
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": {f"{host}:sub": sub, f"{host}:aud": "sts.amazonaws.com"}},
                }
            ],
        }
    )


APP_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadRoles", "Effect": "Allow", "Action": ["iam:GetRole", "iam:ListAttachedRolePolicies"], "Resource": f"arn:aws:iam::{ACCOUNT}:role/*"},
            {"Sid": "Objects", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::weasel-bucket/*"},
        ],
    }
)

ROLE = "weasel-pod"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"


def sts_client(p):
    return boto3.client(
        "sts",
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
        config=Config(retries={"max_attempts": 1}),
    )


def assume(p, token, role_arn=ROLE_ARN, **kw):
    return sts_client(p).assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="s1", WebIdentityToken=token, **kw)


def error_code(fn):
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Message"]
    raise AssertionError("expected an error, the call succeeded")


# === the checks ===


def test_iam_flow_with_the_aws_cli(p, tmp):
    policy = p.aws_json("iam", "create-policy", "--policy-name", "weasel-pod", "--policy-document", "file://" + write(f"{tmp}/policy.json", APP_POLICY))
    arn = policy["Policy"]["Arn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:policy/weasel-pod", arn
    role = p.aws_json("iam", "create-role", "--role-name", ROLE, "--assume-role-policy-document", "file://" + write(f"{tmp}/trust.json", trust_policy(p.issuer_host())))
    assert role["Role"]["Arn"] == ROLE_ARN
    assert role["Role"]["RoleId"].startswith("AROA") and len(role["Role"]["RoleId"]) == 21
    p.aws("iam", "attach-role-policy", "--role-name", ROLE, "--policy-arn", arn)
    got = p.aws_json("iam", "get-role", "--role-name", ROLE)["Role"]
    # botocore URL-decodes the document back into JSON.
    assert got["AssumeRolePolicyDocument"]["Statement"][0]["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert got["MaxSessionDuration"] == 3600
    attached = p.aws_json("iam", "list-attached-role-policies", "--role-name", ROLE)["AttachedPolicies"]
    assert attached == [{"PolicyName": "weasel-pod", "PolicyArn": arn}], attached
    assert p.aws_json("iam", "get-policy", "--policy-arn", arn)["Policy"]["AttachmentCount"] == 1
    version = p.aws_json("iam", "get-policy-version", "--policy-arn", arn, "--version-id", "v1")["PolicyVersion"]
    assert version["IsDefaultVersion"] is True
    assert version["Document"]["Statement"][1]["Resource"] == "arn:aws:s3:::weasel-bucket/*"
    providers = p.aws_json("iam", "list-open-id-connect-providers")["OpenIDConnectProviderList"]
    assert {"Arn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{p.issuer_host()}"} in providers, providers


def test_assume_role_with_web_identity_and_get_caller_identity(p, tmp):
    token_file = write(f"{tmp}/token", p.token())
    out = p.aws_json("sts", "assume-role-with-web-identity", "--role-arn", ROLE_ARN, "--role-session-name", "cli-session", "--web-identity-token", "file://" + token_file)
    assert out["SubjectFromWebIdentityToken"] == "system:serviceaccount:weasel:weasel-eks-pod-sa"
    assert out["Audience"] == "sts.amazonaws.com"
    assert out["Provider"] == p.endpoint
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert len(creds["SecretAccessKey"]) == 40
    env = {
        **p.env(),
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    who = p.aws_json("sts", "get-caller-identity", env=env)
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/cli-session", who
    assert who["UserId"].endswith(":cli-session")


def test_boto3_default_chain_resolves_web_identity_credentials(p, tmp):
    token_file = write(f"{tmp}/token-chain", p.token())
    script = """
import boto3, botocore.exceptions
sts = boto3.client("sts")
who = sts.get_caller_identity()
iam = boto3.client("iam")
role = iam.get_role(RoleName="weasel-pod")["Role"]["Arn"]
try:
    iam.list_roles()
    denied = None
except botocore.exceptions.ClientError as e:
    denied = e.response["Error"]["Code"]
print(who["Arn"], role, denied)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ROLE_ARN": ROLE_ARN,
            "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
            "AWS_ENDPOINT_URL": p.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    arn, role, denied = r.stdout.split()
    assert arn.startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/"), arn
    assert role == ROLE_ARN
    # The role's policy allows iam:GetRole but not iam:ListRoles.
    assert denied == "AccessDenied", denied


def test_denied_iam_call_names_the_missing_allow(p, tmp):
    creds = assume(p, p.token())["Credentials"]
    iam = boto3.client(
        "iam",
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    code, status, msg = error_code(lambda: iam.create_role(RoleName="escalate", AssumeRolePolicyDocument=trust_policy(p.issuer_host())))
    assert (code, status) == ("AccessDenied", 403), (code, status)
    assert "is not authorized to perform: iam:CreateRole" in msg, msg
    assert iam.get_role(RoleName=ROLE)["Role"]["RoleName"] == ROLE


def test_rejections_carry_the_right_codes(p, tmp):
    other = p.token("default", "intruder")
    code, status, msg = error_code(lambda: assume(p, other))
    assert (code, status) == ("AccessDenied", 403), (code, status, msg)
    assert "sub" in msg, msg  # the denial names the failed condition key
    wrong_aud = p.token("weasel", "weasel-eks-pod-sa", "--audience", "something-else")
    code, status, msg = error_code(lambda: assume(p, wrong_aud))
    assert (code, status) == ("InvalidIdentityToken", 400), (code, status, msg)
    assert "audience" in msg.lower(), msg
    code, status, _ = error_code(lambda: assume(p, p.token(), DurationSeconds=7200))
    assert (code, status) == ("ValidationError", 400), (code, status)
    code, status, _ = error_code(lambda: assume(p, "not.a.jwt"))
    assert (code, status) == ("InvalidIdentityToken", 400), (code, status)
    code, status, _ = error_code(lambda: assume(p, p.token(), role_arn=f"arn:aws:iam::{ACCOUNT}:role/nope"))
    assert (code, status) == ("AccessDenied", 403), (code, status)
    # A token from another podiam (an issuer with no OIDC provider here).
    other_dir = tempfile.mkdtemp(prefix="podiam-other-")
    try:
        q = Podiam(other_dir).start()
        foreign = q.token()
        q.stop()
    finally:
        shutil.rmtree(other_dir, ignore_errors=True)
    code, status, msg = error_code(lambda: assume(p, foreign))
    assert (code, status) == ("InvalidIdentityToken", 400), (code, status)
    assert "No OpenIDConnect provider found" in msg, msg
    # Garbage bodies get an AWS error, and the server stays up.
    for body in [b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15", b"\xff\xfe", b"Action=Nope&Version=2011-06-15", b"%%%"]:
        req = urllib.request.Request(p.endpoint + "/", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError(f"{body!r} was accepted")
        except urllib.error.HTTPError as e:
            assert e.code in (400, 403), e.code
            assert b"<ErrorResponse" in e.read()
    with urllib.request.urlopen(p.endpoint + "/healthz", timeout=5) as r:
        assert r.status == 200


def test_a_cluster_issuer_registered_with_its_jwks(p, tmp):
    """Story 3: a cluster whose issuer podiam cannot reach, registered with `kubectl get --raw
    /openid/v1/jwks` output; here the other cluster is a second podiam, stopped before use."""
    issuer, jwks, token = stopped_issuer(tmp, "shop", "cart")
    out = p.podiam("create", "oidcprovider", "--url", issuer, "--jwks-file", jwks)
    host = issuer.removeprefix("http://")
    assert out.stdout.strip() == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}", out.stdout
    trust = trust_policy(host, sub="system:serviceaccount:shop:cart")
    p.aws("iam", "create-role", "--role-name", "cart", "--assume-role-policy-document", trust)
    # The CLI wrote the provider to the store; the server reloaded before the CLI returned.
    out = assume(p, token, role_arn=f"arn:aws:iam::{ACCOUNT}:role/cart")
    assert out["Provider"] == issuer and out["SubjectFromWebIdentityToken"] == "system:serviceaccount:shop:cart"


def test_simulate_principal_policy_answers_before_code_is_written(p, tmp):
    out = p.aws_json(
        "iam", "simulate-principal-policy", "--policy-source-arn", ROLE_ARN,
        "--action-names", "s3:GetObject", "s3:PutObject",
        "--resource-arns", "arn:aws:s3:::weasel-bucket/report.csv",
    )
    decisions = {r["EvalActionName"]: r["EvalDecision"] for r in out["EvaluationResults"]}
    assert decisions == {"s3:GetObject": "allowed", "s3:PutObject": "implicitDeny"}, decisions
    matched = out["EvaluationResults"][0]["MatchedStatements"][0]
    assert matched["SourcePolicyId"] == f"arn:aws:iam::{ACCOUNT}:policy/weasel-pod", matched
    assert matched["SourcePolicyType"] == "user-managed"


def test_malformed_and_duplicate_iam_requests(p, tmp):
    r = p.aws("iam", "create-policy", "--policy-name", "bad", "--policy-document", '{"Version":"2012-10-17","Statement":{"Effect":"Permit","Action":"s3:*","Resource":"*"}}', check=False)
    assert r.returncode != 0 and "MalformedPolicyDocument" in r.stderr and "Permit" in r.stderr, r.stderr
    r = p.aws("iam", "create-role", "--role-name", ROLE, "--assume-role-policy-document", trust_policy(p.issuer_host()), check=False)
    assert "EntityAlreadyExists" in r.stderr, r.stderr
    r = p.aws("iam", "delete-role", "--role-name", ROLE, check=False)
    assert "DeleteConflict" in r.stderr, r.stderr
    r = p.aws("iam", "get-role", "--role-name", "missing", check=False)
    assert "NoSuchEntity" in r.stderr, r.stderr


def test_audit_lists_who_assumed_and_what_was_denied(p, tmp):
    deadline = time.time() + 5
    while True:
        out = p.podiam("audit", "--role", ROLE).stdout
        denied = p.podiam("audit", "--denied").stdout
        if "weasel/weasel-eks-pod-sa" in out and "default/intruder" in denied:
            break
        if time.time() > deadline:
            raise AssertionError(f"audit log lacks the events:\n{out}\n{denied}")
        time.sleep(0.1)
    assert "allowed" in out


def test_restart_keeps_roles_policies_providers_and_keys(p, tmp):
    creds = assume(p, p.token())["Credentials"]
    p.stop()
    p.start()
    assert p.aws_json("iam", "get-role", "--role-name", ROLE)["Role"]["Arn"] == ROLE_ARN
    assert p.aws_json("iam", "list-attached-role-policies", "--role-name", ROLE)["AttachedPolicies"][0]["PolicyName"] == "weasel-pod"
    assert len(p.aws_json("iam", "list-open-id-connect-providers")["OpenIDConnectProviderList"]) >= 1
    # Session keys survive: credentials minted before the restart still work.
    sts = boto3.client(
        "sts",
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    assert sts.get_caller_identity()["Arn"].endswith(f"assumed-role/{ROLE}/s1")
    # Issuer keys survive too: a token minted now still verifies.
    assert assume(p, p.token())["AssumedRoleUser"]["Arn"].endswith("/s1")


def run_suite(name, prefix, namespace, server_args=()):
    """Runs every `test_*` function of `namespace` against one `podiam up` (started with
    `server_args`); exits non-zero on failure."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    p = Podiam(tmp, server_args).start()
    tests = [v for k, v in namespace.items() if k.startswith("test_")]
    passed = failed = 0
    try:
        for t in tests:
            try:
                t(p, tmp)
                passed += 1
                print(f"ok     {t.__name__}")
            except Exception:
                failed += 1
                print(f"FAILED {t.__name__}")
                traceback.print_exc()
    finally:
        p.stop()
        if failed:
            print(f"server log:\n{open(os.path.join(tmp, 'server.log')).read()[-4000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{name}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def main():
    run_suite("irsa", "podiam-irsa-", globals())


if __name__ == "__main__":
    main()
