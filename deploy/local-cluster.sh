#!/usr/bin/env bash
# local-cluster.sh: a multi-region cairn cluster on loopback, for demos and tests.
#
# One cairn-aggregator and one cairn-agent per region, each listening on a
# free 127.0.0.1 port picked at start, with a directory bucket under DIR.
# Everything the cluster has lives under DIR: configs, data, logs, pid files,
# and DIR/cluster.env which tests and scripts source to find it.
#
# With --netns NAME the whole cluster runs inside a network namespace the
# script creates (and down deletes): the aggregator on 127.0.1.1, the regions
# on 127.0.2.1, 127.0.3.1, ..., so a test can cut one region off with an
# nftables rule inside the namespace. Nothing of it is reachable from outside.
#
# It builds nothing. See usage() for where the programs come from.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

HEALTH_TIMEOUT=20 # seconds to wait for each process to answer /health
STOP_TIMEOUT=10   # seconds between SIGTERM and SIGKILL
NETNS=""          # the cluster's network namespace (--netns), "" for none
NS_EXEC=()        # prefix that runs a command inside it: ip netns exec NETNS

usage() {
    cat <<EOF
Usage:
  $PROG up --dir DIR [--regions R1,R2,...] [--interval SECONDS] [--account ID]
           [--bucket URL] [--netns NAME]
  $PROG down --dir DIR
  $PROG status --dir DIR
  $PROG start-aggregator --dir DIR
  $PROG stop-aggregator --dir DIR [--kill]
  $PROG start-agent --dir DIR --region R
  $PROG stop-agent --dir DIR --region R [--kill]
  $PROG --help

Runs a local cairn cluster on loopback: one cairn-aggregator and one
cairn-agent per region, every one on a free 127.0.0.1 port, with a directory
bucket in DIR/bucket.

Commands:
  up                 Create DIR, write DIR/aggregator.conf and
                     DIR/agent-<region>.conf, start every process in the
                     background (they outlive this script), wait until each
                     answers GET /health (at most ${HEALTH_TIMEOUT} s each), then write
                     DIR/cluster.env. If one fails, prints its log, stops the
                     others and exits 1.
  down               Stop every process of the cluster (SIGTERM, SIGKILL after
                     ${STOP_TIMEOUT} s). Safe to run twice, or on a cluster that is not up.
  status             Show which processes are alive. Exit 0 if all are.
  start-aggregator   Start the aggregator again with its existing config.
  stop-aggregator    Stop the aggregator (SIGTERM; --kill sends SIGKILL).
  start-agent        Start the agent of one region again with its config.
  stop-agent         Stop the agent of one region (SIGTERM; --kill: SIGKILL).

Options of up:
  --regions LIST     Comma-separated regions, one agent each (default us-east-1).
  --interval SECONDS Delivery interval of the aggregator (default 300).
  --account ID       12-digit account filled into records that lack one
                     (default 111122223333).
  --bucket URL       Deliver to URL instead of DIR/bucket, e.g.
                     s3://BUCKET/prefix. Its S3 settings come from the AWS_*
                     variables (AWS_REGION, AWS_ENDPOINT_URL_S3,
                     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) of the
                     environment that runs up or start-aggregator.
  --netns NAME       Run the cluster inside a new network namespace NAME
                     (ip netns add; must not exist yet; needs root): the
                     aggregator on 127.0.1.1, region i (1, 2, ...) on
                     127.0.<i+1>.1, each agent connecting from its own
                     address. Every later command starts programs and health
                     checks inside it (ip netns exec); down deletes it. The
                     name is kept in DIR/netns. Clients must run inside the
                     namespace too (ip netns exec NAME curl ...).

Files in DIR: aggregator.conf, agent-<region>.conf, <name>.log, <name>.pid,
aggregator/ (the store), agent-<region>/ (the spools), bucket/ and
cluster.env, which sets CAIRN_BUCKET_DIR, CAIRN_BUCKET_URL, CAIRN_STORE_DIR,
CAIRN_AGGREGATOR_ENDPOINT, CAIRN_AGGREGATOR_HEALTH_URL, CAIRN_AGENT_URLS
(in the order of --regions), CAIRN_REGIONS, CAIRN_AGGREGATOR_PID_FILE,
CAIRN_AGENT_PID_FILES, CAIRN_INTERVAL, CAIRN_ACCOUNT, CAIRN_NETNS (the
namespace, empty without --netns), CAIRN_AGGREGATOR_ADDR and
CAIRN_AGENT_ADDRS (the loopback address of the aggregator and of each agent,
in the order of --regions), CAIRN_AGGREGATOR_URL (its HTTP endpoint, for
'cairn status'), CAIRN_QUERY_URL (the LookupEvents API, for
'aws cloudtrail lookup-events --endpoint-url') and the API's access key pair
CAIRN_QUERY_ACCESS_KEY_ID and CAIRN_QUERY_SECRET_ACCESS_KEY (made anew at each
up, in DIR/keys/query.credentials).

Configs are the example configs deploy/cairn-agent.conf and
deploy/cairn-aggregator.conf with addresses, paths and keys replaced. CURVE
is on: 'cairn keygen' makes the keypairs in DIR/keys (the agents' public keys
in DIR/keys/agents, the aggregator's allow_dir).

Programs: \$CAIRN_AGENT_BIN, \$CAIRN_AGGREGATOR_BIN and \$CAIRN_CLI_BIN (full
paths) if set; otherwise each is looked for as \$CAIRN_BIN_DIR/<program>, then
as \$CAIRN_BIN_DIR/agent/cairn-agent, \$CAIRN_BIN_DIR/aggregator/cairn-aggregator
and \$CAIRN_BIN_DIR/cli/cairn (the layout of a CMake build directory).
CAIRN_BIN_DIR defaults to the repository's ./build.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

# --- programs -------------------------------------------------------------

# find_bin NAME SUBDIR: prints the path of program NAME or dies.
find_bin() {
    local name=$1 subdir=$2 override bin_dir
    case $name in
    cairn-agent) override=${CAIRN_AGENT_BIN:-} ;;
    cairn-aggregator) override=${CAIRN_AGGREGATOR_BIN:-} ;;
    *) override=${CAIRN_CLI_BIN:-} ;;
    esac
    if [[ -n $override ]]; then
        [[ -x $override ]] || die "$override (from the environment) is not an executable file"
        echo "$override"
        return
    fi
    bin_dir=${CAIRN_BIN_DIR:-$REPO_DIR/build}
    if [[ -x $bin_dir/$name ]]; then
        echo "$bin_dir/$name"
    elif [[ -x $bin_dir/$subdir/$name ]]; then
        echo "$bin_dir/$subdir/$name"
    else
        die "cannot find $name in $bin_dir or $bin_dir/$subdir (build first: cmake -S . -B build && cmake --build build; or set CAIRN_BIN_DIR)"
    fi
}

