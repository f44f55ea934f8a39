"""A local GitLab: the REST v4 subset the GitLab target uses, over real HTTP on 127.0.0.1.

Project and group CI/CD variables (create 201 / 400 "has already been taken", update 200 / 404 / 409
"multiple variables" without ``filter[environment_scope]``, masking rules), pipelines started with the API
token or a trigger token, pipeline status, and "Pipeline Hook" webhooks with ``X-Gitlab-Token`` and, by
default, the Standard-Webhooks signature of a ``whsec_`` signing token (docs/ci-providers/gitlab.md).
A pipeline is a real build (``local.build_job``) that sees what a GitLab job would:
group then project variables, protected ones only on a protected ref (``main`` is protected), scoped ones
only when the job's environment matches. Values stay in memory; nothing here prints or logs one.

Group variable updates follow GitLab's source, not its happy path: ``PUT /groups/:id/variables/:key`` looks
the variable up by key *and* ``filter[environment_scope]`` only when a filter is sent, and when that finds
nothing (or no filter is sent) falls back to the first variable with that key in any scope, which it then
overwrites and re-scopes to the ``environment_scope`` it was given (lib/api/group_variables.rb, MR 136475:
https://gitlab.com/gitlab-org/gitlab/-/merge_requests/136475; app/services/ci/change_variable_service.rb
``params[:variable] || find_variable``; https://docs.gitlab.com/api/group_level_variables/). Lists are
paginated (``page``/``per_page``, ``X-Next-Page``) as https://docs.gitlab.com/api/rest/#pagination says.
"""

from __future__ import annotations

import base64
import email.utils
import fnmatch
import hashlib
import hmac
import itertools
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from local import oidc
from local.emulators._runs import RunStore
from local.emulators._server import ApiError, BuildMode, EmulatorServer, Reply, Request, utc_now
from local.emulators.base import emulator

API = "/api/v4"
_ID = r"([^/]+)"
_KEY = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_RATE_LIMIT = 2000
_MASK_MIN_LENGTH = 8
# https://docs.gitlab.com/ci/environments/#limit-the-environment-scope-of-a-cicd-variable; the characters are
# GitLab's environment_scope_regex (lib/gitlab/regex.rb): environment-name characters plus "*".
_SCOPE = re.compile(r"[a-zA-Z0-9_/${}. *-]+")
_DETAILED = {"success": "passed", "failed": "failed", "running": "running", "pending": "pending",
             "created": "created", "canceled": "canceled"}
_MULTIPLE = "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"


@dataclass
class _Variable:
    key: str
    value: str
    environment_scope: str = "*"
    protected: bool = False
    masked: bool = False
    hidden: bool = False
    raw: bool = False
    variable_type: str = "env_var"
    description: str | None = None

    def flags(self) -> dict[str, Any]:
        return {"variable_type": self.variable_type, "key": self.key, "protected": self.protected,
                "masked": self.masked, "hidden": self.hidden, "raw": self.raw,
                "environment_scope": self.environment_scope, "description": self.description}

    def api(self) -> dict[str, Any]:
        # A hidden variable's value is never shown again, as on GitLab.
        return {**self.flags(), "value": None if self.hidden else self.value}

    def applies_to(self, environment: str | None) -> bool:
        """Scoped variables reach only jobs whose ``environment:`` matches; ``*`` reaches every job."""
        if self.environment_scope == "*":
            return True
        return environment is not None and fnmatch.fnmatchcase(environment, self.environment_scope)


@dataclass
class _Group:
    id: int
    full_path: str
    variables: list[_Variable] = field(default_factory=list)


