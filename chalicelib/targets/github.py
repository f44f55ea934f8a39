"""GitHub Actions: sealed-box secrets, workflow_dispatch verification builds, ``workflow_run`` webhooks.

Contract: docs/ci-providers/github.md. The verification workflow must declare
``on: workflow_dispatch`` with a ``nonce`` input and ``run-name: verify-${{ inputs.nonce }}`` (the
fallback for servers that do not return run ids finds the run by that title).
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
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Unpack
from urllib.parse import quote

from nacl import encoding, public
from pydantic import Field, field_validator, model_validator

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.pacing import POINTS, REQUESTS, WRITES, Limit, RateBudget
from chalicelib.secret_ref import SecretRef
from chalicelib.targets.base import (
    CITarget,
    HttpOptions,
    ProviderSummary,
    RunRef,
    RunState,
    RunStatus,
    StoredCredential,
    TargetConfig,
    WebhookEvent,
    WebhookRejected,
    identity_in_messages,
)
from chalicelib.targets.github_app import (
    GitHubAppAuth,
    InstallationClient,
    InstallationTokens,
    load_private_key,
)
from chalicelib.targets.http import HttpClient, HttpError, Response, send_once
from chalicelib.targets.registry import register

log = logging.getLogger(__name__)

_REPOSITORY = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"
#: Public keys change rarely; a short cache saves one GET per secret without risking a stale key for long.
PUBLIC_KEY_TTL_SECONDS = 60.0

_key_cache: dict[tuple[str, str], tuple[float, str, str]] = {}
_key_cache_lock = threading.Lock()


class GitHubTargetConfig(TargetConfig):
    """Where the key pair lives in GitHub, and which workflow proves it works."""

    provider: Literal["github"]
    #: A token, or ``app``: exactly one of the two (the check is ``_one_credential``).
    token: SecretRef | None = None
    #: Authenticate as a GitHub App installation (short-lived tokens) instead of with a long-lived token.
    app: GitHubAppAuth | None = None
    api_url: str = "https://api.github.com"
    #: owner/repo; the verification workflow always runs here.
    repository: str
    scope: Literal["repository", "environment", "organization"] = "repository"
    environment: str | None = Field(None, min_length=1, max_length=255)
    #: For scope=organization; defaults to the repository's owner.
    organization: str | None = Field(None, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
    visibility: Literal["all", "private", "selected"] = "selected"
    #: For visibility=selected: every repository that may read the org secret (the PUT replaces the list).
    selected_repositories: list[str] = Field(default_factory=list)
    workflow: str = Field("rotate-verify.yml", pattern=r"^[A-Za-z0-9._-]+$")
    ref: str = Field("main", min_length=1)
    api_version: str = "2022-11-28"

    @field_validator("repository")
    @classmethod
    def _repository_name(cls, value: str) -> str:
        if not _matches(_REPOSITORY, value):
            raise ValueError(f"must be an owner/repo name, not {value!r}")
        return value

    @field_validator("selected_repositories")
    @classmethod
    def _repository_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _matches(_REPOSITORY, name)]
        if bad:
            raise ValueError(f"must be owner/repo names; not: {bad}")
        return value

    token_optional = True

    @model_validator(mode="after")
    def _one_credential(self) -> GitHubTargetConfig:
        if (self.token is None) == (self.app is None):
            raise ValueError("give exactly one of token (where a token is stored) and app (a GitHub App: "
                             "app_id, private_key, optional installation_id)")
        return self

    def credential(self) -> StoredCredential:
        if self.app is not None:
            return StoredCredential("app.private_key", self.app.private_key)
        return super().credential()

    @model_validator(mode="after")
    def _scope_fields(self) -> GitHubTargetConfig:
        if self.scope == "environment" and not self.environment:
            raise ValueError("environment is required when scope is 'environment'")
        if self.scope != "environment" and self.environment:
            raise ValueError("environment is only allowed with scope 'environment'")
        if self.scope != "organization" and self.organization:
            raise ValueError("organization is only allowed with scope 'organization'")
        if self.selected_repositories and (self.scope != "organization" or self.visibility != "selected"):
            raise ValueError("selected_repositories needs scope 'organization' and visibility 'selected'")
        return self

    @property
    def org_name(self) -> str:
        return self.organization or self.repository.split("/")[0]

    def variable_store(self) -> tuple[str, ...]:
        if self.scope == "organization":
            return ("organization", self.org_name.lower())
        if self.scope == "environment":
            return ("environment", self.repository.lower(), str(self.environment).lower())
        return ("repository", self.repository.lower())


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def encrypt(public_key_b64: str, value: str) -> str:
    """libsodium sealed box, as in GitHub's own example; randomised, so never compare ciphertexts."""
    key = public.PublicKey(public_key_b64.encode(), encoding.Base64Encoder)
    return base64.b64encode(public.SealedBox(key).encrypt(value.encode())).decode()


