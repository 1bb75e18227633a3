#!/usr/bin/env python3
"""S3 delivery end to end, against real S3 servers (no mocks).

Three cases, each with its own local cluster (deploy/local-cluster.sh up
--bucket s3://..., one agent, 2-second delivery interval):

  1. moto_server with signature checks on (INITIAL_NO_AUTH_ACTION_COUNT=3:
     the IAM user and access key are made with the first three calls, every
     later request is verified). The AWS CLI creates the bucket; 3,000 events
     are posted to the agent; the test waits until they are all delivered,
     lists (aws s3 ls --recursive) and downloads (aws s3 cp --recursive) the
     objects with the real AWS CLI and checks every key (prefix/AWSLogs/
     <12 digits>/CloudTrail/... .json.gz), every file ({"Records":[...]}
     gzip'd, one account and region) and every record: each eventID exactly
     once and unchanged. Content-Type and Content-Encoding are checked with
     s3api head-object.
  2. moto again, aggregator started with a wrong secret: delivery fails with
     a clear logged error (403 SignatureDoesNotMatch, logged once), nothing
     is delivered and the cursor does not move (windows_delivered stays 0);
     then the aggregator is restarted with the right key written into its
     config (s3_access_key_id / s3_secret_access_key, which beat the wrong
     AWS_* variables): everything is delivered, exactly once.
  3. s3rver (npm; installed into the build tree when missing) on a
     persistent directory: stopped for two delivery intervals while events
     keep flowing, then started again on the same port: every event exactly
     once, objects from before the outage still there, every window
     delivered (the windows that closed during the outage too).

Every process the test starts (servers, clusters) is stopped by PID in
finally blocks; every wait is bounded; loopback only. Exit 0 on success.
Needs: moto_server and aws (the machine image ships both), node/npm.
"""

import collections
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # nothing written into the source tree
from cairn_harness import (Agent, Process, TestRun, argument_parser, aws_env,  # noqa: E402
                           cluster_env, free_port, log, parse_args, read_trail_file, run, wait_port)
from test_spine import Generator  # noqa: E402  (same folder)

INTERVAL = 2
BATCH = 100
REGION = "us-east-1"
DELIVERY_TIMEOUT = 60
S3RVER_VERSION = "3"


def run_cmd(args, env, timeout=120, check=True):
    proc = run(args, env, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}")
    return proc


def aws(endpoint, env, *args, check=True, timeout=120):
    return run_cmd(["aws", "--endpoint-url", endpoint, *args], env, timeout=timeout, check=check)


