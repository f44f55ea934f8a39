"""Lambda's limits for the embedded runtime's in-process invocations.

What AWS does and this module reproduces (values and sources in local/strict.py):

- each function runs with the timeout and memory of its configuration (``.chalice/config.json``:
  ``lambda_timeout`` / ``lambda_memory_size``, a stage's per-function entry over the stage over the top
  level, Chalice's defaults 60 s / 128 MB otherwise); the context object says so and
  ``get_remaining_time_in_millis()`` counts down;
- an invocation still running at its timeout is stopped and reported as ``Sandbox.Timedout``,
  "Task timed out after N.00 seconds" (https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html);
- a synchronous invocation (``Invoke`` RequestResponse: the state machine's tasks) takes and returns at most
  6 MB (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): a bigger request is
  refused with RequestEntityTooLargeException (HTTP 413), a bigger response fails the invocation with
  ``Function.ResponseSizeTooLarge``;
- a Step Functions task result over 256 KiB fails the state with ``States.DataLimitExceeded``
  (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html): moto has this check with a
  fixed 256 KiB; ``install_state_payload_quota`` makes it read the Strictness value.

Asynchronous invocations (EventBridge, schedules) and their 256 KB limit are local/async_invoke.py's.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from local import strict

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".chalice" / "config.json"
#: Chalice's own defaults when config.json sets nothing (chalice/config.py).
DEFAULT_TIMEOUT_SECONDS = 60
DEFAULT_MEMORY_MB = 128

T = TypeVar("T")


@dataclass(frozen=True)
class FunctionConfig:
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    memory_mb: int = DEFAULT_MEMORY_MB


@functools.cache
def _chalice_config(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def function_config(function: str, stage: str, path: Path = CONFIG) -> FunctionConfig:
    """The timeout and memory Chalice deploys ``function`` (its Chalice name) with in ``stage``."""
    config = _chalice_config(path)
    stage_config = (config.get("stages") or {}).get(stage) or {}
    function_entry = (stage_config.get("lambda_functions") or {}).get(function) or {}

    def setting(key: str, default: int) -> int:
        for level in (function_entry, stage_config, config):
            if key in level:
                return int(level[key])
        return default

    return FunctionConfig(setting("lambda_timeout", DEFAULT_TIMEOUT_SECONDS),
                          setting("lambda_memory_size", DEFAULT_MEMORY_MB))


class LambdaContext:
    """The context object of one invocation: its function's configuration and a clock running down."""

    def __init__(self, function_name: str, config: FunctionConfig | None = None, *, region: str = "us-east-1",
                 account: str = "123456789012") -> None:
        config = config or FunctionConfig()
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = config.memory_mb
        self.timeout_seconds = config.timeout_seconds
        self.aws_request_id = os.urandom(16).hex()
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + config.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LambdaServiceError(Exception):
    """A failure Lambda reports for the invocation (not the function's own exception)."""

    error_type = "Lambda.ServiceException"


class SandboxTimedOut(LambdaServiceError):
    error_type = "Sandbox.Timedout"

    def __init__(self, context: LambdaContext) -> None:
        super().__init__(f"RequestId: {context.aws_request_id} Error: Task timed out after "
                         f"{context.timeout_seconds:.2f} seconds")


class ResponseSizeTooLarge(LambdaServiceError):
    error_type = "Function.ResponseSizeTooLarge"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Response payload size exceeded maximum allowed payload size ({limit} bytes).")


class RequestTooLarge(LambdaServiceError):
    """Refused before the function runs: ``Invoke`` answers HTTP 413 RequestEntityTooLargeException."""

    error_type = "RequestEntityTooLargeException"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} byte payload is too large for the RequestResponse invocation type "
                         f"(limit {limit} bytes)")


def check_sync_request(payload: bytes) -> None:
    limit = strict.current().lambda_sync_payload_bytes
    if limit and len(payload) > limit:
        raise RequestTooLarge(len(payload), limit)


def check_sync_response(payload: bytes) -> None:
    limit = strict.current().lambda_sync_payload_bytes
    if limit and len(payload) > limit:
        raise ResponseSizeTooLarge(limit)


class _SandboxStopped(BaseException):
    """Raised inside the thread of an invocation that timed out: Lambda stops the sandbox mid-work.
    A BaseException, so the function's ``except Exception`` cannot swallow it."""


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> None:
    # CPython's PyThreadState_SetAsyncExc: delivered at the thread's next bytecode boundary (a call blocked
    # in C, a socket read, finishes first); None clears a pending one.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type) if exc_type else None)


def run(call: Callable[[], T], context: LambdaContext) -> T:
    """Run one invocation with its timeout enforced (``Strictness.lambda_timeouts``).

    The function runs on a thread of its own, as in its own sandbox: when the time is up the caller gets
    ``SandboxTimedOut`` at once and the function's thread is stopped, so it does no more work.
    """
    if not strict.current().lambda_timeouts:
        return call()
    outcome: dict[str, Any] = {}
    lock = threading.Lock()
    state = {"finished": False, "stopped": False}

    def sandbox() -> None:
        try:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as the invocation's outcome
                outcome["error"] = exc
            finally:
                with lock:
                    state["finished"] = True
                    if state["stopped"]:
                        _raise_in(threading.get_ident(), None)
        except _SandboxStopped:
            pass  # the invocation was reported as timed out already

    thread = threading.Thread(target=sandbox, name=f"lambda-{context.function_name}", daemon=True)
    thread.start()
    thread.join(context.timeout_seconds)
    with lock:
        if not state["finished"]:
            state["stopped"] = True
            if thread.ident is not None:
                _raise_in(thread.ident, _SandboxStopped)
            raise SandboxTimedOut(context)
    thread.join()
    if "error" in outcome:
        error = outcome["error"]
        raise error.with_traceback(error.__traceback__)
    return outcome["value"]  # type: ignore[no-any-return]


def install_state_payload_quota() -> None:
    """moto's Step Functions checks a state's input and a task's result against a fixed 256 KiB; make it
    the Strictness value (so a test can show the check is what fails an execution)."""
    from moto.stepfunctions.parser import quotas
    from moto.stepfunctions.parser.asl.component.state import state
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_lambda
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    def is_within_size_quota(value: Any) -> bool:
        limit = strict.current().sfn_state_payload_bytes
        if not limit:
            return True
        text = value if isinstance(value, str) else to_json_str(value)
        return len(text.encode("utf-8")) <= limit

    # Each module imported the function by name.
    for module in (quotas, state, state_task_lambda, state_task_service):
        module.is_within_size_quota = is_within_size_quota  # type: ignore[attr-defined]
