#!/usr/bin/env bash
# The whole civmesh test suite: unit, property and end-to-end tests, in the
# one dev profile that the demo also uses, so nothing compiles twice.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
# The console's browser tests drive Debian's Chromium over WebDriver (with
# CJK fonts, so its screenshots show the Chinese pages as people see them).
civmesh_install chromium chromium-driver fonts-noto-cjk python3

# An audit verifier written from docs/audit-bundle.md alone (Python, no
# civmesh code) gives every published test vector its documented result.
python3 docs/audit-vectors/reference_verifier.py docs/audit-vectors >/dev/null

cargo build --workspace --bins
# Criterion benches run once each in test mode, as smoke tests.
cargo test --workspace --all-targets
# Partitions over network namespaces need root and `ip netns`: run where
# they work, and reported as ignored elsewhere.
probe="civmesh-probe-$$"
if [ "$(id -u)" -eq 0 ] && ip netns add "$probe" 2>/dev/null; then
  ip netns delete "$probe"
  cargo test -p civmesh-tests --test partitions -- --ignored
else
  echo "test.sh: network namespaces are not available here; partitions_over_network_namespaces stays ignored" >&2
fi
