"""Classification throughput: ``python -m bench.audit_corpus [--seconds N] [--match-ratio R]``.

Synthetic EventBridge events shaped like real CloudTrail (management events, sign-ins, Health), a given
share of which trigger a detection. Reports events per CPU-second on one core.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

from chalicelib.audit.context import AuditContext
from chalicelib.audit.models import Record, iter_records
from chalicelib.audit.pipeline import classify, default_classifier

_ACCOUNT = "111122223333"


def _record(source: str, name: str, identity: dict[str, Any], n: int, **extra: Any) -> dict[str, Any]:
    record = {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": "2024-05-01T10:15:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": f"198.51.100.{n % 250}",
        "userAgent": "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.79 exe/x86_64.amzn.2023 prompt/off command/x",
        "requestParameters": None,
        "responseElements": None,
        "requestID": f"00000000-0000-4000-8000-{n:012d}",
        "eventID": f"10000000-0000-4000-8000-{n:012d}",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": _ACCOUNT,
    }
    record.update(extra)
    return record


def _role(name: str, n: int) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE:{name}-{n % 7}",
        "arn": f"arn:aws:sts::{_ACCOUNT}:assumed-role/{name}/session-{n % 7}",
        "accountId": _ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{_ACCOUNT}:role/{name}",
                                             "accountId": _ACCOUNT, "userName": name}},
    }


# Each event's document differs (its bucket), so the bench pays the policy parsing every time: no cache hit.
_WIDE_POLICY = ('{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["iam:PassRole",'
                '"lambda:CreateFunction"],"Resource":"*"}},{{"Effect":"Allow","Action":"s3:Get*",'
                '"Resource":"arn:aws:s3:::data-{n}/*"}}]}}')


def _matching(n: int) -> dict[str, Any]:
    kind = n % 9
    if kind == 6:
        return _record("iam.amazonaws.com", "PutRolePolicy", _role("Admin", n), n,
                       requestParameters={"roleName": f"app-{n % 11}", "policyName": "p",
                                          "policyDocument": _WIDE_POLICY.format(n=n)})
    if kind == 7:
        return _record("sts.amazonaws.com", "GetSessionToken",
                       {"type": "IAMUser", "arn": f"arn:aws:iam::{_ACCOUNT}:user/ci-user-{n % 5}",
                        "accountId": _ACCOUNT, "userName": f"ci-user-{n % 5}"}, n,
                       requestParameters={"durationSeconds": 3600}, readOnly=True)
    if kind == 8:
        return _record("guardduty.amazonaws.com", "DeleteDetector", _role("Admin", n), n,
                       requestParameters={"detectorId": f"d{n % 13:031d}"})
    if kind == 0:
        return _record("iam.amazonaws.com", "CreateAccessKey", _role("Admin", n), n,
                       requestParameters={"userName": f"ci-user-{n % 5}"},
                       responseElements={"accessKey": {"accessKeyId": f"AKIAEXAMPLE{n % 10**9:09d}",
                                                       "status": "Active", "userName": f"ci-user-{n % 5}"}})
    if kind == 1:
        return _record("s3.amazonaws.com", "GetObject", _role("App", n), n, errorCode="AccessDenied",
                       errorMessage="Access Denied")
    if kind == 2:
        return _record("iam.amazonaws.com", "AttachRolePolicy", _role("Admin", n), n,
                       requestParameters={"roleName": "app", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})
    if kind == 3:
        return _record("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", _role("Admin", n), n,
                       requestParameters={"groupId": "sg-1", "ipPermissions": {"items": [
                           {"ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}}]}})
    if kind == 4:
        return _record("signin.amazonaws.com", "ConsoleLogin",
                       {"type": "IAMUser", "arn": f"arn:aws:iam::{_ACCOUNT}:user/u{n % 9}", "accountId": _ACCOUNT,
                        "userName": f"u{n % 9}"}, n, responseElements={"ConsoleLogin": "Success"},
                       additionalEventData={"MFAUsed": "No", "MobileVersion": "No"}, eventType="AwsConsoleSignIn")
    return _record("cloudtrail.amazonaws.com", "StopLogging", _role("Admin", n), n,
                   requestParameters={"name": "management"})


_BENIGN = [("ec2.amazonaws.com", "RunInstances"), ("s3.amazonaws.com", "PutObject"),
           ("lambda.amazonaws.com", "Invoke"), ("dynamodb.amazonaws.com", "PutItem"),
           ("sts.amazonaws.com", "AssumeRole"), ("kms.amazonaws.com", "Decrypt"), ("iam.amazonaws.com", "TagRole")]


def _benign(n: int) -> dict[str, Any]:
    source, name = _BENIGN[n % len(_BENIGN)]
    return _record(source, name, _role("Worker", n), n, requestParameters={"key": f"k{n}"})


def sample_events(count: int, match_ratio: float = 0.3) -> list[dict[str, Any]]:
    """EventBridge events; ``match_ratio`` of them trigger a detection."""
    events = []
    every = max(1, round(1 / match_ratio)) if match_ratio > 0 else 0
    for n in range(count):
        detail = _matching(n) if every and n % every == 0 else _benign(n)
        detail_type = ("AWS Console Sign In via CloudTrail" if detail["eventSource"] == "signin.amazonaws.com"
                       else "AWS API Call via CloudTrail")
        events.append({"version": "0", "id": f"e-{n}", "detail-type": detail_type, "source": "aws.iam",
                       "account": _ACCOUNT, "time": "2024-05-01T10:15:00Z", "region": "us-east-1", "resources": [],
                       "detail": detail})
    return events


def measure(events: list[dict[str, Any]], ctx: AuditContext, seconds: float = 2.0) -> tuple[float, int]:
    """(events per CPU-second, findings per pass)."""
    findings = sum(len(classify(e, ctx)) for e in events)  # warm the index caches
    done = 0
    start = time.process_time()
    for event in itertools.cycle(events):
        classify(event, ctx)
        done += 1
        if done % 500 == 0 and time.process_time() - start >= seconds:
            break
    return done / (time.process_time() - start), findings


def measure_floor(events: list[dict[str, Any]], seconds: float = 2.0) -> float:
    """Events per CPU-second of the least any classifier must do: parse the record (the same validation
    ``classify`` runs) and look up its (eventSource, eventName), nothing else. ``classify``'s rate over
    this, measured in the same run on the same corpus, is the cost of detecting, free of the machine."""
    index = {(s, n) for d in default_classifier().detections for s, names in d.triggers.items() for n in names or ()}
    hits = 0
    done = 0
    start = time.process_time()
    for event in itertools.cycle(events):
        for item in iter_records(event):
            if isinstance(item, Record):
                hits += (item.source, item.name) in index
        done += 1
        if done % 500 == 0 and time.process_time() - start >= seconds:
            break
    return done / (time.process_time() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_corpus")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--match-ratio", type=float, default=0.3)
    args = parser.parse_args(argv)
    events = sample_events(args.events, args.match_ratio)
    rate, findings = measure(events, AuditContext({f"ci-user-{i}" for i in range(5)}), args.seconds)
    floor = measure_floor(events, args.seconds)
    print(f"classify: {rate:,.0f} events/s per core ({findings / len(events):.2f} findings per event); "
          f"parse + name lookup: {floor:,.0f} events/s; cost ratio {floor / rate:.2f}")


if __name__ == "__main__":
    main()
