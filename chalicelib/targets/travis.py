"""Travis CI (API v3): private env vars, API-triggered verification requests, RSA-signed webhooks.

Contract: docs/ci-providers/travis.md. A verification is a ``requests#create`` whose
build must be resolved later; the run id is the build id once known, else ``request:<id>`` (run_status
resolves it, and a request that produced no build is a failed verification). Webhook deliveries are
form-encoded and signed by Travis's private key, so the "secret" configured for the travis webhook is
the PEM *public* key served at ``GET /config`` (``config.notifications.webhook.public_key``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal, Unpack, cast
from urllib.parse import parse_qs, quote

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field, field_validator

from chalicelib.errors import (
    TargetPushFailed,
    TransientError,
    VerificationFailed,
    VerificationTriggerFailed,
)
from chalicelib.pacing import Limit, RateBudget
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
    https_or_loopback,
)
from chalicelib.targets.http import HttpError, send_once
from chalicelib.targets.registry import register

log = logging.getLogger(__name__)

_SLUG = r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$"
REQUEST_PREFIX = "request:"

#: Terminal build states (travis-api ``Build::States``); created/received/started are still running.
SUCCEEDED_STATES = frozenset({"passed"})
FAILED_STATES = frozenset({"failed", "errored", "canceled"})
#: ``status_message`` values of the webhook payload (travis-tasks ``result_message``).
_PASSED_MESSAGES = frozenset({"passed", "fixed"})
_FAILED_MESSAGES = frozenset({"failed", "broken", "still failing", "errored", "canceled"})


class TravisTargetConfig(TargetConfig):
    """Where the key pair lives in Travis CI, and which branch runs the verification build."""

    provider: Literal["travis"]
    api_url: str = "https://api.travis-ci.com"
    #: owner/name; sent URL-encoded (``owner%2Fname``) as Travis requires.
    repository: str
    #: The branch the verification request builds.
    branch: str = Field("main", min_length=1, max_length=255)
    #: Restrict both variables to one branch (Travis ``env_var.branch``); None: every branch.
    variable_branch: str | None = Field(None, min_length=1, max_length=255)
    #: The rotator's ``/webhooks/travis`` URL: merged into the verification request's config as a
    #: ``notifications.webhooks`` block (Travis has no API to register a webhook). None: poll only.
    notify_url: str | None = None

    @field_validator("notify_url")
    @classmethod
    def _safe_notify_url(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value)

    @field_validator("repository")
    @classmethod
    def _slug(cls, value: str) -> str:
        if re.fullmatch(_SLUG, value) is None:
            raise ValueError(f"must be an owner/name repository slug, not {value!r}")
        return value

    def variable_store(self) -> tuple[str, ...]:
        return ("repository", self.repository.lower(), self.variable_branch or "")

    def rate_scope(self) -> str:
        """What Travis counts API-triggered builds against: the repository, whichever token asks
        (chalicelib/scheduler.py paces targets by this instead of by their token)."""
        return f"repository:{self.repository.lower()}"


#: ``requests#create`` allows 10 API-triggered requests per repository in a rolling hour by default: the 202
#: reports ``remaining_requests`` (https://docs.travis-ci.com/user/triggering-builds/) and the 11th is a 429
#: ``request_limit_reached`` (``LIMIT``/``TIME_FRAME`` in Travis's API source, ``TRAVIS_LIMITS_SOURCE``); an
#: admin setting may raise it per repository (up to 200: ``travis_rate_budget(200)``). Travis publishes no
#: per-token figure. One target's rotation sends one verification request (``send_once`` re-sends only after
#: a gateway error that created nothing); tests/test_pacing_providers.py counts it against the emulator.
TRAVIS_API_BUILDS = "api_build_requests"
TRAVIS_ROTATION_API_BUILDS = 1
TRAVIS_LIMITS_SOURCE = ("https://github.com/travis-ci/travis-api/blob/master/lib/travis/api/v3/services/requests/"
                        "create.rb")


#: A 429 ``request_limit_reached`` names the limit and its rolling window but not when a request leaves it:
#: the average spacing of the default quota (an hour / 10) is the wait handed to the state machine, rather
#: than a few seconds of backoff spent re-sending into a window that moves only with the clock.
RATE_LIMIT_WAIT_SECONDS = 3600.0 / 10


def travis_rate_budget(api_builds_per_hour: int = 10) -> RateBudget:
    return RateBudget(limits=(Limit(TRAVIS_API_BUILDS, api_builds_per_hour, 3600, TRAVIS_LIMITS_SOURCE),),
                      per_target={TRAVIS_API_BUILDS: TRAVIS_ROTATION_API_BUILDS})


def map_build(state: str | None, url: str | None = None) -> RunStatus:
    """Only ``passed`` is a pass; an unknown state keeps waiting (the old key stays alive meanwhile)."""
    if state in SUCCEEDED_STATES:
        return RunStatus(RunState.SUCCEEDED, state, url)
    if state in FAILED_STATES:
        return RunStatus(RunState.FAILED, state, url)
    return RunStatus(RunState.PENDING, state or "unknown", url)


def sign(private_key: rsa.RSAPrivateKey, payload: str) -> str:
    """The ``Signature`` header Travis sends: base64 RSA PKCS#1 v1.5 over SHA-1 of the payload field."""
    # SHA-1 is Travis's choice, not ours; we can only verify what it signs.
    return base64.b64encode(private_key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA1())).decode()  # noqa: S303


