#!/usr/bin/env python3
"""Transport fault tests: every event an agent acknowledged reaches the bucket
exactly once, whatever happens to the processes and the network in between.

One case per invocation (--case NAME), each on its own local cluster
(deploy/local-cluster.sh, 2-second delivery interval, CURVE on). Feeders post
realistic CloudTrail records (test_spine.Generator) to every agent in
requests of 100-500 records at a bounded rate and remember the eventIDs of
every request answered 200 {"accepted": N}. At the end the test waits
(bounded) until the bucket holds every acknowledged eventID, waits a little
more for late duplicates, and checks that every acknowledged eventID occurs
exactly once across all delivered files and that nothing else is there (a
request whose connection broke under it may or may not have been spooled:
its eventIDs may appear, at most once).

Cases:
  aggregator_kill  the aggregator is SIGKILLed mid-stream, restarted 5 s later.
  agent_kill       one agent is SIGKILLed while a request to it is in flight,
                   restarted; posting to it resumes.
  aggregator_late  the aggregator is stopped right after the cluster starts and
                   started again 30 s later; the agents accept meanwhile.
  partition        the cluster runs in its own network namespace (--netns);
                   one region is cut off from the aggregator for 30 s by an
                   nftables rule inside it, then healed. Its agent must log the
                   silence and reconnect; the other regions keep being stored
                   and delivered during the cut.
  foreign_key      two extra agents: one whose key is not in the allow-list
                   (zauth must deny it, naming its key) and one whose key is in
                   the allow-list but bound to another agent id (refused with
                   "is bound to agent"). Both accept events into their spools;
                   none is ever stored. The legitimate agents are unaffected.

Safety: every request goes to loopback; in the partition case every client
(posters, health checks) runs inside the test's own namespace (ip netns exec),
never from the root namespace. Every process the test starts itself is
stopped by PID; every wait is bounded. Fails on any sanitizer report in the
logs. Only the standard library. Exit 0 on success, 1 on failure.

Internal mode: --poster URL reads one JSON request body per line on stdin,
POSTs each to URL/v1/events and writes one JSON result line per request.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import (REPO, Process, TestRun, argument_parser, free_port, log,  # noqa: E402
                           parse_args)
from test_spine import Generator  # noqa: E402  (same folder)

INTERVAL = 2
BATCH_MIN, BATCH_MAX = 100, 500
DELIVERY_TIMEOUT = 60      # s after the last post until every acked event is in the bucket
SETTLE_SECS = 5 + 2 * INTERVAL  # then this long for late duplicates (ack_timeout + windows)
CASES = ["aggregator_kill", "agent_kill", "aggregator_late", "partition", "foreign_key"]


# --- the poster (runs as a child, possibly inside the namespace) -------------

def poster_main(url):
    """POSTs each stdin line to URL/v1/events; one JSON result line each.

    A request that fails on a reused keep-alive connection before any answer
    is sent again once on a fresh connection (same body, same eventIDs: safe).
    Otherwise a failure is reported, never retried: the caller decides."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port
    if not host or not host.startswith("127."):
        print(json.dumps({"status": None, "error": f"refusing non-loopback URL {url}"}), flush=True)
        return 2
    conn = None
    for line in sys.stdin:
        body = line.rstrip("\n").encode()
        result = None
        for attempt in range(2):
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                result = {"status": resp.status, "body": raw.decode(errors="replace")[:2000],
                          "retry_after": resp.getheader("Retry-After")}
                break
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                    conn = None
                result = {"status": None, "error": f"{type(e).__name__}: {e}"}
                stale = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                       ConnectionResetError))
                if not (reused and stale):
                    break
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


# --- the feeders ---------------------------------------------------------------

