"""The local EventBridge and Lambda's asynchronous invocation are as strict as AWS's.

- a rule whose pattern is over EventBridge's default quota (2,048 characters, as Chalice sends it) is
  refused, and every rule the app registers fits;
- a read-only CloudTrail management event reaches only a rule in state
  ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS, and the audit's rule has that state (locally and in
  what ``deploy`` makes), so a denied read is detected end to end;
- an event handler that keeps failing is retried twice, lands in its on-failure queue as the record
  Lambda writes, and the queue's alarm pages through the alerts topic.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import strict
from local.eventbridge import (
    ADMITS_READ_ONLY,
    DISABLED,
    ENABLED,
    LocalEventBus,
    RuleRefused,
    app_rules,
    is_read_only_management_event,
    make_rule,
)
from local.runtime import LocalRuntime
from local.world import World

HEALTH = json.loads((Path(__file__).parent / "audit" / "fixtures"
                     / "health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json").read_text())
IAM_CALLS = {"source": ["aws.iam"], "detail-type": ["AWS API Call via CloudTrail"]}


def cloudtrail_event(name: str, read_only: bool | None, **detail: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"eventSource": "iam.amazonaws.com", "eventName": name, "eventType": "AwsApiCall",
                              "managementEvent": True, **detail}
    if read_only is not None:
        record["readOnly"] = read_only
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.iam", "account": "123456789012", "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1", "resources": [], "detail": record}


def _pattern_of(size: int) -> dict[str, Any]:
    """A valid pattern of exactly ``size`` characters as ``json.dumps`` writes it."""
    pattern: dict[str, Any] = {"source": ["aws.iam"], "detail": {"eventName": [""]}}
    pattern["detail"]["eventName"][0] = "x" * (size - len(json.dumps(pattern)))
    assert len(json.dumps(pattern)) == size
    return pattern


class Recorder:
    """A dispatch that records what each rule's target received."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, name: str, event: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append((name, event))

    def names(self) -> list[str]:
        return sorted(name for name, _ in self.calls)


# -- pattern size ---------------------------------------------------------------------------------------


def test_a_pattern_over_the_default_quota_is_refused() -> None:
    assert strict.current().event_pattern_max_chars == 2048
    make_rule("fits", _pattern_of(2048), ENABLED)
    with pytest.raises(RuleRefused, match=r"2049 characters.*quota is 2048"):
        make_rule("too-big", _pattern_of(2049), ENABLED)
    with strict.override(event_pattern_max_chars=4096):  # after a quota increase
        make_rule("raised", _pattern_of(2049), ENABLED)


