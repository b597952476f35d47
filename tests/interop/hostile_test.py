"""Hostile input and faults (issue 12), each attack tried against a running `podiam up` with real
clients (boto3, raw sockets) and bounded to a few seconds.

Run by tests/interop/hostile.sh. One function per attack (`test_*`), sharing the harness below and
irsa_test.py's; the server runs with short connection timeouts so each attack ends quickly.
"""

import base64
import concurrent.futures
import configparser
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import boto3
import botocore.exceptions
from botocore.config import Config

sys.path.insert(0, os.path.dirname(__file__))
from authz_test import client  # noqa: E402
from irsa_test import ACCOUNT, PODIAM, assume, error_code, run_suite, stopped_issuer, trust_policy  # noqa: E402

# The server's connection limits for this suite (see `hostile.sh`).
HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
MAX_CONNECTIONS = 64
SERVER_ARGS = [
    "--header-timeout-seconds", str(HEADER_TIMEOUT),
    "--body-timeout-seconds", str(BODY_TIMEOUT),
    "--max-connections", str(MAX_CONNECTIONS),
]


# === harness ===


def host_port(p):
    host, port = p.endpoint.removeprefix("http://").split(":")
    return host, int(port)


def connect(p):
    return socket.create_connection(host_port(p), timeout=5)


def closed_within(sock, seconds):
    """True if the server closes (or resets) `sock` within `seconds`; what it sent is discarded."""
    sock.settimeout(0.2)
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def healthz(p):
    try:
        with urllib.request.urlopen(p.endpoint + "/healthz", timeout=2) as r:
            return r.status
    except OSError:
        return 0


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(iss, kid="k"):
    """A well-formed JWT naming `iss`, whose signature is never reached when the keys are missing."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "kid": kid}).encode())
    claims = {"iss": iss, "sub": "system:serviceaccount:ns:sa", "aud": ["sts.amazonaws.com"], "iat": now, "exp": now + 3600, "jti": f"{now}-{time.monotonic_ns()}"}
    return f"{header}.{b64url(json.dumps(claims).encode())}.c2ln"


def role_for(p, name, provider_host, sub="system:serviceaccount:ns:sa"):
    p.aws("iam", "create-role", "--role-name", name, "--assume-role-policy-document", trust_policy(provider_host, sub=sub))
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def eventually(fn, timeout=5):
    """What the CLI writes to the store, the server sees within its 1 s poll."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, botocore.exceptions.ClientError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


class StandInIssuer:
    """An OIDC issuer on 127.0.0.1 that answers every request with `answer` (None: accepts and
    never answers), counting the requests it read."""

    def __init__(self, answer):
        self.answer = answer
        self.hits = 0
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(128)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.held = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        data = b""
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        with self.lock:
            self.hits += 1
        if self.answer is None:
            self.held.append(conn)  # black hole: keep it open, say nothing
            return
        conn.sendall(self.answer)
        conn.close()

    def close(self):
        self.server.close()
        for c in self.held:
            c.close()


def concurrently(n, fn):
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def admin(p, service, user_agent=None):
    """A boto3 client with the administrator's key `podiam up` wrote (no retries: each call is one
    request)."""
    c = configparser.ConfigParser()
    c.read(os.path.join(p.data_dir, "aws", "credentials"))
    key = c["podiam"]
    return boto3.client(
        service,
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["aws_access_key_id"],
        aws_secret_access_key=key["aws_secret_access_key"],
        config=Config(retries={"max_attempts": 1}, read_timeout=30, user_agent=user_agent),
    )


def user_with_policy(p, name, policy):
    """A user with one inline policy and a key: what a least-privileged caller holds."""
    iam = admin(p, "iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def client_as(p, service, key, user_agent=None):
    return boto3.client(
        service,
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"max_attempts": 1}, read_timeout=30, user_agent=user_agent),
    )


def post_raw(p, body, headers=()):
    """One form POST on a socket of its own: the status line and the body of the answer."""
    s = connect(p)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    s.sendall(
        f"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
        + body.encode()
    )
    data = b""
    s.settimeout(10)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status, _, rest = data.partition(b"\r\n")
    return status.decode(), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


# === item 1: simulations are bounded, paged and off the async workers ===


