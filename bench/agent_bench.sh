#!/usr/bin/env bash
# agent_bench.sh: how fast the agent alone takes events over HTTP (issue 3).
#
# Starts a one-region local cluster (CURVE on, durable spool commits), stops
# its aggregator, so the agent only takes, parses and spools, then sends
# cairn-loadgen's records (requests of 100, 4 keep-alive connections) in
# rounds: each round's count goes into a spool that already holds the rounds
# before it, so the rate with a large backlog shows. Prints each round's rate
# and p99 and, last, one JSON line.
#
# Usage: bench/agent_bench.sh [--build-dir DIR] [--counts "300000 500000 500000"]
#                              [--connections N]   (default 4)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$REPO/build
COUNTS="300000 500000 500000"
CONNECTIONS=4
while (($# > 0)); do
    case $1 in
    --connections) CONNECTIONS=$2; shift 2 ;;
    --counts) COUNTS=$2; shift 2 ;;
    --build-dir) BUILD=$(cd "$2" && pwd); shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "agent_bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for c in $COUNTS $CONNECTIONS; do
    [[ $c =~ ^[0-9]+$ ]] || { echo "agent_bench.sh: --counts and --connections take whole numbers" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_cluster_up agent-bench
"$REPO/deploy/local-cluster.sh" stop-aggregator --dir "$DIR/cluster" >/dev/null
# A spool large enough for every round (the cluster's is 1G).
"$REPO/deploy/local-cluster.sh" stop-agent --dir "$DIR/cluster" --region us-east-1 >/dev/null
sed -i "s|^map_size = 1G|map_size = 8G|" "$DIR/cluster/agent-us-east-1.conf"
"$REPO/deploy/local-cluster.sh" start-agent --dir "$DIR/cluster" --region us-east-1 >/dev/null
URL=${CAIRN_AGENT_URLS%% *}

echo "agent alone (aggregator stopped), durable spool, $CONNECTIONS connections x 100 records; build $BUILD"
held=0 seed=1 json="" first=1
for count in $COUNTS; do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    out=$("$BUILD/bench/cairn-loadgen" --url "$URL" --count "$count" --batch 100 --connections "$CONNECTIONS" \
        --seed "$seed" --quiet 2>&1 | tail -n 1)
    rate=$(sed -n 's/.*"rate": *\([0-9.]*\).*/\1/p' <<<"$out")
    p99=$(sed -n 's/.*"p99_ms": *\([0-9.]*\).*/\1/p' <<<"$out")
    errors=$(sed -n 's/.*"errors": *\([0-9]*\).*/\1/p' <<<"$out")
    printf '%9d events into a spool holding %9d: %10s events/s, p99 %s ms, errors %s (load average %s)\n' \
        "$count" "$held" "$rate" "$p99" "$errors" "$load"
    ((first)) || json+=","
    json+="{\"count\":$count,\"spool_held\":$held,\"events_per_s\":${rate:-null},\"p99_ms\":${p99:-null},\"errors\":${errors:-null},\"load_before\":\"$load\"}"
    first=0 held=$((held + count)) seed=$((seed + 1))
done
echo "{\"rounds\":[$json]}"
