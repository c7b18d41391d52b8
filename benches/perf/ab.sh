#!/usr/bin/env bash
# A/B throughput of two switchyard binaries, interleaved so that machine noise hits both alike:
# RUNS rounds (default 3); each round starts a fresh server of A, runs
# `switchyard bench --workload route,pair`, stops it, then does the same for B. Prints every run
# and the medians per binary, mode and workload. Run it on an idle machine.
#
#   benches/perf/ab.sh BIN_A BIN_B [MODE...]
#   RUNS=5 DURATION=10 benches/perf/ab.sh /tmp/base/switchyard target/release/switchyard memory sync
#
# MODE is a file benches/perf/MODE.toml layered over each binary's own built-in config: the
# src/default_config.toml of the tree whose target/ holds it (override with CONFIG_A / CONFIG_B,
# e.g. for a copied binary), since the config's keys change between versions. The load tool is
# BIN_B's own `bench` for both, so only the server differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -lt 2 ]]; then
    echo "usage: $0 BIN_A BIN_B [MODE...]" >&2
    exit 2
fi
A=$1
B=$2
shift 2
MODES=("$@")
[[ ${#MODES[@]} -gt 0 ]] || MODES=(memory)
config_of() { # BIN -> the default config of the tree that built it
    local tree
    tree=$(cd "$(dirname "$1")/../.." 2>/dev/null && pwd)
    if [[ -f "$tree/src/default_config.toml" ]]; then
        echo "$tree/src/default_config.toml"
    else
        echo "$PWD/src/default_config.toml"
    fi
}
CONFIG_A=${CONFIG_A:-$(config_of "$A")}
CONFIG_B=${CONFIG_B:-$(config_of "$B")}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
ADDR=127.0.0.1:50093
OUT=$(mktemp -d)
LOG_DIR=$OUT
source benches/perf/lib.sh
trap 'sy_cleanup; rm -rf "$OUT"' EXIT

one() { # BIN CONFIG MODE -> prints "route_rps pairs_per_s"
    sy_start ab "$1" --config "$2" --config "benches/perf/$3.toml"
    "$B" bench --addr "$ADDR" --workload route,pair --duration "$DURATION" --warmup 2 --json \
        >"$OUT/bench.json" 2>/dev/null
    sy_cleanup
    python3 - "$OUT/bench.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
runs = doc["workloads"]
rate = {w["workload"]: w["throughput_per_sec"] for w in runs}
print(f'{rate.get("route", 0):.0f} {rate.get("pair", 0):.0f}')
EOF
}

declare -A RESULTS
for mode in "${MODES[@]}"; do
    for r in $(seq "$RUNS"); do
        for side in A B; do
            bin=$A
            cfg=$CONFIG_A
            if [[ $side == B ]]; then
                bin=$B
                cfg=$CONFIG_B
            fi
            read -r route pair < <(one "$bin" "$cfg" "$mode")
            printf '%-7s run %d %s: route %8s req/s  pair %8s pairs/s\n' "$mode" "$r" "$side" "$route" "$pair"
            RESULTS[$mode.$side.route]+="$route "
            RESULTS[$mode.$side.pair]+="$pair "
        done
    done
done

echo
printf '%-7s %-6s %10s %10s %8s\n' mode load A B 'B/A-1'
for mode in "${MODES[@]}"; do
    for w in route pair; do
        a=$(tr ' ' '\n' <<<"${RESULTS[$mode.A.$w]}" | median)
        b=$(tr ' ' '\n' <<<"${RESULTS[$mode.B.$w]}" | median)
        awk -v m="$mode" -v w="$w" -v a="$a" -v b="$b" \
            'BEGIN {printf "%-7s %-6s %10d %10d %+7.1f%%\n", m, w, a, b, (a > 0 ? (b / a - 1) * 100 : 0)}'
    done
done
