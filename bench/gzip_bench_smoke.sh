#!/usr/bin/env bash
# gzip_bench_smoke.sh: the smoke test of cairn-gzip-bench (ctest bench_gzip).
# Writes 2,000 records with cairn-loadgen, runs cairn-gzip-bench at levels 1
# and 6, and fails unless its JSON line counts the records, names both
# levels, and reports output smaller than the input with more CPU at level
# 6 than nothing; then checks that a bad level is refused with status 2. It
# never asserts a speed.
#
# Usage: gzip_bench_smoke.sh --build-dir DIR
set -euo pipefail

BUILD_DIR=
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    *) echo "usage: $0 --build-dir DIR" >&2; exit 2 ;;
    esac
done
[ -n "$BUILD_DIR" ] || { echo "usage: $0 --build-dir DIR" >&2; exit 2; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BUILD_DIR/bench/cairn-loadgen" --quiet --count 2000 --write-file "$WORK/recs.jsonl" >/dev/null
"$BUILD_DIR/bench/cairn-gzip-bench" --file "$WORK/recs.jsonl" --level 1 --level 6 >"$WORK/out"
tail -n 1 "$WORK/out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["lines"] == 2000, d
assert [l["level"] for l in d["levels"]] == [1, 6], d
for l in d["levels"]:
    assert 0 < l["gzip_bytes"] < d["bytes"], l
    assert l["ratio"] > 1 and l["cpu_s_per_million"] >= 0, l
print("cairn-gzip-bench: ok,", ", ".join("level %d ratio %.2f" % (l["level"], l["ratio"]) for l in d["levels"]))
'
set +e
"$BUILD_DIR/bench/cairn-gzip-bench" --file "$WORK/recs.jsonl" --level 13 2>"$WORK/err"
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "level wants 0 to 12" "$WORK/err" || { echo "bad level not refused (rc $rc)" >&2; exit 1; }
