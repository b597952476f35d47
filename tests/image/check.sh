#!/usr/bin/env bash
# The image scripts/build-image built (target/image/podiam-VERSION.oci.tar, or ARCHIVE): its
# config, its files and its agreement with the Dockerfile, then the binary run from its root
# filesystem in a chroot as the image's user (tests/image/check.py says what is checked). As root.
#
#   tests/image/check.sh [ARCHIVE]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "run as root: the check extracts the image with its owners and runs it in a chroot" >&2
  exit 1
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
archive=${1:-${CARGO_TARGET_DIR:-$PWD/target}/image/podiam-$version.oci.tar}
if [ ! -f "$archive" ]; then
  echo "$archive does not exist: run scripts/build-image first" >&2
  exit 1
fi
exec python3 tests/image/check.py "$archive" Dockerfile Cargo.toml