@register
class TravisTarget(CITarget):
    provider = "travis"
    config_model = TravisTargetConfig
    summary = ProviderSummary(
        secret_store="list, then PATCH or POST (409 → re-list, PATCH); always `public: false`",
        verification=(
            "`POST /repo/{slug}/requests` (202), then the request's build; a request without a build is a "
            "failure"
        ),
        webhook=(
            '`Signature`: RSA-SHA1 over the `payload` form field, verified with the PEM public key from '
            'Travis\'s `/config` (the webhook "secret"); delivery id derived from build, state and payload'
        ),
    )
    config: TravisTargetConfig

    webhook_secret_kind = "public key"
    rate_budget = travis_rate_budget()
    rate_limit_wait_seconds = RATE_LIMIT_WAIT_SECONDS

    def __init__(self, config: TargetConfig, token: str, *, resolve_attempts: int = 6,
                 **options: Unpack[HttpOptions]) -> None:
        super().__init__(config, token, **options)
        self._resolve_attempts = resolve_attempts
        self._repo_path = f"/repo/{quote(self.config.repository, safe='')}"

    def _api_headers(self) -> dict[str, str]:
        return {"Travis-API-Version": "3", "Authorization": f"token {self._token}"}

    # -- push ---------------------------------------------------------------------------------------

    def _prepare_push(self) -> dict[str, dict[str, Any]]:
        return self._list_env_vars("list env vars")

    def _write_variable(self, name: str, value: str, prepared: dict[str, dict[str, Any]]) -> None:
        self._upsert(name, value, prepared)

    def _list_env_vars(self, what: str) -> dict[str, dict[str, Any]]:
        """name -> env var, for the variables in our branch scope (another branch's are other variables)."""
        try:
            body = self._http.request("GET", f"{self._repo_path}/env_vars", expect=(200,)).json or {}
        except HttpError as exc:
            raise self._push_failed(what, exc) from None
        found: dict[str, dict[str, Any]] = {}
        for var in body.get("env_vars") or []:
            if isinstance(var, dict) and var.get("branch") == self.config.variable_branch and var.get("id"):
                found[str(var.get("name"))] = var
        return found

    def _upsert(self, name: str, value: str, existing: dict[str, dict[str, Any]]) -> None:
        body = {
            "env_var.name": name,
            "env_var.value": value,
            # Public values are printed in build logs and returned by the API: never, for either variable.
            "env_var.public": False,
            "env_var.branch": self.config.variable_branch,
        }
        if name not in existing:
            try:
                # A repeat answers 409 and is then updated: safe to retry.
                self._http.request("POST", f"{self._repo_path}/env_vars", json=body, expect=(201,),
                                   idempotent=True)
                log.info("%s: env var %s created", self._where(), name)
                return
            except HttpError as exc:
                if exc.status != 409:
                    raise self._push_failed(f"create env var {name}", exc) from None
            # Created since we listed (another writer): update the one that exists now.
            existing.update(self._list_env_vars("re-list env vars after 409"))
            if name not in existing:
                raise TargetPushFailed(f"{self._where()}: env var {name} is a duplicate (409) but is not listed")
        var = existing[name]
        if var.get("public"):
            log.warning("%s: env var %s was public; it is made private now", self._where(), name)
        try:
            self._http.request("PATCH", f"{self._repo_path}/env_var/{quote(str(var['id']), safe='')}",
                               json=body, expect=(200,))
        except HttpError as exc:
            raise self._push_failed(f"update env var {name}", exc) from None
        log.info("%s: env var %s updated", self._where(), name)

    def _delete_variable(self, name: str, prepared: dict[str, dict[str, Any]]) -> None:
        # By id, from the listing of our branch scope: another branch's variable of that name is left alone.
        # 204 when deleted (https://developer.travis-ci.com/resource/env_var#delete).
        var = prepared.get(name)
        if var is None:
            log.info("%s: env var %s already absent", self._where(), name)
            return
        try:
            # 404: removed since the listing, which is what was wanted.
            self._http.request("DELETE", f"{self._repo_path}/env_var/{quote(str(var['id']), safe='')}",
                               expect=(204, 404))
        except HttpError as exc:
            raise self._push_failed(f"delete env var {name}", exc) from None
        del prepared[name]
        log.info("%s: env var %s deleted", self._where(), name)

    def _where(self) -> str:
        return f"travis target {self.config.id!r} ({self.config.repository})"

    def _push_failed(self, what: str, exc: HttpError) -> TargetPushFailed:
        return TargetPushFailed(f"{self._where()}: {what} refused: {exc}")

    # -- verification -------------------------------------------------------------------------------

    def trigger_verification(self, nonce: str) -> RunRef:
        request: dict[str, Any] = {"branch": self.config.branch, "message": f"key-rotation verify {nonce}"}
        if self.config.notify_url:
            # deep_merge keeps the repository's .travis.yml and only adds our webhook.
            request["config"] = {
                "merge_mode": "deep_merge",
                "notifications": {"webhooks": {"urls": [self.config.notify_url], "on_success": "always",
                                               "on_failure": "always", "on_start": "never"}},
            }
        try:
            # Travis allows 10 API requests an hour: after a gateway error, look for ours before re-sending.
            found = send_once(
                lambda: self._http.request("POST", f"{self._repo_path}/requests", json={"request": request},
                                           expect=(202, 200, 201)),
                lambda: self._find_request(request["message"]), f"{self._where()}: verification request")
        except HttpError as exc:
            raise VerificationTriggerFailed(
                f"{self._where()}: verification request on {self.config.branch} refused: {exc}") from None
        if isinstance(found, int):
            return RunRef(self._resolve_build(found))
        response = found
        body = response.json if isinstance(response.json, dict) else {}
        request_id = (body.get("request") or {}).get("id")
        if not isinstance(request_id, int):
            raise VerificationTriggerFailed(f"{self._where()}: the 202 for the verification request has no id")
        log.info("%s: verification request %s accepted (%s API requests left this hour)", self._where(),
                 request_id, body.get("remaining_requests", "?"))
        return RunRef(self._resolve_build(request_id))

    def _find_request(self, message: str) -> int | None:
        """The id of the newest request carrying ``message`` (it holds the nonce); None if there is none."""
        body = self._http.request("GET", f"{self._repo_path}/requests", params={"limit": 25},
                                  expect=(200,)).json or {}
        for item in body.get("requests") or []:
            if isinstance(item, dict) and item.get("message") == message and isinstance(item.get("id"), int):
                return int(item["id"])
        return None

    def _resolve_build(self, request_id: int) -> str:
        """The build id, so webhooks (which name builds) match; else the request id, resolved later.

        The request exists now: a failure here must not fail the trigger, or a retry would start a
        second build. run_status resolves ``request:<id>`` whenever the build appears.
        """
        delay = 0.5
        for attempt in range(self._resolve_attempts):
            if attempt:
                self._sleep(delay)
                delay = min(delay * 2, 4.0)
            try:
                request = self._request(request_id)
            except (HttpError, TransientError) as exc:
                log.info("%s: request %s not readable yet (%s)", self._where(), request_id, exc)
                continue
            build_id = _first_build_id(request)
            if build_id is not None:
                return build_id
            if _request_settled(request):
                break  # no build will come; run_status reports it as a failed verification
        return f"{REQUEST_PREFIX}{request_id}"

    def _request(self, request_id: int | str) -> dict[str, Any]:
        body = self._http.request("GET", f"{self._repo_path}/request/{request_id}", expect=(200,)).json
        return body if isinstance(body, dict) else {}

    def run_status(self, run_id: str) -> RunStatus:
        try:
            if run_id.startswith(REQUEST_PREFIX) and run_id[len(REQUEST_PREFIX):].isdigit():
                return self._request_status(run_id[len(REQUEST_PREFIX):])
            if run_id.isdigit():
                return self._build_status(run_id)
        except HttpError as exc:
            raise VerificationFailed(f"{self._where()}: cannot read {run_id}: {exc}") from None
        raise VerificationFailed(f"{self._where()}: {run_id!r} is neither a Travis build id nor request:<id>")

    def _request_status(self, request_id: str) -> RunStatus:
        request = self._request(request_id)
        build_id = _first_build_id(request)
        if build_id is not None:
            return self._build_status(build_id)
        if _request_settled(request):
            why = request.get("result") or request.get("state") or "finished"
            return RunStatus(RunState.FAILED, f"no build ran (request {why})")
        return RunStatus(RunState.PENDING, f"request {request.get('state') or 'pending'}")

    def _build_status(self, build_id: str) -> RunStatus:
        build = self._http.request("GET", f"/build/{build_id}", expect=(200,)).json or {}
        return map_build(build.get("state"))

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> None:
        """``secret`` is Travis's PEM public key; the signature covers the ``payload`` form field."""
        given = lower_headers.get("signature", "")
        if not given:
            raise WebhookRejected("missing Signature", 401)
        _verify(_public_key(secret.strip()), given, _payload_field(raw_body))

    @classmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        payload = _payload_field(raw_body)
        build = _payload_json(payload)
        build_id, state = str(build["id"]), build.get("state")
        status = _webhook_status(state, build.get("status_message"), build.get("build_url"))
        # Travis sends no delivery id. The signed payload names the build and its state, and a replay
        # repeats it byte for byte, so its digest identifies the delivery.
        digest = hashlib.sha256(payload.encode()).hexdigest()[:32]
        return WebhookEvent(f"travis:{build_id}:{state or 'unknown'}:{digest}", build_id, status)


