"""A benign corpus: the routine, CIS-monitored changes a deploy pipeline makes (``terraform apply`` run by
CI through an assumed role), 1,000 events by default. Every event is one a detection looks at (issue 14:
"1,000 routine CIS-monitored changes ... gave 939 MEDIUM findings"), none grants anything remarkable.
"""

from __future__ import annotations

import json
from typing import Any

from .conftest import ACCOUNT, assumed_role, ct, eventbridge

PIPELINE_ROLE = "terraform-deploy"
PIPELINE_ARN_GLOB = "arn:aws:iam::*:role/terraform-deploy"
PIPELINE = assumed_role(PIPELINE_ROLE, "gha-run-8842", path="/")
RUNNER_IP = "192.0.2.44"

_SCOPED = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::orders-data/*"}]})
_LAMBDA_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
_BUCKET_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Sid": "DenyInsecure", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
    "Resource": ["arn:aws:s3:::orders-data", "arn:aws:s3:::orders-data/*"],
    "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
_KEY_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"}]})


def _change(n: int) -> dict[str, Any]:
    kind = n % 12
    role = f"app-{n % 9}"
    if kind == 0:
        return ct("PutRolePolicy", params={"roleName": role, "policyName": "data", "policyDocument": _SCOPED})
    if kind == 1:
        return ct("AttachRolePolicy", params={
            "roleName": role, "policyArn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"})
    if kind == 2:
        return ct("CreatePolicy", params={"policyName": f"data-{n}", "policyDocument": _SCOPED})
    if kind == 3:
        return ct("DetachRolePolicy", params={"roleName": role, "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/old"})
    if kind == 4:
        return ct("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", params={
            "groupId": f"sg-0{n % 7}", "ipPermissions": {"items": [{
                "ipProtocol": "tcp", "fromPort": 443, "toPort": 443,
                "ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}}]}})
    if kind == 5:
        return ct("RevokeSecurityGroupIngress", "ec2.amazonaws.com", params={"groupId": f"sg-0{n % 7}"})
    if kind == 6:
        return ct("PutBucketPolicy", "s3.amazonaws.com", params={
            "bucketName": "orders-data", "Host": "orders-data.s3.amazonaws.com", "policy": "",
            "bucketPolicy": _BUCKET_POLICY})
    if kind == 7:
        return ct("PutBucketLifecycle", "s3.amazonaws.com", params={"bucketName": "orders-data", "lifecycle": ""})
    if kind == 8:
        return ct("UpdateAssumeRolePolicy", params={"roleName": role, "policyDocument": _LAMBDA_TRUST})
    if kind == 9:
        return ct("PutKeyPolicy", "kms.amazonaws.com", params={"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
                                                               "policyName": "default", "policy": _KEY_POLICY})
    if kind == 10:
        return ct("CreateRouteTable", "ec2.amazonaws.com", params={"vpcId": "vpc-0a1b2c3d"})
    return ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com", params={"functionName": f"orders-{n % 5}"})


def routine_events(count: int = 1000) -> list[dict[str, Any]]:
    events = []
    for n in range(count):
        record = _change(n)
        record["userIdentity"] = PIPELINE
        record["sourceIPAddress"] = RUNNER_IP
        record["userAgent"] = "APN/1.0 HashiCorp/1.0 Terraform/1.8.5 (+https://www.terraform.io)"
        events.append(eventbridge(record))
    return events
