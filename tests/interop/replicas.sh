#!/usr/bin/env bash
# Two `podiam server` replicas on one PostgreSQL (scripts/test provides the database).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/replicas_test.py
