"""Nobody can give themselves more than they were given: each attack of the red team's report
(issue 11), tried with boto3 as a least-privileged role session against a running `podiam up`.

Run by tests/interop/authz.sh; reuses the harness of irsa_test.py and eks_api_test.py.
"""

import json
import os
import sys
import uuid

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions

sys.path.insert(0, os.path.dirname(__file__))
from eks_api_test import admin_client, pod_token  # noqa: E402
from irsa_test import ACCOUNT, run_suite  # noqa: E402

ROOT_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
            }
        ],
    }
)
POD_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
)


def allow(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def role_session(p, name, policy, trust=ROOT_TRUST, **assume):
    """A role `name` with one inline policy, assumed by the administrator: a least-privileged caller."""
    iam = admin_client(p, "iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
    if policy:
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy)
    sts = admin_client(p, "sts")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName="s1", **assume)["Credentials"]
    return creds


def client(p, service, creds):
    return boto3.client(
        service,
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def code_of(e):
    return e.response["Error"]["Code"]


def refused(fn, code):
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        assert code_of(e) == code, f"expected {code}, got {code_of(e)}: {e}"
        return str(e)
    raise AssertionError(f"expected {code}, but the call succeeded")


def test_associations_need_iam_pass_role(p, tmp):
    """1. `eks:*` alone cannot point a ServiceAccount at an administrator role."""
    p.podiam("cluster", "create", "--name", "c1", "--builtin")
    iam = admin_client(p, "iam")
    iam.create_role(RoleName="admin-pod", AssumeRolePolicyDocument=POD_TRUST)
    iam.attach_role_policy(RoleName="admin-pod", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    admin_role = f"arn:aws:iam::{ACCOUNT}:role/admin-pod"
    creds = role_session(p, "eks-operator", allow({"Effect": "Allow", "Action": "eks:*", "Resource": "*"}))
    eks = client(p, "eks", creds)
    # The cluster the CLI registered is there for the very next call (no retry: read-your-writes).
    admin_client(p, "eks").list_pod_identity_associations(clusterName="c1")
    msg = refused(
        lambda: eks.create_pod_identity_association(clusterName="c1", namespace="mine", serviceAccount="sa", roleArn=admin_role),
        "AccessDeniedException",
    )
    assert "iam:PassRole" in msg, msg
    # PassRole for another service does not do.
    iam.put_role_policy(
        RoleName="eks-operator", PolicyName="pass-ec2",
        PolicyDocument=allow({"Effect": "Allow", "Action": "iam:PassRole", "Resource": admin_role,
                              "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}),
    )
    refused(
        lambda: eks.create_pod_identity_association(clusterName="c1", namespace="mine", serviceAccount="sa", roleArn=admin_role),
        "AccessDeniedException",
    )
    # PassRole to pods.eks.amazonaws.com for this cluster: allowed.
    iam.put_role_policy(
        RoleName="eks-operator", PolicyName="pass-pods",
        PolicyDocument=allow({"Effect": "Allow", "Action": "iam:PassRole", "Resource": admin_role,
                              "Condition": {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com",
                                                             "iam:AssociatedResourceArn": f"arn:aws:eks:us-east-1:{ACCOUNT}:cluster/c1"}}}),
    )
    a = eks.create_pod_identity_association(clusterName="c1", namespace="mine", serviceAccount="sa", roleArn=admin_role)
    assert a["association"]["roleArn"] == admin_role
    # Updating to a role it may not pass is refused too.
    iam.create_role(RoleName="other-pod", AssumeRolePolicyDocument=POD_TRUST)
    refused(
        lambda: eks.update_pod_identity_association(
            clusterName="c1", associationId=a["association"]["associationId"], roleArn=f"arn:aws:iam::{ACCOUNT}:role/other-pod"),
        "AccessDeniedException",
    )


def test_sessions_are_bound_to_the_role_id(p, tmp):
    """4. A session of a deleted role gains nothing from a new role of the same name."""
    creds = role_session(p, "reborn", allow({"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}))
    old = client(p, "iam", creds)
    old.list_roles()
    iam = admin_client(p, "iam")
    iam.delete_role_policy(RoleName="reborn", PolicyName="p")
    iam.delete_role(RoleName="reborn")
    iam.create_role(RoleName="reborn", AssumeRolePolicyDocument=ROOT_TRUST)
    iam.attach_role_policy(RoleName="reborn", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    refused(lambda: old.list_roles(), "InvalidClientTokenId")
    refused(lambda: old.create_user(UserName="mallory"), "InvalidClientTokenId")
    refused(lambda: client(p, "sts", creds).get_caller_identity(), "InvalidClientTokenId")


def test_source_identity_is_kept_through_role_chaining(p, tmp):
    """5. Once set, SourceIdentity follows every chained session and cannot be changed."""
    b_arn = f"arn:aws:iam::{ACCOUNT}:role/chain-b"
    a_creds = role_session(
        p, "chain-a", allow({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": b_arn}), SourceIdentity="mallory"
    )
    iam = admin_client(p, "iam")
    b_trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/chain-a"},
        "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"]}]})
    iam.create_role(RoleName="chain-b", AssumeRolePolicyDocument=b_trust)
    iam.put_role_policy(RoleName="chain-b", PolicyName="p", PolicyDocument=allow(
        {"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"},
        {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"aws:SourceIdentity": "mallory"}}},
    ))
    a_sts = client(p, "sts", a_creds)
    out = a_sts.assume_role(RoleArn=b_arn, RoleSessionName="b1")
    assert out.get("SourceIdentity") == "mallory", out
    refused(lambda: client(p, "iam", out["Credentials"]).list_roles(), "AccessDenied")
    refused(lambda: a_sts.assume_role(RoleArn=b_arn, RoleSessionName="b2", SourceIdentity="alice"), "AccessDenied")


def test_a_denial_does_not_reveal_the_external_id(p, tmp):
    """6. The explanation names the failed key, never the expected secret."""
    secret = "s3cr3t-" + uuid.uuid4().hex
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": secret}}}]})
    admin_client(p, "iam").create_role(RoleName="deputy", AssumeRolePolicyDocument=trust)
    sts = admin_client(p, "sts")
    msg = refused(lambda: sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/deputy", RoleSessionName="s1", ExternalId="guess-1234"), "AccessDenied")
    assert secret not in msg, msg
    assert "sts:ExternalId" in msg, msg
    log = open(os.path.join(p.data_dir, "audit.log")).read()
    assert secret not in log, "the audit log names the expected ExternalId"
    sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/deputy", RoleSessionName="s1", ExternalId=secret)


def test_reads_authorise_before_they_look_up(p, tmp):
    """8. A caller not allowed iam:GetRole cannot learn which roles exist."""
    creds = role_session(p, "prober", allow({"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}))
    iam = client(p, "iam", creds)
    admin = admin_client(p, "iam")
    admin.create_role(RoleName="exists", AssumeRolePolicyDocument=ROOT_TRUST)
    for name in ("exists", "does-not-exist"):
        refused(lambda: iam.get_role(RoleName=name), "AccessDenied")
        refused(lambda: iam.list_role_policies(RoleName=name), "AccessDenied")
    refused(lambda: iam.get_policy(PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/nope"), "AccessDenied")
    refused(lambda: iam.get_open_id_connect_provider(OpenIDConnectProviderArn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/nope"), "AccessDenied")
    refused(lambda: client(p, "eks", creds).describe_pod_identity_association(clusterName="nope", associationId="a-x"), "AccessDeniedException")
    # The administrator may read, and learns that it does not exist.
    refused(lambda: admin.get_role(RoleName="does-not-exist"), "NoSuchEntity")


def test_eks_auth_records_where_the_agent_runs(p, tmp):
    """AWS's newer AssumeRoleForPodIdentity fields are accepted and land in the audit event."""
    p.podiam("cluster", "create", "--name", "nodes", "--builtin")
    admin_client(p, "iam").create_role(RoleName="node-test", AssumeRolePolicyDocument=POD_TRUST)
    admin_client(p, "eks").create_pod_identity_association(
        clusterName="nodes", namespace="ns", serviceAccount="sa", roleArn=f"arn:aws:iam::{ACCOUNT}:role/node-test")
    token = pod_token(p, "ns", "sa", "web-0")
    body = json.dumps({"token": token, "eksNodeName": "node-7.example", "instanceId": "i-0123456789abcdef0", "zone": "eu-west-1b"})
    env = p.env()
    keys = dict(
        (k.strip(), v.strip()) for k, v in (l.split("=", 1) for l in open(env["AWS_SHARED_CREDENTIALS_FILE"]) if "=" in l)
    )
    url = f"{p.endpoint}/clusters/nodes/assume-role-for-pod-identity"
    req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"]), "eks-auth", "us-east-1"
    ).add_auth(req)
    import urllib.request
    r = urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), headers=dict(req.headers), method="POST"), timeout=10)
    assert r.status == 200
    import time
    deadline = time.time() + 5
    while True:
        events = [json.loads(l) for l in open(os.path.join(p.data_dir, "audit.log")) if "AssumeRoleForPodIdentity" in l]
        hit = [e for e in events if e.get("node") == "node-7.example"]
        if hit or time.time() > deadline:
            break
        time.sleep(0.05)
    assert hit, events
    assert hit[0]["instance_id"] == "i-0123456789abcdef0" and hit[0]["zone"] == "eu-west-1b", hit[0]


def test_iam_calls_carry_their_request_condition_keys(p, tmp):
    """2. Tag and attachment guardrails see aws:RequestTag/aws:TagKeys and iam:PolicyARN."""
    admin = admin_client(p, "iam")
    admin.create_role(RoleName="guarded", AssumeRolePolicyDocument=ROOT_TRUST)
    creds = role_session(p, "tagger", allow(
        {"Effect": "Allow", "Action": ["iam:TagRole", "iam:AttachRolePolicy"], "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:TagRole", "Resource": "*", "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["team"]}}},
        {"Effect": "Deny", "Action": "iam:AttachRolePolicy", "Resource": "*",
         "Condition": {"ArnEquals": {"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}}},
    ))
    iam = client(p, "iam", creds)
    iam.tag_role(RoleName="guarded", Tags=[{"Key": "project", "Value": "x"}])
    refused(lambda: iam.tag_role(RoleName="guarded", Tags=[{"Key": "team", "Value": "payments"}]), "AccessDenied")
    refused(lambda: iam.attach_role_policy(RoleName="guarded", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"), "AccessDenied")
    iam.attach_role_policy(RoleName="guarded", PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    # Delegated admin: CreateRole only with a required permissions boundary.
    boundary = f"arn:aws:iam::{ACCOUNT}:policy/dev-boundary"
    admin.create_policy(PolicyName="dev-boundary", PolicyDocument=allow({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))
    creds = role_session(p, "delegated", allow({"Effect": "Allow", "Action": "iam:CreateRole", "Resource": "*",
                                                 "Condition": {"StringEquals": {"iam:PermissionsBoundary": boundary}}}))
    iam = client(p, "iam", creds)
    refused(lambda: iam.create_role(RoleName="free", AssumeRolePolicyDocument=ROOT_TRUST), "AccessDenied")
    iam.create_role(RoleName="bounded", AssumeRolePolicyDocument=ROOT_TRUST, PermissionsBoundary=boundary)


def main():
    run_suite("authz", "podiam-authz-", globals())


if __name__ == "__main__":
    main()
