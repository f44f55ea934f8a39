"""Issue 15's audit on the embedded AWS: IAM calls → CloudTrail → the real EventBridge pattern → the audit
Lambda (with its own least-privilege identity, which asks IAM for a role's path) → SNS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.federation import GRADUATED_ROLE_PATH
from local.runtime import LocalRuntime
from local.world import World

GH = "token.actions.githubusercontent.com"


@pytest.fixture
def audited(clean_world: World, runtime: LocalRuntime, user: str) -> Iterator[LocalRuntime]:
    """`user`: the world writes the rotation config (which the audit Lambda loads) with its first user."""
    runtime.enable_audit()
    runtime.bus.drain()
    yield runtime
    runtime.bus.drain()
    runtime.disable_audit()


def github_trust(account: str, sub: str, operator: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": f"arn:aws:iam::{account}:oidc-provider/{GH}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{GH}:aud": "sts.amazonaws.com"}, operator: {f"{GH}:sub": sub}},
    }]}, indent=2)


def findings_for(runtime: LocalRuntime, role: str, since: int) -> list[dict[str, Any]]:
    runtime.bus.drain()
    return [a for a in runtime.alerts()[since:] if role in a["message"].get("summary", "")]


def account_of(runtime: LocalRuntime) -> str:
    return str(runtime.client("sts").get_caller_identity()["Account"])


def test_a_role_trusting_every_repository_of_an_org_is_critical(audited: LocalRuntime) -> None:
    runtime, role = audited, f"deploy-{uuid.uuid4().hex[:8]}"
    since = len(runtime.alerts())
    iam = runtime.client("iam")
    account = account_of(runtime)
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=github_trust(account, "repo:acme/*", "StringLike"))

    (alert,) = findings_for(runtime, role, since)
    assert alert["severity"] == "CRITICAL"
    assert alert["message"]["detection"] == "persistence.oidc-trust-open"
    assert "'repo:acme/*'" in alert["message"]["summary"]

    iam.update_assume_role_policy(
        RoleName=role, PolicyDocument=github_trust(account, "repo:acme/web-app:ref:refs/heads/main", "StringEquals"))
    assert [a for a in findings_for(runtime, role, since)
            if a["message"]["detection"] == "persistence.oidc-trust-open"] == [alert], "a pinned trust is quiet"


def test_a_graduated_role_changed_by_hand_is_high(audited: LocalRuntime) -> None:
    """UpdateAssumeRolePolicy names only the role: the audit Lambda asks IAM (GetRole) for its path."""
    runtime, role = audited, f"grad-{uuid.uuid4().hex[:8]}"
    iam = runtime.client("iam")
    account = account_of(runtime)
    pinned = github_trust(account, "repo:acme/web-app:ref:refs/heads/main", "StringEquals")
    since = len(runtime.alerts())
    iam.create_role(RoleName=role, Path=GRADUATED_ROLE_PATH, AssumeRolePolicyDocument=pinned)
    created = findings_for(runtime, role, since)
    assert [(a["severity"], a["message"]["detection"]) for a in created] == [
        ("HIGH", "self-protection.graduated-role-changed")]

    since = len(runtime.alerts())
    iam.update_assume_role_policy(
        RoleName=role, PolicyDocument=github_trust(account, "repo:acme/web-app:ref:refs/heads/dev", "StringEquals"))
    (changed,) = findings_for(runtime, role, since)
    assert changed["severity"] == "HIGH" and changed["message"]["detection"] == "self-protection.graduated-role-changed"
    assert f"{GRADUATED_ROLE_PATH}{role}" in changed["message"]["summary"]

    plain = f"plain-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=plain, AssumeRolePolicyDocument=pinned)
    since = len(runtime.alerts())
    iam.update_assume_role_policy(RoleName=plain, PolicyDocument=pinned)
    assert all(a["message"]["detection"] != "self-protection.graduated-role-changed"
               for a in findings_for(runtime, plain, since)), "a role outside the graduated path is not graduated"