#: The annotation title of the verification files' notices (``base.IDENTITY_NOTICE``).
KEY_NOTICE_TITLE = "rotate-verify"


def map_run(status: str | None, conclusion: str | None, url: str | None = None) -> RunStatus:
    """Only completed+success is a pass; every other conclusion keeps the old key alive."""
    if status != "completed":
        return RunStatus(RunState.PENDING, status or "unknown", url)
    state = RunState.SUCCEEDED if conclusion == "success" else RunState.FAILED
    return RunStatus(state, f"completed/{conclusion or 'none'}", url)


def signature(secret: str, raw_body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()


#: GitHub's REST limits per token (https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api):
#: primary 5,000 requests per hour for a token or an App installation (Enterprise Cloud: 15,000; replace
#: ``GitHubTarget.rate_budget`` with ``github_rate_budget(15_000)`` there); secondary: 80 content-creating
#: requests per minute and 500 per hour, 900 points per minute (GET 1 point, POST/PATCH/PUT/DELETE 5).
#: One target's rotation: public key, two secret PUTs, the dispatch, run status, jobs and annotations, with
#: room for a status poll or two (tests/test_pacing.py measures it against the emulator).
GITHUB_ROTATION_REQUESTS, GITHUB_ROTATION_WRITES = 10, 3
GITHUB_LIMITS_DOC = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"


def github_rate_budget(primary_per_hour: int = 5000) -> RateBudget:
    reads = GITHUB_ROTATION_REQUESTS - GITHUB_ROTATION_WRITES
    return RateBudget(
        limits=(Limit(REQUESTS, primary_per_hour, 3600, GITHUB_LIMITS_DOC), Limit(WRITES, 80, 60, GITHUB_LIMITS_DOC),
                Limit(WRITES, 500, 3600, GITHUB_LIMITS_DOC), Limit(POINTS, 900, 60, GITHUB_LIMITS_DOC)),
        per_target={REQUESTS: GITHUB_ROTATION_REQUESTS, WRITES: GITHUB_ROTATION_WRITES,
                    POINTS: reads + 5 * GITHUB_ROTATION_WRITES},
    )


GITHUB_RATE_BUDGET = github_rate_budget()


@register
class GitHubTarget(CITarget):
    provider = "github"
    config_model = GitHubTargetConfig
    reports_identity = True
    summary = ProviderSummary(
        secret_store="libsodium sealed box (PyNaCl) with the scope's public key; 201/204",
        verification="`workflow_dispatch` with `return_run_details`, else found by the `nonce` input in `run-name`",
        webhook="`X-Hub-Signature-256` HMAC-SHA256, `X-GitHub-Delivery`",
    )
    config: GitHubTargetConfig

    delivery_headers = ("X-GitHub-Delivery",)
    rate_budget = GITHUB_RATE_BUDGET

    def __init__(self, config: TargetConfig, token: str, *, find_run_attempts: int = 6,
                 clock: Callable[[], float] = time.time, **options: Unpack[HttpOptions]) -> None:
        """``token``: the resolved secret ``config.credential()`` names: the API token, or with ``app`` the
        App's private key (PEM). ``clock``: epoch seconds, for the App's JWT and token expiry."""
        self._app_tokens: InstallationTokens | None = None
        super().__init__(config, token, **options)
        self._find_run_attempts = find_run_attempts
        self._repo_ids: dict[str, int] = {}
        cfg = self.config
        if cfg.app is not None:
            where = f"github target {cfg.id!r}: the GitHub App private key at {cfg.app.private_key}"
            key = load_private_key(token, where)
            self._token = ""  # the PEM is not a bearer token; only the key object is kept
            exchange = HttpClient(cfg.api_url, self._version_headers(), timeout=options.get("timeout", 10.0),
                                  max_wait_seconds=options.get("max_wait_seconds", 20.0), sleep=self._sleep)
            owner = ("orgs", cfg.org_name) if cfg.scope == "organization" else ("repos", cfg.repository)
            self._app_tokens = InstallationTokens(cfg.app, key, exchange, owner=owner,
                                                  repositories=self._app_repositories(),
                                                  permissions=self._app_permissions(), clock=clock)

    def _version_headers(self) -> dict[str, str]:
        return {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": self.config.api_version}

    def _api_headers(self) -> dict[str, str]:
        if self.config.app is not None:  # the installation token is added per request (InstallationClient)
            return self._version_headers()
        return {"Authorization": f"Bearer {self._token}", **self._version_headers()}

    def _client(self, *, timeout: float, max_wait_seconds: float) -> HttpClient:
        if self.config.app is None:
            return super()._client(timeout=timeout, max_wait_seconds=max_wait_seconds)
        return InstallationClient(self.config.api_url, self._api_headers(), self._installation_tokens,
                                  timeout=timeout, max_wait_seconds=max_wait_seconds, sleep=self._sleep)

    def _installation_tokens(self) -> InstallationTokens:
        if self._app_tokens is None:  # set in __init__ whenever config.app is; explicit for python -O
            raise TargetPushFailed(f"{self._where()}: no GitHub App configured", changed=False)
        return self._app_tokens

    def _app_repositories(self) -> list[str]:
        """The repositories the installation token is narrowed to (names within the installation's account):
        the verification repository and, for an organization secret, the repositories that may read it."""
        cfg = self.config
        names = [cfg.repository]
        if cfg.scope == "organization" and cfg.visibility == "selected":
            names += cfg.selected_repositories
        return sorted({name.split("/")[1] for name in names})

    def _app_permissions(self) -> dict[str, str]:
        """What the calls of this target need, per GitHub's "Permissions required for GitHub Apps":
        secrets (or organization secrets; environment secrets also need environments) to write, actions to
        dispatch and read runs, checks to read the key report, metadata to resolve repository ids."""
        scope = self.config.scope
        permissions = {"actions": "write", "checks": "read", "metadata": "read"}
        if scope == "organization":
            permissions["organization_secrets"] = "write"
        else:
            permissions["secrets"] = "write"
        if scope == "environment":
            permissions["environments"] = "write"
        return permissions

    # -- push ---------------------------------------------------------------------------------------

    def _prepare_push(self) -> dict[str, Any]:
        return self._org_fields() if self.config.scope == "organization" else {}

    def _write_variable(self, name: str, value: str, prepared: dict[str, Any]) -> None:
        self._put_secret(name, value, prepared)

    def _secrets_path(self) -> str:
        cfg = self.config
        if cfg.scope == "organization":
            return f"/orgs/{cfg.org_name}/actions/secrets"
        if cfg.scope == "environment":
            assert cfg.environment is not None
            return f"/repos/{cfg.repository}/environments/{quote(cfg.environment, safe='')}/secrets"
        return f"/repos/{cfg.repository}/actions/secrets"

    def _put_secret(self, name: str, value: str, extra: dict[str, Any]) -> None:
        path = f"{self._secrets_path()}/{name}"
        for fresh in (False, True):
            key_id, key = self._public_key(fresh)
            body = {"encrypted_value": encrypt(key, value), "key_id": key_id, **extra}
            try:
                response = self._http.request("PUT", path, json=body, expect=(201, 204))
                log.info("%s: secret %s %s", self._where(), name, "created" if response.status == 201 else "updated")
                return
            except HttpError as exc:
                # A 422 with a cached key may just mean GitHub rotated its key: refetch once.
                if exc.status == 422 and not fresh:
                    continue
                raise self._push_failed(f"PUT secret {name}", exc) from None

    def _delete_variable(self, name: str, prepared: dict[str, Any]) -> None:
        # 204 when deleted (https://docs.github.com/rest/actions/secrets#delete-a-repository-secret and its
        # environment/organization siblings); 404 when the secret is not there.
        try:
            response = self._http.request("DELETE", f"{self._secrets_path()}/{name}", expect=(204, 404))
        except HttpError as exc:
            raise self._push_failed(f"DELETE secret {name}", exc) from None
        if response.status == 404:
            # GitHub answers 404 for a repository or organization the token may not see as well: the secret
            # only counts as absent if the store itself can be read.
            self._public_key(fresh=True)
            log.info("%s: secret %s already absent", self._where(), name)
            return
        log.info("%s: secret %s deleted", self._where(), name)

    def _public_key(self, fresh: bool) -> tuple[str, str]:
        path = f"{self._secrets_path()}/public-key"
        cache_key = (self.config.api_url, path)
        now = time.monotonic()
        with _key_cache_lock:
            cached = _key_cache.get(cache_key)
        if cached and not fresh and now - cached[0] < PUBLIC_KEY_TTL_SECONDS:
            return cached[1], cached[2]
        try:
            body = self._http.request("GET", path, expect=(200,)).json or {}
        except HttpError as exc:
            raise self._push_failed("GET public key", exc) from None
        key_id, key = str(body.get("key_id", "")), str(body.get("key", ""))
        if not key_id or not key:
            raise TargetPushFailed(f"{self._where()}: public key response has no key_id/key")
        with _key_cache_lock:
            _key_cache[cache_key] = (now, key_id, key)
        return key_id, key

    def _org_fields(self) -> dict[str, Any]:
        cfg = self.config
        fields: dict[str, Any] = {"visibility": cfg.visibility}
        if cfg.visibility == "selected":
            names = dict.fromkeys([cfg.repository, *cfg.selected_repositories])
            fields["selected_repository_ids"] = [self._repository_id(name) for name in names]
        return fields

    def _repository_id(self, full_name: str) -> int:
        if full_name not in self._repo_ids:
            try:
                body = self._http.request("GET", f"/repos/{full_name}", expect=(200,)).json or {}
            except HttpError as exc:
                raise self._push_failed(f"resolve repository {full_name}", exc) from None
            if not isinstance(body.get("id"), int):
                raise TargetPushFailed(f"{self._where()}: GET /repos/{full_name} returned no id")
            self._repo_ids[full_name] = body["id"]
        return self._repo_ids[full_name]

    def _where(self) -> str:
        cfg = self.config
        place = {"repository": cfg.repository, "environment": f"{cfg.repository}:{cfg.environment}",
                 "organization": cfg.org_name}[cfg.scope]
        return f"github target {cfg.id!r} ({cfg.scope} {place})"

    def _push_failed(self, what: str, exc: HttpError) -> TargetPushFailed:
        return TargetPushFailed(f"{self._where()}: {what} refused: {exc}")

    # -- verification -------------------------------------------------------------------------------

    def trigger_verification(self, nonce: str) -> RunRef:
        cfg = self.config
        path = f"/repos/{cfg.repository}/actions/workflows/{cfg.workflow}/dispatches"
        body: dict[str, Any] = {"ref": cfg.ref, "inputs": {"nonce": nonce}}
        since = datetime.now(UTC) - timedelta(minutes=5)  # slack for clock skew with the server

        def dispatch(payload: dict[str, Any]) -> Any:
            # A gateway error may come after GitHub queued the run: look for its title before re-sending.
            return send_once(lambda: self._http.request("POST", path, json=payload, expect=(200, 204)),
                             lambda: self._find_run(nonce, since, required=False),
                             f"github target {cfg.id!r}: dispatch")

        try:
            result = dispatch({**body, "return_run_details": True})
        except HttpError as exc:
            if exc.status not in (400, 422):
                raise self._trigger_failed(exc) from None
            # Older GHES refuses return_run_details; a plain dispatch then gives no id.
            try:
                result = dispatch(body)
            except HttpError as retry_exc:
                raise self._trigger_failed(retry_exc) from None
        if isinstance(result, RunRef):
            return result
        response: Response = result
        details = response.json if isinstance(response.json, dict) else {}
        if response.status == 200 and details.get("workflow_run_id"):
            return RunRef(str(details["workflow_run_id"]), details.get("html_url"))
        found = self._find_run(nonce, since)
        if found is None:  # required=True raises first; kept explicit so python -O cannot change it
            raise VerificationTriggerFailed(f"dispatched, but no run titled verify-{nonce} appeared")
        return found

    def _find_run(self, nonce: str, since: datetime, *, required: bool = True) -> RunRef | None:
        """The run titled ``verify-<nonce>``; None (``required=False``) or VerificationTriggerFailed if none
        appears within the attempts."""
        cfg = self.config
        path = f"/repos/{cfg.repository}/actions/workflows/{cfg.workflow}/runs"
        params = {"event": "workflow_dispatch", "branch": cfg.ref, "per_page": 50,
                  "created": f">={since.strftime('%Y-%m-%dT%H:%M:%SZ')}"}
        title = f"verify-{nonce}"
        delay = 1.0
        for attempt in range(self._find_run_attempts):
            if attempt:
                self._sleep(delay)
                delay = min(delay * 2, 5.0)
            try:
                runs = (self._http.request("GET", path, params=params, expect=(200,)).json or {})
            except HttpError as exc:
                raise self._trigger_failed(exc) from None
            for run in runs.get("workflow_runs", []):
                if run.get("display_title") == title:
                    return RunRef(str(run["id"]), run.get("html_url"))
        if not required:
            return None
        raise VerificationTriggerFailed(
            f"github target {cfg.id!r}: dispatched {cfg.workflow} on {cfg.repository}@{cfg.ref} but no run "
            f"titled {title!r} appeared; does the workflow set run-name: verify-${{{{ inputs.nonce }}}}?"
        )

    def _trigger_failed(self, exc: HttpError) -> VerificationTriggerFailed:
        cfg = self.config
        return VerificationTriggerFailed(
            f"github target {cfg.id!r}: dispatch {cfg.workflow} on {cfg.repository}@{cfg.ref} refused: {exc}"
        )

    def run_status(self, run_id: str) -> RunStatus:
        cfg = self.config
        if not run_id.isdigit():
            raise VerificationFailed(f"github target {cfg.id!r}: run id {run_id!r} is not a GitHub run id")
        try:
            run = self._http.request("GET", f"/repos/{cfg.repository}/actions/runs/{run_id}",
                                     expect=(200,)).json or {}
        except HttpError as exc:
            raise VerificationFailed(f"github target {cfg.id!r}: cannot read run {run_id}: {exc}") from None
        status = map_run(run.get("status"), run.get("conclusion"), run.get("html_url"))
        if status.state is RunState.SUCCEEDED:
            key, role = self._used_identity(run_id)
            status = dataclasses.replace(status, used_key_sha256=key, used_role=role)
        return status

    def _used_identity(self, run_id: str) -> tuple[str | None, str | None]:
        """What the run's job reported authenticating with, as ``::notice title=rotate-verify::…`` check-run
        annotations: ``access key sha256 <digest>`` (the key templates) and ``oidc role <assumed-role ARN>``
        (the OIDC templates, templates/verify/github/oidc/); None for what it did not report or GitHub will
        not say."""
        repo = self.config.repository
        messages: list[str] = []
        try:
            jobs = self._http.request("GET", f"/repos/{repo}/actions/runs/{run_id}/jobs", expect=(200,)).json or {}
            for job in jobs.get("jobs", []):
                check_run = str(job.get("check_run_url") or "").rsplit("/", 1)[-1]
                if not check_run.isdigit():
                    continue
                notes = self._http.request("GET", f"/repos/{repo}/check-runs/{check_run}/annotations",
                                           expect=(200,)).json or []
                messages += [str(note.get("message") or "").strip()
                             for note in (notes if isinstance(notes, list) else [])
                             if note.get("title") == KEY_NOTICE_TITLE]
        except HttpError as exc:
            log.info("%s: no key report for run %s (%s)", self._where(), run_id, exc.status)
        return identity_in_messages(messages)

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> None:
        given = lower_headers.get("x-hub-signature-256", "")
        if not given:
            raise WebhookRejected("missing X-Hub-Signature-256", 401)
        if not hmac.compare_digest(signature(secret, raw_body).encode(), given.encode()):
            raise WebhookRejected("X-Hub-Signature-256 does not match the body", 401)

    @classmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        if delivery is None:  # the base's preamble found one; explicit so python -O cannot change it
            raise WebhookRejected("no delivery id", 400)
        if lower_headers.get("x-github-event") != "workflow_run":
            return WebhookEvent(delivery, None, None)
        run, action = _workflow_run(raw_body)
        status = None
        if action == "completed":
            status = map_run(run.get("status"), run.get("conclusion"), run.get("html_url"))
        return WebhookEvent(delivery, str(run["id"]), status)


def _workflow_run(raw_body: bytes) -> tuple[dict[str, Any], Any]:
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookRejected("body is not JSON", 400) from None
    run = payload.get("workflow_run") if isinstance(payload, dict) else None
    run_id = run.get("id") if isinstance(run, dict) else None
    if not isinstance(run, dict) or not isinstance(run_id, int) or isinstance(run_id, bool):
        raise WebhookRejected("workflow_run event without workflow_run.id", 400)
    return run, payload.get("action")
