#!/usr/bin/env bash
# Installs what building civmesh needs on Debian, when it is missing, and
# exports the shared build directory. Sourced by demo.sh and test.sh.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/civmesh-target}"
mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || export CARGO_TARGET_DIR="$PWD/target"

# Debian packages: clang and libclang for RocksDB's bindings, a C++ compiler
# for RocksDB itself, make for jemalloc, openssl for the certificate tests,
# iproute2 for the partition tests, and etcd for the consensus benchmark's
# anchor.
civmesh_packages=(clang libclang-dev g++ make pkg-config openssl iproute2 etcd-server etcd-client)

# Installs the Debian packages given that are missing (as root).
civmesh_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
civmesh_install "${civmesh_packages[@]}"

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing. Install the Rust toolchain (1.89 or newer) with rustup: https://rustup.rs" >&2
  exit 1
fi
