"""CIS AWS Foundations monitoring set: every control mapped, every CIS event name detected."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.registry import by_id
from chalicelib.audit.pipeline import classify
from tests.audit.cis import CIS_CREDENTIALS, CIS_MONITORING, CisControl, render_markdown

from .conftest import ct, eventbridge, fixture, root

MAPPING_MD = Path(__file__).resolve().parents[2] / "docs" / "cis-mapping.md"


def test_the_whole_monitoring_set_is_mapped() -> None:
    assert [c.number for c in CIS_MONITORING] == [f"4.{i}" for i in range(1, 16)]
    known = by_id()
    for control in (*CIS_MONITORING, *CIS_CREDENTIALS):
        assert control.detections, control.number
        assert set(control.detections) <= set(known), control.number


def _named(control: CisControl) -> list[tuple[str, str]]:
    return [(control.number, name) for name in control.event_names]


@pytest.mark.parametrize(
    ("number", "name"),
    [pair for c in CIS_MONITORING if c.event_source and c.number not in ("4.2", "4.6") for pair in _named(c)],
)
def test_every_cis_event_name_is_detected(number: str, name: str) -> None:
    control = next(c for c in CIS_MONITORING if c.number == number)
    assert control.event_source is not None
    event = eventbridge(ct(name, control.event_source, params={"name": "x", "userName": "bob"}))
    fired = {f.detection for f in classify(event, AuditContext())}
    assert fired & set(control.detections), f"CIS {number} {name}: fired {fired}"


CONDITION_EVENTS = {
    "4.1": [eventbridge(ct("DescribeInstances", "ec2.amazonaws.com", error_code="Client.UnauthorizedOperation")),
            eventbridge(ct("GetObject", "s3.amazonaws.com", error_code="AccessDenied"))],
    "4.2": [fixture("signin_ConsoleLogin_IAMUser_success_noMFA.raw.json")],
    "4.3": [fixture("signin_ConsoleLogin_Root_success_MFA.raw.json"),
            eventbridge(ct("PutBucketPolicy", "s3.amazonaws.com", identity=root()))],
    "4.6": [fixture("signin_ConsoleLogin_IAMUser_failure.raw.json"),
            fixture("signin_ConsoleLogin_Root_failure.raw.json")],
}


@pytest.mark.parametrize("number", sorted(CONDITION_EVENTS))
def test_condition_controls_are_detected(number: str) -> None:
    control = next(c for c in CIS_MONITORING if c.number == number)
    for event in CONDITION_EVENTS[number]:
        fired = {f.detection for f in classify(event, AuditContext())}
        assert fired & set(control.detections), f"CIS {number}: fired {fired}"


def test_markdown_matches_the_constant() -> None:
    assert MAPPING_MD.read_text() == render_markdown(), (
        "regenerate with: python -m tests.audit.cis > docs/cis-mapping.md"
    )