def test_the_bus_refuses_to_start_with_an_oversized_app_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Startup fails loudly, as ``chalice deploy`` would on AWS (PutRule: InvalidEventPatternException)."""
    from chalice.app import CloudWatchEventConfig

    from app import app

    (audit,) = [s for s in app.event_sources if isinstance(s, CloudWatchEventConfig) and s.name == "audit"]
    monkeypatch.setattr(audit, "event_pattern", _pattern_of(3833))  # the size of the old single pattern
    with pytest.raises(RuleRefused, match="rule audit"):
        app_rules()


def test_every_rule_the_app_registers_fits_the_default_quota() -> None:
    from chalice.app import CloudWatchEventConfig

    from app import app

    rules = [s for s in app.event_sources if isinstance(s, CloudWatchEventConfig)]
    assert {r.name for r in rules} >= {"audit", "exposure"}
    for rule in rules:
        # Exactly what Chalice sends as PutRule's EventPattern (chalice/deploy/appgraph.py).
        assert len(json.dumps(rule.event_pattern)) <= 2048, rule.name
    assert {r.name: r.size <= 2048 for r in app_rules()} == {r.name: True for r in rules}


# -- rule state and read-only events --------------------------------------------------------------------


def test_read_only_events_are_recognised_as_cloudtrail_records_them() -> None:
    assert is_read_only_management_event(cloudtrail_event("ListUsers", True))
    assert not is_read_only_management_event(cloudtrail_event("CreateUser", False))
    assert is_read_only_management_event(cloudtrail_event("GetUser", None)), "no readOnly: the Get verb"
    assert not is_read_only_management_event(HEALTH)


def test_a_read_only_event_reaches_only_the_rule_that_admits_it() -> None:
    recorder = Recorder()
    bus = LocalEventBus(recorder, rules=[make_rule("enabled", IAM_CALLS, ENABLED),
                                         make_rule("admitting", IAM_CALLS, ADMITS_READ_ONLY),
                                         make_rule("disabled", IAM_CALLS, DISABLED)])
    try:
        assert bus.put(cloudtrail_event("ListUsers", True)) == ["admitting"]
        assert sorted(bus.put(cloudtrail_event("CreateUser", False))) == ["admitting", "enabled"]
        bus.drain()
        assert recorder.names() == ["admitting", "admitting", "enabled"]
        with strict.override(read_only_events_need_admitting_state=False):
            assert sorted(bus.put(cloudtrail_event("ListUsers", True))) == ["admitting", "enabled"]
    finally:
        bus.stop()


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(RuleRefused, match="state"):
        make_rule("odd", IAM_CALLS, "ENABLED_SOMETIMES")


def test_the_audit_rule_admits_read_only_events_and_exposure_does_not() -> None:
    states = {rule.name: rule.state for rule in app_rules()}
    assert states["audit"] == ADMITS_READ_ONLY
    assert states["exposure"] == ENABLED


def test_the_packaged_template_gives_the_audit_rule_its_state() -> None:
    from deploy import template

    events = template.merge_template("prod")["Resources"]["Audit"]["Properties"]["Events"]
    assert events == {"AuditEvent": {"Properties": {"State": ADMITS_READ_ONLY}}}, (
        "merged into Chalice's AuditEvent (SAM CloudWatchEvent → AWS::Events::Rule State)")


def test_deploy_apply_sets_the_state_chalice_cannot(runtime: LocalRuntime) -> None:
    """``chalice deploy`` creates the rule ENABLED (PutRule without State); ``deploy apply`` fixes it and
    a second apply writes nothing."""
    from deploy import naming, resources
    from tests.deploy.conftest import chalice_deploy, operator_session

    stage = "rulestate"
    session = operator_session(runtime)
    record = chalice_deploy(session, stage)
    events = session.client("events")
    names = naming.StageNames(stage)
    from app import app

    for source in app.event_sources:
        if hasattr(source, "event_pattern"):
            rule = names.function(f"{source.name}-event")
            events.put_rule(Name=rule, EventPattern=json.dumps(source.event_pattern))
            record["resources"].append({"name": f"{source.name}-event", "resource_type": "cloudwatch_event",
                                        "rule_name": rule})
    first = resources.apply(stage, session, record)
    audit_rule = events.describe_rule(Name=names.function("audit-event"))
    assert audit_rule["State"] == ADMITS_READ_ONLY
    assert json.loads(audit_rule["EventPattern"]) == next(
        s.event_pattern for s in app.event_sources if s.name == "audit"), "the pattern is kept"
    assert events.describe_rule(Name=names.function("exposure-event"))["State"] == ENABLED
    assert f"set EventBridge rule {names.function('audit-event')} to {ADMITS_READ_ONLY}" in first.changes
    assert not [c for c in resources.apply(stage, session, record).changes if "EventBridge rule" in c]


def test_a_denied_read_is_detected_through_cloudtrail_the_bus_and_the_audit(clean_world: World, user: str) -> None:
    """A read-only call (ListUsers) denied to a user: CloudTrail records it readOnly, EventBridge delivers
    it only because the audit rule admits read-only events, and the audit reports it."""
    runtime = clean_world.runtime
    iam = runtime.client("iam")
    name = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    runtime.enable_audit()
    # A new key is refused until IAM propagates it (another behaviour of strict mode, not this test's).
    with strict.override(key_propagation_seconds=0):
        key = iam.create_access_key(UserName=name)["AccessKey"]
    try:
        runtime.bus.drain()
        before = len(runtime.alerts())
        intruder = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                         aws_secret_access_key=key["SecretAccessKey"], region_name="us-east-1")
        with strict.override(key_propagation_seconds=0), pytest.raises(Exception, match=r"AccessDenied|not authorized"):
            intruder.client("iam", endpoint_url=runtime.endpoint).list_users()
        runtime.bus.drain()
    finally:
        runtime.disable_audit()
    delivered = [e for handler, e in runtime.bus.delivered if handler == "audit"
                 and e["detail"].get("eventName") == "ListUsers" and e["detail"].get("errorCode")]
    assert delivered and delivered[-1]["detail"]["readOnly"] is True
    findings = [a["message"] for a in runtime.alerts()[before:]
                if a["message"].get("detection") == "unauthorized-call.access-denied"
                and name in a["message"].get("summary", "")]
    assert findings, "the denied read reached the audit Lambda and was reported"


# -- asynchronous invocation: retries, on-failure queue, alarm -------------------------------------------


def _drain_queue(sqs: Any, queue: str) -> list[dict[str, Any]]:
    """Every message in ``queue``, deleted (PurgeQueue is allowed once a minute)."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            messages.append(message)
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return messages


