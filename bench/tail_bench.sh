#!/usr/bin/env bash
# tail_bench.sh: how fast the agent takes a JSON-lines file while shipping.
#
# Starts a one-region local cluster (CURVE on, durable commits), writes a
# file of realistic records with cairn-loadgen --write-file, points the
# agent's [tail] at it and times, from the agent's start, how long until
# every line is in the spool (tail rate) and acknowledged by the aggregator
# (shipping rate). Prints a summary and, last, one JSON line.
#
# Usage: bench/tail_bench.sh [--lines N] [--build-dir DIR]   (default 300000, ./build)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
LINES=300000
BUILD=$REPO/build
while (($# > 0)); do
    case $1 in
    --lines) LINES=$2; shift 2 ;;
    --build-dir) BUILD=$(cd "$2" && pwd); shift 2 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tail_bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $LINES =~ ^[0-9]+$ ]] || { echo "tail_bench.sh: --lines must be a number" >&2; exit 2; }

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_cluster_up tail-bench
"$BUILD/bench/cairn-loadgen" --write-file "$DIR/audit.jsonl" --count "$LINES" --quiet >/dev/null
BYTES=$(stat -c %s "$DIR/audit.jsonl")

"$REPO/deploy/local-cluster.sh" stop-agent --dir "$DIR/cluster" --region us-east-1 >/dev/null
CONF=$DIR/cluster/agent-us-east-1.conf
sed -i "s|^paths =.*|paths = $DIR/audit.jsonl|; s|^batch_max_lines = .*|batch_max_lines = 5000|" "$CONF"
sed -i "s|^map_size = 1G|map_size = 4G|" "$CONF"
metric() { curl -s "$CAIRN_AGENT_URLS/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

start=$(date +%s.%N)
"$REPO/deploy/local-cluster.sh" start-agent --dir "$DIR/cluster" --region us-east-1 >/dev/null
spooled_at="" acked_at=""
for ((i = 0; i < 6000; i++)); do  # at most 10 minutes
    spooled=$(metric cairn_tail_events_spooled_total)
    acked=$(metric cairn_events_acked_total)
    now=$(date +%s.%N)
    [[ -z $spooled_at && ${spooled%.*} -ge $LINES ]] && spooled_at=$now
    [[ -z $acked_at && ${acked%.*} -ge $LINES ]] && acked_at=$now
    [[ -n $spooled_at && -n $acked_at ]] && break
    sleep 0.1
done
[[ -n $spooled_at && -n $acked_at ]] || { echo "tail_bench.sh: not all lines arrived" >&2; exit 1; }
python3 - "$LINES" "$BYTES" "$start" "$spooled_at" "$acked_at" <<'PY'
import json, sys
lines, size, start, spooled, acked = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:])
out = {"lines": lines, "file_mb": round(size / 1e6, 1),
       "tail_lines_per_s": round(lines / (spooled - start)),
       "shipped_lines_per_s": round(lines / (acked - start)),
       "tail_seconds": round(spooled - start, 2), "shipped_seconds": round(acked - start, 2)}
print(f"{lines} lines ({out['file_mb']} MB): in the spool after {out['tail_seconds']} s "
      f"({out['tail_lines_per_s']} lines/s), acknowledged by the aggregator after "
      f"{out['shipped_seconds']} s ({out['shipped_lines_per_s']} lines/s)")
print(json.dumps(out))
PY
