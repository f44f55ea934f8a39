"""AzureDevOpsTarget: what is specific to Azure DevOps. The generic behaviour (push, builds, webhooks,
Retry-After, 5xx, revoked token, end-to-end rotation) runs in tests/test_provider_contract.py.

Here: the variable group's read-modify-write keeps every other variable and secret, a secret's null or
absent value keeps what is stored, a PAT is Basic with an empty user name, the service hook's Basic
credentials are checked in constant time, run state/result are mapped, and the emulator refuses what
Microsoft's description refuses.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from pydantic import ValidationError

from chalicelib.errors import TargetPushFailed, VerificationFailed
from chalicelib.targets.azure_devops import (
    AzureDevOpsTarget,
    AzureDevOpsTargetConfig,
    basic_credentials,
    map_build_result,
    map_run,
)
from chalicelib.targets.base import Credentials, RunState, WebhookRejected
from local.emulators.azure_devops import HOOK_USER, AzureDevOpsEmulator
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import assert_no_pipeline_holds_a_dead_key, assert_one_active_key_everywhere

pytestmark = pytest.mark.timeout(120)
TOKEN = "azdo-pat-0123456789abcdefghijklmnop"
HOOK_SECRET = "azdo-hook-password-0123456789"
KEY = Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private")
BASE = {"provider": "azure_devops", "id": "azdo-app", "token": "secretsmanager:ci/azdo-token",
        "organization": "acme", "project": "web", "variable_group_id": 1, "pipeline_id": 11}


@pytest.fixture(scope="module")
def azdo() -> Iterator[AzureDevOpsEmulator]:
    server = AzureDevOpsEmulator(token=TOKEN, aws_endpoint_url="http://127.0.0.1:9", webhook_url=None,
                                 webhook_secret=HOOK_SECRET, build_timeout=5)
    server.in_process_builds = True
    with server:
        yield server


_projects = iter(range(1, 1000))


@pytest.fixture
def project(azdo: AzureDevOpsEmulator) -> Iterator[str]:
    name = f"acme/web{next(_projects)}"
    azdo.add_project(name)
    yield name
    azdo.reset_faults()


def target(azdo: AzureDevOpsEmulator, project: str, **extra: Any) -> AzureDevOpsTarget:
    config = {"id": "azdo-app", **azdo.target_config(project, "secretsmanager:ci/azdo-token"), **extra}
    return AzureDevOpsTarget(AzureDevOpsTargetConfig.model_validate(config), TOKEN, sleep=lambda _: None)


def call(azdo: AzureDevOpsEmulator, method: str, path: str, body: Any = None, *, token: str = TOKEN,
         version: str | None = "7.1") -> tuple[int, Any]:
    url = azdo.url + path + (f"?api-version={version}" if version else "")
    headers = {"Authorization": "Basic " + base64.b64encode(f":{token}".encode()).decode()}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    response = urllib3.request(method, url, body=data, headers=headers, retries=False)
    return response.status, json.loads(response.data) if response.data else None


# -- config -----------------------------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    config = AzureDevOpsTargetConfig.model_validate(BASE)
    assert (config.api_url, config.branch, config.nonce_parameter) == ("https://dev.azure.com", "main", "nonce")
    assert config.variable_store() == ("variablegroup", "acme", "1")
    for field, value in (("organization", "-acme"), ("organization", "acme/web"), ("project", "a/b"),
                         ("variable_group_id", 0), ("pipeline_id", "eleven"), ("nonce_parameter", "no-dash")):
        with pytest.raises(ValidationError):
            AzureDevOpsTargetConfig.model_validate({**BASE, field: value})


# -- the variable group: read-modify-write ----------------------------------------------------------------


def test_a_push_keeps_every_other_variable_and_secret_of_the_group(azdo: AzureDevOpsEmulator, project: str) -> None:
    """PUT replaces the whole group: a client that sent only its own two variables would delete these, and
    one that sent another secret's value as it reads it (null) would need the service to keep it."""
    azdo.set_variable(project, "NPM_TOKEN", "npm-secret-kept-0001", secret=True)
    azdo.set_variable(project, "REGION", "eu-west-1", secret=False)
    client = target(azdo, project)

    client.push(KEY)
    client.push(Credentials("AKIAFAKEFAKEFAKE0002", "second/secret+value/that-must-stay-private"))

    variables = azdo.variables(project)
    assert variables["NPM_TOKEN"] == {"value": "npm-secret-kept-0001", "isSecret": True, "isReadOnly": False}
    assert variables["REGION"]["value"] == "eu-west-1" and not variables["REGION"]["isSecret"]
    assert variables["AWS_ACCESS_KEY_ID"] == {"value": "AKIAFAKEFAKEFAKE0002", "isSecret": True, "isReadOnly": False}
    assert variables["AWS_SECRET_ACCESS_KEY"]["isSecret"] is True


