#!/usr/bin/env bash
# Broker mode end to end: a second `podiam up --account-id 111122223333` plays AWS; the broker
# gets pods' sessions from it (credentials from AWS_PROFILE, and from a credential_process
# script), through `podiam agent` and boto3's container provider.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/broker_test.py