def _first_build_id(request: Mapping[str, Any]) -> str | None:
    ids = [b["id"] for b in request.get("builds") or []
           if isinstance(b, dict) and isinstance(b.get("id"), int) and not isinstance(b.get("id"), bool)]
    return str(min(ids)) if ids else None


def _request_settled(request: Mapping[str, Any]) -> bool:
    """A rejected request (bad config, inactive repo) or a finished one never gets a build later."""
    return request.get("result") == "rejected" or request.get("state") == "finished"


def _webhook_status(state: Any, message: Any, url: Any) -> RunStatus | None:
    url = url if isinstance(url, str) else None
    if isinstance(state, str) and state:
        status = map_build(state, url)
    else:  # older payloads: only the human-readable message
        text = message.lower() if isinstance(message, str) else ""
        if text in _PASSED_MESSAGES:
            status = RunStatus(RunState.SUCCEEDED, message, url)
        elif text in _FAILED_MESSAGES:
            status = RunStatus(RunState.FAILED, message, url)
        else:
            return None
    if status.terminal and isinstance(message, str) and message and message.lower() != status.detail:
        status = RunStatus(status.state, f"{status.detail} ({message})", url)
    return status if status.terminal else None


def _payload_field(raw_body: bytes) -> str:
    try:
        form = parse_qs(raw_body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise WebhookRejected("body is not UTF-8 form data", 400) from None
    values = form.get("payload", [])
    if len(values) != 1:
        raise WebhookRejected("body must have exactly one payload field", 400)
    return values[0]


@functools.lru_cache(maxsize=8)
def _public_key(pem: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPublicKey):
        # The operator's config is wrong, not the sender; still nothing may pass unverified.
        raise WebhookRejected("the travis webhook key is not a PEM RSA public key (see GET /config)", 401)
    return key


def _verify(key: rsa.RSAPublicKey, given: str, payload: str) -> None:
    try:
        signature = base64.b64decode(given, validate=True)
        key.verify(signature, payload.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - Travis's scheme
    except (binascii.Error, ValueError, InvalidSignature):
        raise WebhookRejected("Signature does not match the payload", 401) from None


def _payload_json(payload: str) -> dict[str, Any]:
    try:
        build: Any = json.loads(payload)
    except ValueError:
        raise WebhookRejected("payload is not JSON", 400) from None
    build_id = build.get("id") if isinstance(build, dict) else None
    if not isinstance(build_id, int) or isinstance(build_id, bool):
        raise WebhookRejected("payload without a build id", 400)
    return cast("dict[str, Any]", build)
