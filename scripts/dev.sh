#!/usr/bin/env bash
# Sets up a fresh machine (what is missing gets installed), builds paxkv, and runs
# `paxkv dev`: three replicas in this process, Thrift on 127.0.0.1:9091 (and :9092, :9093),
# data under ./data. Ctrl-C stops it cleanly; running it again keeps the data.
# Extra arguments go to `paxkv dev` (see `paxkv dev --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release --locked --bin paxkv
exec "$CARGO_TARGET_DIR/release/paxkv" dev "$@"
