#!/usr/bin/env bash
# Mutation testing with cargo-mutants: every mutant of certs/, policy/ and
# consensus/src/store.rs is built and run against its own package's tests.
# A mutant that survives needs a test, or a line in docs/mutants-equivalent.md
# saying why it is equivalent.
#
# Not part of .ci/run: it builds and tests once per mutant, which takes
# about an hour for policy/ on two cores. The first argument may name one
# part (certs, policy or consensus); the rest go to cargo-mutants (e.g.
# `--jobs 2`, `--iterate`, `--shard 1/4`, `--list`).
#   bash scripts/mutants.sh policy --jobs 2
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

command -v cargo-mutants >/dev/null 2>&1 || cargo install --locked cargo-mutants
out="${MUTANTS_OUT:-/var/cache/civmesh-mutants}"
mkdir -p "$out"
# Each mutated copy builds in a target directory inside itself: never in the
# one the tests and the demo share, and never one shared between the
# parallel jobs (their builds would mix).
unset CARGO_TARGET_DIR

status=0
run() {
  local name="$1"
  shift
  echo "mutants: $name" >&2
  # Exit code 2 means some mutants survived: report, and go on to the next.
  mkdir -p "$out/$name"
  cargo mutants --output "$out/$name" "$@" || status=$?
  if [ -f "$out/$name/mutants.out/outcomes.json" ]; then
    echo "mutants: $name: see $out/$name/mutants.out (missed.txt, caught.txt, unviable.txt)" >&2
  fi
}
part="all"
case "${1:-}" in
  certs | policy | consensus) part="$1"; shift ;;
esac
# The mutated copies build RocksDB's C++ again unless they link the one a
# normal build made (ROCKSDB_LIB_DIR), which saves each job ten minutes.
built_rocksdb="$(ls -td "${CARGO_TARGET_DIR_FOR_ROCKSDB:-/var/cache/civmesh-target}"/debug/build/librocksdb-sys-*/out 2>/dev/null | head -1 || true)"
if [ -n "$built_rocksdb" ] && [ -f "$built_rocksdb/librocksdb.a" ]; then
  # (A prebuilt RocksDB does not bring its C++ runtime along.)
  export ROCKSDB_LIB_DIR="$built_rocksdb" ROCKSDB_STATIC=1 RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-lstdc++"
fi
[ "$part" = all ] || [ "$part" = certs ] && run certs --package civmesh-certs "$@"
[ "$part" = all ] || [ "$part" = policy ] && run policy --package civmesh-policy "$@"
[ "$part" = all ] || [ "$part" = consensus ] && run consensus --package civmesh-consensus --file consensus/src/store.rs "$@"
exit "$status"
