#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (run from tests/fuzz/).

The AgentMessage seeds are protobuf written by hand (field tags and varints),
so this needs nothing beyond Python's standard library."""
import json
import os


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


RECORD = {"eventVersion": "1.11", "eventTime": "2025-03-04T10:02:37Z",
          "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
          "awsRegion": "eu-west-1", "eventID": "c0d4e2b8-1a3f-4b6c-8d9e-2f7a5b3c1e04",
          "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/R/s",
                           "accessKeyId": "ASIAEXAMPLEKEY000001"},
          "readOnly": False, "resources": [{"ARN": "arn:aws:ec2:eu-west-1:111122223333:instance/i-1",
                                             "type": "AWS::EC2::Instance", "accountId": "111122223333"}],
          "recipientAccountId": "111122223333"}


def event(i):
    r = dict(RECORD, eventID="00000000-0000-4000-8000-%012d" % i)
    return (field(1, r["eventID"]) + field(2, 1741082557000) + field(3, r["eventName"]) +
            field(4, r["eventSource"]) + field(5, r["awsRegion"]) + field(6, "111122223333") +
            field(7, "AssumedRole") + field(11, 2) + field(13, json.dumps(r, separators=(",", ":"))))


def batch(n, first_seq=1, version=1):
    body = field(1, version) + field(2, "us-east-1") + field(3, "us-east-1") + field(4, first_seq)
    for i in range(n):
        body += field(5, event(first_seq + i))
    return body + field(6, "5b0c9a4e-6a43-4d0e-9d0e-0d6f3f4c9a11")


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


write("corpus_agent_message", "batch1", field(2, batch(1)))
write("corpus_agent_message", "batch3", field(2, batch(3, 100)))
write("corpus_agent_message", "batch_v2", field(2, batch(1, 7, 2)))
write("corpus_agent_message", "hello", field(1, field(1, 1) + field(2, "us-east-1") + field(3, "us-east-1") +
                                                field(4, "spool") + field(5, "cairn-agent 0.1.0")))
write("corpus_agent_message", "heartbeat", field(3, field(1, 1741082557000)))
write("corpus_record", "one", json.dumps(RECORD).encode())
write("corpus_record", "array", json.dumps([RECORD, {"eventName": "GetObject", "eventSource": "s3.amazonaws.com"}]).encode())
write("corpus_record", "records", json.dumps({"Records": [RECORD]}).encode())
write("corpus_record", "bad", b'[{"eventName":5}]')
audit = {"auditEvents": [
    {"id": "1", "eventData": json.dumps({"version": "1.0", "eventName": "Login",
                                         "eventSource": "app.example.com",
                                         "eventTime": "2025-03-04T10:02:37Z",
                                         "userIdentity": {"type": "IAMUser"}})},
    {"id": "two", "eventData": "{\"eventName\":\"X\",\"eventSource\":\"y\"}",
     "eventDataChecksum": "AAAA"}]}
write("corpus_put_audit_events", "two", json.dumps(audit).encode())
write("corpus_put_audit_events", "empty", b'{"auditEvents":[]}')