def test_a_simulation_is_bounded_paged_and_does_not_stall_the_server(p, tmp):
    iam = admin(p, "iam")
    policy = json.dumps({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}})
    # Over AWS's list limit: refused, naming the parameter.
    code, status, message = error_code(lambda: iam.simulate_custom_policy(PolicyInputList=[policy], ActionNames=[f"s3:A{i}" for i in range(1001)]))
    # InvalidInput: SimulateCustomPolicy's error for a request it cannot run (botocore's model).
    assert (code, status) == ("InvalidInput", 400) and "ActionNames" in message, (code, message)
    code, _, message = error_code(lambda: iam.simulate_custom_policy(PolicyInputList=[policy], ActionNames=["s3:GetObject"], MaxItems=1001))
    assert code in ("InvalidInput", "ValidationError") and "MaxItems" in message, (code, message)
    # At the limits, a million pairs: one page of MaxItems results, quickly, the rest by Marker,
    # and /healthz answers throughout (a 42 KB request took 8.8 s and 461 MB before).
    actions = [f"s3:GetObject{i}" for i in range(1000)]
    resources = [f"arn:aws:s3:::bucket-{i}/key" for i in range(1000)]
    answers = []
    done = threading.Event()

    def simulate(marker=None):
        kw = {"Marker": marker} if marker else {}
        return iam.simulate_custom_policy(PolicyInputList=[policy], ActionNames=actions, ResourceArns=resources, MaxItems=1000, **kw)

    def run():
        try:
            started = time.time()
            answers.append((simulate(), time.time() - started))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    slowest = 0.0
    while not done.wait(0.05):
        t = time.time()
        assert healthz(p) == 200, "/healthz during the simulation"
        slowest = max(slowest, time.time() - t)
    assert answers, "the simulation failed"
    page, took = answers[0]
    assert took < 10, f"one page took {took:.1f} s"
    assert slowest < 1, f"/healthz took {slowest:.2f} s during the simulation"
    results = page["EvaluationResults"]
    assert len(results) == 1000 and page["IsTruncated"] is True, (len(results), page["IsTruncated"])
    assert {r["EvalDecision"] for r in results} == {"allowed"}, results[0]
    nxt = simulate(page["Marker"])["EvaluationResults"]
    first = {(r["EvalActionName"], r["EvalResourceName"]) for r in results}
    second = {(r["EvalActionName"], r["EvalResourceName"]) for r in nxt}
    assert len(nxt) == 1000 and not first & second, "the second page repeats the first"
    # A Marker podiam never wrote is refused, not trusted.
    code, _, message = error_code(lambda: simulate("result-x"))
    assert code in ("InvalidInput", "ValidationError") and "Marker" in message, (code, message)


# === item 2: wildcard matching is linear and request values reaching the engine are bounded ===


def attack_policy():
    """`*a…(1,900)…b*` on aws:UserAgent: quadratic for a backtracking matcher on a run of `a`
    (the trailing `*`: botocore appends its own name to the User-Agent)."""
    return {
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": "iam:GetUser", "Resource": "*", "Condition": {"StringLike": {"aws:UserAgent": "*" + "a" * 1900 + "b*"}}},
    }


def test_a_wildcard_attack_on_the_user_agent_is_answered_at_once(p, tmp):
    key = user_with_policy(p, "wildcard-attacker", attack_policy())
    # The longest User-Agent the engine sees (4 KiB): 20 denials, each at once (5.3 s at 100 KB before).
    ua = "a" * 4000
    iam = client_as(p, "iam", key, user_agent=ua)
    started = time.time()
    for _ in range(20):
        code, status, _ = error_code(lambda: iam.get_user(UserName="wildcard-attacker"))
        assert (code, status) == ("AccessDenied", 403), code
    took = time.time() - started
    assert took < 5, f"20 requests took {took:.1f} s"
    assert healthz(p) == 200
    # Matching still matches: the same pattern with its `b`.
    iam_b = client_as(p, "iam", key, user_agent=ua + "b")
    assert iam_b.get_user(UserName="wildcard-attacker")["User"]["UserName"] == "wildcard-attacker"
    # A longer one is refused before any policy is read, and says which header and its bound.
    status, body = post_raw(p, "Action=GetCallerIdentity&Version=2011-06-15", [("User-Agent", "a" * 100_000)])
    assert " 400 " in status, status
    assert "User-Agent" in body and "4096" in body, body[:500]


