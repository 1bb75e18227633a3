#!/usr/bin/env python3
"""The agent's file tail and selectors, end to end, with real processes.

Starts a local cluster (deploy/local-cluster.sh up: one aggregator, agents
for us-east-1 and us-west-2, 2-second delivery interval) and:

  1. tail under SIGKILL: gives us-east-1 a [tail] (DIR/logs/*.jsonl) and a
     selector (exclude_event_sources = kms.amazonaws.com), then writes
     100,000 good lines (half with an eventID, half without, so a line read
     twice would show as two events), 300 kms.amazonaws.com lines and a few
     bad lines (not JSON, no eventSource, invalid UTF-8, 300 KB long), in
     chunks that often end mid-line, while SIGKILLing the agent 8 times
     (every 0.5-1 s) and restarting it. Midway the file is rotated by rename
     (audit.jsonl -> audit.jsonl.1, a new audit.jsonl) and later by
     copytruncate (once the aggregator holds everything written so far, as
     copytruncate needs). At the end the bucket holds every good line
     exactly once (by its requestID marker; eventIDs where given), no bad
     line and no kms.amazonaws.com event;
  2. selectors: with the agent left running, more kms lines in the file and
     kms records over POST /v1/events ({"accepted":N,"filtered":M}, 200 also
     when all are filtered) and PutAuditEvents (listed in "successful") are
     counted in cairn_events_filtered_total{source,reason}; a SIGHUP with
     read_write = write_only logs the change and drops readOnly events; none
     of the dropped events reaches the bucket;
  3. spool full: us-west-2 gets a 2M spool and a tailed file of 20,000 lines
     (about 16 MB) with the aggregator stopped: the tail pauses
     (cairn_tail_paused 1), POST answers 503 with Retry-After, /health 503;
     the aggregator is started again and every line arrives exactly once,
     as does the request retried after its 503.

Standard library only. Exit 0 on success, 1 on failure. Loopback only.
"""

import collections
import json
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import Failures, log, request, run_test, scrape  # noqa: E402

EAST, WEST = "us-east-1", "us-west-2"
ACCOUNT = "111122223333"
CHANNEL = f"arn:aws:cloudtrail:{EAST}:{ACCOUNT}:channel/tail-test"
GOOD_LINES = 100_000
KMS_LINES = 300
KILLS = 8
WEST_LINES = 20_000

failures = Failures(echo=True)  # each failed check is also logged when it happens
check, wait_for = failures.check, failures.wait_for


def record(marker, source="s3.amazonaws.com", name="GetObject", event_id=None, read_only=True,
           pad=0):
    r = {"eventVersion": "1.11", "eventTime": "2026-11-27T10:00:00Z", "eventSource": source,
         "eventName": name, "requestID": marker, "readOnly": read_only,
         "userIdentity": {"type": "IAMUser", "userName": "tailer"},
         "requestParameters": {"bucketName": "b", "key": f"k/{marker}"},
         "eventCategory": "Data", "managementEvent": False}
    if event_id:
        r["eventID"] = event_id
    if pad:
        r["requestParameters"]["pad"] = "p" * pad
    return r


def line_of(rec):
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def markers_in(bucket):
    """Counters of requestID (the test's marker) and of eventID in the bucket;
    a file not yet readable (being written) is left out."""
    counts = collections.Counter()
    ids = collections.Counter()
    for r in bucket.records()[0]:
        counts[r.get("requestID")] += 1
        ids[r.get("eventID")] += 1
    return counts, ids


# --- phase 1: the tail under SIGKILL ------------------------------------------

class Writer(threading.Thread):
    """Writes the plan into DIR/logs/audit.jsonl like an application would,
    rotating it once by rename and once by copytruncate."""

    def __init__(self, logs, plan, stored_count):
        super().__init__(daemon=True)
        self.path = os.path.join(logs, "audit.jsonl")
        self.plan = plan                  # [(bytes, is_good)]
        self.stored_count = stored_count  # callable: events the aggregator holds
        self.good_written = 0
        self.error = None
        self.done = False

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the main thread
            self.error = repr(e)
        self.done = True

    def _run(self):
        rng = random.Random(7)
        f = open(self.path, "ab", buffering=0)
        rename_at, truncate_at = len(self.plan) * 2 // 5, len(self.plan) * 7 // 10
        i = 0
        while i < len(self.plan):
            if i == rename_at:
                f.close()
                os.rename(self.path, self.path + ".1")
                f = open(self.path, "ab", buffering=0)
                log(f"writer: rotated by rename after {i} lines")
            if i == truncate_at:
                # copytruncate loses what the reader has not read yet: wait
                # until everything written so far is stored, as an operator
                # would schedule it for a reader that keeps up.
                want = self.good_written
                deadline = time.time() + 180
                while self.stored_count() < want and time.time() < deadline:
                    time.sleep(0.3)
                if self.stored_count() < want:
                    raise RuntimeError(f"copytruncate: only {self.stored_count()} of {want} stored")
                shutil.copyfile(self.path, self.path + ".2")
                os.truncate(self.path, 0)
                log(f"writer: rotated by copytruncate after {i} lines")
            end = min(i + rng.randint(200, 600), len(self.plan), *(x for x in (rename_at, truncate_at) if x > i))
            chunk = b"".join(line for line, _ in self.plan[i:end])
            self.good_written += sum(1 for _, good in self.plan[i:end] if good)
            i = end
            if rng.random() < 0.5 and len(chunk) > 10:
                cut = rng.randint(1, len(chunk) - 1)  # end the write mid-line
                f.write(chunk[:cut])
                time.sleep(0.02)
                f.write(chunk[cut:])
            else:
                f.write(chunk)
            time.sleep(0.03)
        f.close()


