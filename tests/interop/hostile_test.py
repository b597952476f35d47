"""Hostile input and faults (issue 12), each attack tried against a running `podiam up` with real
clients (boto3, raw sockets) and bounded to a few seconds.

Run by tests/interop/hostile.sh. One function per attack (`test_*`), sharing the harness below and
irsa_test.py's; the server runs with short connection timeouts so each attack ends quickly.
"""

import base64
import concurrent.futures
import json
import os
import socket
import sys
import threading
import time
import urllib.request

import botocore.exceptions

sys.path.insert(0, os.path.dirname(__file__))
from authz_test import client  # noqa: E402
from irsa_test import ACCOUNT, assume, error_code, run_suite, stopped_issuer, trust_policy  # noqa: E402

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
