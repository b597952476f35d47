"""Story 1's application: it knows nothing of podiam. Its SDK resolves credentials from the
environment (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE) and calls what its policy allows, then
one thing it does not."""

import boto3
import botocore.exceptions

print("caller", boto3.client("sts").get_caller_identity()["Arn"])
iam = boto3.client("iam")
print("roles", len(iam.list_roles()["Roles"]))
try:
    iam.delete_role(RoleName="weasel-weasel-eks-pod-sa")
    print("deleted: the policy did not hold")
except botocore.exceptions.ClientError as e:
    print("refused", e.response["Error"]["Code"])
