"""IAM users and groups with real clients against a running `podiam up`: docs/operating.md's
least-privilege recipes (the agent's role and key, the webhook's key) run as written, with the `aws` CLI and a
stand-in `kubectl` that keeps the Secrets they create; those keys then do exactly what the docs
say with boto3 and are refused everything else with AWS's error; group policies grant to their
members (and a Deny in one wins); and every user and group operation round-trips through the
`aws` CLI.

Run by tests/interop/users.sh; reuses the harness of irsa_test.py, eks_api_test.py and
authz_test.py.
"""

import configparser
import json
import os
import stat
import subprocess
import sys

import boto3
import botocore
import botocore.config

sys.path.insert(0, os.path.dirname(__file__))
from authz_test import POD_TRUST, allow, refused  # noqa: E402
from eks_api_test import admin_client, pod_token  # noqa: E402
from irsa_test import ACCOUNT, run_suite, write  # noqa: E402

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operating.md")
CLUSTER = "prod"  # the cluster name docs/operating.md's webhook recipe uses

# A stand-in for kubectl: records the Secrets the recipes create (name → data), accepts the rest.
KUBECTL = r'''#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
record = os.environ["KUBECTL_RECORD"]
with open(os.path.join(record, "calls.log"), "a") as log:
    log.write(" ".join(args) + "\n")
if "secret" in args and "create" in args:
    name = args[args.index("generic") + 1]
    data = {}
    for a in args:
        for flag in ("--from-literal=", "--from-file="):
            if a.startswith(flag):
                key, _, value = a[len(flag):].partition("=")
                data[key] = open(value).read() if flag == "--from-file=" else value
    with open(os.path.join(record, name + ".json"), "w") as f:
        json.dump(data, f)
'''


def recipe(heading, index=0):
    """The `index`th ```sh block after `heading` in docs/operating.md, as written."""
    doc = open(DOC).read()
    at = doc.index(heading)
    for _ in range(index + 1):
        at = doc.index("```sh\n", at) + len("```sh\n")
    return doc[at : doc.index("```", at)]