@dataclass
class _Project:
    id: int
    path: str
    #: branch -> protected
    branches: dict[str, bool]
    #: The ``spec: inputs`` its .gitlab-ci.yml declares.
    inputs: frozenset[str]
    #: The ``environment:`` of the verification job (None: none, so only ``*``-scoped variables apply).
    job_environment: str | None
    variables: list[_Variable] = field(default_factory=list)
    trigger_tokens: set[str] = field(default_factory=set)
    #: ``workflow: name:`` of its .gitlab-ci.yml, with ``$[[ inputs.x ]]`` interpolated; None: unnamed.
    pipeline_name: str | None = "verify-$[[ inputs.nonce ]]"

    def api(self, base_url: str) -> dict[str, Any]:
        return {"id": self.id, "name": self.path.rsplit("/", 1)[-1], "path_with_namespace": self.path,
                "web_url": f"{base_url}/{self.path}", "default_branch": "main"}


@dataclass
class _Pipeline:
    id: int
    iid: int
    project: _Project
    ref: str
    source: str
    name: str | None = None
    status: str = "created"
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    log: str = ""

    @property
    def sha(self) -> str:
        return hashlib.sha1(f"{self.project.path}@{self.ref}".encode(), usedforsecurity=False).hexdigest()

    def api(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id, "iid": self.iid, "project_id": self.project.id, "sha": self.sha, "ref": self.ref,
            "name": self.name, "status": self.status, "source": self.source, "before_sha": "0" * 40, "tag": False,
            "yaml_errors": None, "user": {"id": 1, "username": "ci-key-rotator"},
            "created_at": self.created_at, "updated_at": self.updated_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "duration": None, "queued_duration": 0.01, "coverage": None,
            "detailed_status": {"group": self.status, "label": _DETAILED.get(self.status, self.status)},
            "web_url": f"{base_url}/{self.project.path}/-/pipelines/{self.id}",
        }


