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

import http.server
import json
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import Failures, TestRun, argument_parser, log, parse_args, post_events, scrape  # noqa: E402

STOP_MAX_S = 5.0  # SIGTERM to exit, including the local-cluster.sh round trip

failures = Failures(echo=True)
check = failures.check


def wait_for(what, predicate, timeout):
    return failures.wait_for(what, predicate, timeout, interval=0.2)


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


def scenario(t, receiver):
    cl = t.cluster().up("--regions", "us-east-1", "--interval", "2")
    agent = cl.agent_urls[0]
    agg_url = cl.agg_url
    bucket_dir = os.path.realpath(cl.bucket_dir)
    bucket = cl.bucket
    notify_dir = os.path.join(cl.store_dir, "notify")

    def ctl(cmd):
        """local-cluster.sh cmd; returns how long it took (s)."""
        started = time.monotonic()
        cl.ctl(cmd)
        return time.monotonic() - started

    ctl("stop-aggregator")
    cl.insert_conf_lines("aggregator", "delivery", [
        f"webhook_url = http://127.0.0.1:{receiver.port}/cloudtrail",
        "webhook_header = Authorization: Bearer s3cr3t",
        "webhook_timeout = 60s"])
    receiver.set_mode("fail", 4)  # backoff 1+2+4+8 s: about 15 s of refusals
    ctl("start-aggregator")

    sent = 0

    def post(count):
        nonlocal sent
        body = json.dumps([record(sent + i) for i in range(count)])
        status, answer, _ = post_events(agent, body)
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
             lambda: bucket.keys() and bucket.keys() <= receiver.listed_keys(),
             60)
    check(all(doc["s3Bucket"] == bucket_dir for doc in receiver.accepted),
          f"s3Bucket should be {bucket_dir}: {[d['s3Bucket'] for d in receiver.accepted]}")
    check(receiver.listed_keys() <= bucket.keys(),
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
    check(not bucket.keys() <= receiver.listed_keys(),
          "every object was already notified: nothing left to survive the restart")
    receiver.set_mode("accept")
    ctl("start-aggregator")
    wait_for("the pending notifications after the restart",
             lambda: bucket.keys() <= receiver.listed_keys(), 30)

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
             lambda: bucket.keys() <= receiver.listed_keys(), 30)
    check(not receiver.bad, f"malformed requests: {receiver.bad[:5]}")
    log(f"{len(bucket.keys())} objects, {len(receiver.accepted)} notifications "
        f"accepted, {receiver.counts()[0]} POSTs in all")


def main():
    t = TestRun("integration_webhook", parse_args(argument_parser(__doc__, bins_required=True)),
                "cairn-webhook-", failures=failures, tail_lines=20)
    receiver = Receiver()
    t.on_stop("the webhook receiver", receiver.stop)
    return t.run(scenario, t, receiver)


if __name__ == "__main__":
    sys.exit(main())
