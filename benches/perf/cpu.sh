#!/usr/bin/env bash
# Where one unit of load spends CPU: the server's threads (by name: the runtime's workers, the
# storage writer, sled's I/O pool) and the load tool, in microseconds per request or pair, with
# context switches. Client and server share the machine in every figure of the Performance
# section, so this separates them. One fresh server, one closed-loop run.
#
#   cargo build --release && benches/perf/cpu.sh [MODE] [WORKLOAD] [SECONDS]
#   benches/perf/cpu.sh sync pair 8     # the defaults
#
# MODE is benches/perf/MODE.toml layered over the built-in config (memory, sync, periodic);
# WORKLOAD one of floor, route, pair. CPU comes from /proc/PID/task/*/stat (utime, stime) before
# and after the run (a thread that exits during it is missed), the load tool's from bash's `time`.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/switchyard}
MODE=${1:-sync}
WORKLOAD=${2:-pair}
SECONDS_=${3:-8}
ADDR=127.0.0.1:50094
source benches/perf/lib.sh
trap sy_cleanup EXIT
TICK=$(getconf CLK_TCK)

# One line per thread name: name utime stime voluntary nonvoluntary (ticks; switches).
threads() {
    for t in /proc/"$SERVER"/task/*; do
        printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" \
            "$(awk '{print $14, $15}' "$t/stat")" \
            "$(awk '/^(non)?voluntary_ctxt_switches/ {printf "%s ", $2}' "$t/status")"
    done | awk '{u[$1] += $2; s[$1] += $3; v[$1] += $4; n[$1] += $5}
        END {for (k in u) print k, u[k], s[k], v[k], n[k]}' | sort
}

sy_start cpu "$BIN" --config src/default_config.toml --config "benches/perf/$MODE.toml"
before=$(threads)
TIMEFORMAT='%U %S'
client=$( { time "$BIN" bench --addr "$ADDR" --workload "$WORKLOAD" --duration "$SECONDS_" \
    --warmup 0 >"$DATA/report" 2>/dev/null; } 2>&1 )
after=$(threads)
units=$(field "$WORKLOAD" 2 "$DATA/report")
rate=$(field "$WORKLOAD" 4 "$DATA/report")
echo "$MODE $WORKLOAD: $units units in ${SECONDS_} s ($rate/s); per unit:"
# A thread that started during the run (a blocking task's) counts from zero.
{ sed 's/^/before /' <<<"$before"; sed 's/^/after /' <<<"$after"; } | awk -v n="$units" -v tick="$TICK" '
    $1 == "before" { for (i = 3; i <= 6; i++) b[$2, i] = $i; next }
    { name[$2] = 1; for (i = 3; i <= 6; i++) d[$2, i] = $i - b[$2, i] }
    END {
        for (k in name) {
            u = d[k, 3] * 1e6 / tick / n; s = d[k, 4] * 1e6 / tick / n; tu += u; ts += s
            printf "  %-18s user %6.1f us  sys %6.1f us  switches %5.2f + %5.2f involuntary\n", k, u, s, d[k, 5] / n, d[k, 6] / n | "sort"
        }
        close("sort")
        printf "  %-18s user %6.1f us  sys %6.1f us\n", "server, all", tu, ts
    }'
awk -v n="$units" '{ printf "  %-18s user %6.1f us  sys %6.1f us\n", "load tool", $1 * 1e6 / n, $2 * 1e6 / n }' <<<"$client"
