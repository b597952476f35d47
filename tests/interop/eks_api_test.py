"""EKS Pod Identity's server side with real clients: `aws eks …-pod-identity-association(s)` and
boto3's `eks-auth` client against a running `podiam up`, plus one role serving many namespaces
through ABAC on `${aws:PrincipalTag/kubernetes-namespace}`.

Run by tests/interop/eks-api.sh; reuses the Podiam harness of irsa_test.py.
"""

import json
import os
import sys

import boto3
import botocore.exceptions

sys.path.insert(0, os.path.dirname(__file__))
from irsa_test import ACCOUNT, error_code, run_suite, write  # noqa: E402

CLUSTER = "prod"
ROLE = "team-reader"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"

# One role for every namespace: it may read only roles tagged with the caller's own namespace.
ABAC_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OwnNamespaceRoles",
                "Effect": "Allow",
                "Action": "iam:GetRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:ResourceTag/kubernetes-namespace": "${aws:PrincipalTag/kubernetes-namespace}"}},
            }
        ],
    }
)


def admin_client(p, service):
    env = p.env()
    creds = {}
    for line in open(env["AWS_SHARED_CREDENTIALS_FILE"]):
        if "=" in line:
            k, v = (x.strip() for x in line.split("=", 1))
            creds[k] = v
    return boto3.client(
        service,
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["aws_access_key_id"],
        aws_secret_access_key=creds["aws_secret_access_key"],
    )


def pod_token(p, namespace, sa, pod):
    return p.podiam(
        "token", "create", "--namespace", namespace, "--service-account", sa,
        "--audience", "pods.eks.amazonaws.com", "--pod-name", pod, "--pod-uid", f"uid-{pod}",
    ).stdout


def session(creds, p, service):
    return boto3.client(
        service,
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["accessKeyId"],
        aws_secret_access_key=creds["secretAccessKey"],
        aws_session_token=creds["sessionToken"],
    )


def test_associations_with_the_aws_cli(p, tmp):
    p.podiam("cluster", "create", "--name", CLUSTER, "--builtin")
    trust = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}'
    p.aws("iam", "create-role", "--role-name", ROLE, "--assume-role-policy-document", trust)
    p.aws("iam", "put-role-policy", "--role-name", ROLE, "--policy-name", "abac", "--policy-document", "file://" + write(f"{tmp}/abac.json", ABAC_POLICY))
    for ns in ("a", "b"):
        p.aws("iam", "create-role", "--role-name", f"{ns}-role", "--assume-role-policy-document", trust, "--tags", f"Key=kubernetes-namespace,Value={ns}")
    # The CLI wrote the store directly; the server has reloaded before the CLI returned.
    p.aws("eks", "list-pod-identity-associations", "--cluster-name", CLUSTER)
    created = {}
    for ns in ("a", "b"):
        out = p.aws_json("eks", "create-pod-identity-association", "--cluster-name", CLUSTER, "--namespace", ns, "--service-account", "app", "--role-arn", ROLE_ARN)
        a = out["association"]
        assert a["associationId"].startswith("a-") and a["roleArn"] == ROLE_ARN, a
        assert a["associationArn"] == f"arn:aws:eks:us-east-1:{ACCOUNT}:podidentityassociation/{CLUSTER}/{a['associationId']}"
        created[ns] = a["associationId"]
    listed = p.aws_json("eks", "list-pod-identity-associations", "--cluster-name", CLUSTER)["associations"]
    assert sorted((x["namespace"], x["serviceAccount"]) for x in listed) == [("a", "app"), ("b", "app")], listed
    only_b = p.aws_json("eks", "list-pod-identity-associations", "--cluster-name", CLUSTER, "--namespace", "b")["associations"]
    assert [x["associationId"] for x in only_b] == [created["b"]]
    got = p.aws_json("eks", "describe-pod-identity-association", "--cluster-name", CLUSTER, "--association-id", created["a"])
    assert got["association"]["namespace"] == "a"
    r = p.aws("eks", "create-pod-identity-association", "--cluster-name", CLUSTER, "--namespace", "a", "--service-account", "app", "--role-arn", ROLE_ARN, check=False)
    assert r.returncode != 0 and "ResourceInUseException" in r.stderr, r.stderr
    r = p.aws("eks", "describe-pod-identity-association", "--cluster-name", CLUSTER, "--association-id", "a-doesnotexist00000", check=False)
    assert "ResourceNotFoundException" in r.stderr, r.stderr
    r = p.aws("eks", "list-pod-identity-associations", "--cluster-name", "nope", check=False)
    assert "ResourceNotFoundException" in r.stderr, r.stderr


def test_abac_one_role_many_namespaces(p, tmp):
    auth = admin_client(p, "eks-auth")
    for ns, own, other in (("a", "a-role", "b-role"), ("b", "b-role", "a-role")):
        out = auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=pod_token(p, ns, "app", f"{ns}-pod"))
        assert out["subject"] == {"namespace": ns, "serviceAccount": "app"}, out["subject"]
        assert out["audience"] == "pods.eks.amazonaws.com"
        assert out["assumedRoleUser"]["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/eks-{CLUSTER}-{ns}-pod-")
        assert out["assumedRoleUser"]["assumeRoleId"].startswith("AROA")
        iam = session(out["credentials"], p, "iam")
        assert iam.get_role(RoleName=own)["Role"]["RoleName"] == own
        code, status, msg = error_code(lambda: iam.get_role(RoleName=other))
        assert (code, status) == ("AccessDenied", 403), (code, status, msg)
        assert "kubernetes-namespace" in msg, msg


def test_pod_identity_refusals(p, tmp):
    auth = admin_client(p, "eks-auth")
    # No association for this ServiceAccount.
    code, status, _ = error_code(lambda: auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=pod_token(p, "a", "other", "x")))
    assert (code, status) == ("ResourceNotFoundException", 404), (code, status)
    # An IRSA token (audience sts.amazonaws.com) is not a Pod Identity token.
    irsa = p.podiam("token", "create", "--namespace", "a", "--service-account", "app", "--pod-name", "p", "--pod-uid", "u").stdout
    code, status, msg = error_code(lambda: auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=irsa))
    assert (code, status) == ("InvalidTokenException", 400), (code, status, msg)
    # A token not bound to a pod.
    unbound = p.podiam("token", "create", "--namespace", "a", "--service-account", "app", "--audience", "pods.eks.amazonaws.com").stdout
    code, status, _ = error_code(lambda: auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=unbound))
    assert (code, status) == ("InvalidTokenException", 400), (code, status)
    code, status, _ = error_code(lambda: auth.assume_role_for_pod_identity(clusterName="nope", token=pod_token(p, "a", "app", "x")))
    assert (code, status) == ("ResourceNotFoundException", 404), (code, status)
    # A role that does not trust pods.eks.amazonaws.com.
    p.aws("iam", "create-role", "--role-name", "irsa-only", "--assume-role-policy-document",
          '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::000000000000:oidc-provider/x"},"Action":"sts:AssumeRoleWithWebIdentity"}]}')
    p.aws("eks", "create-pod-identity-association", "--cluster-name", CLUSTER, "--namespace", "c", "--service-account", "app", "--role-arn", f"arn:aws:iam::{ACCOUNT}:role/irsa-only")
    code, status, msg = error_code(lambda: auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=pod_token(p, "c", "app", "c-pod")))
    assert (code, status) == ("AccessDeniedException", 400), (code, status, msg)
    assert "pods.eks.amazonaws.com" in msg, msg


def main():
    run_suite("eks-api", "podiam-eks-", globals())


if __name__ == "__main__":
    main()