def run_recipe(p, tmp, script):
    """Runs a recipe with bash (-e, -o pipefail) in the `aws` CLI's environment for this server,
    with the stand-in kubectl first on PATH. Returns the Secrets it created."""
    bin_dir = os.path.join(tmp, "bin")
    record = os.path.join(tmp, "kubectl")
    os.makedirs(bin_dir, exist_ok=True)
    os.makedirs(record, exist_ok=True)
    kubectl = write(os.path.join(bin_dir, "kubectl"), KUBECTL)
    os.chmod(kubectl, os.stat(kubectl).st_mode | stat.S_IEXEC)
    env = {**p.env(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_RECORD": record}
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, f"the recipe failed ({r.returncode}):\n{script}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    secrets = {}
    for name in os.listdir(record):
        if name.endswith(".json"):
            secrets[name.removesuffix(".json")] = json.load(open(os.path.join(record, name)))
    return secrets, open(os.path.join(record, "calls.log")).read()


def key_client(p, service, key_id, secret):
    return boto3.client(
        service,
        endpoint_url=p.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def user_key(p, name):
    """A new user with one access key (through the `aws` CLI): its key ID and secret."""
    p.aws("iam", "create-user", "--user-name", name)
    k = p.aws_json("iam", "create-access-key", "--user-name", name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def pod_identity_setup(p, namespace, role):
    """A role for pods and an association for `namespace/app` in cluster `prod`."""
    admin_client(p, "iam").create_role(RoleName=role, AssumeRolePolicyDocument=POD_TRUST)
    admin_client(p, "eks").create_pod_identity_association(
        clusterName=CLUSTER, namespace=namespace, serviceAccount="app", roleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}")


# === the docs' recipes ===


def test_the_agents_key_recipe_makes_a_key_for_eks_auth_only(p, tmp):
    p.podiam("cluster", "create", "--name", CLUSTER, "--builtin")
    pod_identity_setup(p, "shop", "cart")
    script = recipe("### The agent's role", 2)
    assert "aws iam put-user-policy --user-name podiam-agent" in script, script
    secrets, calls = run_recipe(p, tmp, script)
    assert "-n podiam create secret generic podiam-agent-key" in calls, calls
    key = secrets["podiam-agent-key"]
    agent = (key["aws_access_key_id"], key["aws_secret_access_key"])
    assert agent[0].startswith("AKIA"), key

    # The agent's one call works: a pod's token becomes the association role's credentials.
    auth = key_client(p, "eks-auth", *agent)
    token = pod_token(p, "shop", "app", "cart-0")
    out = auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=token)
    assert out["assumedRoleUser"]["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/cart/eks-{CLUSTER}-cart-0-"), out
    # Everything else is refused, with each service's code.
    iam = key_client(p, "iam", *agent)
    refused(lambda: iam.list_users(), "AccessDenied")
    refused(lambda: iam.get_user(), "AccessDenied")
    refused(lambda: iam.list_roles(), "AccessDenied")
    refused(lambda: iam.create_access_key(UserName="podiam-agent"), "AccessDenied")
    refused(lambda: iam.put_user_policy(UserName="podiam-agent", PolicyName="more", PolicyDocument=allow({"Effect": "Allow", "Action": "*", "Resource": "*"})), "AccessDenied")
    refused(lambda: key_client(p, "sts", *agent).assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/cart", RoleSessionName="probe"), "AccessDenied")
    eks = key_client(p, "eks", *agent)
    refused(lambda: eks.list_pod_identity_associations(clusterName=CLUSTER), "AccessDeniedException")
    refused(lambda: eks.create_pod_identity_association(clusterName=CLUSTER, namespace="x", serviceAccount="y", roleArn=f"arn:aws:iam::{ACCOUNT}:role/cart"), "AccessDeniedException")

    # Without its policy, the same key is refused the call, as AWS refuses it.
    p.aws("iam", "delete-user-policy", "--user-name", "podiam-agent", "--policy-name", "eks-auth")
    msg = refused(lambda: auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=token), "AccessDeniedException")
    assert "eks-auth:AssumeRoleForPodIdentity" in msg, msg


AGENT_ROLE = f"arn:aws:iam::{ACCOUNT}:role/podiam-agent"


def agent_token(p, namespace="podiam", sa="podiam-agent"):
    """The agent's projected token, as the DaemonSet mounts it (audience sts.amazonaws.com)."""
    return p.podiam(
        "token", "create", "--namespace", namespace, "--service-account", sa,
        "--audience", "sts.amazonaws.com", "--pod-name", "podiam-agent-x1", "--pod-uid", "uid-agent",
    ).stdout.strip()


def agent_session(p, token=None):
    """What the agent's SDK does with AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE and
    AWS_ROLE_SESSION_NAME (the node): an unsigned AssumeRoleWithWebIdentity."""
    sts = boto3.client("sts", endpoint_url=p.endpoint, region_name="us-east-1",
                       config=botocore.config.Config(signature_version=botocore.UNSIGNED))
    out = sts.assume_role_with_web_identity(RoleArn=AGENT_ROLE, RoleSessionName="node-1",
                                            WebIdentityToken=token or agent_token(p))
    c = out["Credentials"]
    return (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])


def session_client(p, service, creds):
    key_id, secret, token = creds
    return boto3.client(service, endpoint_url=p.endpoint, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token)


def test_the_agents_role_recipe_makes_a_role_for_eks_auth_only(p, tmp):
    script = recipe("### The agent's role", 0)
    assert "aws iam create-role --role-name podiam-agent" in script, script
    # ACCOUNT_ID and ISSUER_HOST are the server's and its issuer's (as the doc says).
    script = script.replace("ACCOUNT_ID", ACCOUNT).replace("ISSUER_HOST", p.issuer_host())
    _, calls = run_recipe(p, tmp, script)
    assert "-n podiam rollout restart ds/podiam-agent" in calls, calls

    agent = agent_session(p)
    auth = session_client(p, "eks-auth", agent)
    out = auth.assume_role_for_pod_identity(clusterName=CLUSTER, token=pod_token(p, "shop", "app", "cart-2"))
    assert out["assumedRoleUser"]["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/cart/"), out
    refused(lambda: session_client(p, "iam", agent).list_roles(), "AccessDenied")
    refused(lambda: session_client(p, "eks", agent).list_pod_identity_associations(clusterName=CLUSTER), "AccessDeniedException")
    # Only the agents' ServiceAccount can become the agent role.
    refused(lambda: agent_session(p, agent_token(p, "shop", "app")), "AccessDenied")


def test_the_agents_imds_addition_lets_it_assume_the_node_role(p, tmp):
    script = recipe("### The agent's role", 1)
    assert "NODE_ROLE_ARN" in script and "--role-name podiam-agent" in script, script
    node_role = f"arn:aws:iam::{ACCOUNT}:role/node"
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]})
    admin_client(p, "iam").create_role(RoleName="node", AssumeRolePolicyDocument=trust)
    agent = session_client(p, "sts", agent_session(p))
    refused(lambda: agent.assume_role(RoleArn=node_role, RoleSessionName="node-1"), "AccessDenied")
    run_recipe(p, tmp, script.replace("NODE_ROLE_ARN", node_role))
    out = agent.assume_role(RoleArn=node_role, RoleSessionName="node-1")
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/node/node-1", out


