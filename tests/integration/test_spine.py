#!/usr/bin/env python3
"""The spine, end to end: agents -> aggregator -> bucket, with a crash.

Starts a real local cluster (deploy/local-cluster.sh: one aggregator, agents
for us-east-1 and eu-west-2, 2-second delivery interval) and:

  1. posts 20,000 records across both agents in batches of 100: 17,900
     distinct events (100 of them without eventID, awsRegion,
     recipientAccountId, eventTime, eventVersion and eventType, to be filled
     by the agent), 2,000 exact duplicates (same record, same eventID) sent
     to the same agent, to the other agent, or within the same request, and
     100 invalid records each in its own request, which must get HTTP 400
     with a JSON error naming the problem;
  2. SIGKILLs the aggregator after ~40 % of the requests, keeps posting
     (agents must keep accepting: their spool is durable), restarts it;
  3. posts requests that hold one bad record among good ones: 400, and none
     of their good records may ever be stored;
  4. waits (at most 90 s) until the bucket holds every accepted event, then
     checks every file: key layout, gzip of {"Records":[...]}, account and
     region of each record match the file's, every accepted event exactly
     once and unchanged, filled fields right, nothing rejected anywhere;
  5. stops the cluster and fails on any sanitizer report in its logs.

Only the standard library. Exit 0 on success, 1 on failure. Loopback only.
"""

import collections
import json
import os
import random
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import Agent, TestRun, argument_parser, log, parse_args  # noqa: E402

REGIONS = ["us-east-1", "eu-west-2"]
ACCOUNTS = ["111122223333", "444455556666"]  # the first is the cluster's default
INTERVAL = 2
BATCH = 100
DELIVERY_TIMEOUT = 90
# After the bucket is complete, wait this long for late duplicates: longer
# than the agents' ack_timeout (5 s) plus a delivery window.
SETTLE_SECS = 5 + 2 * INTERVAL

