"""The emulators refuse what the providers' published API descriptions refuse (issue 11).

GitHub, CircleCI and Bitbucket check every request against the official description vendored in
local/emulators/specs/ (openapi-core) before a handler sees it; GitLab and Travis, which publish none, hold
their documented rules in their handlers. A refused request gets the provider's status for a malformed
request and changes nothing; every request the real clients make passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from openapi_spec_validator import validate

from chalicelib.targets.base import Credentials
from chalicelib.targets.registry import provider as provider_class
from local.emulators import specs
from local.emulators._server import EmulatorServer
from local.emulators.base import emulators
from local.emulators.bitbucket import BitbucketEmulator
from local.emulators.circleci import CircleCIEmulator
from local.emulators.github import GitHubEmulator
from local.emulators.gitlab import GitLabEmulator
from local.emulators.specs.prune import operations, prune, source
from local.emulators.travis import TravisEmulator
from local.world import World, split
from tests.conftest import new_user_name

pytestmark = pytest.mark.timeout(120)
TOKEN = "contract-token-0123456789abcdef"
SECRET = "s3cr3t-VALUE-never-echoed-0123456789"
KEY = Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private")
APP_SLUG = "circleci/6f0a1c2e-0000-4000-8000-000000000001/6f0a1c2e-0000-4000-8000-000000000002"
CONTEXT = "6f0a1c2e-0000-4000-8000-00000000000c"
SPEC_CHECKED = ("github", "circleci", "bitbucket")
#: Every emulator that checks requests against a vendored description, found by its ``spec`` (a provider added
#: later runs the description and rotation checks below with no edit here).
DESCRIBED = sorted(name for name, cls in emulators().items() if cls.spec)
AUTH = {
    "github": {"Authorization": f"Bearer {TOKEN}"},
    "circleci": {"Circle-Token": TOKEN},
    "bitbucket": {"Authorization": f"Bearer {TOKEN}"},
    "gitlab": {"PRIVATE-TOKEN": TOKEN},
    "travis": {"Authorization": f"token {TOKEN}", "Travis-API-Version": "3"},
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, EmulatorServer]]:
    """One standalone emulator per provider (no AWS: the requests are what is checked, not the builds)."""
    started: dict[str, EmulatorServer] = {}
    for cls in (GitHubEmulator, CircleCIEmulator, BitbucketEmulator, GitLabEmulator, TravisEmulator):
        server = cls(token=TOKEN, aws_endpoint_url="http://127.0.0.1:9", webhook_url=None,
                     webhook_secret="whsec-contract-0123456789", build_timeout=5)
        server.in_process_builds = True
        started[server.provider] = server.start()
    github, circleci, bitbucket = started["github"], started["circleci"], started["bitbucket"]
    assert isinstance(github, GitHubEmulator) and isinstance(circleci, CircleCIEmulator)
    assert isinstance(bitbucket, BitbucketEmulator)
    github.add_repository("acme/app", environments=("production",))
    github.add_organization("acme")
    circleci.add_project("acme/app")
    bitbucket.add_repository("acme/app")
    started["gitlab"].add_project("acme/app")
    started["travis"].add_project("acme/app")
    yield started
    for server in started.values():
        server.stop()


def call(server: EmulatorServer, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
         **headers: str) -> tuple[int, Any]:
    base = server.api_url if isinstance(server, CircleCIEmulator) else server.url
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    all_headers = {**AUTH[server.provider], **headers}
    if data is not None:
        all_headers.setdefault("Content-Type", "application/json")
    response = urllib3.request(method, base + path, body=data, headers=all_headers, retries=False)
    return response.status, json.loads(response.data) if response.data else None


# -- the vendored descriptions ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", DESCRIBED)
def test_each_description_is_valid_openapi_small_and_names_its_source(provider: str) -> None:
    path = specs.HERE / f"{provider}.json"
    assert path.stat().st_size < 1_000_000
    document = json.loads(path.read_text())
    assert document["info"]["x-vendored"] == source(provider)
    assert {(m, p) for p, item in document["paths"].items() for m in item if m not in ("parameters", "servers")} \
        == set(operations(provider))
    validate(document)  # raises on an invalid OpenAPI document
    validate(specs.merged(provider))  # and as checked, with its overlay


def test_prune_keeps_the_listed_operations_and_what_they_reference_only() -> None:
    full = {
        "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
        "paths": {
            "/a": {"get": {"responses": {"200": {"$ref": "#/components/responses/ok"}}},
                   "delete": {"responses": {"204": {"description": "gone"}}}},
            "/b": {"get": {"responses": {"200": {"description": "b"}}}},
        },
        "components": {
            "responses": {"ok": {"description": "ok", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/thing"}}}}},
            "schemas": {"thing": {"type": "object", "properties": {"part": {"$ref": "#/components/schemas/part"}}},
                        "part": {"type": "string"}, "unused": {"type": "integer"}},
        },
    }
    pruned = prune(full, (("get", "/a"),), "github")
    assert pruned["paths"] == {"/a": {"get": full["paths"]["/a"]["get"]}}
    assert set(pruned["components"]["schemas"]) == {"thing", "part"}
    with pytest.raises(KeyError, match="GET /missing"):
        prune(full, (("get", "/missing"),), "github")


# -- a request the description refuses ---------------------------------------------------------------------

REFUSED = [
    # (provider, method, path, body, status): GitHub answers 422 for a body or query its schema refuses and
    # 404 for anything that names no operation; CircleCI and Bitbucket answer 400 and 404.
    ("github", "PUT", "/repos/acme/app/actions/secrets/AWS_SECRET_ACCESS_KEY",
     {"encrypted_value": SECRET, "key_id": 5}, 422),  # key_id must be a string
    ("github", "POST", "/repos/acme/app/actions/workflows/rotate-verify.yml/dispatches",
     {"inputs": {"nonce": "n-1"}}, 422),  # ref is required
    ("github", "GET", "/repos/acme/app/actions/workflows/rotate-verify.yml/runs?per_page=lots", None, 422),
    ("github", "GET", "/repos/acme/app/actions/runs/latest", None, 404),  # run_id is an integer
    ("github", "GET", "/repos/acme/app/actions/secret/public-key", None, 404),  # unknown path
    ("github", "DELETE", "/repos/acme/app/actions/runs/22000000001", None, 404),  # not an operation here
    ("circleci", "POST", "/project/gh/acme/app/envvar", {"name": "AWS_ACCESS_KEY_ID"}, 400),  # value required
    ("circleci", "PUT", f"/context/{CONTEXT}/environment-variable/AWS_ACCESS_KEY_ID", {"value": 12345678}, 400),
    ("circleci", "POST", "/project/gh/acme/app/pipeline", {"branch": "main", "parameters": {"nonce": [1]}}, 400),
    ("circleci", "POST", f"/project/{APP_SLUG}/pipeline/run",
     {"definition_id": "not-a-uuid", "config": {"branch": "main"}, "checkout": {"branch": "main"}}, 400),
    ("circleci", "GET", "/pipelines/6f0a1c2e-0000-4000-8000-000000000003", None, 404),  # unknown path
    ("bitbucket", "POST", "/repositories/acme/app/pipelines_config/variables/",
     {"type": "pipeline_variable", "key": "AWS_ACCESS_KEY_ID", "value": "v", "secured": "yes"}, 400),
    # What the Bitbucket client sent before it named the type its description requires.
    ("bitbucket", "POST", "/repositories/acme/app/pipelines_config/variables/",
     {"key": "AWS_ACCESS_KEY_ID", "value": "v", "secured": True}, 400),
    ("bitbucket", "POST", "/repositories/acme/app/pipelines/", {"type": "pipeline", "target": "main"}, 400),
    ("bitbucket", "POST", "/repositories/acme/app/pipelines/",  # the target's type is required
     {"target": {"ref_type": "branch", "ref_name": "main"}}, 400),
    ("bitbucket", "POST", "/workspaces/acme/pipelines-config/variables",
     {"type": "pipeline_variable", "key": 7, "value": "v", "secured": True}, 400),
    ("bitbucket", "GET", "/repositories/acme/app/pipelines_config/variable", None, 404),  # unknown path
]


@pytest.mark.parametrize(("provider", "method", "path", "body", "status"), REFUSED,
                         ids=[f"{p}-{m}-{path.split('?')[0]}-{s}" for p, m, path, _, s in REFUSED])
def test_a_request_the_description_refuses_is_refused_and_changes_nothing(
    servers: dict[str, EmulatorServer], provider: str, method: str, path: str, body: Any, status: int,
) -> None:
    server = servers[provider]
    before_refusals, before_secrets = server.spec_refusals(), server.received_secret_sha256s()
    before_state = _state(server)

    got, _ = call(server, method, path, body)

    assert got == status
    refusals = server.spec_refusals()
    assert len(refusals) == len(before_refusals) + 1
    assert refusals[-1].startswith(f"{method} ") and path.split("?")[0].rsplit("/", 1)[-1] in refusals[-1]
    assert server.received_secret_sha256s() == before_secrets
    assert _state(server) == before_state


def _state(server: EmulatorServer) -> Any:
    if isinstance(server, GitHubEmulator):
        return [server.secret_value("acme/app", name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    if isinstance(server, BitbucketEmulator):
        return server.variables("acme/app"), server.variables("acme/app", "workspace"), server.pipelines("acme/app")
    return None


def test_a_refusal_never_repeats_the_value_it_refused(
    servers: dict[str, EmulatorServer], caplog: pytest.LogCaptureFixture,
) -> None:
    github = servers["github"]
    with caplog.at_level(logging.DEBUG):
        status, reply = call(github, "PUT", "/repos/acme/app/actions/secrets/AWS_SECRET_ACCESS_KEY",
                             {"encrypted_value": 7, "key_id": SECRET})
        bb_status, bb_reply = call(servers["bitbucket"], "POST", "/repositories/acme/app/pipelines_config/variables/",
                                   {"type": "pipeline_variable", "key": ["AWS"], "value": SECRET})
    assert (status, bb_status) == (422, 400)
    assert "encrypted_value" in reply["message"] and "key" in json.dumps(bb_reply)
    everything = json.dumps([reply, bb_reply, github.spec_refusals(), servers["bitbucket"].spec_refusals()])
    assert SECRET not in everything and SECRET not in caplog.text


def test_switching_the_description_off_lets_the_malformed_request_through(
    servers: dict[str, EmulatorServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handlers alone would take a secured flag of "yes" as False and store the value in clear: the
    description is what refuses it. Fails if the hook in _server.py is removed."""
    bitbucket = servers["bitbucket"]
    assert isinstance(bitbucket, BitbucketEmulator)
    body = {"type": "pipeline_variable", "key": "LOOSE_FLAG", "value": "plain", "secured": "yes"}
    path = "/repositories/acme/app/pipelines_config/variables/"

    assert call(bitbucket, "POST", path, body)[0] == 400
    assert not [v for v in bitbucket.variables("acme/app") if v["key"] == "LOOSE_FLAG"]

    monkeypatch.setattr(BitbucketEmulator, "spec", None)
    assert call(bitbucket, "POST", path, body)[0] == 201
    assert [v["secured"] for v in bitbucket.variables("acme/app") if v["key"] == "LOOSE_FLAG"] == [False]


