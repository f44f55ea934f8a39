"""A local CircleCI: the API v2 subset the CircleCI target uses, over real HTTP on 127.0.0.1.

Project env vars (POST overwrites; values shown as ``xxxx`` + last 4), context env vars (PUT upsert),
pipelines (201, parameters must be declared), pipeline state vs. paginated workflows, and signed
``workflow-completed`` webhooks, as in docs/ci-providers/circleci.md. Each workflow is a real
build (``local.build_job``) seeing project variables overridden by those of the contexts the
project uses. A pipeline on a branch its workflow filters exclude creates no workflow; an unknown branch
or ``error_next_pipelines`` errors it (config error). Values stay in memory; nothing prints or logs one.
Each workflow has one job (the template's ``rotation-verify``, numbered per project): ``GET /workflow/{id}/job``
lists it, ``GET /project/{slug}/{job-number}/artifacts`` what its ``store_artifacts`` kept, downloadable with
the token from ``/output/job/{job-id}/artifacts/0/{path}`` (output.circle-artifacts.com on CircleCI).

Integration kinds, as on CircleCI: an OAuth project (``gh/``, ``bb/``) starts pipelines with
``POST /project/{slug}/pipeline``; a GitHub App / GitLab / standalone project (``circleci/<org-id>/
<project-id>``) is refused there and starts them only with ``POST /project/{slug}/pipeline/run`` and its
pipeline definition id, the slug given as three path segments
(https://circleci.com/docs/api/v2/index.html#operation/triggerPipelineRun,
https://circleci.com/docs/api/v2/index.html#operation/triggerPipeline: "not available for GitHub App or
GitLab projects").

Rate limits: CircleCI documents how a throttled call looks, not how many calls it allows
(https://circleci.com/docs/guides/toolkit/api-developers-guide/#rate-limits): 429, "in most cases" with
``Retry-After`` (seconds), and ``RateLimit-Limit``/``-Remaining``/``-Reset`` and ``X-RateLimit-Limit-<TIME>``/
``X-RateLimit-Remaining``/``X-RateLimit-Reset`` (seconds until the window resets). ``limit_rates(count,
window_seconds)`` switches such a limit on with the test's own figures, on the simulated clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from local import oidc, sim_clock
from local.bin.verify_templates import JOB
from local.emulators._runs import RunStore
from local.emulators._server import ApiError, BuildMode, EmulatorServer, Reply, Request, utc_now
from local.emulators.base import emulator

API = "/api/v2"
#: A slug as three path segments, or one URL-escaped segment (``gh%2Forg%2Frepo``).
_SLUG = r"((?:gh|github|bb|bitbucket|circleci)/[^/]+/[^/]+|[^/]+)"
#: pipeline/run takes the slug only as three segments: an escaped slug is a 404 there.
_SLUG3 = r"((?:gh|github|bb|bitbucket|circleci)/[^/%]+/[^/%]+)"
_ID = r"([^/]+)"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VCS = {"gh": "github", "github": "github", "bb": "bitbucket", "bitbucket": "bitbucket", "circleci": "circleci"}


def _masked(value: str) -> str:
    return "xxxx" + value[-4:]


@dataclass
class _EnvVar:
    value: str
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)


@dataclass
class _Context:
    id: str
    name: str
    variables: dict[str, _EnvVar] = field(default_factory=dict)


@dataclass
class _Project:
    id: str
    slug: str
    #: Pipeline parameters its config declares.
    parameters: frozenset[str]
    #: Names of the workflows its config runs (each one is a build).
    workflows: tuple[str, ...]
    branches: frozenset[str]
    #: Branches the workflows' filters allow; None: every branch.
    workflow_branches: frozenset[str] | None
    #: Workflows that always fail whatever the key (a broken workflow).
    failing_workflows: frozenset[str] = frozenset()
    variables: dict[str, _EnvVar] = field(default_factory=dict)
    #: Ids of the contexts its workflows use, in config order (a later context wins).
    contexts: list[str] = field(default_factory=list)
    #: The pipeline definition ``pipeline/run`` starts (Project settings > Pipelines).
    definition_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def app_integration(self) -> bool:
        """A GitHub App / GitLab / standalone project: no ``POST /project/{slug}/pipeline``."""
        return self.slug.split("/", 1)[0] == "circleci"

    def api(self) -> dict[str, Any]:
        _, org, name = self.slug.split("/")
        return {"id": self.id, "name": name, "slug": self.slug, "organization_name": org}


@dataclass
class _Pipeline:
    id: str
    number: int
    project: _Project
    branch: str
    parameters: dict[str, Any] = field(default_factory=dict)
    state: str = "pending"
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    errors: list[dict[str, str]] = field(default_factory=list)
    workflows: list[_Workflow] = field(default_factory=list)

    @property
    def revision(self) -> str:
        return hashlib.sha1(f"{self.project.slug}@{self.branch}".encode(), usedforsecurity=False).hexdigest()

    def creation(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "number": self.number, "created_at": self.created_at}

    def api(self) -> dict[str, Any]:
        return {
            **self.creation(), "project_slug": self.project.slug, "updated_at": self.updated_at,
            "errors": list(self.errors), "trigger_parameters": dict(self.parameters),
            "trigger": {"type": "api", "received_at": self.created_at, "actor": {"login": "ci-key-rotator"}},
            "vcs": {"branch": self.branch, "revision": self.revision,
                    "provider_name": _VCS[self.project.slug.split("/")[0]]},
        }


@dataclass
class _Throttle:
    """A limit switched on by ``limit_rates``: ``count`` requests of the token per sliding window."""

    count: int
    window_seconds: float
    #: Send ``Retry-After`` with a 429 (CircleCI does "in most cases"); False: only the reset headers.
    retry_after: bool
    #: Simulated-clock times of the requests in the window.
    recent: deque[float] = field(default_factory=deque)

    def headers(self, now: float) -> dict[str, str]:
        while self.recent and now - self.recent[0] >= self.window_seconds:
            self.recent.popleft()
        remaining = max(0, self.count - len(self.recent))
        reset = math.ceil(self.window_seconds - (now - self.recent[0])) if self.recent else 0
        headers = {"RateLimit-Limit": str(self.count), "RateLimit-Remaining": str(remaining),
                   "RateLimit-Reset": str(reset), "X-RateLimit-Remaining": str(remaining),
                   "X-RateLimit-Reset": str(reset)}
        name = _WINDOW_NAMES.get(self.window_seconds)
        if name:
            headers[f"X-RateLimit-Limit-{name}"] = str(self.count)
        return headers


#: The time windows CircleCI names in ``X-RateLimit-Limit-<TIME>``.
_WINDOW_NAMES = {1.0: "Second", 60.0: "Minute", 3600.0: "Hour", 86400.0: "Day"}


@dataclass
class _Workflow:
    id: str
    name: str
    pipeline: _Pipeline
    status: str = "running"
    created_at: str = field(default_factory=utc_now)
    stopped_at: str | None = None
    log: str = ""
    #: Its one job (the template's verification job): the id artifact URLs carry, and the project's job number.
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    job_number: int | None = None
    #: What the job stored (``store_artifacts``): path -> text.
    artifacts: dict[str, str] = field(default_factory=dict)

    def job(self) -> dict[str, Any]:
        """The workflow's job as listWorkflowJobs answers (https://circleci.com/docs/api/v2/index.html#operation/listWorkflowJobs)."""
        status = {"success": "success", "failed": "failed"}.get(self.status, "running")
        job = {"id": self.job_id, "name": JOB, "type": "build", "status": status, "dependencies": [],
               "project_slug": self.pipeline.project.slug, "started_at": self.created_at,
               "stopped_at": self.stopped_at}
        return job if self.job_number is None else {**job, "job_number": self.job_number}

    def api(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "created_at": self.created_at,
                "stopped_at": self.stopped_at, "pipeline_id": self.pipeline.id,
                "pipeline_number": self.pipeline.number, "project_slug": self.pipeline.project.slug,
                "started_by": "ci-key-rotator"}