@emulator
class GitLabEmulator(EmulatorServer):
    """The local GitLab. ``with GitLabEmulator(...) as gl: gl.api_url`` is the API base (``/api/v4``)."""

    provider = "gitlab"
    oidc_profile = oidc.GITLAB
    server_version = "GitLabEmulator/1"

    def __init__(
        self,
        *,
        token: str,
        aws_endpoint_url: str,
        webhook_url: str | None,
        webhook_secret: str,
        region: str = "us-east-1",
        build_timeout: float = 60.0,
        signing: bool = True,
    ) -> None:
        """``webhook_secret`` is the hook's secret token (sent as ``X-Gitlab-Token``), or a ``whsec_``
        signing token (never sent; deliveries are signed). With ``signing`` and a plain secret, the hook also
        gets a random signing token: ``webhook_key()`` then returns it, so only signed deliveries verify."""
        super().__init__(token=token, aws_endpoint_url=aws_endpoint_url, webhook_url=webhook_url,
                         webhook_secret=webhook_secret, region=region, build_timeout=build_timeout)
        if webhook_secret.startswith("whsec_"):
            self._secret_token: str | None = None
            self._signing_token: str | None = webhook_secret
        else:
            self._secret_token = webhook_secret
            self._signing_token = "whsec_" + base64.b64encode(os.urandom(32)).decode() if signing else None
        self._hook_uuid = str(uuid.uuid4())
        self._projects: dict[str, _Project] = {}
        self._groups: dict[str, _Group] = {}
        self._pipelines = RunStore[_Pipeline](self._lock, ids=itertools.count(61_000_001).__next__)
        self._ids = itertools.count(101)
        self._window = (0, 0)
        for kind in ("projects", "groups"):
            owner = rf"{API}/({kind})/{_ID}"
            self.route("POST", rf"{owner}/variables", self._create_variable)
            self.route("GET", rf"{owner}/variables", self._list_variables)
            self.route("PUT", rf"{owner}/variables/([^/]+)", self._update_variable)
            self.route("GET", rf"{owner}/variables/([^/]+)", self._get_variable)
            self.route("DELETE", rf"{owner}/variables/([^/]+)", self._delete_variable)
        self.route("POST", rf"{API}/projects/{_ID}/pipeline", self._create_pipeline)
        self.route("POST", rf"{API}/projects/{_ID}/trigger/pipeline", self._trigger_pipeline, auth=False)
        self.route("GET", rf"{API}/projects/{_ID}/pipelines/(\d+)", self._get_pipeline)
        # https://docs.gitlab.com/api/pipelines/#list-project-pipelines (``name`` since GitLab 15.11)
        self.route("GET", rf"{API}/projects/{_ID}/pipelines", self._list_pipelines)
        # https://docs.gitlab.com/api/jobs/#list-pipeline-jobs, https://docs.gitlab.com/api/jobs/#get-a-log-file
        self.route("GET", rf"{API}/projects/{_ID}/pipelines/(\d+)/jobs", self._list_jobs)
        self.route("GET", rf"{API}/projects/{_ID}/jobs/(\d+)/trace", self._job_trace)

    @property
    def api_url(self) -> str:
        return self.url + API

    # -- setup --------------------------------------------------------------------------------------

    def add_project(
        self,
        name: str,
        *,
        branches: dict[str, bool] | None = None,
        inputs: tuple[str, ...] = ("nonce",),
        job_environment: str | None = None,
    ) -> int:
        """A project at path ``name``; ``branches`` maps branch -> protected (default: main protected,
        develop not). The verification job declares ``inputs`` and runs in ``job_environment``."""
        with self._lock:
            project = _Project(next(self._ids), name, dict(branches or {"main": True, "develop": False}),
                               frozenset(inputs), job_environment)
            self._projects[name.lower()] = project
            return project.id

    def add_group(self, full_path: str) -> int:
        """A group; its variables reach every project whose path is under ``full_path``."""
        with self._lock:
            group = _Group(next(self._ids), full_path)
            self._groups[full_path.lower()] = group
            return group.id

    def add_trigger_token(self, project: str) -> str:
        """A new pipeline trigger token of ``project`` (``glptt-...``)."""
        token = "glptt-" + uuid.uuid4().hex
        with self._lock:
            self._known(project).trigger_tokens.add(token)
        return token

    # -- the CIEmulator contract (emulators/base.py) -------------------------------------------------

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        return {"provider": "gitlab", "api_url": self.api_url, "project": project, "token": token_ref}

    def held_value(self, project: str, name: str) -> str | None:
        return self.variable_value(project, name)

    def webhook_key(self) -> str:
        key = self._signing_token or self._secret_token
        assert key is not None
        return key

    def run_build(self, project: str, ref: str = "main") -> bool:
        """Run the job now with the variables a pipeline on ``ref`` would see; no pipeline, no webhook."""
        with self._lock:
            env, masked = self._job_variables(self._known(project), ref)
        return self._run_job(env, mask=masked, project=project).passed

    # -- introspection ------------------------------------------------------------------------------

    def variable_value(self, project: str, name: str, ref: str = "main") -> str | None:
        """The value a job of ``project`` on ``ref`` would see for ``name``."""
        with self._lock:
            return self._job_variables(self._known(project), ref)[0].get(name)

    def variable_flags(self, owner: str, key: str, environment_scope: str = "*") -> dict[str, Any] | None:
        """A project's (or else a group's) variable as the API shows it, without its value."""
        with self._lock:
            holder = self._projects.get(owner.lower()) or self._groups.get(owner.lower())
            if holder is None:
                raise KeyError(f"no project or group {owner!r}")
            for var in holder.variables:
                if var.key == key and var.environment_scope == environment_scope:
                    return var.flags()
        return None

    def pipelines(self, project: str) -> list[dict[str, Any]]:
        """Every pipeline of ``project``, oldest first, as the API shows it plus the job's masked ``log``."""
        with self._lock:
            return [{**p.api(self.url), "log": p.log} for p in self._pipelines.of(self._project_key(project))]

    def wait_for_pipeline(self, pipeline_id: int | str, timeout: float) -> dict[str, Any]:
        """Wait until the pipeline finished and its webhook (if any) was sent; its API view."""
        pipeline = self._pipelines.wait(int(pipeline_id), timeout)
        with self._lock:
            return {**pipeline.api(self.url), "log": pipeline.log}

    # -- request handling ---------------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        return self._known(name).path.lower()

    def _refuse(self, request: Request) -> Reply | None:
        given = request.headers.get("PRIVATE-TOKEN") or ""
        if not given:
            scheme, _, bearer = (request.headers.get("Authorization") or "").partition(" ")
            given = bearer if scheme.lower() == "bearer" else ""
        if not self._token_ok(given):
            return Reply(401, {"message": "401 Unauthorized"})
        return None

    def _not_found(self) -> Reply:
        return Reply(404, {"error": "404 Not Found"})

    def _rate_headers(self) -> dict[str, str]:
        now = time.time()
        minute = int(now // 60)
        with self._lock:
            start, count = self._window
            self._window = (minute, count + 1 if start == minute else 1)
            used = self._window[1]
        # RateLimit-ResetTime comes with throttled answers only (see _throttle_headers), as documented.
        return {"RateLimit-Limit": str(_RATE_LIMIT), "RateLimit-Observed": str(used),
                "RateLimit-Remaining": str(max(0, _RATE_LIMIT - used)), "RateLimit-Reset": str((minute + 1) * 60)}

    def _throttle_headers(self, status: int, retry_after: float | None) -> dict[str, str]:
        if status != 429:
            return {}
        reset = int(time.time() + (retry_after or 1))
        return {"RateLimit-Remaining": "0", "RateLimit-Reset": str(reset),
                "RateLimit-ResetTime": email.utils.formatdate(reset, usegmt=True)}

    # -- variables ----------------------------------------------------------------------------------

    def _create_variable(self, request: Request, kind: str, ident: str) -> Reply:
        params = _params(request)
        key, value = _required(params, "key"), _required(params, "value")
        if not _KEY.match(key):
            raise ApiError(400, {"key": ["can contain only letters, digits and '_'."]})
        hidden = _bool(params.get("masked_and_hidden"), False)
        var = _Variable(key, value, str(params.get("environment_scope") or "*"),
                        protected=_bool(params.get("protected"), False),
                        masked=hidden or _bool(params.get("masked"), False), hidden=hidden,
                        raw=_bool(params.get("raw"), False), variable_type=_variable_type(params, "env_var"),
                        description=params.get("description"))
        _check_masked(var)
        _check_scope(var)
        with self._lock:
            owner = self._owner(kind, ident)
            if any(v.key == key and v.environment_scope == var.environment_scope for v in owner.variables):
                raise ApiError(400, {"key": [f"({key}) has already been taken"]})
            owner.variables.append(var)
            self._record_secret(value)
            return Reply(201, var.api())

    def _update_variable(self, request: Request, kind: str, ident: str, key: str) -> Reply:
        params = _params(request)
        value = _required(params, "value")
        with self._lock:
            owner = self._owner(kind, ident)
            scope_filter = _bracketed(params, "filter").get("environment_scope")
            if kind == "groups":
                var = _group_variable_for_update(owner.variables, key, scope_filter,
                                                 "filter" in params or any(k.startswith("filter[") for k in params))
            else:
                var = _one_variable(owner.variables, key, scope_filter)
            scope = str(params.get("environment_scope") or var.environment_scope)
            if any(v is not var and v.key == key and v.environment_scope == scope for v in owner.variables):
                raise ApiError(400, {"key": [f"({key}) has already been taken"]})
            updated = _Variable(
                key, value, scope, protected=_bool(params.get("protected"), var.protected),
                # Hidden is for life: it cannot be unmasked.
                masked=var.hidden or _bool(params.get("masked"), var.masked), hidden=var.hidden,
                raw=_bool(params.get("raw"), var.raw), variable_type=_variable_type(params, var.variable_type),
                description=params.get("description", var.description),
            )
            _check_masked(updated)
            _check_scope(updated)
            owner.variables[owner.variables.index(var)] = updated
            self._record_secret(value)
            return Reply(200, updated.api())

    def _list_variables(self, request: Request, kind: str, ident: str) -> Reply:
        try:
            page = max(1, int(request.query.get("page") or 1))
            per_page = min(100, max(1, int(request.query.get("per_page") or 20)))
        except ValueError:
            raise ApiError(400, "page is invalid", body={"error": "page is invalid"}) from None
        with self._lock:
            variables = [v.api() for v in self._owner(kind, ident).variables]
        start = (page - 1) * per_page
        more = start + per_page < len(variables)
        return Reply(200, variables[start:start + per_page],
                     {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Next-Page": str(page + 1) if more else ""})

    def _get_variable(self, request: Request, kind: str, ident: str, key: str) -> Reply:
        with self._lock:
            owner = self._owner(kind, ident)
            scope = _bracketed(dict(request.query), "filter").get("environment_scope")
            return Reply(200, _one_variable(owner.variables, key, scope).api())

    def _delete_variable(self, request: Request, kind: str, ident: str, key: str) -> Reply:
        """204; the key in the filtered scope only, with no key-only fallback (``find_variable`` in
        lib/api/project_variables.rb and group_variables.rb; https://docs.gitlab.com/api/project_level_variables/
        #delete-a-variable, https://docs.gitlab.com/api/group_level_variables/#remove-variable): 404
        "Variable Not Found" / "GroupVariable Not Found" when absent, 409 when several match."""
        scope = _bracketed(_params(request), "filter").get("environment_scope")
        with self._lock:
            owner = self._owner(kind, ident)
            matches = [v for v in owner.variables if v.key == key and (scope is None or v.environment_scope == scope)]
            if not matches:
                raise ApiError(404, "404 GroupVariable Not Found" if kind == "groups" else "404 Variable Not Found")
            if len(matches) > 1:
                raise ApiError(409, _MULTIPLE)
            owner.variables.remove(matches[0])
            return Reply(204)

    def _owner(self, kind: str, ident: str) -> _Project | _Group:
        if kind == "projects":
            return self._project(ident)
        group = self._find(self._groups, ident)
        if group is None:
            raise ApiError(404, "404 Group Not Found")
        return group

    # -- pipelines ----------------------------------------------------------------------------------

    def _create_pipeline(self, request: Request, ident: str) -> Reply:
        params = _params(request)
        with self._lock:
            return self._start_pipeline(self._project(ident), params, "api")

    def _trigger_pipeline(self, request: Request, ident: str) -> Reply:
        params = _params(request)
        token = params.get("token")
        with self._lock:
            project = self._find(self._projects, ident)
            # An unknown project and a wrong token look the same: the endpoint takes no API token.
            if project is None or not isinstance(token, str) or not any(
                hmac.compare_digest(token.encode(), known.encode()) for known in project.trigger_tokens
            ):
                raise ApiError(404, "404 Not Found")
            return self._start_pipeline(project, params, "trigger")

    def _start_pipeline(self, project: _Project, params: dict[str, Any], source: str) -> Reply:
        ref = _required(params, "ref")
        if params.get("variables") or _bracketed(params, "variables"):
            # GitLab.com's default since 17.7 (ci_pipeline_variables_minimum_override_role = no_one_allowed).
            raise ApiError(400, {"base": ["Insufficient permissions to set pipeline variables"]})
        unknown = sorted(set(_bracketed(params, "inputs")) - project.inputs)
        if unknown:
            raise ApiError(400, {"base": [f"`{name}`: unknown input name provided" for name in unknown]})
        if ref not in project.branches:
            raise ApiError(400, {"base": ["Reference not found"]})
        name = project.pipeline_name
        for key, value in _bracketed(params, "inputs").items():
            name = name.replace(f"$[[ inputs.{key} ]]", str(value)) if name else name
        name = None if name and "$[[" in name else name
        inputs = {str(k): str(v) for k, v in _bracketed(params, "inputs").items()}
        pipeline = self._pipelines.create(
            project.path.lower(), lambda pipeline_id, iid: _Pipeline(pipeline_id, iid, project, ref, source, name),
            inputs=inputs)
        mode = self._take_build_mode(project.path.lower())
        self._spawn(self._execute, f"pipeline-{pipeline.id}", pipeline, mode)
        return Reply(201, pipeline.api(self.url))

    def _list_pipelines(self, request: Request, ident: str) -> Reply:
        wanted = {k: request.query[k] for k in ("name", "ref", "source") if k in request.query}
        with self._lock:
            project = self._project(ident)
            found = [p.api(self.url) for p in reversed(self._pipelines.of(project.path.lower()))
                     if all(getattr(p, k) == v for k, v in wanted.items())]
        return Reply(200, found[:100])

    def _get_pipeline(self, _: Request, ident: str, pipeline_id: str) -> Reply:
        with self._lock:
            project = self._project(ident)
            pipeline = self._pipelines.find(int(pipeline_id))
            if pipeline is None or pipeline.project is not project:
                raise ApiError(404, "404 Not found")
            return Reply(200, pipeline.api(self.url))

    def _list_jobs(self, request: Request, ident: str, pipeline_id: str) -> Reply:
        """The pipeline's one job (the verification file's ``rotation-verify``); ``scope``/``scope[]`` filter by
        status as documented."""
        wanted = request.query.get("scope[]") or request.query.get("scope")
        with self._lock:
            project = self._project(ident)
            pipeline = self._pipelines.find(int(pipeline_id))
            if pipeline is None or pipeline.project is not project:
                raise ApiError(404, "404 Not found")
            job = self._job_api(pipeline)
        return Reply(200, [job] if wanted is None or job["status"] == wanted else [])

    def _job_trace(self, _: Request, ident: str, job_id: str) -> Reply:
        """The job's log as ``text/plain`` (masked, as the build wrote it); 404 for a job this project has not."""
        with self._lock:
            project = self._project(ident)
            pipeline = self._pipelines.find(int(job_id) // 10) if int(job_id) % 10 == 0 else None
            if pipeline is None or pipeline.project is not project:
                raise ApiError(404, "404 Not found")
            log = pipeline.log
        return Reply(200, log.encode(), headers={"Content-Type": "text/plain"})

    def _job_api(self, pipeline: _Pipeline) -> dict[str, Any]:
        job_id = _job_id(pipeline)
        return {"id": job_id, "name": "rotation-verify", "stage": "verify", "status": pipeline.status,
                "ref": pipeline.ref, "tag": False, "allow_failure": False, "created_at": pipeline.created_at,
                "started_at": pipeline.started_at, "finished_at": pipeline.finished_at,
                "environment": ({"name": pipeline.project.job_environment}
                                if pipeline.project.job_environment else None),
                "pipeline": {"id": pipeline.id, "project_id": pipeline.project.id, "ref": pipeline.ref,
                             "sha": pipeline.sha, "status": pipeline.status},
                "web_url": f"{self.url}/{pipeline.project.path}/-/jobs/{job_id}"}

    def _execute(self, pipeline: _Pipeline, mode: BuildMode) -> None:
        # A Pipeline Hook goes out on every status change (pending, running, then success or failed:
        # https://docs.gitlab.com/user/project/integrations/webhook_events/#pipeline-events). Each delivery is
        # recorded with the change it reports, so a client that sees the status also finds its delivery; each
        # POST happens outside the lock (the receiver calls back into this server).
        with self._lock:
            self._pipelines.update(pipeline, status="pending", updated_at=utc_now())
            pending = self._pipeline_hook(pipeline)
        self._send_delivery(pending)
        with self._lock:
            # Variables are read when the job starts, as on GitLab.
            env, masked = self._job_variables(pipeline.project, pipeline.ref)
            self._pipelines.update(pipeline, status="running", started_at=utc_now(), updated_at=utc_now())
            running = self._pipeline_hook(pipeline)
        self._send_delivery(running)
        result = self._build_outcome(mode, env, mask=masked, project=pipeline.project.path)
        if result is None:
            return
        try:
            with self._lock:
                now = utc_now()
                self._pipelines.update(pipeline, status="success" if result.passed else "failed", log=result.log,
                                       finished_at=now, updated_at=now)
                finished = self._pipeline_hook(pipeline)
            self._send_delivery(finished)
        finally:
            self._pipelines.settle(pipeline)

    def _job_variables(self, project: _Project, ref: str) -> tuple[dict[str, str], list[str]]:
        """(environment, values to mask) of a job on ``ref``: group variables first (outer groups first),
        then the project's; within one owner a matching specific scope wins over ``*``."""
        protected_ref = project.branches.get(ref, False)
        owners: list[_Project | _Group] = sorted(
            (g for g in self._groups.values() if project.path.lower().startswith(g.full_path.lower() + "/")),
            key=lambda g: len(g.full_path),
        )
        owners.append(project)
        chosen: dict[str, _Variable] = {}
        for owner in owners:
            usable = [v for v in owner.variables if v.applies_to(project.job_environment)
                      and (protected_ref or not v.protected)]
            for var in sorted(usable, key=lambda v: v.environment_scope != "*"):
                chosen[var.key] = var
        return {k: v.value for k, v in chosen.items()}, [v.value for v in chosen.values() if v.masked]

    # -- webhooks -----------------------------------------------------------------------------------

    def _pipeline_hook(self, pipeline: _Pipeline) -> dict[str, Any] | None:
        """Build, sign and record one Pipeline Hook showing the pipeline as it is now (call with the lock
        held); None when none is sent."""
        body = json.dumps(self._hook_payload(pipeline)).encode()
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitLab/18.6.0-emulator",
            "X-Gitlab-Event": "Pipeline Hook",
            "X-Gitlab-Webhook-UUID": self._hook_uuid,
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "X-Gitlab-Instance": self.url,
            "Idempotency-Key": delivery_id,
        }
        if self._secret_token:
            headers["X-Gitlab-Token"] = self._secret_token
        if self._signing_token:
            headers.update(self._signature_headers(delivery_id, body))
        # The start and the end of a pipeline are one reordering stream (out of order, the end arrives before
        # ``running``); ``pending`` is its own, so it goes out alone, after both.
        stream = f"{pipeline.id}:pending" if pipeline.status == "pending" else str(pipeline.id)
        return self._record_delivery(delivery_id, headers, body, stream=stream)

    def _hook_payload(self, pipeline: _Pipeline) -> dict[str, Any]:
        api = pipeline.api(self.url)
        return {
            "object_kind": "pipeline",
            "object_attributes": {
                "id": pipeline.id, "iid": pipeline.iid, "name": None, "ref": pipeline.ref, "tag": False,
                "sha": pipeline.sha, "before_sha": api["before_sha"], "source": pipeline.source,
                "status": pipeline.status, "detailed_status": api["detailed_status"]["label"],
                "stages": ["verify"], "created_at": pipeline.created_at, "finished_at": pipeline.finished_at,
                "duration": None, "queued_duration": 0, "variables": [], "url": api["web_url"],
            },
            "merge_request": None,
            "user": api["user"],
            "project": pipeline.project.api(self.url),
            "builds": [{"id": pipeline.id * 10, "stage": "verify", "name": "verify", "status": pipeline.status,
                        "environment": pipeline.project.job_environment}],
        }

    def _signature_headers(self, webhook_id: str, body: bytes) -> dict[str, str]:
        """Standard Webhooks: v1 HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with the decoded ``whsec_`` key."""
        assert self._signing_token is not None
        timestamp = str(int(time.time()))
        key = base64.b64decode(self._signing_token.removeprefix("whsec_"))
        digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        return {"webhook-id": webhook_id, "webhook-timestamp": timestamp,
                "webhook-signature": "v1," + base64.b64encode(digest).decode()}

    def _redelivery_headers(self, delivery: dict[str, Any]) -> dict[str, str]:
        """Same id and body; a signed delivery is signed again with a fresh timestamp, as on a retry."""
        headers = dict(delivery["headers"])
        if self._signing_token:
            headers.update(self._signature_headers(delivery["id"], delivery["body"]))
        return headers

    # -- lookups ------------------------------------------------------------------------------------

    def _project(self, ident: str) -> _Project:
        project = self._find(self._projects, ident)
        if project is None:
            raise ApiError(404, "404 Project Not Found")
        return project

    @staticmethod
    def _find(table: dict[str, Any], ident: str) -> Any:
        """By numeric id or by (case-insensitive) full path, like GitLab's ``:id``."""
        if ident.isdigit():
            return next((item for item in table.values() if item.id == int(ident)), None)
        return table.get(ident.lower())

    def _known(self, path: str) -> _Project:
        """For the Python-side API: a plain KeyError rather than an HTTP answer."""
        project = self._projects.get(path.lower())
        if project is None:
            raise KeyError(f"no project {path!r}; add_project() first")
        return project


def _job_id(pipeline: _Pipeline) -> int:
    """Each pipeline runs one job; its id is derived so that a job id names its pipeline."""
    return pipeline.id * 10


def _params(request: Request) -> dict[str, Any]:
    """Grape merges the query string and the body (JSON or form) into one set of parameters."""
    params: dict[str, Any] = dict(request.query)
    if request.raw:
        if "application/x-www-form-urlencoded" in (request.headers.get("Content-Type") or ""):
            params.update({k: v[-1] for k, v in parse_qs(request.raw.decode()).items()})
        else:
            params.update(request.json_object())
    return params


def _bracketed(params: dict[str, Any], name: str) -> dict[str, Any]:
    """``name[x]=v`` form/query parameters and a JSON ``name: {x: v}`` object, as one dict."""
    nested = params.get(name)
    found: dict[str, Any] = dict(nested) if isinstance(nested, dict) else {}
    prefix = f"{name}["
    for key, value in params.items():
        if key.startswith(prefix) and key.endswith("]"):
            found[key[len(prefix):-1]] = value
    return found


def _required(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError(400, f"{name} is missing", body={"error": f"{name} is missing"})
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ApiError(400, f"{name} is invalid", body={"error": f"{name} is invalid"})
    return str(value)


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1", "yes")


def _variable_type(params: dict[str, Any], default: str) -> str:
    kind = params.get("variable_type", default)
    if kind not in ("env_var", "file"):
        raise ApiError(400, "variable_type does not have a valid value",
                       body={"error": "variable_type does not have a valid value"})
    return str(kind)


def _check_masked(var: _Variable) -> None:
    """GitLab's masking rules: one line, no spaces, at least 8 characters."""
    if var.masked and (len(var.value) < _MASK_MIN_LENGTH or any(c.isspace() for c in var.value)):
        raise ApiError(400, {"value": ["is invalid"]})


def _check_scope(var: _Variable) -> None:
    """GitLab's environment_scope rule (Ci::Variable validates it with Gitlab::Regex.environment_scope_regex,
    lib/gitlab/regex.rb; docs/ci-providers/gitlab.md "Writing a variable")."""
    if not _SCOPE.fullmatch(var.environment_scope):
        raise ApiError(400, {"environment_scope": [
            "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', '*' and spaces"]})


def _group_variable_for_update(variables: list[_Variable], key: str, scope: str | None,
                               filtered: bool) -> _Variable:
    """GitLab's group update: ``find_variable`` only with a filter (409 if it matches several); whatever it
    does not find, ``find_by!(key:)`` does, in any environment scope (404 only if the key is nowhere)."""
    if filtered:
        matches = [v for v in variables if v.key == key and (scope is None or v.environment_scope == scope)]
        if len(matches) > 1:
            raise ApiError(409, _MULTIPLE)
        if matches:
            return matches[0]
    fallback = [v for v in variables if v.key == key]
    if not fallback:
        raise ApiError(404, "404 GroupVariable Not Found")
    return fallback[0]


def _one_variable(variables: list[_Variable], key: str, scope: str | None) -> _Variable:
    matches = [v for v in variables if v.key == key and (scope is None or v.environment_scope == scope)]
    if not matches:
        raise ApiError(404, "404 Variable Not Found")
    if len(matches) > 1:
        raise ApiError(409, _MULTIPLE)
    return matches[0]
