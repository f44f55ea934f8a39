"""A local Azure DevOps: the REST 7.1 subset the Azure DevOps target uses, over real HTTP on 127.0.0.1.

Variable groups (``GET`` under the project, ``PUT`` under the organization; a PUT replaces the group: a
variable left out is deleted, a secret sent without a value or with a null one keeps its stored value,
secrets read back as null), pipeline runs (the nonce as a declared template parameter, ``refs/heads/``
refs only), run state/result, and "Build completed" service hook deliveries with Basic credentials, as in
docs/ci-providers/azure_devops.md. Every request is checked against Microsoft's description first
(specs/azure_devops.json). A run is a real build of templates/verify/azure_devops/azure-pipelines.yml, read
by :func:`read_template` below as Azure Pipelines reads it: secret variables reach a step only through its
``env:`` mapping. Values stay in memory; nothing here prints or logs one.

Rate limits, switched on with ``limit_rates(tstu_per_request)``: the global consumption limit of 200 TSTUs per
identity in a sliding five minutes, answered as documented
(https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rate-limits): while on, every answer carries
``X-RateLimit-Resource``, ``-Limit``, ``-Remaining`` and ``-Reset`` (epoch seconds when usage would be back to 0).
Over the limit the service first *delays* requests and still serves them, with ``X-RateLimit-Delay`` and a
``Retry-After`` "in any response", and blocks them beyond a level it does not publish (429, ``TF400733``,
``Retry-After``). ``limit_rates(..., block_at=N)`` emulates both (delayed above the limit, blocked above N);
without ``block_at`` a request over the limit is blocked at once. The delay is reported, not slept. Microsoft
publishes no TSTU cost per request, so the caller chooses one.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from local import sim_clock
from local.bin import verify_templates
from local.bin.verify_templates import Job, Step, TemplateError
from local.emulators._runs import RunStore
from local.emulators._server import ApiError, BuildMode, EmulatorServer, Reply, Request, utc_now
from local.emulators.base import emulator

API_VERSION = "7.1"
#: The service hook's Basic user name (any name; the password is the emulator's webhook secret).
HOOK_USER = "ci-key-rotator"
_SEG = r"([^/]+)"
#: https://learn.microsoft.com/en-us/azure/devops/pipelines/process/variables#variable-naming-restrictions
_NAME = re.compile(r"^[A-Za-z0-9._]+$")
_RESERVED_PREFIXES = ("endpoint", "input", "secret", "path", "securefile")
_BRANCHES = frozenset({"main", "develop"})
#: The verification job of the template (Azure job names allow letters, digits and underscores only).
JOB = "rotation_verify"


@dataclass
class _Consumption:
    """The identity's TSTUs in the sliding window, on the simulated clock (``limit_rates``)."""

    tstu_per_request: float
    limit: float
    window_seconds: float
    #: Usage above which requests are blocked; None: at the limit (no delaying).
    block_at: float | None = None
    recent: deque[tuple[float, float]] = field(default_factory=deque)

    def used(self, now: float) -> float:
        while self.recent and now - self.recent[0][0] >= self.window_seconds:
            self.recent.popleft()
        return sum(tstu for _, tstu in self.recent)

    def retry_after(self, now: float, ceiling: float | None = None) -> float:
        """Seconds until enough of the window has slid by for one more request to fit under ``ceiling``
        (default: the limit)."""
        ceiling = self.limit if ceiling is None else ceiling
        used = self.used(now)
        if used + self.tstu_per_request <= ceiling:
            return 0.0
        for at, tstu in self.recent:
            used -= tstu
            if used + self.tstu_per_request <= ceiling:
                return max(0.0, self.window_seconds - (now - at))
        return self.window_seconds

    def blocks(self, now: float) -> bool:
        ceiling = self.limit if self.block_at is None else self.block_at
        return self.used(now) + self.tstu_per_request > ceiling

    def delay_headers(self, now: float) -> dict[str, str]:
        """On an answer served while usage is over the limit (delaying on): how long it was held, and when to
        send the next request."""
        if self.block_at is None or self.used(now) <= self.limit:
            return {}
        return {"X-RateLimit-Remaining": "0", "X-RateLimit-Delay": "0.500",
                "Retry-After": str(math.ceil(self.retry_after(now)))}

    def headers(self, now: float) -> dict[str, str]:
        used = self.used(now)
        # Reset: when usage is back to 0 if consumption stopped now, as the client's wall clock reads it.
        idle_in = self.window_seconds - (now - self.recent[-1][0]) if self.recent else 0.0
        return {"X-RateLimit-Resource": "Core.GlobalConsumption", "X-RateLimit-Limit": f"{self.limit:g}",
                "X-RateLimit-Remaining": f"{max(0.0, self.limit - used):g}",
                "X-RateLimit-Reset": str(math.ceil(time.time() + idle_in))}


