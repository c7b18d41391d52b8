#!/usr/bin/env bash
# Measures the README's performance table: the release server and `switchyard bench` on this
# machine, one server per durability mode on the built-in config. Prints each figure with the
# command that produced it. Takes about 8 minutes.
#
#   cargo build --release && benches/perf/run.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/switchyard
OUT=${1:-target/perf}
ADDR=127.0.0.1:50091
METRICS=127.0.0.1:50092
DURATION=${DURATION:-10}
mkdir -p "$OUT"
SERVER=

stop_server() {
    if [[ -n "$SERVER" ]]; then
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=
    fi
}
trap stop_server EXIT

start_server() { # MODE
    stop_server
    local data
    data=$(mktemp -d)
    "$BIN" serve --config src/default_config.toml --config "benches/perf/$1.toml" \
        --listen "$ADDR" --metrics-listen "$METRICS" --data-dir "$data/d" \
        >"$OUT/serve-$1.out" 2>"$OUT/serve-$1.err" &
    SERVER=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$OUT/serve-$1.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server ($1) did not start" >&2
    exit 1
}

run() { # NAME ARGS...
    local name=$1
    shift
    echo "\$ switchyard bench --addr $ADDR $*"
    "$BIN" bench --addr "$ADDR" "$@" 2>/dev/null | tee "$OUT/$name.txt" | sed -n '3,7p'
    echo
}

for mode in memory sync; do
    start_server "$mode"
    echo "## durability = $mode"
    run "closed-$mode" --workload floor,route,pair --duration "$DURATION" --warmup 2
    for rate in 5000 10000; do
        run "open-$rate-$mode" --workload floor,route --rate "$rate" --duration "$DURATION" --warmup 2
    done
done
start_server periodic
echo "## durability = periodic"
run closed-periodic --workload pair --duration "$DURATION" --warmup 2

# Resident memory after one million decisions (sync, the default), read from /metrics.
start_server sync
echo "## one million decisions (durability = sync)"
run million --workload route --rate 10000 --duration 100 --warmup 0
echo "\$ curl -s http://$METRICS/metrics | grep -E '^(process_resident_memory_bytes|switchyard_pending_decisions) '"
curl -s "http://$METRICS/metrics" | grep -E '^(process_resident_memory_bytes|switchyard_pending_decisions) ' \
    | tee "$OUT/million-metrics.txt"
stop_server
