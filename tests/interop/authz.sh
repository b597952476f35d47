#!/usr/bin/env bash
# IAM authorization holes found by a red team, each tried with boto3 against a running `podiam up`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/authz_test.py
