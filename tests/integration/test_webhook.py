#!/usr/bin/env python3
"""The delivery webhook, end to end, with a receiver that fails.

Starts a local cluster (one region, 2-second delivery interval), turns on
[delivery] webhook_url / webhook_header / webhook_timeout pointing at an
HTTP receiver in this process, and:

  1. the receiver refuses (503) its first 4 POSTs: events posted across
     several windows are all delivered while it still refuses (delivery does
     not wait for notifications), then every object of the bucket arrives in
     an accepted notification of CloudTrail's SNS message shape
     {"s3Bucket": <bucket dir>, "s3ObjectKey": [...]}, with the header;
  2. the receiver refuses everything; more events are delivered; the
     aggregator is stopped: its pending notifications are on disk
     (<data_dir>/notify); the receiver accepts again and the aggregator is
     started: they arrive;
  3. the receiver hangs (reads a POST, never answers; webhook_timeout 60 s):
     SIGTERM still stops the aggregator within a few seconds, and after a
     start what was pending arrives.

Only the standard library. Exit 0 on success, 1 on failure. Loopback only.
"""

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "deploy", "local-cluster.sh")
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:")
STOP_MAX_S = 5.0  # SIGTERM to exit, including the local-cluster.sh round trip

failures = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(ok, what):
    if not ok:
        failures.append(what)
        log(f"FAIL: {what}")
    return ok


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return check(False, f"timed out after {timeout} s waiting for {what}")


