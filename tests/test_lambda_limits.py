"""Lambda as Lambda: the configured timeout and memory, Sandbox.Timedout, the 6 MB synchronous payload
limit, and Step Functions' 256 KiB task result (local/lambda_limits.py; values in local/strict.py).

Each limit is shown twice: enforced with AWS's value, and gone when its Strictness field is switched off,
so a test fails if the enforcement is removed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local import lambda_limits, strict
from local.lambda_limits import FunctionConfig, function_config
from local.runtime import ACCOUNT, LocalRuntime

MiB = 1024 * 1024


def invoke(runtime: LocalRuntime, name: str, payload: bytes = b"{}") -> tuple[dict[str, Any], Any]:
    response = runtime.client("lambda").invoke(FunctionName=runtime.function_name(name), Payload=payload)
    return response, json.loads(response["Payload"].read())


def run_task(runtime: LocalRuntime, function: str) -> dict[str, Any]:
    """A one-Task state machine calling ``function`` (no Retry, no Catch); returns how its execution ended."""
    sfn = runtime.client("stepfunctions")
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{runtime.function_name(function)}"
    machine = sfn.create_state_machine(
        name=f"limits-{function}-{uuid.uuid4().hex[:6]}", roleArn=f"arn:aws:iam::{ACCOUNT}:role/ci-key-rotator-local",
        definition=json.dumps({"StartAt": "Task", "States": {"Task": {"Type": "Task", "Resource": arn, "End": True}}}),
    )["stateMachineArn"]
    # Named: moto lists an unnamed execution without its generated name.
    execution = sfn.start_execution(stateMachineArn=machine, name=uuid.uuid4().hex, input="{}")["executionArn"]
    result = runtime.wait(execution, timeout=30)
    failed = [e for e in runtime.history(execution) if e["type"] == "ExecutionFailed"]
    result["failure"] = failed[0]["executionFailedEventDetails"] if failed else None
    return result


# -- timeout and memory ---------------------------------------------------------------------------------


def test_each_function_gets_its_configured_timeout_and_memory(tmp_path: Path) -> None:
    assert function_config("plan", "local") == FunctionConfig(120, 256), ".chalice/config.json's top level"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lambda_timeout": 120, "lambda_memory_size": 256, "stages": {"prod": {
        "lambda_timeout": 300, "lambda_functions": {"audit": {"lambda_memory_size": 1024}}}}}))
    assert function_config("audit", "prod", config) == FunctionConfig(300, 1024), "function over stage over top"
    assert function_config("plan", "prod", config) == FunctionConfig(300, 256)
    assert function_config("plan", "dev", config) == FunctionConfig(120, 256)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert function_config("plan", "dev", empty) == FunctionConfig(60, 128), "Chalice's defaults"


def test_the_context_says_so_and_its_clock_runs_down(runtime: LocalRuntime) -> None:
    def probe(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Each reading bracketed by the real clock: the bounds below come from what was measured, not from
        # fixed lengths, since a loaded machine can take seconds to start a function or wake it from a sleep.
        first_from, first, first_until = time.monotonic(), context.get_remaining_time_in_millis(), time.monotonic()
        time.sleep(0.3)
        then_from, then, then_until = time.monotonic(), context.get_remaining_time_in_millis(), time.monotonic()
        return {"memory": context.memory_limit_in_mb, "first": first, "then": then,
                "first_until": first_until, "least_ms": (then_from - first_until) * 1000,
                "most_ms": (then_until - first_from) * 1000}

    runtime.add_function("context_probe", probe, timeout=5, memory=512)
    runtime.add_function("context_default", probe)
    for function, memory, timeout_ms in (("context_probe", 512, 5000), ("context_default", 256, 120_000)):
        called = time.monotonic()
        _, seen = invoke(runtime, function)
        assert seen["memory"] == memory
        assert timeout_ms - (seen["first_until"] - called) * 1000 - 1 <= seen["first"] <= timeout_ms, (
            "counted down from the invocation's start", function, seen)
        ran_down = seen["first"] - seen["then"]
        assert ran_down >= 250, "a real countdown, not a constant"
        assert seen["least_ms"] - 1 <= ran_down <= seen["most_ms"] + 1, ("at the real clock's pace", seen)


def test_an_invocation_past_its_timeout_is_stopped_and_reported_as_sandbox_timedout(runtime: LocalRuntime) -> None:
    finished, go_on = threading.Event(), threading.Event()

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Its work outlasts the timeout until the test lets it go on (not a fixed sleep: on a loaded machine
        # the caller may hear later than any fixed length after the timeout).
        go_on.wait(60)
        finished.set()  # the work after the timeout, which a stopped sandbox never does
        return {"done": True}

    runtime.add_function("slow_probe", slow, timeout=1)
    started = time.monotonic()
    response, payload = invoke(runtime, "slow_probe")
    assert not go_on.is_set() and not finished.is_set(), "the caller hears at the timeout, not when the function ends"
    assert time.monotonic() - started >= 1, "not before the timeout"
    assert response.get("FunctionError") == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert "stackTrace" not in payload, "Lambda's report, not the function's exception"
    go_on.set()
    assert not finished.wait(2.5), "the timed-out invocation did no more work"

    with strict.override(lambda_timeouts=False):
        response, payload = invoke(runtime, "slow_probe")
    assert "FunctionError" not in response and payload == {"done": True}


def test_a_hanging_task_fails_its_state_with_sandbox_timedout(runtime: LocalRuntime) -> None:
    runtime.add_function("hanging_task", lambda event, context: {"ok": True}, timeout=1)
    # A hang counts against the timeout; far longer than the timeout, so that a loaded machine waking the
    # caller late cannot find the task finished by then.
    runtime.inject_fault("hanging_task", lambda event: time.sleep(30))
    result = run_task(runtime, "hanging_task")
    assert result["status"] == "FAILED" and result["failure"]["error"] == "Sandbox.Timedout"
    assert run_task(runtime, "hanging_task")["status"] == "SUCCEEDED", "the next invocation is a fresh one"


# -- payloads ---------------------------------------------------------------------------------------------


def test_a_synchronous_request_over_6_mb_is_refused_before_the_function_runs(runtime: LocalRuntime) -> None:
    assert strict.Strictness().lambda_sync_payload_bytes == 6 * MiB
    calls: list[int] = []
    runtime.add_function("big_request", lambda event, context: calls.append(len(event["blob"])) or {"ok": True})
    too_big = json.dumps({"blob": "x" * (6 * MiB)}).encode()
    with pytest.raises(ClientError) as refused:
        invoke(runtime, "big_request", too_big)
    assert refused.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert calls == []
    _, payload = invoke(runtime, "big_request", json.dumps({"blob": "x" * MiB}).encode())
    assert payload == {"ok": True} and calls == [MiB]


def test_a_synchronous_response_over_the_limit_fails_the_invocation(runtime: LocalRuntime) -> None:
    runtime.add_function("big_response", lambda event, context: {"blob": "x" * event["size"]})
    with strict.override(lambda_sync_payload_bytes=4096):
        response, payload = invoke(runtime, "big_response", b'{"size": 5000}')
        assert response.get("FunctionError") == "Unhandled"
        assert payload["errorType"] == "Function.ResponseSizeTooLarge"
        assert "(4096 bytes)" in payload["errorMessage"]
        response, payload = invoke(runtime, "big_response", b'{"size": 3000}')
        assert "FunctionError" not in response
    with strict.override(lambda_sync_payload_bytes=0):
        response, payload = invoke(runtime, "big_response", b'{"size": 5000}')
    assert "FunctionError" not in response and len(payload["blob"]) == 5000


def test_a_task_result_over_256_kib_fails_the_state_with_data_limit_exceeded(runtime: LocalRuntime) -> None:
    assert strict.Strictness().sfn_state_payload_bytes == 256 * 1024
    runtime.add_function("big_result", lambda event, context: {"blob": "x" * (300 * 1024)})
    result = run_task(runtime, "big_result")
    assert result["status"] == "FAILED" and result["failure"]["error"] == "States.DataLimitExceeded"
    with strict.override(sfn_state_payload_bytes=MiB):
        assert run_task(runtime, "big_result")["status"] == "SUCCEEDED"
    runtime.add_function("small_result", lambda event, context: {"blob": "x" * (200 * 1024)})
    assert run_task(runtime, "small_result")["status"] == "SUCCEEDED"


def test_lambda_reported_errors_name_no_function_internals() -> None:
    context = lambda_limits.LambdaContext("f", FunctionConfig(3, 128))
    timed_out = lambda_limits.SandboxTimedOut(context)
    assert timed_out.error_type == "Sandbox.Timedout"
    assert str(timed_out) == f"RequestId: {context.aws_request_id} Error: Task timed out after 3.00 seconds"
