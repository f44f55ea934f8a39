"""A managed CI user's own key (issue 14, finding 1): profile checks, exposure escalation, the ledger lookup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.audit.context import EXPOSURE_HORIZON, AuditContext
from chalicelib.audit.finding import Severity
from chalicelib.audit.pipeline import classify
from chalicelib.audit.profile import ManagedUserProfile

from .conftest import MANAGED, ROTATOR_ROLE
from .depth_cases import EXPOSED_AT, minted

EVENT_TIME = datetime(2024, 5, 1, 10, 15, tzinfo=UTC)


def severity_of(event: dict[str, Any], **ctx: Any) -> Severity | None:
    found = {f.detection: f for f in classify(event, AuditContext({MANAGED}, ROTATOR_ROLE, **ctx))}
    finding = found.get("managed-user.session-minted")
    return finding.severity if finding else None


@pytest.mark.parametrize(("exposed_at", "expected"), [
    (EXPOSED_AT, Severity.CRITICAL),
    (EVENT_TIME + timedelta(minutes=1), Severity.HIGH),
    (EVENT_TIME - EXPOSURE_HORIZON - timedelta(minutes=1), Severity.HIGH),
    (None, Severity.HIGH),
])
def test_critical_only_after_a_recent_exposure(exposed_at: datetime | None, expected: Severity) -> None:
    assert severity_of(minted(), exposure_lookup=lambda user: exposed_at) is expected


def test_a_failing_exposure_lookup_keeps_the_finding_high(caplog: pytest.LogCaptureFixture) -> None:
    def broken(user: str) -> datetime | None:
        raise TimeoutError("dynamodb")

    assert severity_of(minted(), exposure_lookup=broken) is Severity.HIGH


def test_a_profile_that_allows_minting_does_not_survive_an_exposure() -> None:
    profiles = {MANAGED: ManagedUserProfile(may_mint_sessions=True)}
    assert severity_of(minted(), profiles=profiles) is None
    assert severity_of(minted(), profiles=profiles, exposure_lookup=lambda u: EXPOSED_AT) is Severity.CRITICAL


def test_profile_entries_are_checked() -> None:
    with pytest.raises(ValidationError, match="service"):
        ManagedUserProfile(expected=["PutObject"])
    with pytest.raises(ValidationError):
        ManagedUserProfile(source_cidrs=["not-a-cidr"])
    profile = ManagedUserProfile(expected=["ecr:*Layer*", "s3:PutObject"], source_cidrs=["2001:db8::/32"])
    assert profile.expects("ecr:UploadLayerPart") and not profile.expects("ecr:DeleteRepository")
    assert profile.from_expected_place("2001:db8::1") and not profile.from_expected_place("192.0.2.1")
    assert profile.from_expected_place("cloudformation.amazonaws.com"), "a service acting for the user"


def test_the_exposure_lookup_reads_the_ledgers_exposure_rotations(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import audit_handlers

    rotations = {MANAGED: [
        {"rotation_id": "sched-1", "reason": "scheduled", "started_at": "2024-04-01T00:00:00.000Z"},
        {"rotation_id": "exposure-AKIA1", "reason": "exposure", "started_at": "2024-04-20T08:00:00.000Z"},
        {"rotation_id": "exposure-AKIA2", "reason": "exposure", "started_at": "2024-05-01T09:00:00.000Z"},
    ]}
    deps = SimpleNamespace(ledger=SimpleNamespace(rotations=lambda user: rotations.get(user, [])))
    monkeypatch.setattr(audit_handlers, "get_deps", lambda: deps)
    assert audit_handlers.exposure_lookup(MANAGED) == EXPOSED_AT
    assert audit_handlers.exposure_lookup("someone-else") is None


def test_the_minted_credentials_never_reach_the_finding() -> None:
    event = minted()
    token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD" + "x" * 300
    event["detail"]["responseElements"]["credentials"].update(sessionToken=token,
                                                              secretAccessKey="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    findings = classify(event, AuditContext({MANAGED}, ROTATOR_ROLE))
    assert findings and all(token[:40] not in f.model_dump_json() and "wJalrXUtnFEMI" not in f.model_dump_json()
                            for f in findings)


def test_a_zone_less_time_is_taken_as_utc() -> None:
    event = minted()
    event["detail"]["eventTime"] = "2024-05-01T10:15:00"
    assert severity_of(event, exposure_lookup=lambda user: EXPOSED_AT.replace(tzinfo=None)) is Severity.CRITICAL