def health(cl):
    """The aggregator's /health document; 503 (delivery stuck) has one too."""
    try:
        with urllib.request.urlopen(cl.health_url, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise
        return json.loads(e.read())


def post_events(failures, agent, gen, count, sent):
    """Posts count fresh records in batches of BATCH; records what was accepted."""
    for start in range(0, count, BATCH):
        recs = [gen.record(REGION) for _ in range(min(BATCH, count - start))]
        status, answer = agent.post(json.dumps(recs))
        if failures.check(status == 200 and isinstance(answer, dict) and answer.get("accepted") == len(recs),
                          "a valid request was not accepted", f"{status} {str(answer)[:300]}"):
            for r in recs:
                sent[r["eventID"]] = r


def key_re(prefix):
    return re.compile(
        "^" + re.escape(prefix) + r"/AWSLogs/(\d{12})/CloudTrail/([a-z0-9-]+)/(\d{4})/(\d\d)/(\d\d)/"
        r"\1_CloudTrail_\2_\3\4\5T\d{4}Z_[0-9A-Za-z]{16}\.json\.gz$")


class S3Bucket:
    """Lists and downloads a prefix of a bucket with the real AWS CLI.

    Lists the whole bucket and keeps the prefix's keys: moto 5.2.1 answers
    SignatureDoesNotMatch to the AWS CLI's own ListObjectsV2 when it has a
    prefix with '/' (seen here: aws s3 ls s3://bucket/org/cairn/)."""

    def __init__(self, endpoint, env, bucket, prefix, workdir):
        self.endpoint, self.env, self.bucket, self.prefix = endpoint, env, bucket, prefix
        self.workdir = workdir

    def list_keys(self):
        proc = aws(self.endpoint, self.env, "s3", "ls", "--recursive", f"s3://{self.bucket}/", check=False)
        if proc.returncode not in (0, 1):  # 1: an empty bucket
            raise RuntimeError(f"aws s3 ls exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        keys = []
        for line in proc.stdout.splitlines():
            parts = line.split(None, 3)  # date time size key
            if len(parts) == 4 and parts[3].startswith(self.prefix + "/"):
                keys.append(parts[3])
        return keys

    def download(self):
        """Returns {key: (records or None, error or None)} for every object
        under the prefix, each fetched with aws s3 cp."""
        dest = os.path.join(self.workdir, "download")
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        keys = self.list_keys()
        if keys:
            aws(self.endpoint, self.env, "s3", "cp", "--recursive", "--only-show-errors",
                f"s3://{self.bucket}/", dest + "/")
        out = {}
        for key in keys:
            records, _, err = read_trail_file(os.path.join(dest, key))
            out[key] = (records, err)
        return out


def wait_delivered(bucket, sent, timeout):
    """Downloads until every sent eventID is there (bounded). Returns the last download."""
    deadline = time.monotonic() + timeout
    while True:
        objects = bucket.download()
        seen = {r.get("eventID") for recs, _ in objects.values() for r in recs or [] if isinstance(r, dict)}
        missing = len(set(sent) - seen)
        if missing == 0 or time.monotonic() > deadline:
            return objects, missing
        time.sleep(1)


def check_objects(failures, case, objects, sent, prefix):
    """Every key in the layout, every file well-formed, every event once and unchanged."""
    regex = key_re(prefix)
    counts = collections.Counter()
    for key, (records, err) in sorted(objects.items()):
        m = regex.match(key)
        if not failures.check(m, f"{case}: key outside CloudTrail's layout under the prefix", key):
            continue
        if not failures.check(err is None, f"{case}: object is not gzip'd {{\"Records\":[...]}}", f"{key}: {err}"):
            continue
        failures.check(records, f"{case}: object holds no records", key)
        for r in records:
            eid = r.get("eventID") if isinstance(r, dict) else None
            counts[eid] += 1
            if eid not in sent:
                failures.add(f"{case}: object holds an event never sent", f"{key}: {eid}")
                continue
            failures.check(r.get("recipientAccountId") == m.group(1) and r.get("awsRegion") == m.group(2),
                           f"{case}: record in another account's or region's object", f"{key}: {eid}")
            changed = [k for k in sent[eid] if r.get(k, KeyError) != sent[eid][k]]
            failures.check(not changed, f"{case}: delivered record differs from the one sent",
                           f"{eid}: {changed[:5]}")
    dups = {e: c for e, c in counts.items() if c > 1}
    failures.check(not dups, f"{case}: an event appears more than once", f"{len(dups)}, e.g. {list(dups.items())[:3]}")
    missing = [e for e in sent if counts[e] == 0]
    failures.check(not missing, f"{case}: a sent event is missing", f"{len(missing)}, e.g. {missing[:3]}")
    log(f"{case}: {len(objects)} objects, {sum(counts.values())} records, {len(counts)} distinct eventIDs "
        f"(sent {len(sent)})")


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def check_logs(failures, case, cl, secrets):
    """No secret in any log. (Sanitizer reports: TestRun checks every cluster's logs.)"""
    for name in cl.logs():
        text = read_log(cl.path(name))
        for secret in secrets:
            failures.check(secret not in text, f"{case}: a secret appears in a log", name)


# --- the cases ------------------------------------------------------------------

class Context:
    def __init__(self, t):
        self.t, self.args, self.tmp, self.failures = t, t.args, t.tmp, t.failures
        self.gen = Generator(20261127)

    def up(self, name, bucket_url, aws_environment):
        """A cluster of one agent delivering to bucket_url, run with
        aws_environment (and the programs given on the command line)."""
        cl = self.t.cluster(name, cluster_env(self.args, aws_environment))
        cl.up("--regions", REGION, "--interval", str(INTERVAL), "--bucket", bucket_url)
        self.failures.check(cl.cenv.get("CAIRN_BUCKET_URL") == bucket_url, "cluster.env lacks CAIRN_BUCKET_URL",
                            str(cl.cenv.get("CAIRN_BUCKET_URL")))
        return cl, Agent(cl.agent_urls[0], REGION)


def start_moto(ctx):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    moto_bin = shutil.which("moto_server")
    if not moto_bin:
        raise RuntimeError("moto_server is not installed (the machine image ships it with pip's moto)")
    server = Process("moto_server", [moto_bin, "-H", "127.0.0.1", "-p", str(port)], env,
                     os.path.join(ctx.tmp, "moto.log"))
    server.start()
    ctx.t.on_stop("moto_server", server.stop)
    wait_port(port, server.proc, 30, "moto_server")
    return f"http://127.0.0.1:{port}"


def make_moto_user(endpoint):
    """The three unauthenticated calls: user, policy, access key."""
    boot = aws_env("bootstrap", "bootstrap")
    aws(endpoint, boot, "iam", "create-user", "--user-name", "cairn")
    aws(endpoint, boot, "iam", "put-user-policy", "--user-name", "cairn", "--policy-name", "all",
        "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = json.loads(aws(endpoint, boot, "iam", "create-access-key", "--user-name", "cairn").stdout)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def case_moto(ctx, endpoint, key_id, secret):
    f = ctx.failures
    env = aws_env(key_id, secret)
    bucket_name, prefix = "cairn-trail", "org/cairn"
    aws(endpoint, env, "s3", "mb", f"s3://{bucket_name}")
    # The server really checks signatures: the same call with a wrong secret fails.
    bad = aws(endpoint, aws_env(key_id, secret[:-4] + "AAAA"), "s3", "ls", f"s3://{bucket_name}", check=False)
    f.check(bad.returncode != 0 and "SignatureDoesNotMatch" in bad.stderr,
            "moto accepted a wrong signature (is INITIAL_NO_AUTH_ACTION_COUNT honoured?)", bad.stderr[-300:])

    agg_env = dict(env, AWS_ENDPOINT_URL_S3=endpoint)
    cl, agent = ctx.up("moto", f"s3://{bucket_name}/{prefix}", agg_env)
    sent = {}
    post_events(f, agent, ctx.gen, ctx.args.events, sent)
    log(f"moto: posted {len(sent)} events; waiting for them in s3://{bucket_name}/{prefix}/")
    bucket = S3Bucket(endpoint, env, bucket_name, prefix, os.path.join(ctx.tmp, "moto-dl"))
    objects, missing = wait_delivered(bucket, sent, DELIVERY_TIMEOUT)
    f.check(missing == 0, f"moto: events missing after {DELIVERY_TIMEOUT} s", f"{missing} of {len(sent)}")
    time.sleep(2 * INTERVAL + 1)  # late duplicates would show now
    objects = bucket.download()
    check_objects(f, "moto", objects, sent, prefix)
    if objects:
        head = json.loads(aws(endpoint, env, "s3api", "head-object", "--bucket", bucket_name,
                              "--key", sorted(objects)[0]).stdout)
        f.check(head.get("ContentType") == "application/json" and head.get("ContentEncoding") == "gzip",
                "moto: object lacks Content-Type application/json or Content-Encoding gzip", str(head))
    h = health(cl)
    f.check(h.get("put_errors") == 0, "moto: puts failed on a healthy server", str(h))
    agg_log = cl.log_text("aggregator")
    f.check(f"bucket: s3://{bucket_name}/{prefix} (region {REGION}, endpoint {endpoint}, path style, "
            f"access key {key_id[:4]}..." in agg_log, "moto: the aggregator does not log its bucket",
            "no 'bucket: s3://...' line")
    cl.ctl("down")
    check_logs(f, "moto", cl, [secret])


def case_wrong_secret(ctx, endpoint, key_id, secret):
    f = ctx.failures
    env = aws_env(key_id, secret)
    bucket_name, prefix = "cairn-trail", "wrong-secret"
    wrong = secret[:-6] + "WRONG0"
    agg_env = dict(aws_env(key_id, wrong), AWS_ENDPOINT_URL_S3=endpoint)
    cl, agent = ctx.up("wrong-secret", f"s3://{bucket_name}/{prefix}", agg_env)
    agg_log_path = cl.path("aggregator.log")
    sent = {}
    post_events(f, agent, ctx.gen, 1000, sent)
    deadline = time.monotonic() + 30
    while "SignatureDoesNotMatch" not in read_log(agg_log_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3 * INTERVAL)  # several retries
    text = read_log(agg_log_path)
    failure_lines = [l for l in text.splitlines() if "SignatureDoesNotMatch" in l]
    f.check(len(failure_lines) == 1, "wrong secret: the S3 error is not logged exactly once",
            f"{len(failure_lines)} lines")
    f.check(any(re.search(r"warning: delivery: window .*: cannot put an object: "
                          rf"s3://{bucket_name}/{prefix}/AWSLogs/\S+: 403 SignatureDoesNotMatch: \S", l)
                for l in failure_lines),
            "wrong secret: the logged error does not say bucket, key, 403 and S3's code and message",
            failure_lines[0][:300] if failure_lines else "no line")
    h = health(cl)
    f.check(h.get("windows_delivered") == 0 and h.get("objects_put") == 0 and h.get("put_errors", 0) >= 2,
            "wrong secret: delivery did not fail and retry with the cursor held", str(h))
    bucket = S3Bucket(endpoint, env, bucket_name, prefix, os.path.join(ctx.tmp, "wrong-dl"))
    f.check(bucket.list_keys() == [], "wrong secret: objects were delivered with a wrong secret")

    # Fix the key in the config (it beats the wrong AWS_* variables) and restart.
    cl.ctl("stop-aggregator")
    cl.insert_conf_lines("aggregator", "delivery", [f's3_access_key_id = "{key_id}"',
                                                    f's3_secret_access_key = "{secret}"'])
    cl.ctl("start-aggregator")
    post_events(f, agent, ctx.gen, 300, sent)
    objects, missing = wait_delivered(bucket, sent, DELIVERY_TIMEOUT)
    f.check(missing == 0, f"wrong secret: events missing {DELIVERY_TIMEOUT} s after the fix",
            f"{missing} of {len(sent)}")
    time.sleep(2 * INTERVAL + 1)
    check_objects(f, "wrong secret, then fixed", bucket.download(), sent, prefix)
    f.check("credentials from the configuration" in read_log(agg_log_path),
            "wrong secret: the restarted aggregator does not use the configured key")
    cl.ctl("down")
    check_logs(f, "wrong secret", cl, [secret, wrong])


def s3rver_bin(ctx):
    """node_modules/.bin/s3rver under the work dir, installed with npm when missing."""
    prefix = os.path.join(ctx.args.work_dir, "node-tools")
    binary = os.path.join(prefix, "node_modules", ".bin", "s3rver")
    if not os.path.exists(binary):
        npm = shutil.which("npm")
        if not npm:
            raise RuntimeError("s3rver is missing and npm is not installed")
        log(f"installing s3rver@{S3RVER_VERSION} into {prefix} (npm)")
        os.makedirs(prefix, exist_ok=True)
        proc = run_cmd([npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--no-save",
                        f"s3rver@{S3RVER_VERSION}"], dict(os.environ), timeout=240)
        for line in proc.stdout.splitlines()[-8:]:
            log(f"  npm: {line}")
    return binary


def case_outage(ctx):
    f = ctx.failures
    binary = s3rver_bin(ctx)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    bucket_name, prefix = "cairn-outage", "trail"
    data = os.path.join(ctx.tmp, "s3rver-data")
    os.makedirs(data)
    server = Process("s3rver", [binary, "-d", data, "-a", "127.0.0.1", "-p", str(port), "--silent",
                                "--configure-bucket", bucket_name], dict(os.environ),
                     os.path.join(ctx.tmp, "s3rver.log"))
    env = aws_env("S3RVER", "S3RVER")
    try:
        server.start()
        wait_port(port, server.proc, 30, "s3rver")
        cl, agent = ctx.up("outage", f"s3://{bucket_name}/{prefix}", dict(env, AWS_ENDPOINT_URL_S3=endpoint))
        sent = {}
        t0 = time.monotonic()

        def post_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                post_events(f, agent, ctx.gen, 50, sent)
                time.sleep(0.2)

        post_for(2 * INTERVAL + 1)
        bucket = S3Bucket(endpoint, env, bucket_name, prefix, os.path.join(ctx.tmp, "outage-dl"))
        before = set(bucket.list_keys())
        f.check(before, "outage: nothing delivered before the outage")
        server.stop()
        down_at = time.monotonic()
        log(f"outage: s3rver stopped; {len(sent)} events sent so far, {len(before)} objects before the outage")
        post_for(2 * INTERVAL + 0.5)
        h_down = health(cl)
        server.start()
        wait_port(port, server.proc, 30, "s3rver")
        log(f"outage: s3rver started again after {time.monotonic() - down_at:.1f} s; "
            f"put errors while down: {h_down.get('put_errors')}")
        post_for(INTERVAL + 1)
        post_secs = time.monotonic() - t0
        objects, missing = wait_delivered(bucket, sent, DELIVERY_TIMEOUT)
        f.check(missing == 0, f"outage: events missing {DELIVERY_TIMEOUT} s after the outage",
                f"{missing} of {len(sent)}")
        time.sleep(2 * INTERVAL + 1)
        objects = bucket.download()
        check_objects(f, "outage", objects, sent, prefix)
        f.check(before <= set(objects), "outage: objects from before the outage are gone",
                str(sorted(before - set(objects))[:3]))
        h = health(cl)
        f.check(h_down.get("put_errors", 0) >= 1, "outage: no put failed while s3rver was down", str(h_down))
        # Every window with events is delivered once, each as at most one
        # object per (account, region): 2 accounts x 1-2 regions here.
        windows = h.get("windows_delivered", 0)
        f.check(windows >= int(post_secs / INTERVAL) - 1,
                "outage: fewer windows delivered than the events spanned",
                f"{windows} windows for {post_secs:.1f} s of events")
        f.check(windows <= len(objects) <= 4 * windows,
                "outage: objects per window out of range (a window missing or put twice?)",
                f"{len(objects)} objects for {windows} windows")
        agg_log = cl.log_text("aggregator")
        f.check(re.search(r"delivery: window \S+ delivered after \d+ failed attempts", agg_log),
                "outage: no notice that delivery caught up after failed attempts")
        log(f"outage: {windows} windows delivered, {len(objects)} objects, health {h}")
        cl.ctl("down")
        check_logs(f, "outage", cl, [])
    finally:
        server.stop()


def run_cases(ctx):
    args = ctx.args
    if args.only in (None, "moto", "wrong-secret"):
        endpoint = start_moto(ctx)
        key_id, secret = make_moto_user(endpoint)
        log(f"moto_server at {endpoint} verifies signatures; access key {key_id[:4]}...")
        if args.only in (None, "moto"):
            case_moto(ctx, endpoint, key_id, secret)
        if args.only in (None, "wrong-secret"):
            case_wrong_secret(ctx, endpoint, key_id, secret)
    if args.only in (None, "outage"):
        case_outage(ctx)


def main():
    ap = argument_parser(__doc__)
    ap.add_argument("--work-dir", default=tempfile.gettempdir(),
                    help="where s3rver is installed when missing (node-tools/)")
    ap.add_argument("--events", type=int, default=3000, help="events of the moto case")
    ap.add_argument("--only", choices=["moto", "wrong-secret", "outage"], help="run one case")
    args = parse_args(ap)
    args.work_dir = os.path.abspath(args.work_dir)
    t = TestRun("integration_s3_delivery", args, "cairn-s3-")
    return t.run(run_cases, Context(t))


if __name__ == "__main__":
    sys.exit(main())
