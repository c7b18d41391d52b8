#!/usr/bin/env bash
# Route throughput of three replicas against one (README "Running replicas", "Throughput"): one
# redis-server and release `switchyard serve` replicas on this machine, loaded by
# `switchyard bench` (one closed-loop bench per replica, the total concurrency split evenly).
# Prints each figure with the command that produced it, and the load average before each run
# (client, servers and Redis share the machine's cores, and so do other jobs).
#
#   cargo build --release && benches/perf/cluster.sh [OUT_DIR]
#
# Environment: DURATION (measured seconds per run, default 10), CONCURRENCY (total closed-loop
# tasks, default 48), WORKLOAD (default route; pair = Route then Feedback), BIN (the binary,
# default target/release/switchyard), REDIS_PORT (default 56379), BASE_PORT (replicas listen on
# BASE_PORT+1.., default 50160).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/switchyard}
OUT=${1:-target/perf-cluster}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-48}
WORKLOAD=${WORKLOAD:-route}
REDIS_PORT=${REDIS_PORT:-56379}
BASE_PORT=${BASE_PORT:-50160}
mkdir -p "$OUT"
WORK=$(mktemp -d)
REDIS=
SERVERS=()

stop_servers() {
    for p in "${SERVERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${SERVERS[@]}"; do wait "$p" 2>/dev/null || true; done
    SERVERS=()
}
cleanup() {
    stop_servers
    if [[ -n "$REDIS" ]]; then
        kill -TERM "$REDIS" 2>/dev/null || true
        wait "$REDIS" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "# $(nproc) cores; $(uptime | sed 's/.*load average/load average/')"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
    --save "" --dir "$WORK" >"$OUT/redis.log" 2>&1 &
REDIS=$!
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done

start_servers() { # N PREFIX (PREFIX "" = single node, no [cluster])
    local n=$1 prefix=$2
    for i in $(seq "$n"); do
        local cfg=$WORK/$prefix-$i.toml
        : >"$cfg"
        if [[ -n "$prefix" ]]; then
            printf '[cluster]\nredis_url = "redis://127.0.0.1:%s"\nkey_prefix = "%s"\nreplica_id = "r%s"\n' \
                "$REDIS_PORT" "$prefix" "$i" >"$cfg"
        fi
        "$BIN" serve --config src/default_config.toml --config benches/perf/memory.toml \
            --config "$cfg" --listen "127.0.0.1:$((BASE_PORT + i))" --data-dir "$WORK/data-$prefix-$i" \
            >"$OUT/serve-$prefix-$n-$i.out" 2>"$OUT/serve-$prefix-$n-$i.err" &
        SERVERS+=($!)
    done
    for i in $(seq "$n"); do
        for _ in $(seq 100); do
            grep -q "listening on" "$OUT/serve-$prefix-$n-$i.out" 2>/dev/null && break
            sleep 0.1
        done
        grep -q "listening on" "$OUT/serve-$prefix-$n-$i.out" || {
            echo "server $i of $n did not start" >&2
            exit 1
        }
    done
}

run() { # NAME N
    local name=$1 n=$2 per=$((CONCURRENCY / $2))
    echo "## $name: $n server(s), $CONCURRENCY tasks ($per per server); $(uptime | sed 's/.*load average/load average/')"
    local benches=()
    for i in $(seq "$n"); do
        echo "\$ switchyard bench --addr 127.0.0.1:$((BASE_PORT + i)) --workload $WORKLOAD --concurrency $per --duration $DURATION --warmup 2 --json"
        "$BIN" bench --addr "127.0.0.1:$((BASE_PORT + i))" --workload "$WORKLOAD" \
            --concurrency "$per" --duration "$DURATION" --warmup 2 --json \
            >"$OUT/$name-$i.json" 2>"$OUT/$name-$i.err" &
        benches+=($!)
    done
    for b in "${benches[@]}"; do wait "$b"; done
    python3 - "$name" "$OUT" "$n" <<'EOF'
import json, sys
name, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
total, p99s, errors = 0.0, [], 0
for i in range(1, n + 1):
    w = json.load(open(f"{out}/{name}-{i}.json"))["workloads"][0]
    total += w["throughput_per_sec"]
    errors += w["errors"]
    p99s.append(w["latency_us"]["p99"] if w["latency_us"] else 0)
    print(f"  server {i}: {w['throughput_per_sec']:.0f}/s, p50 {w['latency_us']['p50']} us, p99 {w['latency_us']['p99']} us, errors {w['errors']}")
print(f"{name}: {total:.0f}/s in total, p99 {max(p99s)} us (worst server), {errors} errors")
EOF
    echo
}

start_servers 1 ""
run single 1
stop_servers
start_servers 1 c1
run one-replica 1
stop_servers
start_servers 3 c3
run three-replicas 3
stop_servers