# === item 4: secrets at rest are private and sealed ===


def test_the_data_directory_is_private_and_secrets_are_sealed_at_rest(p, tmp):
    fresh = os.path.join(tmp, "fresh", "data")  # does not exist: podiam creates it
    proc = subprocess.Popen([PODIAM, "up", "--data-dir", fresh, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("podiam is up at "), (first, proc.stderr.read() if proc.poll() is not None else "")
        assert os.stat(fresh).st_mode & 0o777 == 0o700, oct(os.stat(fresh).st_mode)
        loose = []
        for root, dirs, files in os.walk(fresh):
            for n in dirs + files:
                mode = os.lstat(os.path.join(root, n)).st_mode
                if mode & 0o077:
                    loose.append((os.path.join(root, n), oct(mode & 0o777)))
        assert not loose, f"readable by others: {loose}"
        names = set(os.listdir(fresh))
        assert "podiam.db" in names, names
        # The admin's secret key is in aws/credentials (0600) and nowhere in the database's files.
        c = configparser.ConfigParser()
        c.read(os.path.join(fresh, "aws", "credentials"))
        secret = c["podiam"]["aws_secret_access_key"].encode()
        for n in names:
            if n.startswith("podiam.db"):
                with open(os.path.join(fresh, n), "rb") as f:
                    assert secret not in f.read(), f"the admin secret is readable in {n}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    # Once used, a data directory others can read is refused, with the command that fixes it.
    os.chmod(fresh, 0o755)
    r = subprocess.run([PODIAM, "up", "--data-dir", fresh, "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0, r.stdout
    assert f"chmod 700 {fresh}" in r.stderr, r.stderr


# === items 5 and 6: the audit trail cannot be flooded away, unverified claims are marked ===


def audit_events(p, *args):
    r = p.podiam("audit", "--output", "json", *args)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_an_unauthenticated_flood_cannot_push_an_authenticated_decision_off_the_disk(p, tmp):
    role = role_for(p, "audit-marker", p.issuer_host(), sub="system:serviceaccount:weasel:marker")
    token = p.token("weasel", "marker")
    eventually(lambda: assume(p, token, role_arn=role))
    # 3,000 tokens that do not verify, each with a 4 KB User-Agent (the most the server takes):
    # sent as fast as 32 connections go.
    forged = unsigned_token("https://attacker.example") + "x"
    body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + urllib.parse.quote(role, safe="") + "&RoleSessionName=s1&WebIdentityToken=" + forged
    ua = [("User-Agent", "z" * 4000)]
    started = time.time()
    answers = concurrently(32, lambda: [post_raw(p, body, ua) for _ in range(100)])
    took = time.time() - started
    assert all(" 400 " in s and "InvalidIdentityToken" in b for batch in answers for s, b in batch), answers[0][0]
    assert healthz(p) == 200
    time.sleep(1.5)  # audit writes are batched off the request path
    events = audit_events(p)
    marker = [e for e in events if e.get("role", "").endswith("/audit-marker") and e.get("outcome") == "allowed"]
    assert marker, "the authenticated decision is gone from the trail"
    with open(os.path.join(p.data_dir, "audit.log")) as f:
        assert "attacker.example" not in f.read(), "refusals before authentication are in audit.log"
    unauth = os.path.join(p.data_dir, "audit-unauthenticated.log")
    with open(unauth) as f:
        lines = f.read().splitlines()
    recorded = [json.loads(line) for line in lines]
    # Sampled: at most 50 a second were recorded, the rest counted.
    assert len([e for e in recorded if e.get("outcome") != "sampled"]) <= 50 * (int(took) + 3), len(recorded)
    counted = sum(int(e["reason"].split()[0]) for e in recorded if e.get("outcome") == "sampled")
    assert counted + len([e for e in recorded if e.get("outcome") != "sampled"]) >= 3000 - 50, counted
    # Every recorded field is bounded (the 4 KB User-Agent is cut, with a marker).
    assert max(len(line) for line in lines) < 4000 + 2048, max(len(line) for line in lines)


def test_unverified_claims_are_marked_and_escapes_never_reach_the_terminal(p, tmp):
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "kid": "k"}).encode())
    claims = {"iss": "https://evil.example", "sub": "system:serviceaccount:kube-system:cluster-admin\x1b]0;owned\x07\x1b[2J", "aud": "sts.amazonaws.com", "iat": now, "exp": now + 600}
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.c2ln"
    code, _, _ = error_code(lambda: assume(p, forged, role_arn=f"arn:aws:iam::{ACCOUNT}:role/anything"))
    assert code in ("InvalidIdentityToken", "AccessDenied"), code
    time.sleep(1.5)
    text = p.podiam("audit").stdout
    assert "\x1b" not in text and "\x07" not in text, "a control character reached the terminal"
    rows = [line for line in text.splitlines() if "cluster-admin" in line]
    assert rows and all("(unverified)" in line for line in rows), rows


# === item 7: control characters cannot break XML for everyone ===


def test_a_control_character_is_refused_and_every_listing_stays_readable(p, tmp):
    p.aws("iam", "create-role", "--role-name", "ctl-char", "--assume-role-policy-document", trust_policy(p.issuer_host()))
    r = p.aws("iam", "update-role", "--role-name", "ctl-char", "--description", "hello\x01", check=False)
    assert r.returncode != 0 and "ValidationError" in r.stderr and "U+0001" in r.stderr, r.stderr
    iam = admin(p, "iam")
    code, _, message = error_code(lambda: iam.tag_role(RoleName="ctl-char", Tags=[{"Key": "k", "Value": "v\x1b"}]))
    assert code == "ValidationError", (code, message)
    # What XML can carry is kept exactly, and every caller can still list.
    iam.update_role(RoleName="ctl-char", Description="tab\there <&> é")
    assert iam.get_role(RoleName="ctl-char")["Role"]["Description"] == "tab\there <&> é"
    listed = p.aws_json("iam", "list-roles")
    assert any(r["RoleName"] == "ctl-char" for r in listed["Roles"]), listed


# === item 3: retired keys stop verifying ===


def test_a_retired_issuer_key_and_sealing_key_stop_working_when_their_window_ends(p, tmp):
    role = role_for(p, "retire", p.issuer_host(), sub="system:serviceaccount:weasel:retire")
    early, late = (p.token("weasel", "retire") for _ in range(2))
    creds = eventually(lambda: assume(p, early, role_arn=role))["Credentials"]
    p.podiam("issuer", "rotate", "--keep-old-seconds", "5")
    p.podiam("session-keys", "rotate", "--keep-old-seconds", "5")
    rotated = time.time()
    sts = client(p, "sts", creds)
    # Inside the window both old keys still work (the server reloads within a second).
    time.sleep(1.5)
    assert assume(p, early, role_arn=role)["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert sts.get_caller_identity()["Arn"].endswith(":assumed-role/retire/s1")
    time.sleep(max(0, rotated + 5.5 - time.time()))
    # After it: a token of the old key the server never saw, one it verified before, and a
    # session sealed with the old key are all refused, with no restart or reload.
    code, status, message = error_code(lambda: assume(p, late, role_arn=role))
    assert (code, status) == ("InvalidIdentityToken", 400) and "retired" in message, message
    code, _, _ = error_code(lambda: assume(p, early, role_arn=role))
    assert code == "InvalidIdentityToken", code
    code, status, _ = error_code(sts.get_caller_identity)
    assert (code, status) == ("InvalidClientTokenId", 403), (code, status)
    # The new keys work.
    fresh = p.token("weasel", "retire")
    assert assume(p, fresh, role_arn=role)["Credentials"]["AccessKeyId"].startswith("ASIA")


# === item 9: `iss` must equal the provider's URL ===


def test_iss_must_equal_the_registered_provider_url_exactly(p, tmp):
    issuer, jwks, token = stopped_issuer(tmp, "ns", "sa")  # issuer: http://127.0.0.1:PORT, the `iss`
    host = issuer.removeprefix("http://")
    role = role_for(p, "exact-iss", host)
    iam_arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"
    # The provider is registered under another spelling of the same host and path: refused.
    for registered in (f"https://{host}", f"{issuer}/"):
        p.podiam("create", "oidcprovider", "--url", registered, "--jwks-file", jwks)

        def refused_for_its_iss():
            code, status, message = error_code(lambda: assume(p, token, role_arn=role))
            assert (code, status) == ("InvalidIdentityToken", 400), (registered, code, message)
            assert "`iss` claim" in message and issuer in message, message

        eventually(refused_for_its_iss)
        p.aws("iam", "delete-open-id-connect-provider", "--open-id-connect-provider-arn", iam_arn)
    # Registered exactly as the token says: accepted.
    p.podiam("create", "oidcprovider", "--url", issuer, "--jwks-file", jwks)
    out = eventually(lambda: assume(p, token, role_arn=role))
    assert out["Provider"] == issuer, out


# === item 8: a failing issuer is asked once ===


def test_an_issuer_that_answers_500_is_fetched_once_for_40_concurrent_requests(p, tmp):
    issuer = StandInIssuer(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    try:
        p.podiam("create", "oidcprovider", "--url", issuer.url)
        role = role_for(p, "failing-issuer", issuer.url.removeprefix("http://"))
        wait_until_served(p, issuer.url, "failing-issuer")
        issuer.hits = 0
        answers = concurrently(40, lambda: error_code(lambda: assume(p, unsigned_token(issuer.url), role_arn=role)))
        assert all(a[0] == "IDPCommunicationError" for a in answers), answers
        assert "HTTP status 500" in answers[0][2], answers[0]
        assert 1 <= issuer.hits <= 2, f"40 requests made {issuer.hits} fetches"
    finally:
        issuer.close()


def wait_until_served(p, url, role):
    """Until the server (not only the store) has the provider and the role: IAM answers from the
    server's memory."""
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{url.removeprefix('http://')}"
    eventually(lambda: p.aws("iam", "get-open-id-connect-provider", "--open-id-connect-provider-arn", arn))
    eventually(lambda: p.aws("iam", "get-role", "--role-name", role))
    # `podiam create oidcprovider` itself tried the issuer once (it warns when it cannot).


def test_concurrent_requests_for_a_black_holed_issuer_fail_within_the_fetch_timeout(p, tmp):
    issuer = StandInIssuer(None)
    try:
        p.podiam("create", "oidcprovider", "--url", issuer.url)
        role = role_for(p, "black-hole", issuer.url.removeprefix("http://"))
        wait_until_served(p, issuer.url, "black-hole")
        issuer.hits = 0
        started = time.time()
        answers = concurrently(10, lambda: error_code(lambda: assume(p, unsigned_token(issuer.url), role_arn=role)))
        took = time.time() - started
        assert all(a[0] == "IDPCommunicationError" for a in answers), answers
        # One fetch of at most 5 s; queued one after another they took 5, 10, … 50 s.
        assert took < 8, f"10 requests took {took:.1f} s"
        assert issuer.hits == 1, issuer.hits
    finally:
        issuer.close()


# === item 10: slow and stalled clients, and the connection bound ===


def test_slowloris_connections_are_closed_and_healthz_keeps_answering(p, tmp):
    socks = [connect(p) for _ in range(50)]
    head = b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    started = time.time()
    i = 0
    # One byte from each, every 100 ms, for longer than the header timeout.
    while time.time() - started < HEADER_TIMEOUT + 1:
        for s in socks:
            try:
                s.send(head[i : i + 1])
            except OSError:
                pass
        i += 1
        assert healthz(p) == 200, "/healthz during the attack"
        time.sleep(0.1)
    still_open = sum(1 for s in socks if not closed_within(s, 2))
    assert still_open == 0, f"{still_open} of 50 slowloris connections still open"
    for s in socks:
        s.close()
    assert healthz(p) == 200


def test_a_stalled_body_is_cut(p, tmp):
    s = connect(p)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nAction=GetCall")
    assert closed_within(s, BODY_TIMEOUT + 3), "the connection is still open with its body stalled"
    s.close()


def test_connections_over_the_bound_are_closed_and_slots_come_back(p, tmp):
    held = [connect(p) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.3)
    extra = connect(p)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    extra.settimeout(HEADER_TIMEOUT - 0.5)
    try:
        answer = extra.recv(65536)
    except socket.timeout:
        answer = None
    except OSError:
        answer = b""
    assert answer == b"", f"a connection over the bound was served: {answer!r}"
    for s in held:
        s.close()
    extra.close()
    deadline = time.time() + 5
    while healthz(p) != 200:
        assert time.time() < deadline, "slots did not come back"
        time.sleep(0.1)


def main():
    run_suite("hostile", "podiam-hostile-", globals(), server_args=SERVER_ARGS)


if __name__ == "__main__":
    main()
