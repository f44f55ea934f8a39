"""IAM as eventually consistent as AWS's (local/iam_consistency.py), and a rotation that survives it.

Every window is measured on the simulated clock (local/sim_clock.py): the tests move it instead of
sleeping, exactly as an unslept Wait state or Retry interval does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import exposure
from chalicelib.deps import get_deps
from chalicelib.targets.base import key_id_digest
from chalicelib.targets.registry import provider
from local import demo, iam_consistency, sim_clock, strict
from local.runtime import LocalRuntime
from local.world import World, target_id
from tests.conftest import new_user_name
from tests.invariants import alerts_for, assert_no_pipeline_holds_a_dead_key, assert_one_active_key_everywhere

#: The worst last-used delay DrainCheck is designed for: its LastUseNotSeenYet Retry spans ~4 h.
WORST_LAST_USED_LAG = 4 * 3600.0
#: Simulated seconds before a lag ends at which "not reported yet" is checked: more than one
#: GetAccessKeyLastUsed call can take in real time on a loaded machine.
LAST_USED_CHECK_MARGIN = 30.0


def _new_key(runtime: LocalRuntime) -> tuple[str, dict[str, str]]:
    name = new_user_name("iam")
    iam = runtime.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="whoami", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": '
        '[{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}'))
    return name, iam.create_access_key(UserName=name)["AccessKey"]


def _whoami(runtime: LocalRuntime, key: dict[str, str]) -> str:
    session = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                     aws_secret_access_key=key["SecretAccessKey"], region_name="us-east-1")
    return str(session.client("sts", endpoint_url=runtime.endpoint).get_caller_identity()["Arn"])


def _refused(runtime: LocalRuntime, key: dict[str, str]) -> str | None:
    """The error code AWS answers for ``key``, None if it accepts it."""
    try:
        _whoami(runtime, key)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def _last_used(runtime: LocalRuntime, key_id: str) -> datetime | None:
    answer = runtime.client("iam").get_access_key_last_used(AccessKeyId=key_id)
    return answer["AccessKeyLastUsed"].get("LastUsedDate")


def _calls(runtime: LocalRuntime, result: dict, handler: str) -> int:
    """How often the execution ``result`` describes invoked ``handler``'s function, retries included: read
    from its own history, not from the runtime's counters, which every execution in the process adds to."""
    function = f":function:{runtime.function_name(handler)}"
    return sum(1 for event in runtime.history(result["executionArn"]) if event["type"] == "LambdaFunctionScheduled"
               and event["lambdaFunctionScheduledEventDetails"]["resource"].endswith(function))


def _not_at_the_end_of_a_minute(margin: float = 12.0) -> None:
    """Rotations below must push and build within one wall-clock minute: start early in a minute."""
    second = datetime.now(UTC).second + datetime.now(UTC).microsecond / 1e6
    if second > 60 - margin:
        time.sleep(60.5 - second)


# -- the three windows ---------------------------------------------------------------------------------


def test_a_new_key_is_refused_until_iam_has_propagated_it(runtime: LocalRuntime) -> None:
    assert strict.current().key_propagation_seconds > 0
    # A wider window than the measured 10 s default, as for the revocation window below: the simulated clock
    # carries real time too, and a loaded machine can spend seconds between creating the key and the checks.
    window = 60.0
    with strict.override(key_propagation_seconds=window):
        _, key = _new_key(runtime)

        assert _refused(runtime, key) == "InvalidClientTokenId", "AWS refuses a key it has not propagated yet"
        sim_clock.advance(window / 2)  # real time passes too: keep a margin
        assert _refused(runtime, key) == "InvalidClientTokenId"
        sim_clock.advance(window / 2)
        assert _refused(runtime, key) is None


@pytest.mark.parametrize("revoke", ["deactivate", "delete"])
def test_a_revoked_key_keeps_working_for_the_revocation_window(runtime: LocalRuntime, revoke: str) -> None:
    assert strict.current().key_revocation_seconds > 0
    # A wider window than the measured 4 s default: the simulated clock carries real time too, and a loaded
    # machine (xdist workers, builds) can spend seconds between two calls; the rule under test is the same.
    window = 60.0
    with strict.override(key_revocation_seconds=window):
        _revoked_key_works_until_the_window_ends(runtime, revoke, window)


def _revoked_key_works_until_the_window_ends(runtime: LocalRuntime, revoke: str, window: float) -> None:
    user, key = _new_key(runtime)
    iam_consistency.settle()
    assert _refused(runtime, key) is None
    iam = runtime.client("iam")
    if revoke == "deactivate":
        iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    else:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])

    assert _refused(runtime, key) is None, "a revoked key still works until IAM has told every endpoint"
    sim_clock.advance(window / 2)  # real time passes too: keep a margin
    assert _refused(runtime, key) is None
    sim_clock.advance(window / 2)
    assert _refused(runtime, key) == "InvalidClientTokenId"


