#!/usr/bin/env bash
# The main job: builds civmesh and runs the local demo federation: real
# civmesh processes on loopback, seeded with synthetic data, walking the loop
# and checking every step against the nodes' answers. It keeps running until
# Ctrl-C; `--check` exits when done; `--dir DIR` keeps the data directories.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --workspace --bins
exec "$CARGO_TARGET_DIR/debug/civmesh" demo "$@"
