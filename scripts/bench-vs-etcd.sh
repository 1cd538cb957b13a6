#!/usr/bin/env bash
# paxkv against etcd on this machine, side by side, in one run (docs/benchmarks.md):
#
#   bash scripts/bench-vs-etcd.sh
#
# Installs what is missing (scripts/setup.sh: etcd-server, protobuf-compiler, ...), builds
# the release binaries, starts a 3-member etcd and a 3-process paxkv cluster on loopback
# (each member with its own data directory; fsync on for both, as in production), measures
# the floors (fdatasync of a 4 KiB append, a loopback TCP round trip), runs put at
# 1/16/64/256 clients and linearizable get at 1/64 clients against both, and prints a
# markdown table. Everything it starts is killed by PID on exit.
#
# Environment:
#   BENCH_SECS       measured seconds per run (default 10)
#   BENCH_WARMUP     warm-up seconds per run (default 2)
#   BENCH_PORT_BASE  first of 12 consecutive loopback ports (default 23790)
#   BENCH_DIR        parent of the run's temporary directory (default /var/tmp: disk, not tmpfs)
#   BENCH_KEEP=1     keep the data directories, logs and JSON results
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

secs="${BENCH_SECS:-10}"
warmup="${BENCH_WARMUP:-2}"
base="${BENCH_PORT_BASE:-23790}"

echo "== building release binaries in $CARGO_TARGET_DIR" >&2
cargo build --release --locked --bin paxkv >&2
cargo build --release --locked --manifest-path bench-etcd/Cargo.toml >&2
paxkv="$CARGO_TARGET_DIR/release/paxkv"

run_dir="$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" paxkv-bench.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "== kept $run_dir" >&2
    else
        rm -rf "$run_dir"
    fi
}
trap cleanup EXIT

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for offset in $(seq 0 11); do
    if port_in_use $((base + offset)); then
        echo "port $((base + offset)) is in use: set BENCH_PORT_BASE to a free range of 12" >&2
        exit 1
    fi
done

# Ports: etcd clients base+0..2, etcd peers base+3..5, paxkv Thrift base+6..8, paxkv peers
# base+9..11.
etcd_client() { echo "127.0.0.1:$((base + $1 - 1))"; }
etcd_peer() { echo "127.0.0.1:$((base + 2 + $1))"; }
paxkv_thrift() { echo "127.0.0.1:$((base + 5 + $1))"; }
paxkv_peer() { echo "127.0.0.1:$((base + 8 + $1))"; }

echo "== starting a 3-member etcd ($(etcd --version | head -1)) in $run_dir" >&2
initial_cluster="e1=http://$(etcd_peer 1),e2=http://$(etcd_peer 2),e3=http://$(etcd_peer 3)"
for n in 1 2 3; do
    etcd --name "e$n" --data-dir "$run_dir/etcd$n" \
        --listen-client-urls "http://$(etcd_client $n)" \
        --advertise-client-urls "http://$(etcd_client $n)" \
        --listen-peer-urls "http://$(etcd_peer $n)" \
        --initial-advertise-peer-urls "http://$(etcd_peer $n)" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token paxkv-bench \
        >"$run_dir/etcd$n.log" 2>&1 &
    pids+=($!)
done
etcd_pid="${pids[0]}"

echo "== starting a 3-process paxkv cluster" >&2
for n in 1 2 3; do
    cat >"$run_dir/paxkv$n.toml" <<EOF
id = $n
data_dir = "$run_dir/paxkv$n"
thrift_addr = "$(paxkv_thrift $n)"
log = "warn"
auth.enabled = false    # etcd runs without auth here too
members = [
  { id = 1, peer_addr = "$(paxkv_peer 1)" },
  { id = 2, peer_addr = "$(paxkv_peer 2)" },
  { id = 3, peer_addr = "$(paxkv_peer 3)" },
]
EOF
    "$paxkv" server --bootstrap --config "$run_dir/paxkv$n.toml" >"$run_dir/paxkv$n.log" 2>&1 &
    pids+=($!)
done
paxkv_pid="${pids[3]}"

etcd_endpoints="$(etcd_client 1),$(etcd_client 2),$(etcd_client 3)"
paxkv_endpoints="$(paxkv_thrift 1),$(paxkv_thrift 2),$(paxkv_thrift 3)"

wait_ready() { # NAME COMMAND...
    local name="$1"
    shift
    for _ in $(seq 1 150); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "$name did not become ready; logs in $run_dir" >&2
    BENCH_KEEP=1
    exit 1
}
for n in 1 2 3; do
    wait_ready "paxkv replica $n" "$paxkv" status --endpoint "$(paxkv_thrift $n)"
    wait_ready "etcd member $n" "$paxkv" bench --target etcd --endpoint "$(etcd_client $n)" \
        --workload put --ops 1 --quiet
done
echo "== both clusters ready" >&2

results="$run_dir/results"
mkdir -p "$results"

