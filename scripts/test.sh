#!/usr/bin/env bash
# Sets up a fresh machine (what is missing gets installed) and runs every test of paxkv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

started=$(date +%s)
echo "== build (release profile, shared by tests and binaries) in $CARGO_TARGET_DIR"
cargo build --release --workspace --all-targets --all-features --locked
# The etcd load generator is its own workspace (see bench-etcd/Cargo.toml); the bench
# integration test runs it from next to `paxkv`.
cargo build --release --locked --manifest-path bench-etcd/Cargo.toml --all-targets
# The tests use every feature; the production feature set (no `chaos`) must compile too.
cargo check --release --locked -p paxkv --lib --bins
echo "== build took $(( $(date +%s) - started ))s"

echo "== unit, property, integration and simulator tests"
cargo nextest run --release --workspace --all-features --locked --profile ci
cargo test --release --locked --manifest-path bench-etcd/Cargo.toml

echo "== doc tests"
cargo test --release --workspace --all-features --locked --doc

echo "== all tests passed in $(( $(date +%s) - started ))s"