KEY_RE = re.compile(
    r"^AWSLogs/(\d{12})/CloudTrail/([a-z0-9-]+)/(\d{4})/(\d\d)/(\d\d)/"
    r"\1_CloudTrail_\2_\3\4\5T\d{4}Z_[0-9A-Za-z]{16}\.json\.gz$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# --- realistic CloudTrail records -------------------------------------------

class Generator:
    """Realistic CloudTrail records from a seeded RNG."""

    CALLS = [
        # eventSource, eventName, readOnly, category
        ("ec2.amazonaws.com", "DescribeInstances", True, "Management"),
        ("ec2.amazonaws.com", "RunInstances", False, "Management"),
        ("ec2.amazonaws.com", "TerminateInstances", False, "Management"),
        ("ec2.amazonaws.com", "DescribeSecurityGroups", True, "Management"),
        ("s3.amazonaws.com", "CreateBucket", False, "Management"),
        ("s3.amazonaws.com", "PutBucketPolicy", False, "Management"),
        ("s3.amazonaws.com", "GetObject", True, "Data"),
        ("s3.amazonaws.com", "PutObject", False, "Data"),
        ("iam.amazonaws.com", "CreateUser", False, "Management"),
        ("iam.amazonaws.com", "AttachRolePolicy", False, "Management"),
        ("iam.amazonaws.com", "ListRoles", True, "Management"),
        ("sts.amazonaws.com", "AssumeRole", False, "Management"),
        ("sts.amazonaws.com", "GetCallerIdentity", True, "Management"),
        ("kms.amazonaws.com", "Decrypt", True, "Management"),
        ("kms.amazonaws.com", "GenerateDataKey", True, "Management"),
        ("lambda.amazonaws.com", "Invoke", False, "Data"),
        ("dynamodb.amazonaws.com", "CreateTable", False, "Management"),
        ("cloudtrail.amazonaws.com", "LookupEvents", True, "Management"),
        ("signin.amazonaws.com", "ConsoleLogin", False, "Management"),
    ]
    USER_AGENTS = [
        "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0 exe/x86_64.debian.12 prompt/off command/ec2.describe-instances",
        "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.11.2",
        "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64 api/sts#1.28.5",
        "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
        "terraform-provider-aws/5.43.0 (+https://registry.terraform.io/providers/hashicorp/aws)",
        "AWS Internal",
    ]
    NAMES = ["alice", "bob", "carol", "dmitri", "zoë", "ほのか"]  # non-ASCII on purpose
    B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.base = time.time()

    def uuid4(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ident(self, prefix, n=16):
        return prefix + "".join(self.rng.choice(self.B32) for _ in range(n))

    def time(self, spread=3600):
        t = self.base - self.rng.uniform(0, spread)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    def identity(self, acct, source):
        rng = self.rng
        if source == "lambda.amazonaws.com" and rng.random() < 0.5:
            return {"type": "AWSService", "invokedBy": "events.amazonaws.com"}
        kind = rng.choice(["IAMUser", "AssumedRole", "AssumedRole", "Root"])
        if kind == "IAMUser":
            name = rng.choice(self.NAMES)
            return {"type": "IAMUser", "principalId": self.ident("AIDA", 17), "accountId": acct,
                    "arn": f"arn:aws:iam::{acct}:user/{name}",
                    "accessKeyId": self.ident("AKIA"), "userName": name}
        if kind == "Root":
            return {"type": "Root", "principalId": acct, "accountId": acct,
                    "arn": f"arn:aws:iam::{acct}:root", "accessKeyId": self.ident("ASIA")}
        role = rng.choice(["deploy", "ReadOnly", "OrganizationAccountAccessRole", "ci-runner"])
        session = rng.choice(self.NAMES) + "-" + str(rng.randrange(10**6))
        rid = self.ident("AROA", 17)
        return {"type": "AssumedRole", "principalId": f"{rid}:{session}", "accountId": acct,
                "arn": f"arn:aws:sts::{acct}:assumed-role/{role}/{session}",
                "accessKeyId": self.ident("ASIA"),
                "sessionContext": {
                    "sessionIssuer": {"type": "Role", "principalId": rid,
                                      "arn": f"arn:aws:iam::{acct}:role/{role}",
                                      "accountId": acct, "userName": role},
                    "webIdFederationData": {},
                    "attributes": {"creationDate": self.time(7200),
                                   "mfaAuthenticated": rng.choice(["true", "false"])}}}

    def params(self, source, name, acct, region):
        rng = self.rng
        bucket = f"cairn-test-{acct}-{rng.randrange(100)}"
        if name == "DescribeInstances":
            return {"instancesSet": {}, "filterSet": {"items": [
                {"name": "instance-state-name", "valueSet": {"items": [{"value": "running"}]}}]}}
        if name == "RunInstances":
            return {"instancesSet": {"items": [{"imageId": f"ami-{rng.getrandbits(64):016x}",
                                                "minCount": 1, "maxCount": rng.randrange(1, 4)}]},
                    "instanceType": rng.choice(["t3.micro", "m6i.large", "c7g.2xlarge"]),
                    "monitoring": {"enabled": False}, "disableApiTermination": False}
        if name == "TerminateInstances":
            return {"instancesSet": {"items": [{"instanceId": f"i-{rng.getrandbits(68):017x}"}]}}
        if name in ("GetObject", "PutObject"):
            return {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com",
                    "key": f"logs/{rng.randrange(10**6)}/part-{rng.randrange(100):05d}.parquet"}
        if source == "s3.amazonaws.com":
            return {"bucketName": bucket, "Host": "s3.amazonaws.com"}
        if name == "CreateUser":
            return {"userName": rng.choice(self.NAMES) + str(rng.randrange(100)),
                    "tags": [{"key": "team", "value": rng.choice(["platform", "données", "データ"])}]}
        if name == "AttachRolePolicy":
            return {"roleName": "deploy", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}
        if name == "AssumeRole":
            return {"roleArn": f"arn:aws:iam::{rng.choice(ACCOUNTS)}:role/deploy",
                    "roleSessionName": f"ci-{rng.randrange(10**6)}", "durationSeconds": 3600}
        if source == "kms.amazonaws.com":
            return {"keyId": f"arn:aws:kms:{region}:{acct}:key/{self.uuid4()}",
                    "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        if name == "Invoke":
            return {"functionName": f"arn:aws:lambda:{region}:{acct}:function:handler-{rng.randrange(20)}"}
        if name == "CreateTable":
            return {"tableName": rng.choice(["orders", "users", "sessions"]),
                    "billingMode": "PAY_PER_REQUEST",
                    "keySchema": [{"attributeName": "pk", "keyType": "HASH"}]}
        if name == "LookupEvents":
            return {"maxResults": 50, "lookupAttributes": [
                {"attributeKey": "EventName", "attributeValue": "ConsoleLogin"}]}
        return None

    def record(self, region):
        """A complete record; mostly in region, global services in us-east-1."""
        rng = self.rng
        source, name, read_only, category = rng.choice(self.CALLS)
        acct = ACCOUNTS[0] if rng.random() < 0.6 else ACCOUNTS[1]
        event_region = "us-east-1" if source in ("iam.amazonaws.com", "signin.amazonaws.com") else region
        rec = {
            "eventVersion": rng.choice(["1.08", "1.09", "1.10"]),
            "userIdentity": self.identity(acct, source),
            "eventTime": self.time(),
            "eventSource": source,
            "eventName": name,
            "awsRegion": event_region,
            "sourceIPAddress": (f"{rng.choice([198, 203])}.{rng.choice([51, 0])}.{rng.choice([100, 113])}."
                                f"{rng.randrange(1, 255)}" if rng.random() < 0.8 else "AWS Internal"),
            "userAgent": rng.choice(self.USER_AGENTS),
            "requestParameters": self.params(source, name, acct, event_region),
            "responseElements": None,
            "requestID": self.uuid4(),
            "eventID": self.uuid4(),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": category == "Management",
            "recipientAccountId": acct,
            "eventCategory": category,
        }
        if name == "ConsoleLogin":
            rec["eventType"] = "AwsConsoleSignIn"
            rec["requestParameters"] = None
            rec["responseElements"] = {"ConsoleLogin": rng.choice(["Success", "Success", "Failure"])}
            rec["additionalEventData"] = {"MobileVersion": "No", "MFAUsed": rng.choice(["Yes", "No"]),
                                          "LoginTo": "https://console.aws.amazon.com/console/home"}
        elif name == "RunInstances":
            rec["responseElements"] = {"reservationId": f"r-{rng.getrandbits(68):017x}",
                                       "ownerId": acct, "instancesSet": {"items": [
                                           {"instanceId": f"i-{rng.getrandbits(68):017x}",
                                            "currentState": {"code": 0, "name": "pending"}}]}}
        elif name == "AssumeRole":
            rec["responseElements"] = {"credentials": {"accessKeyId": self.ident("ASIA"),
                                                       "expiration": "Jan 1, 2030, 12:00:00 AM"}}
            rec["resources"] = [{"ARN": rec["requestParameters"]["roleArn"],
                                 "accountId": acct, "type": "AWS::IAM::Role"}]
        elif category == "Data" and source == "s3.amazonaws.com":
            b = rec["requestParameters"]["bucketName"]
            rec["resources"] = [
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{b}/{rec['requestParameters']['key']}"},
                {"accountId": acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{b}"}]
        if rng.random() < 0.08:
            rec["errorCode"] = rng.choice(["AccessDenied", "Client.UnauthorizedOperation",
                                           "ThrottlingException"])
            rec["errorMessage"] = f"User is not authorized to perform: {source.split('.')[0]}:{name}"
        if rng.random() < 0.7 and event_region != "AWS Internal":
            rec["tlsDetails"] = {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                                 "clientProvidedHostHeader": f"{source.split('.')[0]}.{event_region}.amazonaws.com"}
        return rec

    def minimal_record(self, marker):
        """A record without the fields the agent must fill."""
        rec = self.record("us-east-1")
        for key in ("eventID", "awsRegion", "recipientAccountId", "eventTime", "eventVersion",
                    "eventType"):
            rec.pop(key, None)
        rec["requestParameters"] = {"fillMarker": marker}
        return rec


# --- the test -----------------------------------------------------------------

def build_plan(gen, total, n_dup, n_invalid, n_fill):
    """The sequence of requests: ("valid", agent_index, [records]) or
    ("invalid", agent_index, body, kind, marker)."""
    rng = gen.rng
    n_unique = total - n_dup - n_invalid
    n_same_request = n_dup // 20            # duplicates inside their original's request
    n_same_agent = (n_dup - n_same_request) // 2
    n_other_agent = n_dup - n_same_request - n_same_agent

    # Distinct events, in batches, alternating agents.
    fill_slots = set(rng.sample(range(n_unique), n_fill))
    uniques = []
    for i in range(n_unique):
        agent = (i // BATCH) % 2
        if i in fill_slots:
            uniques.append((agent, gen.minimal_record(f"fill-marker-{len(uniques)}")))
        else:
            uniques.append((agent, gen.record(REGIONS[agent])))
    batches = []
    for start in range(0, n_unique, BATCH):
        chunk = uniques[start:start + BATCH]
        batches.append(["valid", chunk[0][0], [r for _, r in chunk]])

    # Duplicates within the same request: repeat records of the batch itself.
    candidates = [b for b in batches if all("eventID" in r for r in b[2][:20])]
    for b in rng.sample(candidates, n_same_request // 10):
        b[2].extend(json.loads(json.dumps(r)) for r in b[2][:10])

    # Later duplicates: records re-sent in their own batches, placed after the
    # batch of their original, to the same agent or to the other agent.
    plan = [tuple(b) for b in batches]
    known = [(bi, r) for bi, b in enumerate(batches) for r in b[2][:BATCH] if "eventID" in r]
    picks = rng.sample(known, n_same_agent + n_other_agent)
    dup_batches = []
    for group, flip in ((picks[:n_same_agent], 0), (picks[n_same_agent:], 1)):
        by_agent = {0: [], 1: []}
        for bi, r in group:
            by_agent[batches[bi][1] ^ flip].append((bi, r))
        for agent, items in by_agent.items():
            for k in range(0, len(items), BATCH):
                chunk = items[k:k + BATCH]
                last = max(bi for bi, _ in chunk)
                dup_batches.append((last, agent, [json.loads(json.dumps(r)) for _, r in chunk]))
    # Insert each at a random position after its last original's batch. Going
    # from the latest to the earliest keeps the indices <= last unchanged.
    for last, agent, recs in sorted(dup_batches, key=lambda d: -d[0]):
        plan.insert(rng.randint(last + 1, len(batches)), ("valid", agent, recs))

    # Invalid records, each alone in its request, scattered through the stream.
    kinds = ["not-json", "no-eventName", "eventTime-yesterday", "readOnly-maybe", "json-string"]
    for i in range(n_invalid):
        kind = kinds[i % len(kinds)]
        marker = f"invalid-marker-{i}"
        rec = gen.record(REGIONS[i % 2])
        rec["requestParameters"] = {"marker": marker}
        if kind == "not-json":
            body = [
                f'{{"marker":"{marker}","eventName":"ListBuckets","eventSource":"s3.amazonaws.com"',
                f"{{'marker': '{marker}', 'eventName': 'ListBuckets'}}",
                f'{{"marker":"{marker}","eventName":"ListBuckets","eventSource":"s3.amazonaws.com",}}',
                f"marker={marker}&eventName=ListBuckets",
            ][(i // len(kinds)) % 4]
        elif kind == "json-string":
            body = json.dumps(marker)
        else:
            if kind == "no-eventName":
                del rec["eventName"]
            elif kind == "eventTime-yesterday":
                rec["eventTime"] = "yesterday"
            else:
                rec["readOnly"] = "maybe"
            body = json.dumps([rec] if i % 2 else rec)
        plan.insert(rng.randint(0, len(plan)), ("invalid", i % 2, body, kind, marker))
    return plan


def expect_error(failures, kind, status, answer, must_mention, record_index=None):
    ctx = f"{kind}: {status} {answer!r}"[:300]
    if not failures.check(status == 400, "invalid input not answered 400", ctx):
        return
    if not failures.check(isinstance(answer, dict) and isinstance(answer.get("error"), str)
                          and answer["error"], "400 body is not JSON with an error string", ctx):
        return
    text = answer["error"].lower()
    failures.check(any(word.lower() in text for word in must_mention),
                   "400 error does not name the problem", f"{ctx} (expected one of {must_mention})")
    if record_index is not None and "record" in answer:
        failures.check(answer["record"] == record_index, "400 names the wrong record",
                       f"{ctx} (expected record {record_index})")
    elif record_index is not None:
        failures.check(f"record {record_index}" in text, "400 does not name the bad record",
                       f"{ctx} (expected record {record_index})")


def run(t):
    args, failures = t.args, t.failures
    gen = Generator(args.seed)
    cl = t.cluster().up("--regions", ",".join(REGIONS), "--interval", str(INTERVAL),
                        "--account", ACCOUNTS[0])
    cenv = cl.cenv
    for key in ("CAIRN_BUCKET_DIR", "CAIRN_STORE_DIR", "CAIRN_AGGREGATOR_ENDPOINT", "CAIRN_AGENT_URLS",
                "CAIRN_REGIONS", "CAIRN_AGGREGATOR_PID_FILE", "CAIRN_AGENT_PID_FILES"):
        failures.check(cenv.get(key), "cluster.env lacks a key", key)
    failures.check(cenv.get("CAIRN_REGIONS", "").split() == REGIONS, "cluster.env regions",
                   cenv.get("CAIRN_REGIONS"))
    agents = [Agent(u, r) for u, r in zip(cenv["CAIRN_AGENT_URLS"].split(), REGIONS)]
    bucket = cl.bucket

    plan = build_plan(gen, args.events, args.duplicates, args.invalid, args.fill)
    n_records = sum(len(p[2]) if p[0] == "valid" else 1 for p in plan)
    log(f"plan: {len(plan)} requests, {n_records} records "
        f"({sum(1 for p in plan if p[0] == 'invalid')} invalid, each alone)")

    accepted = {}          # eventID -> record as sent
    fill_sent = {}         # fill marker -> (record as sent, region of the agent)
    posted_while_down = 0
    kill_at = int(len(plan) * 0.4)
    restart_at = int(len(plan) * 0.6)
    t0 = time.monotonic()
    down_since = None
    for i, req in enumerate(plan):
        if i == kill_at:
            log(f"request {i}/{len(plan)}: SIGKILL the aggregator")
            cl.ctl("stop-aggregator", "--kill")
            down_since = time.monotonic()
        if i == restart_at:
            # Stay down for at least two delivery windows.
            time.sleep(max(0.0, 2 * INTERVAL + 0.5 - (time.monotonic() - down_since)))
            log(f"request {i}/{len(plan)}: restarting the aggregator "
                f"(down {time.monotonic() - down_since:.1f} s, {posted_while_down} records accepted meanwhile)")
            cl.ctl("start-aggregator")
            down_since = None
        agent = agents[req[1]]
        if req[0] == "invalid":
            _, _, body, kind, marker = req
            status, answer = agent.post(body)
            mention = {"not-json": ["json"], "no-eventName": ["eventName"],
                       "eventTime-yesterday": ["eventTime"], "readOnly-maybe": ["readOnly"],
                       "json-string": ["object", "record", "array"]}[kind]
            expect_error(failures, kind, status, answer, mention)
            continue
        recs = req[2]
        status, answer = agent.post(json.dumps(recs))
        ok = failures.check(status == 200 and isinstance(answer, dict)
                            and answer.get("accepted") == len(recs),
                            "valid request not accepted" + (" (aggregator down)" if down_since else ""),
                            f"request {i} to {agent.region}: {status} {str(answer)[:300]}")
        if not ok:
            continue
        if down_since is not None:
            posted_while_down += len(recs)
        for r in recs:
            if "eventID" in r:
                accepted[r["eventID"]] = r
            else:
                fill_sent[r["requestParameters"]["fillMarker"]] = (r, agent.region)
    post_secs = time.monotonic() - t0
    log(f"posted in {post_secs:.1f} s: {len(accepted)} distinct events with eventID and "
        f"{len(fill_sent)} without accepted; {posted_while_down} records accepted while the "
        f"aggregator was down")

    # One bad record among good ones: nothing of the request may be stored.
    never = set()
    mixed = [
        (3, "eventSource", "missing eventSource", lambda r: r.pop("eventSource"), "array"),
        (9, "eventTime", "impossible date", lambda r: r.__setitem__("eventTime", "2024-13-45T99:99:99Z"),
         "array"),
        (5, "readOnly", "readOnly is a string", lambda r: r.__setitem__("readOnly", "true"), "Records"),
        (0, "eventName", "eventName is a number", lambda r: r.__setitem__("eventName", 42), "array"),
    ]
    for j, (bad_index, field, what, spoil, shape) in enumerate(mixed):
        recs = [gen.record(REGIONS[j % 2]) for _ in range(max(6, bad_index + 3))]
        spoil(recs[bad_index])
        recs[bad_index]["requestParameters"] = {"marker": f"mixed-marker-{j}"}
        for k, r in enumerate(recs):
            if k != bad_index:
                never.add(r["eventID"])
        body = json.dumps({"Records": recs} if shape == "Records" else recs)
        status, answer = agents[j % 2].post(body)
        expect_error(failures, f"mixed batch ({what} at record {bad_index})", status, answer,
                     [field], record_index=bad_index)
    log(f"posted {len(mixed)} requests holding one bad record among good ones")

    # Wait until the bucket holds every accepted event.
    log(f"waiting (at most {DELIVERY_TIMEOUT} s) for {len(accepted) + len(fill_sent)} events in the bucket")
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    t1 = time.monotonic()
    while True:
        files = bucket.scan()
        seen_ids, seen_fill = set(), set()
        for records, _, err in files.values():
            for r in records or []:
                if isinstance(r, dict):
                    seen_ids.add(r.get("eventID"))
                    params = r.get("requestParameters")
                    if isinstance(params, dict) and "fillMarker" in params:
                        seen_fill.add(params["fillMarker"])
        missing = len(set(accepted) - seen_ids) + len(set(fill_sent) - seen_fill)
        if missing == 0:
            break
        if time.monotonic() > deadline:
            failures.add("accepted events missing from the bucket after "
                         f"{DELIVERY_TIMEOUT} s", f"{missing} of {len(accepted) + len(fill_sent)} missing, "
                         f"e.g. {sorted(set(accepted) - seen_ids)[:3]} {sorted(set(fill_sent) - seen_fill)[:3]}")
            break
        time.sleep(0.5)
    log(f"bucket complete {time.monotonic() - t1:.1f} s after the last post; waiting "
        f"{SETTLE_SECS} s more for late duplicates")
    time.sleep(SETTLE_SECS)

    # Everything still running?
    failures.check(cl.ctl("status", check=False) == 0, "a process of the cluster died",
                   "see the logs")

    check_bucket(failures, bucket.scan(), accepted, fill_sent, never)


def check_bucket(failures, files, accepted, fill_sent, never):
    counts = collections.Counter()
    fill_seen = collections.defaultdict(list)
    n_records = 0
    groups = collections.Counter()
    for rel, (records, text, err) in sorted(files.items()):
        under_awslogs = rel.startswith("AWSLogs" + os.sep)
        # A put cut short by the SIGKILL leaves its temporary file in
        # .cairn-tmp; the restarted aggregator removes it.
        failures.check(".tmp-" not in rel, "temporary file left in the bucket", rel)
        if "/CloudTrail-Digest/" in rel:
            continue
        m = KEY_RE.match(rel.replace(os.sep, "/"))
        if not m:
            if under_awslogs:
                failures.add("file under AWSLogs/ with a key outside CloudTrail's layout", rel)
            else:
                log(f"note: file outside AWSLogs/ in the bucket: {rel}")
            continue
        if not failures.check(err is None, "delivered file is not gzip'd {\"Records\":[...]}", f"{rel}: {err}"):
            continue
        failures.check(len(records) > 0, "delivered file holds no records", rel)
        account, region = m.group(1), m.group(2)
        groups[(account, region)] += 1
        for marker in ("invalid-marker-", "mixed-marker-"):
            failures.check(marker not in text, "a rejected record appears in the bucket",
                           f"{rel} contains {marker}")
        for r in records:
            n_records += 1
            if not failures.check(isinstance(r, dict), "a record is not an object", rel):
                continue
            failures.check(r.get("recipientAccountId") == account, "record in the wrong account's file",
                           f"{rel}: {r.get('eventID')} has recipientAccountId {r.get('recipientAccountId')}")
            failures.check(r.get("awsRegion") == region, "record in the wrong region's file",
                           f"{rel}: {r.get('eventID')} has awsRegion {r.get('awsRegion')}")
            eid = r.get("eventID")
            counts[eid] += 1
            failures.check(eid not in never, "a good record of a rejected request was stored",
                           f"{rel}: {eid}")
            params = r.get("requestParameters")
            marker = params.get("fillMarker") if isinstance(params, dict) else None
            if marker:
                fill_seen[marker].append(r)
            elif eid in accepted:
                sent = accepted[eid]
                changed = [k for k in sent if r.get(k, KeyError) != sent[k]]
                failures.check(not changed, "a delivered record differs from the one sent",
                               f"{eid}: fields {changed[:5]}")
            else:
                failures.add("the bucket holds an event that was never accepted", f"{rel}: {eid}")

    dups = {e: c for e, c in counts.items() if c > 1}
    failures.check(not dups, "an event appears more than once in the bucket",
                   f"{len(dups)} eventIDs, e.g. {list(dups.items())[:3]}")
    missing = [e for e in accepted if counts[e] == 0]
    failures.check(not missing, "an accepted event is missing from the bucket",
                   f"{len(missing)}, e.g. {missing[:3]}")
    for marker, (sent, agent_region) in fill_sent.items():
        got = fill_seen.get(marker, [])
        if not failures.check(len(got) == 1, "a record without eventID is not stored exactly once",
                              f"{marker}: {len(got)} copies"):
            continue
        r = got[0]
        failures.check(isinstance(r.get("eventID"), str) and UUID_RE.match(r["eventID"]),
                       "filled eventID is not a UUID v4", f"{marker}: {r.get('eventID')}")
        failures.check(r.get("awsRegion") == agent_region, "filled awsRegion is not the agent's region",
                       f"{marker}: {r.get('awsRegion')} (agent {agent_region})")
        failures.check(r.get("recipientAccountId") == ACCOUNTS[0],
                       "filled recipientAccountId is not the agent's account",
                       f"{marker}: {r.get('recipientAccountId')}")
        failures.check(isinstance(r.get("eventTime"), str)
                       and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", r["eventTime"]),
                       "filled eventTime is not ISO-8601 UTC", f"{marker}: {r.get('eventTime')}")
        for key in ("eventVersion", "eventType"):
            failures.check(isinstance(r.get(key), str) and r[key], f"filled {key} missing",
                           f"{marker}: {r.get(key)}")
        changed = [k for k in sent if r.get(k, KeyError) != sent[k]]
        failures.check(not changed, "a delivered record differs from the one sent", f"{marker}: {changed}")
    log(f"bucket: {len(files)} files, {n_records} records, {len(counts)} distinct eventIDs; "
        f"files per (account, region): {dict(sorted(groups.items()))}")
    failures.check({a for a, _ in groups} == set(ACCOUNTS), "no files for some account",
                   f"{sorted(groups)}")


def main():
    ap = argument_parser(__doc__)
    ap.add_argument("--events", type=int, default=20000, help="records posted, all kinds (default 20000)")
    ap.add_argument("--duplicates", type=int, default=2000, help="of which exact duplicates")
    ap.add_argument("--invalid", type=int, default=100, help="of which invalid, one per request")
    ap.add_argument("--fill", type=int, default=100, help="of the distinct ones, sent without eventID etc.")
    ap.add_argument("--seed", type=int, default=20240501)
    t = TestRun("integration_spine", parse_args(ap), "cairn-spine-", tail_lines=40)
    return t.run(run, t)


if __name__ == "__main__":
    sys.exit(main())
