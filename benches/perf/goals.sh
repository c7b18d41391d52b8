#!/usr/bin/env bash
# The throughput and latency goals of the Performance section, measured as they are judged:
# RUNS interleaved runs per durability mode (memory, then sync, then the next run), each
# `switchyard bench` command against a fresh server on a fresh data dir, then the median of each
# figure. Takes about 2 minutes a run.
#
#   cargo build --release && benches/perf/goals.sh [RUNS] [OUT_DIR]
#
# Per run and mode: closed loop `--workload floor,route,pair --duration 10 --warmup 2` (Route/floor
# and pairs/s from the same run) and open loop `--workload floor,route --rate 10000 --duration 10
# --warmup 2` (Route's p99). Raw reports go to OUT_DIR (default target/perf/goals).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/switchyard}
RUNS=${1:-3}
OUT=${2:-target/perf/goals}
ADDR=127.0.0.1:50093
mkdir -p "$OUT"
source benches/perf/lib.sh
trap sy_cleanup EXIT

start_server() { # MODE
    sy_start "$1" "$BIN" --config src/default_config.toml --config "benches/perf/$1.toml"
}

declare -A series
for run in $(seq "$RUNS"); do
    for mode in memory sync; do
        start_server "$mode"
        closed="$OUT/closed-$mode-$run.txt"
        "$BIN" bench --addr "$ADDR" --workload floor,route,pair --duration 10 --warmup 2 \
            2>/dev/null >"$closed"
        start_server "$mode"
        open="$OUT/open-$mode-$run.txt"
        "$BIN" bench --addr "$ADDR" --workload floor,route --rate 10000 --duration 10 --warmup 2 \
            2>/dev/null >"$open"
        sy_cleanup
        floor=$(field floor 4 "$closed")
        route=$(field route 4 "$closed")
        ratio=$(awk -v r="$route" -v f="$floor" 'BEGIN { printf "%.3f", r / f }')
        pairs=$(field pair 4 "$closed")
        p99=$(field route 8 "$open")
        printf 'run %d %-6s Route/floor %s (%s / %s req/s), pairs/s %s, Route p99 at 10k req/s %s us\n' \
            "$run" "$mode" "$ratio" "$route" "$floor" "$pairs" "$p99"
        series[$mode-ratio]+="$ratio "
        series[$mode-pairs]+="$pairs "
        series[$mode-p99]+="$p99 "
    done
done

med() { tr ' ' '\n' <<<"${series[$1]}" | median; }
verdict() { # VALUE OP LIMIT
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= l : v <= l; print ok ? "met" : "not met" }'
}
echo
echo "medians of $RUNS runs:"
m=$(med memory-ratio); echo "memory Route/floor     $m   (goal >= 0.8: $(verdict "$m" '>=' 0.8))"
m=$(med sync-ratio); echo "sync Route/floor       $m   (goal >= 0.6: $(verdict "$m" '>=' 0.6))"
m=$(med sync-pairs); echo "sync pairs/s           $m   (goal >= 10000: $(verdict "$m" '>=' 10000))"
m=$(med sync-p99); echo "sync Route p99 (us)    $m   (goal <= 1500: $(verdict "$m" '<=' 1500))"
m=$(med memory-p99); echo "memory Route p99 (us)  $m"
