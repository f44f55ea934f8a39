"""The audit path on the embedded AWS: IAM calls → CloudTrail → EventBridge rule → audit Lambda →
Slack (real slack_sdk payloads to a local webhook sink) and SNS. The rotator's own changes stay quiet."""

from __future__ import annotations

from local.runtime import LocalRuntime
from local.world import World


def settled(runtime: LocalRuntime) -> int:
    """Wait for the bus to deliver what the fixtures did (creating the user's hand-made key is itself an
    out-of-band change); returns how many SNS messages there are now."""
    runtime.bus.drain()
    return len(runtime.alerts())


def key_findings(runtime: LocalRuntime, user: str, since: int) -> list[dict]:
    return [a for a in runtime.alerts()[since:]
            if str(a["message"].get("detection", "")).startswith(("key-lifecycle.", "self-protection."))
            and user in a["message"].get("summary", "")]


def test_rotations_produce_no_finding_but_a_hand_made_key_is_high(audited: World, user: str) -> None:
    runtime = audited.runtime
    since = settled(runtime)
    assert audited.rotate(user)["status"] == "SUCCEEDED"
    assert audited.rotate(user)["status"] == "SUCCEEDED"
    runtime.bus.drain()
    audited_calls = [e for name, e in runtime.bus.delivered if name == "audit"
                     and (e["detail"].get("requestParameters") or {}).get("userName") == user]
    assert len(audited_calls) >= 6, "create, deactivate and delete of two rotations reached the audit Lambda"
    assert key_findings(runtime, user, since) == []

    slack_before = len(runtime.slack.messages)
    runtime.client("iam").create_access_key(UserName=user)
    runtime.bus.drain()

    (finding,) = key_findings(runtime, user, since)
    assert finding["severity"] == "HIGH"
    assert finding["message"]["detection"] == "key-lifecycle.access-key-change"
    (slack,) = runtime.slack.messages[slack_before:]
    assert "HIGH" in slack["text"] and slack["blocks"][0]["type"] == "header"


def test_the_rotator_identity_without_an_intent_is_flagged(audited: World, user: str) -> None:
    """Someone using the rotator's credentials outside a workflow: same identity, no intent record."""
    runtime = audited.runtime
    since = settled(runtime)
    rotator = runtime.rotator.session().client("iam", endpoint_url=runtime.endpoint)
    rotator.create_access_key(UserName=user)
    runtime.bus.drain()

    (finding,) = key_findings(runtime, user, since)
    assert finding["severity"] == "HIGH"
    assert finding["message"]["detection"].startswith("self-protection.")


def test_a_repeated_change_is_reported_once(audited: World, user: str) -> None:
    runtime = audited.runtime
    since = settled(runtime)
    iam = runtime.client("iam")
    (key_id,) = audited.key_statuses(user)
    for status in ("Inactive", "Active", "Inactive", "Active"):
        iam.update_access_key(UserName=user, AccessKeyId=key_id, Status=status)
    runtime.bus.drain()
    assert 1 <= len(key_findings(runtime, user, since)) <= 2, "repeats within the window were suppressed"