def test_github_reads_a_body_sent_without_a_content_type_as_json(servers: dict[str, EmulatorServer]) -> None:
    github = servers["github"]
    body = json.dumps({"ref": "main", "inputs": {"nonce": "n-ct"}}).encode()
    status, _ = call(github, "POST", "/repos/acme/app/actions/workflows/rotate-verify.yml/dispatches",
                     raw=body, **{"Content-Type": "application/x-www-form-urlencoded"})
    assert status in (200, 204)


def test_circleci_refuses_a_body_that_is_not_json(servers: dict[str, EmulatorServer]) -> None:
    status, reply = call(servers["circleci"], "POST", "/project/gh/acme/app/envvar", raw=b"name=A&value=b",
                         **{"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "content type" in reply["message"]


# -- every request the real clients make passes ----------------------------------------------------------


def _scopes(servers: dict[str, EmulatorServer]) -> list[tuple[str, dict[str, Any]]]:
    github, circleci, bitbucket = servers["github"], servers["circleci"], servers["bitbucket"]
    assert isinstance(circleci, CircleCIEmulator) and isinstance(bitbucket, BitbucketEmulator)
    circleci.add_project(APP_SLUG)
    context = circleci.add_context("rotation", used_by=["acme/app"])
    gh = github.target_config("acme/app", "secretsmanager:ci/gh")
    cc = circleci.target_config("acme/app", "secretsmanager:ci/cc")
    bb = bitbucket.target_config("acme/app", "secretsmanager:ci/bb")
    production = bitbucket.environment_uuid("acme/app", "Production")
    return [
        ("github", gh),
        ("github", {**gh, "scope": "environment", "environment": "production"}),
        ("github", {**gh, "scope": "organization", "organization": "acme", "visibility": "private"}),
        ("circleci", cc),
        ("circleci", {**cc, "scope": "context", "context_id": context}),
        ("circleci", {**circleci.target_config(APP_SLUG, "secretsmanager:ci/cc"),
                      "pipeline_definition_id": circleci.definition_id(APP_SLUG)}),
        ("bitbucket", bb),
        ("bitbucket", {**bb, "scope": "workspace"}),
        ("bitbucket", {**bb, "scope": "deployment", "environment_uuid": production}),
    ]


def test_every_request_of_the_real_clients_passes_the_description(servers: dict[str, EmulatorServer]) -> None:
    """push (create, then update), delete (present, then absent), trigger and status for every scope of the
    three clients."""
    before = {p: servers[p].spec_refusals() for p in SPEC_CHECKED}
    for provider, config in _scopes(servers):
        cls = provider_class(provider)
        target = cls(cls.config_model.model_validate({"id": f"contract-{provider}", **config}), TOKEN)
        target.push(KEY)
        target.push(KEY)  # the second push updates what the first created
        target.delete_variables(["AWS_ACCESS_KEY_ID"])
        target.delete_variables(["AWS_ACCESS_KEY_ID"])  # absent now: the 404 path
        target.push(KEY)
        run = target.trigger_verification(f"nonce-{provider}")
        target.run_status(run.run_id)
    assert {p: servers[p].spec_refusals() for p in SPEC_CHECKED} == before
    assert hashlib.sha256(KEY.secret_access_key.encode()).hexdigest() in servers["github"].received_secret_sha256s()


@pytest.mark.parametrize("provider", DESCRIBED)
def test_a_rotation_sends_only_requests_the_description_allows(clean_world: World, provider: str) -> None:
    name = new_user_name(f"{provider[:3]}c")
    project = f"{provider}:acme/{name}" if provider != "github" else f"acme/{name}"
    clean_world.add_user(name, [project])
    emulator = clean_world.emulator(split(project)[0])
    before = emulator.spec_refusals()

    assert clean_world.rotate(name)["status"] == "SUCCEEDED"

    assert emulator.spec_refusals() == before


# -- GitLab and Travis: the documented rules, in their handlers ------------------------------------------


@pytest.mark.parametrize(("fields", "field"), [
    ({"key": "AWS-KEY", "value": "long-enough-value"}, "key"),  # [A-Za-z0-9_] only
    ({"key": "A" * 256, "value": "long-enough-value"}, "key"),  # at most 255
    ({"key": "AWS_KEY", "value": "short", "masked": "true"}, "value"),  # masked: 8 characters or more
    ({"key": "AWS_KEY", "value": "has a space", "masked": "true"}, "value"),  # masked: no spaces
    ({"key": "AWS_KEY", "value": "long-enough-value", "environment_scope": "prod|staging"}, "environment_scope"),
])
def test_gitlab_refuses_what_its_variable_rules_refuse(
    servers: dict[str, EmulatorServer], fields: dict[str, str], field: str,
) -> None:
    """docs/ci-providers/gitlab.md "Writing a variable": key pattern, masking rules, environment scopes
    (GitLab's environment_scope_regex)."""
    status, reply = call(servers["gitlab"], "POST", "/api/v4/projects/acme%2Fapp/variables", fields)
    assert status == 400 and field in reply["message"]
    status, _ = call(servers["gitlab"], "POST", "/api/v4/projects/acme%2Fapp/variables",
                     {"key": "SCOPED_OK", "value": "long-enough-value", "environment_scope": "review/*"})
    assert status in (201, 400)  # 400 only as "already taken" on a rerun of this case


def test_gitlab_refuses_a_bad_scope_on_update_too(servers: dict[str, EmulatorServer]) -> None:
    gitlab = servers["gitlab"]
    assert call(gitlab, "POST", "/api/v4/projects/acme%2Fapp/variables",
                {"key": "SCOPE_UPDATE", "value": "long-enough-value"})[0] == 201
    status, reply = call(gitlab, "PUT", "/api/v4/projects/acme%2Fapp/variables/SCOPE_UPDATE",
                         {"value": "long-enough-value", "environment_scope": "a|b"})
    assert status == 400 and "environment_scope" in reply["message"]


def test_travis_requires_its_api_version_header_and_a_name(servers: dict[str, EmulatorServer]) -> None:
    """docs/ci-providers/travis.md "Authentication and permissions" (Travis-API-Version: 3) and "Writing a
    variable" (env_var.name)."""
    travis = servers["travis"]
    path = "/repo/acme%2Fapp/env_vars"
    status, _ = call(travis, "GET", path, **{"Travis-API-Version": "2"})
    assert status == 400
    status, _ = call(travis, "POST", path, {"env_var.value": "v", "env_var.public": False})
    assert status == 422


def test_an_emulator_prints_nothing_when_a_client_hangs_up_early(capsys: pytest.CaptureFixture[str]) -> None:
    """A client that gives up before its answer (a read timeout under load) is no error of the service's: no
    traceback; any other error of a request still prints one."""
    from local.emulators._server import _HttpHandler, _Server

    server = _Server(("127.0.0.1", 0), _HttpHandler)
    try:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server.handle_error(None, ("127.0.0.1", 1))
        try:
            raise ValueError("a bug in the emulator")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.server_close()
    err = capsys.readouterr().err
    assert "BrokenPipeError" not in err and "ValueError: a bug in the emulator" in err
