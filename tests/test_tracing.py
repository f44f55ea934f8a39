"""X-Ray as Lambda has it: every invocation runs under a facade segment made from its trace header, and
the handlers' tracing works there (local/xray.py, chalicelib/observability.py).

In Lambda the entity current at handler start is a FacadeSegment that raises on any mutation; the old
``@observed`` annotated it and so failed every sampled invocation. Tracing is never switched off here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import uuid
from typing import Any

import urllib3
from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.exceptions.exceptions import FacadeSegmentMutationException
from aws_xray_sdk.core.models.facade_segment import FacadeSegment

from chalicelib import observability
from chalicelib.deps import get_deps
from chalicelib.errors import UnsafeKeyState
from local import xray
from local.runtime import LocalRuntime
from local.world import World

HEADER = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=1$")
ANNOTATED = {"ColdStart", "Service"}


def invoke(runtime: LocalRuntime, name: str, event: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    response = runtime.client("lambda").invoke(FunctionName=runtime.function_name(name),
                                               Payload=json.dumps(event or {}).encode())
    return response, json.loads(response["Payload"].read())


def handler_subsegments(documents: list[dict[str, Any]], function: str) -> list[dict[str, Any]]:
    return [d for d in documents if d.get("name") == f"## {function}"]


def facades() -> dict[str, str]:
    """trace id -> the facade segment's id (Lambda's segment: never emitted by the function)."""
    parsed = [dict(part.split("=", 1) for part in header.split(";")) for header in xray.ISSUED]
    return {p["Root"]: p["Parent"] for p in parsed}


def assert_under_a_facade(subsegment: dict[str, Any]) -> None:
    assert subsegment["type"] == "subsegment"
    assert facades().get(subsegment["trace_id"]) == subsegment["parent_id"], "parent = the invocation's facade"
    assert subsegment["annotations"]["Service"] == "ci-key-rotator"
    assert isinstance(subsegment["annotations"]["ColdStart"], bool)
    assert "metadata" not in subsegment, "no response (or anything else) recorded as metadata"


def signed_ping(world: World) -> int:
    """A GitHub webhook delivery, signed as GitHub signs it, to the webhook route (the api_handler)."""
    secret = get_deps().webhook_secret("github")
    body = json.dumps({"zen": "Keep it logically awesome."}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return urllib3.PoolManager().request(
        "POST", f"{world.runtime.webhook_base_url}/github", body=body, retries=False,
        headers={"Content-Type": "application/json", "X-GitHub-Event": "ping",
                 "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature}).status


def test_a_rotation_an_audit_event_and_a_webhook_are_traced_under_facades(audited: World, user: str) -> None:
    runtime = audited.runtime
    runtime.bus.drain()
    before, ran_before = len(runtime.traces.documents()), dict(runtime.invocations)
    result = audited.rotate(user)
    assert signed_ping(audited) in (200, 202)
    runtime.bus.drain()
    documents = [json.loads(d) for d in runtime.traces.documents()[before:]]
    ran = {f: n - ran_before.get(f, 0) for f, n in runtime.invocations.items() if n > ran_before.get(f, 0)}

    expected = {"plan", "create_key", "await_key_live", "push_target", "verify_build", "audit"}
    if result["status"] == "SUCCEEDED":
        expected |= {"drain_check", "deactivate_old_key", "delete_old_key", "report"}
    assert expected <= set(ran), ran
    for function, times in ran.items():
        found = handler_subsegments(documents, function)
        assert len(found) >= times if function in ("audit", "exposure") else len(found) == times, function
        for subsegment in found:
            assert_under_a_facade(subsegment)
    webhooks = handler_subsegments(documents, "api_handler")
    assert webhooks, "the webhook route is traced"
    for webhook in webhooks:
        assert_under_a_facade(webhook)
    # The AWS calls a handler made are its subsegment's children, in the same trace.
    plan = handler_subsegments(documents, "plan")[0]
    children = [d for d in documents if d.get("parent_id") == plan["id"]]
    assert any(d.get("namespace") == "aws" for d in children), "boto3 calls traced (X-Ray SDK patches)"
    assert all(d["trace_id"] == plan["trace_id"] for d in children)


def test_each_invocation_has_its_own_trace_even_concurrently(runtime: LocalRuntime) -> None:
    def probe(event: dict[str, Any], context: Any) -> dict[str, Any]:
        entity = xray_recorder.get_trace_entity()
        return {"trace_id": entity.trace_id, "facade": type(entity).__name__}

    runtime.add_function("trace_probe", probe)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def call() -> None:
        _, payload = invoke(runtime, "trace_probe")
        with lock:
            results.append(payload)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and {r["facade"] for r in results} == {"FacadeSegment"}
    assert len({r["trace_id"] for r in results}) == 8, "no invocation saw another's trace"
    assert all(HEADER.match(h) for h in xray.ISSUED)


def test_the_entity_at_handler_start_is_a_facade_that_refuses_annotations(runtime: LocalRuntime) -> None:
    """What Lambda gives a handler; without the local facade this test fails (no entity, or a mutable one)."""
    def probe(event: dict[str, Any], context: Any) -> dict[str, Any]:
        entity = xray_recorder.get_trace_entity()
        try:
            entity.put_annotation("k", "v")
            refused = False
        except FacadeSegmentMutationException:
            refused = True
        return {"facade": isinstance(entity, FacadeSegment), "sampled": bool(entity.sampled), "refused": refused}

    runtime.add_function("facade_probe", probe)
    response, payload = invoke(runtime, "facade_probe")
    assert "FunctionError" not in response, payload
    assert payload == {"facade": True, "sampled": True, "refused": True}


def test_an_observed_handler_annotates_its_own_subsegment_not_the_facade(runtime: LocalRuntime) -> None:
    """The old ``@observed`` put annotations on the current entity: FacadeSegmentMutationException."""
    runtime.add_function("observed_probe", observability.observed("observed_probe")(
        lambda event, context: {"ok": True, "secretish": "never traced"}))
    before = len(runtime.traces.documents())
    first, payload = invoke(runtime, "observed_probe")
    assert "FunctionError" not in first, payload
    second, _ = invoke(runtime, "observed_probe")
    assert "FunctionError" not in second
    documents = [json.loads(d) for d in runtime.traces.documents()[before:]]
    cold, warm = handler_subsegments(documents, "observed_probe")
    assert_under_a_facade(cold)
    assert (cold["annotations"]["ColdStart"], warm["annotations"]["ColdStart"]) == (True, False)
    assert all("never traced" not in d for d in runtime.traces.documents()[before:]), "the response is not recorded"


def test_exceptions_are_traced_without_their_messages_unless_they_are_ours(runtime: LocalRuntime) -> None:
    leaked = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    def failing(event: dict[str, Any], context: Any) -> None:
        if event.get("ours"):
            raise UnsafeKeyState("user ci-x has two Active keys")
        raise ValueError(f"bad input {leaked}")

    runtime.add_function("failing_probe", observability.observed("failing_probe")(failing))
    before = len(runtime.traces.documents())
    response, payload = invoke(runtime, "failing_probe", {"ours": False})
    assert response.get("FunctionError") == "Unhandled" and payload["errorType"] == "ValueError"
    response, payload = invoke(runtime, "failing_probe", {"ours": True})
    assert payload["errorType"] == "UnsafeKeyState"
    emitted = runtime.traces.documents()[before:]
    assert all(leaked not in d for d in emitted)
    theirs, ours = handler_subsegments([json.loads(d) for d in emitted], "failing_probe")
    assert theirs["fault"] is True
    (exception,) = theirs["cause"]["exceptions"]
    assert exception["type"] == "ValueError" and leaked not in json.dumps(exception)
    assert exception["stack"], "where it was raised is kept"
    assert ours["cause"]["exceptions"][0]["message"] == "user ci-x has two Active keys"


def test_calls_outside_any_invocation_are_not_traced(runtime: LocalRuntime) -> None:
    """The runtime's own threads (moto, emulators, this test) are no Lambda: nothing emitted, no warning."""
    before = len(runtime.traces.documents())
    runtime.client("sts").get_caller_identity()
    assert runtime.traces.documents()[before:] == []


