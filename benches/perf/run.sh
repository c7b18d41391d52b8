#!/usr/bin/env bash
# Measures the table of docs/performance-history.md's first section: the release server and
# `switchyard bench` on this machine, one server per durability mode on the built-in config. Prints each figure with the
# command that produced it. Takes about 8 minutes.
#
#   cargo build --release && benches/perf/run.sh [OUT_DIR]
#   cargo build --release && benches/perf/run.sh soak [SECONDS] [OUT_DIR]
#
# soak: one `sync` server (the default mode), closed-loop `route` for SECONDS (default 600);
# every 10 s prints elapsed seconds, the server's RSS (MB, from /proc) and the data dir's size
# (MB, du); then the writer's cycles from /metrics (Routes that waited for it, the mean cycle, the
# slowest), the decision log's bytes per decision (`switchyard state show`) and the time from a
# restart on that data dir to its first answered Route.
#
# EXTRA_CONFIG=FILE layers one more config file over each server's (e.g. another storage.cache_mb).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/switchyard
OUT=${1:-target/perf}
ADDR=127.0.0.1:50091
METRICS=127.0.0.1:50092
DURATION=${DURATION:-10}
EXTRA=()
if [[ -n "${EXTRA_CONFIG:-}" ]]; then EXTRA=(--config "$EXTRA_CONFIG"); fi
SOAK=
if [[ "${1:-}" == soak ]]; then
    SOAK=${2:-600}
    OUT=${3:-target/perf}
fi
mkdir -p "$OUT"
LOG_DIR=$OUT
source benches/perf/lib.sh
trap sy_cleanup EXIT

start_server() { # MODE
    sy_start "$1" "$BIN" --config src/default_config.toml --config "benches/perf/$1.toml" \
        "${EXTRA[@]}" --metrics-listen "$METRICS"
}

run() { # NAME ARGS...
    local name=$1
    shift
    echo "\$ switchyard bench --addr $ADDR $*"
    "$BIN" bench --addr "$ADDR" "$@" 2>/dev/null | tee "$OUT/$name.txt" | sed -n '3,7p'
    echo
}

if [[ -n "$SOAK" ]]; then
    start_server sync
    echo "## soak: closed-loop route for ${SOAK}s (durability = sync)"
    echo "\$ switchyard bench --addr $ADDR --workload route --duration $SOAK --warmup 0"
    "$BIN" bench --addr "$ADDR" --workload route --duration "$SOAK" --warmup 0 \
        >"$OUT/soak-bench.txt" 2>/dev/null &
    LOAD=$!
    echo "secs  rss_mb  data_mb"
    start=$(date +%s)
    while kill -0 "$LOAD" 2>/dev/null; do
        sleep 10
        rss=$(awk '/^VmRSS/ {printf "%d", $2 / 1024}' "/proc/$SERVER/status")
        disk=$(du -sm "$DATA/d" | cut -f1)
        printf '%4d  %6s  %7s\n' $(($(date +%s) - start)) "$rss" "$disk" | tee -a "$OUT/soak.txt"
    done
    wait "$LOAD" || true
    sed -n '3,7p' "$OUT/soak-bench.txt"
    # What the writer did: a long Route is either a writer behind (backpressure waits) or a slow
    # cycle; the slowest cycles show as the highest bucket that is not yet full.
    curl -s "http://$METRICS/metrics" >"$OUT/soak-metrics.txt" || true
    awk '/^switchyard_store_backpressure_waits_total / {print "Routes that waited for the writer:", $2}
        /^switchyard_store_cycle_seconds_count / {n = $2}
        /^switchyard_store_cycle_seconds_sum / {s = $2}
        /^switchyard_store_cycle_seconds_bucket/ {split($1, a, "\""); b[++k] = a[2]; c[k] = $2}
        END {
            if (n > 0) printf "writer cycles: %d, mean %.2f ms\n", n, s / n * 1000
            for (i = 1; i <= k; i++) if (c[i] < n) last = b[i + 1]
            if (last != "") print "slowest cycle at most:", last, "s"
        }' "$OUT/soak-metrics.txt"
    sy_stop
    "$BIN" state show --data-dir "$DATA/d" | tee "$OUT/soak-state.txt"
    awk -F': ' '/^decisions:/ {n=$2} /^decision bytes:/ {b=$2} END {if (n > 0) printf "bytes per decision (log): %.0f\n", b / n}' "$OUT/soak-state.txt"
    echo "data dir: $(du -sb "$DATA/d" | cut -f1) bytes"
    # Restart on that data dir: time to the first answered Route.
    t0=$(date +%s%N)
    "$BIN" serve --config src/default_config.toml --config benches/perf/sync.toml "${EXTRA[@]}" \
        --listen "$ADDR" --data-dir "$DATA/d" >"$OUT/soak-restart.out" 2>&1 &
    SERVER=$!
    until "$BIN" bench --addr "$ADDR" --workload route --rate 10 --duration 0.1 --warmup 0 >/dev/null 2>&1; do
        sleep 0.05
    done
    echo "restart to first Route: $(( ($(date +%s%N) - t0) / 1000000 )) ms (upper bound: includes a 0.1 s bench)"
    sy_stop
    exit 0
fi

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
sy_stop
