#!/usr/bin/env bash
# The CLI followed at once by real clients (boto3, aws CLI): read-your-writes, no sleeps.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/cli_test.py