@emulator
class CircleCIEmulator(EmulatorServer):
    """The local CircleCI. ``with CircleCIEmulator(...) as cc: cc.api_url`` is the API base (``/api/v2``)."""

    provider = "circleci"
    oidc_profile = oidc.CIRCLECI
    server_version = "CircleCIEmulator/1"
    spec = "circleci"

    def __init__(
        self,
        *,
        token: str,
        aws_endpoint_url: str,
        webhook_url: str | None,
        webhook_secret: str,
        region: str = "us-east-1",
        build_timeout: float = 60.0,
    ) -> None:
        super().__init__(token=token, aws_endpoint_url=aws_endpoint_url, webhook_url=webhook_url,
                         webhook_secret=webhook_secret, region=region, build_timeout=build_timeout)
        #: Items per page of every list (workflows, env vars): small values exercise pagination.
        self.page_size = 20
        self._hook_id = str(uuid.uuid4())
        self._org_id = str(uuid.uuid4())
        self._projects: dict[str, _Project] = {}
        self._contexts: dict[str, _Context] = {}
        self._pipelines = RunStore[_Pipeline](self._lock, ids=lambda: str(uuid.uuid4()))
        self._workflows: dict[str, _Workflow] = {}
        self._error_next: dict[str, int] = {}
        self._throttle: _Throttle | None = None
        #: project key -> the last job number given (CircleCI numbers a project's jobs in sequence).
        self._job_numbers: dict[str, int] = {}
        #: Requests refused with 429 since ``limit_rates`` switched the limit on.
        self.rate_limited = 0
        self.route("POST", rf"{API}/project/{_SLUG}/envvar", self._create_env_var)
        self.route("GET", rf"{API}/project/{_SLUG}/envvar", self._list_env_vars)
        self.route("GET", rf"{API}/project/{_SLUG}/envvar/([^/]+)", self._get_env_var)
        self.route("DELETE", rf"{API}/project/{_SLUG}/envvar/([^/]+)", self._delete_env_var)
        self.route("PUT", rf"{API}/context/{_ID}/environment-variable/([^/]+)", self._put_context_var)
        self.route("DELETE", rf"{API}/context/{_ID}/environment-variable/([^/]+)", self._delete_context_var)
        self.route("GET", rf"{API}/context/{_ID}/environment-variable", self._list_context_vars)
        self.route("POST", rf"{API}/project/{_SLUG3}/pipeline/run", self._trigger_pipeline_run)
        self.route("POST", rf"{API}/project/{_SLUG}/pipeline", self._trigger_pipeline)
        self.route("GET", rf"{API}/project/{_SLUG}/pipeline", self._list_pipelines)
        self.route("GET", rf"{API}/pipeline/{_ID}", self._get_pipeline)
        self.route("GET", rf"{API}/pipeline/{_ID}/workflow", self._list_workflows)
        self.route("GET", rf"{API}/workflow/{_ID}", self._get_workflow)
        self.route("GET", rf"{API}/workflow/{_ID}/job", self._list_workflow_jobs)
        self.route("GET", rf"{API}/project/{_SLUG}/(\d+)/artifacts", self._list_job_artifacts)
        # Where artifact URLs point (output.circle-artifacts.com on CircleCI): the same token is required.
        self.route("GET", r"/output/job/([^/]+)/artifacts/0/(.+)", self._download_artifact)

    @property
    def api_url(self) -> str:
        return self.url + API

    # -- setup --------------------------------------------------------------------------------------

    def add_project(
        self,
        name: str,
        *,
        parameters: Iterable[str] = ("nonce",),
        workflows: Sequence[str] = ("verify",),
        branches: Iterable[str] = ("main", "develop"),
        workflow_branches: Iterable[str] | None = None,
        failing_workflows: Iterable[str] = (),
    ) -> str:
        """A project (``org/repo`` becomes ``gh/org/repo``) whose config declares ``parameters`` and runs
        ``workflows``, only on ``workflow_branches`` if given (filters); ``failing_workflows`` always fail.
        Returns its slug."""
        slug = self.slug(name)
        with self._lock:
            project = _Project(str(uuid.uuid4()), slug, frozenset(parameters), tuple(workflows),
                               frozenset(branches), None if workflow_branches is None else frozenset(workflow_branches),
                               frozenset(failing_workflows))
            self._projects[slug.lower()] = project
        return slug

    def add_context(self, name: str, *, used_by: Iterable[str] = ()) -> str:
        """A context whose variables reach the builds of the ``used_by`` projects; its id."""
        context = _Context(str(uuid.uuid4()), name)
        with self._lock:
            self._contexts[context.id] = context
            for project in used_by:
                self._known(project).contexts.append(context.id)
        return context.id

    def error_next_pipelines(self, project: str, n: int = 1) -> None:
        """The next ``n`` pipelines error during setup (a config error): no workflow runs."""
        with self._lock:
            key = self._project_key(project)
            self._error_next[key] = self._error_next.get(key, 0) + n

    def reset_faults(self) -> None:
        super().reset_faults()
        with self._lock:
            self._error_next.clear()
            self._throttle = None

    def limit_rates(self, count: int | None, window_seconds: float = 60.0, *, retry_after: bool = True) -> None:
        """Refuse the token's requests beyond ``count`` per sliding ``window_seconds`` (None: no limit) as
        CircleCI documents a throttled call. CircleCI publishes no figure: these are the caller's."""
        with self._lock:
            self._throttle = None if count is None else _Throttle(count, float(window_seconds), retry_after)
            self.rate_limited = 0

    @staticmethod
    def slug(name: str) -> str:
        """The project slug of ``name``: already a slug, or ``org/repo`` on GitHub."""
        return name if name.split("/")[0] in _VCS and name.count("/") == 2 else f"gh/{name}"

    # -- the CIEmulator contract (emulators/base.py) -------------------------------------------------

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        config = {"provider": "circleci", "api_url": self.api_url, "project_slug": self.slug(project),
                  "token": token_ref, "nonce_parameter": "nonce"}
        known = self._known(project)
        if known.app_integration:
            config["pipeline_definition_id"] = known.definition_id
        return config

    def definition_id(self, project: str) -> str:
        with self._lock:
            return self._known(project).definition_id

    def held_value(self, project: str, name: str) -> str | None:
        with self._lock:
            return self._build_env(self._known(project)).get(name)

    def webhook_key(self) -> str:
        return self._webhook_secret

    def run_build(self, project: str) -> bool:
        """Run the build now with the current variables; no pipeline, no webhook."""
        with self._lock:
            env = self._build_env(self._known(project))
        return self._run_job(env, project=project).passed

    # -- introspection ------------------------------------------------------------------------------

    def pipelines(self, project: str) -> list[dict[str, Any]]:
        """Every pipeline of ``project``, oldest first, with its workflows (each with its masked ``log``)."""
        with self._lock:
            return [{**p.api(), "workflows": [{**w.api(), "log": w.log} for w in p.workflows]}
                    for p in self._pipelines.of(self._project_key(project))]

    def wait_for_pipeline(self, pipeline_id: str, timeout: float) -> dict[str, Any]:
        """Wait until every workflow finished and its webhook was sent (or none will run); the pipeline."""
        pipeline = self._pipelines.wait(pipeline_id, timeout)
        with self._lock:
            return {**pipeline.api(), "workflows": [{**w.api(), "log": w.log} for w in pipeline.workflows]}

    # -- request handling ---------------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        return self._known(name).slug.lower()

    def _refuse(self, request: Request) -> Reply | None:
        given = request.headers.get("Circle-Token") or ""
        scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
        if not given and scheme.lower() == "basic":
            # Basic auth with the token as the user name and an empty password.
            try:
                given = base64.b64decode(credentials).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                given = ""
        if not self._token_ok(given):
            return Reply(401, {"message": "You must log in first."})
        return self._over_limit()

    def _over_limit(self) -> Reply | None:
        with self._lock:
            throttle, now = self._throttle, sim_clock.now()
            if throttle is None:
                return None
            headers = throttle.headers(now)
            if len(throttle.recent) < throttle.count:
                throttle.recent.append(now)
                return None
            self.rate_limited += 1
        if throttle.retry_after:
            headers["Retry-After"] = headers["RateLimit-Reset"]
        return Reply(429, {"message": "Too many requests. Please retry later."}, headers)

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            return {} if self._throttle is None else self._throttle.headers(sim_clock.now())

    def _not_found(self) -> Reply:
        return Reply(404, {"message": "Not found."})

    # -- environment variables ----------------------------------------------------------------------

    def _create_env_var(self, request: Request, slug: str) -> Reply:
        body = request.json_object()
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ApiError(400, "Invalid environment variable name.")
        if not isinstance(value, str):
            raise ApiError(400, "Invalid environment variable value.")
        with self._lock:
            project = self._project(slug)
            # Same name overwrites: the only way the API updates a project variable.
            project.variables[name] = var = _EnvVar(value)
            self._record_secret(value)
        return Reply(201, {"name": name, "value": _masked(value), "created-at": var.created_at})

    def _list_env_vars(self, request: Request, slug: str) -> Reply:
        with self._lock:
            items = [{"name": n, "value": _masked(v.value), "created-at": v.created_at}
                     for n, v in sorted(self._project(slug).variables.items())]
        return Reply(200, self._page(items, request))

    def _get_env_var(self, _: Request, slug: str, name: str) -> Reply:
        with self._lock:
            var = self._project(slug).variables.get(name)
            if var is None:
                raise ApiError(404, "Environment variable not found.")
            return Reply(200, {"name": name, "value": _masked(var.value), "created-at": var.created_at})

    def _put_context_var(self, request: Request, context_id: str, name: str) -> Reply:
        value = request.json_object().get("value")
        if not _NAME.match(name):
            raise ApiError(400, "Invalid environment variable name.")
        if not isinstance(value, str):
            raise ApiError(400, "Invalid environment variable value.")
        with self._lock:
            context = self._context(context_id)
            old = context.variables.get(name)
            var = _EnvVar(value, created_at=old.created_at if old else utc_now())
            context.variables[name] = var
            self._record_secret(value)
        # The value is never returned.
        return Reply(200, {"variable": name, "context_id": context_id, "created_at": var.created_at,
                           "updated_at": var.updated_at})

    # Both deletes answer 200 with a MessageResponse (https://circleci.com/docs/api/v2/index.html#operation/deleteEnvVar,
    # #operation/deleteEnvironmentVariableFromContext); a name that is not there answers 404 as GET does.

    def _delete_env_var(self, _: Request, slug: str, name: str) -> Reply:
        with self._lock:
            if self._project(slug).variables.pop(name, None) is None:
                raise ApiError(404, "Environment variable not found.")
        return Reply(200, {"message": "Environment variable deleted."})

    def _delete_context_var(self, _: Request, context_id: str, name: str) -> Reply:
        with self._lock:
            if self._context(context_id).variables.pop(name, None) is None:
                raise ApiError(404, "Environment variable not found.")
        return Reply(200, {"message": "Environment variable deleted."})

    def _list_context_vars(self, request: Request, context_id: str) -> Reply:
        with self._lock:
            items = [{"variable": n, "context_id": context_id, "created_at": v.created_at,
                      "updated_at": v.updated_at} for n, v in sorted(self._context(context_id).variables.items())]
        return Reply(200, self._page(items, request))

    def _build_env(self, project: _Project) -> dict[str, str]:
        """Project variables, overridden by those of the contexts the workflows use."""
        env = {n: v.value for n, v in project.variables.items()}
        for context_id in project.contexts:
            env.update({n: v.value for n, v in self._contexts[context_id].variables.items()})
        return env

    # -- pipelines and workflows --------------------------------------------------------------------

    def _trigger_pipeline(self, request: Request, slug: str) -> Reply:
        body = request.json_object()
        branch = body.get("branch") or body.get("tag") or "main"
        with self._lock:
            if self._project(slug).app_integration:
                raise ApiError(400, "Triggering a pipeline with this endpoint is not supported for GitHub App "
                                    "or GitLab projects; use POST /project/{project-slug}/pipeline/run.")
        return self._start(slug, branch, body.get("parameters", {}))

    def _trigger_pipeline_run(self, request: Request, slug: str) -> Reply:
        body = request.json_object()
        definition = body.get("definition_id")
        config, checkout = body.get("config") or {}, body.get("checkout") or {}
        if not isinstance(config, dict) or not isinstance(checkout, dict):
            raise ApiError(400, "Invalid config or checkout.")
        branch = config.get("branch") or checkout.get("branch") or "main"
        with self._lock:
            if definition != self._project(slug).definition_id:
                raise ApiError(404, "Pipeline definition not found.")
        return self._start(slug, branch, body.get("parameters", {}))

    def _start(self, slug: str, branch: Any, parameters: Any) -> Reply:
        if not isinstance(branch, str):
            raise ApiError(400, "Invalid branch.")
        if not isinstance(parameters, dict):
            raise ApiError(400, "Invalid parameters.")
        with self._lock:
            project = self._project(slug)
            unexpected = sorted(set(parameters) - project.parameters)
            if unexpected:
                raise ApiError(400, f"Unexpected argument(s): {', '.join(unexpected)}")
            pipeline = self._pipelines.create(
                project.slug.lower(),
                lambda pipeline_id, number: _Pipeline(pipeline_id, number, project, branch, dict(parameters)),
                inputs={str(k): str(v) for k, v in parameters.items()})
            errored = self._take_error(project.slug.lower()) or branch not in project.branches
            mode = self._take_build_mode(project.slug.lower())
            self._spawn(self._execute, f"pipeline-{pipeline.number}", pipeline, mode, errored)
            return Reply(201, pipeline.creation())

    def _list_pipelines(self, request: Request, slug: str) -> Reply:
        branch = request.query.get("branch")
        with self._lock:
            project = self._project(slug)
            items = [p.api() for p in reversed(self._pipelines.of(project.slug.lower()))
                     if branch is None or p.branch == branch]
        return Reply(200, self._page(items, request))

    def _take_error(self, key: str) -> bool:
        if self._error_next.get(key):
            self._error_next[key] -= 1
            return True
        return False

    def _get_pipeline(self, _: Request, pipeline_id: str) -> Reply:
        with self._lock:
            return Reply(200, self._pipeline(pipeline_id).api())

    def _list_workflows(self, request: Request, pipeline_id: str) -> Reply:
        with self._lock:
            items = [w.api() for w in self._pipeline(pipeline_id).workflows]
        return Reply(200, self._page(items, request))

    def _list_workflow_jobs(self, request: Request, workflow_id: str) -> Reply:
        with self._lock:
            workflow = self._workflows.get(workflow_id)
            if workflow is None:
                raise ApiError(404, "Workflow not found")
            items = [workflow.job()]
        return Reply(200, self._page(items, request))

    def _list_job_artifacts(self, request: Request, slug: str, number: str) -> Reply:
        """getJobArtifacts: each stored file with the URL its contents are downloaded from (with the token)."""
        with self._lock:
            project = self._project(slug)
            workflow = next((w for w in self._workflows.values()
                             if w.pipeline.project is project and w.job_number == int(number)), None)
            if workflow is None:
                raise ApiError(404, "Job not found")
            items = [{"path": path, "node_index": 0,
                      "url": f"{self.url}/output/job/{workflow.job_id}/artifacts/0/{quote(path)}"}
                     for path in sorted(workflow.artifacts)]
        return Reply(200, self._page(items, request))

    def _download_artifact(self, _: Request, job_id: str, path: str) -> Reply:
        with self._lock:
            workflow = next((w for w in self._workflows.values() if w.job_id == job_id), None)
            text = None if workflow is None else workflow.artifacts.get(path)
        if text is None:
            return self._not_found()
        return Reply(200, text.encode(), {"Content-Type": "text/plain"})

    def _check_description(self, request: Request) -> Reply | None:
        # Artifact downloads are served by CircleCI's storage host, which the API description does not cover.
        if request.path.startswith("/output/job/"):
            return None
        return super()._check_description(request)

    def _get_workflow(self, _: Request, workflow_id: str) -> Reply:
        with self._lock:
            workflow = self._workflows.get(workflow_id)
            if workflow is None:
                raise ApiError(404, "Workflow not found")
            return Reply(200, workflow.api())

    def _execute(self, pipeline: _Pipeline, mode: BuildMode, errored: bool) -> None:
        with self._lock:
            project = pipeline.project
            pipeline.updated_at = utc_now()
            if errored:
                pipeline.state = "errored"
                pipeline.errors.append({"type": "config-fetch",
                                        "message": f"Unable to set up pipeline on branch {pipeline.branch}"})
                self._pipelines.settle(pipeline)
                return
            runs = project.workflow_branches is None or pipeline.branch in project.workflow_branches
            # Workflows appear with the "created" state, in one step, so a reader never sees one without them.
            pipeline.workflows = [_Workflow(str(uuid.uuid4()), name, pipeline) for name in project.workflows
                                  if runs]
            self._workflows.update({w.id: w for w in pipeline.workflows})
            for workflow in pipeline.workflows:
                key = project.slug.lower()
                workflow.job_number = self._job_numbers[key] = self._job_numbers.get(key, 0) + 1
            pipeline.state = "created"
            # Variables are read when the jobs start, as on CircleCI.
            env = self._build_env(project)
        if mode == "hang":
            return
        try:
            for workflow in pipeline.workflows:
                self._run_workflow(workflow, mode, env)
        finally:
            self._pipelines.settle(pipeline)

    def _run_workflow(self, workflow: _Workflow, mode: BuildMode, env: dict[str, str]) -> None:
        if workflow.name in workflow.pipeline.project.failing_workflows:
            mode = "fail"
        result = self._build_outcome(mode, env, inputs=self._pipelines.inputs_of(workflow.pipeline),
                                     project=workflow.pipeline.project.slug)
        assert result is not None, "a hanging pipeline runs no workflow"
        with self._lock:
            workflow.status, workflow.log, workflow.stopped_at = (
                "success" if result.passed else "failed"), result.log, utc_now()
            workflow.artifacts = dict(result.artifacts)
        self._send_workflow_completed(workflow)

    def _page(self, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
        """One page of ``items`` and the opaque token of the next (``page-token``), like every v2 list."""
        token = request.query.get("page-token")
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ApiError(400, "Invalid page-token.") from None
        end = start + max(1, self.page_size)
        more = end < len(items)
        return {"items": items[start:end],
                "next_page_token": base64.urlsafe_b64encode(str(end).encode()).decode() if more else None}

    # -- webhooks -----------------------------------------------------------------------------------

    def _send_workflow_completed(self, workflow: _Workflow) -> None:
        with self._lock:
            pipeline, project = workflow.pipeline, workflow.pipeline.project
            payload = {
                "type": "workflow-completed",
                "id": str(uuid.uuid4()),
                "happened_at": workflow.stopped_at,
                "webhook": {"id": self._hook_id, "name": "ci-key-rotator"},
                "workflow": {"id": workflow.id, "name": workflow.name, "status": workflow.status,
                             "created_at": workflow.created_at, "stopped_at": workflow.stopped_at,
                             "url": f"{self.url}/pipelines/{project.slug}/{pipeline.number}/workflows/{workflow.id}"},
                "pipeline": {"id": pipeline.id, "number": pipeline.number, "created_at": pipeline.created_at,
                             "trigger": {"type": "api"}, "vcs": pipeline.api()["vcs"]},
                "project": {"id": project.id, "name": project.slug.rsplit("/", 1)[-1], "slug": project.slug},
                "organization": {"id": self._org_id, "name": project.slug.split("/")[1]},
            }
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "CircleCI-Webhook/1.0",
            "Circleci-Event-Type": "workflow-completed",
            "Circleci-Signature": "v1=" + hmac.new(self._webhook_secret.encode(), body, hashlib.sha256).hexdigest(),
        }
        self._deliver(payload["id"], headers, body)

    # -- lookups ------------------------------------------------------------------------------------

    def _project(self, slug: str) -> _Project:
        project = self._projects.get(slug.lower())
        if project is None:
            raise ApiError(404, "Project not found")
        return project

    def _context(self, context_id: str) -> _Context:
        context = self._contexts.get(context_id)
        if context is None:
            raise ApiError(404, "Context not found")
        return context

    def _pipeline(self, pipeline_id: str) -> _Pipeline:
        pipeline = self._pipelines.find(pipeline_id)
        if pipeline is None:
            raise ApiError(404, "Pipeline not found")
        return pipeline

    def _known(self, name: str) -> _Project:
        """For the Python-side API: a plain KeyError rather than an HTTP answer."""
        project = self._projects.get(self.slug(name).lower())
        if project is None:
            raise KeyError(f"no project {name!r}; add_project() first")
        return project
