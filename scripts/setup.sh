# Sourced by scripts/dev.sh and scripts/test.sh: installs what a fresh machine is missing.
# The build cache lives outside the clone, so a warm machine skips what it built before.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/paxkv/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null; then
    echo "paxkv needs a Rust toolchain (cargo) on PATH" >&2
    exit 1
fi

# Debian packages: the pinned Thrift compiler (0.17.0) that generates and checks the API
# code, libclang for the RocksDB bindings, the Python Thrift library (0.17.0) for the
# Python client test, the Prometheus server that tests/prometheus.rs scrapes with, protoc for
# the etcd client's generated gRPC code (bench-etcd/), and etcd itself (3.4, /usr/bin/etcd)
# for the bench test and scripts/bench-vs-etcd.sh.
packages=(thrift-compiler libclang-dev python3-thrift prometheus protobuf-compiler etcd-server)
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
