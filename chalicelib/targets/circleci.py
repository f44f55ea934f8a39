"""CircleCI (API v2): project or context environment variables, API-triggered pipelines, judged by workflows.

Contract: docs/ci-providers/circleci.md.

* Secrecy: CircleCI has no per-variable flags. Every project and context variable is secret (write-only
  through the API, shown as ``xxxx`` + last 4 characters, masked in job output), so there is nothing to
  set. Restrict who can use a context with its security groups / restrictions in the CircleCI UI.
* A pipeline's own ``state`` only says whether it was set up; the verdict comes from its workflows:
  all ``success`` passes, any failed/error/canceled/unauthorized/not_run/failing fails, and a pipeline
  with no workflow at all (config error, or filters excluded every workflow) means no build ran: FAILED.
* ``parameters`` must be declared in ``.circleci/config.yml``; CircleCI refuses undeclared ones. Set
  ``nonce_parameter`` only if the config declares that parameter.
* Webhooks: ``circleci-signature: v1=<hex HMAC-SHA256(secret, raw body)>``; no timestamp, so replays are
  caught only by de-duplicating the event ``id`` in the body.
* What a passed build authenticated with: the verification job stores its ``rotate-verify`` notice as an
  artifact (``store_artifacts``; the API has no step output or annotation); ``_used_identity`` reads it through
  listWorkflowJobs and getJobArtifacts.
* Integration kinds: OAuth projects (``gh/``, ``bb/`` slugs) start pipelines with
  ``POST /project/{slug}/pipeline``; GitHub App, GitLab and standalone projects (``circleci/<org-id>/
  <project-id>``) cannot, and use ``POST /project/{slug}/pipeline/run`` with a pipeline definition id
  (https://circleci.com/docs/api/v2/index.html#operation/triggerPipelineRun).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, Unpack
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator, model_validator

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.targets.base import (
    CITarget,
    HttpOptions,
    ProviderSummary,
    RunRef,
    RunState,
    RunStatus,
    TargetConfig,
    WebhookEvent,
    WebhookRejected,
    identity_in_log,
)
from chalicelib.targets.http import HttpClient, HttpError, Response, send_once
from chalicelib.targets.registry import register

log = logging.getLogger(__name__)

_SLUG = r"^(?:gh|github|bb|bitbucket|circleci)/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
WORKFLOW_SUCCESS = "success"
#: ``failing`` is still running but a job already failed: it can no longer end in success.
WORKFLOW_FAILED = frozenset({"failed", "error", "canceled", "unauthorized", "not_run", "failing"})
#: A pipeline in these states has not created its workflows yet.
PIPELINE_SETTING_UP = frozenset({"setup-pending", "setup", "pending"})
#: Workflows can appear a few seconds after a pipeline reports ``created``.
NO_WORKFLOW_GRACE_SECONDS = 15.0
_MAX_WORKFLOW_PAGES = 50
#: Where the verification configs (templates/verify/circleci/) store what the job authenticated with: a
#: ``store_artifacts`` step with ``destination: rotate-verify``, read back with getJobArtifacts.
REPORT_ARTIFACT = "rotate-verify/identity.txt"
#: Guards against a pipeline with more jobs than the verification config has (one per workflow).
_MAX_REPORTED_JOBS = 10
_MAX_REPORT_BYTES = 64 * 1024
#: Where CircleCI serves artifact contents (https://circleci.com/docs/artifacts/): the token is sent only there
#: (https) or to the API's own origin.
ARTIFACT_HOSTS = frozenset({"output.circle-artifacts.com"})


class CircleCITargetConfig(TargetConfig):
    """Where the key pair lives in CircleCI, and which pipeline proves it works."""

    provider: Literal["circleci"]
    api_url: str = "https://circleci.com/api/v2"
    #: ``gh/org/repo``, ``bb/org/repo`` or ``circleci/<org-uuid>/<project-uuid>``; the pipeline runs here.
    project_slug: str
    scope: Literal["project", "context"] = "project"
    #: For scope=context: the context's UUID (one PUT rotates every project that uses it).
    context_id: str | None = Field(None, pattern=_UUID)
    branch: str = Field("main", min_length=1)
    #: Pipeline parameters to send; each must be declared in the project's config.
    parameters: dict[str, str | int | bool] = Field(default_factory=dict)
    #: Name of a declared string parameter that receives the nonce; None sends no nonce.
    nonce_parameter: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    #: For ``circleci/`` projects (GitHub App / GitLab integration): the pipeline definition to run
    #: (Project settings > Pipelines); those projects can only start pipelines through ``pipeline/run``.
    pipeline_definition_id: str | None = Field(None, pattern=_UUID)

    @field_validator("project_slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if re.fullmatch(_SLUG, value) is None:
            raise ValueError(f"must be a project slug like gh/org/repo, not {value!r}")
        return value

    @model_validator(mode="after")
    def _scope_fields(self) -> CircleCITargetConfig:
        if self.scope == "context" and not self.context_id:
            raise ValueError("context_id is required when scope is 'context'")
        if self.scope != "context" and self.context_id:
            raise ValueError("context_id is only allowed with scope 'context'")
        if self.nonce_parameter and self.nonce_parameter in self.parameters:
            raise ValueError(f"parameters must not set {self.nonce_parameter!r}: it carries the nonce")
        if self.pipeline_run and not self.pipeline_definition_id:
            raise ValueError("pipeline_definition_id is required for a circleci/<org-id>/<project-id> project: "
                             "GitHub App and GitLab projects start pipelines only by definition")
        if not self.pipeline_run and self.pipeline_definition_id:
            raise ValueError("pipeline_definition_id is only used by circleci/<org-id>/<project-id> projects")
        return self

    @property
    def pipeline_run(self) -> bool:
        """GitHub App / GitLab / standalone project: ``pipeline/run`` is its only trigger endpoint."""
        return self.project_slug.split("/", 1)[0] == "circleci"

    def variable_store(self) -> tuple[str, ...]:
        if self.scope == "context":
            return ("context", str(self.context_id).lower())
        return ("project", self.project_slug.lower())


def map_workflows(pipeline_state: str | None, workflows: Iterable[tuple[str, str]],
                  pipeline_age_seconds: float = float("inf"),
                  grace_seconds: float = NO_WORKFLOW_GRACE_SECONDS) -> RunStatus:
    """The verdict of a pipeline from its ``(name, status)`` workflows; the pipeline state only matters
    when there are none: still setting up is pending, otherwise no build ran and that is a failure."""
    flows = list(workflows)
    if flows:
        failed = [f"{name}={status}" for name, status in flows if status in WORKFLOW_FAILED]
        if failed:
            return RunStatus(RunState.FAILED, "workflows " + ", ".join(failed))
        summary = "workflows " + ", ".join(f"{name}={status}" for name, status in flows)
        if all(status == WORKFLOW_SUCCESS for _, status in flows):
            return RunStatus(RunState.SUCCEEDED, summary)
        return RunStatus(RunState.PENDING, summary)
    state = pipeline_state or "unknown"
    if state == "errored":
        return RunStatus(RunState.FAILED, "pipeline errored (config error): no build ran")
    if state in PIPELINE_SETTING_UP or (state == "created" and pipeline_age_seconds < grace_seconds):
        return RunStatus(RunState.PENDING, f"pipeline {state}, no workflow yet")
    if state == "created":
        return RunStatus(RunState.FAILED, "pipeline created no workflow (filters?): no build ran")
    return RunStatus(RunState.PENDING, f"pipeline {state}, no workflow yet")


def map_workflow_event(status: str | None) -> RunStatus | None:
    """One ``workflow-completed`` event's status; None if it is not final (CircleCI sends only final ones)."""
    if status == WORKFLOW_SUCCESS:
        return RunStatus(RunState.SUCCEEDED, f"workflow {status}")
    if status in WORKFLOW_FAILED:
        return RunStatus(RunState.FAILED, f"workflow {status}")
    return None


