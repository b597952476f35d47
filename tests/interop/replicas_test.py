"""Two `podiam server` processes on one PostgreSQL, driven by boto3.

Needs PODIAM_TEST_DATABASE_URL (scripts/test runs it under scripts/with-postgres). Without it the
suite says loudly that it did not run and fails, so a missing PostgreSQL cannot pass silently.
"""

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

import boto3
import botocore.exceptions
from botocore.config import Config

PODIAM = os.environ.get("PODIAM_BIN", "target/debug/podiam")
ACCOUNT = "000000000000"
ISSUER = "https://issuer.podiam.test"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}],
    }
)


class Replica:
    def __init__(self, name, url, key_file, root, replica_name=None):
        self.name, self.url, self.key_file = name, url, key_file
        # Without --replica-name a server names itself by the hostname.
        self.replica_name = replica_name
        self.data_dir = os.path.join(root, name)
        os.makedirs(self.data_dir, exist_ok=True)
        self.proc = None

    def start(self):
        named = ["--replica-name", self.replica_name] if self.replica_name else []
        self.proc = subprocess.Popen(
            [PODIAM, "server", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, "--database-url", self.url,
             "--master-key-file", self.key_file, "--issuer-url", ISSUER, *named],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.data_dir, "server.log"), "ab"), text=True,
        )
        first = self.proc.stdout.readline()
        assert first.startswith("podiam is up at "), f"{self.name}: {first!r}"
        self.endpoint = first.split()[4]
        deadline = time.time() + 15
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                assert time.time() < deadline, f"{self.name} not ready"
                time.sleep(0.05)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        """SIGTERM, as the kubelet sends it; `True` if the replica exited 0 within 10 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10) == 0
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return False
        return True

    def admin(self):
        creds = {}
        for line in open(os.path.join(self.data_dir, "aws", "credentials")):
            if "=" in line:
                k, v = (x.strip() for x in line.split("=", 1))
                creds[k] = v
        return creds["aws_access_key_id"], creds["aws_secret_access_key"]

    def client(self, service, creds=None):
        key, secret = self.admin()
        token = None
        if creds:
            key, secret, token = creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=key,
            aws_secret_access_key=secret, aws_session_token=token, config=Config(retries={"max_attempts": 1}),
        )


def test_a_role_created_on_a_is_assumed_through_b_within_a_second(a, b):
    a.client("iam").create_role(RoleName="shared", AssumeRolePolicyDocument=TRUST)
    t0 = time.time()
    while True:
        try:
            creds = b.client("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/shared", RoleSessionName="via-b")["Credentials"]
            break
        except botocore.exceptions.ClientError:
            assert time.time() - t0 < 1.0, "replica B did not see the role within 1 s"
            time.sleep(0.02)
    print(f"       visible on B after {time.time() - t0:.3f}s")
    # Credentials minted by B are accepted by A, and the other way round.
    assert a.client("sts", creds).get_caller_identity()["Arn"].endswith("assumed-role/shared/via-b")
    creds_a = a.client("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/shared", RoleSessionName="via-a")["Credentials"]
    assert b.client("sts", creds_a).get_caller_identity()["Arn"].endswith("assumed-role/shared/via-a")


def test_concurrent_create_role_of_one_name_yields_exactly_one_success(a, b):
    for round_ in range(5):
        name = f"race-{round_}"
        barrier = threading.Barrier(4)

        def create(replica):
            iam = replica.client("iam")
            barrier.wait()
            try:
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
                return "ok"
            except botocore.exceptions.ClientError as e:
                return e.response["Error"]["Code"]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(create, [a, b, a, b]))
        assert sorted(results) == ["EntityAlreadyExists"] * 3 + ["ok"], results


def podiam(*args, env=None):
    return subprocess.run([PODIAM, *args], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})


def irsa_role(replica, name, namespace, service_account):
    """Creates role `name` through `replica`, assumable by the built-in issuer's tokens for
    `namespace`/`service_account`; returns its ARN."""
    host = ISSUER.removeprefix("https://")
    trust = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}"}},
        }],
    })
    replica.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=trust)
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def test_one_audit_query_lists_every_replicas_events(a, b):
    role_arn = irsa_role(a, "audit-app", "audit", "app")
    # The CLI signs tokens with the built-in issuer's key from the shared database.
    in_pod = {"PODIAM_DATABASE_URL": a.url, "PODIAM_MASTER_KEY_FILE": a.key_file}
    token = podiam("token", "create", "--namespace", "audit", "--service-account", "app", env=in_pod).stdout
    intruder = podiam("token", "create", "--namespace", "audit", "--service-account", "intruder", env=in_pod).stdout

    def assume(replica, tok, session):
        sts = boto3.client("sts", endpoint_url=replica.endpoint, region_name="us-east-1", aws_access_key_id="unused",
                           aws_secret_access_key="unused", config=Config(retries={"max_attempts": 1}))
        return sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName=session, WebIdentityToken=tok)

    assume(a, token, "via-a")
    deadline = time.time() + 5
    while True:
        try:
            assume(b, token, "via-b")
            break
        except botocore.exceptions.ClientError:
            assert time.time() < deadline, "replica B did not see the role"
            time.sleep(0.05)
    try:
        assume(b, intruder, "intruder")
        raise AssertionError("the intruder's token was accepted")
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e.response

    def audit(*extra, env=None):
        out = podiam("audit", "--role", "audit-app", "--output", "json", *extra, env=env).stdout
        return [json.loads(line) for line in out.splitlines()]

    # Each replica writes its batches off the request path: wait for them.
    deadline = time.time() + 15
    while True:
        events = audit("--database-url", a.url)
        allowed = [e for e in events if e["outcome"] == "allowed"]
        if len(allowed) == 2 and len(events) == 3:
            break
        assert time.time() < deadline, f"the audit table lacks events: {events}"
        time.sleep(0.1)
    hostname = socket.gethostname()
    assert sorted((e["replica"], e["session_name"]) for e in allowed) == sorted([("replica-a", "via-a"), (hostname, "via-b")]), allowed
    # --denied, with the URL from the environment as inside a server pod.
    denied = audit("--denied", env={"PODIAM_DATABASE_URL": a.url})
    assert [(e["replica"], e["service_account"], e["code"]) for e in denied] == [(hostname, "intruder", "AccessDenied")], denied
    text = podiam("audit", "--database-url", a.url, "--role", "audit-app", "--denied").stdout
    assert text.startswith("TIME                  REPLICA") and hostname in text and "audit/intruder" in text, text
    # A replica's own audit.log is as before: its events only, no replica field.
    own = podiam("audit", "--data-dir", a.data_dir, "--role", "audit-app", "--output", "json").stdout.splitlines()
    assert [json.loads(line)["session_name"] for line in own] == ["via-a"], own
    assert all("replica" not in json.loads(line) for line in own), own


def test_key_rotation_fails_no_request_on_either_replica(a, b):
    """Session-key and issuer-key rotation while both replicas serve: every AssumeRoleWithWebIdentity
    and every signed call made with the credentials on the *other* replica succeeds throughout, and
    the new keys do take over (new session tokens name the new key ID, new JWTs the new `kid`)."""
    role_arn = irsa_role(a, "rot-app", "rot", "app")
    in_pod = {"PODIAM_DATABASE_URL": a.url, "PODIAM_MASTER_KEY_FILE": a.key_file}

    def new_token():
        return podiam("token", "create", "--namespace", "rot", "--service-account", "app", env=in_pod).stdout.strip()

    def kid(jwt):
        import base64
        head = jwt.split(".")[0]
        return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]

    def session_key_id(token):
        import base64
        return int.from_bytes(base64.b64decode(token)[1:5], "big")

    first = new_token()
    tokens = {"first": first, "latest": first}
    unsigned = {r.name: boto3.client("sts", endpoint_url=r.endpoint, region_name="us-east-1", aws_access_key_id="unused",
                                     aws_secret_access_key="unused", config=Config(retries={"max_attempts": 1}))
                for r in (a, b)}
    # Wait until B has the role (written through A).
    deadline = time.time() + 5
    while True:
        try:
            unsigned["b"].assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="warm", WebIdentityToken=first)
            break
        except botocore.exceptions.ClientError:
            assert time.time() < deadline, "replica B did not see the role"
            time.sleep(0.05)

    failures, key_ids, kids, rounds = [], {}, {}, [0]
    stop = threading.Event()

    def traffic(first_replica, second_replica):
        while not stop.is_set():
            for which in ("first", "latest"):
                tok = tokens[which]
                try:
                    creds = unsigned[first_replica.name].assume_role_with_web_identity(
                        RoleArn=role_arn, RoleSessionName=f"rot-{first_replica.name}", WebIdentityToken=tok)["Credentials"]
                    key_ids.setdefault(session_key_id(creds["SessionToken"]), time.time())
                    kids.setdefault(kid(tok), time.time())
                    arn = second_replica.client("sts", creds).get_caller_identity()["Arn"]
                    assert arn.endswith(f"assumed-role/rot-app/rot-{first_replica.name}"), arn
                    rounds[0] += 1
                except Exception as e:  # every failure is a finding
                    failures.append(f"{time.time():.3f} {first_replica.name}->{second_replica.name} {which}: {e!r}")

    def refresher():
        while not stop.is_set():
            tokens["latest"] = new_token()
            time.sleep(0.3)

    threads = [threading.Thread(target=traffic, args=(a, b)), threading.Thread(target=traffic, args=(b, a)),
               threading.Thread(target=refresher)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        rotated = time.time()
        print("       " + podiam("session-keys", "rotate", env=in_pod).stdout.strip())
        print("       " + podiam("issuer", "rotate", env=in_pod).stdout.strip())
        # Keys activate 10 s after rotation; keep going well past that.
        time.sleep(14)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures, f"{len(failures)} failed requests during rotation:\n" + "\n".join(failures[:10])
    assert rounds[0] > 20, rounds
    assert len(key_ids) == 2, f"session tokens were sealed with keys {key_ids}: the new key never took over"
    assert len(kids) == 2, f"tokens were signed with keys {kids}: the new issuer key never took over"
    # The new keys were used only after the activation delay (10 s): until then a replica that had
    # not yet loaded them would have refused what they sealed or signed.
    new_key_after = max(key_ids.values()) - rotated
    new_kid_after = max(kids.values()) - rotated
    assert new_key_after > 9 and new_kid_after > 9, (new_key_after, new_kid_after)
    print(f"       {rounds[0]} assume + cross-replica calls, none failed; new session key used from "
          f"+{new_key_after:.1f}s, new issuer key from +{new_kid_after:.1f}s after rotation")


def test_killing_a_mid_write_loses_nothing_acknowledged(a, b):
    acknowledged = []
    stop = threading.Event()

    def writer():
        iam = a.client("iam")
        i = 0
        while not stop.is_set():
            name = f"p{i}"
            try:
                iam.create_policy(PolicyName=name, PolicyDocument='{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}')
                acknowledged.append(name)
            except Exception:
                return
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)
    a.kill()
    stop.set()
    t.join(timeout=10)
    assert len(acknowledged) > 5, acknowledged
    iam = b.client("iam")
    names = set()
    for page in iam.get_paginator("list_policies").paginate(Scope="Local"):
        names.update(p["PolicyName"] for p in page["Policies"])
    missing = [n for n in acknowledged if n not in names]
    assert not missing, f"acknowledged by A but lost: {missing}"
    print(f"       {len(acknowledged)} acknowledged writes, all on B after A was killed")
    a.start()


def main():
    url = os.environ.get("PODIAM_TEST_DATABASE_URL")
    if not url:
        print("replicas: PostgreSQL NOT AVAILABLE (PODIAM_TEST_DATABASE_URL unset): these tests did not run")
        print("replicas: 0 passed, 1 failed")
        sys.exit(1)
    root = tempfile.mkdtemp(prefix="podiam-replicas-")
    db = f"podiam_replicas_{os.getpid()}"
    subprocess.run(["psql", url, "-q", "-c", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    db_url = url.rsplit("/", 1)[0] + "/" + db
    key_file = os.path.join(root, "master.key")
    with open(key_file, "wb") as f:
        f.write(os.urandom(32))
    a = Replica("a", db_url, key_file, root, replica_name="replica-a").start()
    b = Replica("b", db_url, key_file, root).start()
    passed = failed = 0
    try:
        for name, t in [(k, v) for k, v in globals().items() if k.startswith("test_")]:
            try:
                t(a, b)
                passed += 1
                print(f"ok     {name}")
            except Exception:
                failed += 1
                print(f"FAILED {name}")
                traceback.print_exc()
        # Secrets are sealed in the database.
        out = subprocess.run(["psql", db_url, "-At", "-c", "SELECT data FROM entities WHERE kind = 'access_key'"], capture_output=True, text=True, check=True).stdout
        key, secret = a.admin()
        if secret in out or not out.strip().startswith("podiam-sealed:v1:"):
            failed += 1
            print("FAILED secrets_are_sealed_in_the_database")
        else:
            passed += 1
            print("ok     secrets_are_sealed_in_the_database")
    finally:
        # A rollout stops each replica with SIGTERM: it exits 0 well within the grace period.
        for r in (a, b):
            if r.stop():
                passed += 1
                print(f"ok     replica_{r.name}_stops_on_sigterm_within_10_s")
            else:
                failed += 1
                print(f"FAILED replica_{r.name}_stops_on_sigterm_within_10_s")
        if failed:
            for r in (a, b):
                print(f"{r.name} log:\n{open(os.path.join(r.data_dir, 'server.log')).read()[-3000:]}")
        shutil.rmtree(root, ignore_errors=True)
    print(f"replicas: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
