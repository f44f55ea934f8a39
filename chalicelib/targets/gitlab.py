"""GitLab CI: masked+protected CI/CD variables, API-triggered pipelines, "Pipeline Hook" webhooks.

Contract: docs/ci-providers/gitlab.md.

* ``protected: true`` (the default) exposes the variables only to pipelines on a protected branch or tag,
  so ``ref`` must be protected; otherwise the verification job never sees the key and the rotation
  rolls back. Set ``protected: false`` only if the jobs that use the key run on unprotected refs.
* The verification pipeline is started with ``inputs: {nonce: ...}`` (GitLab >= 17.10); the project's
  ``.gitlab-ci.yml`` must declare ``spec: inputs: nonce`` or set ``nonce_input: null``. Pipeline
  ``variables`` are never sent: GitLab.com forbids them by default since 17.7.
* Webhooks: a plain secret is compared with ``X-Gitlab-Token`` (proves only knowledge of the token: the
  body is not signed). A secret that starts with ``whsec_`` is a signing token: the Standard-Webhooks
  ``webhook-signature`` over id, timestamp and body is then required, with no fallback to the token.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Literal, Unpack
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.pacing import REQUESTS, Limit, RateBudget
from chalicelib.secret_ref import SecretRef
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
from chalicelib.targets.http import HttpError, Response, send_once
from chalicelib.targets.registry import register

log = logging.getLogger(__name__)

#: A numeric id or a full path ``group/subgroup/project``.
_PROJECT = r"^(?:\d+|[A-Za-z0-9_.][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.][A-Za-z0-9_.-]*)+)$"
_GROUP = r"^(?:\d+|[A-Za-z0-9_.][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*)$"
SUCCEEDED_STATUSES = frozenset({"success"})
FAILED_STATUSES = frozenset({"failed", "canceled", "skipped"})
SIGNING_PREFIX = "whsec_"
#: Standard Webhooks' tolerance: a signed delivery older (or newer) than this is a replay.
SIGNATURE_TOLERANCE_SECONDS = 300
_ALREADY_TAKEN = "has already been taken"
#: A guard against a server whose X-Next-Page never ends.
_MAX_PAGES = 50
#: Logs read for the verification job's report: the verification file runs one job per pipeline.
MAX_LOGGED_JOBS = 10


class GitLabTargetConfig(TargetConfig):
    """Where the key pair lives in GitLab, and which pipeline proves it works."""

    provider: Literal["gitlab"]
    api_url: str = "https://gitlab.com/api/v4"
    #: Numeric id or full path; the verification pipeline always runs here.
    project: str
    scope: Literal["project", "group"] = "project"
    #: For scope=group: numeric id or full path of the group that holds the variables.
    group: str | None = None
    environment_scope: str = Field("*", min_length=1, max_length=255)
    #: Only pipelines on protected refs see the variables; ``ref`` must then be protected.
    protected: bool = True
    #: Hidden in job logs; AWS key ids (20 chars) and secret keys (40 chars) meet GitLab's rules.
    masked: bool = True
    ref: str = Field("main", min_length=1, max_length=255)
    #: Name of the pipeline input that carries the nonce; None sends no inputs (GitLab < 17.10).
    nonce_input: str | None = Field("nonce", pattern=r"^[A-Za-z0-9_-]{1,255}$")
    #: Start the pipeline with this trigger token (POST /trigger/pipeline) instead of the API token.
    trigger_token: SecretRef | None = None

    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if re.fullmatch(_PROJECT, value) is None:
            raise ValueError(f"must be a numeric project id or a full path like group/project, not {value!r}")
        return value

    @field_validator("group")
    @classmethod
    def _group_id(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(_GROUP, value) is None:
            raise ValueError(f"must be a numeric group id or a full group path, not {value!r}")
        return value

    @model_validator(mode="after")
    def _scope_fields(self) -> GitLabTargetConfig:
        if self.scope == "group" and not self.group:
            raise ValueError("group is required when scope is 'group'")
        if self.scope != "group" and self.group:
            raise ValueError("group is only allowed with scope 'group'")
        return self

    def variable_store(self) -> tuple[str, ...]:
        if self.scope == "group":
            return ("group", str(self.group), self.environment_scope)
        return ("project", self.project, self.environment_scope)


def map_pipeline(status: str | None, url: str | None = None) -> RunStatus:
    """success passes; failed/canceled/skipped fail; everything else (manual too) is still pending."""
    word = status or "unknown"
    if word in SUCCEEDED_STATUSES:
        return RunStatus(RunState.SUCCEEDED, word, url)
    if word in FAILED_STATUSES:
        return RunStatus(RunState.FAILED, word, url)
    if word == "manual":
        # Blocked on a manual job: nothing proves the key until someone clicks, so let it time out.
        return RunStatus(RunState.PENDING, "manual (blocked on a manual job)", url)
    return RunStatus(RunState.PENDING, word, url)


def sign(signing_token: str, webhook_id: str, timestamp: str, raw_body: bytes) -> str:
    """The Standard-Webhooks ``v1,<base64>`` signature GitLab sends with a ``whsec_`` signing token."""
    key = base64.b64decode(signing_token.removeprefix(SIGNING_PREFIX), validate=True)
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + raw_body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@register
class GitLabTarget(CITarget):
    provider = "gitlab"
    config_model = GitLabTargetConfig
    summary = ProviderSummary(
        secret_store='PUT, POST on 404 (and PUT again on "has already been taken"); masked, protected, raw',
        verification="`POST /projects/:id/pipeline` (or the trigger-token API); `manual` never counts as passed",
        webhook=(
            "`X-Gitlab-Token`, or Standard-Webhooks `webhook-signature` when the secret is a `whsec_` signing "
            "token (timestamps older than 5 min refused); `Idempotency-Key`"
        ),
    )
    config: GitLabTargetConfig

    delivery_headers = ("Idempotency-Key", "X-Gitlab-Event-UUID", "webhook-id")
    #: The verification job prints ``::notice title=rotate-verify::...`` (templates/verify/gitlab/); GitLab has
    #: no annotations API, so run_status reads it from the job's log.
    reports_identity = True
    #: GitLab.com: 2,000 authenticated API requests per minute per user
    #: (https://docs.gitlab.com/user/gitlab_com/rate_limits/); self-managed instances set their own.
    rate_budget = RateBudget(limits=(Limit(REQUESTS, 2000, 60, "https://docs.gitlab.com/user/gitlab_com/rate_limits/"),),
                             per_target={REQUESTS: 10})

    def __init__(self, config: TargetConfig, token: str, *, trigger_token: str | None = None,
                 **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, token, **options)
        #: Resolved lazily from config.trigger_token unless given (tests, or a caller that resolved it).
        self._trigger_token = trigger_token

    def _api_headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self._token}

    # -- push ---------------------------------------------------------------------------------------

    def _write_variable(self, name: str, value: str, prepared: None) -> None:
        self._upsert(name, value)

    def _variables_path(self) -> str:
        cfg = self.config
        if cfg.scope == "group":
            assert cfg.group is not None
            return f"/groups/{quote(cfg.group, safe='')}/variables"
        return f"/projects/{self._project_path_id()}/variables"

    def _project_path_id(self) -> str:
        return quote(self.config.project, safe="")

    def _upsert(self, name: str, value: str) -> None:
        """PUT; on 404 POST; a POST that lost a race with another writer ("already taken") PUTs again.

        A group's PUT cannot be trusted to answer 404: when the key exists only under another environment
        scope, GitLab falls back to a key-only lookup and overwrites and re-scopes *that* variable
        (lib/api/group_variables.rb, https://gitlab.com/gitlab-org/gitlab/-/merge_requests/136475). So for
        a group the variable is first looked up by key and scope in the list, and only updated if found.
        """
        listed = self._group_variable_exists(name) if self.config.scope == "group" else None
        if listed is not False and self._update(name, value, expect=(200, 404)).status == 200:
            self._log_write(name, "updated")
            return
        created = self._request("POST", self._variables_path(), f"create variable {name}",
                                json={"key": name, **self._fields(value)}, expect=(201, 400),
                                # A repeated create answers "already taken" and is then updated.
                                idempotent=True)
        if created.status == 201:
            self._log_write(name, "created")
            return
        if _ALREADY_TAKEN not in _message_text(created.json):
            raise TargetPushFailed(f"{self._where()}: create variable {name} refused: HTTP 400: "
                                   f"{_safe_summary(created.json, value)}")
        self._update(name, value, expect=(200,))
        self._log_write(name, "updated")

    def _group_variable_exists(self, name: str) -> bool:
        """Whether the group holds ``name`` in our environment scope, over every page of its variables."""
        scope = self.config.environment_scope
        for page in range(1, _MAX_PAGES + 1):
            response = self._request("GET", self._variables_path(), f"list variables for {name}",
                                     params={"page": page, "per_page": 100}, expect=(200,))
            items = response.json if isinstance(response.json, list) else []
            if any(isinstance(v, dict) and v.get("key") == name and v.get("environment_scope") == scope
                   for v in items):
                return True
            if not response.headers.get("x-next-page"):
                return False
        raise TargetPushFailed(f"{self._where()}: the group lists more than {_MAX_PAGES} pages of variables",
                               changed=False)

    def _update(self, name: str, value: str, expect: tuple[int, ...]) -> Response:
        # The filter picks our scope's variable when the key also exists with other scopes (else 409).
        return self._request("PUT", f"{self._variables_path()}/{quote(name, safe='')}", f"update variable {name}",
                             json=self._fields(value),
                             params={"filter[environment_scope]": self.config.environment_scope}, expect=expect)

    def _delete_variable(self, name: str, prepared: None) -> None:
        """The variable with our key AND environment scope; another scope's variable of that key is another
        variable (https://docs.gitlab.com/api/project_level_variables/#delete-a-variable, ``filter``).

        A group is listed first, as for a write: GitLab before ``find_variable`` in group deletes
        (lib/api/group_variables.rb) removed the first variable with the key, whatever its scope.
        """
        if self.config.scope == "group" and not self._group_variable_exists(name):
            self._log_write(name, "already absent")
            return
        response = self._request("DELETE", f"{self._variables_path()}/{quote(name, safe='')}",
                                 f"delete variable {name}",
                                 params={"filter[environment_scope]": self.config.environment_scope},
                                 expect=(204, 404))
        if response.status == 404:
            # A project the token cannot see answers 404 too: absent only if its variables can be listed.
            self._request("GET", self._variables_path(), f"list variables for {name}",
                          params={"per_page": 1}, expect=(200,))
            self._log_write(name, "already absent")
            return
        self._log_write(name, "deleted")

    def _fields(self, value: str) -> dict[str, Any]:
        cfg = self.config
        # raw: an AWS secret is a literal; "$" must never be expanded as a variable reference.
        return {"value": value, "variable_type": "env_var", "masked": cfg.masked, "protected": cfg.protected,
                "raw": True, "environment_scope": cfg.environment_scope}

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Response:
        try:
            return self._http.request(method, path, **kwargs)
        except HttpError as exc:
            raise TargetPushFailed(f"{self._where()}: {what} refused: {exc}") from None

    def _log_write(self, name: str, outcome: str) -> None:
        log.info("%s: variable %s %s", self._where(), name, outcome)

    def _where(self) -> str:
        cfg = self.config
        place = f"group {cfg.group}" if cfg.scope == "group" else f"project {cfg.project}"
        return f"gitlab target {cfg.id!r} ({place}, environment scope {cfg.environment_scope!r})"

    # -- verification -------------------------------------------------------------------------------

    def trigger_verification(self, nonce: str) -> RunRef:
        cfg = self.config
        body: dict[str, Any] = {"ref": cfg.ref}
        if cfg.nonce_input:
            body["inputs"] = {cfg.nonce_input: nonce}
        path = f"/projects/{self._project_path_id()}/pipeline"
        if cfg.trigger_token is not None or self._trigger_token is not None:
            path = f"/projects/{self._project_path_id()}/trigger/pipeline"
            body["token"] = self._resolve_trigger_token()
        try:
            found = send_once(lambda: self._http.request("POST", path, json=body, expect=(201, 400)),
                              lambda: self._find_pipeline(nonce), f"gitlab target {cfg.id!r}: start pipeline")
        except HttpError as exc:
            raise self._trigger_failed(str(exc)) from None
        if isinstance(found, RunRef):
            return found
        response: Response = found
        if response.status == 400:
            # A bad ref, an undeclared input or workflow:rules; GitLab says which in a structured message.
            raise self._trigger_failed(f"HTTP 400: {_safe_summary(response.json, body.get('token', ''))}")
        pipeline = response.json if isinstance(response.json, dict) else {}
        pipeline_id = pipeline.get("id")
        if not isinstance(pipeline_id, int) or isinstance(pipeline_id, bool):
            raise self._trigger_failed("the response has no pipeline id")
        return RunRef(str(pipeline_id), pipeline.get("web_url"))

    def _find_pipeline(self, nonce: str) -> RunRef | None:
        """The pipeline this try started, by the name ``workflow: name: verify-$[[ inputs.nonce ]]`` gives it
        (https://docs.gitlab.com/ci/yaml/#workflowname, listed by ``name`` since GitLab 15.11); None when
        there is none, or when no nonce is sent (nothing would tell our pipeline from another)."""
        if not self.config.nonce_input:
            return None
        params = {"name": f"verify-{nonce}", "ref": self.config.ref}
        found = self._http.request("GET", f"/projects/{self._project_path_id()}/pipelines", params=params,
                                   expect=(200,)).json
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), int):
                return RunRef(str(item["id"]), item.get("web_url"))
        return None

    def _resolve_trigger_token(self) -> str:
        if self._trigger_token is None:
            assert self.config.trigger_token is not None
            try:
                self._trigger_token = self.config.trigger_token.resolve()
            except Exception as exc:  # noqa: BLE001 - powertools raises several types; none may carry the value
                raise self._trigger_failed(
                    f"cannot read the trigger token from {self.config.trigger_token} ({type(exc).__name__})"
                ) from None
        return self._trigger_token

    def _trigger_failed(self, why: str) -> VerificationTriggerFailed:
        cfg = self.config
        return VerificationTriggerFailed(
            f"gitlab target {cfg.id!r}: start pipeline on {cfg.project}@{cfg.ref} refused: {why}"
        )

    def run_status(self, run_id: str) -> RunStatus:
        cfg = self.config
        if not run_id.isdigit():
            raise VerificationFailed(f"gitlab target {cfg.id!r}: run id {run_id!r} is not a GitLab pipeline id")
        try:
            pipeline = self._http.request("GET", f"/projects/{self._project_path_id()}/pipelines/{run_id}",
                                          expect=(200,)).json or {}
        except HttpError as exc:
            raise VerificationFailed(f"gitlab target {cfg.id!r}: cannot read pipeline {run_id}: {exc}") from None
        status = map_pipeline(pipeline.get("status"), pipeline.get("web_url"))
        if status.state is RunState.SUCCEEDED:
            key, role = self._used_identity(run_id)
            status = dataclasses.replace(status, used_key_sha256=key, used_role=role)
        return status

    def _used_identity(self, pipeline_id: str) -> tuple[str | None, str | None]:
        """What the pipeline's successful jobs reported authenticating with, from their logs
        (https://docs.gitlab.com/api/jobs/#list-pipeline-jobs, https://docs.gitlab.com/api/jobs/#get-a-log-file);
        None for what they did not report or GitLab will not give. A build that passed with a key from a group
        or instance variable after graduation removed the project's is told apart this way."""
        project = self._project_path_id()
        key: str | None = None
        role: str | None = None
        try:
            jobs = self._http.request("GET", f"/projects/{project}/pipelines/{pipeline_id}/jobs",
                                      params={"scope[]": "success", "per_page": 100}, expect=(200,)).json
            for job in (jobs if isinstance(jobs, list) else [])[:MAX_LOGGED_JOBS]:
                job_id = job.get("id") if isinstance(job, dict) else None
                if not isinstance(job_id, int) or isinstance(job_id, bool):
                    continue
                trace = self._http.request("GET", f"/projects/{project}/jobs/{job_id}/trace",
                                           headers={"Accept": "text/plain"}, expect=(200,))
                found, assumed = identity_in_log(trace.data.decode(errors="replace"))
                key, role = key or found, role or assumed
        except HttpError as exc:
            log.info("%s: no authentication report for pipeline %s (%s)", self._where(), pipeline_id, exc.status)
        return key, role

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> str | None:
        if secret.startswith(SIGNING_PREFIX):
            return verify_signature(lower_headers, raw_body, secret, time.time())
        given = lower_headers.get("x-gitlab-token", "")
        if not given:
            raise WebhookRejected("missing X-Gitlab-Token", 401)
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise WebhookRejected("X-Gitlab-Token does not match", 401)
        # Idempotency-Key (delivery_headers) is stable across GitLab's retries; the others are fallbacks for
        # older versions.
        return None

    @classmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        if delivery is None:  # the base's preamble found one; explicit so python -O cannot change it
            raise WebhookRejected("no delivery id", 400)
        if lower_headers.get("x-gitlab-event") != "Pipeline Hook":
            return WebhookEvent(delivery, None, None)
        attributes = _pipeline_attributes(raw_body)
        status = map_pipeline(attributes.get("status"), attributes.get("url"))
        return WebhookEvent(delivery, str(attributes["id"]), status if status.terminal else None)


def verify_signature(lower_headers: Mapping[str, str], raw_body: bytes, signing_token: str, now: float) -> str:
    """Standard-Webhooks verification; the (signed) ``webhook-id`` on success, else WebhookRejected."""
    webhook_id = lower_headers.get("webhook-id", "")
    timestamp = lower_headers.get("webhook-timestamp", "")
    given = lower_headers.get("webhook-signature", "")
    if not (webhook_id and timestamp and given):
        raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature", 401)
    try:
        age = now - int(timestamp)
    except ValueError:
        raise WebhookRejected("webhook-timestamp is not a unix time", 401) from None
    if abs(age) > SIGNATURE_TOLERANCE_SECONDS:
        # Outside the window a captured delivery could be replayed after our dedup record expired.
        raise WebhookRejected("webhook-timestamp is too old or in the future", 401)
    try:
        expected = sign(signing_token, webhook_id, timestamp, raw_body).encode()
    except (binascii.Error, ValueError):
        raise WebhookRejected("the configured gitlab signing token is not whsec_<base64>", 401) from None
    # Several signatures are sent while a signing token is being rotated; any valid v1 one will do.
    if not any(hmac.compare_digest(candidate.encode(), expected) for candidate in given.split()):
        raise WebhookRejected("webhook-signature does not match the body", 401)
    return webhook_id


def _pipeline_attributes(raw_body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookRejected("body is not JSON", 400) from None
    attributes = payload.get("object_attributes") if isinstance(payload, dict) else None
    pipeline_id = attributes.get("id") if isinstance(attributes, dict) else None
    if (not isinstance(attributes, dict) or payload.get("object_kind") != "pipeline"
            or not isinstance(pipeline_id, int) or isinstance(pipeline_id, bool)):
        raise WebhookRejected("Pipeline Hook without object_kind=pipeline and object_attributes.id", 400)
    return attributes


def _message_text(body: Any) -> str:
    """GitLab errors are ``{"message": "..."}``, ``{"message": {"field": ["..."]}}`` or ``{"error": "..."}``."""
    if not isinstance(body, Mapping):
        return ""
    message = body.get("message", body.get("error"))
    if isinstance(message, Mapping):
        return "; ".join(f"{field}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                         for field, v in message.items())
    return str(message) if message is not None else ""


def _safe_summary(body: Any, value: str) -> str:
    """The provider's validation message for an error, without the value that was refused."""
    text = _message_text(body)
    return (text.replace(value, "***") if value else text)[:200]