class Feeder(threading.Thread):
    """Posts to one agent at a bounded rate, through a poster child process,
    until it has posted its quota or is told to stop."""

    def __init__(self, name, url, prefix, seed, region, quota, rate):
        super().__init__(daemon=True, name=f"feeder-{name}")
        self.name_, self.url, self.region = name, url, region
        self.quota, self.rate = quota, rate
        self.gen = Generator(seed)
        self.proc = subprocess.Popen(prefix + [sys.executable, "-u", os.path.abspath(__file__),
                                               "--poster", url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.lock = threading.Lock()
        self.acked = set()          # eventIDs answered 200
        self.ack_log = []           # (monotonic time of the answer, count) per request
        self.acked_at = []          # (monotonic time, [eventIDs]) per request
        self.maybe = set()          # eventIDs of requests that got no answer
        self.posted = 0             # records posted (any outcome)
        self.requests = 0
        self.errors = []            # (time, what) of requests without a 200
        self.n503 = 0
        self.inflight = None        # number of the request in flight, if any
        self.outcomes = {}          # request number -> HTTP status (None: no answer)
        self.durations = []         # seconds per answered request
        self.resume = threading.Event()
        self.resume.set()
        self.stop_flag = threading.Event()
        self.pause_on_error = False  # wait for resume after a broken request
        self.done = threading.Event()
        self.exc = None

    def _post(self, body):
        self.proc.stdin.write(body + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"status": None, "error": "poster process ended"}
        return json.loads(line)

    def run(self):
        try:
            t0 = time.monotonic()
            while self.posted < self.quota and not self.stop_flag.is_set():
                # Bounded rate: never ahead of rate * elapsed.
                ahead = self.posted / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    self.stop_flag.wait(min(ahead, 1.0))
                    continue
                if not self.resume.wait(0.5):
                    continue
                n = min(self.gen.rng.randint(BATCH_MIN, BATCH_MAX), self.quota - self.posted)
                n = max(n, 1)
                recs = [self.gen.record(self.region) for _ in range(n)]
                ids = [r["eventID"] for r in recs]
                body = json.dumps(recs)
                sent = time.monotonic()
                self.inflight = self.requests
                res = self._post(body)
                self.inflight = None
                now = time.monotonic()
                self.durations.append(now - sent)
                with self.lock:
                    status = res.get("status")
                    self.outcomes[self.requests] = status
                    self.posted += n
                    self.requests += 1
                    accepted = None
                    if status == 200:
                        try:
                            accepted = json.loads(res.get("body", "")).get("accepted")
                        except (ValueError, AttributeError):
                            accepted = None
                    if status == 200 and accepted == n:
                        self.acked.update(ids)
                        self.acked_at.append((now, ids))
                    else:
                        # Not acknowledged: may or may not have been spooled.
                        self.maybe.update(ids)
                        what = res.get("error") or f"{status} {res.get('body', '')[:300]}"
                        self.errors.append((now, what))
                if status == 503:
                    self.n503 += 1
                    ra = res.get("retry_after") or "1"
                    time.sleep(min(float(ra) if ra.isdigit() else 1.0, 2.0))
                elif status is None:
                    if self.pause_on_error:
                        self.resume.clear()
                    else:
                        time.sleep(0.2)
        except Exception as e:  # noqa: BLE001 - reported by the case
            self.exc = e
        finally:
            self.done.set()

    def close(self):
        self.stop_flag.set()
        self.resume.set()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def acked_before(self, t):
        with self.lock:
            return [i for when, ids in self.acked_at if when <= t for i in ids]


def start_feeders(cl, total, secs, seed, regions=None, urls=None, prefix=None):
    """One feeder per region; together total records over about secs."""
    regions = regions or cl.regions
    per = total // len(regions)
    feeders = {}
    for i, region in enumerate(regions):
        url = (urls or cl.agent_url)[region]
        feeders[region] = Feeder(region, url, cl.prefix if prefix is None else prefix,
                                 seed * 100 + i, region, per, per / secs)
    for f in feeders.values():
        f.start()
    return feeders


def wait_feeders(feeders, timeout):
    deadline = time.monotonic() + timeout
    for f in feeders.values():
        f.done.wait(max(0.1, deadline - time.monotonic()))
    return all(f.done.is_set() for f in feeders.values())


def end_feeders(failures, feeders, timeout=60):
    """Waits (at most timeout s) for the feeders to post their quota, then
    stops them; a feeder still posting by then is a failure."""
    if not wait_feeders(feeders, timeout):
        failures.add(f"feeders did not finish within {timeout} s", progress(feeders))
    for f in feeders.values():
        f.close()


def progress(feeders, cl=None):
    parts = [f"{r}: {len(f.acked)} acked/{f.posted} posted" for r, f in feeders.items()]
    if cl is not None:
        parts.append(f"aggregator events_stored={cl.events_stored()}")
    return "; ".join(parts)


# --- the bucket check ----------------------------------------------------------

def count_bucket(bucket):
    """(Counter of eventIDs in the delivered files, files that do not read)."""
    return bucket.event_id_counts()


def wait_bucket(failures, cl, acked, timeout):
    """Waits until every acked eventID is in the bucket; returns seconds taken."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        counts, _ = count_bucket(cl.bucket)
        missing = sum(1 for e in acked if counts[e] == 0)
        if missing == 0:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            failures.add(f"acknowledged events missing from the bucket after {timeout} s",
                         f"{missing} of {len(acked)} (events_stored={cl.events_stored()})")
            return time.monotonic() - t0
        time.sleep(0.5)


def check_bucket(failures, cl, acked, maybe, never=()):
    """Every acked eventID exactly once, maybe ones at most once, nothing else."""
    counts, bad = count_bucket(cl.bucket)
    for b in bad:
        failures.add("a delivered file is not gzip'd {\"Records\":[...]}", b)
    missing = [e for e in acked if counts[e] == 0]
    dups = {e: c for e, c in counts.items() if c > 1}
    foreign = [e for e in counts if e not in acked and e not in maybe]
    never_seen = [e for e in never if counts[e] > 0]
    failures.check(not missing, "an acknowledged event is missing from the bucket",
                   f"{len(missing)} of {len(acked)}, e.g. {missing[:3]}")
    failures.check(not dups, "an event appears more than once in the bucket",
                   f"{len(dups)} eventIDs, e.g. {list(dups.items())[:3]}")
    failures.check(not foreign, "the bucket holds events nobody acknowledged",
                   f"{len(foreign)}, e.g. {foreign[:3]}")
    failures.check(not never_seen, "events of a refused agent were stored",
                   f"{len(never_seen)}, e.g. {never_seen[:3]}")
    n_maybe = sum(1 for e in maybe if counts[e] > 0)
    total = sum(counts.values())
    log(f"bucket: {total} records, {len(counts)} distinct eventIDs; acknowledged {len(acked)}, "
        f"missing {len(missing)}, duplicated {len(dups)}, unacknowledged-but-present {n_maybe} "
        f"of {len(maybe)} maybe")
    return total


def finish(failures, cl, feeders, allowed_errors=(), never=(), result=None):
    """Common end of every case: feeders done, bucket complete, exactly once."""
    acked, maybe = set(), set()
    for region, f in feeders.items():
        failures.check(f.exc is None, "a feeder crashed", f"{region}: {f.exc!r}")
        acked |= f.acked
        maybe |= f.maybe
        if region not in allowed_errors:
            failures.check(not f.errors, "an agent did not answer 200 to a valid request",
                           f"{region}: {len(f.errors)} requests, e.g. {f.errors[:2]}")
    log(f"posting done: {progress(feeders)}")
    log(f"waiting (at most {DELIVERY_TIMEOUT} s) until the bucket holds all {len(acked)} acknowledged events")
    secs = wait_bucket(failures, cl, acked, DELIVERY_TIMEOUT)
    log(f"bucket complete {secs:.1f} s after the last post; {SETTLE_SECS} s more for late duplicates")
    time.sleep(SETTLE_SECS)
    failures.check(cl.ctl("status", check=False) == 0, "a process of the cluster is not running")
    n = check_bucket(failures, cl, acked, maybe, never)
    if result is not None:
        result.update(acked=len(acked), in_bucket=n, maybe=len(maybe))
    return acked, maybe


# --- the cases -------------------------------------------------------------------

def up(t, regions, netns=None):
    extra = ["--regions", ",".join(regions), "--interval", str(INTERVAL)]
    if netns:
        extra += ["--netns", netns]
        log(f"the cluster runs in network namespace {netns}")
    return t.cluster().up(*extra)


def case_aggregator_kill(t, result):
    args, failures = t.args, t.failures
    regions = ["us-east-1", "eu-west-2", "ap-southeast-2"]
    cl = up(t, regions)
    feeders = start_feeders(cl, args.events, 20, args.seed)
    time.sleep(8)
    stored = cl.events_stored()
    log(f"before the kill: {progress(feeders)}; events_stored={stored}")
    failures.check(stored, "nothing stored before the aggregator was killed (not mid-stream)")
    log("SIGKILL the aggregator")
    cl.ctl("stop-aggregator", "--kill")
    killed = time.monotonic()
    time.sleep(5)
    log(f"restarting the aggregator after {time.monotonic() - killed:.1f} s: {progress(feeders)}")
    cl.ctl("start-aggregator")
    end_feeders(failures, feeders)
    finish(failures, cl, feeders, result=result)


def case_agent_kill(t, result):
    args, failures = t.args, t.failures
    regions = ["us-east-1", "eu-west-2", "ap-southeast-2"]
    victim = regions[0]
    cl = up(t, regions)
    feeders = start_feeders(cl, args.events, 20, args.seed)
    feeders[victim].pause_on_error = True
    time.sleep(8)
    # SIGKILL (by the PID local-cluster.sh recorded) while a request to the
    # victim is in flight; local-cluster.sh stop-agent --kill then tidies up.
    pid_file = os.path.join(cl.dir, f"agent-{victim}.pid")
    with open(pid_file) as f:
        pid = int(f.read().strip())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"cairn-agent" in f.read(), f"pid {pid} is not agent-{victim}"
    # A request still unanswered 3 ms after it was handed to the poster has
    # reached the agent: kill then (if the moment passes, wait for the next).
    deadline = time.monotonic() + 10
    req = None
    while time.monotonic() < deadline:
        req = feeders[victim].inflight
        if req is None:
            time.sleep(0.0005)
            continue
        time.sleep(0.003)
        if feeders[victim].inflight == req:
            break
    os.kill(pid, signal.SIGKILL)
    durations = sorted(feeders[victim].durations)
    log(f"SIGKILLed agent-{victim} (pid {pid}) 3 ms into request {req} (median request "
        f"{durations[len(durations) // 2] * 1000:.1f} ms); {progress(feeders)}")
    cl.ctl("stop-agent", "--region", victim, "--kill")
    deadline = time.monotonic() + 35
    while req is not None and req not in feeders[victim].outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    outcome = feeders[victim].outcomes.get(req, "?") if req is not None else "none in flight"
    log(f"the request in flight at the kill got: {outcome if outcome is not None else 'no answer'}")
    if outcome is not None:
        log("note: the kill did not break a request in flight this time (not a failure of cairn)")
    time.sleep(3)
    log(f"restarting agent-{victim}")
    cl.ctl("start-agent", "--region", victim)
    acked_at_restart = len(feeders[victim].acked)
    feeders[victim].resume.set()
    end_feeders(failures, feeders)
    failures.check(len(feeders[victim].acked) > acked_at_restart,
                   "no request to the restarted agent was acknowledged")
    log(f"{victim}: {len(feeders[victim].errors)} requests without answer "
        f"({len(feeders[victim].maybe)} eventIDs that may or may not arrive)")
    finish(failures, cl, feeders, allowed_errors=(victim,), result=result)


def case_aggregator_late(t, result):
    args, failures = t.args, t.failures
    regions = ["us-east-1", "eu-west-2", "ap-southeast-2"]
    cl = up(t, regions)
    cl.ctl("stop-aggregator")
    stopped = time.monotonic()
    feeders = start_feeders(cl, args.events, 40, args.seed)
    while time.monotonic() - stopped < 30:
        time.sleep(5)
        log(f"aggregator down {time.monotonic() - stopped:.0f} s: {progress(feeders)}")
    counts, _ = count_bucket(cl.bucket)
    failures.check(not counts, "events were delivered while the aggregator was down", f"{len(counts)}")
    acked_down = sum(len(f.acked) for f in feeders.values())
    log(f"starting the aggregator; {acked_down} events acknowledged while it was down")
    failures.check(acked_down > 0, "no events acknowledged while the aggregator was down")
    cl.ctl("start-aggregator")
    end_feeders(failures, feeders)
    finish(failures, cl, feeders, result=result)


def case_partition(t, result):
    args, failures = t.args, t.failures
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            raise RuntimeError(f"the partition case needs {tool} (deploy/install-deps.sh installs it)")
    regions = ["us-east-1", "eu-west-2", "ap-southeast-2"]
    victim, others = regions[0], regions[1:]
    netns = f"cairn-t-{os.getpid()}"
    cl = up(t, regions, netns=netns)
    failures.check(cl.netns == netns, "cluster.env lacks CAIRN_NETNS", cl.cenv.get("CAIRN_NETNS"))
    agg_addr = cl.cenv["CAIRN_AGGREGATOR_ADDR"]
    m = re.match(r"^tcp://([0-9.]+):(\d+)$", cl.cenv["CAIRN_AGGREGATOR_ENDPOINT"])
    zmq_port = m.group(2)
    vaddr = cl.agent_addrs[victim]
    failures.check(agg_addr == "127.0.1.1" and vaddr == "127.0.2.1" and m.group(1) == agg_addr,
                   "unexpected addresses in the namespace", f"{agg_addr} {cl.agent_addrs}")
    # The agents' ZMQ connections must come from their own addresses.
    time.sleep(1)
    ss = cl.run_inside("ss", "-tn", check=False).stdout
    for region in regions:
        failures.check(f"{cl.agent_addrs[region]}:" in ss and f"{agg_addr}:{zmq_port}" in ss,
                       "an agent is not connected from its own address", f"{region}\n{ss}")

    feeders = start_feeders(cl, args.events, 45, args.seed)
    time.sleep(6)
    log(f"before the cut: {progress(feeders, cl)}")
    offsets = {r: cl.log_size(f"agent-{r}") for r in regions}
    rules = (f"table inet cairn_partition {{\n"
             f"  chain out {{\n"
             f"    type filter hook output priority 0; policy accept;\n"
             f"    ip saddr {vaddr} ip daddr {agg_addr} tcp dport {zmq_port} drop\n"
             f"    ip saddr {agg_addr} tcp sport {zmq_port} ip daddr {vaddr} drop\n"
             f"  }}\n}}\n")
    log(f"cutting {victim} ({vaddr}) off from the aggregator ({agg_addr}:{zmq_port}) for 30 s")
    cl.run_inside("nft", "-f", "-", input=rules)
    cut = time.monotonic()
    stored_at_cut = cl.events_stored()
    samples = [(0.0, stored_at_cut)]
    while time.monotonic() - cut < 30:
        time.sleep(min(5.0, max(0.0, 30 - (time.monotonic() - cut))))
        samples.append((time.monotonic() - cut, cl.events_stored()))
        log(f"cut {samples[-1][0]:.0f} s: events_stored={samples[-1][1]}")
    # Best effort: what the other regions got acknowledged in the first half
    # of the cut is delivered before the heal.
    counts, _ = count_bucket(cl.bucket)
    early = [e for r in others for e in feeders[r].acked_before(cut + 15)]
    late_missing = [e for e in early if counts[e] == 0]
    log(f"before the heal: {len(early) - len(late_missing)} of {len(early)} events the other regions "
        f"had acknowledged by 15 s into the cut are in the bucket")
    failures.check(not late_missing, "the other regions' events were not delivered during the cut",
                   f"{len(late_missing)} of {len(early)} missing at the heal")
    victim_in_bucket = sum(1 for e in feeders[victim].acked_before(cut) if counts[e])
    during = set(feeders[victim].acked_before(float("inf"))) - set(feeders[victim].acked_before(cut + 1))
    leaked = sum(1 for e in during if counts[e])
    log(f"{victim}: {len(feeders[victim].acked)} acknowledged so far, {victim_in_bucket} of those "
        f"acknowledged before the cut and {leaked} of the {len(during)} acknowledged during it are in "
        f"the bucket")
    failures.check(during and not leaked, f"{victim}'s events of the cut reached the bucket: the cut "
                   "did not cut", f"{leaked} of {len(during)}")
    stored = [s for _, s in samples if s is not None]
    failures.check(len(stored) == len(samples), "the aggregator's /health did not answer during the cut",
                   f"{samples}")
    failures.check(len(stored) >= 2 and stored[-1] > stored[0],
                   "events_stored did not grow during the cut (other regions not stored)", f"{samples}")
    cl.run_inside("nft", "delete", "table", "inet", "cairn_partition")
    heal = time.monotonic()
    heal_offset = cl.log_size(f"agent-{victim}")
    log(f"healed after {heal - cut:.1f} s")
    cut_log = cl.log_text(f"agent-{victim}", offsets[victim])[:max(0, heal_offset - offsets[victim])]
    silence = [ln for ln in cut_log.splitlines() if "aggregator silent" in ln or "no answer to hello" in ln]
    failures.check(silence, f"agent-{victim} did not log the aggregator's silence during the cut",
                   cut_log[-1000:])
    if silence:
        log(f"agent-{victim} during the cut: {silence[0].strip()[:200]}")
    for r in others:
        text = cl.log_text(f"agent-{r}", offsets[r])
        failures.check("aggregator silent" not in text and "no answer to hello" not in text,
                       f"agent-{r} lost the aggregator during another region's cut", text[-800:])
    deadline = time.monotonic() + 30
    reconnected = None
    while time.monotonic() < deadline:
        after = cl.log_text(f"agent-{victim}", heal_offset)
        reconnected = next((ln for ln in after.splitlines() if "connected to aggregator" in ln), None)
        if reconnected:
            break
        time.sleep(0.5)
    failures.check(reconnected, f"agent-{victim} did not reconnect within 30 s of the heal",
                   cl.log_text(f"agent-{victim}", heal_offset)[-800:])
    if reconnected:
        log(f"agent-{victim} reconnected {time.monotonic() - heal:.1f} s after the heal (or sooner): "
            f"{reconnected.strip()[:160]}")
    end_feeders(failures, feeders)
    finish(failures, cl, feeders, result=result)


def set_conf(text, section, key, value):
    """Replaces key = ... in [section] of an INI-style config."""
    out, cur, done = [], None, False
    for line in text.splitlines():
        m = re.match(r"^\s*\[([^\]]+)\]", line)
        if m:
            cur = m.group(1).strip()
        elif cur == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            line = f"{key} = {value}"
            done = True
        out.append(line)
    if not done:
        raise RuntimeError(f"no {section}.{key} in the config")
    return "\n".join(out) + "\n"


def public_key(path):
    with open(path) as f:
        m = re.search(r'public-key\s*=\s*"([^"]+)"', f.read())
    return m.group(1) if m else None


class ExtraAgent(Process):
    """An agent the test starts itself (not through local-cluster.sh),
    stopped by PID at the end of the run t."""

    def __init__(self, t, cl, agent_bin, name, agent_id, region, key):
        base = open(os.path.join(cl.dir, f"agent-{cl.regions[0]}.conf")).read()
        port = free_port()
        data = os.path.join(cl.dir, name)
        os.makedirs(data, exist_ok=True)
        conf = base
        for sec, k, v in (("agent", "id", agent_id), ("agent", "region", region),
                          ("agent", "data_dir", f'"{data}"'), ("http", "listen", f"127.0.0.1:{port}"),
                          ("security", "secret_key_file", f'"{key}_secret"')):
            conf = set_conf(conf, sec, k, v)
        self.conf = os.path.join(cl.dir, f"{name}.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(name, [agent_bin, "--config", self.conf], None, cl.path(f"{name}.log"))
        self.start()
        t.on_stop(name, self.stop)
        log(f"{name}: agent id {agent_id}, region {region}, {self.url}")
        deadline = time.monotonic() + 20
        while cl.get_json(self.url + "/health") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start (see {name}.log)")
            time.sleep(0.1)


def find_program(args, env, name, sub):
    override = {"cairn-agent": args.agent_bin, "cairn": args.cli_bin}[name]
    if override:
        return override
    bin_dir = args.bin_dir or env.get("CAIRN_BIN_DIR") or os.path.join(REPO, "build")
    for p in (os.path.join(bin_dir, name), os.path.join(bin_dir, sub, name)):
        if os.access(p, os.X_OK):
            return p
    raise RuntimeError(f"cannot find {name} (give --{'agent' if sub == 'agent' else 'cli'}-bin)")


def case_foreign_key(t, result):
    args, failures = t.args, t.failures
    regions = ["us-east-1", "eu-west-2"]
    agent_bin = find_program(args, t.env, "cairn-agent", "agent")
    cli_bin = find_program(args, t.env, "cairn", "cli")
    cl = up(t, regions)
    keys = os.path.join(cl.dir, "keys")
    # A stranger: its key is not in the allow-list.
    rogue_key = os.path.join(keys, "rogue.key")
    subprocess.run([cli_bin, "keygen", "--force", "--agent-id", "rogue", rogue_key], check=True,
                   stdout=subprocess.DEVNULL)
    # An impostor: its key is in the allow-list but bound to us-east-1, and it
    # is configured as eu-west-2.
    imp_key = os.path.join(keys, "impostor.key")
    subprocess.run([cli_bin, "keygen", "--force", "--agent-id", "us-east-1", "--region", "us-east-1",
                    imp_key], check=True, stdout=subprocess.DEVNULL)
    shutil.copy(imp_key, os.path.join(keys, "agents", "impostor.key"))
    log("restarting the aggregator so it reads the allow-list with the impostor's key")
    cl.ctl("stop-aggregator")
    cl.ctl("start-aggregator")
    rogue_pub, imp_pub = public_key(rogue_key), public_key(imp_key)
    agg_offset = cl.log_size("aggregator")

    rogue = ExtraAgent(t, cl, agent_bin, "rogue", "rogue", "us-east-1", rogue_key)
    impostor = ExtraAgent(t, cl, agent_bin, "impostor", "eu-west-2", "eu-west-2", imp_key)

    feeders = start_feeders(cl, args.events, 20, args.seed)
    bad = {}
    for i, (name, agent, region) in enumerate((("rogue", rogue, "us-east-1"),
                                               ("impostor", impostor, "eu-west-2"))):
        f = Feeder(name, agent.url, [], args.seed * 100 + 50 + i, region, 3000, 3000 / 15)
        f.start()
        bad[name] = f
    if not wait_feeders(feeders, 60):
        failures.add("feeders did not finish within 60 s", progress(feeders))
    if not wait_feeders(bad, 30):
        failures.add("the foreign agents' feeders did not finish", progress(bad))
    for f in list(feeders.values()) + list(bad.values()):
        f.close()
    never = set()
    for name, f in bad.items():
        failures.check(f.exc is None, "a feeder crashed", f"{name}: {f.exc!r}")
        failures.check(not f.errors, f"the {name} agent did not accept events into its spool",
                       f"{f.errors[:2]}")
        never |= f.acked | f.maybe
        log(f"{name}: {len(f.acked)} events accepted into its spool")
    failures.check(len(never) >= 3000, "the foreign agents accepted too few events", f"{len(never)}")
    finish(failures, cl, feeders, never=never, result=result)
    result["foreign_accepted"] = len(never)

    agg_log = cl.log_text("aggregator", agg_offset)
    denied = [ln for ln in agg_log.splitlines() if "denied" in ln and rogue_pub and rogue_pub in ln]
    failures.check(denied, "the aggregator log does not name the stranger's key as refused",
                   f"key {rogue_pub}; log tail: {agg_log[-800:]}")
    if denied:
        log(f"aggregator: {denied[0].strip()[:200]}")
    bound = [ln for ln in agg_log.splitlines() if "is bound to agent" in ln]
    failures.check(bound, "the aggregator log does not refuse the impostor with its binding",
                   agg_log[-800:])
    if bound:
        log(f"aggregator: {bound[0].strip()[:200]}")
        failures.check(any(imp_pub in ln and "us-east-1" in ln and "eu-west-2" in ln for ln in bound),
                       "the refusal does not name the impostor's key and both agent ids", bound[0])
    imp_log = cl.log_text("impostor")
    failures.check("refused" in imp_log, "the impostor agent did not log its refusal", imp_log[-800:])
    ok = [ln for ln in agg_log.splitlines() if rogue_pub and rogue_pub in ln and "allowed" in ln]
    failures.check(not ok, "the aggregator allowed the stranger's key", ok[:1])


# --- main --------------------------------------------------------------------------

def main():
    ap = argument_parser(__doc__)
    ap.add_argument("--case", choices=CASES)
    ap.add_argument("--poster", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, default=30000, help="events posted across the agents")
    ap.add_argument("--seed", type=int, default=None)
    args = parse_args(ap)
    if args.poster:
        return poster_main(args.poster)
    if not args.case:
        ap.error("--case is required")
    if args.seed is None:
        args.seed = CASES.index(args.case) + 1
    random.seed(args.seed)

    t = TestRun(f"faults_{args.case}", args, f"cairn-faults-{args.case}-")
    result = {}
    t0 = time.monotonic()

    def summary():
        return (f"case {args.case}: acknowledged {result.get('acked', '?')}, in bucket "
                f"{result.get('in_bucket', '?')}, not answered {result.get('maybe', '?')}"
                + (f", foreign accepted {result['foreign_accepted']}" if "foreign_accepted" in result else "")
                + f", {time.monotonic() - t0:.1f} s")
    return t.run(globals()[f"case_{args.case}"], t, result, summary=summary)


if __name__ == "__main__":
    sys.exit(main())
