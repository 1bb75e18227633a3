#!/usr/bin/env bash
# delivery_bench.sh: the delivery benchmark of issue 5 ("Speed").
#
# Writes sample records with cairn-loadgen (2 accounts x 3 regions, ~1.3 KB
# each, a few tens of thousands per region), then runs cairn-delivery-bench:
# one five-minute window of --events events (default 1,000,000, ~1.3 GB of
# JSON) in a fresh store, delivered to a directory bucket alone and while the
# bench ingests flat out, and the ingest rate without delivery. The target:
# delivery <= 10 s, ingest during delivery >= 80 % of its rate without.
# Build in Release first:
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j2
# Everything goes to a temporary directory, removed at the end (--keep keeps it).
set -euo pipefail

PROG=$(basename "$0")
BUILD_DIR=build
EVENTS=1000000
SAMPLES=30000
KEEP=0
EXTRA=()

usage() {
    cat <<EOF
Usage: $PROG [--build-dir DIR] [--events N] [--samples N] [--keep] [-- bench options]

  --build-dir DIR   CMake build directory (Release recommended; default ./build)
  --events N        events in the window (default 1000000)
  --samples N       distinct sample records per region (default 30000)
  --keep            keep the work directory
Options after -- go to cairn-delivery-bench (--gzip-level, --part-max-bytes,
--ingest-seconds, ...).
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage >&2; exit 2 ;;
    esac
done

LOADGEN="$BUILD_DIR/bench/cairn-loadgen"
BENCH="$BUILD_DIR/bench/cairn-delivery-bench"
for bin in "$LOADGEN" "$BENCH"; do
    [ -x "$bin" ] || { echo "$PROG: $bin not built" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/cairn-delivery-bench.XXXXXX)
cleanup() { [ "$KEEP" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

ARGS=()
seed=1
for region in us-east-1 eu-west-1 ap-southeast-2; do
    "$LOADGEN" --quiet --write-file "$WORK/$region.jsonl" --region "$region" --accounts 2 \
        --seed $seed --count "$SAMPLES" >/dev/null
    ARGS+=(--sample "$WORK/$region.jsonl")
    seed=$((seed + 1))
done
mkdir -p "$WORK/run"
"$BENCH" --dir "$WORK/run" --events "$EVENTS" "${ARGS[@]}" "${EXTRA[@]}"
