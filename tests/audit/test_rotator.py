"""The rotator's own key changes: session issuer AND a matching intent, or a HIGH self-protection finding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.audit.context import AuditContext, arn_names
from chalicelib.audit.pipeline import classify

from .conftest import (
    ACCOUNT,
    MANAGED,
    ROTATOR_ROLE,
    assumed_role,
    create_access_key,
    ct,
    eventbridge,
    iam_user,
)

OUTSIDE = "self-protection.rotator-outside-rotation"
HUMAN = "key-lifecycle.access-key-change"


class Ledger:
    """Stands in for chalicelib.ledger.Ledger.find_intent: records calls, answers from a set."""

    def __init__(self, intents: set[tuple[str, str, str | None]] | None = None, fail: bool = False) -> None:
        self.intents = intents or set()
        self.calls: list[tuple[str, str, str | None, datetime]] = []
        self.fail = fail

    def __call__(self, user: str, action: str, key_id: str | None, at: datetime) -> bool:
        self.calls.append((user, action, key_id, at))
        if self.fail:
            raise ConnectionError("dynamodb unreachable")
        return (user, action, key_id) in self.intents or (user, action, None) in self.intents


def ctx_with(lookup: Ledger | None) -> AuditContext:
    return AuditContext({MANAGED}, ROTATOR_ROLE, "ci-key-rotator", lookup)


def rotator_create(key: str = "AKIANEWKEY0000000001") -> dict:
    return eventbridge(create_access_key(identity=assumed_role(ROTATOR_ROLE, "ci-deployer-r-42"), key=key))


def test_own_change_with_intent_is_silent() -> None:
    ledger = Ledger({(MANAGED, "CreateAccessKey", None)})
    assert classify(rotator_create(), ctx_with(ledger)) == []
    user, action, key, at = ledger.calls[0]
    assert (user, action, key) == (MANAGED, "CreateAccessKey", "AKIANEWKEY0000000001")
    assert at == datetime(2024, 5, 1, 10, 15, tzinfo=UTC)


def test_own_change_without_intent_is_high_self_protection() -> None:
    findings = classify(rotator_create(), ctx_with(Ledger()))
    assert [(f.detection, f.severity.value, f.category.value) for f in findings] == [
        (OUTSIDE, "HIGH", "self-protection")
    ]
    assert findings[0].title == "Rotator role used outside a rotation"
    assert "no rotation announced" in findings[0].summary


def test_without_any_lookup_the_change_is_unconfirmed() -> None:
    assert [f.detection for f in classify(rotator_create(), ctx_with(None))] == [OUTSIDE]


def test_failing_lookup_fails_closed() -> None:
    findings = classify(rotator_create(), ctx_with(Ledger(fail=True)))
    assert [f.detection for f in findings] == [OUTSIDE]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("UpdateAccessKey", {"userName": MANAGED, "accessKeyId": "AKIAOLDKEY0000000001", "status": "Inactive"}),
        ("DeleteAccessKey", {"userName": MANAGED, "accessKeyId": "AKIAOLDKEY0000000001"}),
    ],
)
def test_intent_must_match_action_and_key(name: str, params: dict) -> None:
    event = eventbridge(ct(name, identity=assumed_role(ROTATOR_ROLE), params=params))
    right = Ledger({(MANAGED, name, "AKIAOLDKEY0000000001")})
    wrong_key = Ledger({(MANAGED, name, "AKIAOTHERKEY00000001")})
    wrong_action = Ledger({(MANAGED, "CreateAccessKey", "AKIAOLDKEY0000000001")})
    assert classify(event, ctx_with(right)) == []
    assert [f.detection for f in classify(event, ctx_with(wrong_key))] == [OUTSIDE]
    assert [f.detection for f in classify(event, ctx_with(wrong_action))] == [OUTSIDE]


def test_same_change_by_anyone_else_is_reported_even_with_an_intent() -> None:
    ledger = Ledger({(MANAGED, "CreateAccessKey", None)})
    findings = classify(eventbridge(create_access_key(identity=assumed_role("Admin"))), ctx_with(ledger))
    assert [(f.detection, f.severity.value) for f in findings] == [(HUMAN, "HIGH")]
    assert ledger.calls == []  # the intent is only consulted for the rotator's identity


def test_role_with_a_path_is_recognised() -> None:
    event = eventbridge(create_access_key(identity=assumed_role(ROTATOR_ROLE, path="/service-role/")))
    assert classify(event, ctx_with(Ledger({(MANAGED, "CreateAccessKey", None)}))) == []


def test_similar_role_name_is_not_the_rotator() -> None:
    event = eventbridge(create_access_key(identity=assumed_role("evil-" + ROTATOR_ROLE)))
    assert [f.detection for f in classify(event, ctx_with(Ledger({(MANAGED, "CreateAccessKey", None)})))] == [HUMAN]


def test_session_name_alone_does_not_make_the_rotator() -> None:
    # The session name is chosen by the caller; only the issuer (the role) counts.
    identity = assumed_role("Admin", session=ROTATOR_ROLE)
    event = eventbridge(create_access_key(identity=identity))
    assert [f.detection for f in classify(event, ctx_with(Ledger({(MANAGED, "CreateAccessKey", None)})))] == [HUMAN]


def test_local_runtime_rotator_user() -> None:
    event = eventbridge(create_access_key(identity=iam_user(ROTATOR_ROLE)))
    assert classify(event, ctx_with(Ledger({(MANAGED, "CreateAccessKey", None)}))) == []
    assert [f.detection for f in classify(event, ctx_with(Ledger()))] == [OUTSIDE]


def test_configurable_role_name() -> None:
    ctx = AuditContext({MANAGED}, "key-bot", "ci-key-rotator", Ledger({(MANAGED, "CreateAccessKey", None)}))
    assert classify(eventbridge(create_access_key(identity=assumed_role("key-bot"))), ctx) == []
    assert [f.detection for f in classify(rotator_create(), ctx)] == [HUMAN]


def test_arn_names() -> None:
    assert arn_names(f"arn:aws:iam::{ACCOUNT}:role/ci-key-rotator", "role", "ci-key-rotator")
    assert arn_names(f"arn:aws:iam::{ACCOUNT}:role/a/b/ci-key-rotator", "role", "ci-key-rotator")
    assert not arn_names(f"arn:aws:iam::{ACCOUNT}:role/ci-key-rotator-x", "role", "ci-key-rotator")
    assert not arn_names(f"arn:aws:iam::{ACCOUNT}:user/ci-key-rotator", "role", "ci-key-rotator")
    assert not arn_names(f"arn:aws:iam::{ACCOUNT}:role/ci-key-rotator", "role", "")


def test_several_rotator_roles_one_per_lambda() -> None:
    ledger = Ledger({(MANAGED, "CreateAccessKey", None)})
    ctx = AuditContext({MANAGED}, "ci-key-rotator-dev-create_key, ci-key-rotator-dev-retire", "ci-key-rotator", ledger)
    assert ctx.rotator_names == frozenset({"ci-key-rotator-dev-create_key", "ci-key-rotator-dev-retire"})
    by_create = eventbridge(create_access_key(identity=assumed_role("ci-key-rotator-dev-create_key")))
    by_other = eventbridge(create_access_key(identity=assumed_role("ci-key-rotator-dev-report")))
    assert classify(by_create, ctx) == []
    assert [f.detection for f in classify(by_other, ctx)] == [HUMAN]
    trust = eventbridge(ct("UpdateAssumeRolePolicy", params={"roleName": "ci-key-rotator-dev-retire"}))
    assert [f.detection for f in classify(trust, ctx)] == ["self-protection.rotator-identity-changed"]
