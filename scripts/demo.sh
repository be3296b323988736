#!/usr/bin/env bash
# The main job: builds civmesh and runs the local demo federation.
# Extra arguments go to `civmesh demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --workspace --bins
exec "$CARGO_TARGET_DIR/debug/civmesh" demo "$@"