@pytest.mark.parametrize("lag", [0.0, WORST_LAST_USED_LAG])
def test_last_used_is_reported_to_the_minute_and_only_after_the_lag(runtime: LocalRuntime, lag: float) -> None:
    with strict.override(last_used_lag_seconds=lag):
        _, key = _new_key(runtime)
        iam_consistency.settle()
        before = datetime.now(UTC)
        # The use is recorded at a simulated time between these two; the clock also runs in real time, which a
        # loaded machine stretches, so each check below is placed relative to them rather than by a fixed step.
        use_from = sim_clock.now()
        _whoami(runtime, key)
        use_until = sim_clock.now()
        if lag:
            assert _last_used(runtime, key["AccessKeyId"]) is None, "the use is not reported yet"
            sim_clock.advance(use_from + lag - LAST_USED_CHECK_MARGIN - sim_clock.now())
            assert _last_used(runtime, key["AccessKeyId"]) is None
            assert sim_clock.now() < use_from + lag, "the check above ran before the lag was over"
            sim_clock.advance(use_until + lag - sim_clock.now())
        reported = _last_used(runtime, key["AccessKeyId"])

    assert reported is not None
    assert (reported.second, reported.microsecond) == (0, 0), "LastUsedDate is to the minute"
    assert before.replace(second=0, microsecond=0) <= reported <= datetime.now(UTC)


def test_a_refused_request_is_not_a_use(runtime: LocalRuntime) -> None:
    # The request must reach IAM inside the propagation window, however slowly a loaded machine sends it.
    with strict.override(key_propagation_seconds=60.0):
        _, key = _new_key(runtime)
        assert _refused(runtime, key) == "InvalidClientTokenId"
        iam_consistency.settle()
        assert _last_used(runtime, key["AccessKeyId"]) is None


# -- AwaitKeyLive under the propagation delay ----------------------------------------------------------


# Windows longer than the 10 s default: the simulated clock carries real time too, and on a loaded machine
# CreateKey's end and AwaitKeyLive's first probe can be seconds apart; the first probe must fall inside.
@pytest.mark.parametrize("window", [30.0, 60.0])
def test_await_key_live_waits_out_the_propagation_delay(clean_world: World, runtime: LocalRuntime,
                                                        window: float) -> None:
    name = new_user_name()
    with strict.override(key_propagation_seconds=window):
        clean_world.add_user(name, [f"acme/{name}"])
        result = clean_world.rotate(name)

    assert result["status"] == "SUCCEEDED"
    assert _calls(runtime, result, "await_key_live") > 1, "the first probe was refused and retried"
    assert_one_active_key_everywhere(clean_world, name)
    assert_no_pipeline_holds_a_dead_key(clean_world, name)


def test_a_key_iam_does_not_propagate_within_the_retry_budget_is_rolled_back(clean_world: World) -> None:
    name = new_user_name()
    with strict.override(key_propagation_seconds=600.0):  # AwaitKeyLive gives up after ~98 s
        # The window applies to every key: early in a session the operator's and the functions' own keys are
        # younger than 600 simulated seconds, and would be refused too.
        iam_consistency.settle()
        hand_made = clean_world.add_user(name, [f"acme/{name}"])
        result = clean_world.rotate(name)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(name) == {hand_made: "Active"}, "the new key was deleted, the old one kept"
    assert alerts_for(clean_world, name)[-1]["message"]["error"] == "KeyNotLiveYet"
    assert_no_pipeline_holds_a_dead_key(clean_world, name)


# -- DrainCheck on coarse, lagging last-used data ------------------------------------------------------


@pytest.mark.parametrize("lag", [0.0, WORST_LAST_USED_LAG])
def test_a_build_in_the_minute_of_the_push_lets_the_rotation_finish(clean_world: World, runtime: LocalRuntime,
                                                                    lag: float) -> None:
    """Travis CI's API reports no key id, so DrainCheck relies on AWS's last-used data: to the minute (the
    build used the key in the minute of the push) and, at worst, hours late."""
    assert not provider("travis").reports_identity, "the premise: a provider that says nothing of the key"
    name = new_user_name()
    project = f"travis:acme/{name}"
    with strict.override(last_used_lag_seconds=lag):
        old = clean_world.add_user(name, [project])
        _not_at_the_end_of_a_minute()
        result = clean_world.rotate(name)

    assert result["status"] == "SUCCEEDED", alerts_for(clean_world, name)[-1:]
    assert old not in clean_world.key_statuses(name)
    assert_one_active_key_everywhere(clean_world, name)
    waited = _calls(runtime, result, "drain_check") - 1
    assert (waited > 0) == (lag > 0), "DrainCheck waits for late last-used data, and only then"


