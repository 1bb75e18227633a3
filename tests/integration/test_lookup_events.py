#!/usr/bin/env python3
"""LookupEvents on the aggregator, with the real AWS CLI and boto3, and `cairn query`.

Starts a local cluster (deploy/local-cluster.sh up: one aggregator with the
LookupEvents API on, agents for us-east-1 and eu-west-1; cluster.env gives
CAIRN_QUERY_URL and the API's key pair) and:

  1. posts 150 CloudTrail records to the agents (/v1/events): 120 by IAM user
     lookup-alice (eventTimes 10 s apart, GetObject and PutObject), 7 by
     lookup-bob, 3 by an assumed role (session lookup-session), 20 by others;
  2. waits (at most 60 s) until `cairn query --store $CAIRN_STORE_DIR` (the live
     store, read-only, while the aggregator writes) sees all 150;
  3. runs exactly `aws cloudtrail lookup-events --endpoint-url $CAIRN_QUERY_URL
     --lookup-attributes AttributeKey=Username,AttributeValue=lookup-alice`:
     the CLI follows NextToken itself through 3 pages; the answer must be
     exactly alice's 120 eventIDs, newest first, with CloudTrail's shapes
     (ReadOnly a string, EventTime, Resources, CloudTrailEvent the record);
     then bob (7), the session name (3), EventName, EventId, a time range;
  4. pages with --max-items 10 and --starting-token until the end: the same
     120 in the same order;
  5. two lookup attributes: fails with InvalidLookupAttributesException; a
     wrong secret: fails (non-zero exit) with SignatureDoesNotMatch;
  6. boto3's paginator (python3 -c) for the same lookups: the same events;
  7. `cairn query` by each filter gives the same eventIDs in the same order;
  8. stops the cluster and fails on any sanitizer report in its logs.

Standard library, the AWS CLI and boto3 (preinstalled). Exit 0 on success, 1
on failure. Loopback only; every wait is bounded.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import (REPO, TestRun, argument_parser, aws_env, log, parse_args,  # noqa: E402
                           post_events)

REGIONS = ["us-east-1", "eu-west-1"]
ACCOUNT = "111122223333"
INTERVAL = 2
STORE_TIMEOUT = 60

BOTO3_SCRIPT = r"""
import json, sys, boto3
url, key, secret, attr, value = sys.argv[1:6]
client = boto3.client("cloudtrail", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id=key, aws_secret_access_key=secret)
ids = []
for page in client.get_paginator("lookup_events").paginate(
        LookupAttributes=[{"AttributeKey": attr, "AttributeValue": value}]):
    for event in page["Events"]:
        assert json.loads(event["CloudTrailEvent"])["eventID"] == event["EventId"]
        ids.append(event["EventId"])
print(json.dumps(ids))
"""


def iso(epoch_s):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def make_record(region, when, name, user, read_only, identity=None):
    identity = identity or {"type": "IAMUser", "principalId": f"AIDA{user.upper()[:12]}",
                            "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}", "accountId": ACCOUNT,
                            "accessKeyId": f"AKIA{user.upper().replace('-', '')[:16]}",
                            "userName": user}
    return {"eventVersion": "1.11", "userIdentity": identity, "eventTime": iso(when),
            "eventSource": "s3.amazonaws.com", "eventName": name, "awsRegion": region,
            "sourceIPAddress": "198.51.100.7", "userAgent": "cairn-test",
            "requestParameters": {"bucketName": "lookup-bucket"}, "responseElements": None,
            "requestID": uuid.uuid4().hex, "eventID": str(uuid.uuid4()), "readOnly": read_only,
            "resources": [{"ARN": "arn:aws:s3:::lookup-bucket", "accountId": ACCOUNT,
                           "type": "AWS::S3::Bucket"}],
            "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": ACCOUNT,
            "eventCategory": "Management"}


def make_trail():
    """150 records with distinct eventTimes (so newest-first has one order)."""
    base = int(time.time()) - 7200
    records = []
    for i in range(120):
        records.append(make_record(REGIONS[i % 2], base + 10 * i,
                                   "GetObject" if i % 3 else "PutObject", "lookup-alice",
                                   i % 3 != 0))
    for i in range(7):
        records.append(make_record(REGIONS[0], base + 10 * i + 3, "DeleteBucket", "lookup-bob",
                                   False))
    role = {"type": "AssumedRole", "principalId": "AROAEXAMPLE:lookup-session",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/DeployRole/lookup-session",
            "accountId": ACCOUNT, "accessKeyId": "ASIALOOKUPSESSION"}
    for i in range(3):
        records.append(make_record(REGIONS[1], base + 10 * i + 5, "RunInstances", "",
                                   False, identity=role))
    for i in range(20):
        records.append(make_record(REGIONS[i % 2], base + 10 * i + 7, "ListBuckets",
                                   f"lookup-other{i % 4}", True))
    return records


def newest_first(records):
    return [r["eventID"] for r in sorted(records, key=lambda r: r["eventTime"], reverse=True)]


def post_records(url, records):
    status, text, _ = post_events(url, records)
    answer = json.loads(text) if status == 200 else {}
    if status != 200 or answer.get("accepted") != len(records):
        raise RuntimeError(f"{url} answered {status} {text[:300]}: not all {len(records)} accepted")


class Aws:
    """Runs the real AWS CLI against the aggregator's LookupEvents API."""

    def __init__(self, url, key, secret):
        self.url, self.key, self.secret = url, key, secret
        if not shutil.which("aws"):
            raise RuntimeError("the AWS CLI (aws) is not on PATH")

    def run(self, *args, secret=None):
        env = aws_env(self.key, secret or self.secret, "us-east-1", AWS_MAX_ATTEMPTS="1")
        argv = ["aws", "cloudtrail", "lookup-events", "--endpoint-url", self.url, *args,
                "--output", "json"]
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=120)
        log(f"  aws cloudtrail lookup-events {' '.join(args)}: exit {proc.returncode}")
        return proc

    def lookup(self, failures, label, *args):
        """Returns the Events of a successful call (or [] after recording why not)."""
        proc = self.run(*args)
        if not failures.check(proc.returncode == 0, f"{label}: the CLI failed",
                              f"exit {proc.returncode}: {proc.stderr.strip()[:300]}"):
            return [], None
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            failures.add(f"{label}: the CLI's output is not JSON", proc.stdout[:300])
            return [], None
        return out.get("Events", []), out.get("NextToken")


