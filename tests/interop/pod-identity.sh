#!/usr/bin/env bash
# EKS Pod Identity end to end: boto3's container and IMDS providers through `podiam agent`
# against a running `podiam up`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/pod_identity_test.py
