#!/usr/bin/env python3
"""CloudTrail Lake's PutAuditEvents on the agent, with the real AWS CLI, and SigV4.

Starts a local cluster (deploy/local-cluster.sh up: one aggregator, one agent
for us-east-1, 2-second delivery interval) and:

  1. runs exactly `aws cloudtrail-data put-audit-events --endpoint-url
     http://127.0.0.1:PORT --channel-arn ARN --audit-events file://events.json`
     (aws-cli v1 on PATH; AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE are
     /dev/null) with good events and bad ones (no eventSource, a wrong
     eventDataChecksum, an eventID of its own): partial success, successful[]
     with the eventIDs derived from channel and id, failed[] with CloudTrail
     Lake's errorCodes;
  2. runs the same call again: the same eventIDs;
  3. POSTs /v1/events with a form Content-Type: 415, nothing stored;
  4. turns SigV4 on: writes a 0600 credentials file, rewrites the agent's
     [auth] section (and [http] request_timeout = 2s) in DIR/agent-<region>.conf
     and restarts the agent with local-cluster.sh stop-agent / start-agent;
  5. with SigV4 on: the CLI with the right key succeeds; with a wrong secret
     it fails with SignatureDoesNotMatch (and curl --aws-sigv4 with a wrong
     secret gets 403); a request signed (botocore) with an X-Amz-Date 20
     minutes old, and a curl --aws-sigv4 with such a date, get 403 "Signature
     expired"; unsigned curl to /PutAuditEvents and to /v1/events get 403
     MissingAuthenticationToken; a signed curl to /v1/events gets 200;
  6. a client that sends half a body and stalls is cut off after the
     request timeout, and the agent still answers;
  7. waits (at most 60 s) until the bucket holds every accepted event, then a
     little longer for late duplicates, and checks each accepted eventID is
     there exactly once, unchanged, and nothing refused is anywhere;
  8. stops the cluster and fails on any sanitizer report in its logs.

Standard library plus the preinstalled botocore (only to sign the stale
request). Exit 0 on success, 1 on failure. Loopback only.
"""