def agent_key(p):
    """The agent user's key, as the first recipe left it in the stand-in's Secret."""
    data = json.load(open(os.path.join(p.data_dir, "kubectl", "podiam-agent-key.json")))
    return data["aws_access_key_id"], data["aws_secret_access_key"]


def test_the_webhooks_key_recipe_makes_a_key_that_lists_one_clusters_associations(p, tmp):
    p.podiam("cluster", "create", "--name", "staging", "--builtin")
    script = recipe("### The webhook's key (optional)")
    assert "arn:aws:eks:REGION:ACCOUNT_ID:cluster/prod" in script, script
    # REGION and ACCOUNT_ID are the server's (as the doc says); `prod` is the cluster.
    secrets, _ = run_recipe(p, tmp, script.replace("arn:aws:eks:REGION:ACCOUNT_ID:", f"arn:aws:eks:us-east-1:{ACCOUNT}:"))
    # The Secret holds a shared-credentials file with a [default] profile, as the webhook reads it.
    creds = configparser.ConfigParser()
    creds.read_string(secrets["podiam-webhook-credentials"]["credentials"])
    webhook = (creds["default"]["aws_access_key_id"], creds["default"]["aws_secret_access_key"])
    eks = key_client(p, "eks", *webhook)
    listed = eks.list_pod_identity_associations(clusterName=CLUSTER)["associations"]
    assert [(a["namespace"], a["serviceAccount"]) for a in listed] == [("shop", "app")], listed
    admin_client(p, "eks").list_pod_identity_associations(clusterName="staging")
    refused(lambda: eks.list_pod_identity_associations(clusterName="staging"), "AccessDeniedException")
    refused(lambda: eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=listed[0]["associationId"]), "AccessDeniedException")
    refused(lambda: key_client(p, "iam", *webhook).list_users(), "AccessDenied")
    token = pod_token(p, "shop", "app", "cart-1")
    refused(lambda: key_client(p, "eks-auth", *webhook).assume_role_for_pod_identity(clusterName=CLUSTER, token=token), "AccessDeniedException")


# === groups ===


