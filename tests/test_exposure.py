"""An AWS Health RISK event rotates a managed user's leaked key at once, through the real state machine."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from chalicelib import exposure
from chalicelib.deps import get_deps
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import alerts_for, assert_no_pipeline_holds_a_dead_key, assert_one_active_key_everywhere

SAMPLE = json.loads((Path(__file__).parent / "audit" / "fixtures"
                     / "health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json").read_text())


def health_event(*key_ids: str, code: str = "AWS_RISK_CREDENTIALS_EXPOSED") -> dict:
    event = copy.deepcopy(SAMPLE)
    event["detail"]["eventTypeCode"] = code
    event["detail"]["affectedEntities"] = [{"entityValue": k} for k in key_ids]
    return event


def states(world: World, arn: str) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in world.runtime.history(arn)
            if e["type"].endswith("StateEntered")]


def test_exposed_managed_key_is_deactivated_right_after_the_push_then_replaced(clean_world: World,
                                                                                user: str) -> None:
    (leaked,) = clean_world.key_statuses(user)

    (outcome,) = exposure.respond(get_deps(), health_event(leaked))

    assert outcome["action"] == "rotating" and outcome["owner"] == user
    result = clean_world.runtime.wait(outcome["execution_arn"])
    assert result["status"] == "SUCCEEDED"
    entered = states(clean_world, outcome["execution_arn"])
    assert entered.index("DeactivateCompromisedKey") < entered.index("VerifyBuilds")
    assert "DrainPeriod" in entered and leaked not in clean_world.key_statuses(user)
    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)


def test_a_second_event_for_the_same_leak_starts_no_second_rotation(clean_world: World, user: str) -> None:
    (leaked,) = clean_world.key_statuses(user)
    (first,) = exposure.respond(get_deps(), health_event(leaked))
    (again,) = exposure.respond(get_deps(), health_event(leaked, code="AWS_RISK_IAM_QUARANTINE"))

    assert again["duplicate"] is True and again["execution_arn"] == first["execution_arn"]
    assert clean_world.runtime.wait(first["execution_arn"])["status"] == "SUCCEEDED"


def test_every_affected_entity_is_handled_and_unmanaged_keys_page_with_the_owner(clean_world: World) -> None:
    managed = new_user_name()
    clean_world.add_user(managed, [f"acme/{managed}"])
    (managed_key,) = clean_world.key_statuses(managed)
    iam = clean_world.runtime.client("iam")
    iam.create_user(UserName="alice-laptop")
    stray = iam.create_access_key(UserName="alice-laptop")["AccessKey"]["AccessKeyId"]

    outcomes = exposure.respond(get_deps(), health_event(stray, managed_key, "not-a-key"))

    by_key = {o["access_key_id"]: o for o in outcomes}
    assert by_key[stray]["action"] == "alerted" and by_key[stray]["owner"] == "alice-laptop"
    assert by_key[managed_key]["action"] == "rotating"
    page = next(a for a in clean_world.runtime.alerts() if a["message"].get("access_key_id") == stray)
    assert page["severity"] == "CRITICAL" and page["message"]["owner"] == "alice-laptop"
    assert clean_world.key_statuses("alice-laptop") == {stray: "Active"}, "an unmanaged key is never touched"
    assert clean_world.runtime.wait(by_key[managed_key]["execution_arn"])["status"] == "SUCCEEDED"


def test_failed_verification_after_deactivation_keeps_the_new_key(clean_world: World, user: str) -> None:
    (leaked,) = clean_world.key_statuses(user)
    clean_world.github.fail_next_builds(f"acme/{user}", 1)

    (outcome,) = exposure.respond(get_deps(), health_event(leaked))

    assert clean_world.runtime.wait(outcome["execution_arn"])["status"] == "FAILED"
    statuses = clean_world.key_statuses(user)
    assert statuses[leaked] == "Inactive", "the leaked key is never handed back"
    (new_key,) = [k for k, s in statuses.items() if s == "Active"]
    assert clean_world.held_key(f"acme/{user}") == new_key
    alert = alerts_for(clean_world, user)[-1]
    assert alert["severity"] == "CRITICAL" and alert["message"]["error"] == "VerificationFailed"
    assert alert["message"]["rollback"]["new_key_deleted"] is False


def test_other_health_events_are_ignored() -> None:
    event = health_event("AKIAIOSFODNN7EXAMPLE", code="AWS_EC2_INSTANCE_STORE_DRIVE_PERFORMANCE_DEGRADED")
    assert exposure.respond(get_deps(), event) == []
