#!/usr/bin/env bash
# IAM users and groups against a running `podiam up`: docs/operating.md's least-privilege key
# recipes run as written, those keys with boto3, group policies, every operation via the aws CLI.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/users_test.py