import base64
import collections
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import aws_env, log, run_test  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "111122223333"
CHANNEL = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:channel/cairn-test"
INTERVAL = 2
DELIVERY_TIMEOUT = 60
SETTLE_SECS = 5 + 2 * INTERVAL  # ack_timeout plus two windows: late duplicates show by then
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def event_id(channel, ident):
    """The eventID cairn derives: SHA-256(channel "\\n" id)[:16] as a version-5 UUID."""
    d = bytearray(hashlib.sha256(f"{channel}\n{ident}".encode()).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x50
    d[8] = (d[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(d)))


def record(name, **extra):
    rec = {"version": "1.0", "eventName": name, "eventSource": "widgets.example.com",
           "userIdentity": {"type": "CustomUserIdentity", "principalId": "alice",
                            "details": {"team": "platform"}},
           "eventTime": "2026-11-24T11:24:54Z", "UID": f"req-{name}",
           "requestParameters": {"widget": name, "size": 3}}
    rec.update(extra)
    return json.dumps(rec)


def checksum(data):
    return base64.b64encode(hashlib.sha256(data.encode()).digest()).decode()


class Cli:
    """Runs the real AWS CLI in a directory holding events.json."""

    def __init__(self, workdir, url):
        self.workdir, self.url = workdir, url
        self.aws = shutil.which("aws")
        if not self.aws:
            raise RuntimeError("the AWS CLI (aws) is not on PATH")

    def put_audit_events(self, events, key_id=KEY_ID, secret=SECRET):
        with open(os.path.join(self.workdir, "events.json"), "w", encoding="utf-8") as f:
            json.dump(events, f)
        env = aws_env(key_id, secret, REGION)
        args = ["aws", "cloudtrail-data", "put-audit-events", "--endpoint-url", self.url,
                "--channel-arn", CHANNEL, "--audit-events", "file://events.json"]
        proc = subprocess.run(args, cwd=self.workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        log(f"  aws cloudtrail-data put-audit-events ({len(events)} events): exit {proc.returncode}")
        return proc


def curl(url, body, content_type="application/json", sign=None, amz_date=None):
    """POSTs body with curl; sign=(key, secret) uses --aws-sigv4. Returns (status, text)."""
    args = ["curl", "-s", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}",
            "-H", f"Content-Type: {content_type}", "--data-binary", body]
    if sign:
        args += ["--aws-sigv4", f"aws:amz:{REGION}:cloudtrail-data", "--user", f"{sign[0]}:{sign[1]}"]
    if amz_date:
        args += ["-H", f"X-Amz-Date: {amz_date}"]
    proc = subprocess.run(args + [url], stdout=subprocess.PIPE, text=True, timeout=60)
    text, _, status = proc.stdout.rpartition("\n")
    return int(status or 0), text


def botocore_post(url, body, timestamp, key_id=KEY_ID, secret=SECRET):
    """POSTs body signed by botocore's SigV4Auth with a fixed X-Amz-Date."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", "Host": parts.netloc, "X-Amz-Date": timestamp}
    req = AWSRequest(method="POST", url=url, data=body.encode(), headers=headers)
    req.context["timestamp"] = timestamp
    auth = SigV4Auth(Credentials(key_id, secret), "cloudtrail-data", REGION)
    sig = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{timestamp[:8]}/{REGION}/cloudtrail-data/aws4_request, "
        f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(req))}, Signature={sig}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        path = parts.path + ("?" + parts.query if parts.query else "")
        conn.request("POST", path, body.encode(), headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def json_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def check_cli_result(failures, label, proc, good, bad):
    """good: {id: eventData}; bad: {id: errorCode}. Checks the CLI's JSON output."""
    if not failures.check(proc.returncode == 0, f"{label}: the CLI failed",
                          f"exit {proc.returncode}: {proc.stderr.strip()[:300]}"):
        return
    out = json_or_none(proc.stdout)
    if not failures.check(isinstance(out, dict) and set(out) == {"successful", "failed"},
                          f"{label}: CLI output is not {{successful, failed}}", proc.stdout[:300]):
        return
    got_ok = {e.get("id"): e.get("eventID") for e in out["successful"]}
    want_ok = {i: event_id(CHANNEL, i) for i in good}
    failures.check(got_ok == want_ok, f"{label}: successful[] is not the good events with derived eventIDs",
                   f"got {got_ok}, want {want_ok}")
    got_bad = {e.get("id"): e.get("errorCode") for e in out["failed"]}
    failures.check(got_bad == bad, f"{label}: failed[] is not the bad events with their errorCodes",
                   f"got {got_bad}, want {bad}")
    for e in out["failed"]:
        failures.check(isinstance(e.get("errorMessage"), str) and 0 < len(e["errorMessage"]) <= 1024,
                       f"{label}: a failed entry lacks a useful errorMessage", str(e))


def expect_aws_error(failures, label, status, text, want_status, want_type, in_message=""):
    body = json_or_none(text)
    ok = (status == want_status and isinstance(body, dict) and body.get("__type") == want_type
          and in_message in str(body.get("message", "")))
    failures.check(ok, f"{label}: want {want_status} {want_type}", f"got {status} {text[:300]}")


def slow_client(failures, url, timeout_s):
    """Sends half a body and stalls: the agent must close the connection."""
    parts = urllib.parse.urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s + 10)
    t0 = time.monotonic()
    try:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: " + parts.netloc.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"eventName\"")
        data = s.recv(4096)
        closed = data == b"" or b"HTTP/1.1" not in data or b" 200 " not in data
    except (ConnectionResetError, socket.timeout) as e:
        closed = not isinstance(e, socket.timeout)
    finally:
        s.close()
    took = time.monotonic() - t0
    failures.check(closed and took < timeout_s + 5, "a stalled client was not cut off in time",
                   f"closed={closed} after {took:.1f} s (request_timeout {timeout_s} s)")
    log(f"  stalled client cut off after {took:.1f} s")


def scan_bucket(bucket):
    """{eventID: [records]} over every delivered file; also unparsable files."""
    found = collections.defaultdict(list)
    records, errors = bucket.records()
    for rec in records:
        found[rec.get("eventID")].append(rec)
    return found, errors


