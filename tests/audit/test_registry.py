"""Detections are data: discovered per module, well-formed, indexed by event."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import chalicelib.audit.detections as detections_package
from chalicelib.audit.detections.base import ANY, Detection
from chalicelib.audit.detections.registry import all_detections, collect, family_modules
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.pipeline import Classifier, classify

from .conftest import ct

CATEGORIES = [
    "key-lifecycle", "root", "console-login", "unauthorized-call", "iam-policy", "iam-identity", "cloudtrail", "kms",
    "s3-policy", "config", "network", "organizations", "sts", "exposure", "self-protection", "managed-user",
    "defense-evasion", "persistence", "exfiltration", "allow-list",
]


def test_categories_and_severities_are_exactly_the_specified_ones() -> None:
    assert [c.value for c in Category] == CATEGORIES
    assert [s.value for s in Severity] == ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
    assert {d.category.value for d in all_detections()} == set(CATEGORIES)


def test_detections_are_well_formed() -> None:
    detections = all_detections()
    assert len({d.id for d in detections}) == len(detections)
    for detection in detections:
        assert detection.id.startswith(detection.category.value + ".")
        assert detection.title and detection.description
        assert isinstance(detection.severity, Severity)


def test_every_family_module_is_discovered() -> None:
    """Every module of the package except the shared ones is a family, and every family contributes."""
    package = Path(detections_package.__file__).parent
    on_disk = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    names = {m.__name__.rsplit(".", 1)[1] for m in family_modules()}
    assert names == on_disk - {"base", "registry", "policy_grants"}
    assert {d.category.value for d in all_detections()} == {
        d.category.value for m in family_modules() for d in m.DETECTIONS}
    assert all(m.DETECTIONS for m in family_modules())


def test_a_new_family_is_one_module_with_detections() -> None:
    module = types.ModuleType("chalicelib.audit.detections.extra")
    module.DETECTIONS = (  # type: ignore[attr-defined]
        Detection(id="network.web-acl-deleted", category="network", severity="HIGH", title="Web ACL deleted",
                  events={"wafv2.amazonaws.com": {"DeleteWebACL"}}, description="x"),
    )
    detections = collect([*family_modules(), module])
    finding_ids = [f.detection for f in classify(ct("DeleteWebACL", "wafv2.amazonaws.com"), _ctx(), Classifier(detections))]
    assert finding_ids == ["network.web-acl-deleted"]


def test_collect_refuses_duplicates_and_bad_modules() -> None:
    dup = types.ModuleType("dup")
    dup.DETECTIONS = (all_detections()[0],)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="defined twice"):
        collect([*family_modules(), dup])
    empty = types.ModuleType("empty")
    with pytest.raises(TypeError, match="DETECTIONS"):
        collect([empty])


def test_detection_ids_must_match_their_category() -> None:
    with pytest.raises(ValueError):
        Detection(id="root.x", category="kms", severity="LOW", title="t", events={})
    with pytest.raises(ValueError):
        Detection(id="kms.x", category="nope", severity="LOW", title="t", events={})


def test_index_narrows_candidates() -> None:
    classifier = Classifier(all_detections())
    wildcard = {d.id for d in all_detections() if ANY in d.triggers}
    assert {d.id for d in classifier.candidates("s3.amazonaws.com", "GetObject")} == wildcard
    create = {d.id for d in classifier.candidates("iam.amazonaws.com", "CreateAccessKey")}
    assert {"key-lifecycle.access-key-change", "root.access-key-created",
            "self-protection.rotator-outside-rotation"} <= create
    assert "kms.key-disabled-or-deleted" not in create
    # Cached: the same tuple object comes back.
    assert classifier.candidates("iam.amazonaws.com", "CreateAccessKey") is classifier.candidates(
        "iam.amazonaws.com", "CreateAccessKey"
    )


def test_a_broken_detection_does_not_hide_the_others() -> None:
    def boom(record, ctx):
        raise RuntimeError("bug")

    broken = Detection(id="iam-identity.broken", category="iam-identity", severity="LOW", title="t",
                       events={"iam.amazonaws.com": {"CreateUser"}}, match=boom)
    classifier = Classifier((broken, *all_detections()))
    assert [f.detection for f in classify(ct("CreateUser"), _ctx(), classifier)] == ["iam-identity.user-created"]


def _ctx():
    from chalicelib.audit.context import AuditContext

    return AuditContext()


def test_attack_families_record_their_attack_techniques() -> None:
    """Issue 14: every detection of the attack families names the ATT&CK technique(s) it covers."""
    families = ("managed-user", "defense-evasion", "persistence", "exfiltration")
    missing = [d.id for d in all_detections() if d.category.value in families and not d.techniques]
    assert missing == []
    with pytest.raises(ValueError, match="ATT&CK"):
        Detection(id="network.x", category="network", severity="LOW", title="x", events={}, techniques=("1562",))
