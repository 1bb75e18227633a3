#!/usr/bin/env bash
# test_package.sh: the Debian package, without installing it on this machine.
#
#   1. builds it with `cpack -G DEB` from the build tree, into a scratch dir;
#   2. checks its contents (programs, conffiles, units, man pages, maintainer
#      scripts) and its control fields (Depends computed by dpkg-shlibdeps);
#   3. checks the units with `systemd-analyze verify` and the man pages with
#      man/groff, when those are installed;
#   4. unpacks it (dpkg -x) into a scratch root and runs its postinst there
#      (DPKG_ROOT) with adduser, getent, chown and the systemd helpers
#      replaced by stubs that log their calls: user, directories, keys,
#      allow-list, services enabled; a second run changes nothing;
#   5. checks the shipped configs with the unpacked daemons' --check-config,
#      then runs both daemons on loopback ports with those configs (paths
#      moved into the scratch root) and the keys postinst made: an event
#      posted to the agent must reach a delivered log file, and SIGTERM must
#      stop both with status 0;
#   6. runs postrm purge there: the generated keys go.
#
# Usage: test_package.sh --build-dir DIR --version X.Y.Z
# Exit 0 on success, 1 on failure, 77 (skipped) without cpack or dpkg-deb.
# Loopback only; every wait is bounded.
set -euo pipefail

