"""What every local CI emulator shares: the HTTP server, routing, auth, faults, real builds and webhooks.

How to build a new emulator on it
---------------------------------
1. Subclass :class:`EmulatorServer`; set ``provider`` (and ``server_version``); decorate the class with
   ``@emulator`` (emulators/base.py) so the world, the demo and tests/test_provider_contract.py find it.
2. In ``__init__``: ``super().__init__(token=..., aws_endpoint_url=..., webhook_url=..., webhook_secret=...,
   region=..., build_timeout=...)`` then one ``self.route(method, path_regex, handler)`` per endpoint. A
   handler is called as ``handler(request, *path_groups)`` (groups URL-decoded), returns a :class:`Reply`
   or raises :class:`ApiError` (``body=`` for an error shape other than ``_error_body(message)``), and runs
   on a server thread: hold ``self._lock`` around shared state.
   ``route(..., auth=False)`` skips the token check (e.g. GitLab's trigger-token endpoint).
3. Override ``_refuse(request)`` for the provider's auth header (compare with ``self._token_ok(given)``,
   which also honours ``revoke_token()``); optionally ``_rate_headers()`` (sent on every reply),
   ``_throttle_headers(status, retry_after)`` (added to injected faults), ``_not_found()`` and
   ``_error_body(message)`` for the provider's error shapes.
4. Keep projects in your own structures and implement ``_project_key(name)`` (KeyError when unknown): the
   shared ``fail_next_builds``/``hang_next_builds`` counters are keyed by it; consume one with
   ``_take_build_mode(key)`` when a build is triggered.
5. A build: keep runs in a ``RunStore`` (local/emulators/_runs.py: ids, project, inputs, created time,
   ``update``/``settle``/``wait``) created with ``self._lock``; ``self._spawn(fn, name)`` a thread that
   reads the variables the build would see *when it starts*, calls ``self._build_outcome(mode, env,
   mask=..., inputs=...)`` (None for a hanging build; else the verification job of the provider's file in
   templates/verify/, run by bash in an environment built from scratch, or an injected failure) and then
   ``self._deliver(delivery_id, headers, body)`` the signed webhook
   (honours ``drop_webhooks`` and records it for ``deliveries()``/``redeliver()``). Override
   ``_redelivery_headers`` if a redelivery must be re-signed (timestamped schemes).
6. Call ``self._record_secret(value)`` for every secret value received (``received_secret_sha256s``), never
   print or log a value, and implement the rest of the ``CIEmulator`` contract: ``add_project``,
   ``target_config``, ``held_value``, ``run_build``, ``webhook_key``. Extend ``reset_faults`` with
   ``super().reset_faults()``.
7. If the CI issues OIDC ID tokens, set ``oidc_profile`` to its ``local.oidc.Profile`` (issuer, JWKS path, the
   claims of a project) and pass ``project=`` to ``_run_job``/``_build_outcome``: ``set_verify_variant``,
   ``mint_id_token`` and the token handover in builds then work (docs/oidc.md). None: the CI has no OIDC.

Webhook delivery faults
-----------------------
Every delivery goes through ``_record_delivery`` + ``_send_delivery`` (or ``_deliver``, both at once), so the
faults below apply to every emulator alike; each is an attribute a test sets and ``reset_faults()`` clears:

- never (``drop_webhooks``): nothing is recorded or sent;
- late (``webhook_delay`` seconds): sent from a timer, after the run already shows its end in the status API;
- twice (``duplicate_webhooks``): sent, then sent again with ``_redelivery_headers`` (same delivery id and
  bytes; re-signed where the signature carries a timestamp);
- out of order (``reorder_webhooks``): each delivery waits for the next one and goes out after it, so a
  provider that sends several per run (Bitbucket's ``INPROGRESS`` then ``SUCCESSFUL`` commit statuses) sends
  the end first, and one that sends one per run sends a run's delivery after the next run's; with no
  successor within ``reorder_window`` seconds it goes out alone, late.

``wait_for_webhooks(timeout)`` waits for late and held deliveries. What the providers document:
GitHub "does not guarantee delivery order" and a redelivery keeps ``X-GitHub-Delivery``
(https://docs.github.com/webhooks/using-webhooks/best-practices-for-using-webhooks); GitLab sends a Pipeline
Hook on every status change and a slow answer "can lead to retries and potentially cause duplicate events",
with ``Idempotency-Key`` unchanged across retries (https://docs.gitlab.com/user/project/integrations/webhooks/,
https://docs.gitlab.com/user/project/integrations/webhook_events/#pipeline-events); CircleCI retries a
delivery not answered 2xx within 5 seconds, so duplicates occur (https://circleci.com/docs/webhooks/);
Bitbucket resends a 5xx-answered request "up to two more times", same ``X-Request-UUID``, growing
``X-Attempt-Number`` (https://support.atlassian.com/bitbucket-cloud/docs/troubleshoot-webhooks/); Travis runs
webhooks "at the end of a build" and documents neither a delivery id nor retries
(https://docs.travis-ci.com/user/notifications/). Each emulator sends every delivery its service sends for
one build of the subscription the rotator's docs set up (docs/ci-providers/): GitHub ``workflow_run``
``requested``, ``in_progress``, ``completed``; GitLab Pipeline Hooks ``pending``, ``running``, then
``success``/``failed``; Bitbucket ``INPROGRESS`` then the final commit status; one ``workflow-completed`` per
CircleCI workflow, one Travis notification at the end (the rotator's ``on_start: never``) and one Azure DevOps
``build.complete``. Out of order, a run's end overtakes its start (one stream per run; GitHub's ``requested``
and GitLab's ``pending`` are streams of their own, so they arrive last).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qs, unquote

import urllib3

from local import build_job, oidc
from local.bin import verify_templates
from local.emulators import specs

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
_WEBHOOK_POOL = urllib3.PoolManager()
#: CI systems mask values this long or longer in job logs.
_MIN_MASKED_LENGTH = 4

BuildMode = Literal["build", "fail", "hang"]


class OidcUnsupported(Exception):
    """The CI issues no OIDC ID tokens (Travis CI): a project of it cannot federate."""


class ApiError(Exception):
    """Raised by a route handler: the reply is ``status`` with the provider's error body for ``message``."""

    def __init__(self, status: int, message: Any, headers: Mapping[str, str] | None = None, *,
                 body: Any = None) -> None:
        super().__init__(str(message))
        self.status = status
        #: A string, or a structured body part (GitLab validation errors are ``{"key": ["..."]}``).
        self.message = message
        self.headers = dict(headers or {})
        #: The whole reply body when the provider's shape is not ``_error_body(message)``.
        self.body = body


