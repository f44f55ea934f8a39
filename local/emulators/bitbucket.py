"""A local Bitbucket Cloud (REST 2.0, Pipelines): the subset the Bitbucket target uses, on 127.0.0.1.

Repository, workspace and deployment variables (POST 201 / 409 on an existing key, paginated GET with
``next``, PUT by ``{uuid}``), pipeline triggers (201 with ``uuid`` + ``build_number``), pipeline reads by
``{pipeline_uuid}`` only, a pipelines list (``sort``, ``page``/``pagelen``), and HMAC-signed
``repo:commit_status_*`` webhooks, as in docs/ci-providers/bitbucket.md. Builds are real (``local.build_job``).
Values stay in memory; nothing here prints or logs one.

Strict where the API description is: ``GET .../pipelines/{pipeline_uuid}`` names the uuid
(https://developer.atlassian.com/cloud/bitbucket/rest/api-group-pipelines/#api-repositories-workspace-repo-slug-pipelines-pipeline-uuid-get),
so a build number there is refused. Both documented credentials are accepted: access tokens as
``Authorization: Bearer <token>``, and Atlassian API tokens as HTTP Basic ``<atlassian account email>:<token>``
(https://developer.atlassian.com/cloud/bitbucket/rest/intro/#authentication,
https://support.atlassian.com/bitbucket-cloud/docs/using-api-tokens/).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from local import oidc
from local.emulators._runs import RunStore
from local.emulators._server import ApiError, BuildMode, EmulatorServer, Handler, Reply, Request, utc_now
from local.emulators.base import emulator

DEFAULT_PIPELINE = "verify-aws-key"
ENVIRONMENTS = ("Test", "Staging", "Production")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_PAGELEN = 10
_MAX_PAGELEN = 100
_RATE_LIMIT = 1000
_SEG = r"([^/]+)"
_END = r"/?"  # Bitbucket answers with or without the trailing slash


def _braced_uuid() -> str:
    return "{" + str(uuid.uuid4()) + "}"


@dataclass
class _Variable:
    uuid: str
    key: str
    value: str
    secured: bool

    def api(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"type": "pipeline_variable", "uuid": self.uuid, "key": self.key,
                                 "secured": self.secured}
        if not self.secured:  # "The value will never be exposed in the logs or the REST API"
            shown["value"] = self.value
        return shown


@dataclass
class _Store:
    """One place variables live: a workspace, a repository or a deployment environment."""

    variables: dict[str, _Variable] = field(default_factory=dict)

    def values(self) -> dict[str, str]:
        return {v.key: v.value for v in self.variables.values()}

    def secured(self) -> list[str]:
        return [v.value for v in self.variables.values() if v.secured]


@dataclass
class _Environment:
    uuid: str
    name: str
    store: _Store = field(default_factory=_Store)


@dataclass
class _Pipeline:
    uuid: str
    build_number: int
    repo: _Repo
    ref_name: str
    selector: str | None
    variables: list[dict[str, Any]]
    state: dict[str, Any] = field(default_factory=lambda: {"name": "PENDING", "type": "pipeline_state_pending"})
    created_on: str = field(default_factory=utc_now)
    completed_on: str | None = None
    log: str = ""
    #: The verification pipeline's one step (templates/verify/bitbucket/): its log is the build's.
    step_uuid: str = field(default_factory=_braced_uuid)

    def step_api(self) -> dict[str, Any]:
        # A step's state has the pipeline's names under the step's own types (pipeline_step_state_...).
        state = json.loads(json.dumps(self.state).replace('"pipeline_state_', '"pipeline_step_state_'))
        step: dict[str, Any] = {"type": "pipeline_step", "uuid": self.step_uuid, "name": "rotation-verify",
                                "state": state, "started_on": self.created_on}
        if self.completed_on:
            step["completed_on"] = self.completed_on
        return step

    def api(self) -> dict[str, Any]:
        target: dict[str, Any] = {"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": self.ref_name}
        if self.selector:
            target["selector"] = {"type": "custom", "pattern": self.selector}
        return {
            "type": "pipeline", "uuid": self.uuid, "build_number": self.build_number, "state": self.state,
            "target": target, "created_on": self.created_on, "completed_on": self.completed_on,
            "trigger": {"type": "pipeline_trigger_manual"}, "creator": {"type": "user", "nickname": "rotator"},
            "repository": self.repo.api(),
            # Secured pipeline variables are shown without their value, like repository variables.
            "variables": [{k: v for k, v in var.items() if k != "value" or not var.get("secured")}
                          for var in self.variables],
        }


@dataclass
class _Repo:
    workspace: str
    slug: str
    uuid: str
    store: _Store = field(default_factory=_Store)
    environments: dict[str, _Environment] = field(default_factory=dict)
    #: Custom pipelines in bitbucket-pipelines.yml -> the deployment environment name its step uses.
    pipelines: dict[str, str | None] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.workspace}/{self.slug}"

    def api(self) -> dict[str, Any]:
        return {"type": "repository", "full_name": self.full_name, "name": self.slug, "uuid": self.uuid}


@emulator
class BitbucketEmulator(EmulatorServer):
    """The local Bitbucket Cloud API. ``with BitbucketEmulator(...) as bb: bb.url`` is the API base URL."""

    provider = "bitbucket"
    oidc_profile = oidc.BITBUCKET
    server_version = "BitbucketEmulator/1"
    spec = "bitbucket"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The largest page the variables listings serve; a test lowers it to force pagination.
        self.max_pagelen = _MAX_PAGELEN
        #: The Atlassian account an API token belongs to: its Basic auth user name.
        self.account_email = "rotator@example.com"
        self._workspaces: dict[str, _Store] = {}
        self._repos: dict[str, _Repo] = {}
        self._runs = RunStore[_Pipeline](self._lock, ids=_braced_uuid)
        self._hook_uuid = _braced_uuid()
        repo = rf"/repositories/{_SEG}/{_SEG}"
        # (path prefix, the store its groups name, how many path groups name it)
        scopes: tuple[tuple[str, Callable[..., _Store], int], ...] = (
            (f"{repo}/pipelines_config/variables", self._repo_store, 2),
            (rf"/workspaces/{_SEG}/pipelines-config/variables", self._workspace_store, 1),  # sic: hyphen
            (f"{repo}/deployments_config/environments/{_SEG}/variables", self._environment_store, 3),
        )
        for prefix, resolve, arity in scopes:
            for method, path, action in (
                ("GET", prefix, self._list_variables),
                ("POST", prefix, self._create_variable),
                ("GET", f"{prefix}/{_SEG}", self._get_variable),
                ("PUT", f"{prefix}/{_SEG}", self._update_variable),
                ("DELETE", f"{prefix}/{_SEG}", self._delete_variable),
            ):
                self.route(method, path + _END, self._in_store(resolve, arity, action))
        self.route("GET", f"{repo}/environments{_END}", self._list_environments)
        self.route("POST", f"{repo}/pipelines{_END}", self._create_pipeline)
        self.route("GET", f"{repo}/pipelines/{_SEG}{_END}", self._get_pipeline)
        self.route("GET", f"{repo}/pipelines{_END}", self._list_pipelines)
        self.route("GET", f"{repo}/pipelines/{_SEG}/steps{_END}", self._list_steps)
        self.route("GET", f"{repo}/pipelines/{_SEG}/steps/{_SEG}/log", self._get_step_log)

    # -- setup and test controls --------------------------------------------------------------------

    def add_repository(self, full_name: str, pipelines: Mapping[str, str | None] | None = None) -> str:
        """Create ``workspace/slug`` (and its workspace) with Test/Staging/Production environments; its uuid.

        ``pipelines`` maps custom pipeline names to the deployment environment their step uses.
        """
        workspace, slug = full_name.split("/", 1)
        with self._lock:
            self._workspaces.setdefault(workspace.lower(), _Store())
            repo = _Repo(workspace, slug, _braced_uuid(),
                         pipelines=dict(pipelines if pipelines is not None else {DEFAULT_PIPELINE: None}))
            repo.environments = {e.uuid: e for e in (_Environment(_braced_uuid(), name) for name in ENVIRONMENTS)}
            self._repos[full_name.lower()] = repo
            return repo.uuid

    def define_pipeline(self, full_name: str, name: str, environment: str | None = None) -> None:
        """Add a custom pipeline to bitbucket-pipelines.yml; ``environment``: the deployment its step uses."""
        with self._lock:
            self._known(full_name).pipelines[name] = environment

    def environment_uuid(self, full_name: str, name: str) -> str:
        with self._lock:
            return next(e.uuid for e in self._known(full_name).environments.values() if e.name == name)

    def set_variable(self, full_name: str, key: str, value: str, *, secured: bool = False) -> str:
        """A repository variable created directly (as in the web UI); its uuid."""
        with self._lock:
            var = _Variable(_braced_uuid(), key, value, secured)
            self._known(full_name).store.variables[var.uuid] = var
            return var.uuid

    def variables(self, full_name: str, scope: str = "repository", environment: str | None = None,
                  ) -> list[dict[str, Any]]:
        """Every variable's uuid, key and secured flag in one scope (never a value)."""
        with self._lock:
            repo = self._known(full_name)
            if scope == "workspace":
                store = self._workspaces[repo.workspace.lower()]
            elif scope == "deployment":
                store = repo.environments[(environment or "").lower()].store
            else:
                store = repo.store
            return [{"uuid": v.uuid, "key": v.key, "secured": v.secured} for v in store.variables.values()]

    def pipelines(self, full_name: str) -> list[dict[str, Any]]:
        """Every pipeline of ``full_name``, oldest first, as the API shows it plus the build's masked ``log``."""
        with self._lock:
            return [{**p.api(), "log": p.log} for p in self._runs.of(self._project_key(full_name))]

    def reset_faults(self) -> None:
        super().reset_faults()
        self.max_pagelen = _MAX_PAGELEN

    # -- the CIEmulator contract (emulators/base.py) -------------------------------------------------

    def add_project(self, name: str) -> None:
        self.add_repository(name)

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        workspace, slug = project.split("/", 1)
        return {"provider": "bitbucket", "api_url": self.url, "workspace": workspace, "repository": slug,
                "pipeline": DEFAULT_PIPELINE, "token": token_ref}

    def held_value(self, project: str, name: str) -> str | None:
        with self._lock:
            return self._build_env(self._known(project), DEFAULT_PIPELINE).get(name)

    def webhook_key(self) -> str:
        return self._webhook_secret

    def run_build(self, project: str, pipeline: str | None = DEFAULT_PIPELINE) -> bool:
        with self._lock:
            repo = self._known(project)
            env, mask = self._build_env(repo, pipeline), self._secured_values(repo, pipeline)
        return self._run_job(env, mask=mask, project=project).passed

    # -- EmulatorServer hooks -----------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        return self._known(name).full_name.lower()

    def _refuse(self, request: Request) -> Reply | None:
        scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic" and given:
            # An Atlassian API token: the account's email is the user name, the token the password.
            try:
                user, _, given = base64.b64decode(given, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, given = "", ""
            if not hmac.compare_digest(user.lower().encode(), self.account_email.lower().encode()):
                given = ""
        elif scheme.lower() != "bearer":
            given = ""
        if not given:
            return Reply(401, self._error_body("Authentication required"))
        if not self._token_ok(given):
            return Reply(401, self._error_body("Token is invalid, expired, or not supported for this endpoint."))
        return None

    def _rate_headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(_RATE_LIMIT), "X-RateLimit-Resource": "api",
                "X-RateLimit-NearLimit": str(self._requests > _RATE_LIMIT * 0.8).lower(),
                "X-Request-Id": uuid.uuid4().hex}

    def _error_body(self, message: Any) -> Any:
        return {"type": "error", "error": {"message": str(message)}}

    def _not_found(self) -> Reply:
        return Reply(404, self._error_body("Resource not found"))

    def _redelivery_headers(self, delivery: Mapping[str, Any]) -> dict[str, str]:
        # A resend keeps X-Request-UUID (the delivery) and the body's signature; only the attempt grows.
        headers = dict(delivery["headers"])
        headers["X-Attempt-Number"] = str(int(headers.get("X-Attempt-Number", "1")) + 1)
        return headers

    # -- variables ----------------------------------------------------------------------------------

    def _in_store(self, resolve: Callable[..., _Store], arity: int, action: Callable[..., Reply]) -> Handler:
        """A route handler: the first ``arity`` path groups name the store, the rest go to ``action``."""

        def handler(request: Request, *groups: str) -> Reply:
            with self._lock:
                return action(request, resolve(*groups[:arity]), *groups[arity:])

        return handler

    def _repo_store(self, workspace: str, slug: str) -> _Store:
        return self._repo(workspace, slug).store

    def _workspace_store(self, workspace: str) -> _Store:
        store = self._workspaces.get(workspace.lower())
        if store is None:
            raise ApiError(404, f"Workspace {workspace} not found")
        return store

    def _environment_store(self, workspace: str, slug: str, env_uuid: str) -> _Store:
        env = self._repo(workspace, slug).environments.get(env_uuid.lower())
        if env is None:
            raise ApiError(404, "Environment not found")
        return env.store

    def _list_variables(self, request: Request, store: _Store) -> Reply:
        items = [v.api() for v in store.variables.values()]
        return Reply(200, self._page(request, items))

    def _create_variable(self, request: Request, store: _Store) -> Reply:
        body = request.json_object()
        key, value = body.get("key"), body.get("value")
        if not isinstance(key, str) or not _KEY.match(key):
            raise ApiError(400, "Variable key must match [A-Za-z_][A-Za-z0-9_]*.")
        if not isinstance(value, str):
            raise ApiError(400, "Variable value must be a string.")
        if any(v.key == key for v in store.variables.values()):
            raise ApiError(409, "A variable with the provided key already exists.")
        self._record_secret(value)
        var = _Variable(_braced_uuid(), key, value, body.get("secured") is True)
        store.variables[var.uuid] = var
        return Reply(201, var.api(), {"Location": f"{self.url}{request.path.rstrip('/')}/{quote(var.uuid)}"})

    def _get_variable(self, _: Request, store: _Store, var_uuid: str) -> Reply:
        return Reply(200, self._variable(store, var_uuid).api())

    def _update_variable(self, request: Request, store: _Store, var_uuid: str) -> Reply:
        var = self._variable(store, var_uuid)
        body = request.json_object()
        key, value = body.get("key", var.key), body.get("value")
        if not isinstance(key, str) or not _KEY.match(key):
            raise ApiError(400, "Variable key must match [A-Za-z_][A-Za-z0-9_]*.")
        if any(v.key == key and v is not var for v in store.variables.values()):
            raise ApiError(409, "A variable with the provided key already exists.")
        if value is not None:
            if not isinstance(value, str):
                raise ApiError(400, "Variable value must be a string.")
            self._record_secret(value)
            var.value = value
        var.key = key
        if "secured" in body:
            var.secured = body["secured"] is True
        return Reply(200, var.api())

    def _delete_variable(self, _: Request, store: _Store, var_uuid: str) -> Reply:
        del store.variables[self._variable(store, var_uuid).uuid]
        return Reply(204)

    def _variable(self, store: _Store, var_uuid: str) -> _Variable:
        var = store.variables.get(var_uuid.lower())
        if var is None:
            raise ApiError(404, f"Variable {var_uuid} not found")
        return var

    def _page(self, request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Bitbucket pagination: ``values`` plus ``next`` (an absolute URL) while more pages remain."""
        try:
            pagelen = max(1, min(int(request.query.get("pagelen", _DEFAULT_PAGELEN)), self.max_pagelen))
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            raise ApiError(400, "pagelen and page must be integers") from None
        start = (page - 1) * pagelen
        body: dict[str, Any] = {"pagelen": pagelen, "size": len(items), "page": page,
                                "values": items[start:start + pagelen]}
        # Other query parameters (sort, filters) carry over to the neighbouring pages.
        if start + pagelen < len(items):
            body["next"] = f"{self.url}{request.path}?{urlencode({**request.query, 'page': page + 1, 'pagelen': pagelen})}"
        if page > 1:
            body["previous"] = (f"{self.url}{request.path}?"
                                f"{urlencode({**request.query, 'page': page - 1, 'pagelen': pagelen})}")
        return body

    # -- environments and pipelines -----------------------------------------------------------------

    def _list_environments(self, request: Request, workspace: str, slug: str) -> Reply:
        with self._lock:
            envs = [{"type": "deployment_environment", "uuid": e.uuid, "name": e.name,
                     "environment_type": {"name": e.name}} for e in self._repo(workspace, slug).environments.values()]
        return Reply(200, self._page(request, envs))

    def _create_pipeline(self, request: Request, workspace: str, slug: str) -> Reply:
        body = request.json_object()
        target = body.get("target")
        if not isinstance(target, dict) or target.get("type") != "pipeline_ref_target":
            raise ApiError(400, "target must be a pipeline_ref_target")
        ref_name = target.get("ref_name")
        if target.get("ref_type") != "branch" or not isinstance(ref_name, str) or not ref_name:
            raise ApiError(400, "target needs ref_type 'branch' and a ref_name")
        selector = _selector(target.get("selector"))
        variables = body.get("variables") or []
        if not isinstance(variables, list) or not all(isinstance(v, dict) and isinstance(v.get("key"), str)
                                                      for v in variables):
            raise ApiError(400, "variables must be a list of {key, value, secured}")
        with self._lock:
            repo = self._repo(workspace, slug)
            if selector is not None and selector not in repo.pipelines:
                raise ApiError(400, f"Could not find a custom pipeline named '{selector}' in bitbucket-pipelines.yml")
            pipeline = self._runs.create(
                repo.full_name.lower(),
                lambda pipeline_uuid, number: _Pipeline(pipeline_uuid, number, repo, ref_name, selector,
                                                        [dict(v) for v in variables]),
                inputs={str(v["key"]): str(v.get("value", "")) for v in variables})
            mode = self._take_build_mode(repo.full_name.lower())
            shown = pipeline.api()
        self._spawn(self._execute, f"bitbucket-pipeline-{pipeline.build_number}", pipeline, mode)
        return Reply(201, shown, {"Location": f"{self.url}{request.path.rstrip('/')}/{quote(pipeline.uuid)}"})

    def _get_pipeline(self, _: Request, workspace: str, slug: str, ident: str) -> Reply:
        with self._lock:
            repo = self._repo(workspace, slug)
            # The API names the {pipeline_uuid}: a build number is not a pipeline here.
            found = self._runs.find(ident.lower())
            if found is None or found.repo is not repo:
                raise ApiError(404, f"Pipeline {ident} not found")
            return Reply(200, found.api())

    def _pipeline_of(self, workspace: str, slug: str, ident: str) -> _Pipeline:
        """Call with the lock held."""
        repo = self._repo(workspace, slug)
        found = self._runs.find(ident.lower())
        if found is None or found.repo is not repo:
            raise ApiError(404, f"Pipeline {ident} not found")
        return found

    def _list_steps(self, request: Request, workspace: str, slug: str, ident: str) -> Reply:
        with self._lock:
            step = self._pipeline_of(workspace, slug, ident).step_api()
        return Reply(200, self._page(request, [step]))

    def _get_step_log(self, _: Request, workspace: str, slug: str, ident: str, step_uuid: str) -> Reply:
        """The step's raw log (masked as the build wrote it), once the step has run: "a log file does not exist
        for the given step" (404) before."""
        with self._lock:
            pipeline = self._pipeline_of(workspace, slug, ident)
            if step_uuid.lower() != pipeline.step_uuid or pipeline.completed_on is None:
                raise ApiError(404, f"No log file for step {step_uuid}")
            data = pipeline.log.encode()
        return Reply(200, data, {"Content-Type": "application/octet-stream"})

    def _list_pipelines(self, request: Request, workspace: str, slug: str) -> Reply:
        sort = request.query.get("sort", "created_on")
        if sort.lstrip("-") not in ("created_on", "build_number"):
            raise ApiError(400, f"Invalid sort field {sort!r}")
        with self._lock:
            runs = sorted(self._runs.of(self._repo(workspace, slug).full_name.lower()), key=lambda p: p.build_number,
                          reverse=sort.startswith("-"))
            items = [p.api() for p in runs]
        return Reply(200, self._page(request, items))

    def _execute(self, pipeline: _Pipeline, mode: BuildMode) -> None:
        with self._lock:
            repo = pipeline.repo
            # Variables are read when the step starts, as on Bitbucket.
            env = {**self._build_env(repo, pipeline.selector), **_pipeline_variables(pipeline)}
            mask = self._secured_values(repo, pipeline.selector)
            pipeline.state = {"name": "IN_PROGRESS", "type": "pipeline_state_in_progress",
                              "stage": {"name": "RUNNING", "type": "pipeline_state_in_progress_running"}}
            started = self._status_webhook(pipeline, "repo:commit_status_created", "INPROGRESS")
        self._send_delivery(started)
        run = self._build_outcome(mode, env, mask=mask, project=repo.full_name)
        if run is None:
            return
        self._finish(pipeline, "SUCCESSFUL" if run.passed else ("ERROR" if run.timed_out else "FAILED"), run.log)

    def _finish(self, pipeline: _Pipeline, result: str, output: str) -> None:
        """End the pipeline and record its webhook in one step, so a client that sees COMPLETED also finds
        the delivery; the POST happens outside the lock (the receiver calls back into this server)."""
        with self._lock:
            pipeline.state = {"name": "COMPLETED", "type": "pipeline_state_completed",
                              "result": {"name": result, "type": f"pipeline_state_completed_{result.lower()}"}}
            pipeline.completed_on, pipeline.log = utc_now(), output
            status = "SUCCESSFUL" if result == "SUCCESSFUL" else ("STOPPED" if result == "STOPPED" else "FAILED")
            finished = self._status_webhook(pipeline, "repo:commit_status_updated", status)
        try:
            self._send_delivery(finished)
        finally:
            self._runs.settle(pipeline)

    # -- webhooks -----------------------------------------------------------------------------------

    def _status_webhook(self, pipeline: _Pipeline, event: str, state: str) -> dict[str, Any] | None:
        """Build, sign and record one commit-status delivery (call with the lock held); None if none is sent."""
        if not self.webhook_url or self.drop_webhooks:
            return None
        repo = pipeline.repo
        commit = hashlib.sha1(f"{repo.full_name}@{pipeline.ref_name}".encode(), usedforsecurity=False).hexdigest()
        status = {
            "type": "build", "key": _status_key(repo, pipeline),
            "state": state, "name": f"Pipeline #{pipeline.build_number} for {pipeline.ref_name}",
            "refname": pipeline.ref_name,
            "url": f"{self.url}/{repo.full_name}/addon/pipelines/home#!/results/{pipeline.build_number}",
            "description": "", "created_on": pipeline.created_on, "updated_on": utc_now(),
            "commit": {"type": "commit", "hash": commit},
            "repository": repo.api(),
        }
        body = json.dumps({"commit_status": status, "repository": repo.api(),
                           "actor": {"type": "user", "nickname": "rotator"}}).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Bitbucket-Webhooks/2.0",
            "X-Event-Key": event,
            "X-Hook-UUID": self._hook_uuid,
            "X-Request-UUID": str(uuid.uuid4()),
            "X-Attempt-Number": "1",
            "X-Hub-Signature": "sha256=" + hmac.new(self._webhook_secret.encode(), body, hashlib.sha256).hexdigest(),
        }
        # One pipeline's statuses are one stream: out of order, its end arrives before its start.
        return self._record_delivery(headers["X-Request-UUID"], headers, body, stream=pipeline.uuid)

    # -- variables a build sees ---------------------------------------------------------------------

    def _build_env(self, repo: _Repo, pipeline: str | None) -> dict[str, str]:
        """Bitbucket precedence: deployment over repository over workspace variables."""
        env = dict(self._workspaces[repo.workspace.lower()].values())
        env.update(repo.store.values())
        deployment = self._deployment(repo, pipeline)
        if deployment is not None:
            env.update(deployment.store.values())
        return env

    def _secured_values(self, repo: _Repo, pipeline: str | None) -> list[str]:
        # Bitbucket masks secured values in logs; unsecured ones are printed as they are.
        stores = [self._workspaces[repo.workspace.lower()], repo.store]
        deployment = self._deployment(repo, pipeline)
        if deployment is not None:
            stores.append(deployment.store)
        return [value for store in stores for value in store.secured()]

    def _deployment(self, repo: _Repo, pipeline: str | None) -> _Environment | None:
        name = repo.pipelines.get(pipeline) if pipeline else None
        return next((e for e in repo.environments.values() if e.name == name), None) if name else None

    # -- lookups ------------------------------------------------------------------------------------

    def _repo(self, workspace: str, slug: str) -> _Repo:
        repo = self._repos.get(f"{workspace}/{slug}".lower())
        if repo is None:
            raise ApiError(404, f"Repository {workspace}/{slug} not found")
        return repo

    def _known(self, full_name: str) -> _Repo:
        """For the Python-side API: a plain KeyError rather than an HTTP answer."""
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"no repository {full_name!r}; add_repository() first")
        return repo


def _selector(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "custom" or not isinstance(value.get("pattern"), str):
        raise ApiError(400, "selector must be {type: custom, pattern: <name>}")
    return value["pattern"]


def _pipeline_variables(pipeline: _Pipeline) -> dict[str, str]:
    # Only custom pipelines take run-time variables.
    if not pipeline.selector:
        return {}
    return {str(v["key"]): str(v.get("value", "")) for v in pipeline.variables}


def _status_key(repo: _Repo, pipeline: _Pipeline) -> str:
    """Pipelines' opaque commit-status key (a signed 32-bit number), stable per repository and pipeline."""
    digest = hashlib.sha256(f"{repo.uuid}:{pipeline.selector or 'default'}".encode()).digest()
    return str(int.from_bytes(digest[:4], "big", signed=True))
