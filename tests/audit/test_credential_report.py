"""Daily credential-report audit: parsing, policy checks, bounded polling, and moto's real report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.audit.context import AuditContext
from chalicelib.audit.credential_report import (
    CredentialReportUnavailable,
    KeyPolicy,
    audit_credential_report,
    fetch_credential_report,
    parse_credential_report,
    run_credential_report,
)

NOW = datetime(2024, 6, 1, tzinfo=UTC)
HEADER = (
    "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,"
    "password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,"
    "access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,"
    "access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
    "cert_1_last_rotated,cert_2_active,cert_2_last_rotated"
)


def row(user: str, k1: tuple[str, str, str] = ("false", "N/A", "N/A"), k2: tuple[str, str, str] = ("false", "N/A", "N/A"),
        created: str = "2023-01-01T00:00:00+00:00") -> str:
    arn = "arn:aws:iam::111122223333:root" if user == "<root_account>" else f"arn:aws:iam::111122223333:user/{user}"
    return ",".join([user, arn, created, "false", "N/A", "N/A", "N/A", "false",
                     k1[0], k1[1], k1[2], "us-east-1", "iam", k2[0], k2[1], k2[2], "N/A", "N/A",
                     "false", "N/A", "false", "N/A"])


def days_ago(days: int) -> str:
    return (NOW - timedelta(days=days)).isoformat()


REPORT = "\n".join([
    HEADER,
    row("<root_account>", ("true", days_ago(400), days_ago(3))),
    row("ci-deployer", ("true", days_ago(120), days_ago(1))),  # managed, over age
    row("fresh", ("true", days_ago(10), days_ago(1))),  # compliant
    row("idle", ("true", days_ago(50), "N/A")),  # never used for 50 days
    row("stale", ("true", days_ago(60), days_ago(46))),  # last used 46 days ago
    row("twokeys", ("true", days_ago(5), days_ago(1)), ("true", days_ago(2), days_ago(1))),
    row("inactive", ("false", days_ago(500), "N/A")),  # old but inactive: fine
]) + "\n"


def ctx() -> AuditContext:
    return AuditContext({"ci-deployer"})


def test_parse() -> None:
    rows = parse_credential_report(REPORT)
    assert [r.user for r in rows][:2] == ["<root_account>", "ci-deployer"]
    assert rows[0].is_root and rows[1].account == "111122223333"
    assert rows[1].keys[0].active and rows[1].keys[0].last_rotated == NOW - timedelta(days=120)
    assert rows[3].keys[0].last_used is None


def test_digest_and_root_findings() -> None:
    digest, root = audit_credential_report(parse_credential_report(REPORT), ctx(), now=NOW)
    assert (digest.detection, digest.severity.value, digest.category.value) == (
        "key-lifecycle.credential-report", "HIGH", "key-lifecycle")
    assert digest.resources == ["ci-deployer", "idle", "stale", "twokeys"]
    summary = digest.summary
    assert "ci-deployer (managed): access key 1 is 120 days old (policy 90)" in summary
    assert "idle: access key 1 is active and never used, created 50 days ago" in summary
    assert "stale: access key 1 is active and last used 46 days ago" in summary
    assert "twokeys: two active access keys" in summary
    assert "fresh" not in summary and "inactive" not in summary
    assert (root.detection, root.severity.value) == ("root.access-key-present", "CRITICAL")
    assert digest.console_url and "credential_report" in digest.console_url


def test_unmanaged_only_issues_are_medium_and_rotations_in_flight_are_expected() -> None:
    rows = [r for r in parse_credential_report(REPORT) if r.user in ("twokeys", "fresh")]
    [digest] = audit_credential_report(rows, ctx(), now=NOW)
    assert digest.severity.value == "MEDIUM"
    assert audit_credential_report(rows, ctx(), now=NOW, rotating_users={"twokeys"}) == []


def test_policy_is_configurable() -> None:
    rows = [r for r in parse_credential_report(REPORT) if r.user == "fresh"]
    assert audit_credential_report(rows, ctx(), KeyPolicy(max_age_days=5, unused_days=45), now=NOW)


def test_compliant_account_gives_nothing() -> None:
    assert audit_credential_report(parse_credential_report(HEADER + "\n" + row("fresh", ("true", days_ago(1), days_ago(1)))),
                                   ctx(), now=NOW) == []


class SlowIam:
    def __init__(self, started: int) -> None:
        self.started = started
        self.calls = 0

    def generate_credential_report(self) -> dict[str, Any]:
        self.calls += 1
        return {"State": "STARTED" if self.calls <= self.started else "COMPLETE"}

    def get_credential_report(self) -> dict[str, Any]:
        return {"Content": REPORT.encode(), "GeneratedTime": NOW}


def test_polling_waits_until_complete() -> None:
    sleeps: list[float] = []
    text, generated = fetch_credential_report(SlowIam(started=3), delay=2.0, sleep=sleeps.append)
    assert text == REPORT and generated == NOW and sleeps == [2.0, 2.0, 2.0]


def test_polling_is_bounded() -> None:
    sleeps: list[float] = []
    with pytest.raises(CredentialReportUnavailable):
        fetch_credential_report(SlowIam(started=10**6), attempts=4, sleep=sleeps.append)
    assert len(sleeps) == 3


def test_against_moto(moto_aws, uid) -> None:
    # moto's backends are shared with any local runtime in this process: look at this test's users only.
    managed, two, none = f"ci-deployer-{uid}", f"twokeys-{uid}", f"nokeys-{uid}"
    ctx_here = AuditContext({managed})
    iam = boto3.client("iam")
    for user in (managed, two, none):
        iam.create_user(UserName=user)
    iam.create_access_key(UserName=managed)
    iam.create_access_key(UserName=two)
    iam.create_access_key(UserName=two)
    today = run_credential_report(ctx_here, iam=iam, now=datetime.now(UTC), sleep=lambda s: None)
    later = run_credential_report(ctx_here, iam=iam, now=datetime.now(UTC) + timedelta(days=100), sleep=lambda s: None)
    digest = next(f for f in today if f.detection == "key-lifecycle.credential-report")
    assert two in digest.resources and managed not in digest.resources and none not in digest.resources
    assert f"• {two}: two active access keys" in digest.summary
    aged = next(f for f in later if f.detection == "key-lifecycle.credential-report")
    assert aged.severity.value == "HIGH"  # the managed user's key is now over age
    assert {managed, two} <= set(aged.resources) and none not in aged.resources
    assert f"{managed} (managed): access key 1 is 100 days old" in aged.summary
    assert "never used, created 100 days ago" in aged.summary
