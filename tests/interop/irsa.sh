#!/usr/bin/env bash
# IRSA with real clients (aws CLI, boto3) against a running `podiam up`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/irsa_test.py