@dataclass
class _Variable:
    value: str
    is_secret: bool = False
    is_read_only: bool = False


@dataclass
class _Project:
    organization: str
    name: str
    id: str
    group_id: int
    group_name: str
    pipeline_id: int
    variables: dict[str, _Variable] = field(default_factory=dict)
    description: str = ""

    def reference(self) -> dict[str, Any]:
        return {"name": self.group_name, "description": self.description,
                "projectReference": {"id": self.id, "name": self.name}}

    def group(self) -> dict[str, Any]:
        """The variable group as the API shows it: secret values are null."""
        return {
            "id": self.group_id, "type": "Vsts", "name": self.group_name, "description": self.description,
            "isShared": False, "createdOn": "2026-01-01T00:00:00Z", "modifiedOn": utc_now(),
            "variableGroupProjectReferences": [self.reference()],
            "variables": {n: ({"value": None, "isSecret": True} if v.is_secret else {"value": v.value})
                          | ({"isReadOnly": True} if v.is_read_only else {}) for n, v in self.variables.items()},
        }

    def lookup(self, name: str) -> str | None:
        """The stored spelling of ``name``: variable names are case-insensitive."""
        return next((n for n in self.variables if n.lower() == name.lower()), None)


@dataclass
class _Run:
    id: int
    project: _Project
    branch: str
    parameters: dict[str, str]
    state: str = "inProgress"
    result: str | None = None
    created: str = field(default_factory=utc_now)
    finished: str | None = None
    log: str = ""


