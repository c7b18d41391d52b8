#!/usr/bin/env bash
# Instruction counts per request of the release server under a fixed open-loop load, by
# valgrind's callgrind: unlike CPU time they do not move with what else runs on the machine.
#
#   cargo build --release && benches/perf/callgrind.sh [MODE] [WORKLOAD] [BIN]
#   RATE=300 DURATION=10 benches/perf/callgrind.sh sync pair
#
# MODE (default sync) is a file benches/perf/MODE.toml layered over src/default_config.toml;
# WORKLOAD (default pair) is one `switchyard bench` workload, run at RATE requests (pairs) per
# second for DURATION seconds, so RATE x DURATION requests. Start-up is not counted (the counters
# are zeroed once the server listens); the writer thread is. Prints the process's instructions
# per request and the inclusive instructions per request of the functions in FUNCS (a regex
# over callgrind_annotate's names), and leaves the full profile in OUT_DIR (target/perf) for
# `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-sync}
WORKLOAD=${2:-pair}
BIN=${3:-target/release/switchyard}
RATE=${RATE:-300}
DURATION=${DURATION:-10}
OUT=${OUT_DIR:-target/perf}
ADDR=127.0.0.1:50094
FUNCS=${FUNCS:-'persist::cycle$|Store::prepare$|Store::commit$|Tree::apply_batch$|Tree::get$|begin_write$|set_pending$|Names::id$|id_bytes$|Engine::take_changes$|Route>::route::[{][{]closure[}][}]$|feedback_impl::[{][{]closure[}][}]$|Engine>::route$|Engine>::feedback$|Metrics::(rpc|decision|feedback)$'}
mkdir -p "$OUT"
DATA=$(mktemp -d)
DD=()
if [[ $MODE != memory ]]; then DD=(--data-dir "$DATA/d"); fi
PROFILE="$OUT/callgrind-$MODE-$WORKLOAD.out"
rm -f "$PROFILE"*
valgrind --tool=callgrind --callgrind-out-file="$PROFILE" \
    "$BIN" serve --config src/default_config.toml --config "benches/perf/$MODE.toml" \
    --listen "$ADDR" "${DD[@]}" >"$OUT/callgrind-serve.out" 2>"$OUT/callgrind-serve.err" &
VG=$!
trap 'kill -TERM $VG 2>/dev/null || true; wait $VG 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 900); do
    grep -q "listening on" "$OUT/callgrind-serve.out" 2>/dev/null && break
    sleep 0.2
done
callgrind_control --zero "$VG" >/dev/null
"$BIN" bench --addr "$ADDR" --workload "$WORKLOAD" --rate "$RATE" --duration "$DURATION" \
    --warmup 0 >"$OUT/callgrind-bench.txt" 2>&1
callgrind_control --dump=load "$VG" >/dev/null
kill -TERM "$VG"
wait "$VG" 2>/dev/null || true
trap 'rm -rf "$DATA"' EXIT
DUMP="$PROFILE.1" # the dump taken right after the load (the file without a suffix: the stop)
N=$((RATE * DURATION))
echo "# $MODE, $WORKLOAD at $RATE/s for ${DURATION}s: $N requests; inclusive instructions per request"
callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$DUMP" 2>/dev/null \
    | sed -E 's/ \[[^]]*\]$//; s/ [^ ]*\.(rs|S|c):/ /' \
    | awk -v n="$N" -v re="$FUNCS" '
        /PROGRAM TOTALS/ { gsub(",", "", $1); printf "%10.1f k  whole process\n", $1 / n / 1000 }
        $0 ~ re && $1 ~ /^[0-9,]+$/ {
            c = $1; gsub(",", "", c); name = $0; sub(/^[ 0-9,()%.]+ +/, "", name)
            if (!(name in seen)) { seen[name] = 1; printf "%10.1f k  %s\n", c / n / 1000, substr(name, 1, 150) }
        }' | head -40
