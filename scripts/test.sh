#!/usr/bin/env bash
# Sets up a fresh machine (what is missing gets installed) and runs every test of paxkv.
# The build cache lives outside the clone, so a warm machine skips what it built before.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/paxkv/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null; then
    echo "paxkv needs a Rust toolchain (cargo) on PATH" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

# Debian packages the build and tests need: the pinned Thrift compiler (0.17.0) that
# generates and checks the API code, and libclang for the RocksDB bindings.
packages=(thrift-compiler libclang-dev)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

started=$(date +%s)
echo "== build (release profile, shared by tests and binaries) in $CARGO_TARGET_DIR"
cargo build --release --workspace --all-targets --all-features --locked
echo "== build took $(( $(date +%s) - started ))s"

echo "== unit, property, integration and simulator tests"
cargo nextest run --release --workspace --all-features --locked --profile ci

echo "== doc tests"
cargo test --release --workspace --all-features --locked --doc

echo "== all tests passed in $(( $(date +%s) - started ))s"
