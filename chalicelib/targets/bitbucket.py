"""Bitbucket Pipelines (Cloud REST 2.0): secured variables, custom-pipeline verification, signed webhooks.

Contract: docs/ci-providers/bitbucket.md. Pipelines has no pipeline webhook; it publishes a
commit status per pipeline (``repo:commit_status_created/updated``) that names the build *number*, not
the pipeline uuid. So a run id is ``<workspace>/<repo>#<build_number>`` (unique across repositories, as
the callback table needs), and run_status reads ``GET .../pipelines/{pipeline_uuid}``, the only key the
API documents: the uuid the trigger answered with (kept in this process), else found by build number in
the newest pipelines.

Credentials: ``auth: access_token`` (repository/project/workspace access token, ``Bearer``) or
``auth: api_token`` (an Atlassian API token, HTTP Basic ``<email>:<token>``, the successor of app
passwords: https://support.atlassian.com/bitbucket-cloud/docs/using-api-tokens/).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal, Unpack
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import Field, field_validator, model_validator

from chalicelib.errors import TargetPushFailed, TransientError, VerificationFailed, VerificationTriggerFailed
from chalicelib.pacing import REQUESTS, Limit, RateBudget
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
)
from chalicelib.targets.base import identity_in_log as identity_in_log  # moved to base; still importable here
from chalicelib.targets.http import HttpClient, HttpError, Response, send_once
from chalicelib.targets.registry import register

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.bitbucket.org/2.0"
_SLUG = r"^[A-Za-z0-9_.-]{1,100}$"
_UUID = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")
#: Largest page Bitbucket serves for variables: fewer calls against the tightest rate budget of all CIs.
PAGE_LEN = 100
#: A guard against a server whose ``next`` never ends.
MAX_PAGES = 50
STATUS_EVENTS = frozenset({"repo:commit_status_created", "repo:commit_status_updated"})
_RESULTS_URL = re.compile(r"pipelines/.*?results/(\d+)")
_PIPELINE_NAME = re.compile(r"^Pipeline #(\d+)\b")
#: Bitbucket's limit is a rolling hour (https://support.atlassian.com/bitbucket-cloud/docs/api-request-limits/):
#: a 429 without Retry-After frees capacity only gradually, so it is waited out by the state machine.
RATE_LIMIT_WAIT_SECONDS = 300.0
#: Newest pipelines searched for a build number's uuid (or a nonce) before giving up.
PIPELINE_SEARCH_PAGES = 5
NONCE_VARIABLE = "ROTATION_NONCE"
# What the verification pipelines (templates/verify/bitbucket/) print about how they authenticated
# (base.identity_in_log): Pipelines has no annotations API, so the rotator reads it from the step's log.
#: A guard against a pipeline with more steps than the verification file has (one).
MAX_LOGGED_STEPS = 10

#: run id -> pipeline uuid, as the trigger answered: saves a search while the poller runs in this process.
_uuids: OrderedDict[str, str] = OrderedDict()
_uuids_lock = threading.Lock()
_UUID_CACHE_SIZE = 4096


def _remember(run_id: str, pipeline_uuid: str) -> None:
    with _uuids_lock:
        _uuids[run_id] = pipeline_uuid
        _uuids.move_to_end(run_id)
        while len(_uuids) > _UUID_CACHE_SIZE:
            _uuids.popitem(last=False)


class BitbucketTargetConfig(TargetConfig):
    """Where the key pair lives in Bitbucket, and which pipeline proves it works."""

    provider: Literal["bitbucket"]
    api_url: str = DEFAULT_API_URL
    workspace: str
    #: The repository slug; the verification pipeline always runs here.
    repository: str
    scope: Literal["repository", "workspace", "deployment"] = "repository"
    #: For scope=deployment: the environment whose deployment variables hold the pair.
    environment_uuid: str | None = None
    #: The branch the verification pipeline runs on.
    branch: str = Field("main", min_length=1, max_length=255)
    #: A ``custom:`` pipeline in bitbucket-pipelines.yml (recommended); None runs the branch's pipeline.
    pipeline: str | None = Field(None, min_length=1, max_length=255)
    #: ``access_token``: sent as Bearer; ``api_token``: an Atlassian API token, sent as Basic with ``email``.
    auth: Literal["access_token", "api_token"] = "access_token"
    #: The Atlassian account the API token belongs to (auth=api_token only).
    email: str | None = Field(None, pattern=r"^[^@\s:]+@[^@\s:]+$", max_length=254)

    @field_validator("workspace", "repository")
    @classmethod
    def _slug(cls, value: str) -> str:
        if re.fullmatch(_SLUG, value) is None:
            raise ValueError(f"must be a Bitbucket slug, not {value!r}")
        return value

    @field_validator("environment_uuid")
    @classmethod
    def _braced_uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _UUID.fullmatch(value)
        if match is None:
            raise ValueError(f"must be an environment uuid like {{6f9c...}}, not {value!r}")
        return "{" + match.group(1).lower() + "}"

    @model_validator(mode="after")
    def _scope_fields(self) -> BitbucketTargetConfig:
        if self.scope == "deployment" and not self.environment_uuid:
            raise ValueError("environment_uuid is required when scope is 'deployment'")
        if self.scope != "deployment" and self.environment_uuid:
            raise ValueError("environment_uuid is only allowed with scope 'deployment'")
        if self.auth == "api_token" and not self.email:
            raise ValueError("email is required when auth is 'api_token' (Basic <email>:<token>)")
        if self.auth != "api_token" and self.email:
            raise ValueError("email is only used with auth 'api_token'")
        return self

    @property
    def full_name(self) -> str:
        return f"{self.workspace}/{self.repository}"

    def variable_store(self) -> tuple[str, ...]:
        if self.scope == "workspace":
            return ("workspace", self.workspace.lower())
        if self.scope == "deployment":
            return ("deployment", self.workspace.lower(), self.repository.lower(), str(self.environment_uuid))
        return ("repository", self.workspace.lower(), self.repository.lower())


def map_pipeline(state: Mapping[str, Any] | None, url: str | None = None) -> RunStatus:
    """Only COMPLETED/SUCCESSFUL is a pass; PAUSED (a manual step) is not verified, so it keeps waiting."""
    state = state or {}
    name = state.get("name")
    if name == "COMPLETED":
        result = (state.get("result") or {}).get("name") or "UNKNOWN"
        passed = result == "SUCCESSFUL"
        return RunStatus(RunState.SUCCEEDED if passed else RunState.FAILED, f"COMPLETED/{result}", url)
    stage = (state.get("stage") or {}).get("name")
    return RunStatus(RunState.PENDING, f"{name or 'UNKNOWN'}/{stage}" if stage else (name or "UNKNOWN"), url)


def map_commit_status(state: str | None, url: str | None = None) -> RunStatus | None:
    """The webhook's commit-status state; None while the pipeline runs (or for a state we do not know)."""
    if state == "SUCCESSFUL":
        return RunStatus(RunState.SUCCEEDED, state, url)
    if state in ("FAILED", "STOPPED"):
        return RunStatus(RunState.FAILED, state, url)
    return None


