#!/usr/bin/env python3
"""Operating a cluster: metrics match the workload, status, health, reload.

Starts a real local cluster (two regions, 2-second delivery interval) and:

  1. posts a known workload: 1,500 events to us-east-1 and 500 to eu-west-2
     in requests of 50, 200 exact duplicates (of us-east-1's events) to
     eu-west-2, and 5 requests with a bad record to us-east-1;
  2. waits until everything is stored and delivered, then scrapes both
     agents' and the aggregator's /metrics and checks every counter against
     what the test did, and that the idle aggregator merges its index runs
     (cairn_store_index_run_items reaches 0);
  3. checks `cairn status --output json` (both agents connected, exit 0) and
     the human table;
  4. SIGHUPs the aggregator with a broken config: it logs the error with the
     file and line, keeps running and stays healthy; then with a valid change
     (log level) it logs what changed;
  5. runs --check-config on a broken file: non-zero exit, file:line: reason;
  6. stops one agent: `cairn status` shows it silent and exits 1;
  7. restarts the other with a small window in bytes (256K, batches of 20
     events, up to 1024 batches) and posts 2 MB in one request: the peak
     bytes in flight (cairn_inflight_bytes_max) reaches window_bytes (the
     bytes bound is what stops sending) and stays under window_bytes plus
     one batch; nothing is left in flight once all is acknowledged.

Only the standard library. Exit 0 on success, 1 on failure. Loopback only.
"""

import json
import os
import re
import signal
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import Failures, log, post_events, request, run, run_test, scrape  # noqa: E402

failures = Failures(echo=True)  # each failed check is also logged when it happens
check, wait_for = failures.check, failures.wait_for


def record(region, n):
    return {"eventVersion": "1.11", "eventTime": "2026-11-27T10:00:00Z",
            "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": region,
            "userIdentity": {"type": "IAMUser", "userName": f"user-{n % 7}"},
            "eventID": str(uuid.uuid4()), "readOnly": True, "eventType": "AwsApiCall",
            "requestParameters": {"bucketName": "b", "key": f"k/{n}"}, "responseElements": None,
            "recipientAccountId": "111122223333"}


def padded_record(n, pad):
    """A record whose compact JSON is about pad bytes longer than record()'s."""
    r = record("us-east-1", n)
    r["requestParameters"]["key"] = f"k/{n}/" + "x" * pad
    return r


def post(agent_url, records):
    return post_events(agent_url, records)


def metrics(base_url):
    """/metrics as {'name{labels}': value}; a failure unless it answers 200."""
    return scrape(base_url, failures)


