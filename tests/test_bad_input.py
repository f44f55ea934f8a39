"""Random and malformed input: a clear error or a 4xx, never a crash, never a state change."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.config import load_config, parse_config
from chalicelib.errors import ConfigError
from chalicelib.targets.base import WebhookEvent, WebhookRejected
from chalicelib.targets.registry import providers
from chalicelib.webhooks import MAX_JSON_DEPTH, json_depth
from chalicelib.workflow.plan import ExecutionInput
from local.world import World
from tests.webhook_signing import PROVIDERS, emulator_sender

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
config_keys = st.sampled_from(["defaults", "users", "webhooks", "name", "targets", "provider", "id", "token",
                               "repository", "rotate_after", "drain_period", "scope", "environment"])
config_like = st.recursive(
    st.none() | st.integers() | st.text(max_size=20) | st.sampled_from(["github", "30d", "secretsmanager:x"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(config_keys, children, max_size=5),
    max_leaves=30,
)
header_names = st.sampled_from(["X-Hub-Signature-256", "X-GitHub-Delivery", "X-GitHub-Event", "X-Gitlab-Token",
                                "circleci-signature", "Signature", "X-Hub-Signature", "X-Request-UUID",
                                "webhook-signature", "webhook-id", "webhook-timestamp", "Content-Type"])
headers = st.dictionaries(header_names, st.text(max_size=80), max_size=6)


@settings(max_examples=300, deadline=None)
@given(config_like)
def test_config_loader_never_crashes(data: object) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        assert "is invalid" in str(exc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_config_files_that_are_not_yaml_or_not_config_are_refused_clearly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rotation.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("provider", sorted(providers()))
@settings(max_examples=200, deadline=None)
@given(headers=headers, body=st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_webhook_parsers_verify_or_refuse(provider: str, headers: dict[str, str], body: bytes) -> None:
    cls = providers()[provider]
    try:
        event = cls.parse_webhook(headers, body, "a-webhook-secret")
    except WebhookRejected as exc:
        assert 400 <= exc.status < 500
        return
    assert isinstance(event, WebhookEvent)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_correctly_signed_github_garbage_is_a_4xx_or_an_event(payload: object) -> None:
    """A valid signature over nonsense (a leaked secret) still cannot crash the parser."""
    cls = providers()["github"]
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    for event_name in ("workflow_run", "ping"):
        try:
            cls.parse_webhook({"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d",
                               "X-GitHub-Event": event_name}, body, "s")
        except WebhookRejected as exc:
            assert exc.status == 400


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_execution_input_is_validated(payload: object) -> None:
    try:
        ExecutionInput.model_validate(payload)
    except ValidationError:
        pass


def _deliveries(world: World) -> int:
    items = world.runtime.client("dynamodb").scan(TableName=world.runtime.table_name)["Items"]
    return sum(1 for i in items if i["pk"]["S"].startswith(("DELIVERY#", "CALLBACK")))


def test_webhook_route_answers_random_input_with_4xx_and_changes_nothing(clean_world: World, user: str) -> None:
    http = urllib3.PoolManager()
    for provider in PROVIDERS:
        clean_world.emulator(provider)  # every provider configured, so each parser is reached
    before = _deliveries(clean_world)
    statuses = set()

    @settings(max_examples=100, deadline=None)
    @given(provider=st.sampled_from([*PROVIDERS, "nope", "../etc"]), headers=headers,
           body=st.binary(max_size=300))
    def post(provider: str, headers: dict[str, str], body: bytes) -> None:
        safe = {k: v.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
                for k, v in headers.items()}
        response = http.request("POST", f"{clean_world.runtime.webhook_base_url}/{provider}", body=body,
                                headers={"Content-Type": "application/json", **safe}, retries=False)
        statuses.add(response.status)
        assert 400 <= response.status < 500, (response.status, response.data[:200])

    post()
    assert _deliveries(clean_world) == before
    assert statuses <= {400, 401, 403, 404, 413, 415, 431}


# -- validly signed hostile bodies (a leaked webhook secret), for every provider ---------------------------

#: Where each provider's parser takes the run id (``@@``) from; the rest is a plausible finished build.
SHAPES = {
    "github": '{"action":"completed","workflow_run":{"id":@@,"run_attempt":1,"status":"completed",'
              '"conclusion":"success","html_url":"http://x"}}',
    "gitlab": '{"object_kind":"pipeline","object_attributes":{"id":@@,"status":"success","url":"http://x"}}',
    "circleci": '{"id":"@ID","type":"workflow-completed","pipeline":{"id":@@},'
                '"workflow":{"status":"success","name":"verify","url":"http://x"}}',
    "travis": '{"id":@@,"number":"1","state":"passed","status_message":"Passed","build_url":"http://x"}',
    "bitbucket": '{"commit_status":{"state":"SUCCESSFUL","key":"k","type":"build","url":@@,'
                 '"refname":"main"},"repository":{"full_name":"acme/x"}}',
}
#: JSON text put where the run id goes: wrong types, numbers Python refuses (over 4,300 digits), ids past
#: DynamoDB's key limits, and nesting from harmless to far past any parser's recursion limit.
hostile_fragments = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(1, 6_000).map(lambda n: "9" * n),
    st.sampled_from(["1e999999", "-1e-999999", "null", "true", "[]", "{}", '""', "0.5", "-0", '"../../x"',
                     '"http://x/pipelines/results/1"', '"http://x/addon/pipelines/home#!/results/7"']),
    st.text(max_size=50).map(json.dumps),
    st.integers(900, 5_000).map(lambda n: json.dumps("7" * n)),
    st.integers(1, 120).map(lambda n: "[" * n + "]" * n),
    st.integers(1_000, 100_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    json_values.map(json.dumps),
)
printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
delivery_ids = st.one_of(st.uuids().map(str), st.text(printable, min_size=1, max_size=40),
                         st.integers(2_100, 4_000).map(lambda n: "d" * n))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_validly_signed_hostile_bodies_never_get_a_5xx(clean_world: World, provider: str) -> None:
    """Whatever a holder of the webhook secret sends, the route answers 2xx or 4xx: never a 500."""
    http = urllib3.PoolManager()
    sender = emulator_sender(clean_world.emulator(provider))
    # A provider added later keeps its shape beside its emulator (``hostile_webhook_shape``).
    shape = SHAPES.get(provider) or type(clean_world.emulator(provider)).hostile_webhook_shape
    callbacks = _callbacks(clean_world)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fragment=hostile_fragments, delivery=delivery_ids)
    def post(fragment: str, delivery: str) -> None:
        text = shape.replace("@@", fragment).replace("@ID", delivery.replace('"', ""))
        body, signed = sender.deliver(text.encode(), delivery)
        response = http.request("POST", f"{clean_world.runtime.webhook_base_url}/{provider}", body=body,
                                headers=signed, retries=False, timeout=30)
        assert response.status < 500, (response.status, response.data[:300], text[:200])
        if json_depth(text.encode()) > MAX_JSON_DEPTH:
            assert response.status in (400, 413), (response.status, response.data[:300])  # 413: form-encoded

    post()
    assert _callbacks(clean_world) == callbacks, "no verification was resolved by hostile input"


def _callbacks(world: World) -> list[str]:
    items = world.runtime.client("dynamodb").scan(TableName=world.runtime.table_name)["Items"]
    return sorted(i["sk"]["S"] for i in items if i["pk"]["S"] == "CALLBACK")
