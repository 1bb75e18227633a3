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

import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import Failures, post_events, run, run_test, scrape  # noqa: E402

failures = Failures(echo=True)  # each failed check is also logged when it happens
check, wait_for = failures.check, failures.wait_for


def metric(url, name):
    return scrape(url).get(name)


def records(n, tag):
    return [{"eventName": "PutObject", "eventSource": "s3.amazonaws.com",
             "eventID": str(uuid.uuid4()), "userIdentity": {"type": "IAMUser", "userName": tag}}
            for _ in range(n)]


def scenario(t):
    args = t.args
    cl = t.cluster().up("--interval", "1")
    agent, agg = cl.agent_urls[0], cl.cenv["CAIRN_AGGREGATOR_URL"]
    store = cl.store_dir
    agg_conf = cl.path("aggregator.conf")
    text = open(agg_conf).read()
    check("retention = 90d" in text, "the example config has no retention = 90d")
    open(agg_conf, "w").write(text.replace("retention = 90d", "retention = 4s"))
    cl.ctl("stop-aggregator")
    cl.ctl("start-aggregator")

    old = records(2000, "old-user")
    for i in range(0, 2000, 200):
        check(post_events(agent, old[i:i + 200])[0] == 200, "posting failed")
    wait_for("2000 events delivered",
             lambda: (metric(agg, "cairn_events_delivered_total") or 0) >= 2000, 30)

    def query_count(user):
        out = run([args.cli_bin, "query", "--store", store, "--username", user, "--limit", "0",
                   "--output", "ndjson"])
        return len(out.stdout.splitlines()) if out.returncode == 0 else -1

    check(query_count("old-user") == 2000, "the store does not hold the 2000 events at first")
    wait_for("2000 events pruned",
             lambda: (metric(agg, "cairn_events_pruned_total") or 0) >= 2000, 30)
    check(query_count("old-user") == 0, "pruned events are still found by cairn query")
    young = records(100, "young-user")
    check(post_events(agent, young)[0] == 200, "posting failed")
    wait_for("young events stored", lambda: query_count("young-user") == 100, 20)
    # A pruned eventID is new again.
    check(post_events(agent, old[:10])[0] == 200, "re-post failed")
    wait_for("re-sent events stored again", lambda: query_count("old-user") == 10, 20)
    files = [f for _, _, fs in os.walk(cl.bucket_dir) for f in fs if f.endswith(".gz")]
    check(len(files) >= 1, "the bucket lost its files")


if __name__ == "__main__":
    sys.exit(run_test("integration_retention", "cairn-retention-", scenario, __doc__, bins_required=True,
                      failures=failures, tail_lines=15))