def test_a_push_replaces_a_variable_spelt_in_another_case(azdo: AzureDevOpsEmulator, project: str) -> None:
    azdo.set_variable(project, "aws_access_key_id", "AKIAOLDOLDOLDOLD0000", secret=False)
    target(azdo, project).push(KEY)
    variables = azdo.variables(project)
    assert "aws_access_key_id" not in variables  # names are case-insensitive: one variable, now secret
    assert variables["AWS_ACCESS_KEY_ID"] == {"value": KEY.access_key_id, "isSecret": True, "isReadOnly": False}


def test_the_group_api_shows_secrets_as_null_and_a_put_keeps_a_null_or_absent_secret(
    azdo: AzureDevOpsEmulator, project: str,
) -> None:
    """What the service does, and the emulator models: GET returns secrets as null; a PUT that echoes that
    null (or leaves the value out) keeps the stored secret; a PUT that leaves a variable out deletes it."""
    azdo.set_variable(project, "A_SECRET", "kept-secret-value-0001", secret=True)
    azdo.set_variable(project, "B_SECRET", "kept-secret-value-0002", secret=True)
    azdo.set_variable(project, "DROPPED", "gone-after-put-0003", secret=True)
    config = target(azdo, project).config
    status, group = call(azdo, "GET", f"/acme/{config.project}/_apis/distributedtask/variablegroups/"
                                      f"{config.variable_group_id}")
    assert status == 200 and group["variables"]["A_SECRET"] == {"value": None, "isSecret": True}
    body = {**group, "variables": {"A_SECRET": {"value": None, "isSecret": True}, "B_SECRET": {"isSecret": True}}}
    status, _ = call(azdo, "PUT", f"/acme/_apis/distributedtask/variablegroups/{config.variable_group_id}", body)
    assert status == 200
    assert {n: v["value"] for n, v in azdo.variables(project).items()} == {
        "A_SECRET": "kept-secret-value-0001", "B_SECRET": "kept-secret-value-0002"}


def test_delete_resends_the_rest_of_the_group(azdo: AzureDevOpsEmulator, project: str) -> None:
    azdo.set_variable(project, "NPM_TOKEN", "npm-secret-kept-0001", secret=True)
    client = target(azdo, project)
    client.push(KEY)
    client.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert azdo.variables(project) == {"NPM_TOKEN": {"value": "npm-secret-kept-0001", "isSecret": True,
                                                     "isReadOnly": False}}


def test_a_group_that_does_not_exist_is_a_clear_refusal(azdo: AzureDevOpsEmulator, project: str) -> None:
    client = target(azdo, project, variable_group_id=987654)
    with pytest.raises(TargetPushFailed, match=r"read the variable group refused: .*HTTP 404") as failed:
        client.push(KEY)
    assert failed.value.changed is False and KEY.secret_access_key not in str(failed.value)


# -- authentication ---------------------------------------------------------------------------------------


def test_the_pat_is_basic_with_an_empty_user_name_and_a_wrong_one_is_401(
    azdo: AzureDevOpsEmulator, project: str,
) -> None:
    header = target(azdo, project)._api_headers()["Authorization"]
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == f":{TOKEN}"
    assert call(azdo, "GET", f"/acme/{project.split('/')[1]}/_apis/pipelines/11/runs", token="wrong")[0] == 401


# -- runs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "result", "expected"), [
    ("completed", "succeeded", RunState.SUCCEEDED),
    ("completed", "failed", RunState.FAILED),
    ("completed", "canceled", RunState.FAILED),
    ("completed", "unknown", RunState.FAILED),
    ("canceling", None, RunState.FAILED),  # can only end canceled
    ("inProgress", None, RunState.PENDING),
    ("unknown", None, RunState.PENDING),
    (None, None, RunState.PENDING),
])
def test_run_state_and_result_are_mapped(state: str | None, result: str | None, expected: RunState) -> None:
    assert map_run(state, result).state is expected