class Receiver:
    """The webhook's receiver: mode 'fail' (503 for the next fail_count
    requests, then 200), 'refuse' (503 always), 'hang' (never answers until
    released) or 'accept'."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mode = "accept"
        self.fail_count = 0
        self.requests = 0
        self.refused = 0
        self.hanging = 0
        self.accepted = []       # parsed bodies
        self.bad = []            # what was wrong with a request
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                    mode = receiver.mode
                    if mode == "fail" and receiver.fail_count > 0:
                        receiver.fail_count -= 1
                        mode = "refuse"
                    if self.headers.get("Authorization") != "Bearer s3cr3t":
                        receiver.bad.append(f"Authorization {self.headers.get('Authorization')}")
                    if self.headers.get("Content-Type") != "application/json":
                        receiver.bad.append(f"Content-Type {self.headers.get('Content-Type')}")
                    if mode == "hang":
                        receiver.hanging += 1
                if mode == "hang":
                    receiver.release.wait(60)
                    return
                if mode == "refuse":
                    with receiver.lock:
                        receiver.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    doc = json.loads(body)
                    ok = (set(doc) == {"s3Bucket", "s3ObjectKey"} and
                          isinstance(doc["s3Bucket"], str) and
                          isinstance(doc["s3ObjectKey"], list) and
                          all(isinstance(k, str) for k in doc["s3ObjectKey"]))
                except ValueError:
                    ok = False
                with receiver.lock:
                    if ok:
                        receiver.accepted.append(doc)
                    else:
                        receiver.bad.append(f"body {body[:200]!r}")
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_mode(self, mode, fail_count=0):
        with self.lock:
            self.mode = mode
            self.fail_count = fail_count

    def listed_keys(self):
        with self.lock:
            return {k for doc in self.accepted for k in doc["s3ObjectKey"]}

    def counts(self):
        with self.lock:
            return self.requests, self.refused, len(self.accepted), self.hanging

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def record(n):
    return {"eventVersion": "1.11", "eventTime": "2026-11-27T10:00:00Z",
            "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
            "userIdentity": {"type": "IAMUser", "userName": f"user-{n % 7}"},
            "eventID": str(uuid.uuid4()), "readOnly": True, "eventType": "AwsApiCall",
            "requestParameters": {"bucketName": "b", "key": f"k/{n}"},
            "recipientAccountId": ["111122223333", "444455556666"][n % 2]}


def request(url, method="GET", body=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, u.path or "/", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    return resp.status, data


def scrape(base_url):
    try:
        status, text = request(base_url + "/metrics")
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines() if status == 200 else []:
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def bucket_keys(root):
    keys = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".json.gz"):
                keys.add(os.path.relpath(os.path.join(dirpath, name), root))
    return keys


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent-bin", required=True)
    parser.add_argument("--aggregator-bin", required=True)
    parser.add_argument("--cli-bin", required=True)
    args = parser.parse_args()
    env = dict(os.environ, CAIRN_AGENT_BIN=args.agent_bin, CAIRN_AGGREGATOR_BIN=args.aggregator_bin,
               CAIRN_CLI_BIN=args.cli_bin)
    work = tempfile.mkdtemp(prefix="cairn-webhook-")
    cluster = os.path.join(work, "cluster")
    receiver = Receiver()
    try:
        up = run([CLUSTER, "up", "--dir", cluster, "--regions", "us-east-1", "--interval", "2"],
                 env)
        if not check(up.returncode == 0, f"cluster up failed: {up.stdout}{up.stderr}"):
            return 1
        conf = {}
        for line in open(os.path.join(cluster, "cluster.env")):
            if "=" in line:
                k, v = line.strip().split("=", 1)
                conf[k] = v.strip('"')
        agent = conf["CAIRN_AGENT_URLS"].split()[0]
        agg_url = conf["CAIRN_AGGREGATOR_HEALTH_URL"].rsplit("/health", 1)[0]
        bucket_dir = os.path.realpath(conf["CAIRN_BUCKET_DIR"])
        notify_dir = os.path.join(conf["CAIRN_STORE_DIR"], "notify")

        def ctl(*cmd):
            t = time.monotonic()
            out = run([CLUSTER, *cmd, "--dir", cluster], env)
            check(out.returncode == 0, f"{cmd[0]} failed: {out.stdout}{out.stderr}")
            return time.monotonic() - t

        ctl("stop-aggregator")
        agg_conf = os.path.join(cluster, "aggregator.conf")
        text = open(agg_conf).read()
        text = text.replace("[delivery]\n",
                            "[delivery]\n"
                            f"webhook_url = http://127.0.0.1:{receiver.port}/cloudtrail\n"
                            "webhook_header = Authorization: Bearer s3cr3t\n"
                            "webhook_timeout = 60s\n", 1)
        open(agg_conf, "w").write(text)
        receiver.set_mode("fail", 4)  # backoff 1+2+4+8 s: about 15 s of refusals
        ctl("start-aggregator")

        sent = 0

        def post(count):
            nonlocal sent
            body = json.dumps([record(sent + i) for i in range(count)])
            status, answer = request(agent + "/v1/events", "POST", body)
            check(status == 200, f"posting events answered {status} {answer}")
            sent += count

        def delivered():
            return scrape(agg_url).get("cairn_events_delivered_total", 0)

        # 1. Delivery goes on while the receiver refuses.
        for _ in range(3):
            post(100)
            time.sleep(2.2)
        wait_for("300 events delivered", lambda: delivered() >= 300, 30)
        windows = scrape(agg_url).get("cairn_windows_delivered_total", 0)
        requests, refused, accepted, _ = receiver.counts()
        log(f"delivered {windows:.0f} windows while the receiver refused {refused} of "
            f"{requests} POSTs and accepted {accepted}")
        check(windows >= 2 and accepted == 0 and refused >= 1,
              f"delivery should have gone on while the receiver refused ({windows} windows, "
              f"{refused} refused, {accepted} accepted)")
        wait_for("every object listed in an accepted notification",
                 lambda: bucket_keys(bucket_dir) and bucket_keys(bucket_dir) <= receiver.listed_keys(),
                 60)
        check(all(doc["s3Bucket"] == bucket_dir for doc in receiver.accepted),
              f"s3Bucket should be {bucket_dir}: {[d['s3Bucket'] for d in receiver.accepted]}")
        check(receiver.listed_keys() <= bucket_keys(bucket_dir),
              "a notification lists an object that is not in the bucket")

        # 2. Pending notifications survive a restart.
        receiver.set_mode("refuse")
        post(100)
        wait_for("400 events delivered", lambda: delivered() >= 400, 30)
        refused_before = receiver.counts()[1]
        wait_for("a refused POST after the delivery", lambda: receiver.counts()[1] > refused_before,
                 30)
        stop_s = ctl("stop-aggregator")
        check(stop_s < STOP_MAX_S, f"stopping took {stop_s:.1f} s")
        pending = [n for n in os.listdir(notify_dir) if n.endswith(".json")]
        check(len(pending) >= 1, f"no notification pending in {notify_dir}: {os.listdir(notify_dir)}")
        check(not bucket_keys(bucket_dir) <= receiver.listed_keys(),
              "every object was already notified: nothing left to survive the restart")
        receiver.set_mode("accept")
        ctl("start-aggregator")
        wait_for("the pending notifications after the restart",
                 lambda: bucket_keys(bucket_dir) <= receiver.listed_keys(), 30)

        # 3. A receiver that hangs does not hold up shutdown. (The counters
        # of the aggregator started anew count from 0.)
        receiver.set_mode("hang")
        post(50)
        wait_for("50 more events delivered", lambda: delivered() >= 50, 30)
        wait_for("a POST hanging", lambda: receiver.counts()[3] >= 1, 30)
        stop_s = ctl("stop-aggregator")
        log(f"aggregator stopped {stop_s:.1f} s after SIGTERM while a POST hung")
        check(stop_s < STOP_MAX_S, f"stopping with a hanging POST took {stop_s:.1f} s")
        receiver.set_mode("accept")
        receiver.release.set()
        ctl("start-aggregator")
        wait_for("every object notified in the end",
                 lambda: bucket_keys(bucket_dir) <= receiver.listed_keys(), 30)
        check(not receiver.bad, f"malformed requests: {receiver.bad[:5]}")
        log(f"{len(bucket_keys(bucket_dir))} objects, {len(receiver.accepted)} notifications "
            f"accepted, {receiver.counts()[0]} POSTs in all")
    finally:
        down = run([CLUSTER, "down", "--dir", cluster], env)
        receiver.stop()
        for name in os.listdir(cluster) if os.path.isdir(cluster) else []:
            if name.endswith(".log"):
                text = open(os.path.join(cluster, name), errors="replace").read()
                check(not SANITIZER_RE.search(text), f"sanitizer report in {name}")
                if failures:
                    print(f"---- {name} (tail)\n" + "\n".join(text.splitlines()[-20:]))
        check(down.returncode == 0, f"cluster down failed: {down.stderr}")
        if not failures:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        log(f"{len(failures)} check(s) failed")
        return 1
    log("PASS: integration_webhook")
    return 0


if __name__ == "__main__":
    sys.exit(main())
