#!/usr/bin/env bash
# Hostile input and faults (issue 12): each attack against a running `podiam up`, a few seconds each.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/interop/hostile_test.py