def test_build_complete_results_are_mapped() -> None:
    passed = map_build_result("completed", "succeeded")
    assert passed is not None and passed.state is RunState.SUCCEEDED
    for result in ("partiallySucceeded", "failed", "canceled"):
        failed = map_build_result("completed", result)
        assert failed is not None and failed.state is RunState.FAILED
    assert map_build_result("inProgress", None) is None


def test_a_run_carries_the_nonce_and_its_status_is_read_from_the_runs_api(
    azdo: AzureDevOpsEmulator, project: str,
) -> None:
    client = target(azdo, project)
    azdo.fail_next_builds(project)
    run = client.trigger_verification("n-azdo-1")
    organization, pipeline, number = run.run_id.split("/")
    assert (organization, int(pipeline)) == ("acme", client.config.pipeline_id)
    finished = azdo.wait_for_run(int(number), 10)
    assert finished["templateParameters"] == {"nonce": "n-azdo-1"}
    assert finished["resources"]["repositories"]["self"]["refName"] == "refs/heads/main"
    assert client.run_status(run.run_id).state is RunState.FAILED
    # A run of another pipeline or organization is not this target's to read.
    for foreign in (f"other/{pipeline}/{number}", f"acme/{int(pipeline) + 1}/{number}"):
        with pytest.raises(VerificationFailed):
            client.run_status(foreign)


def test_a_gateway_error_after_the_run_was_queued_does_not_queue_a_second(
    azdo: AzureDevOpsEmulator, project: str,
) -> None:
    client = target(azdo, project)
    azdo.hang_next_builds(project, 2)
    azdo.inject_after_effect("POST", r"/runs$", [502])
    run = client.trigger_verification("n-azdo-502")
    status, runs = call(azdo, "GET", f"/acme/{client.config.project}/_apis/pipelines/{client.config.pipeline_id}/runs")
    assert status == 200 and runs["count"] == 1 and run.run_id.endswith(f"/{runs['value'][0]['id']}")


# -- service hooks ----------------------------------------------------------------------------------------


def _event(event_type: str = "build.complete", result: str = "succeeded",
           url: str = "https://dev.azure.com/Acme/16dcfeeb-d8fd-495c-917b-fec46cb44fbb/_apis/build/Builds/2727068",
           **extra: Any) -> bytes:
    payload = {"id": "a0a0a0a0-bbbb-cccc-dddd-e1e1e1e1e1e1", "eventType": event_type, "publisherId": "tfs",
               "resource": {"id": 2727068, "status": "completed", "result": result, "url": url,
                            "definition": {"id": 11, "name": "rotation-verify"}}, **extra}
    return json.dumps(payload).encode()


KEY_PAIR = f"{HOOK_USER}:{HOOK_SECRET}"


def test_a_delivery_with_the_basic_credentials_is_parsed_with_the_event_id() -> None:
    headers = {"Authorization": basic_credentials(HOOK_USER, HOOK_SECRET), "Content-Type": "application/json"}
    event = AzureDevOpsTarget.parse_webhook(headers, _event(), KEY_PAIR)
    assert event.delivery_id == "a0a0a0a0-bbbb-cccc-dddd-e1e1e1e1e1e1"
    assert event.run_id == "acme/11/2727068"  # the organization from the URL, lower-cased as in run ids
    assert event.status is not None and event.status.state is RunState.SUCCEEDED
    legacy = _event(url="https://acme.visualstudio.com/16dcfeeb-d8fd-495c-917b-fec46cb44fbb/_apis/build/Builds/2727068")
    assert AzureDevOpsTarget.parse_webhook(headers, legacy, KEY_PAIR).run_id == "acme/11/2727068"
    other = AzureDevOpsTarget.parse_webhook(headers, _event("git.push"), KEY_PAIR)
    assert (other.run_id, other.status) == (None, None)


