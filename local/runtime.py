"""The embedded AWS: a moto server on 127.0.0.1 running the real state machine with in-process Lambdas.

One ``LocalRuntime`` per process (moto's backends are process-global). It deploys what a real
deployment deploys: the Lambda functions under their Chalice names, the state machine rendered from
``statemachine/rotation.asl.json`` with the same substitutions, the ledger table and the SNS topic; then
turns moto's IAM authentication on, so every call is signed by a real (moto) IAM identity and a wrong or
Inactive key is refused.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import socket
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from chalicelib import aws
from chalicelib import deps as deps_module
from chalicelib.observability import SERVICE
from deploy import infra, policies
from deploy.naming import StageNames
from deploy.resources import (
    break_glass_policy,
    escrow_principal_patterns,
    escrow_readers,
    escrow_writers,
    key_policy,
    key_users,
)
from local import iam_consistency, lambda_limits, moto_patches, strict, xray
from local.async_invoke import Destinations
from local.strict import Strictness

APP_NAME = "ci-key-rotator"
STAGE = "local"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROOT = Path(__file__).resolve().parents[1]

# What the process-wide default identity may do (code running outside a Lambda: tests' direct calls, the
# CLI). Each Lambda signs with a session of its own execution role, whose policy is its
# .chalice/policy-<function>.json.
ROTATOR_ACTIONS = [
    "iam:ListAccessKeys", "iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:DeleteAccessKey",
    "iam:GetAccessKeyLastUsed", "iam:GenerateCredentialReport", "iam:GetCredentialReport", "secretsmanager:*", "dynamodb:*", "sns:Publish",
    "states:SendTaskSuccess", "states:SendTaskFailure", "states:StartExecution", "states:DescribeExecution",
    "states:GetExecutionHistory",  # the operator CLI: rotate --wait follows it, status names the current state
    "ssm:GetParameter",
    "ssm:GetParametersByPath", "sts:GetCallerIdentity",
    "iam:ListGroupsForUser",  # the operator CLI: plan says whether a user's permissions can move to a role
]


#: Set once a LocalRuntime started in this process (moto's backends cannot be started afresh in it).
_started_in_process = [False]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Identity:
    access_key_id: str
    secret_access_key: str
    #: Set for a role session (ASIA key id), as Lambda hands its function and an operator gets from AssumeRole.
    session_token: str | None = None

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(aws_access_key_id=self.access_key_id,
                                     aws_secret_access_key=self.secret_access_key,
                                     aws_session_token=self.session_token, region_name=REGION)


def lambda_context(function: str, function_name: str, config: lambda_limits.FunctionConfig | None = None
                   ) -> lambda_limits.LambdaContext:
    """The context object of one invocation of Chalice function ``function`` (deployed as ``function_name``),
    with the timeout and memory .chalice/config.json gives it."""
    return lambda_limits.LambdaContext(function_name, config or lambda_limits.function_config(function, STAGE),
                                       region=REGION, account=ACCOUNT)


class LocalRuntime:
    def __init__(self, *, time_scale: float = 0.0, poll_interval: float | None = 1.0,
                 log_stream: io.TextIOBase | None = None, strict: Strictness | None = None) -> None:
        self.time_scale = time_scale
        #: The AWS behaviours enforced (local/strict.py): AWS's own values unless a test says otherwise.
        self.strict = strict or Strictness()
        self.poll_interval = poll_interval
        self.log_stream = log_stream or io.StringIO()
        self.invocations: Counter[str] = Counter()
        self._faults: dict[str, list[tuple[bool, Callable[[Any], None]]]] = {}
        self._extra_handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._function_configs: dict[str, lambda_limits.FunctionConfig] = {}
        self._stop = threading.Event()
        self._clients_lock = threading.Lock()
        self._operator_clients: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        #: Chalice function name -> the session of its execution role its calls are signed with.
        self.function_identities: dict[str, aws.Identity] = {}
        #: Chalice function name -> every AWS action its calls made (``service:Operation``), for the
        #: least-privilege tests.
        self.aws_calls: dict[str, set[str]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalRuntime:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        if _started_in_process[0]:
            # moto's backends are process-global: a second runtime would find the first one's IAM, tables and
            # executions (and fail on its first CreateUser). One embedded AWS per process, as in make test.
            raise RuntimeError("an embedded AWS was already started in this process; start each LocalRuntime "
                               "in a process of its own")
        _started_in_process[0] = True
        strict.configure(self.strict)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ.update(
            MOTO_PORT=str(self.port),
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_ACCESS_KEY_ID="bootstrap",
            AWS_SECRET_ACCESS_KEY="bootstrap",
            POWERTOOLS_DEV="false",
        )
        # Every invocation is traced under a facade segment, as with active tracing in Lambda.
        self.traces = xray.install()
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        default_user_config["lambda"] = {"use_docker": False}
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per moto request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        moto_patches.install()
        moto_patches.set_time_scale(self.time_scale)
        moto_patches.set_dispatch(self._dispatch)
        self._capture_logs()
        self._bootstrap()
        # A deployment waits for IAM to propagate the identities it just created before it uses them.
        iam_consistency.settle()
        # From here on every request must be signed by a real moto identity, and keys must be Active.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
        os.environ["AWS_ACCESS_KEY_ID"] = self.rotator.access_key_id
        os.environ["AWS_SECRET_ACCESS_KEY"] = self.rotator.secret_access_key
        deps_module.reset()
        self._start_app_server()
        self._start_audit()
        if self.poll_interval:
            self._spawn(self._poll_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.disable_audit()
        self.bus.stop()
        self.slack.stop()
        if getattr(self, "_app_server", None):
            self._app_server.shutdown()
        self._server.stop()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- bootstrap (auth off) --------------------------------------------------------------------

    def _bootstrap(self) -> None:
        boot = boto3.session.Session(aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                                     region_name=REGION)
        iam = boot.client("iam", endpoint_url=self.endpoint)
        self.rotator = self._service_user(iam, "ci-key-rotator", ROTATOR_ACTIONS)
        # moto checks "lambda:Invoke" where AWS checks "lambda:InvokeFunction"; grant both.
        self.executor = self._service_user(iam, "ci-key-rotator-states", ["lambda:InvokeFunction", "lambda:Invoke"])
        self.operator = self._service_user(iam, "operator", ["*"])
        self._operator_clients.clear()
        self._function_roles(iam)
        moto_patches.set_executor_credentials(self.executor.access_key_id, self.executor.secret_access_key,
                                              self.endpoint)
        role_arn = iam.create_role(
            RoleName="ci-key-rotator-local",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole",
                 "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]}}]}),
        )["Role"]["Arn"]

        lambda_client = boot.client("lambda", endpoint_url=self.endpoint)
        arns = {}
        for handler in infra.task_handlers():
            arns[handler] = lambda_client.create_function(
                FunctionName=self.function_name(handler), Runtime="python3.12", Role=role_arn,
                Handler="app.app", Code={"ZipFile": _empty_zip()}, Timeout=300,
            )["FunctionArn"]

        self.table_name = f"{APP_NAME}-{STAGE}"
        infra.ensure_table(boot.client("dynamodb", endpoint_url=self.endpoint), self.table_name)
        sns = boot.client("sns", endpoint_url=self.endpoint)
        self.topic_arn = sns.create_topic(Name=f"{APP_NAME}-{STAGE}-outcomes")["TopicArn"]
        sqs = boot.client("sqs", endpoint_url=self.endpoint)
        self.alerts_queue = sqs.create_queue(QueueName="alerts-sink")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.alerts_queue,
                                             AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        sfn = boot.client("stepfunctions", endpoint_url=self.endpoint)
        machines = {kind: sfn.create_state_machine(
            name=f"{APP_NAME}-{STAGE}-{kind}", definition=infra.render_definition(arns, path.read_text()),
            roleArn=role_arn)["stateMachineArn"] for kind, path in infra.DEFINITIONS.items()}
        self.state_machine_arn, self.undo_state_machine_arn = machines["rotation"], machines["undo"]
        self.graduate_state_machine_arn = machines["graduate"]
        self.escrow_kms_key_arn = self._escrow_key(iam, boot.client("kms", endpoint_url=self.endpoint))
        os.environ.update(
            ROTATOR_TABLE_NAME=self.table_name,
            ROTATOR_TOPIC_ARN=self.topic_arn,
            ROTATOR_STATE_MACHINE_ARN=self.state_machine_arn,
            ROTATOR_UNDO_STATE_MACHINE_ARN=self.undo_state_machine_arn,
            ROTATOR_ESCROW_PREFIX=self.names.escrow_prefix,
            # The alias, as a real stage's config.json says; the key behind it is customer-managed.
            ROTATOR_ESCROW_KMS_KEY_ID=self.names.kms_alias,
            # Each function's execution role, and the break-glass role, under /service/ (on AWS: their path).
            ROTATOR_ESCROW_PRINCIPALS=",".join(escrow_principal_patterns(STAGE, kind="role", path="/service/")),
        )
        self._bootstrap_session = boot

    def _escrow_key(self, iam: Any, kms: Any) -> str:
        """The escrow's customer-managed key, as ``deploy apply`` makes it (alias per stage), with the same
        key policy: only the escrow's functions and the break-glass identity can use it, only the
        key-admin identity administers it (local/iam_resources.py evaluates it)."""
        operators = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
        self.break_glass = self._service_role(iam, self.names.break_glass_role, operators,
                                              break_glass_policy(STAGE), session_name="break-glass")
        self.key_admin = self._service_role(iam, self.names.key_admin_role, operators, None, session_name="key-admin")
        role = f"arn:aws:iam::{ACCOUNT}:role/service/"
        document = key_policy(
            f"arn:aws:iam::{ACCOUNT}:root", [role + self.function_name(f) for f in escrow_readers()],
            [role + self.function_name(f) for f in escrow_writers()], f"secretsmanager.{REGION}.amazonaws.com",
            ACCOUNT, key_admin=role + self.names.key_admin_role, break_glass=role + self.names.break_glass_role,
            direct_users={f: (role + self.function_name(f), actions) for f, actions in key_users().items()})
        key = kms.create_key(Description=f"CI Key Rotator escrow ({STAGE})", KeyUsage="ENCRYPT_DECRYPT",
                             KeySpec="SYMMETRIC_DEFAULT", Policy=json.dumps(document),
                             BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
        kms.enable_key_rotation(KeyId=key["KeyId"])
        kms.create_alias(AliasName=self.names.kms_alias, TargetKeyId=key["KeyId"])
        return str(key["Arn"])

    def _service_user(self, iam: Any, name: str, actions: list[str], policy: dict[str, Any] | None = None) -> Identity:
        iam.create_user(UserName=name, Path="/service/")
        if policy is None and actions:
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        if policy is not None:
            iam.put_user_policy(UserName=name, PolicyName="local", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Identity(key["AccessKeyId"], key["SecretAccessKey"])

    def _service_role(self, iam: Any, name: str, trusted: dict[str, Any], policy: dict[str, Any] | None,
                      session_name: str) -> Identity:
        """An IAM role under /service/ with ``policy`` attached, and a session of it: what Lambda hands a
        function (its execution role's credentials, session named after the function) or an operator gets
        from AssumeRole. The local runtime plays the trusted service, so the session is minted by STS's
        backend, as the Lambda service's own AssumeRole would be: CloudTrail then records the role's calls as
        ``AssumedRole`` sessions, which is what the audit meets on AWS."""
        from moto.sts.models import sts_backends

        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": trusted,
                                                          "Action": "sts:AssumeRole"}]}
        role_arn = iam.create_role(RoleName=name, Path="/service/", AssumeRolePolicyDocument=json.dumps(trust),
                                   MaxSessionDuration=43_200)["Role"]["Arn"]
        if policy is not None:
            arn = iam.create_policy(PolicyName=name, Path="/service/", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        # Lambda renews its function's credentials before they expire; a local session simply lasts.
        session = sts_backends[ACCOUNT]["global"].assume_role(
            region_name=REGION, role_session_name=session_name, role_arn=role_arn, policy=None,
            duration=43_200, external_id=None)
        return Identity(session.access_key_id, session.secret_access_key, session.session_token)

    def _function_roles(self, iam: Any) -> None:
        """One execution role per Chalice function with exactly its policy, rendered for this stage as for a
        real one (the resources too: local/iam_resources.py makes moto evaluate them); each function's calls
        are signed with a session of its role, named after the function, as Lambda does."""
        from app import app

        functions = [f.name for f in app.pure_lambda_functions] + [s.name for s in app.event_sources]
        if app.routes:
            functions.append("api_handler")
        for function in functions:
            name = self.function_name(function)
            role = self._service_role(iam, name, {"Service": "lambda.amazonaws.com"}, function_policy(function),
                                      session_name=name)
            self.function_identities[function] = aws.Identity(function, role.access_key_id, role.secret_access_key,
                                                              role.session_token)
        aws.observe_calls(self._record_call)

    def _record_call(self, identity: aws.Identity | None, action: str) -> None:
        if identity is not None and identity.name in self.function_identities:
            self.aws_calls.setdefault(identity.name, set()).add(action)

    def identity_of(self, function: str) -> aws.Identity | None:
        """The identity a Chalice function's calls are signed with (None: the default)."""
        return self.function_identities.get(function)

    def function_name(self, handler: str) -> str:
        return self.names.function(handler)

    @property
    def names(self) -> StageNames:
        """Every name of the local stage, from the same source as a real stage's (deploy/naming.py)."""
        return StageNames(STAGE)

    # -- Lambda dispatch -------------------------------------------------------------------------

    def _dispatch(self, function_name: str, event: Any) -> Any:
        from app import app

        handler = function_name.removeprefix(f"{APP_NAME}-{STAGE}-")
        self.invocations[handler] += 1
        faults = self._faults.get(handler)
        after, fault = faults.pop(0) if faults else (False, None)
        function = self._extra_handlers.get(handler) or app.handler_map[handler]
        context = lambda_context(handler, function_name, self._function_configs.get(handler))

        def invoke() -> Any:
            # A fault is part of the invocation: one that hangs runs into the function's timeout.
            if fault is not None and not after:
                fault(event)
            with aws.acting_as(self.identity_of(handler)), xray.invocation():
                result = function(event, context)
            if fault is not None and after:
                fault(result)  # a crash after the side effects, before the state machine heard of them
            return result

        return lambda_limits.run(invoke, context)

    def inject_fault(self, handler: str, fault: Callable[[Any], None], times: int = 1, *,
                     after: bool = False) -> None:
        """Run ``fault`` before (with the event) or ``after`` (with the result) the next ``times``
        invocations of ``handler``; it may raise, as a crashing or timing-out Lambda would."""
        self._faults.setdefault(handler, []).extend([(after, fault)] * times)

    def add_function(self, name: str, handler: Callable[[Any, Any], Any], *, timeout: int | None = None,
                     memory: int | None = None) -> str:
        """Deploy one more Lambda (for tests of the runtime itself); returns its ARN. Its timeout and memory
        are config.json's defaults unless given."""
        self._extra_handlers[name] = handler
        defaults = lambda_limits.function_config(name, STAGE)
        self._function_configs[name] = lambda_limits.FunctionConfig(
            timeout if timeout is not None else defaults.timeout_seconds,
            memory if memory is not None else defaults.memory_mb)
        role = f"arn:aws:iam::{ACCOUNT}:role/ci-key-rotator-local"
        return str(self.client("lambda").create_function(
            FunctionName=self.function_name(name), Runtime="python3.12", Role=role, Handler="app.app",
            Code={"ZipFile": _empty_zip()})["FunctionArn"])

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- audit: CloudTrail → EventBridge → audit Lambda → Slack sink and SNS ----------------------

    def _start_audit(self) -> None:
        from local.async_invoke import AsyncInvoker
        from local.eventbridge import LocalEventBus
        from local.slack_sink import SlackSink

        self.slack = SlackSink().start()
        slack_ref = "ci-key-rotator/local/slack-webhook"
        self.client("secretsmanager").create_secret(Name=slack_ref, SecretString=self.slack.url)
        os.environ["ROTATOR_AUDIT_SLACK_WEBHOOK"] = f"secretsmanager:{slack_ref}"
        # The rotator's identities: the default user and each function's own.
        os.environ["ROTATOR_AUDIT_ROTATOR_ROLE"] = ",".join(
            ["ci-key-rotator", *(self.function_name(f) for f in self.function_identities)])
        os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "CIKeyRotator")
        # EMF metrics are print()ed to stdout, which here is the operator's terminal, not CloudWatch Logs.
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
        # EventBridge and schedules invoke asynchronously: retries, then the on-failure queue (local/async_invoke.py).
        self.async_invoker = AsyncInvoker(self._dispatch_event, self._async_destinations(),
                                          time_scale=lambda: self.time_scale)
        self.bus = LocalEventBus(self.async_invoker.invoke)

    def _async_destinations(self) -> Destinations:
        """Each event- or schedule-invoked function's on-failure queue, named as ``deploy`` names it, and
        its alarm's action: the alerts topic."""
        from deploy import protection

        destinations = Destinations(
            sqs=self.client("sqs"), sns=self.client("sns"), topic_arn=self.topic_arn, account=ACCOUNT,
            region=REGION, queue_name=lambda function: protection.dlq_name(STAGE, function),
            function_arn=lambda function: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name(function)}",
            alarm=lambda function: protection.alarm(protection.alarm_name(STAGE, function),
                                                    protection.dlq_name(STAGE, function), self.topic_arn, function))
        for function in protection.async_functions():
            destinations.create(function)
        return destinations

    def _dispatch_event(self, handler: str, event: dict[str, Any]) -> Any:
        """One synchronous run of an event handler, with the faults, identity and context of any Lambda."""
        return self._dispatch(self.function_name(handler), event)

    def invoke_async(self, handler: str, event: dict[str, Any] | None = None) -> Any:
        """Invoke ``handler`` as EventBridge or a schedule does (``InvocationType=Event``); without an
        event, as its ``@app.schedule`` rule fires it."""
        from local.async_invoke import scheduled_event

        if event is None:
            rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{self.function_name(handler)}-event"
            event = scheduled_event(rule, ACCOUNT, REGION)
        return self.async_invoker.invoke(handler, event)

    def enable_audit(self) -> None:
        """Record IAM writes as CloudTrail events and deliver them (and anything ``emit``ted) to the app."""
        from local import cloudtrail

        cloudtrail.install(self.bus.put)

    def disable_audit(self) -> None:
        from local import cloudtrail

        cloudtrail.uninstall()

    def emit(self, event: dict[str, Any]) -> list[str]:
        """Put an event on the local bus (an AWS Health event, say); returns the matched handlers."""
        return self.bus.put(event)

    # -- webhooks and the poller -----------------------------------------------------------------

    def _start_app_server(self) -> None:
        from chalice.config import Config
        from chalice.local import ChaliceRequestHandler, create_local_server

        from app import app
        from local.api_gateway import ApiGatewayRequestHandler

        _serve_routes_as(app, self)
        self.app_port = free_port()
        config = Config.create(chalice_stage=STAGE, app_name=APP_NAME)
        self._app_server = create_local_server(app, config, "127.0.0.1", self.app_port)
        # API Gateway's header semantics and integration timeout instead of the dev server's (local/strict.py).
        self._app_server.server.RequestHandlerClass = functools.partial(ApiGatewayRequestHandler,
                                                                        app_object=app, config=config)
        # The dev server logs every request to stderr; the demo prints its own timeline.
        ChaliceRequestHandler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
        # A CI that gave up waiting for the answer (BrokenPipe) redelivers or is polled; the webhook itself
        # was handled. socketserver would print a traceback for it.
        self._app_server.server.handle_error = self._quiet_disconnects(self._app_server.server.handle_error)
        self._spawn(self._app_server.server.serve_forever)
        self.webhook_base_url = f"http://127.0.0.1:{self.app_port}/webhooks"

    @staticmethod
    def _quiet_disconnects(handle_error: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def handle(request: Any, client_address: Any) -> None:
            if isinstance(sys.exc_info()[1], ConnectionError):
                logging.getLogger("local").debug("webhook sender disconnected early")
                return
            handle_error(request, client_address)

        return handle

    def _poll_loop(self) -> None:
        from chalicelib import poller

        while not self._stop.wait(self.poll_interval):
            try:
                with aws.acting_as(self.identity_of("poller")):
                    poller.poll(deps_module.get_deps())
            except Exception:  # the poller is a safety net; a failing round must not kill the thread
                logging.getLogger(SERVICE).exception("poll round failed")

    # -- logs ------------------------------------------------------------------------------------

    def _capture_logs(self) -> None:
        """Send every handler log line (powertools JSON) to ``log_stream`` instead of stdout."""
        from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

        from chalicelib.observability import logger

        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(self.log_stream)
        # Modules that log through plain ``logging`` (the CI targets' HTTP client) land there too.
        plain = logging.StreamHandler(self.log_stream)
        plain.setFormatter(LambdaPowertoolsFormatter(service=SERVICE))
        library = logging.getLogger("chalicelib")
        library.addHandler(plain)
        library.setLevel(logging.INFO)
        library.propagate = False

    # -- operator-side helpers (signed by the operator identity) ---------------------------------

    def client(self, service: str) -> Any:
        """One client per service (clients are thread-safe; making one parses its service model)."""
        with self._clients_lock:
            if service not in self._operator_clients:
                self._operator_clients[service] = self.operator.session().client(service, endpoint_url=self.endpoint)
            return self._operator_clients[service]

    def use_config(self, path: Path) -> None:
        os.environ["ROTATOR_CONFIG_PATH"] = str(path)
        deps_module.reset()

    def wait(self, execution_arn: str, timeout: float = 60) -> dict[str, Any]:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            description = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return description
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_arn} still RUNNING after {timeout}s")
            time.sleep(0.02)

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "includeExecutionData": True}
        while True:
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        return sorted(events, key=lambda e: e["id"])

    def alerts(self) -> list[dict[str, Any]]:
        """Every SNS message published so far (drains the sink queue; keeps them in memory)."""
        sqs = self.client("sqs")
        collected = getattr(self, "_alerts", [])
        while True:
            messages = sqs.receive_message(QueueUrl=self.alerts_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                break
            for message in messages:
                envelope = json.loads(message["Body"])
                collected.append({
                    "subject": envelope.get("Subject"),
                    "severity": envelope.get("MessageAttributes", {}).get("severity", {}).get("Value"),
                    "message": json.loads(envelope["Message"]),
                })
                sqs.delete_message(QueueUrl=self.alerts_queue, ReceiptHandle=message["ReceiptHandle"])
        self._alerts = collected
        return list(collected)


def function_policy(function: str) -> dict[str, Any]:
    """A function's policy as deployed to the local stage: the same template a real stage renders."""
    return policies.for_stage(function, STAGE)


_route_runtime: dict[str, LocalRuntime] = {}


def _serve_routes_as(app: Any, runtime: LocalRuntime) -> None:
    """Sign the REST API's calls (the webhook route) with the ``api_handler`` function's identity."""
    if not _route_runtime:
        def api_identity(event: Any, get_response: Callable[[Any], Any]) -> Any:
            current = _route_runtime.get("runtime")
            with aws.acting_as(current.identity_of("api_handler") if current else None), xray.invocation():
                return get_response(event)

        app.register_middleware(api_identity, "http")
    _route_runtime["runtime"] = runtime


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "# dispatched in-process by local.runtime\n")
    return buffer.getvalue()