PROG=test_package.sh
BUILD_DIR=
VERSION=
while (($#)); do
    case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    *) echo "usage: $PROG --build-dir DIR --version X.Y.Z" >&2; exit 2 ;;
    esac
done
[[ -n $BUILD_DIR && -n $VERSION ]] || { echo "usage: $PROG --build-dir DIR --version X.Y.Z" >&2; exit 2; }
for tool in cpack dpkg-deb dpkg-shlibdeps python3; do
    command -v "$tool" >/dev/null || { echo "$PROG: SKIP: no $tool (install dpkg-dev)"; exit 77; }
done

WORK=$(mktemp -d /tmp/cairn-package.XXXXXX)
ROOT=$WORK/root
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "$PROG: FAIL: $*" >&2
    for log in "$WORK"/*.log; do
        [[ -f $log ]] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
}
ok() { echo "ok: $*"; }

# --- 1. build -------------------------------------------------------------

# From the build tree: CPack first builds its "preinstall" target there.
(cd "$BUILD_DIR" && cpack -G DEB -B "$WORK/cpack") >"$WORK/cpack.log" 2>&1 ||
    fail "cpack -G DEB"
debs=("$WORK"/cpack/cairn_"$VERSION"-*.deb)
[[ -f ${debs[0]} ]] || fail "no cairn_$VERSION-*.deb in $WORK/cpack"
DEB=${debs[0]}
ok "built $(basename "$DEB")"

# --- 2. contents and control ----------------------------------------------

dpkg-deb -c "$DEB" | awk '{print $1, $NF}' >"$WORK/contents"
for want in "-rwxr-xr-x ./usr/bin/cairn-agent" "-rwxr-xr-x ./usr/bin/cairn-aggregator" \
    "-rwxr-xr-x ./usr/bin/cairn" \
    "-rw-r--r-- ./etc/cairn/cairn-agent.conf" "-rw-r--r-- ./etc/cairn/cairn-aggregator.conf" \
    "-rw-r--r-- ./usr/lib/systemd/system/cairn-agent.service" \
    "-rw-r--r-- ./usr/lib/systemd/system/cairn-aggregator.service" \
    "-rw-r--r-- ./usr/share/man/man8/cairn-agent.8" \
    "-rw-r--r-- ./usr/share/man/man8/cairn-aggregator.8" \
    "-rw-r--r-- ./usr/share/man/man1/cairn.1"; do
    grep -qxF -- "$want" "$WORK/contents" || fail "package lacks $want"
done
ok "contents: 3 programs, 2 configs, 2 units, 3 man pages"

[[ $(dpkg-deb -f "$DEB" Package) == cairn ]] || fail "Package is not cairn"
[[ $(dpkg-deb -f "$DEB" Version) == "$VERSION"-* ]] || fail "Version is not $VERSION-*"
[[ $(dpkg-deb -f "$DEB" Section) == admin ]] || fail "Section is not admin"
depends=$(dpkg-deb -f "$DEB" Depends)
for lib in adduser libc6 libczmq4 libzmq5 liblmdb0 libcurl4 libmicrohttpd12 libyajl2 \
    libdeflate0 libprotobuf-c1 libssl3; do
    [[ $depends =~ (^|, )$lib( |,|$) ]] || fail "Depends lacks $lib: $depends"
done
ok "Depends: $depends"

dpkg-deb -e "$DEB" "$WORK/control"
diff <(sort "$WORK/control/conffiles") \
    <(printf '%s\n' /etc/cairn/cairn-agent.conf /etc/cairn/cairn-aggregator.conf) ||
    fail "conffiles"
for script in postinst prerm postrm; do
    [[ -x $WORK/control/$script ]] || fail "$script missing or not executable"
    sh -n "$WORK/control/$script" || fail "$script: syntax"
done
ok "conffiles and maintainer scripts"

# --- 3. units and man pages -----------------------------------------------

dpkg -x "$DEB" "$ROOT"
UNITS=$ROOT/usr/lib/systemd/system
for unit in cairn-agent cairn-aggregator; do
    grep -qxF "ExecStart=/usr/bin/$unit --config /etc/cairn/$unit.conf" "$UNITS/$unit.service" ||
        fail "$unit.service: ExecStart"
    for key in User=cairn Group=cairn "StateDirectory=$unit" Restart=on-failure KillSignal=SIGTERM \
        NoNewPrivileges=yes ProtectSystem=strict CapabilityBoundingSet=; do
        grep -qxF "$key" "$UNITS/$unit.service" || fail "$unit.service lacks $key"
    done
done
if command -v systemd-analyze >/dev/null; then
    # verify wants the programs and man pages where the units say: point the
    # units at the unpacked programs and man at the unpacked pages.
    mkdir "$WORK/units"
    for unit in cairn-agent cairn-aggregator; do
        sed "s#/usr/bin/#$ROOT/usr/bin/#g" "$UNITS/$unit.service" >"$WORK/units/$unit.service"
    done
    MANPATH=$ROOT/usr/share/man systemd-analyze verify "$WORK/units/cairn-agent.service" \
        "$WORK/units/cairn-aggregator.service" >"$WORK/verify.log" 2>&1 ||
        fail "systemd-analyze verify: $(cat "$WORK/verify.log")"
    ok "systemd-analyze verify"
else
    echo "note: no systemd-analyze; units checked by grep only"
fi
if command -v groff >/dev/null; then
    for page in "$ROOT"/usr/share/man/man*/*; do
        warnings=$(groff -man -ww -z "$page" 2>&1)
        [[ -z $warnings ]] || fail "$(basename "$page"): $warnings"
    done
    ok "man pages format without warnings"
fi

# --- 4. postinst in a scratch root ----------------------------------------

STUBS=$WORK/stubs
CALLS=$WORK/calls
mkdir "$STUBS"
: >"$CALLS"
stub() { # stub NAME BODY: a command that logs its arguments, then runs BODY.
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$1" "$CALLS" "$2" >"$STUBS/$1"
    chmod +x "$STUBS/$1"
}
stub adduser "touch '$WORK/user-made'"
stub getent "[ \"\$1 \$2\" = 'passwd cairn' ] && [ -e '$WORK/user-made' ]"
stub chown ":"
stub deb-systemd-helper ":" # was-enabled: yes, as on a fresh install
stub deb-systemd-invoke ":"
stub systemctl ":"

run_script() { # run_script NAME ARGS...: a maintainer script in the scratch root
    PATH=$STUBS:$PATH DPKG_ROOT=$ROOT "$WORK/control/$1" "${@:2}" >>"$WORK/scripts.log" 2>&1 ||
        fail "$1 $*"
}
run_script postinst configure

grep -qxF "adduser --quiet --system --group --home /nonexistent --no-create-home --gecos cairn audit trail cairn" \
    "$CALLS" || fail "postinst did not create the user: $(cat "$CALLS")"
for unit in cairn-agent cairn-aggregator; do
    grep -qxF "deb-systemd-helper enable $unit.service" "$CALLS" || fail "postinst did not enable $unit"
done
! grep -q "^deb-systemd-invoke\|^systemctl" "$CALLS" || fail "postinst started services in DPKG_ROOT"
mode() { stat -c %a "$1"; }
for f in aggregator.key agent.key agents/us-east-1.key; do
    [[ $(mode "$ROOT/etc/cairn/$f") == 644 ]] || fail "$f: mode $(mode "$ROOT/etc/cairn/$f")"
done
for f in aggregator.key_secret agent.key_secret; do
    [[ $(mode "$ROOT/etc/cairn/$f") == 640 ]] || fail "$f: mode $(mode "$ROOT/etc/cairn/$f")"
done
for d in etc/cairn etc/cairn/agents var/lib/cairn-agent var/lib/cairn-aggregator; do
    [[ $(mode "$ROOT/$d") == 750 ]] || fail "$d: mode $(mode "$ROOT/$d")"
done
grep -q 'agent_id = "us-east-1"' "$ROOT/etc/cairn/agent.key" || fail "agent key not bound to us-east-1"
grep -q 'region = "us-east-1"' "$ROOT/etc/cairn/agent.key" || fail "agent key not bound to its region"
cmp -s "$ROOT/etc/cairn/agent.key" "$ROOT/etc/cairn/agents/us-east-1.key" || fail "agent key not allowed"
ok "postinst: user, directories, keys (us-east-1), allow-list, services enabled"

sums() { (cd "$ROOT/etc/cairn" && find . -type f | sort | xargs sha256sum); }
before=$(sums)
: >"$CALLS"
run_script postinst configure 0.1.0-1
[[ $(sums) == "$before" ]] || fail "second postinst changed /etc/cairn"
! grep -q "^adduser" "$CALLS" || fail "second postinst ran adduser again"
ok "postinst again (upgrade): nothing changed"

# --- 5. the unpacked programs with the shipped configs ---------------------

for prog in cairn-agent cairn-aggregator cairn; do
    out=$("$ROOT/usr/bin/$prog" --version) || fail "$prog --version"
    [[ $out == "$prog $VERSION" ]] || fail "$prog --version: $out"
    "$ROOT/usr/bin/$prog" --help >/dev/null || fail "$prog --help"
done
ok "--version and --help of the 3 programs"
for prog in cairn-agent cairn-aggregator; do
    "$ROOT/usr/bin/$prog" --config "$ROOT/etc/cairn/$prog.conf" --check-config >/dev/null ||
        fail "$prog --check-config on the shipped config"
done
ok "--check-config accepts both shipped configs"
# Turning CURVE off is one line: the key file settings stay and are ignored.
for prog in cairn-agent cairn-aggregator; do
    sed 's/^curve = on/curve = off/' "$ROOT/etc/cairn/$prog.conf" >"$WORK/$prog-plain.conf"
    grep -q '^curve = off' "$WORK/$prog-plain.conf" || fail "$prog.conf has no 'curve = on' line"
    out=$("$ROOT/usr/bin/$prog" --config "$WORK/$prog-plain.conf" --check-config 2>&1) ||
        fail "$prog --check-config with curve = off: $out"
done
ok "--check-config accepts both shipped configs with curve = off"

read -r ZMQ_PORT AGG_HTTP_PORT AGENT_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
BUCKET=$ROOT/var/lib/cairn-aggregator/bucket
# Paths into the scratch root; loopback ports; a 1 s delivery window.
sed -e "s#/etc/cairn#$ROOT/etc/cairn#g; s#/var/lib/#$ROOT/var/lib/#g" \
    -e "s#^listen = tcp://.*#listen = tcp://127.0.0.1:$ZMQ_PORT#" \
    -e "s#^listen = 127.0.0.1:4791#listen = 127.0.0.1:$AGG_HTTP_PORT#" \
    -e "s#^interval = .*#interval = 1s#; s#^map_size = .*#map_size = 64M#" \
    "$ROOT/etc/cairn/cairn-aggregator.conf" >"$WORK/aggregator.conf"
sed -e "s#/etc/cairn#$ROOT/etc/cairn#g; s#/var/lib/#$ROOT/var/lib/#g" \
    -e "s#^endpoint = .*#endpoint = tcp://127.0.0.1:$ZMQ_PORT#" \
    -e "s#^listen = .*#listen = 127.0.0.1:$AGENT_PORT#; s#^map_size = .*#map_size = 64M#" \
    "$ROOT/etc/cairn/cairn-agent.conf" >"$WORK/agent.conf"
for prog in aggregator agent; do
    "$ROOT/usr/bin/cairn-$prog" --config "$WORK/$prog.conf" --check-config >/dev/null ||
        fail "cairn-$prog --check-config on the moved config"
    ! grep -v '^#' "$WORK/$prog.conf" | grep -q "0\.0\.0\.0\|= /etc\|= /var" ||
        fail "$prog.conf still names a non-loopback or system path"
done

"$ROOT/usr/bin/cairn-aggregator" --config "$WORK/aggregator.conf" >"$WORK/aggregator.log" 2>&1 &
AGG_PID=$!
PIDS+=("$AGG_PID")
"$ROOT/usr/bin/cairn-agent" --config "$WORK/agent.conf" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")

for ((i = 0; i < 100; i++)); do # 20 s
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AGENT_PORT/health" || true)
    [[ $code == 200 ]] && break
    kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent exited"
    sleep 0.2
done
[[ $code == 200 ]] || fail "agent /health: $code after 20 s"
answer=$(curl -s "http://127.0.0.1:$AGENT_PORT/v1/events" -H 'Content-Type: application/json' \
    -d '{"eventName":"PackageTestEvent","eventSource":"s3.amazonaws.com"}')
[[ $answer == *'"accepted":1,'* || $answer == *'"accepted":1}'* ]] || fail "POST /v1/events: $answer"

found=
for ((i = 0; i < 150; i++)); do # 30 s
    while IFS= read -r -d '' f; do
        if gzip -dc "$f" | grep -q PackageTestEvent; then found=$f; break; fi
    done < <(find "$BUCKET" -name '*.json.gz' -print0 2>/dev/null)
    [[ -n $found ]] && break
    kill -0 "$AGG_PID" 2>/dev/null || fail "the aggregator exited"
    sleep 0.2
done
[[ -n $found ]] || fail "the event reached no delivered file in 30 s"
[[ ${found#"$BUCKET"/} == AWSLogs/111122223333/CloudTrail/us-east-1/* ]] || fail "delivered as $found"
ok "event posted to the agent delivered by the aggregator: ${found#"$BUCKET"/}"

stop() { # stop PID NAME: SIGTERM, at most 15 s, exit status 0
    kill -TERM "$1"
    for ((i = 0; i < 75; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$1" 2>/dev/null && fail "$2 still runs 15 s after SIGTERM"
    local rc=0
    wait "$1" || rc=$?
    [[ $rc == 0 ]] || fail "$2 exited $rc after SIGTERM"
}
stop "$AGENT_PID" cairn-agent
stop "$AGG_PID" cairn-aggregator
PIDS=()
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$WORK/agent.log" "$WORK/aggregator.log"; then
    fail "sanitizer report"
fi
ok "SIGTERM stops both with status 0"

# --- 6. postrm purge --------------------------------------------------------

run_script postrm remove
run_script postrm purge
for f in aggregator.key aggregator.key_secret agent.key agent.key_secret agents/us-east-1.key; do
    [[ ! -e $ROOT/etc/cairn/$f ]] || fail "purge left $f"
done
[[ -d $ROOT/var/lib/cairn-aggregator ]] || fail "purge removed the aggregator's state"
ok "postrm purge: generated keys removed, state kept"

echo "$PROG: PASS"