@pytest.mark.parametrize("authorization", [
    basic_credentials(HOOK_USER, HOOK_SECRET + "x"),  # wrong password
    basic_credentials("someone-else", HOOK_SECRET),  # wrong user
    f"Bearer {HOOK_SECRET}",
    "Basic not*base64",
    "Basic ",
    "",
])
def test_a_delivery_without_the_right_basic_credentials_is_refused(authorization: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with pytest.raises(WebhookRejected) as refused:
        AzureDevOpsTarget.parse_webhook(headers, _event(), KEY_PAIR)
    assert refused.value.status == 401 and HOOK_SECRET not in refused.value.reason


@pytest.mark.parametrize("body", [b"not json", b"[1]", json.dumps({"eventType": "build.complete"}).encode(),
                                  _event(url="https://example.com/no-api-path")])
def test_a_malformed_delivery_is_400(body: bytes) -> None:
    headers = {"Authorization": basic_credentials(HOOK_USER, HOOK_SECRET)}
    with pytest.raises(WebhookRejected) as refused:
        AzureDevOpsTarget.parse_webhook(headers, body, KEY_PAIR)
    assert refused.value.status == 400


def test_the_emulator_sends_build_complete_with_basic_credentials(project: str) -> None:
    received: list[int] = []
    with AzureDevOpsEmulator(token=TOKEN, aws_endpoint_url="http://127.0.0.1:9", webhook_url="http://127.0.0.1:9/x",
                             webhook_secret=HOOK_SECRET, build_timeout=5) as server:
        server.in_process_builds = True
        server.add_project("acme/hooks")
        client = target(server, "acme/hooks")
        run = client.trigger_verification("n-hook")
        server.wait_for_run(int(run.run_id.rsplit("/", 1)[1]), 10)
        deadline = time.monotonic() + 5
        while not server.deliveries() and time.monotonic() < deadline:
            time.sleep(0.05)
        delivery = server.deliveries()[-1]
        received.append(1)
        event = AzureDevOpsTarget.parse_webhook(delivery["headers"], delivery["body"], server.webhook_key())
    assert received and event.run_id == run.run_id and event.status is not None


# -- the emulator refuses what Microsoft's description refuses --------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "version", "status"), [
    ("GET", "/acme/{project}/_apis/distributedtask/variablegroups/{group}", None, None, 400),  # api-version required
    ("GET", "/acme/{project}/_apis/distributedtask/variablegroups/{group}", None, "6.0", 400),  # not 7.1
    ("GET", "/acme/{project}/_apis/distributedtask/variablegroups/first", None, "7.1", 404),  # groupId: integer
    ("PUT", "/acme/_apis/distributedtask/variablegroups/{group}",
     {"variables": {"AWS_ACCESS_KEY_ID": {"value": 1234, "isSecret": True}}}, "7.1", 400),  # value: string
    ("PUT", "/acme/_apis/distributedtask/variablegroups/{group}",
     {"variables": {"AWS_ACCESS_KEY_ID": {"value": "v", "isSecret": "yes"}}}, "7.1", 400),  # isSecret: boolean
    ("POST", "/acme/{project}/_apis/pipelines/{pipeline}/runs",
     {"templateParameters": {"nonce": 5}}, "7.1", 400),  # template parameters are strings
    ("POST", "/acme/{project}/_apis/pipelines/{pipeline}/runs",
     {"resources": {"repositories": {"self": {"refName": ["main"]}}}}, "7.1", 400),
    ("GET", "/acme/{project}/_apis/pipelines/{pipeline}/run", None, "7.1", 404),  # no such operation
])
def test_the_emulator_refuses_what_the_description_refuses(
    azdo: AzureDevOpsEmulator, project: str, method: str, path: str, body: Any, version: str | None, status: int,
) -> None:
    config = target(azdo, project).config
    before = azdo.variables(project)
    path = path.format(project=config.project, group=config.variable_group_id, pipeline=config.pipeline_id)
    assert call(azdo, method, path, body, version=version)[0] == status
    assert azdo.variables(project) == before


def test_every_request_of_the_client_passes_the_description(azdo: AzureDevOpsEmulator, project: str) -> None:
    before = azdo.spec_refusals()
    client = target(azdo, project)
    client.push(KEY)
    client.push(KEY)
    run = client.trigger_verification("n-azdo-spec")
    client.run_status(run.run_id)
    assert client._find_run("n-azdo-spec") is not None
    client.delete_variables(["AWS_ACCESS_KEY_ID"])
    assert azdo.spec_refusals() == before


# -- the Swagger 2.0 -> OpenAPI 3.0 conversion the vendored description went through ---------------------


