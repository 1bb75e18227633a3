#!/usr/bin/env bash
# demo.sh: from a fresh Debian machine to delivered CloudTrail log files.
#
# Installs the dependencies, builds into ./build, starts a two-region local
# cluster, posts a few hundred sample events, waits for the first delivery
# and shows where the files are and one record from them. The cluster keeps
# running afterwards; the last lines say how to stop it.
set -euo pipefail

PROG=$(basename "$0")
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
REGIONS=us-east-1,eu-west-2
INTERVAL=10      # seconds; production default is 300 (5 minutes)
EVENTS=300       # sample events posted, spread over the regions
WAIT_TIMEOUT=40  # seconds to wait for the first delivered file

usage() {
    cat <<EOF
Usage: $PROG [--dir DIR]

Installs the build dependencies (deploy/install-deps.sh), builds cairn into
./build, starts a local cluster (regions ${REGIONS//,/ }) in DIR (default
./demo), posts $EVENTS sample CloudTrail events to its agents, waits for the
first delivered log files and prints where they are and one record.
The cluster keeps running; stop it with: deploy/local-cluster.sh down --dir DIR
EOF
}

dir=$REPO_DIR/demo
while (($# > 0)); do
    case $1 in
    --dir)
        (($# >= 2)) || {
            echo "$PROG: --dir needs a value" >&2
            exit 2
        }
        mkdir -p "$2"
        dir=$(cd "$2" && pwd)
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "$PROG: unknown option '$1'" >&2
        usage >&2
        exit 2
        ;;
    esac
done
cd "$REPO_DIR"

step() { printf '\n==> %s\n' "$*"; }

step "Installing dependencies (only what is missing)"
deploy/install-deps.sh

step "Building into ./build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"

step "Starting a local cluster in $dir"
deploy/local-cluster.sh down --dir "$dir"
# Start from empty data so the files shown are this run's. Only what
# local-cluster.sh creates is removed, and only in a directory it made.
if [[ -f $dir/aggregator.conf || -f $dir/cluster.env ]]; then
    rm -rf -- "$dir/aggregator" "$dir"/agent-* "$dir/bucket" "$dir/keys" "$dir"/*.log \
        "$dir/aggregator.conf" "$dir/cluster.env" "$dir/regions"
fi
echo "Delivery interval ${INTERVAL} s for the demo; the production default is 5 minutes (300 s)."
CAIRN_BIN_DIR=$REPO_DIR/build deploy/local-cluster.sh up --dir "$dir" --regions "$REGIONS" \
    --interval "$INTERVAL"
# shellcheck source=/dev/null
source "$dir/cluster.env"

step "Posting $EVENTS sample events to the agents (POST /v1/events)"
python3 - "$EVENTS" "$CAIRN_ACCOUNT" "$CAIRN_AGENT_URLS" "$CAIRN_REGIONS" <<'PYEOF'
"""Generates realistic CloudTrail records and posts them to the agents."""
import datetime
import http.client
import json
import random
import sys
import urllib.parse
import uuid

total, account = int(sys.argv[1]), sys.argv[2]
urls, regions = sys.argv[3].split(), sys.argv[4].split()
rng = random.Random(2024)
ACCOUNTS = [account, "444455556666"]

# (eventSource, eventName, readOnly, requestParameters builder)
CALLS = [
    ("ec2.amazonaws.com", "DescribeInstances", True, lambda: {"instancesSet": {}, "filterSet": {}}),
    ("ec2.amazonaws.com", "RunInstances", False,
     lambda: {"instanceType": rng.choice(["t3.micro", "m6i.large", "c7g.xlarge"]),
              "minCount": 1, "maxCount": 1}),
    ("ec2.amazonaws.com", "StopInstances", False,
     lambda: {"instancesSet": {"items": [{"instanceId": "i-%017x" % rng.getrandbits(68)}]}}),
    ("s3.amazonaws.com", "CreateBucket", False,
     lambda: {"bucketName": "data-%06d" % rng.randrange(10**6), "Host": "s3.amazonaws.com"}),
    ("s3.amazonaws.com", "GetBucketAcl", True,
     lambda: {"bucketName": "logs-%04d" % rng.randrange(10**4), "acl": ""}),
    ("iam.amazonaws.com", "CreateUser", False, lambda: {"userName": "dev-%d" % rng.randrange(1000)}),
    ("iam.amazonaws.com", "ListRoles", True, lambda: None),
    ("sts.amazonaws.com", "AssumeRole", False,
     lambda: {"roleArn": "arn:aws:iam::%s:role/deploy" % rng.choice(ACCOUNTS),
              "roleSessionName": "ci-%d" % rng.randrange(10**5)}),
    ("sts.amazonaws.com", "GetCallerIdentity", True, lambda: None),
    ("kms.amazonaws.com", "Decrypt", True,
     lambda: {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", False,
     lambda: {"functionName": "handler-%d" % rng.randrange(50), "publish": True}),
    ("dynamodb.amazonaws.com", "DescribeTable", True,
     lambda: {"tableName": rng.choice(["orders", "users", "sessions"])}),
]
AGENTS = ["aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.debian.12",
          "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux lang#python#3.11.2",
          "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.1 api/ec2#1.152.0",
          "console.amazonaws.com"]


def identity(acct):
    kind = rng.choice(["IAMUser", "AssumedRole", "AssumedRole", "Root"])
    key = "AKIA" if kind == "IAMUser" else "ASIA"
    key += "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    principal = "AIDA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(17))
    if kind == "IAMUser":
        name = rng.choice(["alice", "bob", "carol"])
        return {"type": kind, "principalId": principal, "accountId": acct,
                "arn": f"arn:aws:iam::{acct}:user/{name}", "accessKeyId": key, "userName": name}
    if kind == "Root":
        return {"type": kind, "principalId": acct, "accountId": acct,
                "arn": f"arn:aws:iam::{acct}:root", "accessKeyId": key}
    role = rng.choice(["deploy", "ReadOnly", "Admin"])
    session = "session-%d" % rng.randrange(10**4)
    return {"type": kind, "principalId": f"AROA{principal[4:]}:{session}", "accountId": acct,
            "arn": f"arn:aws:sts::{acct}:assumed-role/{role}/{session}", "accessKeyId": key,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROA" + principal[4:],
                                  "arn": f"arn:aws:iam::{acct}:role/{role}",
                                  "accountId": acct, "userName": role},
                "attributes": {"creationDate": now(-3600), "mfaAuthenticated": "false"}}}


def now(offset=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def record(region):
    source, name, read_only, params = rng.choice(CALLS)
    acct = rng.choice(ACCOUNTS)
    # Global services (IAM, STS' global endpoint) log in us-east-1.
    event_region = "us-east-1" if source == "iam.amazonaws.com" else region
    rec = {
        "eventVersion": "1.09",
        "userIdentity": identity(acct),
        "eventTime": now(-rng.randrange(600)),
        "eventSource": source,
        "eventName": name,
        "awsRegion": event_region,
        "sourceIPAddress": "203.0.113.%d" % rng.randrange(1, 255),
        "userAgent": rng.choice(AGENTS),
        "requestParameters": params(),
        "responseElements": None,
        "requestID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "eventID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": acct,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                       "clientProvidedHostHeader": source.replace("amazonaws.com",
                                                                  f"{event_region}.amazonaws.com")},
    }
    if rng.random() < 0.1:
        rec["errorCode"] = "AccessDenied"
        rec["errorMessage"] = f"User is not authorized to perform: {source.split('.')[0]}:{name}"
    return rec


per_agent = total // len(urls)
for url, region in zip(urls, regions):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    accepted = 0
    for start in range(0, per_agent, 50):
        body = json.dumps([record(region) for _ in range(min(50, per_agent - start))])
        conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read().decode(errors="replace")
        if resp.status != 200:
            sys.exit(f"POST {url}/v1/events answered {resp.status}: {answer}")
        accepted += json.loads(answer)["accepted"]
    conn.close()
    print(f"  {region}: {accepted} events accepted by {url}")
PYEOF

step "Waiting (up to ${WAIT_TIMEOUT} s) for the first delivery into $CAIRN_BUCKET_DIR"
deadline=$((SECONDS + WAIT_TIMEOUT))
first=""
while ((SECONDS < deadline)); do
    first=$(find "$CAIRN_BUCKET_DIR" -name '*.json.gz' -type f -print -quit 2>/dev/null || true)
    [[ -n $first ]] && break
    sleep 1
done
if [[ -z $first ]]; then
    echo "$PROG: no log file was delivered within ${WAIT_TIMEOUT} s; see the logs:" >&2
    tail -n 20 "$dir"/*.log >&2 || true
    exit 1
fi
sleep 2 # let the other files of the same window land
echo "Delivered log files (CloudTrail's key layout, one file per account, region and window):"
(cd "$CAIRN_BUCKET_DIR" && find . -name '*.json.gz' -type f | sort | sed 's|^\./|  |')

step "One record from $(basename "$first")"
zcat "$first" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["Records"][0]))' |
    python3 -m json.tool

step "Asking the store: the five newest events in us-east-1"
"$REPO_DIR/build/cli/cairn" query --store "$CAIRN_STORE_DIR" --region us-east-1 --limit 5

cat <<EOF

The cluster is still running (logs: $dir/*.log, settings: $dir/cluster.env).
Post more events:  curl -s -H 'Content-Type: application/json' -d '{"eventSource":"ec2.amazonaws.com","eventName":"DescribeRegions"}' ${CAIRN_AGENT_URLS%% *}/v1/events
Query the store:   build/cli/cairn query --store $CAIRN_STORE_DIR --username alice --output json
Ask like AWS:      AWS_ACCESS_KEY_ID=$CAIRN_QUERY_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$CAIRN_QUERY_SECRET_ACCESS_KEY \\
                     aws cloudtrail lookup-events --region us-east-1 --endpoint-url $CAIRN_QUERY_URL \\
                     --lookup-attributes AttributeKey=EventName,AttributeValue=CreateUser
Cluster status:    build/cli/cairn status --url $CAIRN_AGGREGATOR_URL
Stop it:           deploy/local-cluster.sh down --dir $dir
EOF
