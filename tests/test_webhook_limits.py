"""The webhook route's bounds: it answers within seconds whatever the CI's status API does, refuses input
outside its limits with a 4xx that changes nothing, and sees headers as API Gateway delivers them."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from chalicelib import webhooks
from chalicelib.deps import get_deps, reset
from chalicelib.targets.registry import providers
from local import strict
from local.world import World
from tests.test_webhooks import post, wait_for_callback
from tests.webhook_signing import emulator_sender

RUN_PATH = r"/actions/runs/\d+$"


def ledger_items(world: World, prefix: str) -> int:
    items = world.runtime.client("dynamodb").scan(TableName=world.runtime.table_name)["Items"]
    return sum(1 for i in items if i["pk"]["S"].startswith(prefix))


def raw_post(world: World, provider: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, Any]:
    """POST with headers exactly as given, repeats included (urllib3 would merge them)."""
    url = urlsplit(f"{world.runtime.webhook_base_url}/{provider}")
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("POST", url.path)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


@contextlib.contextmanager
def stalled_status_api(emulator: Any, path_regex: str) -> Iterator[threading.Event]:
    """Requests to ``path_regex`` hang until the yielded event is set (a CI status API that stopped answering)."""
    release = threading.Event()
    original = emulator._handle

    def handle(method: str, target: str, headers: Any, raw: bytes) -> Any:
        if method == "GET" and re.search(path_regex, target.partition("?")[0]):
            release.wait(120)
        return original(method, target, headers, raw)

    emulator._handle = handle
    try:
        yield release
    finally:
        release.set()
        del emulator._handle


def signed_github(world: World, payload: dict[str, Any], delivery: str | None = None,
                  event: str = "workflow_run") -> tuple[bytes, dict[str, str]]:
    body, headers = emulator_sender(world.github).deliver(json.dumps(payload).encode(), delivery or str(uuid.uuid4()))
    return body, {**headers, "X-GitHub-Event": event}


# -- answering in time ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["hangs", "answers 503"])
def test_a_failing_status_api_still_gets_a_fast_answer_and_the_poller_confirms_later(
        clean_world: World, user: str, fault: str) -> None:
    """GitHub gives up on a delivery after 10 s (and disables a hook that keeps failing), API Gateway after
    29 s; the route must answer long before, and the build is still verified once the status API is back."""
    github = clean_world.github
    with contextlib.ExitStack() as stack:
        if fault == "hangs":
            release = stack.enter_context(stalled_status_api(github, RUN_PATH))
        else:
            github.inject("GET", RUN_PATH, statuses=[503] * 10_000)
        started = clean_world.start_rotation(user)
        run_id = wait_for_callback(user)["run_id"]
        github.wait_for_run(run_id, timeout=60)

        # The emulator's own delivery (10 s timeout, as GitHub's) was answered, not timed out.
        mine = [d for d in github.deliveries()
                if str(json.loads(d["body"]).get("workflow_run", {}).get("id")) == run_id]
        assert mine and mine[-1]["status"] == 202, mine[-1:]
        # A fresh copy of the same signed news, timed.
        body, headers = signed_github(clean_world, json.loads(mine[-1]["body"]))
        began = time.monotonic()
        response = post(clean_world, body, headers)
        elapsed = time.monotonic() - began
        assert response.status == 202 and json.loads(response.data) == {"status": "accepted"}
        assert elapsed < webhooks.CONFIRM_BUDGET_SECONDS + 2.5, elapsed

        # Nothing rests on the webhook: the execution still waits for the status API.
        time.sleep(1.0)
        sfn = clean_world.runtime.client("stepfunctions")
        assert sfn.describe_execution(executionArn=started.execution_arn)["status"] == "RUNNING"
        assert get_deps().ledger.callback("github", run_id) is not None
        if fault == "hangs":
            release.set()
        else:
            github.reset_faults()

    result = clean_world.runtime.wait(started.execution_arn, timeout=90)
    assert result["status"] == "SUCCEEDED"
    rotation = get_deps().ledger.rotation(user, started.rotation_id)
    assert [t["resolved_by"] for t in rotation["targets"].values()] == ["poller"]


def test_api_gateway_answers_504_after_its_integration_timeout(clean_world: World,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The local server cuts a slow route off as API Gateway does (local/strict.py)."""
    def slow(*args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        time.sleep(3)
        return 200, {"status": "too late"}

    monkeypatch.setattr(webhooks, "handle", slow)
    with strict.override(api_gateway_integration_timeout_seconds=1.0):
        began = time.monotonic()
        response = post(clean_world, b"{}", {"X-GitHub-Delivery": "slow"})
        elapsed = time.monotonic() - began
    assert response.status == 504 and json.loads(response.data) == {"message": "Endpoint request timed out"}
    assert elapsed < 2.5, elapsed


# -- headers as API Gateway delivers them ----------------------------------------------------------------


def test_repeated_headers_reach_the_route_as_api_gateway_delivers_them(
        clean_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``headers`` has the last value, ``multiValueHeaders`` every value (Chalice's server: the first only)."""
    seen: dict[str, Any] = {}

    def capture(deps: Any, provider: str, headers: Any, raw_body: bytes, multi: Any = None) -> Any:
        seen.update(headers=dict(headers), multi=multi)
        return 200, {}

    monkeypatch.setattr(webhooks, "handle", capture)
    status, _ = raw_post(clean_world, "github", [("Content-Type", "application/json"), ("X-Test", "first"),
                                                 ("X-Test", "last")], b"{}")
    assert status == 200
    assert seen["headers"]["x-test"] == "last"
    assert seen["multi"]["x-test"] == ["first", "last"]


@pytest.mark.parametrize("order", ["valid first", "valid last"])
def test_a_repeated_signature_or_delivery_header_is_refused(clean_world: World, order: str) -> None:
    body, headers = signed_github(clean_world, {"zen": "hi"}, event="ping")
    valid = headers["X-Hub-Signature-256"]
    forged = "sha256=" + "0" * 64
    pair = [valid, forged] if order == "valid first" else [forged, valid]
    before = ledger_items(clean_world, "DELIVERY#")
    rest = [(k, v) for k, v in headers.items() if k != "X-Hub-Signature-256"]
    status, answer = raw_post(clean_world, "github", [*rest, *(("X-Hub-Signature-256", v) for v in pair)], body)
    assert (status, answer) == (400, {"error": "header x-hub-signature-256 is repeated"})
    delivery = [(k, v) for k, v in headers.items() if k != "X-GitHub-Delivery"]
    status, _ = raw_post(clean_world, "github", [*delivery, ("X-GitHub-Delivery", "a"), ("X-GitHub-Delivery", "b")],
                         body)
    assert status == 400
    assert ledger_items(clean_world, "DELIVERY#") == before


# -- input limits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [webhooks.MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deeply_nested_signed_json_is_400_and_changes_nothing(clean_world: World, depth: int) -> None:
    """Python's json recurses: a signed body nested 5,000 deep raised RecursionError (a 500)."""
    nested = "[" * depth + "]" * depth
    text = '{"action": "completed", "workflow_run": {"id": 1, "extra": ' + nested + "}}"
    body, headers = emulator_sender(clean_world.github).deliver(text.encode(), str(uuid.uuid4()))
    before = ledger_items(clean_world, "DELIVERY#")
    response = post(clean_world, body, {**headers, "X-GitHub-Event": "workflow_run"})
    assert response.status == 400 and json.loads(response.data) == {"error": "body nested too deeply"}
    assert ledger_items(clean_world, "DELIVERY#") == before


def test_nesting_within_the_limit_is_accepted(clean_world: World) -> None:
    depth = webhooks.MAX_JSON_DEPTH - 3
    body, headers = signed_github(clean_world, {"zen": json.loads("[" * depth + "]" * depth)}, event="ping")
    assert post(clean_world, body, headers).status == 202


def test_a_delivery_id_longer_than_a_dynamodb_key_is_still_deduplicated(clean_world: World) -> None:
    """DynamoDB refuses partition keys over 2,048 bytes: the old route answered 500 to such a delivery."""
    delivery = "d" * 3_000
    body, headers = signed_github(clean_world, {"zen": "long"}, delivery=delivery, event="ping")
    first, second = post(clean_world, body, headers), post(clean_world, body, headers)
    assert first.status == 202 and json.loads(first.data) == {"status": "ignored"}
    assert second.status == 200 and json.loads(second.data) == {"status": "duplicate"}


def test_a_run_id_longer_than_a_dynamodb_key_is_an_unknown_run(clean_world: World) -> None:
    body, headers = signed_github(clean_world, {"action": "completed", "workflow_run": {
        "id": int("9" * 1_500), "status": "completed", "conclusion": "success"}})
    response = post(clean_world, body, headers)
    assert response.status < 500, response.data
    assert json.loads(response.data)["status"] in ("unknown-run", "accepted")


def test_an_oversized_header_value_is_431_and_changes_nothing(clean_world: World) -> None:
    body, headers = signed_github(clean_world, {"zen": "hi"}, event="ping")
    before = ledger_items(clean_world, "DELIVERY#")
    response = post(clean_world, body, {**headers, "X-GitHub-Delivery": "x" * (webhooks.MAX_HEADER_VALUE_BYTES + 1)})
    assert response.status == 431
    assert ledger_items(clean_world, "DELIVERY#") == before


def test_unknown_and_unconfigured_providers_get_the_same_answer(clean_world: World, tmp_path) -> None:
    clean_world.github  # noqa: B018 - started, so github is configured
    config = yaml.safe_load(clean_world.write_config().read_text())
    unconfigured = next(p for p in sorted(providers()) if p != "github")
    config["webhooks"] = {p: hook for p, hook in config["webhooks"].items() if p != unconfigured}
    path = tmp_path / "rotation.yaml"
    path.write_text(yaml.safe_dump(config))
    clean_world.runtime.use_config(path)
    try:
        answers = {name: post(clean_world, b"{}", {"X-GitHub-Delivery": "x"}, provider=name)
                   for name in (unconfigured, "jenkins", "nope..")}
        assert {k: (r.status, json.loads(r.data)) for k, r in answers.items()} == dict.fromkeys(
            answers, (404, {"error": "no webhook endpoint for this provider"}))
    finally:
        clean_world.write_config()
        reset()