def test_swagger2_conversion_maps_parameters_bodies_responses_refs_and_security() -> None:
    from openapi_spec_validator import validate

    from local.emulators.specs import swagger2

    swagger = {
        "swagger": "2.0", "info": {"title": "t", "version": "7.1"}, "host": "dev.azure.com", "basePath": "/",
        "schemes": ["https"],
        "paths": {"/{org}/things/{id}": {"put": {
            "consumes": ["application/json"], "produces": ["application/json"],
            "x-ms-examples": {"e": {"$ref": "./httpExamples/x.json"}},
            "parameters": [{"in": "path", "name": "org", "required": True, "type": "string"},
                           {"in": "path", "name": "id", "required": True, "type": "integer", "format": "int32"},
                           {"in": "body", "name": "body", "required": True, "schema": {"$ref": "#/definitions/Thing"}},
                           {"$ref": "#/parameters/api-Version"}],
            "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/Thing"}}}}}},
        "definitions": {"Thing": {"type": "object", "properties": {"value": {"type": "string"}}}},
        "parameters": {"api-Version": {"in": "query", "name": "api-version", "required": True, "type": "string"}},
        "securityDefinitions": {"accessToken": {"type": "basic"},
                                "oauth2": {"type": "oauth2", "flow": "accessCode", "authorizationUrl": "https://a",
                                           "tokenUrl": "https://t", "scopes": {"vso.build": "b"}}},
        "security": [{"accessToken": []}],
    }
    converted = swagger2.convert(swagger)
    validate(converted)
    put = converted["paths"]["/{org}/things/{id}"]["put"]
    assert put["parameters"][1] == {"in": "path", "name": "id", "required": True,
                                    "schema": {"type": "integer", "format": "int32"}}
    assert put["parameters"][2] == {"$ref": "#/components/parameters/api-Version"}
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}
    assert put["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}
    assert "x-ms-examples" not in put  # they point at files the pruned document does not carry
    schemes = converted["components"]["securitySchemes"]
    assert schemes["accessToken"]["scheme"] == "basic"
    assert schemes["oauth2"]["flows"]["authorizationCode"]["scopes"] == {"vso.build": "b"}
    assert converted["servers"] == [{"url": "https://dev.azure.com"}]

    other = swagger2.convert({**swagger, "paths": {}, "securityDefinitions": {
        "oauth2": {**swagger["securityDefinitions"]["oauth2"], "scopes": {"vso.variablegroups_read": "v"}}}})
    merged = swagger2.merge([converted, other])
    assert set(merged["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]["scopes"]) == {
        "vso.build", "vso.variablegroups_read"}
    clash = swagger2.convert({**swagger, "definitions": {"Thing": {"type": "string"}}})
    with pytest.raises(ValueError, match="Thing differs"):
        swagger2.merge([converted, clash])
    form = {**swagger, "paths": {"/f": {"post": {"parameters": [{"in": "formData", "name": "f", "type": "string"}],
                                                 "responses": {}}}}}
    with pytest.raises(ValueError, match="formData"):
        swagger2.convert(form)


def test_the_vendored_description_names_its_source_and_keeps_the_operations_listed() -> None:
    from local.emulators.specs import HERE
    from local.emulators.specs.prune import operations

    document = json.loads((HERE / "azure_devops.json").read_text())
    assert "vsts-rest-api-specs@" in document["info"]["x-vendored"]["source"]
    assert document["openapi"] == "3.0.3" and document["info"]["version"] == "7.1"
    assert {(m, p) for p, item in document["paths"].items() for m in item if m != "parameters"} == set(
        operations("azure_devops"))


# -- end to end, through the local API Gateway's webhook route ------------------------------------------


def test_a_rotation_verifies_through_the_webhook_route_and_refuses_wrong_credentials(clean_world: World) -> None:
    name = new_user_name("azdo")
    project = f"azure_devops:acme/{name}"
    clean_world.add_user(name, [project])
    ci = clean_world.emulator("azure_devops")
    seen = len(ci.deliveries())

    assert clean_world.rotate(name)["status"] == "SUCCEEDED"

    deliveries = ci.deliveries()[seen:]
    assert deliveries and all(d["status"] in (200, 202) for d in deliveries), [d["status"] for d in deliveries]
    assert_one_active_key_everywhere(clean_world, name)
    assert_no_pipeline_holds_a_dead_key(clean_world, name)
    last = deliveries[-1]
    url = f"{clean_world.runtime.webhook_base_url}/azure_devops"
    forged = {**last["headers"], "Authorization": basic_credentials(HOOK_USER, "guessed-password")}
    assert urllib3.request("POST", url, body=last["body"], headers=forged, retries=False).status == 401
    again = urllib3.request("POST", url, body=last["body"], headers=last["headers"], retries=False)
    assert again.status == 200 and json.loads(again.data) == {"status": "duplicate"}  # same event id
