#!/usr/bin/env bash
# run.sh: the end-to-end benchmark of cairn (issue 8).
#
# Starts a local cluster (deploy/local-cluster.sh: durable spool and store,
# directory bucket, loopback), drives it with cairn-loadgen, waits until every
# unique event is stored and (unless --no-delivery) delivered, and measures
# each process from /proc: CPU time (utime+stime), peak RSS (VmHWM) and peak
# anonymous RSS (RssAnon, sampled), bytes on disk, gzip ratio of the bucket.
# Prints one table and, as its last line, one JSON object.
#
# While the load runs, this script forks nothing: it polls /health over
# bash's /dev/tcp and reads /proc with builtins, so its own cost stays out of
# the figures. The counting of the bucket (python) runs after the CPU samples.
set -euo pipefail

PROG=$(basename "$0")
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER="$REPO_DIR/deploy/local-cluster.sh"

usage() {
    cat <<EOF
Usage: $PROG [--quick] [--scenario steady|fan-in|catch-up|delivery|query]
              [--seconds N] [--build-dir DIR] [options]

Scenarios:
  steady    one agent, flat out (default)
  fan-in    three agents (us-east-1, eu-west-1, ap-southeast-2) at once
  catch-up  the aggregator is stopped while the agent takes the load, then
            started: measures how fast the spool drains
  delivery  one agent flat out while windows close and are delivered (interval
            20 s, 60 s of load unless told): how long each window takes and
            the stored rate while a window is delivered, against the rate
            while none is
  query     one agent flat out while \`cairn query\` asks the store, about once
            a second, for the newest 50 events by eventName, by accessKeyId,
            by eventSource and readOnly, by eventID, and in the last minute:
            each query's latency (the whole process) and the ingest rate

Options:
  --quick            ~20,000 events, delivery interval 2 s; checks that every
                     unique event was delivered exactly once (exit 1 if not).
                     Under a minute.
  --seconds N        load duration (default 60; quick mode and catch-up send a
                     count instead)
  --count N          send N events instead of loading for --seconds (default:
                     quick 20,000; catch-up 300,000)
  --build-dir DIR    CMake build directory with the programs (default ./build)
  --interval S       delivery interval (default 300; quick 2)
  --connections N    loadgen connections (default 4 per agent)
  --batch N          records per request (default 100)
  --rate N           paced load, events/s over all agents (default: flat out)
  --duplicates F     share of exact duplicates (default 0.01; quick 0.05)
  --no-delivery      do not wait for delivery (events_delivered is null); the
                     aggregator still delivers each window that closes during
                     the run, beside the ingest (see windows_closed_during_drain)
  --store-map-size S the aggregator's [store] map_size (default 64G: the local
                     cluster's 4G fills at ~1.4 million events)
  --spool-map-size S each agent's [spool] map_size (default: the cluster's)
  --aggregator-set SECTION.KEY=VALUE
                     set a key of the aggregator's config before the load
                     (repeatable), e.g. store.group_commit_max_bytes=4M
  --agent-set SECTION.KEY=VALUE
                     the same for every agent, e.g. aggregator.window_bytes=8M
  --keep DIR         keep the cluster's files in DIR (default: a temporary
                     directory, removed at exit)
  -h, --help         show this help

Figures: events_per_s_end_to_end counts unique events from the first request
until the last is in the aggregator's store (durable, deduplicated);
cpu_s_per_million is agent(s) + aggregator, from the start of the load until
the last window is delivered (until stored with --no-delivery), per million
unique events. The load generator's own CPU is shown apart.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

# --- arguments ---------------------------------------------------------------

QUICK=0 SCENARIO=steady SECONDS_OPT="" COUNT="" BUILD_DIR="$REPO_DIR/build" INTERVAL=""
CONNECTIONS="" BATCH=100 RATE=0 DUPLICATES="" WAIT_DELIVERY=1 KEEP_DIR=""
STORE_MAP_SIZE=64G SPOOL_MAP_SIZE="" AGGREGATOR_SETS=() AGENT_SETS=()
while (($# > 0)); do
    case $1 in
    --quick) QUICK=1 ; shift ;;
    --no-delivery) WAIT_DELIVERY=0 ; shift ;;
    -h | --help) usage ; exit 0 ;;
    --scenario | --seconds | --count | --build-dir | --interval | --connections | --batch | \
        --rate | --duplicates | --keep | --store-map-size | --spool-map-size | \
        --aggregator-set | --agent-set)
        (($# >= 2)) || die "$1 needs a value"
        case $1 in
        --scenario) SCENARIO=$2 ;;
        --seconds) SECONDS_OPT=$2 ;;
        --count) COUNT=$2 ;;
        --build-dir) BUILD_DIR=$2 ;;
        --interval) INTERVAL=$2 ;;
        --connections) CONNECTIONS=$2 ;;
        --batch) BATCH=$2 ;;
        --rate) RATE=$2 ;;
        --duplicates) DUPLICATES=$2 ;;
        --keep) KEEP_DIR=$2 ;;
        --store-map-size) STORE_MAP_SIZE=$2 ;;
        --spool-map-size) SPOOL_MAP_SIZE=$2 ;;
        --aggregator-set | --agent-set)
            [[ $2 =~ ^[a-z_]+\.[a-z_]+=.+$ ]] || die "$1 wants SECTION.KEY=VALUE, not '$2'"
            if [[ $1 == --agent-set ]]; then AGENT_SETS+=("$2"); else AGGREGATOR_SETS+=("$2"); fi
            ;;
        esac
        shift 2
        ;;
    *) die "unknown option '$1' (see $PROG --help)" ;;
    esac
done

case $SCENARIO in
steady | catch-up | delivery | query) REGIONS=us-east-1 ;;
fan-in) REGIONS=us-east-1,eu-west-1,ap-southeast-2 ;;
*) die "unknown scenario '$SCENARIO'" ;;
esac
IFS=, read -r -a REGION_LIST <<<"$REGIONS"
NAGENTS=${#REGION_LIST[@]}

if ((QUICK)); then
    : "${INTERVAL:=2}" "${DUPLICATES:=0.05}"
    [[ -n $SECONDS_OPT || -n $COUNT ]] || COUNT=20000
else
    [[ $SCENARIO == delivery ]] && : "${INTERVAL:=20}"
    : "${INTERVAL:=300}" "${DUPLICATES:=0.01}"
    if [[ -z $SECONDS_OPT && -z $COUNT ]]; then
        if [[ $SCENARIO == catch-up ]]; then
            COUNT=300000 # what the agent's 1 GB spool holds comfortably while the aggregator is down
        else
            SECONDS_OPT=60
        fi
    fi
fi
: "${CONNECTIONS:=$((4 * NAGENTS))}"
for v in "$INTERVAL" "$CONNECTIONS" "$BATCH" "$RATE" ${SECONDS_OPT:+"$SECONDS_OPT"} ${COUNT:+"$COUNT"}; do
    [[ $v =~ ^[0-9]+$ ]] || die "'$v' is not a whole number"
done
((INTERVAL >= 1)) || die "--interval must be >= 1"

BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || die "no build directory $BUILD_DIR"
LOADGEN="$BUILD_DIR/bench/cairn-loadgen"
[[ -x $LOADGEN ]] || die "missing $LOADGEN (build first: cmake --build $BUILD_DIR)"
[[ -x $BUILD_DIR/agent/cairn-agent && -x $BUILD_DIR/aggregator/cairn-aggregator ]] ||
    die "missing cairn-agent or cairn-aggregator in $BUILD_DIR"
export CAIRN_BIN_DIR=$BUILD_DIR
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
CLK_TCK=$(getconf CLK_TCK)
COMMIT=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    COMMIT="$COMMIT+dirty"
fi

# --- the cluster and cleanup ----------------------------------------------

if [[ -n $KEEP_DIR ]]; then
    mkdir -p "$KEEP_DIR"
    DIR=$(cd "$KEEP_DIR" && pwd)
    [[ -z $(ls -A "$DIR") ]] || die "--keep $DIR is not empty"
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench.XXXXXX")
fi
LOADGEN_PID=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local rc=$?
    if [[ -n $LOADGEN_PID ]] && kill -0 "$LOADGEN_PID" 2>/dev/null; then
        kill "$LOADGEN_PID" 2>/dev/null || true
        wait "$LOADGEN_PID" 2>/dev/null || true
    fi
    "$CLUSTER" down --dir "$DIR" >>"$DIR/cluster-script.log" 2>&1 || true
    if [[ -z $KEEP_DIR ]]; then
        rm -rf -- "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cluster() {
    if ! "$CLUSTER" "$@" --dir "$DIR" >>"$DIR/cluster-script.log" 2>&1; then
        cat "$DIR/cluster-script.log" >&2
        die "local-cluster.sh $1 failed"
    fi
}

# --- measuring without forking ---------------------------------------------
# The helpers below set globals instead of printing, so no $(...) subshell is
# needed while the load runs.

exec {SLEEP_FD}<> <(:) # a pipe nobody writes: read -t on it is a sleep without a fork
pause() { read -r -t "$1" -u "$SLEEP_FD" || true; }

# health_get URL: sets HEALTH to the body of GET URL (bash /dev/tcp,
# HTTP/1.0). Returns 1 if there is no JSON answer.
HEALTH=""
health_get() {
    local url=${1#http://} hostport path fd line=""
    hostport=${url%%/*}
    path=/${url#*/}
    HEALTH=""
    # (a bare "exec ... 2>/dev/null" would silence this shell's stderr for good)
    { exec {fd}<>"/dev/tcp/${hostport%:*}/${hostport##*:}"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&"$fd"
    while IFS= read -r -t 5 line <&"$fd"; do HEALTH=$line; done
    [[ -n $line ]] && HEALTH=$line # the body has no final newline
    exec {fd}>&-
    [[ $HEALTH == \{* ]]
}

# json_num KEY: sets NUM to the number of "KEY" in $HEALTH (empty if absent).
NUM=""
json_num() {
    NUM=""
    if [[ $HEALTH =~ \"$1\":([0-9]+) ]]; then NUM=${BASH_REMATCH[1]}; fi
}

# proc_read PID: sets P_TICKS (utime+stime, clock ticks), P_HWM (VmHWM, kB),
# P_ANON (RssAnon, kB) and P_WRITE (write_bytes of /proc/PID/io: bytes it
# caused to be written to disk) of PID; all 0 if it is gone.
P_TICKS=0 P_HWM=0 P_ANON=0 P_WRITE=0
proc_read() {
    local line="" rest k v u f
    P_TICKS=0 P_HWM=0 P_ANON=0 P_WRITE=0
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
    rest=${line##*) }
    read -r -a f <<<"$rest"
    P_TICKS=$((f[11] + f[12]))
    {
        while read -r k v u; do
            case $k in
            VmHWM:) P_HWM=$v ;;
            RssAnon:) P_ANON=$v ;;
            esac
        done <"/proc/$1/status"
        while read -r k v; do
            if [[ $k == write_bytes: ]]; then P_WRITE=$v; fi
        done <"/proc/$1/io"
    } 2>/dev/null || true
    return 0
}

read_pid() { local p; read -r p <"$1"; echo "$p"; }

declare -A PIDS=() ANON_MAX=() HWM=() CPU0=() CPU_STORED=() CPU_END=() WRITE0=() WRITE_END=()
# sample_rss: raises ANON_MAX and HWM of every cluster process.
sample_rss() {
    local name
    for name in "${!PIDS[@]}"; do
        proc_read "${PIDS[$name]}"
        ((P_ANON > ${ANON_MAX[$name]:-0})) && ANON_MAX[$name]=$P_ANON
        ((P_HWM > ${HWM[$name]:-0})) && HWM[$name]=$P_HWM
    done
    return 0
}

# cpu_snapshot ARRAY [WRITES]: ARRAY[name] = CPU ticks of every cluster
# process (and WRITES[name] = its disk write bytes).
cpu_snapshot() {
    local -n into=$1
    local name
    for name in "${!PIDS[@]}"; do
        proc_read "${PIDS[$name]}"
        # shellcheck disable=SC2034,SC2004 # into is a nameref to an associative array
        into[$name]=$P_TICKS
        if [[ -n ${2:-} ]]; then
            local -n writes=$2
            # shellcheck disable=SC2034,SC2004
            writes[$name]=$P_WRITE
        fi
    done
}

# timeline_note: appends "time events_stored windows_delivered" to the
# timeline (one GET /health of the aggregator).
timeline_note() {
    local stored
    if health_get "$CAIRN_AGGREGATOR_HEALTH_URL"; then
        json_num events_stored
        stored=$NUM
        json_num windows_delivered
        if [[ -n $stored ]]; then
            printf '%s %s %s\n' "$EPOCHREALTIME" "$stored" "$NUM" >>"$DIR/timeline.txt"
        fi
    fi
    return 0
}

# query_round: the query scenario's queries, each one cairn-query process
# (forks, which is the point), timed; appends "kind ms hits" to queries.txt.
# The values come from the newest stored event, read by the first round.
QUERY_ARGS=()
query_round() {
    local out t kind start hits
    if ((${#QUERY_ARGS[@]} == 0)); then
        out=$("$CAIRN_QUERY" --store "$CAIRN_STORE_DIR" --limit 1 --output json 2>/dev/null) || return 0
        local name source id key ro
        [[ $out =~ \"eventName\":\"([^\"]+)\" ]] && name=${BASH_REMATCH[1]}
        [[ $out =~ \"eventSource\":\"([^\"]+)\" ]] && source=${BASH_REMATCH[1]}
        [[ $out =~ \"eventID\":\"([^\"]+)\" ]] && id=${BASH_REMATCH[1]}
        [[ $out =~ \"userIdentity\":\{[^}]*\"accessKeyId\":\"([^\"]+)\" ]] && key=${BASH_REMATCH[1]}
        [[ $out =~ \"readOnly\":(true|false) ]] && ro=${BASH_REMATCH[1]}
        [[ -n ${name:-} && -n ${source:-} && -n ${id:-} && -n ${ro:-} ]] || return 0
        QUERY_ARGS=("event-name|--event-name|$name" "event-source+read-only|--event-source|$source|--read-only|$ro"
            "event-id|--event-id|$id" "last-minute|--start|1m")
        [[ -n ${key:-} ]] && QUERY_ARGS+=("access-key-id|--access-key-id|$key")
    fi
    for spec in "${QUERY_ARGS[@]}"; do
        IFS='|' read -r -a q <<<"$spec"
        kind=${q[0]}
        start=$EPOCHREALTIME
        hits=$("$CAIRN_QUERY" --store "$CAIRN_STORE_DIR" "${q[@]:1}" --limit 50 --output ndjson 2>/dev/null | wc -l)
        t=$EPOCHREALTIME
        printf '%s %s %s\n' "$kind" "$(( (${t/./} - ${start/./}) / 1000 )).$(( (${t/./} - ${start/./}) % 1000 / 100 ))" "$hits" >>"$DIR/queries.txt"
    done
    return 0
}

# set_conf FILE SECTION KEY VALUE: sets KEY in [SECTION] of FILE (replaced
# where it is, else added at the end of the section, or in a new section).
set_conf() {
    awk -v sec="$2" -v key="$3" -v val="$4" '
        function flush() { if (section == sec && !done) { print key " = " val; done = 1 } }
        /^[[:space:]]*\[/ { flush(); s = $0; gsub(/[[:space:]\[\]]/, "", s); section = s }
        section == sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            if (!done) print key " = " val; done = 1; next }
        { print }
        END { flush(); if (!done) { print "[" sec "]"; print key " = " val } }' "$1" >"$1.tmp" &&
        mv "$1.tmp" "$1"
}

# apply_sets FILE SECTION.KEY=VALUE...: set_conf for each.
apply_sets() {
    local file=$1 set
    shift
    for set in "$@"; do
        set_conf "$file" "${set%%.*}" "$(cut -d= -f1 <<<"${set#*.}")" "${set#*=}"
    done
}

# --- run ---------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
cluster up --regions "$REGIONS" --interval "$INTERVAL"
# shellcheck disable=SC1091
. "$DIR/cluster.env"
PIDS[aggregator]=$(read_pid "$CAIRN_AGGREGATOR_PID_FILE")
for f in $CAIRN_AGENT_PID_FILES; do
    name=$(basename "$f" .pid)
    PIDS[$name]=$(read_pid "$f")
done
read -r -a AGENT_URLS <<<"$CAIRN_AGENT_URLS"

# Map sizes: the cluster's are the documented defaults, too small for a long
# flat-out run. Set them in the generated configs and restart (before load).
if [[ -n $STORE_MAP_SIZE || ${#AGGREGATOR_SETS[@]} -gt 0 ]]; then
    [[ -z $STORE_MAP_SIZE ]] || set_conf "$DIR/aggregator.conf" store map_size "$STORE_MAP_SIZE"
    apply_sets "$DIR/aggregator.conf" "${AGGREGATOR_SETS[@]}"
    cluster stop-aggregator
    cluster start-aggregator
    PIDS[aggregator]=$(read_pid "$CAIRN_AGGREGATOR_PID_FILE")
fi
if [[ -n $SPOOL_MAP_SIZE || ${#AGENT_SETS[@]} -gt 0 ]]; then
    for region in "${REGION_LIST[@]}"; do
        [[ -z $SPOOL_MAP_SIZE ]] ||
            set_conf "$DIR/agent-$region.conf" spool map_size "$SPOOL_MAP_SIZE"
        apply_sets "$DIR/agent-$region.conf" "${AGENT_SETS[@]}"
        cluster stop-agent --region "$region"
        cluster start-agent --region "$region"
        PIDS[agent-$region]=$(read_pid "$DIR/agent-$region.pid")
    done
fi

if [[ $SCENARIO == catch-up ]]; then
    cluster stop-aggregator
    unset 'PIDS[aggregator]'
fi

LOADGEN_ARGS=(--connections "$CONNECTIONS" --batch "$BATCH" --duplicates "$DUPLICATES"
    --region "$REGIONS" --rate "$RATE")
for u in "${AGENT_URLS[@]}"; do LOADGEN_ARGS+=(--url "$u"); done
if [[ -n $COUNT ]]; then LOADGEN_ARGS+=(--count "$COUNT"); fi
if [[ -n $SECONDS_OPT ]]; then LOADGEN_ARGS+=(--seconds "$SECONDS_OPT"); fi

RATE_TEXT="$RATE events/s"
((RATE > 0)) || RATE_TEXT="flat out"
MODE=full
((QUICK)) && MODE=quick
echo "cairn benchmark ($MODE): scenario $SCENARIO, regions $REGIONS, delivery interval ${INTERVAL} s," \
    "$CONNECTIONS connections x $BATCH records, $RATE_TEXT, duplicates $DUPLICATES," \
    "build ${BUILD_TYPE:-?} at $COMMIT, load average $LOAD_BEFORE"

cpu_snapshot CPU0 WRITE0
T0=$EPOCHREALTIME
"$LOADGEN" "${LOADGEN_ARGS[@]}" >"$DIR/loadgen.out" 2>"$DIR/loadgen.err" &
LOADGEN_PID=$!
# loadgen stops itself; this only guards a hang. A paced count takes
# count / rate seconds (a 10-minute partition at 5,000 events/s: 600 s).
LOAD_LIMIT_S=$(( ${SECONDS_OPT:-0} + 300 ))
if ((RATE > 0)) && [[ -n ${COUNT:-} ]]; then LOAD_LIMIT_S=$(( LOAD_LIMIT_S + COUNT / RATE )); fi
deadline=$((${T0%.*} + LOAD_LIMIT_S))
NOTE_EVERY=10 # samples of 0.1 s between timeline notes
[[ $SCENARIO == delivery ]] && NOTE_EVERY=2 # deliveries timed to 0.2 s
CAIRN_QUERY=$BUILD_DIR/cli/cairn-query
[[ $SCENARIO != query || -x $CAIRN_QUERY ]] || die "missing $CAIRN_QUERY"
n=0
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    sample_rss
    if ((n % NOTE_EVERY == 0)) && [[ -n ${PIDS[aggregator]:-} ]]; then timeline_note; fi
    if [[ $SCENARIO == query ]] && ((n >= 30 && n % 10 == 0)); then query_round; fi
    n=$((n + 1))
    if ((${EPOCHREALTIME%.*} > deadline)); then
        kill "$LOADGEN_PID" 2>/dev/null || true
        die "cairn-loadgen did not finish within $LOAD_LIMIT_S s"
    fi
    pause 0.1
done
LOADGEN_RC=0
wait "$LOADGEN_PID" || LOADGEN_RC=$?
LOADGEN_PID=""
T_LOADED=$EPOCHREALTIME
LOADGEN_JSON=$(tail -n 1 "$DIR/loadgen.out")
[[ $LOADGEN_JSON =~ \"events_unique\":([0-9]+) ]] || {
    cat "$DIR/loadgen.out" "$DIR/loadgen.err" >&2
    die "cairn-loadgen printed no summary"
}
UNIQUE=${BASH_REMATCH[1]}
((LOADGEN_RC == 0)) || echo "warning: cairn-loadgen exited $LOADGEN_RC (see errors below)" >&2

T_RESTART=""
if [[ $SCENARIO == catch-up ]]; then
    T_RESTART=$EPOCHREALTIME
    cluster start-aggregator
    PIDS[aggregator]=$(read_pid "$CAIRN_AGGREGATOR_PID_FILE")
    CPU0[aggregator]=0 # a new process: count all of it
    WRITE0[aggregator]=0
fi

# Wait until the store holds every unique event.
STORE_TIMEOUT_S=$(( 120 + ${SECONDS_OPT:-0} * 4 ))
deadline=$((${EPOCHREALTIME%.*} + STORE_TIMEOUT_S))
STORED=0 T_STORED=""
n=0
while :; do
    STORED=0
    if health_get "$CAIRN_AGGREGATOR_HEALTH_URL"; then
        json_num events_stored
        STORED=${NUM:-0}
    fi
    if ((STORED >= UNIQUE)); then
        T_STORED=$EPOCHREALTIME
        break
    fi
    ((${EPOCHREALTIME%.*} <= deadline)) || break
    if ((n++ % 10 == 0)); then
        sample_rss
        printf '%s %s\n' "$EPOCHREALTIME" "$STORED" >>"$DIR/timeline.txt"
    fi
    pause 0.1
done
cpu_snapshot CPU_STORED
sample_rss
[[ -n $T_STORED ]] || echo "warning: only $STORED of $UNIQUE unique events stored after ${STORE_TIMEOUT_S} s" >&2

# Wait until the last window is delivered: the bucket must hold every unique
# event (counted when windows_delivered moves). T_STORED is polled, so it
# can fall just past a window's end when the last event was stored just
# before it: that window, not the next (which stays empty and is never
# delivered), is then the last, so the count starts from its end.
count_bucket() {
    python3 - "$CAIRN_BUCKET_DIR" <<'EOF'
import gzip, json, os, re, sys
files = records = gz = raw = 0
ids = set()
pat = re.compile(rb'"eventID":"([^"]+)"')
for root, _, names in os.walk(sys.argv[1]):
    for n in names:
        if not n.endswith(".json.gz"):
            continue
        p = os.path.join(root, n)
        with open(p, "rb") as f:
            data = f.read()
        try:
            body = gzip.decompress(data)
        except Exception:
            continue  # being written
        files += 1
        gz += len(data)
        raw += len(body)
        found = pat.findall(body)
        records += len(found)
        ids.update(found)
print(json.dumps({"files": files, "records": records, "distinct": len(ids),
                  "gz_bytes": gz, "raw_bytes": raw}))
EOF
}
BUCKET_JSON="" T_DELIVERED="" DELIVERED=""
if ((WAIT_DELIVERY)) && [[ -n $T_STORED ]]; then
    window_end=$(( (${T_STORED%.*} / INTERVAL + 1) * INTERVAL ))
    DELIVERY_TIMEOUT_S=$(( INTERVAL + 120 + ${SECONDS_OPT:-0} * 2 ))
    deadline=$((${EPOCHREALTIME%.*} + DELIVERY_TIMEOUT_S))
    last_windows="" last_change=""
    while ((${EPOCHREALTIME%.*} <= deadline)); do
        if health_get "$CAIRN_AGGREGATOR_HEALTH_URL"; then
            json_num windows_delivered
            w=$NUM
            if [[ $w != "$last_windows" ]]; then
                last_windows=$w
                last_change=$EPOCHREALTIME
                if ((${EPOCHREALTIME%.*} >= window_end - INTERVAL)); then
                    cpu_snapshot CPU_END
                    BUCKET_JSON=$(count_bucket)
                    [[ $BUCKET_JSON =~ \"records\":\ *([0-9]+) ]] && DELIVERED=${BASH_REMATCH[1]}
                    if ((${DELIVERED:-0} >= UNIQUE)); then
                        T_DELIVERED=$last_change
                        break
                    fi
                fi
            fi
        fi
        sample_rss
        pause 0.25
    done
    [[ -n $T_DELIVERED ]] || echo "warning: delivery incomplete after ${DELIVERY_TIMEOUT_S} s (${DELIVERED:-0} of $UNIQUE)" >&2
fi
if [[ -z $T_DELIVERED ]]; then
    CPU_END=()
    for name in "${!CPU_STORED[@]}"; do CPU_END[$name]=${CPU_STORED[$name]}; done
    [[ -n $BUCKET_JSON ]] || BUCKET_JSON=$(count_bucket)
fi
sample_rss
# shellcheck disable=SC2034 # only the writes are used
declare -A CPU_TMP=()
cpu_snapshot CPU_TMP WRITE_END
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

du_bytes() { du -sk "$@" 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s * 1024}'; }
SPOOL_BYTES=$(du_bytes "$DIR"/agent-*/)
STORE_BYTES=$(du_bytes "$CAIRN_STORE_DIR")

# --- report ----------------------------------------------------------------

{
    echo "scenario=$SCENARIO"
    echo "quick=$QUICK"
    echo "regions=$REGIONS"
    echo "interval=$INTERVAL"
    echo "connections=$CONNECTIONS"
    echo "batch=$BATCH"
    echo "rate=$RATE"
    echo "build_type=$BUILD_TYPE"
    echo "commit=$COMMIT"
    echo "load_before=$LOAD_BEFORE"
    echo "load_after=$LOAD_AFTER"
    echo "clk_tck=$CLK_TCK"
    echo "t0=$T0"
    echo "t_loaded=$T_LOADED"
    echo "t_restart=$T_RESTART"
    echo "t_stored=$T_STORED"
    echo "t_delivered=$T_DELIVERED"
    echo "stored=$STORED"
    echo "timeline=$DIR/timeline.txt"
    echo "queries=$DIR/queries.txt"
    echo "wait_delivery=$WAIT_DELIVERY"
    curve=0
    grep -Eq '^[[:space:]]*curve[[:space:]]*=[[:space:]]*(on|true|yes)' "$DIR/aggregator.conf" && curve=1
    echo "curve=$curve"
    echo "spool_bytes=$SPOOL_BYTES"
    echo "store_bytes=$STORE_BYTES"
    echo "loadgen=$LOADGEN_JSON"
    echo "bucket=$BUCKET_JSON"
    for name in "${!PIDS[@]}"; do
        echo "proc.$name=${CPU0[$name]:-0} ${CPU_STORED[$name]:-0} ${CPU_END[$name]:-0} ${HWM[$name]:-0} ${ANON_MAX[$name]:-0} ${WRITE0[$name]:-0} ${WRITE_END[$name]:-0}"
    done
} >"$DIR/measure.txt"

set +e
python3 - "$DIR/measure.txt" <<'EOF'
import json, sys
m, procs = {}, {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    if k.startswith("proc."):
        c0, cs, ce, hwm, anon, w0, we = (int(x) for x in v.split())
        procs[k[5:]] = dict(c0=c0, cs=cs, ce=ce, hwm=hwm, anon=anon, w0=w0, we=we)
    else:
        m[k] = v
tck = int(m["clk_tck"])
lg = json.loads(m["loadgen"])
bucket = json.loads(m["bucket"]) if m["bucket"] else {}
unique = lg["events_unique"]
f = lambda k: float(m[k]) if m.get(k) else None
t0, t_stored, t_delivered, t_restart = f("t0"), f("t_stored"), f("t_delivered"), f("t_restart")
last_window_end = None  # the end of the window that held the last event
if t_stored and t_delivered:
    last_window_end = (int(t_stored) // int(m["interval"]) + 1) * int(m["interval"])
    if t_delivered < last_window_end:  # stored just before a window's end (see the wait)
        last_window_end -= int(m["interval"])
delivered = bucket.get("records") if m["wait_delivery"] == "1" or m["quick"] == "1" else None
per_m = lambda x: x * 1e6 / unique if unique else None
agents = sorted(n for n in procs if n.startswith("agent-"))
cpu = {n: (p["ce"] - p["c0"]) / tck for n, p in procs.items()}
cpu_stored = {n: (p["cs"] - p["c0"]) / tck for n, p in procs.items()}
cpu_total = sum(cpu.values())
e2e = unique / (t_stored - t0) if t_stored else None
drain = unique / (t_stored - t_restart) if t_stored and t_restart else None
# Windows that closed while a catch-up drained: each one's delivery ran beside
# the drain (the interval is UTC-aligned, as the aggregator's windows are).
closed_in_drain = None
if t_stored and t_restart:
    iv = int(m["interval"])
    closed_in_drain = max(0, int(t_stored // iv) - int(t_restart // iv))
ratio = bucket["raw_bytes"] / bucket["gz_bytes"] if bucket.get("gz_bytes") else None
agg = procs.get("aggregator", {})
# Stored events/s over each 10 s from the start of the load (from the timeline).
tl = []
try:
    tl = [tuple(float(x) for x in line.split()) for line in open(m["timeline"])]
except OSError:
    pass
interval = int(m["interval"])
t_loaded = f("t_loaded")
# Delivery scenario: each window delivered while the load ran, from its end
# to the note where windows_delivered moved; the stored rate inside those
# spans against the rate outside them (load time only).
deliveries, rate_during, rate_between = [], None, None
if m["scenario"] == "delivery" and t0 and t_loaded:
    noted = [p for p in tl if len(p) == 3 and t0 <= p[0] <= t_loaded]
    spans = []
    for a, b in zip(noted, noted[1:]):
        if b[2] > a[2]:
            end = (int(b[0]) // interval) * interval  # the window that just closed
            if end <= t0:
                continue  # a window of events from before the load
            spans.append((end, b[0]))
            deliveries.append(round(b[0] - end, 2))
    inside = [0.0, 0.0]
    outside = [0.0, 0.0]
    for a, b in zip(noted, noted[1:]):
        mid = (a[0] + b[0]) / 2
        acc = inside if any(s <= mid <= e for s, e in spans) else outside
        acc[0] += b[1] - a[1]
        acc[1] += b[0] - a[0]
    rate_during = round(inside[0] / inside[1]) if inside[1] else None
    rate_between = round(outside[0] / outside[1]) if outside[1] else None
# Query scenario: latency of each kind of query.
queries = {}
try:
    for line in open(m["queries"]):
        kind, ms, hits = line.split()
        queries.setdefault(kind, []).append((float(ms), int(hits)))
except OSError:
    pass
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None
rates = []
if tl and t0:
    end = t_stored or tl[-1][0]
    edge, i = t0 + 10, 0
    prev = (t0, 0.0)
    while edge <= end + 10 and i < len(tl):
        while i < len(tl) and tl[i][0] < edge:
            i += 1
        cur = tl[i - 1] if i else prev
        if cur[0] > prev[0]:
            rates.append(round((cur[1] - prev[1]) / (cur[0] - prev[0])))
        prev = cur
        edge += 10
writes = {n: p["we"] - p["w0"] for n, p in procs.items()}
out = {
    "scenario": m["scenario"], "quick": m["quick"] == "1", "build_type": m["build_type"], "commit": m["commit"],
    "regions": m["regions"].split(","), "interval_s": int(m["interval"]),
    "connections": int(m["connections"]), "batch": int(m["batch"]), "rate_target": float(m["rate"]),
    "curve": m["curve"] == "1", "durable": True,
    "events_sent": lg["events_sent"], "events_accepted": lg["events_accepted"],
    "events_unique": unique, "duplicates_sent": lg["duplicates_sent"], "errors": lg["errors"],
    "retries_503": lg.get("retries_503", 0),
    "events_stored": int(m["stored"] or 0), "events_delivered": delivered,
    "events_delivered_distinct": bucket.get("distinct") if delivered is not None else None,
    "avg_record_bytes": lg["avg_record_bytes"],
    "events_per_s_accepted": lg["rate"],
    "events_per_s_end_to_end": round(e2e, 1) if e2e else None,
    "drain_events_per_s": round(drain, 1) if drain else None,
    "windows_closed_during_drain": closed_in_drain,
    "seconds_load": lg["seconds"],
    "seconds_to_stored": round(t_stored - t0, 3) if t_stored else None,
    "delivery_lag_s": round(t_delivered - last_window_end, 2) if t_delivered else None,
    "p50_capture_ms": lg["p50_ms"], "p99_capture_ms": lg["p99_ms"], "max_capture_ms": lg["max_ms"],
    "cpu_includes_delivery": bool(t_delivered),
    "cpu_s_per_million": round(per_m(cpu_total), 2) if unique else None,
    "cpu_s_per_million_agents": round(per_m(sum(cpu[a] for a in agents)), 2) if unique else None,
    "cpu_s_per_million_aggregator": round(per_m(cpu.get("aggregator", 0)), 2) if unique else None,
    "cpu_s_per_million_to_stored": round(per_m(sum(cpu_stored.values())), 2) if unique else None,
    "cpu_s_loadgen": lg["cpu_s"],
    "rss_agent_kib": max((procs[a]["hwm"] for a in agents), default=0),
    "rss_anon_agent_kib": max((procs[a]["anon"] for a in agents), default=0),
    "rss_aggregator_kib": agg.get("hwm", 0),
    "rss_anon_aggregator_kib": agg.get("anon", 0),
    "spool_bytes_per_million": round(per_m(int(m["spool_bytes"]))) if unique else None,
    "store_bytes_per_million": round(per_m(int(m["store_bytes"]))) if unique else None,
    "bucket_bytes_per_million": round(per_m(bucket["gz_bytes"])) if bucket.get("gz_bytes") else None,
    "compression_ratio": round(ratio, 2) if ratio else None,
    "disk_write_bytes_per_event_agents": round(sum(writes[a] for a in agents) / unique) if unique else None,
    "disk_write_bytes_per_event_aggregator": round(writes.get("aggregator", 0) / unique) if unique else None,
    "stored_events_per_s_each_10s": rates,
    "delivery_seconds_each_window": deliveries if m["scenario"] == "delivery" else None,
    "stored_events_per_s_during_delivery": rate_during,
    "stored_events_per_s_between_deliveries": rate_between,
    "query_ms": {k: {"count": len(v), "p50": pct([x[0] for x in v], 50), "p99": pct([x[0] for x in v], 99),
                     "max": max(x[0] for x in v), "hits_min": min(x[1] for x in v)}
                 for k, v in sorted(queries.items())} if m["scenario"] == "query" else None,
    "load_before": m["load_before"], "load_after": m["load_after"],
}
def fmt(v, unit=""):
    if v is None: return "-"
    if isinstance(v, float): return f"{v:,.2f}{unit}"
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"
rows = [
    ("events sent / unique / duplicates", f"{out['events_sent']:,} / {unique:,} / {out['duplicates_sent']:,}"),
    ("requests answered 503 (spool full; retried after Retry-After)", f"{out['retries_503']:,}"),
    ("events stored / delivered (distinct)", f"{out['events_stored']:,} / {fmt(delivered)} ({fmt(out['events_delivered_distinct'])})"),
    ("record size, average", fmt(out["avg_record_bytes"], " B")),
    ("accepted (HTTP 200) events/s", fmt(out["events_per_s_accepted"])),
    ("end to end (first send -> all stored) events/s", fmt(out["events_per_s_end_to_end"])),
]
if drain:
    rows.append(("catch-up drain events/s (aggregator start -> all stored)", fmt(out["drain_events_per_s"])))
    rows.append(("windows closed during the drain (delivered beside it)",
                 fmt(out["windows_closed_during_drain"])))
rows += [
    ("load seconds / seconds to stored", f"{out['seconds_load']:.2f} / {fmt(out['seconds_to_stored'])}"),
    ("delivery: last window delivered after its end", fmt(out["delivery_lag_s"], " s")),
    ("capture->durable (HTTP answer) p50 / p99 / max", f"{out['p50_capture_ms']:.2f} / {out['p99_capture_ms']:.2f} / {out['max_capture_ms']:.2f} ms"),
    ("CPU s per million events, agents + aggregator", fmt(out["cpu_s_per_million"]) + ("" if t_delivered else " (no delivery)")),
]
for n in agents + (["aggregator"] if "aggregator" in procs else []):
    rows.append((f"  {n}: CPU s (per million)", f"{cpu[n]:.2f} ({per_m(cpu[n]):.2f}); to stored {cpu_stored[n]:.2f}"))
rows.append(("  cairn-loadgen: CPU s", f"{lg['cpu_s']:.2f}"))
for n in agents + (["aggregator"] if "aggregator" in procs else []):
    rows.append((f"  {n}: peak RSS / peak anon RSS", f"{procs[n]['hwm']:,} / {procs[n]['anon']:,} KiB"))
rows += [
    ("disk, MB per million events: spool (high water) / store / bucket",
     " / ".join("-" if out[k] is None else f"{out[k] / 1e6:,.0f}"
                for k in ("spool_bytes_per_million", "store_bytes_per_million", "bucket_bytes_per_million"))),
    ("compression ratio (JSON / gzip)", fmt(out["compression_ratio"])),
    ("bytes written to disk per event: agents / aggregator",
     f"{fmt(out['disk_write_bytes_per_event_agents'])} / {fmt(out['disk_write_bytes_per_event_aggregator'])}"),
    ("stored events/s, each 10 s from the start", " ".join(f"{r:,}" for r in rates) or "-"),
]
if m["scenario"] == "delivery":
    rows += [
        ("windows delivered during the load: seconds after each end",
         " ".join(f"{d:.1f}" for d in deliveries) or "none"),
        ("stored events/s while a window is delivered / while none is",
         f"{fmt(rate_during)} / {fmt(rate_between)}"),
    ]
if m["scenario"] == "query":
    for k, v in sorted(out["query_ms"].items()):
        rows.append((f"query by {k}: count, p50 / p99 / max ms, fewest hits",
                     f"{v['count']}, {v['p50']:.1f} / {v['p99']:.1f} / {v['max']:.1f}, {v['hits_min']}"))
rows += [
    ("load average before / after", f"{out['load_before']} / {out['load_after']}"),
]
w = max(len(r[0]) for r in rows)
print("-" * (w + 40))
for k, v in rows:
    print(f"{k:<{w}}  {v}")
print("-" * (w + 40))
problems = []
if lg["errors"]:
    problems.append(f"{lg['errors']} requests failed")
if out["events_stored"] != unique:
    problems.append(f"stored {out['events_stored']} != unique sent {unique}")
if delivered is not None and (delivered != unique or out["events_delivered_distinct"] != delivered):
    problems.append(f"delivered {delivered} (distinct {out['events_delivered_distinct']}) != unique sent {unique}")
if m["scenario"] == "delivery" and not deliveries:
    problems.append("no window was delivered during the load (longer --seconds or shorter --interval)")
if m["scenario"] == "query" and not queries:
    problems.append("no query ran during the load (longer --seconds)")
if m["scenario"] == "query":
    problems += [f"query by {k} found nothing" for k, v in out["query_ms"].items() if v["hits_min"] == 0]
if m["quick"] == "1":
    need = ["events_per_s_end_to_end", "cpu_s_per_million", "p99_capture_ms", "rss_agent_kib",
            "rss_anon_aggregator_kib", "events_sent", "events_delivered", "compression_ratio"]
    problems += [f"{k} missing" for k in need if not out.get(k)]
for p in problems:
    print("FAIL:", p)
out["ok"] = not problems
print(json.dumps(out))
sys.exit(1 if problems else 0)
EOF
rc=$?
if ((rc != 0)) && [[ -s $DIR/loadgen.err ]]; then
    echo "cairn-loadgen said:" >&2
    tail -n 5 "$DIR/loadgen.err" >&2
fi
exit "$rc"
