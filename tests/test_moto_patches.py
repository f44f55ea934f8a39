"""One smoke test per moto workaround (local/moto_patches.py): an upgrade shows what broke."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local import iam_consistency
from local.runtime import LocalRuntime
from local.world import World


def run_definition(runtime: LocalRuntime, name: str, definition: dict, payload: dict | None = None) -> dict:
    sfn = runtime.client("stepfunctions")
    role = f"arn:aws:iam::123456789012:role/{runtime.function_name('x')}"
    arn = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=role)["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="smoke", input=json.dumps(payload or {}))
    return runtime.wait(execution["executionArn"])


def test_inactive_keys_are_refused_with_authentication_on(clean_world: World, user: str) -> None:
    (key_id,) = clean_world.key_statuses(user)
    repo = f"acme/{user}"
    assert clean_world.github.run_build(repo)
    clean_world.runtime.client("iam").update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    iam_consistency.settle()  # past the revocation window (tests/test_iam_consistency.py covers the window)
    assert not clean_world.github.run_build(repo), "a build with an Inactive key must fail"
    clean_world.runtime.client("iam").update_access_key(UserName=user, AccessKeyId=key_id, Status="Active")
    iam_consistency.settle()
    assert clean_world.github.run_build(repo)


def test_authentication_is_on_for_unknown_keys(runtime: LocalRuntime) -> None:
    import boto3

    stranger = boto3.session.Session(aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="x" * 40,
                                     region_name="us-east-1")
    with pytest.raises(ClientError) as caught:
        stranger.client("iam", endpoint_url=runtime.endpoint).list_users()
    assert caught.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_lambda_errors_keep_their_exception_name_and_the_executor_signs_its_calls(runtime: LocalRuntime) -> None:
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{runtime.function_name('plan')}"
    definition = {"StartAt": "T", "States": {"T": {
        "Type": "Task", "Resource": arn,
        "Catch": [{"ErrorEquals": ["InvalidExecutionInput"], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True}, "Caught": {"Type": "Succeed"}}}
    # Plan refuses input without a user with InvalidExecutionInput: the class name must reach the Catch.
    result = run_definition(runtime, "smoke-errors", definition, {"not": "a plan"})
    assert result["status"] == "SUCCEEDED"
    assert json.loads(result["output"])["error"]["Error"] == "InvalidExecutionInput"


def test_map_iteration_timeout_keeps_its_states_timeout_name(runtime: LocalRuntime) -> None:
    definition = {"StartAt": "M", "States": {"M": {
        "Type": "Map", "ItemsPath": "$.items",
        "Iterator": {"StartAt": "Hang", "States": {"Hang": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken", "TimeoutSeconds": 1,
            "Parameters": {"FunctionName": runtime.add_function("noop", lambda event, context: {}),
                           "Payload": {"t.$": "$$.Task.Token"}},
            "End": True}}},
        "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True}, "Caught": {"Type": "Succeed"}}}
    result = run_definition(runtime, "smoke-map-timeout", definition, {"items": [1]})
    assert result["status"] == "SUCCEEDED", "Catch on States.Timeout matched the Map's failure"


def test_wait_states_are_time_scaled(runtime: LocalRuntime) -> None:
    import time

    definition = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}
    started = time.monotonic()
    assert run_definition(runtime, "smoke-wait", definition)["status"] == "SUCCEEDED"
    assert time.monotonic() - started < 10, "an hour-long Wait ran in the test's time scale (0)"


def test_dynamodb_query_reads_only_its_partition(runtime: LocalRuntime) -> None:
    from moto.dynamodb.models.table import Table

    from chalicelib.deps import get_deps

    ledger = get_deps().ledger
    ledger.record_key("query-smoke", "AKIAQUERYSMOKE000001", origin="created", status="active")
    # A second partition in the same table: reading the whole table would return both.
    ledger.record_key("query-smoke-other", "AKIAQUERYSMOKE000002", origin="created", status="active")
    seen: list[int] = []
    original = Table.all_items

    def counting(self):  # type: ignore[no-untyped-def]
        items = original(self)
        # Only this query's reads: the session's other executions query the same table meanwhile, on
        # moto server threads, so neither the thread nor the table tells them apart; the partition does.
        if any(item.hash_key.value == "USER#query-smoke" for item in items):
            seen.append(len(items))
        return items

    Table.all_items = counting
    try:
        assert list(ledger.keys("query-smoke")) == ["AKIAQUERYSMOKE000001"]
    finally:
        Table.all_items = original
    assert seen == [1], "the query looked at its one-item partition, not the whole table"



def test_rest_get_requests_pass_signature_checks(runtime: LocalRuntime) -> None:
    # A REST GET: moto 5.2.5 alone answers SignatureDoesNotMatch with authentication on.
    name = runtime.function_name("plan")
    assert runtime.client("lambda").get_function_configuration(FunctionName=name)["FunctionName"] == name


def test_a_definition_is_parsed_once_and_each_execution_keeps_its_own_state(
        runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    parses: list[str] = []
    original = AmazonStateLanguageParser.parse
    monkeypatch.setattr(AmazonStateLanguageParser, "parse",
                        staticmethod(lambda definition: parses.append(definition) or original(definition)))
    definition = {"StartAt": "Echo", "States": {"Echo": {
        "Type": "Pass", "Parameters": {"got.$": "$.n", "smoke": "parse-once"}, "End": True}}}
    sfn = runtime.client("stepfunctions")
    role = f"arn:aws:iam::123456789012:role/{runtime.function_name('x')}"
    arn = sfn.create_state_machine(name="smoke-parse-once", definition=json.dumps(definition),
                                   roleArn=role)["stateMachineArn"]
    outputs, parsed_before = [], []
    for n in (1, 2):
        parsed_before.append(len(parses))
        execution = sfn.start_execution(stateMachineArn=arn, name=f"run-{n}", input=json.dumps({"n": n}))
        result = runtime.wait(execution["executionArn"])
        assert result["status"] == "SUCCEEDED"
        outputs.append(json.loads(result["output"])["got"])
    assert outputs == [1, 2], "each execution evaluated its own input"
    assert parsed_before[1] > parsed_before[0], "the first execution parsed the definition"
    assert len(parses) == parsed_before[1], "the second execution reused the first one's parse"


def test_moto_finds_backends_without_listing_its_package_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import backends

    def no_listing(path: str) -> list[str]:
        raise AssertionError("listed the moto package again")

    monkeypatch.setattr("os.listdir", no_listing)
    assert {"iam", "stepfunctions", "dynamodb"} <= set(backends.list_of_moto_modules())


def test_requests_are_authorized_against_their_resource_arn(runtime: LocalRuntime) -> None:
    """local/iam_resources.py: the ARN a request touches, matched with IAM's wildcards (tests/
    test_stage_isolation.py covers every function and resource kind)."""
    from local.iam_resources import matches

    pattern = "arn:aws:secretsmanager:*:*:secret:ci-key-rotator/local/token-??????"
    assert matches(pattern, "arn:aws:secretsmanager:us-east-1:123456789012:secret:ci-key-rotator/local/token-AbCdEf")
    assert not matches(pattern, "arn:aws:secretsmanager:us-east-1:123456789012:secret:ci-key-rotator/local/token-AbC")
    assert not matches("arn:aws:dynamodb:*:*:table/a.b", "arn:aws:dynamodb:us-east-1:1:table/aXb"), "a dot is a dot"
    scheduler = runtime.identity_of("scheduler")
    import boto3

    ddb = boto3.session.Session(aws_access_key_id=scheduler.access_key_id, region_name="us-east-1",
                                aws_secret_access_key=scheduler.secret_access_key,
                                aws_session_token=scheduler.session_token).client(
        "dynamodb", endpoint_url=runtime.endpoint)
    key = {"pk": {"S": "x"}, "sk": {"S": "x"}}
    ddb.get_item(TableName=runtime.names.table, Key=key)  # its own table
    with pytest.raises(ClientError) as caught:
        ddb.get_item(TableName="ci-key-rotator-elsewhere", Key=key)
    assert "AccessDenied" in str(caught.value)


def test_a_stop_that_lands_between_two_wait_steps_still_ends_the_wait() -> None:
    """StopExecution only pulses the execution's event; a stopped execution whose Wait thread missed the
    pulse (it was between two steps on a loaded machine) must not sleep out the rest of its Wait."""
    import threading
    import time

    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    from local import moto_patches, sim_clock

    class StoppedEnv:
        program_state_event = threading.Event()  # the pulse already happened: never set again

        @staticmethod
        def is_running() -> bool:
            return False

    moto_patches.install()
    saved = moto_patches._state["time_scale"]
    moto_patches.set_time_scale(1.0)  # a minute-long Wait slept in real time unless the stop is seen
    clock = sim_clock.now()
    try:
        started = time.monotonic()
        finished = threading.Event()
        waiter = threading.Thread(target=lambda: (WaitFunction._wait_interval(None, StoppedEnv(), 60),
                                                  finished.set()), daemon=True)
        waiter.start()
        assert finished.wait(5), "the stopped execution slept on in its Wait"
        assert time.monotonic() - started < 5
        assert sim_clock.now() - clock < 5, "the rest of a stopped execution's Wait passed in the simulated world"
    finally:
        moto_patches.set_time_scale(saved)


def test_stop_execution_ends_a_retry_backoff_at_once(runtime: LocalRuntime) -> None:
    """On AWS StopExecution ends an execution whatever it waits on; moto slept a Retry's interval out first
    (local/moto_patches.py ``_patch_retry_sleep``), so an execution stopped while a rate-limited push backed off
    stayed RUNNING for up to MaxDelaySeconds."""
    import threading
    import time

    from local import moto_patches

    failed = threading.Event()

    def boom(event: Any, context: Any) -> Any:
        failed.set()
        raise RuntimeError("always")

    arn = runtime.add_function("retry_boom", boom)
    definition = {"StartAt": "T", "States": {"T": {
        "Type": "Task", "Resource": arn, "End": True,
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 60, "MaxAttempts": 3}]}}}
    sfn = runtime.client("stepfunctions")
    role = f"arn:aws:iam::123456789012:role/{runtime.function_name('x')}"
    machine = sfn.create_state_machine(name="smoke-retry-stop", definition=json.dumps(definition),
                                       roleArn=role)["stateMachineArn"]
    saved = moto_patches._state["time_scale"]
    moto_patches.set_time_scale(1.0)  # the interval is slept in real time: a minute unless the stop ends it
    try:
        execution = sfn.start_execution(stateMachineArn=machine, name="stopped", input="{}")["executionArn"]
        assert failed.wait(30), "the task never ran"
        time.sleep(0.3)  # now backing off
        sfn.stop_execution(executionArn=execution, cause="the operator stopped it")
        assert runtime.wait(execution, 10)["status"] == "ABORTED"
    finally:
        moto_patches.set_time_scale(saved)


def test_a_second_embedded_aws_in_one_process_is_refused_before_it_touches_anything(runtime: LocalRuntime) -> None:
    """moto's backends are process-global: a second runtime would meet the first one's IAM and fail half-way
    (make bench did, on its second module); it is refused up front, and the running one is untouched."""
    endpoint = runtime.endpoint
    with pytest.raises(RuntimeError, match="already started in this process"):
        LocalRuntime().start()
    assert runtime.endpoint == endpoint
    assert runtime.client("sts").get_caller_identity()["Arn"].endswith(":user/service/operator")
