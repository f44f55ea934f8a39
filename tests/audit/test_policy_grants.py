"""Severity from content (issue 14, finding 5): what a policy document grants, parsed with policyuniverse."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.audit.detections.policy_grants import assess, managed_policy, parse_document, principal_grant
from chalicelib.audit.finding import Severity

from .depth_cases import allow, policy, trust

OWN, OTHER = "111122223333", "999988887777"


@pytest.mark.parametrize(("document", "reason"), [
    (policy(allow("*")), "admin-equivalent"),
    (policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}), "admin-equivalent"),
    (policy(allow("s3:*")), "s3:* on every resource"),
    (policy(allow("iam:Attach*", "arn:aws:iam::111122223333:user/*")), "iam:attachuserpolicy"),
    (policy(allow("iam:PassRole"), allow("ec2:RunInstances")), "iam:PassRole with ec2:runinstances"),
    (policy(allow("iam:CreateAccessKey", "arn:aws:iam::111122223333:user/*")), "privilege escalation"),
])
def test_identity_policies_rated_high_by_what_they_grant(document: str, reason: str) -> None:
    grant = assess(document, OWN)
    assert grant.severity is Severity.HIGH and any(reason in r for r in grant.reasons), grant


@pytest.mark.parametrize("document", [
    policy(allow(["s3:GetObject", "s3:PutObject"], "arn:aws:s3:::orders/*")),
    policy(allow("iam:PassRole", "arn:aws:iam::111122223333:role/app")),
    policy({"Effect": "Deny", "Action": "*", "Resource": "*"}),
    policy(allow("cloudwatch:PutMetricData")),
])
def test_scoped_policies_rate_nothing(document: str) -> None:
    assert not assess(document, OWN)


def test_resource_policies_rate_whom_they_grant_not_their_actions() -> None:
    default_key_policy = policy({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OWN}:root"},
                                 "Action": "kms:*", "Resource": "*"})
    assert not assess(default_key_policy, OWN, resource_policy=True)
    assert assess(trust({"AWS": OTHER}), OWN, resource_policy=True).reasons == (f"grants another account ({OTHER})",)
    assert assess(trust("*"), OWN, resource_policy=True).severity is Severity.CRITICAL
    org_only = trust("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}})
    assert not assess(org_only, OWN, resource_policy=True), "a Principal * narrowed to the organization"
    assert not assess(trust({"Service": "lambda.amazonaws.com"}), OWN, resource_policy=True)


@pytest.mark.parametrize("value", [
    json.loads(policy(allow("*"))), policy(allow("*")), quote(policy(allow("*"))),
])
def test_every_shape_cloudtrail_logs_a_policy_in(value: Any) -> None:
    assert parse_document(value) is not None and assess(value, OWN).severity is Severity.HIGH


@pytest.mark.parametrize("value", [None, "", "not json", "[1]", 7, "x" * 200_000,
                                   {"Statement": "nope"}, {"Statement": [{"Effect": "Allow", "Action": 5}]}])
def test_garbage_rates_nothing_and_never_raises(value: Any) -> None:
    assert not assess(value, OWN) and not assess(value, OWN, resource_policy=True)


def test_aws_managed_admin_policies_by_name() -> None:
    assert managed_policy("arn:aws:iam::aws:policy/IAMFullAccess").severity is Severity.HIGH
    assert managed_policy("arn:aws:iam::aws:policy/AdministratorAccess").severity is Severity.HIGH
    assert not managed_policy("arn:aws:iam::aws:policy/ReadOnlyAccess")
    assert not managed_policy(f"arn:aws:iam::{OWN}:policy/AdministratorAccess"), "a customer policy of that name"


def test_single_principals() -> None:
    assert principal_grant("*", OWN, narrowed=False).severity is Severity.HIGH
    assert not principal_grant("*", OWN, narrowed=True)
    assert principal_grant(OTHER, OWN, narrowed=False).severity is Severity.HIGH
    assert not principal_grant(OWN, OWN, narrowed=False)
    assert not principal_grant("s3.amazonaws.com", OWN, narrowed=False)