def test_last_used_data_that_never_arrives_ends_in_a_bounded_wait_and_an_alert(clean_world: World,
                                                                               runtime: LocalRuntime) -> None:
    name = new_user_name()
    with strict.override(last_used_lag_seconds=10 * WORST_LAST_USED_LAG):
        old = clean_world.add_user(name, [f"travis:acme/{name}"])  # no key id reported: last-used data only
        result = clean_world.rotate(name)

    assert result["status"] == "FAILED"
    assert _calls(runtime, result, "drain_check") == 14, "13 retries (~4 h of backoff), then the alert"
    statuses = clean_world.key_statuses(name)
    assert statuses[old] == "Active" and list(statuses.values()) == ["Active", "Active"]
    alert = alerts_for(clean_world, name)[-1]["message"]
    assert alert["error"] == "LastUseNotSeenYet" and "late" in alert["cause"]
    assert_no_pipeline_holds_a_dead_key(clean_world, name)


def test_the_verification_build_reports_the_key_it_used(clean_world: World, runtime: LocalRuntime) -> None:
    """GitHub: the job's ::notice annotation names the key; DrainCheck needs no last-used data at all."""
    name = new_user_name()
    with strict.override(last_used_lag_seconds=WORST_LAST_USED_LAG):
        clean_world.add_user(name, [f"acme/{name}"])
        result = clean_world.rotate(name)

    assert result["status"] == "SUCCEEDED"
    assert _calls(runtime, result, "drain_check") == 1, "no wait for hours-late last-used data"
    new_key = assert_one_active_key_everywhere(clean_world, name)
    rotation = get_deps().ledger.rotations(name)[-1]
    (target,) = get_deps().ledger.rotation(name, rotation["rotation_id"])["targets"].values()
    assert target["target_id"] == target_id(f"acme/{name}")
    assert target["used_key_sha256"] == key_id_digest(new_key)


@pytest.mark.parametrize("revoke", ["deactivate", "delete"])
def test_a_new_key_revoked_during_verification_is_rolled_back_although_the_build_passed(
        clean_world: World, runtime: LocalRuntime, revoke: str) -> None:
    """The build runs inside IAM's revocation window and passes; the rotation must not retire the old key."""
    name = new_user_name()
    clean_world.add_user(name, [f"acme/{name}"])
    assert clean_world.rotate(name)["status"] == "SUCCEEDED"  # the old key is escrowed from now on
    (old,) = clean_world.key_statuses(name)
    iam = runtime.client("iam")

    def someone_revokes_the_new_key(event: dict) -> None:
        if revoke == "deactivate":
            iam.update_access_key(UserName=name, AccessKeyId=event["new_key_id"], Status="Inactive")
        else:
            iam.delete_access_key(UserName=name, AccessKeyId=event["new_key_id"])

    runtime.inject_fault("verify_build", someone_revokes_the_new_key)
    # A revocation window wider than the measured 4 s default: the build must run inside it, and on a loaded
    # machine starting a build's processes alone can take longer.
    with strict.override(key_revocation_seconds=300.0):
        result = clean_world.rotate(name)

    assert result["status"] == "FAILED"
    rotation = get_deps().ledger.rotations(name)[-1]
    (target,) = get_deps().ledger.rotation(name, rotation["rotation_id"])["targets"].values()
    assert target["verified"] is True, "the build passed: the key still worked when it ran"
    assert alerts_for(clean_world, name)[-1]["message"]["error"] == "NewKeyRevoked"
    assert clean_world.key_statuses(name)[old] == "Active"
    assert clean_world.held_key(f"acme/{name}") == old
    iam_consistency.settle()
    assert_no_pipeline_holds_a_dead_key(clean_world, name)


# -- exposure: how long the leaked key keeps working -----------------------------------------------------


def test_an_exposed_key_is_contained_after_its_revocation_window(clean_world: World, user: str) -> None:
    (leaked,) = clean_world.key_statuses(user)
    event_at = sim_clock.now()
    (outcome,) = exposure.respond(get_deps(), demo.health_event(leaked))
    assert clean_world.runtime.wait(outcome["execution_arn"])["status"] == "SUCCEEDED"

    contained = demo.seconds_to_contained(leaked, event_at)
    windows = strict.current()
    assert contained is not None
    # The new key had to propagate before the push, and the leaked one works on for the revocation window.
    assert windows.key_propagation_seconds + windows.key_revocation_seconds <= contained < 300