def signature(secret: str, raw_body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()


@register
class CircleCITarget(CITarget):
    provider = "circleci"
    config_model = CircleCITargetConfig
    summary = ProviderSummary(
        secret_store="project env var (POST overwrites) or context variable (PUT)",
        verification="pipeline trigger, then its workflows decide (a pipeline with no workflow is a failure)",
        webhook="`circleci-signature: v1=` HMAC-SHA256; delivery id from the signed body",
    )
    config: CircleCITargetConfig
    #: The verification job stores what it authenticated with as an artifact (``_used_identity``).
    reports_identity = True
    # No ``rate_budget``: CircleCI documents what a throttled call looks like (429, ``Retry-After``, the
    # ``RateLimit-*``/``X-RateLimit-*`` headers) but no figure to pace a fleet by
    # (https://circleci.com/docs/guides/toolkit/api-developers-guide/#rate-limits). A 429 is RateLimited: the
    # state machine parks the task and retries it (tests/test_pacing_providers.py).

    def __init__(self, config: TargetConfig, token: str, *,
                 no_workflow_grace_seconds: float = NO_WORKFLOW_GRACE_SECONDS,
                 clock: Callable[[], float] = time.time, **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, token, **options)
        self._grace = no_workflow_grace_seconds
        self._clock = clock

    def _api_headers(self) -> dict[str, str]:
        return {"Circle-Token": self._token}

    # -- push ---------------------------------------------------------------------------------------

    def _write_variable(self, name: str, value: str, prepared: None) -> None:
        if self.config.scope == "context":
            self._put_context_variable(name, value)
        else:
            self._post_project_variable(name, value)

    def _slug_path(self) -> str:
        return quote(self.config.project_slug, safe="/")

    def _post_project_variable(self, name: str, value: str) -> None:
        """POST overwrites a variable of the same name: the API's only way to update one."""
        try:
            body = self._http.request("POST", f"/project/{self._slug_path()}/envvar",
                                      json={"name": name, "value": value}, expect=(201,),
                                      idempotent=True).json or {}  # a repeat overwrites with the same value
        except HttpError as exc:
            raise TargetPushFailed(f"{self._where()}: set variable {name} refused: {exc}") from None
        # The answer shows the value as xxxx + its last 4 characters: enough to see the write landed.
        shown = body.get("value") if isinstance(body, dict) else None
        if isinstance(shown, str) and len(value) >= 4 and not shown.endswith(value[-4:]):
            raise TargetPushFailed(f"{self._where()}: variable {name} was not stored (masked value differs)")
        log.info("%s: variable %s set", self._where(), name)

    def _put_context_variable(self, name: str, value: str) -> None:
        assert self.config.context_id is not None
        path = f"/context/{self.config.context_id}/environment-variable/{quote(name, safe='')}"
        try:
            self._http.request("PUT", path, json={"value": value}, expect=(200,))
        except HttpError as exc:
            raise TargetPushFailed(f"{self._where()}: set variable {name} refused: {exc}") from None
        log.info("%s: variable %s set", self._where(), name)

    def _delete_variable(self, name: str, prepared: None) -> None:
        # 200 with a message when deleted (https://circleci.com/docs/api/v2/index.html#operation/deleteEnvVar,
        # #operation/deleteEnvironmentVariableFromContext); 404 when there is no such variable.
        cfg = self.config
        if cfg.scope == "context":
            collection = f"/context/{cfg.context_id}/environment-variable"
        else:
            collection = f"/project/{self._slug_path()}/envvar"
        try:
            response = self._http.request("DELETE", f"{collection}/{quote(name, safe='')}", expect=(200, 404))
            if response.status == 404:
                # A project or context that is not there (or not ours to see) answers 404 too: the variable
                # only counts as absent if the collection it would be in can be read.
                self._http.request("GET", collection, expect=(200,))
        except HttpError as exc:
            raise TargetPushFailed(f"{self._where()}: delete variable {name} refused: {exc}") from None
        log.info("%s: variable %s %s", self._where(), name, "already absent" if response.status == 404 else "deleted")

    def _where(self) -> str:
        cfg = self.config
        place = f"context {cfg.context_id}" if cfg.scope == "context" else f"project {cfg.project_slug}"
        return f"circleci target {cfg.id!r} ({place})"

    # -- verification -------------------------------------------------------------------------------

    def trigger_verification(self, nonce: str) -> RunRef:
        cfg = self.config
        parameters: dict[str, Any] = dict(cfg.parameters)
        if cfg.nonce_parameter:
            parameters[cfg.nonce_parameter] = nonce
        if cfg.pipeline_run:
            # Three path segments: an encoded %2F slug answers 404 on this endpoint.
            path = f"/project/{self._slug_path()}/pipeline/run"
            body: dict[str, Any] = {"definition_id": cfg.pipeline_definition_id,
                                    "config": {"branch": cfg.branch}, "checkout": {"branch": cfg.branch}}
        else:
            path, body = f"/project/{self._slug_path()}/pipeline", {"branch": cfg.branch}
        if parameters:
            body["parameters"] = parameters

        def post() -> Response:
            return self._http.request("POST", path, json=body, expect=(201, 200))

        try:
            found = send_once(post, lambda: self._find_pipeline(nonce), f"circleci target {cfg.id!r}: trigger")
        except HttpError as exc:
            raise VerificationTriggerFailed(
                f"circleci target {cfg.id!r}: trigger pipeline on {cfg.project_slug}@{cfg.branch} refused: {exc}"
            ) from None
        if isinstance(found, RunRef):
            return found
        response: Response = found
        if response.status == 200:
            # pipeline/run answers 200 with a message when it created no pipeline (e.g. [ci skip]).
            raise VerificationTriggerFailed(
                f"circleci target {cfg.id!r}: {cfg.project_slug}@{cfg.branch} created no pipeline")
        pipeline = response.json if isinstance(response.json, dict) else {}
        pipeline_id = pipeline.get("id")
        if not isinstance(pipeline_id, str) or re.fullmatch(_UUID, pipeline_id) is None:
            raise VerificationTriggerFailed(
                f"circleci target {cfg.id!r}: trigger pipeline on {cfg.project_slug} returned no pipeline id"
            )
        return RunRef(pipeline_id, self._web_url(pipeline.get("number")))

    def _find_pipeline(self, nonce: str) -> RunRef | None:
        """The pipeline this try started, by its nonce parameter, among the branch's latest pipelines
        (``GET /project/{slug}/pipeline``, listPipelinesForProject; parameters as ``trigger_parameters``)."""
        cfg = self.config
        if not cfg.nonce_parameter:
            return None  # nothing identifies our pipeline: assume none was created
        page = self._http.request("GET", f"/project/{self._slug_path()}/pipeline", params={"branch": cfg.branch},
                                  expect=(200,)).json or {}
        for item in page.get("items") or []:
            if isinstance(item, dict) and (item.get("trigger_parameters") or {}).get(cfg.nonce_parameter) == nonce:
                return RunRef(str(item["id"]), self._web_url(item.get("number")))
        return None

    def _web_url(self, number: Any) -> str | None:
        """The pipeline's page for alerts; only known for circleci.com itself."""
        if urlsplit(self.config.api_url).hostname != "circleci.com" or not isinstance(number, int):
            return None
        return f"https://app.circleci.com/pipelines/{self.config.project_slug}/{number}"

    def run_status(self, run_id: str) -> RunStatus:
        cfg = self.config
        if re.fullmatch(_UUID, run_id) is None:
            raise VerificationFailed(f"circleci target {cfg.id!r}: run id {run_id!r} is not a pipeline id")
        try:
            items = self._workflows(run_id)
            workflows = [(name, status) for name, status, _ in items]
            if workflows:
                verdict = map_workflows(None, workflows)
                if verdict.state is RunState.SUCCEEDED:
                    key, role = self._used_identity(run_id, [wid for _, _, wid in items if wid])
                    verdict = dataclasses.replace(verdict, used_key_sha256=key, used_role=role)
                return verdict
            # Only without workflows does the pipeline's own state matter: set up yet, or errored?
            pipeline = self._http.request("GET", f"/pipeline/{run_id}", expect=(200,)).json or {}
        except HttpError as exc:
            raise VerificationFailed(f"circleci target {cfg.id!r}: cannot read pipeline {run_id}: {exc}") from None
        return map_workflows(pipeline.get("state"), [], self._age(pipeline.get("created_at")), self._grace)

    def _workflows(self, pipeline_id: str) -> list[tuple[str, str, str | None]]:
        """Every workflow of the pipeline as (name, status, id), following ``next_page_token``."""
        found: list[tuple[str, str, str | None]] = []
        params: dict[str, str] = {}
        for _ in range(_MAX_WORKFLOW_PAGES):
            page = self._http.request("GET", f"/pipeline/{pipeline_id}/workflow", params=params or None,
                                      expect=(200,)).json or {}
            for item in page.get("items") or []:
                if isinstance(item, dict):
                    wid = item.get("id")
                    found.append((str(item.get("name", "?")), str(item.get("status", "unknown")),
                                  wid if isinstance(wid, str) and re.fullmatch(_UUID, wid) else None))
            token = page.get("next_page_token")
            if not token:
                return found
            params = {"page-token": str(token)}
        raise VerificationFailed(f"circleci target {self.config.id!r}: pipeline {pipeline_id} lists more than "
                                 f"{_MAX_WORKFLOW_PAGES} pages of workflows")

    def _used_identity(self, pipeline_id: str, workflow_ids: list[str]) -> tuple[str | None, str | None]:
        """What the pipeline's jobs reported authenticating with (``identity_in_log`` over their
        ``REPORT_ARTIFACT``); None for what they did not report or CircleCI will not give. A build that passed
        with a key from a context after graduation removed the project's variables is told apart this way."""
        texts: list[str] = []
        try:
            numbers: list[int] = []
            for workflow_id in workflow_ids[:_MAX_REPORTED_JOBS]:
                # listWorkflowJobs; a job that never started (blocked, not run) has no number and no artifacts.
                page = self._http.request("GET", f"/workflow/{workflow_id}/job", expect=(200,)).json or {}
                for job in page.get("items") or []:
                    number = job.get("job_number") if isinstance(job, dict) else None
                    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                        numbers.append(number)
            for number in numbers[:_MAX_REPORTED_JOBS]:
                listing = self._http.request("GET", f"/project/{self._slug_path()}/{number}/artifacts",
                                             expect=(200,)).json or {}
                for artifact in listing.get("items") or []:
                    if isinstance(artifact, dict) and artifact.get("path") == REPORT_ARTIFACT:
                        texts.append(self._artifact(str(artifact.get("url") or "")))
        except HttpError as exc:
            # A refusal means no report (the verdict then rests on the other evidence); a transient error or a
            # rate limit propagates, and the status is read again later.
            log.info("%s: no authentication report for pipeline %s (%s)", self._where(), pipeline_id, exc.status)
        return identity_in_log("\n".join(texts))

    def _artifact(self, url: str) -> str:
        """An artifact's contents. Fetched with the token (CircleCI protects private projects' artifacts with
        it), so only from https://output.circle-artifacts.com or the API's own origin; a redirect (to the
        storage behind it) is followed once without the token, and only to https."""
        where, api = urlsplit(url), urlsplit(self.config.api_url)
        origin = f"{where.scheme}://{where.netloc}"
        if not ((where.scheme == "https" and where.hostname in ARTIFACT_HOSTS)
                or (where.scheme, where.netloc) == (api.scheme, api.netloc)):
            log.info("%s: artifact URL outside %s and the API: not read", self._where(), sorted(ARTIFACT_HOSTS))
            return ""
        path = url[len(origin):] or "/"
        client = HttpClient(origin, self._api_headers(), max_attempts=2)
        response = client.request("GET", path, expect=(200, 301, 302, 303, 307, 308))
        if response.status != 200:
            location = urlsplit(str(response.headers.get("Location") or ""))
            if location.scheme != "https" or not location.netloc:
                return ""
            storage = HttpClient(f"https://{location.netloc}", {}, max_attempts=2)
            response = storage.request("GET", location.geturl()[len(f"https://{location.netloc}"):] or "/",
                                       expect=(200,))
        return response.data[:_MAX_REPORT_BYTES].decode(errors="replace")

    def _age(self, created_at: Any) -> float:
        if not isinstance(created_at, str):
            return float("inf")
        try:
            created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        except ValueError:
            return float("inf")
        return self._clock() - created.timestamp()

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> None:
        given = lower_headers.get("circleci-signature", "")
        if not given:
            raise WebhookRejected("missing circleci-signature", 401)
        expected = signature(secret, raw_body).encode()
        # A comma-separated, versioned list; only v1 exists, and any matching v1 entry is enough.
        candidates = [part.strip() for part in given.split(",") if part.strip().startswith("v1=")]
        if not any(hmac.compare_digest(candidate.encode(), expected) for candidate in candidates):
            raise WebhookRejected("circleci-signature does not match the body", 401)

    @classmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        payload = _payload(raw_body)
        # The delivery id is the signed body's event id (CircleCI sends no delivery header).
        event_id = payload.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise WebhookRejected("event without an id", 400)
        # The event type is read from the signed body, not from the unsigned Circleci-Event-Type header.
        if payload.get("type") != "workflow-completed":
            return WebhookEvent(event_id, None, None)
        pipeline, workflow = payload.get("pipeline"), payload.get("workflow")
        if not isinstance(pipeline, dict) or not isinstance(pipeline.get("id"), str) or not isinstance(workflow, dict):
            raise WebhookRejected("workflow-completed event without pipeline.id and workflow", 400)
        # One workflow's end is a hint about the pipeline, not its verdict (others may still run):
        # the receiver confirms with run_status, which reads every workflow, before acting.
        status = map_workflow_event(workflow.get("status"))
        if status is not None:
            status = RunStatus(status.state, f"workflow {workflow.get('name', '?')} {workflow.get('status')}",
                               workflow.get("url"))
        return WebhookEvent(event_id, pipeline["id"], status)


def _payload(raw_body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookRejected("body is not JSON", 400) from None
    if not isinstance(payload, dict):
        raise WebhookRejected("body is not a JSON object", 400)
    return payload
