"""The CLI as people paste it: `podiam` commands followed at once by real AWS clients (boto3, the
`aws` CLI) against a running `podiam up`, with no sleep and no retry in between.

Run by tests/interop/cli.sh. A write the CLI reported as done must be visible to the very next
request: the CLI writes the store and then waits for the server to reload (`DIR/podiam.sock`).
"""

import json
import os
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


def main():
    run_suite("cli", "podiam-cli-", globals())


if __name__ == "__main__":
    main()