def phase_tail_under_kills(cl, work, agg_url, bucket):
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    cl.ctl("stop-agent", "--region", EAST)
    cl.set_conf_keys(f"agent-{EAST}", {"paths": f"{logs}/*.jsonl", "poll_interval": "100ms",
                       "rotate_wait": "500ms", "exclude_event_sources": "kms.amazonaws.com"})
    cl.ctl("start-agent", "--region", EAST)

    plan, good, kms, bad = [], [], [], []
    rng = random.Random(11)
    for n in range(GOOD_LINES):
        marker = f"line-{n:06d}"
        eid = f"00000000-0000-4000-8000-{n:012d}" if n % 2 == 0 else None
        plan.append((line_of(record(marker, event_id=eid, read_only=n % 3 == 0)), True))
        good.append(marker)
        if rng.random() < KMS_LINES / GOOD_LINES:
            km = f"kms-{len(kms)}"
            plan.append((line_of(record(km, source="kms.amazonaws.com", name="Decrypt")), False))
            kms.append(km)
    bad_lines = [b"this is not json\n",
                 b'{"eventName":"NoSource","requestID":"bad-nosource"}\n',
                 b'{"eventName":"X\xff","eventSource":"s","requestID":"bad-utf8"}\n',
                 line_of(record("bad-big", pad=300_000)),
                 b'{"eventName":"Trunc","eventSource":"s","requestID":"bad-trunc"\n']
    for k, line in enumerate(bad_lines * 3):
        plan.insert((k + 1) * len(plan) // 16, (line, False))
        bad.append(k)
    log(f"phase 1: {len(good)} good lines, {len(kms)} kms lines, {len(bad)} bad lines; "
        f"{sum(len(x) for x, _ in plan) / 1e6:.1f} MB")

    def stored():
        return scrape(agg_url).get(
            f'cairn_agent_events_stored_total{{agent="{EAST}",region="{EAST}"}}', 0)

    writer = Writer(logs, plan, stored)
    writer.start()
    kills = 0
    rng = random.Random(5)
    while kills < KILLS:
        time.sleep(rng.uniform(0.5, 1.0))
        cl.ctl("stop-agent", "--region", EAST, "--kill")
        kills += 1
        cl.ctl("start-agent", "--region", EAST)
        log(f"phase 1: agent SIGKILLed and restarted ({kills}/{KILLS}); "
            f"{writer.good_written} good lines written")
    writer.join(timeout=400)
    check(writer.done and writer.error is None, f"the writer failed: {writer.error}")

    wait_for(f"{GOOD_LINES} events stored", lambda: stored() >= GOOD_LINES, 240, 1)
    log(f"phase 1: {stored():.0f} events stored")

    def all_delivered():
        counts, _ = markers_in(bucket)
        return all(counts.get(m, 0) >= 1 for m in good)

    wait_for("every good line in the bucket", all_delivered, 120, 2)
    time.sleep(3)  # one more delivery window, for late copies
    counts, ids = markers_in(bucket)
    missing = [m for m in good if counts.get(m, 0) == 0]
    twice = [m for m in good if counts.get(m, 0) > 1]
    check(not missing, f"{len(missing)} good lines missing from the bucket: {missing[:5]}")
    check(not twice, f"{len(twice)} good lines more than once in the bucket: {twice[:5]}")
    eids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(0, GOOD_LINES, 2)]
    check(all(ids.get(e) == 1 for e in eids), "a given eventID is not in the bucket exactly once")
    check(not [m for m in counts if m and m.startswith("kms-")], "a kms event reached the bucket")
    check(not [m for m in counts if m and m.startswith("bad-")], "a bad line reached the bucket")
    text = cl.log_text(f"agent-{EAST}")
    check("bad line skipped" in text and re.search(r"audit\.jsonl:\d+: bad line skipped", text),
          "bad lines were not logged with file and line")
    check("tail: finished" in text, "the renamed file was not finished (agent log)")
    check("reading it again from the start" in text,
          "the copytruncate was not noticed (agent log)")
    log(f"phase 1: bucket holds {len(good)} good lines exactly once; "
        f"{sum(counts.values())} records in all")
    return logs


