#!/usr/bin/env bash
# query_bench.sh: the query benchmark of issue 6 ("Speed").
#
# Fills a store with N synthetic events (cairn-make-store: straight through
# store_put_batches, no fsync, large batches), then times `cairn query` on it:
#
#   1. the first page (--limit 50 --output ndjson) of a query by each indexed
#      attribute, RUNS times each: the median of the whole process's wall time
#      and of the query alone (cairn query --timing: open + query, without
#      process start-up);
#   2. a time-range scan of the whole store to --output ndjson >/dev/null,
#      SCAN_RUNS times: the median rate in events/s.
#
# Usage: bench/query_bench.sh [--events N] [--store DIR] [--runs R]
#                             [--scan-runs R] [--build-dir DIR] [--rebuild]
#   --events N      events in the store (default 1000000)
#   --store DIR     where the store is (default /tmp/cairn-query-bench-N); an
#                   existing store there is reused unless --rebuild
#   --runs R        runs per attribute (default 9)
#   --scan-runs R   runs of the scan (default 3)
#   --build-dir DIR a CMake build directory (default ./build-bench, configured
#                   Release and built here for the targets cairn and
#                   cairn-make-store)
# Needs about 1.9 GB of disk per million events. Runs nothing on the network.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
events=1000000 store="" runs=9 scan_runs=3 build_dir=$REPO/build-bench rebuild=0
while (($#)); do
    case $1 in
    --events) events=$2; shift 2 ;;
    --store) store=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --scan-runs) scan_runs=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "query_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $events =~ ^[1-9][0-9]*$ ]] || { echo "--events must be a number >= 1" >&2; exit 2; }
store=${store:-/tmp/cairn-query-bench-$events}

if [[ ! -f $build_dir/CMakeCache.txt ]]; then
    cmake -S "$REPO" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" -j"$(nproc)" --target cairn cairn-make-store >/dev/null
cli=$build_dir/cli/cairn
make_store=$build_dir/bench/cairn-make-store

if ((rebuild)) || [[ ! -f $store/data.mdb ]]; then
    rm -rf "$store"
    echo "== building a store of $events events in $store"
    "$make_store" --store "$store" --events "$events" --batch 50000 2>&1 | grep -v ' info: '
fi
echo "== store: $(du -sh "$store" | cut -f1) on disk"

# median LIST...: the middle value of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# time_query ARGS...: runs cairn query ARGS with --timing, RUNS times; prints
# the median wall ms (whole process) and the median in-process query ms.
time_query() {
    local walls=() inner=() i t0 t1 line
    for ((i = 0; i < runs; i++)); do
        t0=$(date +%s%N)
        line=$("$cli" query --store "$store" --timing "$@" 2>&1 >/dev/null | tail -1)
        t1=$(date +%s%N)
        walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1e6}')")
        inner+=("$(sed -E 's/.* events in ([0-9.]+) ms \(store opened in ([0-9.]+) ms\).*/\1 \2/' \
            <<<"$line" | awk '{printf "%.3f", $1 + $2}')")
        count=$(sed -E 's/^cairn query: ([0-9]+) events.*/\1/' <<<"$line")
    done
    printf '%-58s %6s events  wall %7.2f ms  in-process %7.3f ms\n' "$*" "$count" \
        "$(median "${walls[@]}")" "$(median "${inner[@]}")"
}

echo "== process start-up alone (cairn version), median of $runs"
walls=()
for ((i = 0; i < runs; i++)); do
    t0=$(date +%s%N); "$cli" version >/dev/null; t1=$(date +%s%N)
    walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1e6}')")
done
echo "cairn version: $(median "${walls[@]}") ms"

echo "== first page (--limit 50 --output ndjson) by each indexed attribute, median of $runs"
"$cli" query --store "$store" --limit 1 >/dev/null 2>&1 # warm the page cache
for args in "--event-id 00000000-0000-4000-8000-$(printf '%012x' $((events / 2)))" \
    "--event-name Describe000" "--read-only false" "--username user-00042" \
    "--resource-type AWS::Svc07::Thing" "--resource-name bucket-000042" \
    "--resource-name arn:aws:s3:::bucket-000042" "--event-source service07.amazonaws.com" \
    "--access-key-id AKIA0000000000000042" "--region eu-west-1" "--account 100000000003" \
    "--start 30d --end 29d" "--username user-00042 --region eu-west-1" \
    "--username user-09999 --event-name Modify199" "--username no-such-user"; do
    # shellcheck disable=SC2086 # word splitting wanted: args is a list of options
    time_query $args --limit 50 --output ndjson
done

echo "== time-range scan of the whole store to --output ndjson >/dev/null, median of $scan_runs"
rates=()
for ((i = 0; i < scan_runs; i++)); do
    line=$("$cli" query --store "$store" --timing --start 100d --limit 0 --output ndjson \
        2>&1 >/dev/null | tail -1)
    echo "  $line"
    rates+=("$(sed -E 's/.*; ([0-9]+) events\/s$/\1/' <<<"$line")")
done
echo "scan rate: $(median "${rates[@]}") events/s"