def signature(secret: str, raw_body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()


def run_id_for(full_name: str, build_number: int | str) -> str:
    # Slugs are case-insensitive on Bitbucket; the webhook's full_name may differ in case from the config.
    return f"{full_name.lower()}#{build_number}"


@register
class BitbucketTarget(CITarget):
    provider = "bitbucket"
    config_model = BitbucketTargetConfig
    summary = ProviderSummary(
        secret_store="list (paginated), then PUT by uuid or POST (409 → re-list, PUT); always `secured: true`",
        verification="`POST .../pipelines/` → build number; status by build number",
        webhook="`X-Hub-Signature: sha256=` HMAC-SHA256 (the hook must have a secret); `X-Request-UUID`",
    )
    config: BitbucketTargetConfig

    delivery_headers = ("X-Request-UUID",)
    rate_limit_wait_seconds = RATE_LIMIT_WAIT_SECONDS
    #: The verification step's log says what it authenticated with (``_used_identity``).
    reports_identity = True
    #: 1,000 API requests per hour per user, in a rolling hour
    #: (https://support.atlassian.com/bitbucket-cloud/docs/api-request-limits/); one target's rotation lists the
    #: variables, writes two, starts the pipeline and reads its status, with room for a re-list and polls.
    rate_budget = RateBudget(limits=(Limit(REQUESTS, 1000, 3600,
                                           "https://support.atlassian.com/bitbucket-cloud/docs/api-request-limits/"),),
                             per_target={REQUESTS: 10})

    def __init__(self, config: TargetConfig, token: str, **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, token, **options)
        cfg = self.config
        self._repo_path = f"/repositories/{quote(cfg.workspace, safe='')}/{quote(cfg.repository, safe='')}"

    def _api_headers(self) -> dict[str, str]:
        # Access tokens are Bearer tokens; Atlassian API tokens (app passwords stop working in 2026) are
        # Basic with the account's email.
        if self.config.auth == "api_token":
            basic = base64.b64encode(f"{self.config.email}:{self._token}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {"Authorization": f"Bearer {self._token}"}

    # -- push ---------------------------------------------------------------------------------------

    def _prepare_push(self) -> dict[str, str]:
        # List first, then PUT or POST: 3 calls per push instead of POST-409-GET-PUT per variable,
        # which matters against Bitbucket's 1,000 requests/hour. A POST's 409 is still handled.
        return self._list_variables("list variables")

    def _write_variable(self, name: str, value: str, prepared: dict[str, str]) -> None:
        self._upsert(name, value, prepared)

    def _variables_path(self) -> str:
        cfg = self.config
        if cfg.scope == "workspace":
            return f"/workspaces/{quote(cfg.workspace, safe='')}/pipelines-config/variables"  # sic: hyphen
        if cfg.scope == "deployment":
            assert cfg.environment_uuid is not None
            env = quote(cfg.environment_uuid, safe="")
            return f"{self._repo_path}/deployments_config/environments/{env}/variables"
        return f"{self._repo_path}/pipelines_config/variables"

    def _list_variables(self, what: str) -> dict[str, str]:
        """key -> variable uuid, over every page."""
        found: dict[str, str] = {}
        path: str | None = self._variables_path()
        params: dict[str, Any] = {"pagelen": PAGE_LEN}
        for _ in range(MAX_PAGES):
            if path is None:
                return found
            try:
                page = self._http.request("GET", path, params=params, expect=(200,)).json or {}
            except HttpError as exc:
                raise self._push_failed(what, exc) from None
            for var in page.get("values") or []:
                if isinstance(var, dict) and isinstance(var.get("key"), str) and var.get("uuid"):
                    found[var["key"]] = str(var["uuid"])
            path, params = self._next_page(page.get("next"))
        raise TargetPushFailed(f"{self._where()}: {what}: more than {MAX_PAGES} pages")

    def _next_page(self, next_url: Any) -> tuple[str | None, dict[str, Any]]:
        if not next_url:
            return None, {}
        base = urlsplit(self._http.base_url)
        parts = urlsplit(str(next_url))
        # The token goes wherever we send the request: follow only links back into the same API.
        inside = parts.path == base.path or parts.path.startswith(base.path.rstrip("/") + "/")
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or not inside:
            raise TargetPushFailed(f"{self._where()}: a variables page links outside {self._http.base_url}")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return parts.path[len(base.path):], params

    def _upsert(self, key: str, value: str, existing: dict[str, str]) -> None:
        # Secured values are never shown in logs or returned by the API: always, for both variables.
        # "type" is required by Bitbucket's API description (every object extends its typed base).
        body = {"type": "pipeline_variable", "key": key, "value": value, "secured": True}
        if key not in existing:
            try:
                # A repeat answers 409 and is then updated: safe to retry.
                self._http.request("POST", self._variables_path(), json=body, expect=(201,), idempotent=True)
                log.info("%s: variable %s created", self._where(), key)
                return
            except HttpError as exc:
                if exc.status != 409:
                    raise self._push_failed(f"create variable {key}", exc) from None
            # Created since we listed (another writer): update the one that exists now.
            existing.update(self._list_variables("re-list variables after 409"))
            if key not in existing:
                raise TargetPushFailed(f"{self._where()}: variable {key} exists (409) but is not listed")
        # The uuid carries braces, which must be sent as %7B...%7D.
        path = f"{self._variables_path()}/{quote(existing[key], safe='')}"
        try:
            self._http.request("PUT", path, json=body, expect=(200,))
        except HttpError as exc:
            raise self._push_failed(f"update variable {key}", exc) from None
        log.info("%s: variable %s updated", self._where(), key)

    def _delete_variable(self, name: str, prepared: dict[str, str]) -> None:
        # Variables are deleted by uuid (204), which only the listing in ``prepared`` knows: a key it does not
        # list is not in this store.
        # https://developer.atlassian.com/cloud/bitbucket/rest/api-group-pipelines/#api-repositories-workspace-repo-slug-pipelines-config-variables-variable-uuid-delete
        uuid = prepared.get(name)
        if uuid is None:
            log.info("%s: variable %s already absent", self._where(), name)
            return
        try:
            # 404: another writer removed it since the listing, which is what was wanted.
            self._http.request("DELETE", f"{self._variables_path()}/{quote(uuid, safe='')}", expect=(204, 404))
        except HttpError as exc:
            raise self._push_failed(f"delete variable {name}", exc) from None
        del prepared[name]
        log.info("%s: variable %s deleted", self._where(), name)

    def _where(self) -> str:
        cfg = self.config
        place = {"repository": cfg.full_name, "workspace": cfg.workspace,
                 "deployment": f"{cfg.full_name} environment {cfg.environment_uuid}"}[cfg.scope]
        return f"bitbucket target {cfg.id!r} ({cfg.scope} {place})"

    def _push_failed(self, what: str, exc: HttpError) -> TargetPushFailed:
        return TargetPushFailed(f"{self._where()}: {what} refused: {exc}")

    # -- verification -------------------------------------------------------------------------------

    def trigger_verification(self, nonce: str) -> RunRef:
        cfg = self.config
        target: dict[str, Any] = {"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": cfg.branch}
        body: dict[str, Any] = {"type": "pipeline", "target": target}
        if cfg.pipeline:
            target["selector"] = {"type": "custom", "pattern": cfg.pipeline}
            # Only custom pipelines take variables; the nonce ties the run to this try in its log.
            body["variables"] = [{"type": "pipeline_variable", "key": NONCE_VARIABLE, "value": nonce, "secured": False}]
        try:
            found = send_once(
                lambda: self._http.request("POST", f"{self._repo_path}/pipelines/", json=body, expect=(201, 200)),
                lambda: self._find_pipeline(lambda p: _nonce_of(p) == nonce) if cfg.pipeline else None,
                f"bitbucket target {cfg.id!r}: trigger")
        except HttpError as exc:
            what = f"custom pipeline {cfg.pipeline!r}" if cfg.pipeline else "pipeline"
            raise VerificationTriggerFailed(
                f"bitbucket target {cfg.id!r}: {what} on {cfg.full_name}@{cfg.branch} refused: {exc}") from None
        pipeline = found if isinstance(found, dict) else (found.json if isinstance(found, Response) else None)
        pipeline = pipeline if isinstance(pipeline, dict) else {}
        number, pipeline_uuid = pipeline.get("build_number"), pipeline.get("uuid")
        if not isinstance(number, int) or isinstance(number, bool):
            raise VerificationTriggerFailed(f"bitbucket target {cfg.id!r}: the new pipeline has no build_number")
        run_id = run_id_for(cfg.full_name, number)
        if isinstance(pipeline_uuid, str) and _UUID.fullmatch(pipeline_uuid):
            _remember(run_id, pipeline_uuid)
        log.info("%s: pipeline #%s %s started", self._where(), number, pipeline_uuid or "")
        return RunRef(run_id, self._results_url(number))

    def _find_pipeline(self, wanted: Callable[[dict[str, Any]], bool],
                       older_than: int | None = None) -> dict[str, Any] | None:
        """The newest pipeline for which ``wanted`` holds, searching the latest pages; None if none.
        ``older_than``: stop once the build numbers fall below it (sorted newest first)."""
        path: str | None = f"{self._repo_path}/pipelines/"
        params: dict[str, Any] = {"sort": "-created_on", "pagelen": 50}
        for _ in range(PIPELINE_SEARCH_PAGES):
            if path is None:
                return None
            page = self._http.request("GET", path, params=params, expect=(200,)).json or {}
            values = [p for p in page.get("values") or [] if isinstance(p, dict)]
            for item in values:
                if wanted(item):
                    return item
            numbers = [p["build_number"] for p in values if isinstance(p.get("build_number"), int)]
            if older_than is not None and numbers and min(numbers) < older_than:
                return None
            try:
                path, params = self._next_page(page.get("next"))
            except TargetPushFailed:
                return None
        return None

    def _pipeline_uuid(self, run_id: str, number: int) -> str | None:
        with _uuids_lock:
            known = _uuids.get(run_id)
        if known is not None:
            return known
        found = self._find_pipeline(lambda p: p.get("build_number") == number, older_than=number)
        found_uuid = found.get("uuid") if found else None
        if isinstance(found_uuid, str) and _UUID.fullmatch(found_uuid):
            _remember(run_id, found_uuid)
            return found_uuid
        return None

    def run_status(self, run_id: str) -> RunStatus:
        cfg = self.config
        place, _, number = run_id.rpartition("#")
        if place != cfg.full_name.lower() or not number.isdigit():
            raise VerificationFailed(f"bitbucket target {cfg.id!r}: {run_id!r} is not a run of {cfg.full_name}")
        try:
            pipeline_uuid = self._pipeline_uuid(run_id, int(number))
            if pipeline_uuid is None:
                raise VerificationFailed(f"bitbucket target {cfg.id!r}: pipeline #{number} is not among the "
                                         f"newest pipelines of {cfg.full_name}")
            # The uuid carries braces, sent as %7B...%7D.
            pipeline = self._http.request("GET", f"{self._repo_path}/pipelines/{quote(pipeline_uuid, safe='')}",
                                          expect=(200,)).json
        except HttpError as exc:
            raise VerificationFailed(f"bitbucket target {cfg.id!r}: cannot read pipeline #{number}: {exc}") from None
        state = pipeline.get("state") if isinstance(pipeline, dict) else None
        status = map_pipeline(state if isinstance(state, dict) else None, self._results_url(int(number)))
        if status.state is RunState.SUCCEEDED:
            key, role = self._used_identity(pipeline_uuid)
            status = dataclasses.replace(status, used_key_sha256=key, used_role=role)
        return status

    def _used_identity(self, pipeline_uuid: str) -> tuple[str | None, str | None]:
        """What the pipeline's steps reported authenticating with (``identity_in_log``); None for
        what they did not report or Bitbucket will not give. A build that passed with a key from a workspace
        or deployment variable after graduation removed the repository's is told apart this way."""
        steps_path = f"{self._repo_path}/pipelines/{quote(pipeline_uuid, safe='')}/steps"
        key: str | None = None
        role: str | None = None
        try:
            steps = self._http.request("GET", f"{steps_path}/", expect=(200,)).json or {}
            values = steps.get("values") if isinstance(steps, dict) else None
            for step in (values if isinstance(values, list) else [])[:MAX_LOGGED_STEPS]:
                step_uuid = step.get("uuid") if isinstance(step, dict) else None
                if not isinstance(step_uuid, str) or _UUID.fullmatch(step_uuid) is None:
                    continue
                found, assumed = identity_in_log(self._step_log(f"{steps_path}/{quote(step_uuid, safe='')}/log"))
                key, role = key or found, role or assumed
        except HttpError as exc:
            log.info("%s: no authentication report for pipeline %s (%s)", self._where(), pipeline_uuid, exc.status)
        return key, role

    def _step_log(self, path: str) -> str:
        """A step's raw log. Bitbucket may answer with a redirect to where the log is stored: followed once,
        without the API credentials, and only to https or the API's own origin."""
        response = self._http.request("GET", path, headers={"Accept": "application/octet-stream"},
                                      expect=(200, 307))
        if response.status == 307:
            location = str(response.headers.get("Location") or "")
            origin = urlsplit(self.config.api_url)
            if not (location.startswith("https://") or location.startswith(f"{origin.scheme}://{origin.netloc}/")):
                return ""
            where = urlsplit(location)
            storage = HttpClient(f"{where.scheme}://{where.netloc}", {}, max_attempts=2)
            try:
                stored = storage.request("GET", location[len(f"{where.scheme}://{where.netloc}"):] or "/",
                                         headers={"Accept": "application/octet-stream"}, expect=(200,))
            except (HttpError, TransientError):
                return ""
            return stored.data.decode(errors="replace")
        return response.data.decode(errors="replace")

    def _results_url(self, number: int) -> str | None:
        if self.config.api_url != DEFAULT_API_URL:
            return None  # a self-hosted or local API: no known web UI address
        return f"https://bitbucket.org/{self.config.full_name}/pipelines/results/{number}"

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> None:
        given = lower_headers.get("x-hub-signature", "")
        if not given:
            # Bitbucket signs only when the webhook has a secret; an unsigned delivery is never trusted.
            raise WebhookRejected("missing X-Hub-Signature (does the Bitbucket webhook have a secret?)", 401)
        if not hmac.compare_digest(signature(secret, raw_body).encode(), given.encode()):
            raise WebhookRejected("X-Hub-Signature does not match the body", 401)
        # Retries repeat X-Request-UUID (delivery_headers; X-Attempt-Number grows); X-Hook-UUID names the
        # hook, not the delivery.

    @classmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        if delivery is None:  # the base's preamble found one; explicit so python -O cannot change it
            raise WebhookRejected("no delivery id", 400)
        if lower_headers.get("x-event-key") not in STATUS_EVENTS:
            return WebhookEvent(delivery, None, None)
        status, repository = _commit_status(raw_body)
        number = _build_number(status)
        if number is None or not repository:
            return WebhookEvent(delivery, None, None)  # a status from another tool, not from Pipelines
        url = status.get("url") if isinstance(status.get("url"), str) else None
        return WebhookEvent(delivery, run_id_for(repository, number), map_commit_status(status.get("state"), url))


def _nonce_of(pipeline: Mapping[str, Any]) -> str | None:
    for var in pipeline.get("variables") or []:
        if isinstance(var, dict) and var.get("key") == NONCE_VARIABLE and isinstance(var.get("value"), str):
            return str(var["value"])
    return None


def _commit_status(raw_body: bytes) -> tuple[dict[str, Any], str | None]:
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookRejected("body is not JSON", 400) from None
    status = payload.get("commit_status") if isinstance(payload, dict) else None
    if not isinstance(status, dict):
        raise WebhookRejected("commit status event without commit_status", 400)
    repository = payload.get("repository") or status.get("repository") or {}
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    return status, full_name if isinstance(full_name, str) and "/" in full_name else None


def _build_number(status: Mapping[str, Any]) -> str | None:
    """Pipelines' statuses link to ``.../pipelines/results/<n>`` and are named ``Pipeline #<n> for ...``."""
    url, name = status.get("url"), status.get("name")
    match = _RESULTS_URL.search(url) if isinstance(url, str) else None
    if match is None and isinstance(name, str):
        match = _PIPELINE_NAME.match(name)
    return match.group(1) if match else None
