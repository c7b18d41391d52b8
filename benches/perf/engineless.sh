#!/usr/bin/env bash
# How much of a Route's cost is the engine's. Builds the server of HEAD with
# benches/perf/engineless.patch (once the first Route has made a decision, every later Route
# answers with a copy of it under a new id, without the engine; decoding, validation, the key
# check, the response cache's look-up, the metrics and the response stay), then runs RUNS
# interleaved closed-loop `floor,route` runs of it and of target/release/switchyard, each against
# a fresh `memory` server as goals.sh runs them, and prints each Route/floor and the medians.
#
#   cargo build --release && benches/perf/engineless.sh [RUNS]
#
# The patched build goes to target/engineless; its first build compiles every dependency (about
# 10 minutes on 2 cores). The load tool is target/release/switchyard's `bench` for both.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${1:-3}
BIN=target/release/switchyard
OUT=target/engineless
TREE=$OUT/tree
ADDR=127.0.0.1:50099
source benches/perf/lib.sh
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
rm -rf "$TREE"
git worktree prune
git worktree add --detach "$TREE" HEAD >/dev/null
trap 'sy_cleanup; git worktree remove --force "$ROOT/$TREE" 2>/dev/null || true' EXIT
git -C "$TREE" apply "$ROOT/benches/perf/engineless.patch"
(cd "$TREE" && CARGO_TARGET_DIR="$ROOT/$OUT" cargo build --release --quiet)
git worktree remove --force "$TREE"
ENGINELESS=$OUT/release/switchyard

declare -A series
for run in $(seq "$RUNS"); do
    for which in engine engineless; do
        bin=$BIN
        [[ $which == engineless ]] && bin=$ENGINELESS
        sy_start "$which" "$bin" --config src/default_config.toml --config benches/perf/memory.toml
        report="$OUT/closed-$which-$run.txt"
        "$BIN" bench --addr "$ADDR" --workload floor,route --duration 10 --warmup 2 \
            2>/dev/null >"$report"
        sy_cleanup
        floor=$(field floor 4 "$report")
        route=$(field route 4 "$report")
        ratio=$(awk -v r="$route" -v f="$floor" 'BEGIN { printf "%.3f", r / f }')
        printf 'run %d %-10s Route/floor %s (%s / %s req/s)\n' "$run" "$which" "$ratio" "$route" "$floor"
        series[$which]+="$ratio "
    done
done
echo
for which in engine engineless; do
    printf 'median %-10s Route/floor %s\n' "$which" "$(tr ' ' '\n' <<<"${series[$which]}" | median)"
done
