#!/usr/bin/env bash
# EKS Pod Identity's server side with real clients (aws eks, boto3 eks-auth) against `podiam up`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/eks_api_test.py