def test_a_failing_exposure_event_is_retried_twice_then_queued_and_pages(clean_world: World, user: str) -> None:
    runtime = clean_world.runtime
    sqs = runtime.client("sqs")
    queue = sqs.get_queue_url(QueueName="ci-key-rotator-local-exposure-dlq")["QueueUrl"]
    _drain_queue(sqs, queue)
    before = len(runtime.alerts())
    invoked = runtime.invocations["exposure"]

    def crash(event: Any) -> None:
        raise RuntimeError("exposure handler crashed")

    runtime.inject_fault("exposure", crash, times=3)
    event = copy.deepcopy(HEALTH)
    event["detail"]["affectedEntities"] = [{"entityValue": "AKIAEXAMPLEEXPOSED01"}]
    assert "exposure" in runtime.emit(event)
    runtime.bus.drain()

    assert runtime.invocations["exposure"] - invoked == 3, "the first attempt and two retries"
    (message,) = _drain_queue(sqs, queue)
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(":function:ci-key-rotator-local-exposure:$LATEST")
    assert record["requestPayload"] == event
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "RuntimeError"

    # The alarm the deployment puts on the queue (deploy/protection.py), notifying as CloudWatch does.
    from deploy import protection

    alarms = [a for a in runtime.alerts()[before:] if a["message"].get("AlarmName")]
    (alarm,) = alarms
    assert alarm["message"]["AlarmName"] == protection.alarm_name("local", "exposure")
    assert alarm["message"]["AlarmName"].startswith("ci-key-rotator-local-exposure-dlq")
    assert alarm["message"]["NewStateValue"] == "ALARM" and alarm["message"]["OldStateValue"] == "OK"
    assert alarm["message"]["AlarmActions"] == [runtime.topic_arn]
    assert alarm["message"]["Trigger"]["Dimensions"] == [{"value": "ci-key-rotator-local-exposure-dlq",
                                                          "name": "QueueName"}]
    assert alarm["subject"].startswith(f'ALARM: "{protection.alarm_name("local", "exposure")}"')


def test_a_failing_scheduled_run_is_retried_then_queued(clean_world: World, user: str) -> None:
    """Schedules invoke asynchronously too: the credential report's failed run is not lost."""
    runtime = clean_world.runtime
    sqs = runtime.client("sqs")
    queue = sqs.get_queue_url(QueueName="ci-key-rotator-local-credential_report-dlq")["QueueUrl"]
    _drain_queue(sqs, queue)
    invoked = runtime.invocations["credential_report"]

    def crash(event: Any) -> None:
        raise TimeoutError("Task timed out after 60.00 seconds")

    runtime.inject_fault("credential_report", crash, times=3)
    assert runtime.invoke_async("credential_report") is None
    assert runtime.invocations["credential_report"] - invoked == 3
    (message,) = _drain_queue(sqs, queue)
    record = json.loads(message["Body"])
    assert record["requestPayload"]["detail-type"] == "Scheduled Event"
    assert record["requestPayload"]["resources"][0].endswith(":rule/ci-key-rotator-local-credential_report-event")
    assert record["responsePayload"]["errorType"] == "TimeoutError"


def test_an_event_that_succeeds_on_a_retry_is_not_queued(clean_world: World, user: str) -> None:
    runtime = clean_world.runtime
    before = len(runtime.async_invoker.failed)

    def crash(event: Any) -> None:
        raise RuntimeError("transient")

    runtime.inject_fault("exposure", crash, times=1)
    event = copy.deepcopy(HEALTH)
    event["detail"]["affectedEntities"] = [{"entityValue": "AKIAEXAMPLEEXPOSED02"}]
    runtime.emit(event)
    runtime.bus.drain()
    assert len(runtime.async_invoker.failed) == before


def test_an_asynchronous_payload_over_256_kb_is_refused(runtime: LocalRuntime) -> None:
    from local.async_invoke import PayloadTooLarge

    invoked = runtime.invocations["exposure"]
    with pytest.raises(PayloadTooLarge, match="262144"):
        runtime.invoke_async("exposure", {"detail": {"blob": "x" * (256 * 1024)}})
    assert runtime.invocations["exposure"] == invoked, "never reached the function"


def test_retry_delays_follow_lambda_scaled_by_the_runtime(runtime: LocalRuntime) -> None:
    from local.async_invoke import AsyncInvoker

    slept: list[float] = []
    calls: list[str] = []
    sent: list[dict[str, Any]] = []

    class Sink:
        def send(self, function: str, record: dict[str, Any]) -> None:
            sent.append(record)

        def function_arn(self, function: str) -> str:
            return f"arn:aws:lambda:us-east-1:123456789012:function:{function}"

    def always_fails(function: str, event: dict[str, Any]) -> None:
        calls.append(function)
        raise ValueError("no")

    invoker = AsyncInvoker(always_fails, Sink(), time_scale=lambda: 0.5, sleep=slept.append)  # type: ignore[arg-type]
    assert invoker.invoke("audit", {"x": 1}) is None
    assert calls == ["audit"] * 3 and slept == [30.0, 60.0] and len(sent) == 1