def test_a_group_policy_grants_to_its_members_until_they_leave(p, tmp):
    dev = key_client(p, "iam", *user_key(p, "dev"))
    refused(lambda: dev.list_roles(), "AccessDenied")
    p.aws("iam", "create-group", "--group-name", "role-readers")
    p.aws("iam", "put-group-policy", "--group-name", "role-readers", "--policy-name", "list",
          "--policy-document", allow({"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}))
    refused(lambda: dev.list_roles(), "AccessDenied")
    p.aws("iam", "add-user-to-group", "--group-name", "role-readers", "--user-name", "dev")
    dev.list_roles()
    p.aws("iam", "remove-user-from-group", "--group-name", "role-readers", "--user-name", "dev")
    refused(lambda: dev.list_roles(), "AccessDenied")
    # A managed policy attached to the group grants the same way.
    p.aws("iam", "attach-group-policy", "--group-name", "role-readers", "--policy-arn", "arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    p.aws("iam", "add-user-to-group", "--group-name", "role-readers", "--user-name", "dev")
    dev.get_group(GroupName="role-readers")
    # Pod Identity through a group: the agent's permission held by a group works as well.
    p.aws("iam", "create-group", "--group-name", "agents")
    p.aws("iam", "put-group-policy", "--group-name", "agents", "--policy-name", "eks-auth",
          "--policy-document", allow({"Effect": "Allow", "Action": "eks-auth:AssumeRoleForPodIdentity", "Resource": "*"}))
    agent = key_client(p, "eks-auth", *agent_key(p))
    token = pod_token(p, "shop", "app", "cart-2")
    refused(lambda: agent.assume_role_for_pod_identity(clusterName=CLUSTER, token=token), "AccessDeniedException")
    p.aws("iam", "add-user-to-group", "--group-name", "agents", "--user-name", "podiam-agent")
    agent.assume_role_for_pod_identity(clusterName=CLUSTER, token=token)


def test_a_deny_in_a_group_policy_overrides_a_user_allow(p, tmp):
    ops = key_client(p, "iam", *user_key(p, "ops"))
    p.aws("iam", "put-user-policy", "--user-name", "ops", "--policy-name", "list",
          "--policy-document", allow({"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}))
    ops.list_roles()
    p.aws("iam", "create-group", "--group-name", "frozen")
    p.aws("iam", "put-group-policy", "--group-name", "frozen", "--policy-name", "deny-iam",
          "--policy-document", allow({"Effect": "Deny", "Action": "iam:*", "Resource": "*"}))
    p.aws("iam", "add-user-to-group", "--group-name", "frozen", "--user-name", "ops")
    msg = refused(lambda: ops.list_roles(), "AccessDenied")
    assert "explicit deny" in msg, msg
    p.aws("iam", "remove-user-from-group", "--group-name", "frozen", "--user-name", "ops")
    ops.list_roles()


# === every operation through the aws CLI ===


def cli_error(p, *args):
    r = p.aws(*args, check=False)
    assert r.returncode != 0, f"aws {' '.join(args)} succeeded"
    return r.stderr


def test_every_user_and_group_operation_round_trips_through_the_aws_cli(p, tmp):
    aws, j = p.aws, p.aws_json
    doc = allow({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    created = j("iam", "create-user", "--user-name", "cli-user", "--path", "/cli/", "--tags", "Key=team,Value=a")["User"]
    assert created["UserId"].startswith("AIDA") and created["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/cli/cli-user", created
    assert j("iam", "get-user", "--user-name", "cli-user")["User"]["Tags"] == [{"Key": "team", "Value": "a"}]
    # list-users follows Marker page by page (--page-size 1).
    names = [u["UserName"] for u in j("iam", "list-users", "--page-size", "1")["Users"]]
    assert "cli-user" in names and "podiam-admin" in names and len(names) == len(set(names)), names
    assert [u["UserName"] for u in j("iam", "list-users", "--path-prefix", "/cli/")["Users"]] == ["cli-user"]
    aws("iam", "tag-user", "--user-name", "cli-user", "--tags", "Key=team,Value=b", "Key=env,Value=dev")
    assert j("iam", "list-user-tags", "--user-name", "cli-user")["Tags"] == [{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "dev"}]
    aws("iam", "untag-user", "--user-name", "cli-user", "--tag-keys", "env")
    assert j("iam", "list-user-tags", "--user-name", "cli-user")["Tags"] == [{"Key": "team", "Value": "b"}]
    aws("iam", "put-user-policy", "--user-name", "cli-user", "--policy-name", "read", "--policy-document", doc)
    got = j("iam", "get-user-policy", "--user-name", "cli-user", "--policy-name", "read")
    assert got["UserName"] == "cli-user" and got["PolicyDocument"] == json.loads(doc), got
    assert j("iam", "list-user-policies", "--user-name", "cli-user")["PolicyNames"] == ["read"]
    ro = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
    aws("iam", "attach-user-policy", "--user-name", "cli-user", "--policy-arn", ro)
    attached = j("iam", "list-attached-user-policies", "--user-name", "cli-user")["AttachedPolicies"]
    assert attached == [{"PolicyName": "AmazonS3ReadOnlyAccess", "PolicyArn": ro}], attached
    assert "NoSuchEntity" in cli_error(p, "iam", "attach-user-policy", "--user-name", "cli-user", "--policy-arn", f"arn:aws:iam::{ACCOUNT}:policy/nope")

    g = j("iam", "create-group", "--group-name", "cli-group", "--path", "/cli/")["Group"]
    assert g["GroupId"].startswith("AGPA") and g["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/cli/cli-group", g
    assert "EntityAlreadyExists" in cli_error(p, "iam", "create-group", "--group-name", "CLI-GROUP")
    assert "cli-group" in [x["GroupName"] for x in j("iam", "list-groups", "--page-size", "1")["Groups"]]
    aws("iam", "add-user-to-group", "--group-name", "cli-group", "--user-name", "cli-user")
    got = j("iam", "get-group", "--group-name", "cli-group")
    assert got["Group"]["GroupName"] == "cli-group" and [u["UserName"] for u in got["Users"]] == ["cli-user"], got
    assert [x["GroupName"] for x in j("iam", "list-groups-for-user", "--user-name", "cli-user")["Groups"]] == ["cli-group"]
    aws("iam", "put-group-policy", "--group-name", "cli-group", "--policy-name", "g", "--policy-document", doc)
    assert j("iam", "get-group-policy", "--group-name", "cli-group", "--policy-name", "g")["PolicyDocument"] == json.loads(doc)
    assert j("iam", "list-group-policies", "--group-name", "cli-group")["PolicyNames"] == ["g"]
    aws("iam", "attach-group-policy", "--group-name", "cli-group", "--policy-arn", ro)
    assert j("iam", "list-attached-group-policies", "--group-name", "cli-group")["AttachedPolicies"] == attached
    # AttachmentCount counts the user and the group.
    assert j("iam", "get-policy", "--policy-arn", ro)["Policy"]["AttachmentCount"] == 2

    # Renames keep memberships.
    aws("iam", "update-user", "--user-name", "cli-user", "--new-user-name", "cli-user2", "--new-path", "/cli2/")
    aws("iam", "update-group", "--group-name", "cli-group", "--new-group-name", "cli-group2")
    got = j("iam", "get-group", "--group-name", "cli-group2")
    assert [u["Arn"] for u in got["Users"]] == [f"arn:aws:iam::{ACCOUNT}:user/cli2/cli-user2"], got
    assert "NoSuchEntity" in cli_error(p, "iam", "get-user", "--user-name", "cli-user")
    assert "NoSuchEntity" in cli_error(p, "iam", "get-group", "--group-name", "cli-group")

    # Deleting takes AWS's order: everything attached first.
    assert "DeleteConflict" in cli_error(p, "iam", "delete-user", "--user-name", "cli-user2")
    assert "DeleteConflict" in cli_error(p, "iam", "delete-group", "--group-name", "cli-group2")
    aws("iam", "remove-user-from-group", "--group-name", "cli-group2", "--user-name", "cli-user2")
    aws("iam", "delete-group-policy", "--group-name", "cli-group2", "--policy-name", "g")
    aws("iam", "detach-group-policy", "--group-name", "cli-group2", "--policy-arn", ro)
    aws("iam", "delete-group", "--group-name", "cli-group2")
    aws("iam", "delete-user-policy", "--user-name", "cli-user2", "--policy-name", "read")
    aws("iam", "detach-user-policy", "--user-name", "cli-user2", "--policy-arn", ro)
    assert "NoSuchEntity" in cli_error(p, "iam", "detach-user-policy", "--user-name", "cli-user2", "--policy-arn", ro)
    aws("iam", "delete-user", "--user-name", "cli-user2")
    assert "NoSuchEntity" in cli_error(p, "iam", "list-groups-for-user", "--user-name", "cli-user2")
    assert "cli-group2" not in [x["GroupName"] for x in j("iam", "list-groups")["Groups"]]


def main():
    run_suite("users", "podiam-users-", globals())


if __name__ == "__main__":
    main()
