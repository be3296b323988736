#!/usr/bin/env bash
# The whole civmesh test suite: unit, property and end-to-end tests, in the
# one dev profile that the demo also uses, so nothing compiles twice.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --workspace --bins
# Criterion benches run once each in test mode, as smoke tests.
cargo test --workspace --all-targets