def scenario(t):
    args = t.args
    cl = t.cluster().up("--regions", "us-east-1,eu-west-2", "--interval", "2")
    east, west = cl.agent_urls
    agg_url = cl.agg_url

    # 1. The workload. us-east-1's events are stored before their
    # duplicates go to eu-west-2, so which agent's copy counts as the
    # duplicate is known.
    sent_east = [record("us-east-1", i) for i in range(1500)]
    sent_west = [record("eu-west-2", i) for i in range(500)]
    for i in range(0, 1500, 50):
        check(post(east, sent_east[i:i + 50])[0] == 200, "a good request to us-east-1 failed")
    wait_for("us-east-1's 1500 events stored",
             lambda: metrics(agg_url).get("cairn_events_stored_total", 0) >= 1500, 30)
    for i in range(0, 500, 50):
        check(post(west, sent_west[i:i + 50])[0] == 200, "a good request to eu-west-2 failed")
    for i in range(0, 200, 50):
        check(post(west, sent_east[i:i + 50])[0] == 200, "a duplicate request failed")
    for i in range(5):
        bad = [record("us-east-1", 9000 + i), {"eventName": "NoSource"}]
        status, body, _ = post(east, bad)
        check(status == 400 and "eventSource" in body, f"bad request answered {status} {body}")

    # 2. Everything stored and delivered, then the counters.
    def agg():
        return metrics(agg_url)

    wait_for("2000 events delivered",
             lambda: agg().get("cairn_events_delivered_total", 0) >= 2000, 60)
    time.sleep(1.5)  # one more heartbeat so backlogs read 0
    a = agg()
    expect = {
        "cairn_events_stored_total": 2000,
        "cairn_events_duplicate_total": 200,
        "cairn_store_events": 2000,
        "cairn_events_delivered_total": 2000,
        'cairn_agent_events_stored_total{agent="us-east-1",region="us-east-1"}': 1500,
        'cairn_agent_events_stored_total{agent="eu-west-2",region="eu-west-2"}': 500,
        'cairn_agent_events_duplicate_total{agent="eu-west-2",region="eu-west-2"}': 200,
        'cairn_agent_spool_pending{agent="us-east-1",region="us-east-1"}': 0,
        'cairn_batches_total{outcome="rejected"}': 0,
        "cairn_upload_errors_total": 0,
        "cairn_messages_garbage_total": 0,
    }
    for name, value in expect.items():
        check(a.get(name) == value, f"aggregator {name} = {a.get(name)}, expected {value}")
    check(a.get("cairn_windows_delivered_total", 0) >= 1, "no window delivered")
    check(a.get("cairn_delivery_lag_seconds") == 0, "delivery lag not 0 when caught up")
    e, w = metrics(east), metrics(west)
    for name, value in {"cairn_events_accepted_total": 1500,
                        'cairn_events_rejected_total{reason="bad_record"}': 5,
                        "cairn_events_acked_total": 1500, "cairn_spool_events": 0,
                        "cairn_aggregator_connected": 1}.items():
        check(e.get(name) == value, f"us-east-1 {name} = {e.get(name)}, expected {value}")
    for name, value in {"cairn_events_accepted_total": 700,
                        'cairn_events_rejected_total{reason="bad_record"}': 0,
                        "cairn_events_acked_total": 700, "cairn_spool_events": 0}.items():
        check(w.get(name) == value, f"eu-west-2 {name} = {w.get(name)}, expected {value}")
    # The index's runs: each commit writes its entries as a run; once the
    # aggregator is idle for a second it merges them into the index.
    check("cairn_store_index_run_items" in a and "cairn_store_index_merge_passes_total" in a,
          "aggregator /metrics lacks the index run gauges")
    wait_for("the index's runs merged once the aggregator is idle",
             lambda: agg().get("cairn_store_index_run_items") == 0 and
             agg().get("cairn_store_index_merge_passes_total", 0) > 0, 15)
    for name in ("cairn_inflight_batches", "cairn_inflight_bytes"):
        check(e.get(name) == 0, f"us-east-1 {name} = {e.get(name)}, expected 0 once all is acked")
    check(e.get("cairn_inflight_bytes_max", 0) > 0,
          f"us-east-1 cairn_inflight_bytes_max = {e.get('cairn_inflight_bytes_max')}, expected > 0")

    # 3. cairn status.
    st = run([args.cli_bin, "status", "--url", agg_url, "--output", "json"])
    check(st.returncode == 0, f"cairn status exited {st.returncode}: {st.stderr}")
    doc = json.loads(st.stdout)
    check(doc["healthy"] and doc["events_stored"] == 2000, f"status document: {st.stdout}")
    check(sorted(x["region"] for x in doc["agents"] if x["state"] == "connected") ==
          ["eu-west-2", "us-east-1"], "both agents should be connected")
    check(doc["delivery"]["last_object"].startswith("AWSLogs/"), "no last object in status")
    table = run([args.cli_bin, "status", "--url", agg_url]).stdout
    check("us-east-1" in table and "connected" in table and "last object: AWSLogs/" in table,
          f"status table: {table}")

    # 4. SIGHUP: a broken config is refused, a good change is applied.
    agg_conf = cl.path("aggregator.conf")
    agg_log = cl.path("aggregator.log")
    pid = cl.pid("aggregator")
    original = open(agg_conf).read()
    with open(agg_conf, "a") as f:
        f.write("\nnot a key value line\n")
    os.kill(pid, signal.SIGHUP)
    wait_for("the reload error in the log",
             lambda: "keeping the running configuration" in open(agg_log).read(), 10)
    check(re.search(r"aggregator\.conf:\d+: expected key = value", open(agg_log).read()),
          "reload error does not name file and line")
    check(request(agg_url + "/health")[0] == 200, "aggregator unhealthy after a bad reload")
    with open(agg_conf, "w") as f:
        f.write(re.sub(r"(?m)^log_level = \w+", "log_level = debug", original))
    os.kill(pid, signal.SIGHUP)
    wait_for("the log level change in the log",
             lambda: "-> debug" in open(agg_log).read(), 10)

    # 5. --check-config names file, line and reason.
    broken = os.path.join(t.tmp, "broken.conf")
    with open(broken, "w") as f:
        f.write(original.replace("[store]", "[store]\nmap_size = lots", 1))
    cc = run([args.aggregator_bin, "--config", broken, "--check-config"])
    check(cc.returncode != 0 and re.search(r"broken\.conf:\d+: store\.map_size: expected a size",
                                           cc.stderr), f"--check-config: {cc.stderr}")
    good = run([args.aggregator_bin, "--config", agg_conf, "--check-config"])
    check(good.returncode == 0, f"--check-config of a valid file: {good.stdout}{good.stderr}")

    # 6. A stopped agent shows as silent.
    cl.ctl("stop-agent", "--region", "eu-west-2")

    def silent():
        out = run([args.cli_bin, "status", "--url", agg_url, "--output", "json"])
        states = {x["region"]: x["state"] for x in json.loads(out.stdout)["agents"]}
        return out.returncode == 1 and states.get("eu-west-2") == "silent"
    wait_for("eu-west-2 silent in cairn status", silent, 15)

    # 7. The window's bound in bytes. One request is one spool transaction,
    # and a tick sends while the bytes in flight are under window_bytes with
    # no ack handled in between, so 2 MB pending fills the window for sure.
    window_bytes, batch_events = 256 << 10, 20
    cl.ctl("stop-agent", "--region", "us-east-1")
    cl.set_conf_keys("agent-us-east-1", {"window": "1024", "window_bytes": "256K",
                                         "batch_max_events": str(batch_events)})
    cl.ctl("start-agent", "--region", "us-east-1")
    big = [padded_record(i, 2000) for i in range(1000)]
    check(post(east, big)[0] == 200, "the 2 MB request to us-east-1 failed")
    wait_for("us-east-1's 1000 events acknowledged",
             lambda: metrics(east).get("cairn_events_acked_total", 0) >= 1000, 30)
    e = metrics(east)
    peak = e.get("cairn_inflight_bytes_max", 0)
    # One batch: batch_events packed Events (the record's JSON plus fields
    # copied out of it, well under 512 bytes here) and the Batch header.
    longest = max(len(json.dumps(r, separators=(",", ":"))) for r in big)
    batch_bound = batch_events * (longest + 512) + 256
    log(f"window: peak {peak:.0f} bytes in flight; window_bytes {window_bytes}, "
        f"one batch at most {batch_bound}")
    check(peak >= window_bytes,
          f"peak bytes in flight {peak:.0f} < window_bytes {window_bytes}: the window never filled")
    check(peak < window_bytes + batch_bound,
          f"peak bytes in flight {peak:.0f} >= window_bytes {window_bytes} + one batch "
          f"{batch_bound}: the window passed its bound")
    for name in ("cairn_inflight_batches", "cairn_inflight_bytes"):
        check(e.get(name) == 0, f"us-east-1 {name} = {e.get(name)} after all was acked")


if __name__ == "__main__":
    sys.exit(run_test("integration_operate", "cairn-operate-", scenario, __doc__, bins_required=True,
                      failures=failures, tail_lines=15))
