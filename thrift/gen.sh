#!/usr/bin/env bash
# Regenerates the Rust code for the paxkv Thrift API from thrift/paxkv.thrift.
#
#   bash thrift/gen.sh            # writes src/api/gen/paxkv.rs (the committed copy)
#   bash thrift/gen.sh OUT_DIR    # writes OUT_DIR/paxkv.rs (tests/thrift_codegen.rs compares)
#
# The compiler is pinned: generated Rust only compiles against the `thrift` crate of the same
# version (Cargo.toml pins thrift = "=0.17.0"), and a different compiler would make the
# committed file differ from what CI regenerates. Never edit the output by hand.
set -euo pipefail

thrift_version_pinned="0.17.0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
idl="$root/thrift/paxkv.thrift"
out_dir="${1:-$root/src/api/gen}"

if ! command -v thrift >/dev/null 2>&1; then
    echo "gen.sh: the Thrift compiler is not installed. paxkv pins Apache Thrift" \
        "$thrift_version_pinned: install Debian's package (apt-get install thrift-compiler)." >&2
    exit 1
fi
version_line="$(thrift --version)"
if [ "$version_line" != "Thrift version $thrift_version_pinned" ]; then
    echo "gen.sh: need Apache Thrift $thrift_version_pinned exactly, found '$version_line'." \
        "Generated Rust must match the pinned thrift crate (=$thrift_version_pinned)." >&2
    exit 1
fi
if ! command -v rustfmt >/dev/null 2>&1; then
    echo "gen.sh: rustfmt is not installed (rustup component add rustfmt)." >&2
    exit 1
fi

# Generate into a private temp dir so a failed run never leaves a half-written file behind.
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT
thrift -strict --gen rs -out "$tmp_dir" "$idl"
# The generator marks its file `rustfmt_skip`, so this leaves it unchanged today; it is kept so
# `cargo fmt --check` stays clean should a future generator drop that attribute.
rustfmt --edition 2021 "$tmp_dir/paxkv.rs"

mkdir -p "$out_dir"
cp "$tmp_dir/paxkv.rs" "$out_dir/paxkv.rs.tmp"
mv "$out_dir/paxkv.rs.tmp" "$out_dir/paxkv.rs"
echo "gen.sh: wrote $out_dir/paxkv.rs"