def test_the_session_secret_scan_reads_the_traces(runtime: LocalRuntime) -> None:
    from tests.leak_scan import corpus, leaks

    runtime.add_function("scan_probe", observability.observed("scan_probe")(lambda event, context: None))
    invoke(runtime, "scan_probe")
    texts = corpus(runtime)
    assert '"## scan_probe"' in texts["traces"]
    planted = "x" * 40
    found = leaks({"traces": texts["traces"] + planted}, {hashlib.sha256(planted.encode()).hexdigest()}, set())
    assert found == ["secret access key in traces"]


def test_log_lines_carry_their_invocation_trace_id(runtime: LocalRuntime) -> None:
    """powertools' Logger reads the trace id Lambda sets for the invocation (_X_AMZN_TRACE_ID)."""
    def logs(event: dict[str, Any], context: Any) -> None:
        observability.logger.info("traced line", extra={"probe": event["probe"]})

    runtime.add_function("log_probe", observability.observed("log_probe")(logs))
    before = len(runtime.traces.documents())
    probe = uuid.uuid4().hex
    invoke(runtime, "log_probe", {"probe": probe})
    (line,) = [json.loads(line) for line in runtime.log_stream.getvalue().splitlines() if probe in line]
    (subsegment,) = handler_subsegments([json.loads(d) for d in runtime.traces.documents()[before:]], "log_probe")
    assert line["xray_trace_id"] == subsegment["trace_id"]
