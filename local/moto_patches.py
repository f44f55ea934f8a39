"""The small, named changes to moto 5.2.5 that let the real state machine run locally.

moto is pinned exactly in requirements-dev.txt because these touch its internals; each has a smoke
test in tests/test_moto_patches.py so an upgrade shows at once which one broke.
See docs/local-aws.md for why each exists.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from local import sim_clock

Dispatch = Callable[[str, Any], Any]

_state: dict[str, Any] = {"time_scale": 1.0, "dispatch": None, "executor": None, "installed": False}


def set_time_scale(scale: float) -> None:
    """Wait states and Retry intervals sleep ``scale`` × their real duration (0 = not at all)."""
    _state["time_scale"] = scale


def set_dispatch(dispatch: Dispatch) -> None:
    """``dispatch(function_name, event) -> result``; an exception becomes a Lambda function error."""
    _state["dispatch"] = dispatch


def set_executor_credentials(access_key_id: str, secret_access_key: str, endpoint_url: str) -> None:
    _state["executor"] = (access_key_id, secret_access_key, endpoint_url)


def install() -> None:
    if _state["installed"]:
        return
    _patch_lambda_invoke()
    _patch_wait_state()
    _patch_retry_sleep()
    _patch_executor_clients()
    _patch_inactive_keys()
    _patch_map_error_names()
    _patch_stop_wakes_callbacks()
    _patch_send_task_failure_cause()
    _patch_dynamodb_query_by_partition()
    _patch_get_request_signatures()
    _patch_parse_once_per_definition()
    _patch_backend_lookup()
    _patch_oidc_provider_client_ids()
    # Authorize each request against the ARN it really touches, with resource and key policies.
    from local import iam_resources

    iam_resources.install()
    from local import service_limits

    service_limits.install()
    # Sessions from GetSessionToken act as their user, outlive its key, and honour aws:TokenIssueTime.
    from local import sts_sessions

    sts_sessions.install()
    # AssumeRoleWithWebIdentity checks the ID token against its issuer's keys and the role's trust conditions.
    from local import sts_web_identity

    sts_web_identity.install()
    # CloudTrail's event history answers from what local/cloudtrail.py recorded (nothing until audit is on).
    from local import cloudtrail

    cloudtrail.serve_lookup_events()
    # A Fail state is logged at ERROR with a huge repr of the whole program; it is an outcome, not a fault.
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
    _state["installed"] = True


def _patch_oidc_provider_client_ids() -> None:
    """moto 5 has no AddClientIDToOpenIDConnectProvider: graduation adds a target's audience to an existing
    IAM OIDC provider with it. As IAM does, adding a client id the provider has is a no-op, and an unknown
    provider is NoSuchEntity (https://docs.aws.amazon.com/IAM/latest/APIReference/
    API_AddClientIDToOpenIDConnectProvider.html)."""
    from moto.core.responses import EmptyResult
    from moto.iam.models import IAMBackend
    from moto.iam.responses import IamResponse

    def add_client_id(self: Any, arn: str, client_id: str) -> None:
        provider = self.get_open_id_connect_provider(arn)  # NoSuchEntity when there is none
        if client_id not in provider.client_id_list:
            provider.client_id_list.append(client_id)

    def respond(self: Any) -> Any:
        self.backend.add_client_id_to_open_id_connect_provider(
            self._get_param("OpenIDConnectProviderArn"), self._get_param("ClientID"))
        return EmptyResult()

    IAMBackend.add_client_id_to_open_id_connect_provider = add_client_id  # type: ignore[attr-defined]  # moto lacks the operation
    IamResponse.add_client_id_to_open_id_connect_provider = respond  # type: ignore[attr-defined]  # moto lacks the operation


def _patch_lambda_invoke() -> None:
    """Run the real Chalice handler in-process instead of moto's canned Lambda answer, within Lambda's
    payload limits (local/lambda_limits.py; the timeout is enforced by the dispatcher)."""
    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda_simple.models import LambdaSimpleBackend

    from local import lambda_limits

    class RequestEntityTooLarge(LambdaClientError):
        code = 413

    def invoke(self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any,
               response_headers: Any) -> bytes:
        function = self.get_function(function_name, qualifier)
        dispatch = _state["dispatch"]
        if dispatch is None:
            raise RuntimeError("no Lambda dispatcher installed")
        raw = body.encode() if isinstance(body, str) else (body or b"")
        if headers.get("X-Amz-Invocation-Type", "RequestResponse") == "RequestResponse":
            try:
                lambda_limits.check_sync_request(raw)
            except lambda_limits.RequestTooLarge as exc:
                raise RequestEntityTooLarge(exc.error_type, str(exc)) from None
        event = json.loads(raw) if raw else {}
        try:
            result = dispatch(function.function_name, event)
            payload = json.dumps(result).encode()
            lambda_limits.check_sync_response(payload)
        except lambda_limits.LambdaServiceError as exc:
            # Reported by Lambda itself: no stack trace of the function's.
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorMessage": str(exc), "errorType": exc.error_type}).encode()
        except Exception as exc:  # noqa: BLE001 - AWS turns any unhandled exception into this payload
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {
                    "errorMessage": str(exc),
                    "errorType": getattr(exc, "error_type", type(exc).__name__),
                    "stackTrace": traceback.format_tb(exc.__traceback__)[-3:],
                }
            ).encode()
        return payload

    LambdaSimpleBackend.invoke = invoke
    lambda_limits.install_state_payload_quota()


def _patch_wait_state() -> None:
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
        if isinstance(self, Timestamp):
            # An absolute time (the scheduler's start slot): executions waiting at once share one clock,
            # so each sleeps until it, instead of adding its wait to the clock (sim_clock.sleep_until).
            sim_clock.sleep_until(sim_clock.now() + wait_seconds, stopped=lambda: not env.is_running())
            return
        # Slept in short steps at the scale of the moment, so a test that sets the scale back to 0 ends a long
        # Wait at once (rather than having to outlast a window it made long enough for a loaded machine).
        _sleep_scaled(env, wait_seconds)

    WaitFunction._wait_interval = _wait_interval
    _patch_timestamp_in_utc(Timestamp)
    _count_running_executions()


def _patch_timestamp_in_utc(timestamp_class: Any) -> None:
    """A Wait's Timestamp is UTC ("...Z"); moto subtracts the machine's local naive time from it, which
    is hours off wherever the machine's time zone is not UTC."""
    from datetime import UTC, datetime

    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEventException

    def _get_wait_seconds(self: Any, env: Any) -> float:
        self.string.eval(env=env)
        text = env.stack.pop()
        at = self._from_timestamp_string(timestamp=text)
        if at is None:
            raise FailureEventException(self._create_failure_event(env, text))
        return float((at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds())

    timestamp_class._get_wait_seconds = _get_wait_seconds


def _count_running_executions() -> None:
    """sim_clock jumps to the next start slot only when every running execution is asleep in one: count
    them from the moment StartExecution hands one to its thread until its program ends."""
    import threading

    from moto.stepfunctions.parser.backend import execution_worker

    worker = execution_worker.ExecutionWorker
    logic = worker._execution_logic

    def start(self: Any) -> None:
        sim_clock.execution_started()

        def run() -> None:
            try:
                logic(self)
            finally:
                sim_clock.execution_ended()

        thread = threading.Thread(target=run, daemon=True)
        execution_worker.TMP_THREADS.append(thread)
        thread.start()

    worker.start = start


def _sleep_scaled(env: Any, seconds: float) -> None:
    """Sleep a Wait's or a Retry interval's ``seconds`` at the time scale of the moment, in short steps, so a
    test that sets the scale back to 0 ends a long wait at once and StopExecution ends it as on AWS.

    StopExecution pulses program_state_event (set, then clear at once): a loaded machine can run that pulse
    while this thread is between two steps, so the state is read each step too, or the stopped execution
    would sleep out the rest of its wait while still RUNNING."""
    left, slept = float(seconds), 0.0
    while left > 0 and (env is None or env.is_running()) and (scale := _state["time_scale"]) > 0:
        began = time.monotonic()
        step = min(left * scale, 0.1)
        if env is not None and env.program_state_event.wait(step):
            break  # the execution was stopped
        if env is None:
            time.sleep(step)
        elapsed = time.monotonic() - began
        slept += elapsed
        left -= elapsed / scale
    # What was not slept still passed in the simulated world (IAM consistency windows run on it); the rest
    # of a stopped execution's wait never happens.
    if env is None or env.is_running():
        sim_clock.advance(max(0.0, seconds - slept))


def _patch_retry_sleep() -> None:
    """A Retry's interval is slept like a Wait (``_sleep_scaled``): moto's ``time.sleep`` in the retrier
    ignored StopExecution, so an execution stopped while backing off stayed RUNNING for the interval."""
    import threading

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    retrying = threading.local()
    original = retrier_decl.RetrierDecl._eval_body

    def _eval_body(self: Any, env: Any) -> None:
        retrying.env = env
        try:
            original(self, env)
        finally:
            retrying.env = None

    def sleep(seconds: float) -> None:
        _sleep_scaled(getattr(retrying, "env", None), seconds)

    retrier_decl.RetrierDecl._eval_body = _eval_body  # type: ignore[method-assign]
    retrier_decl.time = SimpleNamespace(sleep=sleep)  # type: ignore[attr-defined]


def _patch_executor_clients() -> None:
    """Sign the executor's own calls with a real moto IAM user, so IAM authentication can stay on."""
    import boto3
    from botocore.config import Config
    from moto.stepfunctions.parser.asl.utils import boto_client as module

    original = module.boto_client_for
    clients: dict[tuple[str, str], Any] = {}

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        executor = _state["executor"]
        if executor is None:
            return original(region, service, state_credentials)
        key = (region, service)
        if key not in clients:  # moto builds a client per call (~11 ms); one per service is enough
            access_key_id, secret_access_key, endpoint_url = executor
            clients[key] = boto3.session.Session().client(
                service,
                region_name=region,
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(parameter_validation=False, retries={"total_max_attempts": 1},
                              read_timeout=900),
            )
        return clients[key]

    for name, loaded in list(sys.modules.items()):
        if name.startswith("moto.stepfunctions.parser") and getattr(loaded, "boto_client_for", None) is original:
            loaded.boto_client_for = boto_client_for  # type: ignore[attr-defined]
    module.boto_client_for = boto_client_for


def _patch_map_error_names() -> None:
    """A Map iteration that fails with ``States.Timeout`` must fail the Map with ``States.Timeout``.

    moto re-wraps the iteration's error as a custom error name, which refuses the ``States.`` prefix
    and turns every such failure into ``States.Runtime``.
    """
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import iteration_worker

    def error_name(error_name: str | None) -> Any:
        if error_name is not None and error_name.startswith("States."):
            try:
                return StatesErrorName.from_name(error_name)
            except ValueError:
                pass
        return CustomErrorName(error_name=error_name)

    iteration_worker.CustomErrorName = error_name  # type: ignore[attr-defined]


def _patch_stop_wakes_callbacks() -> None:
    """``StopExecution`` must end an execution that waits on a task token, as on AWS; moto let the
    wait run on to its timeout and then continued into the Catch path."""
    from moto.stepfunctions.parser.asl.eval.environment import Environment

    original = Environment.set_stop

    def set_stop(self: Any, stop_date: Any, cause: str | None, error: str | None) -> None:
        original(self, stop_date, cause, error)
        for endpoint in list(self.callback_pool_manager._pool.values()):
            endpoint.interrupt_all()

    Environment.set_stop = set_stop


def _patch_send_task_failure_cause() -> None:
    """``SendTaskFailure``'s ``cause`` must reach the waiting task's Catch as ``Cause``, as on AWS
    (https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskFailure.html); moto's
    response handler dropped it, so every alert for a failed verification said why with an empty string."""
    from moto.core.responses import EmptyResult
    from moto.stepfunctions.responses import StepFunctionResponse

    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause"))
        return EmptyResult()

    StepFunctionResponse.send_task_failure = send_task_failure


def _patch_dynamodb_query_by_partition() -> None:
    """A DynamoDB Query reads one partition; moto read the whole table for each one (O(table) per call,
    which made long test sessions and fleets crawl) and could trip over a concurrent write while it did."""
    import threading

    from moto.dynamodb.models.table import Table

    local = threading.local()
    original_all_items, original_query = Table.all_items, Table.query

    def all_items(self: Any) -> Any:
        override = getattr(local, "partition", None)
        if override is not None and override[0] is self:
            return override[1]
        return original_all_items(self)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        if index_name or hash_key is None or not self.range_key_attr:
            return original_query(self, hash_key, *args, **kwargs)
        # list() of a dict view runs in C under the GIL: a consistent copy even while others write.
        local.partition = (self, list(self.items.get(hash_key, {}).values()))
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            local.partition = None

    Table.all_items = all_items
    Table.query = query


def _patch_inactive_keys() -> None:
    """moto accepts Inactive keys and makes every key change visible at once; AWS does neither: keys
    propagate and revoke with a delay, and last-used data arrives late and to the minute."""
    from local import iam_consistency

    iam_consistency.install()


def _patch_get_request_signatures() -> None:
    """With authentication on, moto re-signs a REST GET/HEAD/DELETE with its parsed parameters as the body,
    so every such call (S3 ListObjects from a verification build, lambda:GetFunctionConfiguration from
    ``deploy apply``) fails SignatureDoesNotMatch. AWS signs what was sent: the raw body."""
    from botocore.awsrequest import AWSRequest
    from moto.iam import access_control

    def _create_aws_request(self: Any) -> AWSRequest:
        signed = self._get_string_between("SignedHeaders=", ",", self._headers["Authorization"]).split(";")
        headers = self._create_headers_for_aws_request(signed, self._headers)
        body = self._body if self._method in ("GET", "HEAD", "DELETE") else (self._body or self._data)
        request = AWSRequest(method=self._method, url=self._path, data=body, headers=headers)
        request.context["timestamp"] = headers["X-Amz-Date"]
        return request

    access_control.IAMRequestBase._create_aws_request = _create_aws_request


def _patch_parse_once_per_definition() -> None:
    """moto parses the ASL again for every execution (~0.1 s for ours, ANTLR in pure Python). The parsed
    program is evaluated against a per-execution Environment and never changed (Map iterations already
    share one), so one parse per definition serves every execution."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    @functools.lru_cache(maxsize=64)
    def parsed(definition: str) -> Any:
        return AmazonStateLanguageParser.parse(definition)[0]

    def _get_evaluation_entrypoint(self: Any) -> Any:
        return parsed(self._evaluation_details.state_machine_details.definition)

    ExecutionWorker._get_evaluation_entrypoint = _get_evaluation_entrypoint


def _patch_backend_lookup() -> None:
    """moto's server lists its own package directory (a stat per service, ~1 ms) on every request to
    find the backend; the list never changes while it runs."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = functools.partial(iter, modules)  # type: ignore[assignment]