@emulator
class AzureDevOpsEmulator(EmulatorServer):
    """The local Azure DevOps; ``url`` is both the API base and the organization host (dev.azure.com)."""

    provider = "azure_devops"
    server_version = "AzureDevOpsEmulator/1"
    spec = "azure_devops"
    #: A finished build as a holder of the webhook credentials could send it, ``@@`` where the parser takes
    #: the run id and ``@ID`` the event id (tests/test_bad_input.py fills them with hostile values).
    hostile_webhook_shape = ('{"id":"@ID","eventType":"build.complete","resource":{"id":@@,"status":"completed",'
                             '"result":"succeeded","definition":{"id":11},'
                             '"url":"https://dev.azure.com/acme/p/_apis/build/Builds/1"}}')

    def __init__(self, *, token: str, aws_endpoint_url: str, webhook_url: str | None, webhook_secret: str,
                 region: str = "us-east-1", build_timeout: float = 60.0) -> None:
        super().__init__(token=token, aws_endpoint_url=aws_endpoint_url, webhook_url=webhook_url,
                         webhook_secret=webhook_secret, region=region, build_timeout=build_timeout)
        self._projects: dict[str, _Project] = {}
        self._group_ids = itertools.count(1)
        self._pipeline_ids = itertools.count(11)
        self._runs = RunStore[_Run](self._lock, ids=itertools.count(2001).__next__)
        self._subscription = str(uuid.uuid4())
        self._notifications = itertools.count(1)
        self._consumption: _Consumption | None = None
        #: Requests refused with 429 since ``limit_rates`` switched the limit on.
        self.rate_limited = 0
        #: Requests served with delay headers (``limit_rates(..., block_at=...)``).
        self.delayed = 0
        base = rf"/{_SEG}/{_SEG}/_apis"
        self.route("GET", rf"{base}/distributedtask/variablegroups/(\d+)", self._get_group)
        self.route("PUT", rf"/{_SEG}/_apis/distributedtask/variablegroups/(\d+)", self._put_group)
        self.route("POST", rf"{base}/pipelines/(\d+)/runs", self._run_pipeline)
        self.route("GET", rf"{base}/pipelines/(\d+)/runs", self._list_runs)
        self.route("GET", rf"{base}/pipelines/(\d+)/runs/(\d+)", self._get_run)

    def limit_rates(self, tstu_per_request: float | None, *, limit: float = 200,
                    window_seconds: float = 300, block_at: float | None = None) -> None:
        """Charge every authenticated request ``tstu_per_request`` TSTUs against the documented 200 per sliding
        five minutes (None: no limit). A request that would go over is blocked with 429, or, with
        ``block_at``, served with delay headers until usage would pass ``block_at``."""
        if block_at is not None and block_at <= limit:
            raise ValueError("block_at is a level above the limit")
        with self._lock:
            self._consumption = None if tstu_per_request is None else _Consumption(
                tstu_per_request, limit, window_seconds, block_at)
            self.rate_limited = 0
            self.delayed = 0

    def reset_faults(self) -> None:
        super().reset_faults()
        with self._lock:
            self._consumption = None

    # -- the CIEmulator contract (emulators/base.py) -------------------------------------------------

    def add_project(self, name: str) -> None:
        """``organization/project``: a project with one variable group and one verification pipeline."""
        organization, _, project = name.partition("/")
        with self._lock:
            group_id, pipeline_id = next(self._group_ids), next(self._pipeline_ids)
            self._projects[_key(organization, project)] = _Project(
                organization, project, str(uuid.uuid4()), group_id, f"aws-{project}", pipeline_id)

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        known = self._known(project)
        return {"provider": "azure_devops", "api_url": self.url, "organization": known.organization,
                "project": known.name, "variable_group_id": known.group_id, "pipeline_id": known.pipeline_id,
                "token": token_ref}

    def held_value(self, project: str, name: str) -> str | None:
        with self._lock:
            known = self._known(project)
            stored = known.lookup(name)
            return None if stored is None else known.variables[stored].value

    def webhook_key(self) -> str:
        return f"{HOOK_USER}:{self._webhook_secret}"

    def run_build(self, project: str) -> bool:
        with self._lock:
            env = self._env(self._known(project))
        return self._run_job(env).passed

    def wait_for_run(self, run_id: int, timeout: float) -> dict[str, Any]:
        """Wait until the run finished and its service hook was attempted; the run as the API shows it."""
        run = self._runs.wait(run_id, timeout)
        with self._lock:
            return {**self._run_api(run), "log": run.log}

    def variables(self, project: str) -> dict[str, dict[str, Any]]:
        """The group's variables with their flags, values included (for tests; the API never shows secrets)."""
        with self._lock:
            return {n: {"value": v.value, "isSecret": v.is_secret, "isReadOnly": v.is_read_only}
                    for n, v in self._known(project).variables.items()}

    def set_variable(self, project: str, name: str, value: str, *, secret: bool = True) -> None:
        """A variable someone set in the UI (another secret of the group, say)."""
        with self._lock:
            self._known(project).variables[name] = _Variable(value, secret)

    @staticmethod
    def signed_delivery(secret: str, payload: bytes, delivery: str) -> tuple[bytes, dict[str, str]]:
        """A delivery as a sender holding the webhook credentials (``user:password``) makes it: the body as
        given, Basic credentials in the header (the event id is in the body, so ``delivery`` is not used)."""
        return payload, {"Content-Type": "application/json; charset=utf-8",
                         "Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}

    # -- request handling ---------------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        known = self._known(name)
        return _key(known.organization, known.name)

    def _refuse(self, request: Request) -> Reply | None:
        scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
        password = ""
        if scheme.lower() == "basic":
            try:
                # A PAT is the password; the user name is ignored (empty or anything).
                password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                password = ""
        if not self._token_ok(password):
            # The service answers 401 (or a sign-in redirect for a browser) without an API error body.
            return Reply(401, None)
        version = request.query.get("api-version")
        if version is not None and version != API_VERSION:
            return Reply(400, self._error_body(f"The requested REST API version of {version} is out of range "
                                               "for this server.", "VssVersionOutOfRangeException"))
        return self._over_limit()

    def _over_limit(self) -> Reply | None:
        with self._lock:
            consumption, now = self._consumption, sim_clock.now()
            if consumption is None:
                return None
            if not consumption.blocks(now):
                consumption.recent.append((now, consumption.tstu_per_request))
                if consumption.used(now) > consumption.limit:
                    self.delayed += 1
                return None
            self.rate_limited += 1
            headers = {**consumption.headers(now), "X-RateLimit-Remaining": "0",
                       "Retry-After": str(math.ceil(consumption.retry_after(now)))}
        message = ("TF400733: The request has been canceled: Request was blocked due to exceeding usage of "
                   "resource 'Core.GlobalConsumption' in namespace 'User'.")
        return Reply(429, self._error_body(message, "RequestBlockedException"), headers)

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            consumption = self._consumption
            if consumption is None:
                return {}
            now = sim_clock.now()
            return {**consumption.headers(now), **consumption.delay_headers(now)}

    def _error_body(self, message: Any, type_key: str = "InvalidRequestException") -> Any:
        return {"$id": "1", "innerException": None, "message": message, "typeName": f"Microsoft.{type_key}",
                "typeKey": type_key, "errorCode": 0, "eventId": 3000}

    # -- variable groups ----------------------------------------------------------------------------

    def _get_group(self, _: Request, organization: str, project: str, group_id: str) -> Reply:
        with self._lock:
            return Reply(200, self._group(organization, project, int(group_id)).group())

    def _put_group(self, request: Request, organization: str, group_id: str) -> Reply:
        body = request.json_object()
        with self._lock:
            known = next((p for p in self._projects.values()
                          if p.organization.lower() == organization.lower() and p.group_id == int(group_id)), None)
            if known is None:
                raise ApiError(404, f"Variable group with id {group_id} does not exist.")
            references = body.get("variableGroupProjectReferences") or []
            named = {str((r.get("projectReference") or {}).get(k) or "").lower()
                     for r in references if isinstance(r, dict) for k in ("id", "name")}
            # The path names no project: the references say which projects the group is in.
            if known.name.lower() not in named and known.id.lower() not in named:
                raise ApiError(400, "Project information name is not valid for variable group.")
            incoming = body.get("variables") or {}
            for name in incoming:
                if not _NAME.match(name) or name.lower().startswith(_RESERVED_PREFIXES):
                    raise ApiError(400, f"Variable name '{name}' is not valid.")
            if len({n.lower() for n in incoming}) != len(incoming):
                raise ApiError(400, "Variable names must be unique (they are case-insensitive).")
            updated: dict[str, _Variable] = {}
            for name, given in incoming.items():
                secret, value = bool(given.get("isSecret")), given.get("value")
                stored = known.lookup(name)
                old = known.variables.get(stored) if stored else None
                if value is None:
                    # No value: a secret keeps its stored one (it was read back as null); anything else is empty.
                    value = old.value if old is not None and old.is_secret and secret else ""
                elif secret:
                    self._record_secret(value)
                updated[name] = _Variable(value, secret, bool(given.get("isReadOnly")))
            # Whatever the body left out is gone: the PUT is the whole group.
            known.variables = updated
            known.group_name = str(body.get("name") or known.group_name)
            known.description = str(body.get("description") or "")
            return Reply(200, known.group())

    # -- pipelines and runs -------------------------------------------------------------------------

    def _run_pipeline(self, request: Request, organization: str, project: str, pipeline_id: str) -> Reply:
        body = request.json_object()
        parameters = body.get("templateParameters") or {}
        ref = (((body.get("resources") or {}).get("repositories") or {}).get("self") or {}).get("refName")
        with self._lock:
            known = self._pipeline(organization, project, int(pipeline_id))
            unexpected = sorted(set(parameters) - {"nonce"})
            if unexpected:
                raise ApiError(400, f"Unexpected parameter '{unexpected[0]}'")
            branch = "main" if ref is None else str(ref).removeprefix("refs/heads/")
            if ref is not None and (not str(ref).startswith("refs/heads/") or branch not in _BRANCHES):
                raise ApiError(400, f"Could not find a ref matching {ref}.")
            mode = self._take_build_mode(_key(known.organization, known.name))
            run = self._runs.create(_key(known.organization, known.name),
                                    lambda run_id, _: _Run(run_id, known, branch, dict(parameters)),
                                    inputs={k: str(v) for k, v in parameters.items()})
            # Variables are read when the job starts, after the run was queued.
            self._spawn(self._execute, f"azure-run-{run.id}", run, mode)
            return Reply(200, self._run_api(run))

    def _list_runs(self, _: Request, organization: str, project: str, pipeline_id: str) -> Reply:
        with self._lock:
            known = self._pipeline(organization, project, int(pipeline_id))
            # The list shows runs without their template parameters; a run's own GET has them.
            runs = [{k: v for k, v in self._run_api(r).items() if k != "templateParameters"}
                    for r in reversed(self._runs.of(_key(known.organization, known.name)))]
            return Reply(200, {"count": len(runs), "value": runs})

    def _get_run(self, _: Request, organization: str, project: str, pipeline_id: str, run_id: str) -> Reply:
        with self._lock:
            known = self._pipeline(organization, project, int(pipeline_id))
            run = self._runs.find(int(run_id))
            if run is None or run.project is not known:
                raise ApiError(404, f"Run {run_id} not found.")
            return Reply(200, self._run_api(run))

    def _run_api(self, run: _Run) -> dict[str, Any]:
        known = run.project
        api = f"{self.url}/{known.organization}/{known.id}/_apis/pipelines/{known.pipeline_id}"
        shown: dict[str, Any] = {
            "id": run.id, "name": f"20260101.{run.id}", "state": run.state, "createdDate": run.created,
            "url": f"{api}/runs/{run.id}", "templateParameters": dict(run.parameters),
            "_links": {"web": {"href": f"{self.url}/{known.organization}/{known.id}/_build/results?buildId={run.id}"}},
            "pipeline": {"id": known.pipeline_id, "name": "rotation-verify", "folder": "\\", "revision": 1,
                         "url": api},
            "resources": {"repositories": {"self": {"refName": f"refs/heads/{run.branch}"}}},
        }
        if run.result is not None:
            shown["result"], shown["finishedDate"] = run.result, run.finished
        return shown

    def _execute(self, run: _Run, mode: BuildMode) -> None:
        with self._lock:
            env = self._env(run.project)
        outcome = self._build_outcome(mode, env, inputs=run.parameters or {"nonce": ""})
        if outcome is None:
            return  # a hung run: inProgress for ever, no service hook
        self._runs.update(run, state="completed", result="succeeded" if outcome.passed else "failed",
                          finished=utc_now(), log=outcome.log)
        try:
            self._send_build_complete(run)
        finally:
            self._runs.settle(run)

    def _env(self, known: _Project) -> dict[str, str]:
        return {n: v.value for n, v in known.variables.items()}

    # -- service hooks ------------------------------------------------------------------------------

    def _send_build_complete(self, run: _Run) -> None:
        with self._lock:
            known = run.project
            build_api = f"{self.url}/{known.organization}/{known.id}/_apis/build/Builds/{run.id}"
            payload = {
                "subscriptionId": self._subscription, "notificationId": next(self._notifications),
                "id": str(uuid.uuid4()), "eventType": "build.complete", "publisherId": "tfs",
                "message": {"text": f"Build 20260101.{run.id} {run.result}"},
                "resource": {
                    "id": run.id, "buildNumber": f"20260101.{run.id}", "status": "completed",
                    "result": run.result, "url": build_api, "finishTime": run.finished,
                    "definition": {"id": known.pipeline_id, "name": "rotation-verify"},
                    "project": {"id": known.id, "name": known.name},
                    "sourceBranch": f"refs/heads/{run.branch}",
                },
                "resourceVersion": "2.0",
                "resourceContainers": {"project": {"id": known.id}},
                "createdDate": run.finished,
            }
        body = json.dumps(payload).encode()
        body, headers = self.signed_delivery(self.webhook_key(), body, payload["id"])
        self._deliver(payload["id"], headers, body)

    # -- lookups ------------------------------------------------------------------------------------

    def _group(self, organization: str, project: str, group_id: int) -> _Project:
        known = self._find(organization, project)
        if known is None or known.group_id != group_id:
            raise ApiError(404, f"Variable group with id {group_id} does not exist.")
        return known

    def _pipeline(self, organization: str, project: str, pipeline_id: int) -> _Project:
        known = self._find(organization, project)
        if known is None or known.pipeline_id != pipeline_id:
            raise ApiError(404, f"Pipeline with id {pipeline_id} not found.")
        return known

    def _find(self, organization: str, project: str) -> _Project | None:
        """A project by name or id (the API takes either), within its organization."""
        return next((p for p in self._projects.values() if p.organization.lower() == organization.lower()
                     and project.lower() in (p.name.lower(), p.id.lower())), None)

    def _known(self, name: str) -> _Project:
        organization, _, project = name.partition("/")
        known = self._projects.get(_key(organization, project))
        if known is None:
            raise KeyError(f"no project {name!r}; add_project() first")
        return known


def _key(organization: str, project: str) -> str:
    return f"{organization.lower()}/{project.lower()}"


# -- the verification pipeline file, as Azure Pipelines reads it ----------------------------------------

_PARAMETER = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PARAMETER_REF = re.compile(r"^parameters\.([A-Za-z_][A-Za-z0-9_]*)$")
_MACRO = re.compile(r"\$\(([A-Za-z0-9._]+)\)")


@verify_templates.reader("azure_devops", "azure_devops/azure-pipelines.yml")
def read_template(text: str, variables: Mapping[str, str], inputs: Mapping[str, str]) -> Job:
    """The ``rotation_verify`` job: template expressions ``${{ parameters.x }}`` (declared parameters, their
    default when not given), then macros ``$(NAME)`` from the pipeline's variables (names case-insensitive;
    an unknown macro stays as written, as Azure Pipelines leaves it). Secret variables are not put in a
    step's environment unless its ``env:`` maps them, so nothing is exported by itself.
    https://learn.microsoft.com/en-us/azure/devops/pipelines/process/variables#secret-variables"""
    doc = verify_templates._mapping(verify_templates.parse(text)[0], "the pipeline")
    declared = doc.get("parameters") or []
    if not isinstance(declared, list):
        raise TemplateError("parameters must be a list")
    values: dict[str, str] = {}
    for parameter in declared:
        parameter = verify_templates._mapping(parameter, "parameters[]")
        name = str(parameter.get("name"))
        if name in inputs:
            values[name] = inputs[name]
        elif "default" in parameter:
            values[name] = str(parameter["default"])
        else:
            raise TemplateError(f"parameter {name!r} has no default and was not given")
    unknown = sorted(set(inputs) - set(values))
    if unknown:
        raise TemplateError(f"undeclared parameter {unknown[0]!r}")  # the service refuses the run

    def expression(match: re.Match[str]) -> str:
        ref = _PARAMETER_REF.match(match.group(1))
        if ref is None or ref.group(1) not in values:
            raise TemplateError(f"unsupported expression ${{{{ {match.group(1)} }}}}")
        return values[ref.group(1)]

    declared_variables = doc.get("variables") or []
    if not isinstance(declared_variables, list) or not any(
            isinstance(v, dict) and v.get("group") for v in declared_variables):
        # Without the link the pipeline cannot see the group the rotator writes.
        raise TemplateError("the pipeline links no variable group (variables: - group: <name>)")
    known = {k.lower(): v for k, v in variables.items()}
    for entry in declared_variables:
        if isinstance(entry, dict) and "name" in entry:
            known[str(entry["name"]).lower()] = _PARAMETER.sub(expression, str(entry.get("value", "")))

    def resolve(value: Any) -> str:
        return _MACRO.sub(lambda m: known.get(m.group(1).lower(), m.group(0)), _PARAMETER.sub(expression, str(value)))

    jobs = doc.get("jobs") or []
    job = next((j for j in jobs if isinstance(j, dict) and j.get("job") == JOB), None) if isinstance(jobs, list) else None
    if job is None:
        raise TemplateError(f"no job {JOB!r}")
    steps = []
    for index, step in enumerate(job.get("steps") or []):
        step = verify_templates._mapping(step, f"{JOB}.steps[{index}]")
        if "checkout" in step:
            continue  # the local build has no repository to check out; the script needs none
        script = step.get("bash", step.get("script"))
        if not isinstance(script, str):
            raise TemplateError(f"{JOB}.steps[{index}] is not a bash or script step")
        env = {str(k): resolve(v) for k, v in (step.get("env") or {}).items()}
        steps.append(Step(str(step.get("displayName") or f"step {index + 1}"), resolve(script), env))
    return Job(tuple(steps), exports_variables=False)
