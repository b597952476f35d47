"""The CLI as people paste it: `podiam` commands followed at once by real AWS clients (boto3, the
`aws` CLI) against a running `podiam up`, with no sleep and no retry in between.

Run by tests/interop/cli.sh. A write the CLI reported as done must be visible to the very next
request: the CLI writes the store and then waits for the server to reload (`DIR/podiam.sock`).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eks_api_test import admin_client  # noqa: E402
from irsa_test import ACCOUNT, assume, run_suite  # noqa: E402

RUNS = 50


def test_create_iamserviceaccount_then_assume_back_to_back(p, tmp):
    failures = []
    for i in range(RUNS):
        name = f"app-{i}"
        p.podiam("create", "iamserviceaccount", "--name", name, "--namespace", "rw")
        token = p.token("rw", name)
        try:
            out = assume(p, token, role_arn=f"arn:aws:iam::{ACCOUNT}:role/rw-{name}")
            assert out["SubjectFromWebIdentityToken"] == f"system:serviceaccount:rw:{name}", out
        except Exception as e:  # noqa: BLE001 - every failure counts, the first does not stop the run
            failures.append(f"run {i}: {e}")
    assert not failures, f"{len(failures)} of {RUNS} create→assume runs failed:\n" + "\n".join(failures[:5])


def test_create_podidentityassociation_then_list_back_to_back(p, tmp):
    eks = admin_client(p, "eks")
    p.podiam("cluster", "create", "--name", "rw", "--builtin")
    # The cluster the CLI just registered is there for the very next call.
    assert eks.list_pod_identity_associations(clusterName="rw")["associations"] == []
    failures = []
    for i in range(RUNS):
        p.podiam(
            "create", "podidentityassociation", "--cluster", "rw", "--namespace", f"ns-{i}",
            "--service-account", "api", "--role-name", "rw-pods",
        )
        # boto3 first (it answers within milliseconds of the CLI's exit), then the aws CLI.
        found = eks.list_pod_identity_associations(clusterName="rw", namespace=f"ns-{i}")["associations"]
        if [(a["namespace"], a["serviceAccount"]) for a in found] != [(f"ns-{i}", "api")]:
            failures.append(f"run {i}: boto3 listed {found}")
            continue
        r = p.aws("eks", "list-pod-identity-associations", "--cluster-name", "rw", "--namespace", f"ns-{i}", check=False)
        if r.returncode != 0:
            failures.append(f"run {i}: {r.stderr.strip()}")
            continue
        found = json.loads(r.stdout)["associations"]
        if [(a["namespace"], a["serviceAccount"]) for a in found] != [(f"ns-{i}", "api")]:
            failures.append(f"run {i}: listed {found}")
    assert not failures, f"{len(failures)} of {RUNS} create→list runs failed:\n" + "\n".join(failures[:5])


def test_messages_name_the_fix(p, tmp):
    """A policy file without file://, a policy name for an ARN, a token file ending in a newline."""
    doc = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'
    with open(os.path.join(tmp, "policy.json"), "w") as f:
        f.write(doc)
    r = subprocess.run(["aws", "iam", "create-policy", "--policy-name", "weasel-pod", "--policy-document", "policy.json"],
                       capture_output=True, text=True, env=p.env(), cwd=tmp, timeout=60)
    assert r.returncode != 0 and "MalformedPolicyDocument" in r.stderr and "file://policy.json" in r.stderr, r.stderr
    r = subprocess.run(["aws", "iam", "create-policy", "--policy-name", "weasel-pod", "--policy-document", "file://policy.json"],
                       capture_output=True, text=True, env=p.env(), cwd=tmp, timeout=60)
    assert r.returncode == 0, r.stderr
    r = p.podiam("create", "iamserviceaccount", "--name", "hint", "--namespace", "msg", "--attach-policy-arn", "weasel-pod", check=False)
    assert r.returncode == 1, r.stderr
    assert f"give its ARN, arn:aws:iam::{ACCOUNT}:policy/weasel-pod" in r.stderr, r.stderr
    r = p.podiam("create", "iamserviceaccount", "--name", "hint", "--namespace", "msg", "--attach-policy-arn", "AmazonS3ReadOnlyAccess", check=False)
    assert "give its ARN, arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess" in r.stderr, r.stderr
    # An operation podiam does not serve says so, by its IAM name, and where the served ones are.
    r = subprocess.run(["aws", "iam", "list-saml-providers"], capture_output=True, text=True, env=p.env(), cwd=tmp, timeout=60)
    assert r.returncode != 0 and "InvalidAction" in r.stderr, r.stderr
    assert "podiam does not implement iam:ListSAMLProviders" in r.stderr and "README.md" in r.stderr, r.stderr
    assert "for version this service supports" not in r.stderr, r.stderr
    # `echo "$token" > file` leaves a newline, which JWTs never hold.
    p.podiam("create", "iamserviceaccount", "--name", "hint", "--namespace", "msg")
    token = p.token("msg", "hint") + "\n"
    out = assume(p, token, role_arn=f"arn:aws:iam::{ACCOUNT}:role/msg-hint")
    assert out["SubjectFromWebIdentityToken"] == "system:serviceaccount:msg:hint"


def main():
    run_suite("cli", "podiam-cli-", globals())


if __name__ == "__main__":
    main()
