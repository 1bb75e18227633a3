#!/usr/bin/env python3
"""Retention: the store forgets delivered events after the retention time.

Starts a local cluster, sets the aggregator's retention to 4 s (restart),
posts 2,000 events, and checks that: they are delivered; once older than the
retention time they leave the store (cairn query finds none, /metrics counts
them as pruned) while the bucket keeps every file; events posted later stay;
and an eventID that was pruned is stored again when it comes back (dedup
holds for the retention time, as the issue says, not longer).

Only the standard library. Exit 0 on success, 1 on failure. Loopback only.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "deploy", "local-cluster.sh")
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:")
failures = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(ok, what):
    if not ok:
        failures.append(what)
        log(f"FAIL: {what}")
    return ok


def request(url, method="GET", body=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, u.path, body=body,
                 headers={"Content-Type": "application/json"} if body else {})
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    return resp.status, data


def metric(url, name):
    for line in request(url + "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def records(n, tag):
    return [{"eventName": "PutObject", "eventSource": "s3.amazonaws.com",
             "eventID": str(uuid.uuid4()), "userIdentity": {"type": "IAMUser", "userName": tag}}
            for _ in range(n)]


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return check(False, f"timed out after {timeout} s waiting for {what}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent-bin", required=True)
    parser.add_argument("--aggregator-bin", required=True)
    parser.add_argument("--cli-bin", required=True)
    args = parser.parse_args()
    env = dict(os.environ, CAIRN_AGENT_BIN=args.agent_bin, CAIRN_AGGREGATOR_BIN=args.aggregator_bin,
               CAIRN_CLI_BIN=args.cli_bin)
    work = tempfile.mkdtemp(prefix="cairn-retention-")
    cluster = os.path.join(work, "cluster")
    run = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    try:
        up = run(CLUSTER, "up", "--dir", cluster, "--interval", "1")
        if not check(up.returncode == 0, f"cluster up: {up.stdout}{up.stderr}"):
            return 1
        conf = dict(line.strip().split("=", 1) for line in open(os.path.join(cluster, "cluster.env"))
                    if "=" in line)
        conf = {k: v.strip('"') for k, v in conf.items()}
        agent, agg = conf["CAIRN_AGENT_URLS"].split()[0], conf["CAIRN_AGGREGATOR_URL"]
        store = conf["CAIRN_STORE_DIR"]
        agg_conf = os.path.join(cluster, "aggregator.conf")
        text = open(agg_conf).read()
        check("retention = 90d" in text, "the example config has no retention = 90d")
        open(agg_conf, "w").write(text.replace("retention = 90d", "retention = 4s"))
        run(CLUSTER, "stop-aggregator", "--dir", cluster)
        run(CLUSTER, "start-aggregator", "--dir", cluster)

        old = records(2000, "old-user")
        for i in range(0, 2000, 200):
            check(request(agent + "/v1/events", "POST", json.dumps(old[i:i + 200]))[0] == 200,
                  "posting failed")
        wait_for("2000 events delivered",
                 lambda: (metric(agg, "cairn_events_delivered_total") or 0) >= 2000, 30)

        def query_count(user):
            out = run(args.cli_bin, "query", "--store", store, "--username", user, "--limit", "0",
                      "--output", "ndjson")
            return len(out.stdout.splitlines()) if out.returncode == 0 else -1

        check(query_count("old-user") == 2000, "the store does not hold the 2000 events at first")
        wait_for("2000 events pruned",
                 lambda: (metric(agg, "cairn_events_pruned_total") or 0) >= 2000, 30)
        check(query_count("old-user") == 0, "pruned events are still found by cairn query")
        young = records(100, "young-user")
        check(request(agent + "/v1/events", "POST", json.dumps(young))[0] == 200, "posting failed")
        wait_for("young events stored", lambda: query_count("young-user") == 100, 20)
        # A pruned eventID is new again.
        check(request(agent + "/v1/events", "POST", json.dumps(old[:10]))[0] == 200, "re-post failed")
        wait_for("re-sent events stored again", lambda: query_count("old-user") == 10, 20)
        files = [f for _, _, fs in os.walk(conf["CAIRN_BUCKET_DIR"]) for f in fs if f.endswith(".gz")]
        check(len(files) >= 1, "the bucket lost its files")
    finally:
        run(CLUSTER, "down", "--dir", cluster)
        for name in (os.listdir(cluster) if os.path.isdir(cluster) else []):
            if name.endswith(".log"):
                text = open(os.path.join(cluster, name), errors="replace").read()
                check(not SANITIZER_RE.search(text), f"sanitizer report in {name}")
                if failures:
                    print(f"---- {name} (tail)\n" + "\n".join(text.splitlines()[-15:]))
        if not failures:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        return 1
    log("PASS: integration_retention")
    return 0


if __name__ == "__main__":
    sys.exit(main())
