# Sourced by the benchmark scripts (goals.sh, run.sh, ab.sh): one `switchyard serve` in the
# background on a fresh data dir, started, waited for and stopped the same way everywhere.
#
#   ADDR=127.0.0.1:50093 source benches/perf/lib.sh
#   sy_start NAME BIN [SERVE_ARGS...]   # BIN serve --listen $ADDR --data-dir $DATA/d SERVE_ARGS
#   sy_stop                             # SIGTERM, wait; the data dir stays (for `state show`)
#   sy_cleanup                          # sy_stop, then remove the data dir
#
# sy_start sets SERVER (the pid) and DATA (a fresh temporary dir; the store is DATA/d), and
# writes the server's stdout and stderr to LOG_DIR/serve-NAME.out and .err (LOG_DIR defaults to
# DATA). It returns once the server printed `listening on`, and exits the script with the
# server's stderr if it did not within 20 s. Scripts install `trap sy_cleanup EXIT`.

SERVER=
DATA=

sy_stop() {
    if [[ -n "$SERVER" ]]; then
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=
    fi
}

sy_cleanup() {
    sy_stop
    if [[ -n "$DATA" ]]; then rm -rf "$DATA"; fi
    DATA=
}

sy_start() { # NAME BIN [SERVE_ARGS...]
    local name=$1 bin=$2
    shift 2
    sy_cleanup
    DATA=$(mktemp -d)
    local logs=${LOG_DIR:-$DATA}
    "$bin" serve --listen "$ADDR" --data-dir "$DATA/d" "$@" \
        >"$logs/serve-$name.out" 2>"$logs/serve-$name.err" &
    SERVER=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$logs/serve-$name.out" 2>/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.1
    done
    echo "server ($name) did not start:" >&2
    cat "$logs/serve-$name.err" >&2
    exit 1
}

# field WORKLOAD COLUMN FILE: a column of a workload's row in a `switchyard bench` report (2:
# units, 4: throughput, 8: p99 in us).
field() { awk -v w="$1" -v c="$2" '$1 == w { print $c; exit }' "$3"; }

# The median of the numbers on stdin, one per line (the mean of the middle two for an even count).
median() {
    grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