# --- phase 2: selectors end to end --------------------------------------------

def phase_selectors(cl, east_url, bucket, logs):
    before = scrape(east_url)
    tail_key = 'cairn_events_filtered_total{source="tail",reason="event_source"}'
    http_key = 'cairn_events_filtered_total{source="http",reason="event_source"}'
    rw_key = 'cairn_events_filtered_total{source="http",reason="read_write"}'
    with open(os.path.join(logs, "audit.jsonl"), "ab") as f:
        for n in range(40):
            f.write(line_of(record(f"kms-tail2-{n}", source="kms.amazonaws.com", name="Decrypt")))
        for n in range(10):
            f.write(line_of(record(f"sel-tail-{n}")))
    mixed = [record(f"kms-http-{n}", source="kms.amazonaws.com", name="Decrypt") for n in range(5)]
    mixed += [record(f"sel-http-{n}") for n in range(5)]
    status, body, _ = request(east_url + "/v1/events", "POST", json.dumps(mixed))
    check(status == 200 and json.loads(body) == {"accepted": 5, "filtered": 5},
          f"a mixed request answered {status} {body}")
    only_kms = [record(f"kms-http-all-{n}", source="kms.amazonaws.com") for n in range(3)]
    status, body, _ = request(east_url + "/v1/events", "POST", json.dumps(only_kms))
    check(status == 200 and json.loads(body) == {"accepted": 0, "filtered": 3},
          f"an all-filtered request answered {status} {body}")
    audit = {"auditEvents": [
        {"id": "a1", "eventData": json.dumps(record("sel-audit-1"))},
        {"id": "a2", "eventData": json.dumps(record("kms-audit-2", source="kms.amazonaws.com"))}]}
    status, body, _ = request(east_url + "/PutAuditEvents?channelArn=" +
                              urllib.parse.quote(CHANNEL, safe=""), "POST", json.dumps(audit))
    answer = json.loads(body) if status == 200 else {}
    check(status == 200 and sorted(x["id"] for x in answer.get("successful", [])) == ["a1", "a2"]
          and answer.get("failed") == [], f"PutAuditEvents answered {status} {body}")

    def tail_filtered():
        return scrape(east_url).get(tail_key, 0) - before.get(tail_key, 0)

    wait_for("40 kms lines filtered by the tail", lambda: tail_filtered() >= 40, 30)
    after = scrape(east_url)
    check(tail_filtered() == 40, f"tail filtered {tail_filtered()}, expected 40")
    check(after.get(http_key, 0) - before.get(http_key, 0) == 9,
          f"http filtered {after.get(http_key, 0) - before.get(http_key, 0)}, expected 9")

    # SIGHUP: write_only drops readOnly events; the change is logged.
    cl.set_conf_keys(f"agent-{EAST}", {"read_write": "write_only"})
    os.kill(cl.pid(f"agent-{EAST}"), signal.SIGHUP)
    wait_for("the selector change in the log",
             lambda: "selectors: read_write all -> write_only" in cl.log_text(f"agent-{EAST}"), 10)
    reads = [record(f"kms-read-{n}", read_only=True) for n in range(4)]  # "kms-": must not arrive
    writes = [record(f"sel-write-{n}", name="PutObject", read_only=False) for n in range(2)]
    status, body, _ = request(east_url + "/v1/events", "POST", json.dumps(reads + writes))
    check(status == 200 and json.loads(body) == {"accepted": 2, "filtered": 4},
          f"after the reload a request answered {status} {body}")
    check(scrape(east_url).get(rw_key, 0) - before.get(rw_key, 0) == 4,
          "read_write filtering not counted")
    cl.set_conf_keys(f"agent-{EAST}", {"read_write": "all"})
    os.kill(cl.pid(f"agent-{EAST}"), signal.SIGHUP)
    wait_for("the selector change back in the log",
             lambda: "selectors: read_write write_only -> all" in cl.log_text(f"agent-{EAST}"), 10)

    kept = [f"sel-tail-{n}" for n in range(10)] + [f"sel-http-{n}" for n in range(5)] + \
        ["sel-audit-1", "sel-write-0", "sel-write-1"]

    def arrived():
        counts, _ = markers_in(bucket)
        return all(counts.get(m, 0) >= 1 for m in kept)

    wait_for("the kept selector events in the bucket", arrived, 60, 1)
    counts, _ = markers_in(bucket)
    check(all(counts.get(m) == 1 for m in kept), "a kept selector event is not there once")
    check(not [m for m in counts if m and m.startswith("kms-")], "a filtered event reached the bucket")
    log("phase 2: selectors filtered and counted on both paths; reload applied")