# --- processes ------------------------------------------------------------

# is_ours PID: true if PID is alive and is one of our programs: its argv[0]
# is a cairn-* program (or, for the instant before exec, the setsid/nohup
# that starts one). A zombie or a recycled PID is not ours.
is_ours() {
    local pid=$1 argv=()
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    ((${#argv[@]} > 0)) || return 1
    case ${argv[0]##*/} in
    cairn-*) return 0 ;;
    setsid | nohup | ip) [[ ${argv[*]} == *cairn-* ]] ;;
    *) return 1 ;;
    esac
}

# is_running PID: whether PID is a process that has not exited (a zombie
# has). Not is_ours: just after start_one forks, the child is still a copy
# of this shell until it execs setsid, and would look like someone else's.
is_running() {
    local stat=""
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# read_pid FILE: prints the PID in FILE, or nothing.
read_pid() {
    local file=$1 pid=""
    if [[ -f $file ]]; then
        read -r pid <"$file" || true
    fi
    if [[ $pid =~ ^[0-9]+$ ]]; then
        echo "$pid"
    fi
}

# stop_pid_files [--kill] FILE...: stops the processes of the pid files and
# removes the files. SIGTERM, wait up to STOP_TIMEOUT s, then SIGKILL.
stop_pid_files() {
    local sig=TERM file pid name deadline alive=()
    if [[ ${1:-} == --kill ]]; then
        sig=KILL
        shift
    fi
    for file in "$@"; do
        pid=$(read_pid "$file")
        name=$(basename "$file" .pid)
        if [[ -n $pid ]] && is_ours "$pid"; then
            echo "stopping $name (pid $pid, SIG$sig)"
            kill "-$sig" "$pid" 2>/dev/null || true
            alive+=("$pid")
        elif [[ -f $file ]]; then
            echo "$name is not running"
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while ((${#alive[@]} > 0)); do
        local still=()
        for pid in "${alive[@]}"; do
            if is_ours "$pid"; then still+=("$pid"); fi
        done
        alive=("${still[@]+"${still[@]}"}")
        ((${#alive[@]} > 0)) || break
        if ((SECONDS >= deadline)); then
            for pid in "${alive[@]}"; do
                echo "pid $pid did not stop within ${STOP_TIMEOUT} s: SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
            done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f -- "$@"
}

# start_one DIR NAME BIN CONF: starts BIN --config CONF in its own session,
# output to DIR/NAME.log, PID to DIR/NAME.pid.
start_one() {
    local dir=$1 name=$2 bin=$3 conf=$4 pid
    pid=$(read_pid "$dir/$name.pid")
    if [[ -n $pid ]] && is_ours "$pid"; then
        die "$name is already running (pid $pid)"
    fi
    [[ -f $conf ]] || die "missing $conf: run '$PROG up --dir $dir' first"
    {
        echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $bin --config $conf"
    } >>"$dir/$name.log"
    # Without job control a background job is not a process-group leader, so
    # setsid execs in place and $! is the program's own PID (ip netns exec
    # execs in place too).
    "${NS_EXEC[@]+"${NS_EXEC[@]}"}" setsid nohup "$bin" --config "$conf" >>"$dir/$name.log" 2>&1 </dev/null &
    echo "$!" >"$dir/$name.pid"
}

# wait_healthy DIR NAME URL: waits until URL answers 200. On failure prints
# the log tail and returns 1.
wait_healthy() {
    local dir=$1 name=$2 url=$3 pid deadline
    pid=$(read_pid "$dir/$name.pid")
    deadline=$((SECONDS + HEALTH_TIMEOUT))
    while :; do
        if "${NS_EXEC[@]+"${NS_EXEC[@]}"}" curl -sf --max-time 2 -o /dev/null "$url"; then
            echo "$name is up (pid $pid, $url)"
            return 0
        fi
        if ! is_running "$pid"; then
            echo "$PROG: $name (pid $pid) exited during start; last lines of $dir/$name.log:" >&2
            tail -n 40 "$dir/$name.log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$PROG: $name did not answer $url within ${HEALTH_TIMEOUT} s; last lines of $dir/$name.log:" >&2
            tail -n 40 "$dir/$name.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

# conf_value FILE SECTION KEY: prints the (unquoted) value of SECTION.KEY.
conf_value() {
    awk -v want_section="$2" -v want_key="$3" '
        /^[[:space:]]*\[/ { s = $0; gsub(/[[:space:]\[\]]/, "", s); section = s; next }
        section == want_section && $0 ~ "^[[:space:]]*" want_key "[[:space:]]*=" {
            v = $0; sub(/^[^=]*=[[:space:]]*/, "", v)
            if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) } else { sub(/[[:space:]]+[#;].*$/, "", v) }
            sub(/[[:space:]]+$/, "", v); print v; exit
        }' "$1"
}

# health_url CONF: http://HOST:PORT/health from the [http] listen of CONF.
health_url() {
    local listen
    listen=$(conf_value "$1" http listen)
    [[ -n $listen ]] || die "$1 has no [http] listen"
    echo "http://$listen/health"
}

# free_ports N: prints N distinct free loopback TCP ports, one a line.
free_ports() {
    "${NS_EXEC[@]+"${NS_EXEC[@]}"}" python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# --- network namespace ----------------------------------------------------

# use_netns NAME: run every later program and health check inside NAME.
use_netns() {
    NETNS=$1
    NS_EXEC=(ip netns exec "$NETNS")
}

# netns_exists NAME: true if the network namespace NAME exists.
netns_exists() {
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qxF -- "$1"
}

# load_netns DIR: if the cluster in DIR runs in a namespace (DIR/netns), use it.
load_netns() {
    local name=""
    if [[ -f $1/netns ]]; then
        read -r name <"$1/netns" || true
    fi
    if [[ -n $name ]]; then use_netns "$name"; fi
}

# create_netns DIR NAME: creates the namespace NAME with its lo up, records
# it in DIR/netns (down deletes only what is recorded there) and uses it.
# Every 127.x.y.z address works on lo inside it without adding one: the
# kernel's local route covers 127.0.0.0/8.
create_netns() {
    local dir=$1 name=$2
    command -v ip >/dev/null || die "--netns needs ip (iproute2)"
    if netns_exists "$name"; then
        die "network namespace $name exists already; pick another name (this script deletes only namespaces it made)"
    fi
    ip netns add "$name" || die "cannot create network namespace $name (needs root)"
    echo "$name" >"$dir/netns"
    if ! ip -n "$name" link set lo up; then
        delete_netns "$dir"
        die "cannot bring lo up in network namespace $name"
    fi
    use_netns "$name"
    echo "created network namespace $name"
}

# delete_netns DIR: deletes the namespace recorded in DIR/netns, if any.
delete_netns() {
    local dir=$1 name=""
    [[ -f $dir/netns ]] || return 0
    read -r name <"$dir/netns" || true
    if [[ -n $name ]] && netns_exists "$name"; then
        if ! ip netns del "$name"; then
            echo "$PROG: cannot delete network namespace $name" >&2
            return 1
        fi
        echo "network namespace $name deleted"
    fi
    rm -f "$dir/netns"
}

# --- configs --------------------------------------------------------------

# render_conf TEMPLATE OUT SECTION.KEY=VALUE...: writes OUT as a copy of the
# example config TEMPLATE (deploy/cairn-*.conf) with the given keys' values
# replaced, so the cluster runs with exactly the documented keys and every
# other setting at its documented value. Dies if TEMPLATE lacks a key.
render_conf() {
    local template=$1 out=$2
    shift 2
    [[ -f $template ]] || die "missing example config $template"
    {
        echo "# Written by deploy/local-cluster.sh from $(basename "$template")."
        awk '
            BEGIN {
                for (i = 1; i < ARGC; i++) {
                    eq = index(ARGV[i], "=")
                    want[substr(ARGV[i], 1, eq - 1)] = substr(ARGV[i], eq + 1)
                    delete ARGV[i]
                }
                ARGC = 1
            }
            /^[[:space:]]*\[/ { s = $0; gsub(/[[:space:]\[\]]/, "", s); section = s; print; next }
            /^[[:space:]]*[A-Za-z0-9_]+[[:space:]]*=/ {
                k = $0; sub(/=.*$/, "", k); gsub(/[[:space:]]/, "", k)
                if ((section "." k) in want) {
                    print k " = " want[section "." k]
                    used[section "." k] = 1
                    next
                }
            }
            { print }
            END {
                for (k in want) if (!(k in used)) { print "no key " k > "/dev/stderr"; bad = 1 }
                exit bad
            }' "$@" <"$template"
    } >"$out.tmp" || die "cannot write $out from $template (has the example config changed?)"
    mv "$out.tmp" "$out"
}

write_aggregator_conf() {
    local dir=$1 zmq_port=$2 http_port=$3 interval=$4 bucket=$5 addr=$6
    render_conf "$SCRIPT_DIR/cairn-aggregator.conf" "$dir/aggregator.conf" \
        "aggregator.id=local-aggregator" \
        "aggregator.data_dir=\"$dir/aggregator\"" \
        "aggregator.listen=tcp://$addr:$zmq_port" \
        "aggregator.log_level=info" \
        "http.listen=$addr:$http_port" \
        "store.map_size=4G" \
        "delivery.bucket=\"$bucket\"" \
        "delivery.interval=${interval}s" \
        "security.curve=on" \
        "security.secret_key_file=\"$dir/keys/aggregator.key_secret\"" \
        "security.allow_dir=\"$dir/keys/agents\"" \
        "query.enable=on" \
        "query.credentials_file=\"$dir/keys/query.credentials\""
}

# make_query_credentials DIR: a random access key pair for the aggregator's
# LookupEvents API, in DIR/keys/query.credentials (mode 0600).
make_query_credentials() {
    local dir=$1 id secret
    # head reads a fixed count: no reader is cut off (SIGPIPE under pipefail).
    id=AKIACAIRN$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
    secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077 && echo "$id $secret" >"$dir/keys/query.credentials") ||
        die "cannot write $dir/keys/query.credentials"
}

# write_agent_conf DIR REGION ACCOUNT HTTP_PORT ENDPOINT ADDR
write_agent_conf() {
    local dir=$1 region=$2 account=$3 http_port=$4 endpoint=$5 addr=$6
    render_conf "$SCRIPT_DIR/cairn-agent.conf" "$dir/agent-$region.conf" \
        "agent.region=$region" \
        "agent.id=$region" \
        "agent.account_id=$account" \
        "agent.data_dir=\"$dir/agent-$region\"" \
        "agent.log_level=info" \
        "http.listen=$addr:$http_port" \
        "spool.map_size=1G" \
        "aggregator.endpoint=$endpoint" \
        "security.curve=on" \
        "security.secret_key_file=\"$dir/keys/agent-$region.key_secret\"" \
        "security.aggregator_public_key_file=\"$dir/keys/aggregator.key\""
}

# make_keys DIR CLI REGION...: CURVE keypairs for the aggregator and each
# agent (cairn keygen); the agents' public keys go into the allow_dir.
make_keys() {
    local dir=$1 cli=$2 region
    shift 2
    mkdir -p "$dir/keys/agents"
    chmod 700 "$dir/keys"
    rm -f "$dir/keys/agents"/*
    "$cli" keygen --force "$dir/keys/aggregator.key" >/dev/null ||
        die "cairn keygen failed for the aggregator"
    for region in "$@"; do
        "$cli" keygen --force --agent-id "$region" --region "$region" \
            "$dir/keys/agent-$region.key" >/dev/null ||
            die "cairn keygen failed for agent $region"
        cp "$dir/keys/agent-$region.key" "$dir/keys/agents/agent-$region.key"
    done
}

# --- commands -------------------------------------------------------------

# regions_of DIR: the regions of the cluster, in order (from cluster.env or
# the agent configs).
regions_of() {
    local dir=$1 conf
    if [[ -f $dir/regions ]]; then
        cat "$dir/regions"
        return
    fi
    for conf in "$dir"/agent-*.conf; do
        [[ -f $conf ]] || continue
        conf=$(basename "$conf" .conf)
        echo "${conf#agent-}"
    done
}

cmd_up() {
    local dir=$1 regions_csv=$2 interval=$3 account=$4 bucket=$5 netns=$6
    local agent_bin aggregator_bin cli_bin region regions=() ports=() i file
    [[ $dir != *'"'* && $dir != *$'\n'* ]] || die "--dir must not contain quotes or newlines"
    [[ $interval =~ ^[1-9][0-9]*$ ]] || die "--interval must be a whole number of seconds >= 1"
    [[ $account =~ ^[0-9]{12}$ ]] || die "--account must be 12 digits"
    [[ $bucket != *'"'* && $bucket != *$'\n'* ]] || die "--bucket must not contain quotes or newlines"
    IFS=, read -r -a regions <<<"$regions_csv"
    ((${#regions[@]} > 0)) || die "--regions is empty"
    for region in "${regions[@]}"; do
        [[ $region =~ ^[a-z0-9-]+$ ]] || die "bad region name: '$region'"
    done
    if [[ -n $netns ]]; then
        [[ $netns =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ]] || die "bad --netns name: '$netns'"
        ((${#regions[@]} <= 250)) || die "--netns supports at most 250 regions"
    fi
    agent_bin=$(find_bin cairn-agent agent)
    aggregator_bin=$(find_bin cairn-aggregator aggregator)
    cli_bin=$(find_bin cairn cli)
    command -v curl >/dev/null || die "curl is required"
    command -v python3 >/dev/null || die "python3 is required"

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for file in "$dir"/*.pid; do
        [[ -f $file ]] || continue
        if is_ours "$(read_pid "$file")"; then
            die "a cluster is already running in $dir (stop it: $PROG down --dir $dir)"
        fi
    done
    rm -f "$dir"/*.pid "$dir/cluster.env" "$dir"/agent-*.conf
    # A namespace left by an earlier cluster in DIR (no process runs in it).
    delete_netns "$dir" || die "cannot delete the earlier cluster's network namespace"
    mkdir -p "$dir/aggregator" "$dir/bucket"
    make_keys "$dir" "$cli_bin" "${regions[@]}"
    make_query_credentials "$dir"

    local agg_addr=127.0.0.1 addrs=() endpoint
    if [[ -n $netns ]]; then
        create_netns "$dir" "$netns"
        # From here on a failure of up deletes the namespace again.
        trap 'delete_netns "'"$dir"'" >/dev/null 2>&1 || true' EXIT
        agg_addr=127.0.1.1
    fi
    mapfile -t ports < <(free_ports $((2 + ${#regions[@]})))
    ((${#ports[@]} == 2 + ${#regions[@]})) || die "could not pick free ports"
    local zmq_port=${ports[0]} agg_http_port=${ports[1]}
    write_aggregator_conf "$dir" "$zmq_port" "$agg_http_port" "$interval" "${bucket:-$dir/bucket}" \
        "$agg_addr"
    printf '%s\n' "${regions[@]}" >"$dir/regions"
    local agent_urls=() pid_files=()
    for i in "${!regions[@]}"; do
        region=${regions[$i]}
        mkdir -p "$dir/agent-$region"
        if [[ -n $netns ]]; then
            # Each agent connects from its own address: tcp://SOURCE;DEST.
            addrs+=("127.0.$((i + 2)).1")
            endpoint="tcp://${addrs[$i]}:0;$agg_addr:$zmq_port"
        else
            addrs+=(127.0.0.1)
            endpoint="tcp://127.0.0.1:$zmq_port"
        fi
        write_agent_conf "$dir" "$region" "$account" "${ports[$((i + 2))]}" "$endpoint" "${addrs[$i]}"
        agent_urls+=("http://${addrs[$i]}:${ports[$((i + 2))]}")
        pid_files+=("$dir/agent-$region.pid")
    done

    echo "starting a local cluster in $dir: regions ${regions[*]}, delivery interval ${interval} s"
    start_one "$dir" aggregator "$aggregator_bin" "$dir/aggregator.conf"
    for region in "${regions[@]}"; do
        start_one "$dir" "agent-$region" "$agent_bin" "$dir/agent-$region.conf"
    done
    local failed=0 url
    url=$(health_url "$dir/aggregator.conf")
    wait_healthy "$dir" aggregator "$url" || failed=1
    for region in "${regions[@]}"; do
        ((failed)) && break
        url=$(health_url "$dir/agent-$region.conf")
        wait_healthy "$dir" "agent-$region" "$url" || failed=1
    done
    if ((failed)); then
        stop_pid_files "$dir"/*.pid
        die "the cluster did not start"
    fi

    cat >"$dir/cluster.env.tmp" <<EOF
# Written by deploy/local-cluster.sh up; source it to find the cluster.
CAIRN_CLUSTER_DIR="$dir"
CAIRN_BUCKET_DIR="$dir/bucket"
CAIRN_BUCKET_URL="${bucket:-$dir/bucket}"
CAIRN_STORE_DIR="$dir/aggregator"
CAIRN_AGGREGATOR_ENDPOINT="tcp://$agg_addr:$zmq_port"
CAIRN_AGGREGATOR_HEALTH_URL="http://$agg_addr:$agg_http_port/health"
CAIRN_AGENT_URLS="${agent_urls[*]}"
CAIRN_REGIONS="${regions[*]}"
CAIRN_AGGREGATOR_PID_FILE="$dir/aggregator.pid"
CAIRN_AGENT_PID_FILES="${pid_files[*]}"
CAIRN_INTERVAL="$interval"
CAIRN_ACCOUNT="$account"
CAIRN_NETNS="$netns"
CAIRN_AGGREGATOR_ADDR="$agg_addr"
CAIRN_AGENT_ADDRS="${addrs[*]}"
CAIRN_AGGREGATOR_URL="http://$agg_addr:$agg_http_port"
CAIRN_QUERY_URL="http://$agg_addr:$agg_http_port"
CAIRN_QUERY_ACCESS_KEY_ID="$(cut -d' ' -f1 "$dir/keys/query.credentials")"
CAIRN_QUERY_SECRET_ACCESS_KEY="$(cut -d' ' -f2 "$dir/keys/query.credentials")"
EOF
    mv "$dir/cluster.env.tmp" "$dir/cluster.env"
    trap - EXIT
    if [[ -n $netns ]]; then
        echo "the cluster runs in network namespace $netns: reach it with ip netns exec $netns ..."
    fi
    echo "cluster is up; settings in $dir/cluster.env; stop it with: $0 down --dir $dir"
}

cmd_down() {
    local dir=$1 files=() file
    if [[ ! -d $dir ]]; then
        echo "no cluster in $dir"
        return 0
    fi
    for file in "$dir"/*.pid; do
        [[ -f $file ]] && files+=("$file")
    done
    if ((${#files[@]} == 0)); then
        echo "no cluster running in $dir"
    else
        stop_pid_files "${files[@]}"
        echo "cluster in $dir stopped"
    fi
    delete_netns "$dir"
}

cmd_status() {
    local dir=$1 name pid all=0 region
    [[ -d $dir ]] || die "no cluster in $dir"
    local names=(aggregator)
    while read -r region; do
        [[ -n $region ]] && names+=("agent-$region")
    done < <(regions_of "$dir")
    for name in "${names[@]}"; do
        pid=$(read_pid "$dir/$name.pid")
        if [[ -n $pid ]] && is_ours "$pid"; then
            printf '%-24s running  pid %s\n' "$name" "$pid"
        else
            printf '%-24s stopped\n' "$name"
            all=1
        fi
    done
    return "$all"
}

cmd_start() {
    local dir=$1 name=$2 bin=$3 conf url
    conf=$dir/$name.conf
    [[ -f $conf ]] || die "missing $conf: run '$PROG up --dir $dir' first"
    url=$(health_url "$conf")
    start_one "$dir" "$name" "$bin" "$conf"
    if ! wait_healthy "$dir" "$name" "$url"; then
        stop_pid_files "$dir/$name.pid"
        die "$name did not start"
    fi
}

cmd_stop() {
    local dir=$1 name=$2 kill_opt=$3
    [[ -d $dir ]] || die "no cluster in $dir"
    if [[ ! -f $dir/$name.pid ]]; then
        echo "$name is not running"
        return 0
    fi
    if [[ -n $kill_opt ]]; then
        stop_pid_files --kill "$dir/$name.pid"
    else
        stop_pid_files "$dir/$name.pid"
    fi
}

main() {
    (($# > 0)) || {
        usage >&2
        exit 2
    }
    local cmd=$1
    shift
    case $cmd in
    -h | --help | help)
        usage
        return 0
        ;;
    up | down | status | start-aggregator | stop-aggregator | start-agent | stop-agent) ;;
    *)
        echo "$PROG: unknown command '$cmd'" >&2
        usage >&2
        exit 2
        ;;
    esac
    local dir="" regions_csv=us-east-1 interval=300 account=111122223333 region="" kill_opt="" bin
    local bucket="" netns=""
    while (($# > 0)); do
        case $1 in
        --dir | --regions | --interval | --account | --region | --bucket | --netns)
            (($# >= 2)) || die "$1 needs a value"
            case $1 in
            --dir) dir=$2 ;;
            --regions) regions_csv=$2 ;;
            --interval) interval=$2 ;;
            --account) account=$2 ;;
            --region) region=$2 ;;
            --bucket) bucket=$2 ;;
            --netns) netns=$2 ;;
            esac
            shift 2
            ;;
        --kill)
            kill_opt=1
            shift
            ;;
        -h | --help)
            usage
            return 0
            ;;
        *) die "unknown option '$1' (see $PROG --help)" ;;
        esac
    done
    [[ -n $dir ]] || die "--dir DIR is required"
    if [[ -d $dir ]]; then dir=$(cd "$dir" && pwd); fi
    [[ -z $netns || $cmd == up ]] || die "--netns is an option of up (later commands read DIR/netns)"
    [[ $cmd == up ]] || load_netns "$dir"
    case $cmd in
    up) cmd_up "$dir" "$regions_csv" "$interval" "$account" "$bucket" "$netns" ;;
    down) cmd_down "$dir" ;;
    status) cmd_status "$dir" ;;
    start-aggregator)
        bin=$(find_bin cairn-aggregator aggregator)
        cmd_start "$dir" aggregator "$bin"
        ;;
    stop-aggregator) cmd_stop "$dir" aggregator "$kill_opt" ;;
    start-agent | stop-agent)
        [[ -n $region ]] || die "$cmd needs --region R"
        [[ $region =~ ^[a-z0-9-]+$ ]] || die "bad region name: '$region'"
        if [[ $cmd == start-agent ]]; then
            bin=$(find_bin cairn-agent agent)
            cmd_start "$dir" "agent-$region" "$bin"
        else
            cmd_stop "$dir" "agent-$region" "$kill_opt"
        fi
        ;;
    esac
}

main "$@"