def check_shapes(failures, events, by_id):
    for e in events:
        rec = by_id.get(e.get("EventId"))
        if not failures.check(rec is not None, "an event nobody sent", str(e)[:200]):
            continue
        ok = (e.get("EventName") == rec["eventName"]
              and e.get("ReadOnly") == ("true" if rec["readOnly"] else "false")
              and e.get("EventSource") == rec["eventSource"]
              and e.get("AccessKeyId") == rec["userIdentity"].get("accessKeyId")
              and e.get("Resources") == [{"ResourceType": "AWS::S3::Bucket",
                                          "ResourceName": "arn:aws:s3:::lookup-bucket"}]
              and isinstance(e.get("CloudTrailEvent"), str)
              and json.loads(e["CloudTrailEvent"]) == rec)
        failures.check(ok, "an event's fields differ from its record", str(e)[:400])
        # The CLI prints EventTime as text (ISO or epoch): compare its second.
        t = e.get("EventTime")
        want = rec["eventTime"]
        got = iso(t) if isinstance(t, (int, float)) else str(t)
        failures.check(got.replace("+00:00", "Z").replace(" ", "T")[:19] == want[:19],
                       "an event's EventTime differs", f"{t} vs {want}")


def cairn_query(cli_bin, store, *args):
    proc = subprocess.run([cli_bin, "query", "--store", store, "--output", "ndjson",
                           "--limit", "0", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"cairn query {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return [json.loads(line)["eventID"] for line in proc.stdout.splitlines() if line]


def run(t):
    args, failures = t.args, t.failures
    cl = t.cluster().up("--regions", ",".join(REGIONS), "--interval", str(INTERVAL),
                        "--account", ACCOUNT)
    cenv = cl.cenv
    qurl = cenv["CAIRN_QUERY_URL"]  # cl.up() refuses it unless on loopback, as the agents'
    key, secret = cenv["CAIRN_QUERY_ACCESS_KEY_ID"], cenv["CAIRN_QUERY_SECRET_ACCESS_KEY"]
    store = cl.store_dir
    agent_urls = cl.agent_urls
    cli_bin = args.cli_bin or os.path.join(REPO, "build", "cli", "cairn")

    records = make_trail()
    by_id = {r["eventID"]: r for r in records}
    for i, url in enumerate(agent_urls):
        mine = [r for r in records if r["awsRegion"] == REGIONS[i]]
        post_records(url, mine)
    log(f"posted {len(records)} records; waiting (at most {STORE_TIMEOUT} s) for the store")
    deadline = time.monotonic() + STORE_TIMEOUT
    while True:
        stored = cairn_query(cli_bin, store, "--start", "3h")
        if len(stored) >= len(records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    failures.check(stored == newest_first(records), "cairn query (no filter) differs",
                   f"{len(stored)} events")

    def want(pred):
        return newest_first([r for r in records if pred(r)])

    alice = want(lambda r: r["userIdentity"].get("userName") == "lookup-alice")
    bob = want(lambda r: r["userIdentity"].get("userName") == "lookup-bob")
    session = want(lambda r: r["userIdentity"]["type"] == "AssumedRole")

    aws = Aws(qurl, key, secret)
    log("the AWS CLI, following NextToken itself")
    cases = [("Username", "lookup-alice", alice), ("Username", "lookup-bob", bob),
             ("Username", "lookup-session", session),
             ("EventName", "DeleteBucket", bob),
             ("EventId", alice[17], [alice[17]]),
             ("AccessKeyId", "ASIALOOKUPSESSION", session),
             ("ReadOnly", "false", want(lambda r: not r["readOnly"])),
             ("ResourceName", "lookup-bucket", newest_first(records))]
    for attr, value, expected in cases:
        events, token = aws.lookup(failures, f"{attr}={value}", "--lookup-attributes",
                                   f"AttributeKey={attr},AttributeValue={value}")
        got = [e.get("EventId") for e in events]
        failures.check(got == expected, f"the CLI's {attr}={value} is not exactly the matching "
                       "events, newest first", f"got {len(got)}, want {len(expected)}")
        failures.check(token is None, f"{attr}={value}: the CLI left a NextToken", str(token))
        check_shapes(failures, events, by_id)
    log(f"  Username=lookup-alice: {len(alice)} events over 3 pages of <= 50")

    # A time range: alice's events from the 31st to the 60th (inclusive).
    times = sorted(by_id[e]["eventTime"] for e in alice)
    events, _ = aws.lookup(failures, "time range", "--lookup-attributes",
                           "AttributeKey=Username,AttributeValue=lookup-alice",
                           "--start-time", times[30], "--end-time", times[59])
    failures.check([e.get("EventId") for e in events] == alice[60:90],
                   "the CLI's time range is not exactly the events inside it",
                   f"got {len(events)}")

    log("the AWS CLI with --max-items 10 and --starting-token")
    pages, token, got = 0, None, []
    while pages < 20:
        extra = ["--starting-token", token] if token else []
        events, token = aws.lookup(failures, "max-items", "--lookup-attributes",
                                   "AttributeKey=Username,AttributeValue=lookup-alice",
                                   "--max-items", "10", *extra)
        got += [e.get("EventId") for e in events]
        pages += 1
        if not token or not events:
            break
    failures.check(got == alice and pages == 12, "--max-items 10 / --starting-token paging differs",
                   f"{len(got)} events in {pages} calls")
    log(f"  {len(got)} events in {pages} calls of --max-items 10")

    log("the AWS CLI: two attributes, a wrong secret")
    proc = aws.run("--lookup-attributes", "AttributeKey=Username,AttributeValue=lookup-alice",
                   "AttributeKey=EventName,AttributeValue=GetObject")
    failures.check(proc.returncode != 0 and "InvalidLookupAttributesException" in proc.stderr,
                   "two lookup attributes did not fail with InvalidLookupAttributesException",
                   f"exit {proc.returncode}: {proc.stderr[:300]}")
    proc = aws.run("--lookup-attributes", "AttributeKey=Username,AttributeValue=lookup-alice",
                   secret="not-the-secret")
    failures.check(proc.returncode != 0 and "SignatureDoesNotMatch" in proc.stderr,
                   "a wrong secret did not fail with SignatureDoesNotMatch",
                   f"exit {proc.returncode}: {proc.stdout[:200]} {proc.stderr[:300]}")
    log(f"  wrong secret: exit {proc.returncode}: {proc.stderr.strip()[:160]}")

    log("boto3's paginator")
    for attr, value, expected in cases[:2]:
        proc = subprocess.run([sys.executable, "-c", BOTO3_SCRIPT, qurl, key, secret, attr, value],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=120)
        ok = proc.returncode == 0 and json.loads(proc.stdout or "[]") == expected
        failures.check(ok, f"boto3 paginator {attr}={value} differs",
                       f"exit {proc.returncode}: {proc.stdout[:200]} {proc.stderr[-300:]}")

    log("cairn query against the live store")
    for argv, expected in [(["--username", "lookup-alice"], alice),
                           (["--username", "lookup-session"], session),
                           (["--event-name", "DeleteBucket"], bob),
                           (["--username", "lookup-alice", "--region", "eu-west-1"],
                            want(lambda r: r["userIdentity"].get("userName") == "lookup-alice"
                                 and r["awsRegion"] == "eu-west-1")),
                           (["--read-only", "true", "--event-name", "ListBuckets"],
                            want(lambda r: r["eventName"] == "ListBuckets")),
                           (["--event-id", bob[2]], [bob[2]])]:
        got = cairn_query(cli_bin, store, *argv)
        failures.check(got == expected, f"cairn query {' '.join(argv)} differs",
                       f"got {len(got)}, want {len(expected)}")
    proc = subprocess.run([cli_bin, "query", "--store", store, "--read-only", "maybe"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    failures.check(proc.returncode == 2 and "--read-only" in proc.stderr and "true or false"
                   in proc.stderr, "a bad --read-only was not refused naming the filter",
                   proc.stderr[:200])


def main():
    args = parse_args(argument_parser(__doc__))
    if not args.cli_bin and args.bin_dir:
        args.cli_bin = os.path.join(args.bin_dir, "cli", "cairn")
    t = TestRun("integration_lookup_events", args, "cairn-lookup-")
    return t.run(run, t)


if __name__ == "__main__":
    sys.exit(main())