# --- phase 3: a full spool pauses the tail --------------------------------------

def phase_spool_full(cl, work, west_url, agg_url, bucket):
    west_logs = os.path.join(work, "west")
    os.makedirs(west_logs)
    cl.ctl("stop-agent", "--region", WEST)
    shutil.rmtree(os.path.join(cl.dir, f"agent-{WEST}"))
    cl.set_conf_keys(f"agent-{WEST}", {"map_size": "2M", "paths": f"{west_logs}/*.jsonl",
                       "poll_interval": "100ms"})
    cl.ctl("stop-aggregator")
    cl.ctl("start-agent", "--region", WEST)
    markers = [f"west-{n:05d}" for n in range(WEST_LINES)]
    with open(os.path.join(west_logs, "a.jsonl"), "wb") as f:
        for m in markers:
            f.write(line_of(record(m, pad=300)))
    wait_for("the tail to pause on the full spool",
             lambda: scrape(west_url).get("cairn_tail_paused") == 1, 60)
    big = [record(f"west-http-{n}", pad=4000) for n in range(50)]
    status, body, headers = request(west_url + "/v1/events", "POST", json.dumps(big))
    check(status == 503 and headers.get("retry-after"),
          f"a POST to a full spool answered {status} (Retry-After {headers.get('retry-after')})")
    check(request(west_url + "/health")[0] == 503, "/health is not 503 with a full spool")
    m = scrape(west_url)
    check(m.get("cairn_tail_spool_full_total", 0) >= 1, "cairn_tail_spool_full_total is 0")
    spooled = m.get("cairn_tail_events_spooled_total", 0)
    log(f"phase 3: tail paused after {spooled:.0f} of {WEST_LINES} lines; POST got 503")
    check(0 < spooled < WEST_LINES, f"the tail spooled {spooled} lines into a 2M spool")

    cl.ctl("start-aggregator")

    def west_stored():
        return scrape(agg_url).get(
            f'cairn_agent_events_stored_total{{agent="{WEST}",region="{WEST}"}}', 0)

    wait_for(f"{WEST_LINES} west lines stored", lambda: west_stored() >= WEST_LINES, 240, 1)
    wait_for("the tail to resume", lambda: scrape(west_url).get("cairn_tail_paused") == 0, 30)
    status, body, _ = request(west_url + "/v1/events", "POST", json.dumps(big))
    check(status == 200, f"the retried POST answered {status} {body[:200]}")
    want = markers + [f"west-http-{n}" for n in range(50)]

    def arrived():
        counts, _ = markers_in(bucket)
        return all(counts.get(x, 0) >= 1 for x in want)

    wait_for("every west line in the bucket", arrived, 120, 2)
    time.sleep(3)
    counts, _ = markers_in(bucket)
    missing = [x for x in want if counts.get(x, 0) == 0]
    twice = [x for x in want if counts.get(x, 0) > 1]
    check(not missing, f"{len(missing)} west events missing: {missing[:5]}")
    check(not twice, f"{len(twice)} west events more than once: {twice[:5]}")
    check("tail: spool full; paused" in cl.log_text(f"agent-{WEST}") and
          "tail: spool has room again; resuming" in cl.log_text(f"agent-{WEST}"),
          "the pause and resume were not logged")
    log(f"phase 3: all {WEST_LINES} tailed lines and the retried request arrived exactly once")


def scenario(t):
    cl = t.cluster().up("--regions", f"{EAST},{WEST}", "--interval", "2")
    east_url, west_url = cl.agent_urls
    started = time.time()
    logs = phase_tail_under_kills(cl, t.tmp, cl.agg_url, cl.bucket)
    log(f"phase 1 took {time.time() - started:.0f} s")
    if not failures:
        phase_selectors(cl, east_url, cl.bucket, logs)
    if not failures:
        phase_spool_full(cl, t.tmp, west_url, cl.agg_url, cl.bucket)


if __name__ == "__main__":
    sys.exit(run_test("integration_tail", "cairn-tail-", scenario, __doc__, bins_required=True,
                      failures=failures, tail_lines=25))