echo "== floors: fdatasync of a 4 KiB append in $run_dir, loopback TCP round trip" >&2
# Seconds, not a count: a few seconds of samples ride out a moment of contention on a
# shared machine the way the 10-second runs below do.
"$paxkv" bench --workload fsync --dir "$run_dir" --duration 5 --json --quiet >"$results/fsync.json"
"$paxkv" bench --workload tcp-rtt --duration 3 --json --quiet >"$results/tcp-rtt.json"

# CPU ticks (user + system, USER_HZ = 100) used so far by the processes given.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        # Fields 14 and 15 of /proc/PID/stat; the command name before them has no spaces here.
        read -ra fields <"/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}

echo "== preloading the 10000 keys the gets read, on both" >&2
"$paxkv" bench --target paxkv --endpoints "$paxkv_endpoints" --workload get --ops 1 \
    --key-space 10000 --value-size 256 --clients 16 --quiet >/dev/null
"$paxkv" bench --target etcd --endpoints "$etcd_endpoints" --workload get --ops 1 \
    --key-space 10000 --value-size 256 --clients 16 --quiet >/dev/null

runs=("put 1" "put 16" "put 64" "put 256" "get 1" "get 64")
for run in "${runs[@]}"; do
    read -r workload clients <<<"$run"
    for target in paxkv etcd; do
        endpoints="$paxkv_endpoints"
        servers=("${pids[@]:3:3}")
        if [ "$target" = etcd ]; then
            endpoints="$etcd_endpoints"
            servers=("${pids[@]:0:3}")
        fi
        echo "== $target $workload, $clients clients, ${secs}s" >&2
        before="$(cpu_ticks "${servers[@]}")"
        "$paxkv" bench --target "$target" --endpoints "$endpoints" --workload "$workload" \
            --clients "$clients" --duration "$secs" --warmup "$warmup" --value-size 256 \
            --key-space 10000 --preload false --json --quiet \
            >"$results/$target-$workload-$clients.json"
        echo $(($(cpu_ticks "${servers[@]}") - before)) >"$results/$target-$workload-$clients.cpu"
    done
done

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
paxkv_rss="$(rss_kib "$paxkv_pid")"
etcd_rss="$(rss_kib "$etcd_pid")"

python3 - "$results" "$paxkv_rss" "$etcd_rss" "${runs[@]}" <<'EOF'
import json, sys

results, paxkv_rss, etcd_rss, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
load = lambda name: json.load(open(f"{results}/{name}.json"))

print("| workload | clients | paxkv ops/s | etcd ops/s | ratio | paxkv p50/p99 (us) | etcd p50/p99 (us) | errors (paxkv/etcd) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for run in runs:
    workload, clients = run.split()
    p, e = load(f"paxkv-{workload}-{clients}"), load(f"etcd-{workload}-{clients}")
    ratio = p["ops_per_sec"] / e["ops_per_sec"] if e["ops_per_sec"] else float("inf")
    name = "get (linearizable)" if workload == "get" else workload
    print(f"| {name} | {clients} | {p['ops_per_sec']:.0f} | {e['ops_per_sec']:.0f} | {ratio:.2f}x "
          f"| {p['p50_us']} / {p['p99_us']} | {e['p50_us']} / {e['p99_us']} "
          f"| {p['errors']} / {e['errors']} |")
fsync, rtt = load("fsync"), load("tcp-rtt")
print()
print(f"Floor: fdatasync of a 4 KiB append p50 {fsync['p50_us']} us (p99 {fsync['p99_us']} us); "
      f"loopback TCP round trip p50 {rtt['p50_us']} us (p99 {rtt['p99_us']} us); "
      f"sum of p50s {fsync['p50_us'] + rtt['p50_us']} us.")
put1 = load("paxkv-put-1")
print(f"Single-client paxkv put p50 {put1['p50_us']} us = "
      f"{put1['p50_us'] / max(1, fsync['p50_us'] + rtt['p50_us']):.2f}x the floor.")
print(f"RSS at the end: paxkv replica 1 {int(paxkv_rss) / 1024:.0f} MiB, "
      f"etcd member 1 {int(etcd_rss) / 1024:.0f} MiB.")
print()
print("CPU per operation, in us, over each whole run (warm-up included): the three servers "
      "together, and the load generator.")
print()
print("| workload | clients | paxkv servers | paxkv client | etcd servers | etcd client |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
def per_op(name):
    run = load(name)
    server_s = int(open(f"{results}/{name}.cpu").read()) / 100
    ops = max(1, run["load_ops"])
    return f"{server_s * 1e6 / ops:.0f} | {run['client_cpu_s'] * 1e6 / ops:.0f}"
for run in runs:
    workload, clients = run.split()
    name = "get (linearizable)" if workload == "get" else workload
    print(f"| {name} | {clients} | {per_op(f'paxkv-{workload}-{clients}')} "
          f"| {per_op(f'etcd-{workload}-{clients}')} |")
EOF