@dataclass
class Reply:
    status: int
    #: JSON-serialisable; None (or status 204) sends no body; bytes are sent as they are (a log file), with
    #: the Content-Type the handler puts in ``headers``.
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    #: Still URL-encoded: handlers receive decoded path groups.
    path: str
    #: Last value of each query parameter, decoded.
    query: dict[str, str]
    headers: Mapping[str, str]
    raw: bytes

    def json_object(self) -> dict[str, Any]:
        try:
            body = json.loads(self.raw or b"{}")
        except ValueError:
            raise ApiError(400, "Problems parsing JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Body should be a JSON object")
        return body


Handler = Callable[..., Reply]


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern[str]
    handler: Handler
    #: False for endpoints that authenticate by other means (a trigger token in the body).
    auth: bool = True


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    statuses: deque[int]
    retry_after: float | None


@dataclass(frozen=True)
class BuildResult:
    passed: bool
    timed_out: bool
    #: stdout + stderr with the masked values replaced by ``***``.
    log: str
    #: What the job stored (``store_artifacts``): destination path -> text, masked like the log.
    artifacts: Mapping[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    """The emulator's HTTP server. A client that hangs up before its answer is written (its own read timeout
    on a loaded machine) is the client's business, as on the real services: no traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s hung up before its answer", client_address)
            return
        super().handle_error(request, client_address)


class EmulatorServer:
    """Base of the emulators: a ThreadingHTTPServer on 127.0.0.1 (port 0) that dispatches to routes.

    Shared public API (the ``CIEmulator`` contract's generic half): ``start``/``stop``/``url`` and the
    context manager, ``inject``/``reset_faults``/``revoke_token``, ``fail_next_builds``/
    ``hang_next_builds``, ``drop_webhooks``, ``deliveries``/``redeliver`` and ``received_secret_sha256s``.
    """

    provider: ClassVar[str]
    server_version: ClassVar[str] = "CIEmulator/1"
    #: The provider's published API description (a name in local/emulators/specs/) that every request must
    #: satisfy before a handler sees it; None where the provider publishes none (its handlers hold the rules).
    spec: ClassVar[str | None] = None
    #: What the provider answers a request whose parameters or body break its description.
    spec_invalid_status: ClassVar[int] = 400

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
        self._token = token
        self.aws_endpoint_url = aws_endpoint_url
        self.webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self.region = region
        self.build_timeout = build_timeout
        #: Lose every webhook (builds still complete): only the poller can confirm.
        self.drop_webhooks = False
        #: Seconds every delivery waits before it is sent (a backed-up queue): the poller may confirm first.
        self.webhook_delay = 0.0
        #: Send every delivery twice, same id and bytes (a retry after a lost answer; at-least-once delivery).
        self.duplicate_webhooks = False
        #: Hold each delivery until the next one has been sent (the run's "completed" before its "in progress",
        #: or one run's delivery after the next run's); a held delivery with no successor goes out after
        #: ``reorder_window`` seconds.
        self.reorder_webhooks = False
        self.reorder_window = 5.0
        #: Reordering stream -> the delivery held until the stream's next one.
        self._held_deliveries: dict[str, dict[str, Any]] = {}
        #: id(held delivery) -> cancels its fallback release.
        self._hold_timers: dict[int, Callable[[], None]] = {}
        #: Deliveries scheduled (late or held) and not yet sent, for ``wait_for_webhooks``.
        self._pending_posts = 0
        self._posted = threading.Condition(threading.Lock())
        self._post_sequence = 0
        self._revoked = False
        self._lock = threading.RLock()
        self._routes: list[Route] = []
        self._faults: list[_Fault] = []
        self._after_faults: list[_Fault] = []
        self._fail_next: dict[str, int] = {}
        self._hang_next: dict[str, int] = {}
        self._hashes: list[str] = []
        self._deliveries: list[dict[str, Any]] = []
        #: id(delivery record) -> its reordering stream (``_record_delivery``).
        self._streams: dict[int, str] = {}
        self._requests = 0
        self._spec_refusals: list[str] = []
        #: project key -> the verification file its builds run (set_verify_variant).
        self._variants: dict[str, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, path_regex: str, handler: Handler, *, auth: bool = True) -> None:
        """Serve ``method`` on paths that fully match ``path_regex``; the first matching route wins."""
        self._routes.append(Route(method.upper(), re.compile(path_regex), handler, auth))

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _HttpHandler)
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        name=f"{self.provider}-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- auth and faults ----------------------------------------------------------------------------

    def revoke_token(self) -> None:
        """Every later authenticated API call answers 401, as after the token was revoked."""
        self._revoked = True

    def inject(
        self,
        method: str,
        path_regex: str,
        statuses: Sequence[int] = (429, 503),
        retry_after: float | None = None,
    ) -> None:
        """The next requests matching ``method`` ("*" for any) and ``path_regex`` get ``statuses``, in order."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), deque(statuses), retry_after))

    def inject_after_effect(self, method: str, path_regex: str, statuses: Sequence[int] = (502,)) -> None:
        """The next successful requests matching ``method`` and ``path_regex`` take effect (the build is
        created) and then answer ``statuses`` instead, as when a gateway times out in front of the service."""
        with self._lock:
            self._after_faults.append(_Fault(method.upper(), re.compile(path_regex), deque(statuses), None))

    def reset_faults(self) -> None:
        """Normal service again: no injected statuses, failing or hanging builds, lost, late, repeated or
        reordered webhooks, or revocation (a delivery already held or scheduled is still sent)."""
        with self._lock:
            self._faults.clear()
            self._after_faults.clear()
            self._fail_next.clear()
            self._hang_next.clear()
        self.drop_webhooks = False
        self.webhook_delay = 0.0
        self.duplicate_webhooks = False
        self.reorder_webhooks = False
        self.reorder_window = 5.0
        self._revoked = False

    def fail_next_builds(self, project: str, n: int = 1) -> None:
        """The next ``n`` triggered builds fail whatever the key, like a broken commit."""
        with self._lock:
            key = self._project_key(project)
            self._fail_next[key] = self._fail_next.get(key, 0) + n

    def hang_next_builds(self, project: str, n: int = 1) -> None:
        """The next ``n`` triggered builds never finish and send no webhook."""
        with self._lock:
            key = self._project_key(project)
            self._hang_next[key] = self._hang_next.get(key, 0) + n

    def _take_build_mode(self, key: str) -> BuildMode:
        """Consume one injected outcome for a build being triggered; a hang wins over a failure."""
        with self._lock:
            if self._hang_next.get(key):
                self._hang_next[key] -= 1
                return "hang"
            if self._fail_next.get(key):
                self._fail_next[key] -= 1
                return "fail"
            return "build"

    def _build_outcome(self, mode: BuildMode, secret_env: Mapping[str, str], *, mask: Iterable[str] | None = None,
                       inputs: Mapping[str, str] | None = None, project: str | None = None) -> BuildResult | None:
        """What a build in ``mode`` ends with: None for a hang (it never ends), a failure without running the
        job for an injected failure (a broken commit fails whatever the key), else the job's real result."""
        if mode == "hang":
            return None
        if mode == "fail":
            return BuildResult(False, False, "verify: job exited 1 (injected failure)\n")
        return self._run_job(secret_env, mask=mask, inputs=inputs, project=project)

    def _token_ok(self, given: str) -> bool:
        return not self._revoked and bool(given) and hmac.compare_digest(given.encode(), self._token.encode())

    # -- hooks for subclasses -----------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        """The key of project ``name`` for the build counters; KeyError if there is no such project."""
        raise NotImplementedError

    def _refuse(self, request: Request) -> Reply | None:
        """The reply to an unauthenticated or otherwise unacceptable request; None lets it through."""
        raise NotImplementedError

    def _rate_headers(self) -> dict[str, str]:
        """Headers on every reply (rate-limit counters); ``self._requests`` counts requests so far."""
        return {}

    def _throttle_headers(self, status: int, retry_after: float | None) -> dict[str, str]:
        """Extra headers on an injected fault, after the common ``Retry-After``."""
        return {}

    def _error_body(self, message: Any) -> Any:
        return {"message": message}

    def _not_found(self) -> Reply:
        return Reply(404, self._error_body("Not Found"))

    def _redelivery_headers(self, delivery: Mapping[str, Any]) -> dict[str, str]:
        """Headers of a redelivery: by default exactly the original's (same id, same signature)."""
        return dict(delivery["headers"])

    # -- request handling ---------------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        path, _, query = target.partition("?")
        request = Request(method, path, {k: v[-1] for k, v in parse_qs(query).items()}, headers, raw)
        with self._lock:
            self._requests += 1
        route, match = self._match(request)
        reply = self._fault(method, path)
        if reply is None and (route is None or route.auth):
            # Unknown paths need a token too, as on the real services: a 404 must not reveal them.
            reply = self._refuse(request)
        if reply is None:
            reply = self._check_description(request)
        if reply is None:
            reply = self._dispatch(request, route, match)
            if 200 <= reply.status < 300:
                reply = self._after_effect(method, path) or reply
        return Reply(reply.status, reply.body, {**self._rate_headers(), **reply.headers})

    def _check_description(self, request: Request) -> Reply | None:
        """The provider's answer to a request its published description refuses; None lets it through."""
        if self.spec is None:
            return None
        refusal = specs.description(self.spec).check(request.method, request.path, request.query,
                                                     request.headers, request.raw)
        if refusal is None:
            return None
        # Paths carry names, never values, and the message names fields and rules only.
        note = f"{request.method} {request.path}: {refusal.message}"
        with self._lock:
            self._spec_refusals.append(note)
        log.warning("%s emulator refused a request its API description does not allow: %s", self.provider, note)
        if refusal.kind == "not_found":
            return self._not_found()
        return Reply(self.spec_invalid_status, self._error_body(f"Invalid request: {refusal.message}"))

    def spec_refusals(self) -> list[str]:
        """Every request refused for breaking the provider's API description (method, path and why)."""
        with self._lock:
            return list(self._spec_refusals)

    def _after_effect(self, method: str, path: str) -> Reply | None:
        with self._lock:
            for fault in self._after_faults:
                if fault.statuses and fault.method in ("*", method) and fault.path.search(path):
                    status = fault.statuses.popleft()
                    return Reply(status, self._error_body(f"injected HTTP {status} after the request took effect"))
        return None

    def _match(self, request: Request) -> tuple[Route | None, re.Match[str] | None]:
        for route in self._routes:
            match = route.path.fullmatch(request.path)
            if match and route.method == request.method:
                return route, match
        return None, None

    def _dispatch(self, request: Request, route: Route | None, match: re.Match[str] | None) -> Reply:
        if route is None or match is None:
            return self._not_found()
        try:
            return route.handler(request, *(unquote(g) for g in match.groups()))
        except ApiError as exc:
            body = exc.body if exc.body is not None else self._error_body(exc.message)
            return Reply(exc.status, body, exc.headers)

    def _fault(self, method: str, path: str) -> Reply | None:
        with self._lock:
            for fault in self._faults:
                if fault.statuses and fault.method in ("*", method) and fault.path.search(path):
                    status = fault.statuses.popleft()
                    break
            else:
                return None
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        headers.update(self._throttle_headers(status, fault.retry_after))
        return Reply(status, self._error_body(f"injected HTTP {status}"), headers)

    # -- secrets ------------------------------------------------------------------------------------

    def _record_secret(self, value: str) -> None:
        """Keep a digest of every value received, so tests can check what crossed the wire; never the value."""
        with self._lock:
            self._hashes.append(hashlib.sha256(value.encode()).hexdigest())

    def received_secret_sha256s(self) -> list[str]:
        with self._lock:
            return list(self._hashes)

    # -- builds -------------------------------------------------------------------------------------

    #: Run the build job in a thread instead of a subprocess (no interpreter start-up per build).
    in_process_builds = False
    #: Where the provider's verification pipeline file is read from (a test may point at a modified copy).
    verify_template_dir: Path = verify_templates.TEMPLATE_DIR

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    def _run_job(self, secret_env: Mapping[str, str], mask: Iterable[str] | None = None,
                 inputs: Mapping[str, str] | None = None, project: str | None = None) -> BuildResult:
        """Run the verification job of the provider's shipped template (templates/verify/) in an environment
        built from scratch; ``secret_env``: the CI variables the job would see; ``inputs``: the trigger's
        inputs/parameters (the nonce); ``mask``: values hidden in the log (default: every value in
        ``secret_env``); ``project``: whose build it is (its verify variant and ID tokens; None: keys, none)."""
        variant = self.verify_variant(project) if project is not None else "keys"
        grant = oidc.grant(self.oidc_profile, self, project) if project and self.oidc_profile else None
        base_env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            # Nothing but the pushed variables may authenticate the build: no files, no instance metadata.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.in_process_builds and variant == "keys":
            # The template's check without a shell and a Python start-up per build (fleet benchmarks).
            passed, output = build_job.verify({**base_env, **secret_env})
            return BuildResult(passed, False, _masked(output, secret_env.values() if mask is None else mask))
        # A run without a trigger (run_build) still carries a nonce, as every API-started verification does.
        stored: dict[str, str] = {}
        passed, timed_out, output = build_job.run_template(
            self.provider, secret_env, base_env, inputs or {"nonce": "local-build"}, self.build_timeout,
            self.verify_template_dir, variant=variant, grant=grant, artifacts=stored)
        hidden = list(secret_env.values() if mask is None else mask)
        return BuildResult(passed, timed_out, _masked(output, hidden),
                           {path: _masked(text, hidden) for path, text in stored.items()})

    # -- OIDC: the CI as an identity provider (local/oidc.py, docs/oidc.md) ---------------------------------

    #: How this CI issues OIDC ID tokens; None: it issues none (Travis CI), and the methods below refuse.
    oidc_profile: ClassVar[oidc.Profile | None] = None

    def _oidc_subject(self, project: str) -> oidc.Subject:
        if self.oidc_profile is None:
            raise OidcUnsupported(f"{self.provider} issues no OIDC ID tokens to its builds")
        return self.oidc_profile.subject(self, project)

    def oidc_issuer(self, project: str) -> str:
        """The issuer URL (https, the provider's real one) the ID tokens of ``project``'s builds carry."""
        return self._oidc_subject(project).issuer

    def oidc_settings(self, project: str) -> dict[str, str]:
        """The ``oidc:`` block a target on ``project`` needs for chalicelib.federation (ids the provider's
        tokens name projects by); empty where the target's own settings suffice."""
        return dict(self._oidc_subject(project).settings)

    def mint_id_token(self, project: str, audience: str | None = None, **claim_overrides: Any) -> str:
        """An ID token as ``project``'s build would get it (for tests: ``repository=...`` and ``sub=...``
        make one of another repository); ``audience`` None: the provider's default."""
        assert self.oidc_profile is not None  # _oidc_subject refused otherwise
        subject = self._oidc_subject(project)
        return oidc.Grant(self.oidc_profile, subject).mint(audience, **claim_overrides)

    def set_verify_variant(self, project: str, variant: str) -> None:
        """Which shipped verification file ``project``'s builds run: ``keys`` (default) or ``oidc``."""
        if variant not in verify_templates.VARIANTS:
            raise ValueError(f"variant must be one of {verify_templates.VARIANTS}, not {variant!r}")
        if variant == "oidc":
            self._oidc_subject(project)  # refuses a CI without OIDC
        with self._lock:
            self._variants[self._project_key(project)] = variant

    def verify_variant(self, project: str) -> str:
        with self._lock:
            return self._variants.get(self._project_key(project), "keys")

    # -- webhooks -----------------------------------------------------------------------------------

    def _deliver(self, delivery_id: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        """Record and send one webhook (``_record_delivery`` then ``_send_delivery``)."""
        record = self._record_delivery(delivery_id, headers, body)
        self._send_delivery(record)
        return record

    def _record_delivery(self, delivery_id: str, headers: Mapping[str, str], body: bytes, *,
                         stream: str = "") -> dict[str, Any] | None:
        """Record one webhook for ``deliveries()``; None (nothing recorded) without a URL or when webhooks are
        dropped. An emulator that must show the delivery together with a state change calls this with its lock
        held and ``_send_delivery`` after releasing it (the receiver calls back into this server).
        ``stream``: deliveries that ``reorder_webhooks`` swaps among themselves (one run's, for a provider
        that sends several per run; by default all of them)."""
        if not self.webhook_url or self.drop_webhooks:
            return None
        record: dict[str, Any] = {"id": delivery_id, "headers": dict(headers), "body": body, "status": None,
                                  "statuses": [], "sent": []}
        with self._lock:
            self._deliveries.append(record)
            self._streams[id(record)] = stream
        return record

    def _send_delivery(self, record: dict[str, Any] | None) -> None:
        """POST a recorded delivery, as the delivery faults say: held for the next one, late, or twice."""
        if record is None:
            return
        with self._lock:
            stream = self._streams.get(id(record), "")
            held = self._held_deliveries.pop(stream, None)
            if held is not None:
                batch = [record, held]
                # Its successor sends it now: the fallback release must not keep wait_for_webhooks waiting.
                self._hold_timers.pop(id(held))()
            elif self.reorder_webhooks:
                self._held_deliveries[stream] = record
                self._hold_timers[id(record)] = self._schedule(self.reorder_window, self._release_held, record)
                return
            else:
                batch = [record]
        with self._posted:
            self._pending_posts += 1
        try:
            for item in batch:
                if self.webhook_delay > 0:
                    self._schedule(self.webhook_delay, self._post_delivery, item)
                else:
                    self._post_delivery(item)
        finally:
            with self._posted:
                self._pending_posts -= 1
                self._posted.notify_all()

    def _schedule(self, delay: float, action: Callable[[dict[str, Any]], None],
                  record: dict[str, Any]) -> Callable[[], None]:
        """Run ``action(record)`` after ``delay`` seconds on a timer; returns a cancel function. Either the
        timer or the cancel claims the pending count, whichever comes first."""
        claimed = threading.Event()
        with self._posted:
            self._pending_posts += 1

        def claim() -> bool:
            with self._posted:
                if claimed.is_set():
                    return False
                claimed.set()
                return True

        def finish() -> None:
            with self._posted:
                self._pending_posts -= 1
                self._posted.notify_all()

        def run() -> None:
            if not claim():
                return
            try:
                action(record)
            finally:
                finish()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        timer.start()

        def cancel() -> None:
            if claim():
                timer.cancel()
                finish()

        return cancel

    def _release_held(self, record: dict[str, Any]) -> None:
        """No later delivery came within ``reorder_window``: the held one goes out on its own, late."""
        with self._lock:
            stream = self._streams.get(id(record), "")
            if self._held_deliveries.get(stream) is not record:
                return  # already sent after its successor
            del self._held_deliveries[stream]
            self._hold_timers.pop(id(record), None)
        self._post_delivery(record)

    def _post_delivery(self, record: dict[str, Any]) -> None:
        self._post_attempt(record, record["headers"])
        if self.duplicate_webhooks:
            self._post_attempt(record, self._redelivery_headers(record))

    def _post_attempt(self, record: dict[str, Any], headers: Mapping[str, str]) -> int | None:
        with self._lock:
            self._post_sequence += 1
            record["sent"].append(self._post_sequence)
        status = self._post_webhook(headers, record["body"])
        with self._lock:
            record["statuses"].append(status)
            if record["status"] is None:
                record["status"] = status
        return status

    def wait_for_webhooks(self, timeout: float) -> bool:
        """Wait until no delivery is held or scheduled (late); False if some still are after ``timeout``."""
        with self._posted:
            return self._posted.wait_for(lambda: self._pending_posts == 0, timeout)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook recorded: ``id``, ``headers``, ``body`` (the exact bytes), the receiver's ``status``
        (first answer; None until sent), ``statuses`` (every POST's answer, redeliveries included) and
        ``sent`` (the order of every POST among all this emulator's POSTs, ascending)."""
        with self._lock:
            return [dict(d, headers=dict(d["headers"]), statuses=list(d["statuses"]), sent=list(d["sent"]))
                    for d in self._deliveries]

    def redeliver(self, delivery_id: str) -> int | None:
        """Send a delivery again with the same bytes and delivery id (a provider's "Redeliver"); the status."""
        with self._lock:
            original = next(d for d in self._deliveries if d["id"] == delivery_id)
        return self._post_attempt(original, self._redelivery_headers(original))

    def _post_webhook(self, headers: Mapping[str, str], body: bytes) -> int | None:
        if not self.webhook_url:
            return None
        try:
            # urllib3 keeps header names as given; urllib.request would rewrite them (X-github-event).
            response = _WEBHOOK_POOL.request("POST", self.webhook_url, body=body, headers=dict(headers),
                                             timeout=10.0, retries=False, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            log.warning("webhook delivery to %s failed: %s", self.webhook_url, type(exc).__name__)
            return None
        return response.status


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def version_string(self) -> str:
        return self._emulator().server_version

    def _emulator(self) -> EmulatorServer:
        return self.server.emulator  # type: ignore[attr-defined,no-any-return]

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self._emulator()._handle(self.command, self.path, self.headers, raw)
        raw_body = isinstance(reply.body, bytes)
        if reply.body is None or reply.status == 204:
            data = b""
        else:
            data = reply.body if raw_body else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if data and not raw_body:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries paths and variable names only, never a value; keep it out of stderr.
        log.debug("%s " + format, self.address_string(), *args)


def utc_now() -> str:
    """ISO-8601 UTC to the second, the timestamp format the CI APIs use."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _masked(output: str, values: Iterable[str]) -> str:
    for value in values:
        if len(value) >= _MIN_MASKED_LENGTH:
            output = output.replace(value, "***")
    return output