def run(t):
    failures, tmp = t.failures, t.tmp
    cl = t.cluster().up("--regions", REGION, "--interval", str(INTERVAL), "--account", ACCOUNT)
    cdir = cl.dir
    url = cl.agent_urls[0]
    assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", f"refusing a non-loopback URL {url}"
    audit_url = f"{url}/PutAuditEvents?channelArn={urllib.parse.quote(CHANNEL, safe='')}"
    cli = Cli(tmp, url)
    accepted = {}       # eventID -> eventData (a JSON string) or record dict
    refused_names = set()  # eventName of every record that must never be stored

    # 1-2. The CLI, unsigned (auth off), partial success, then the same call again.
    log("PutAuditEvents with the AWS CLI, SigV4 off")
    good = {f"lake-ok-{i}": record(f"LakeOk{i}") for i in range(5)}
    events = [{"id": i, "eventData": d} for i, d in good.items()]
    events[0]["eventDataChecksum"] = checksum(events[0]["eventData"])
    bad_events = [
        {"id": "lake-no-source", "eventData": json.dumps({"eventName": "LakeNoSource"})},
        {"id": "lake-bad-checksum", "eventData": record("LakeBadChecksum"),
         "eventDataChecksum": checksum("something else")},
        {"id": "lake-own-eventid", "eventData": record("LakeOwnEventId", eventID=str(uuid.uuid4()))},
    ]
    refused_names |= {"LakeNoSource", "LakeBadChecksum", "LakeOwnEventId"}
    want_bad = {"lake-no-source": "FieldNotFound", "lake-bad-checksum": "InvalidChecksum",
                "lake-own-eventid": "InvalidData"}
    events = events[:2] + bad_events + events[2:]
    for attempt in ("first call", "same call again"):
        proc = cli.put_audit_events(events)
        check_cli_result(failures, attempt, proc, good, want_bad)
    for i, d in good.items():
        accepted[event_id(CHANNEL, i)] = d

    # 3. A wrong Content-Type.
    status, text = curl(f"{url}/v1/events", json.dumps({"eventName": "FormPosted", "eventSource": "x"}),
                        content_type="application/x-www-form-urlencoded")
    refused_names.add("FormPosted")
    failures.check(status == 415 and "Content-Type" in text, "a form Content-Type was not refused with 415",
                   f"{status} {text[:200]}")

    # 4. SigV4 on: credentials file, rewritten [auth], agent restarted.
    log("turning SigV4 on in the agent's config and restarting the agent")
    creds = os.path.join(cdir, "senders.keys")
    with open(creds, "w", encoding="utf-8") as f:
        f.write(f"# senders of the test\n{KEY_ID} {SECRET}\nAKIAOTHERSENDER00000 other-secret\n")
    os.chmod(creds, 0o600)
    cl.set_conf_keys(f"agent-{REGION}", {"sigv4": "on", "credentials_file": f'"{creds}"',
                                         "request_timeout": "2s"})
    cl.ctl("stop-agent", "--region", REGION)
    cl.ctl("start-agent", "--region", REGION)

    # 5. Signed, wrongly signed, stale and unsigned requests.
    log("SigV4 on: right key, wrong secret, stale date, unsigned")
    signed = {f"signed-{i}": record(f"Signed{i}") for i in range(3)}
    proc = cli.put_audit_events([{"id": i, "eventData": d} for i, d in signed.items()])
    check_cli_result(failures, "CLI with the right key", proc, signed, {})
    for i, d in signed.items():
        accepted[event_id(CHANNEL, i)] = d

    forged = [{"id": "forged-1", "eventData": record("Forged")}]
    refused_names.add("Forged")
    proc = cli.put_audit_events(forged, secret="not-the-secret")
    failures.check(proc.returncode != 0 and "SignatureDoesNotMatch" in proc.stderr,
                   "CLI with a wrong secret did not fail with SignatureDoesNotMatch",
                   f"exit {proc.returncode}: {proc.stdout[:200]} {proc.stderr[:300]}")
    proc = cli.put_audit_events(forged, key_id="AKIANOSUCHKEY0000000")
    failures.check(proc.returncode != 0 and "UnrecognizedClientException" in proc.stderr,
                   "CLI with an unknown key did not fail with UnrecognizedClientException",
                   f"exit {proc.returncode}: {proc.stderr[:300]}")
    forged_body = json.dumps({"auditEvents": forged})
    status, text = curl(audit_url, forged_body, sign=(KEY_ID, "not-the-secret"))
    expect_aws_error(failures, "curl --aws-sigv4 with a wrong secret", status, text, 403,
                     "SignatureDoesNotMatch")

    stale = [{"id": "stale-1", "eventData": record("Stale")}]
    refused_names.add("Stale")
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 20 * 60))
    status, text = botocore_post(audit_url, json.dumps({"auditEvents": stale}), old)
    expect_aws_error(failures, "botocore-signed with a date 20 minutes old", status, text, 403,
                     "InvalidSignatureException", "Signature expired")
    status, text = curl(audit_url, json.dumps({"auditEvents": stale}), sign=(KEY_ID, SECRET),
                        amz_date=old)
    expect_aws_error(failures, "curl --aws-sigv4 with a date 20 minutes old", status, text, 403,
                     "InvalidSignatureException", "Signature expired")
    fresh = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    botocore_ok = [{"id": "botocore-1", "eventData": record("BotocoreSigned")}]
    status, text = botocore_post(audit_url, json.dumps({"auditEvents": botocore_ok}), fresh)
    answer = json_or_none(text) or {}
    failures.check(status == 200 and [e.get("id") for e in answer.get("successful", [])] == ["botocore-1"],
                   "botocore-signed with a current date was not accepted", f"{status} {text[:300]}")
    accepted[event_id(CHANNEL, "botocore-1")] = botocore_ok[0]["eventData"]

    unsigned = [{"id": "unsigned-1", "eventData": record("Unsigned")}]
    refused_names |= {"Unsigned", "UnsignedV1"}
    status, text = curl(audit_url, json.dumps({"auditEvents": unsigned}))
    expect_aws_error(failures, "unsigned curl to /PutAuditEvents", status, text, 403,
                     "MissingAuthenticationToken")
    status, text = curl(f"{url}/v1/events", json.dumps({"eventName": "UnsignedV1", "eventSource": "x"}))
    expect_aws_error(failures, "unsigned curl to /v1/events", status, text, 403,
                     "MissingAuthenticationToken")
    v1_id = str(uuid.uuid4())
    v1_record = {"eventID": v1_id, "eventName": "SignedV1", "eventSource": "x.example.com",
                 "eventTime": "2026-11-24T11:24:54Z"}
    status, text = curl(f"{url}/v1/events", json.dumps(v1_record), sign=(KEY_ID, SECRET))
    failures.check(status == 200 and (json_or_none(text) or {}).get("accepted") == 1,
                   "signed curl to /v1/events was not accepted", f"{status} {text[:200]}")
    accepted[v1_id] = v1_record

    # 6. A client that stalls mid-body.
    slow_client(failures, url, 2)
    status, _ = curl(f"{url}/v1/events", "{}", sign=(KEY_ID, SECRET))
    failures.check(status == 400, "the agent did not answer after the stalled client", str(status))

    # 7. The bucket: every accepted event once, nothing refused.
    log(f"waiting (at most {DELIVERY_TIMEOUT} s) for {len(accepted)} events in the bucket")
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        found, errors = scan_bucket(cl.bucket)
        missing = [e for e in accepted if e not in found]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(SETTLE_SECS)
    found, errors = scan_bucket(cl.bucket)
    failures.check(not errors, "unreadable files in the bucket", "; ".join(errors[:3]))
    for eid, data in accepted.items():
        recs = found.get(eid, [])
        if not failures.check(len(recs) == 1, "an accepted event is not in the bucket exactly once",
                              f"{eid}: {len(recs)} copies"):
            continue
        sent = json.loads(data) if isinstance(data, str) else data
        got = recs[0]
        same = all(got.get(k) == v for k, v in sent.items())
        failures.check(same and got.get("eventID") == eid and got.get("awsRegion") == REGION
                       and got.get("recipientAccountId") == ACCOUNT,
                       "a delivered event differs from what was sent", f"{eid}: {json.dumps(got)[:300]}")
    stored_names = {r.get("eventName") for recs in found.values() for r in recs}
    failures.check(not (stored_names & refused_names), "a refused event reached the bucket",
                   str(sorted(stored_names & refused_names)))
    extra = set(found) - set(accepted)
    failures.check(not extra, "the bucket holds events nobody accepted", str(sorted(extra)[:5]))
    log(f"bucket: {len(found)} distinct events, {sum(len(r) for r in found.values())} records")


if __name__ == "__main__":
    sys.exit(run_test("integration_put_audit_events", "cairn-pae-", run, __doc__))
