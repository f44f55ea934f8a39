"""A local Travis CI (API v3): the subset the Travis target uses, over real HTTP on 127.0.0.1.

Env vars (list / create with 409 on a duplicate name+branch / update), ``requests#create`` (202, the
build appears asynchronously, 10 API requests per repository per hour), ``request#find``, ``build#find``,
``GET /config`` with the webhook public key, and form-encoded webhooks signed RSA-SHA1 with the
matching private key, as in docs/ci-providers/travis.md. Builds are real
(``local.build_job``). Values stay in memory; nothing here prints or logs one.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from local import sim_clock
from local.emulators._runs import RunStore
from local.emulators._server import ApiError, EmulatorServer, Reply, Request, utc_now
from local.emulators.base import emulator

#: requests#create's default: API-triggered requests per repository per rolling hour.
REQUEST_LIMIT = 10
_SLUG = r"([^/]+)"  # owner%2Fname (decoded by the router) or the numeric repository id
_PASSED, _FAILED = "passed", "failed"
_MESSAGES = {"passed": "Passed", "failed": "Failed", "errored": "Errored", "canceled": "Canceled"}


@dataclass
class _EnvVar:
    id: str
    name: str
    value: str
    public: bool
    branch: str | None

    def api(self, href: str) -> dict[str, Any]:
        shown: dict[str, Any] = {"@type": "env_var", "@href": href, "@representation": "standard",
                                 "id": self.id, "name": self.name, "public": self.public, "branch": self.branch}
        if self.public:  # private values are never returned
            shown["value"] = self.value
        return shown


@dataclass
class _Repo:
    id: int
    slug: str
    active: bool = True
    env_vars: dict[str, _EnvVar] = field(default_factory=dict)
    #: Simulated-clock times (local/sim_clock.py) of API-triggered requests, for the hourly limit: the state
    #: machine's waits and start slots move the window as they would on Travis.
    request_times: deque[float] = field(default_factory=deque)

    def api(self) -> dict[str, Any]:
        owner, name = self.slug.split("/", 1)
        return {"@type": "repository", "@representation": "minimal", "id": self.id, "name": name,
                "slug": self.slug, "owner_name": owner}


@dataclass
class _Build:
    id: int
    number: str
    repo: _Repo
    request_id: int
    branch: str
    message: str
    state: str = "created"
    started_at: str | None = None
    finished_at: str | None = None
    log: str = ""

    def api(self) -> dict[str, Any]:
        return {"@type": "build", "@href": f"/build/{self.id}", "@representation": "standard", "id": self.id,
                "number": self.number, "state": self.state, "event_type": "api", "previous_state": None,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "repository": self.repo.api(), "branch": {"@type": "branch", "name": self.branch}}


@dataclass
class _TravisRequest:
    id: int
    repo: _Repo
    branch: str
    message: str
    config: dict[str, Any]
    state: str = "created"
    result: str | None = None
    builds: list[_Build] = field(default_factory=list)

    def api(self) -> dict[str, Any]:
        return {"@type": "request", "@href": f"/repo/{self.repo.id}/request/{self.id}",
                "@representation": "standard", "id": self.id, "state": self.state, "result": self.result,
                "message": self.message, "event_type": "api", "branch_name": self.branch,
                "repository": self.repo.api(), "config": self.config,
                "builds": [{"@type": "build", "@representation": "minimal", "id": b.id, "number": b.number,
                            "state": b.state} for b in self.builds]}


@emulator
class TravisEmulator(EmulatorServer):
    """The local Travis CI. ``with TravisEmulator(...) as travis: travis.url`` is the API base URL."""

    provider = "travis"
    #: Travis CI issues no OIDC ID tokens: its targets stay on access keys (docs/oidc.md).
    oidc_profile = None
    server_version = "TravisEmulator/1"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The key pair Travis signs webhooks with; only the public half ever leaves the emulator.
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_pem = self._signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.request_limit = REQUEST_LIMIT
        #: API-triggered requests refused by ``request_limit`` (429 ``request_limit_reached``).
        self.requests_limited = 0
        #: Seconds between a request's 202 and its build appearing (Travis builds asynchronously).
        self.build_delay = 0.0
        self._repos: dict[str, _Repo] = {}
        # A request (what the API call creates) and its build (what the gatekeeper approves) are both runs.
        self._requests_by_id = RunStore[_TravisRequest](self._lock, ids=itertools.count(600_000_001).__next__)
        self._builds = RunStore[_Build](self._lock, ids=itertools.count(900_000_001).__next__)
        self._reject_next: dict[str, int] = {}
        self._repo_ids = itertools.count(31_000_001)
        self.route("GET", r"/config", self._get_config, auth=False)
        self.route("GET", rf"/repo/{_SLUG}", self._get_repo)
        self.route("GET", rf"/repo/{_SLUG}/env_vars", self._list_env_vars)
        self.route("POST", rf"/repo/{_SLUG}/env_vars", self._create_env_var)
        self.route("GET", rf"/repo/{_SLUG}/env_var/([^/]+)", self._get_env_var)
        self.route("PATCH", rf"/repo/{_SLUG}/env_var/([^/]+)", self._update_env_var)
        self.route("DELETE", rf"/repo/{_SLUG}/env_var/([^/]+)", self._delete_env_var)
        self.route("POST", rf"/repo/{_SLUG}/requests", self._create_request)
        self.route("GET", rf"/repo/{_SLUG}/request/(\d+)", self._get_request)
        # requests#find (https://developer.travis-ci.com/resource/requests): newest first, limit/offset.
        self.route("GET", rf"/repo/{_SLUG}/requests", self._list_requests)
        self.route("GET", r"/build/(\d+)", self._get_build)

    # -- setup and test controls --------------------------------------------------------------------

    def add_repository(self, slug: str, *, active: bool = True) -> int:
        with self._lock:
            repo = _Repo(next(self._repo_ids), slug, active)
            self._repos[slug.lower()] = repo
            return repo.id

    def set_active(self, slug: str, active: bool) -> None:
        """An inactive repository refuses requests (406), as after Travis was switched off for it."""
        with self._lock:
            self._known(slug).active = active

    def set_env_var(self, slug: str, name: str, value: str, *, public: bool = False,
                    branch: str | None = None) -> str:
        """Create a variable directly (as a person in the web UI would); its id."""
        with self._lock:
            var = _EnvVar(str(uuid.uuid4()), name, value, public, branch)
            self._known(slug).env_vars[var.id] = var
            return var.id

    def env_vars(self, slug: str) -> list[dict[str, Any]]:
        """Every variable's name, public flag and branch (never a value)."""
        with self._lock:
            return [{"id": v.id, "name": v.name, "public": v.public, "branch": v.branch}
                    for v in self._known(slug).env_vars.values()]

    def reject_next_requests(self, slug: str, n: int = 1) -> None:
        """The next ``n`` requests are rejected (a broken .travis.yml): accepted with 202, but no build."""
        with self._lock:
            key = self._project_key(slug)
            self._reject_next[key] = self._reject_next.get(key, 0) + n

    def requests(self, slug: str) -> list[dict[str, Any]]:
        """Every request of ``slug``, oldest first, as ``request#find`` shows it."""
        with self._lock:
            return [r.api() for r in self._requests_by_id.of(self._project_key(slug))]

    def build_log(self, build_id: int | str) -> str:
        with self._lock:
            return self._builds.get(int(build_id)).log

    def reset_faults(self) -> None:
        super().reset_faults()
        with self._lock:
            self._reject_next.clear()
            self.build_delay = 0.0
            self.request_limit = REQUEST_LIMIT
            self.requests_limited = 0
            for repo in self._repos.values():
                repo.active = True
                repo.request_times.clear()

    # -- the CIEmulator contract (emulators/base.py) -------------------------------------------------

    def add_project(self, name: str) -> None:
        self.add_repository(name)

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        config = {"provider": "travis", "api_url": self.url, "repository": project, "token": token_ref}
        if self.webhook_url:
            config["notify_url"] = self.webhook_url
        return config

    def held_value(self, project: str, name: str) -> str | None:
        with self._lock:
            return self._build_env(self._known(project), "main").get(name)

    def webhook_key(self) -> str:
        return self._public_pem

    def run_build(self, project: str) -> bool:
        with self._lock:
            repo = self._known(project)
            env, mask = self._build_env(repo, "main"), self._private_values(repo)
        return self._run_job(env, mask=mask).passed

    # -- EmulatorServer hooks -----------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        self._known(name)
        return name.lower()

    def _refuse(self, request: Request) -> Reply | None:
        scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
        if not given:
            return Reply(403, _error("login_required", "login required"))
        if scheme.lower() != "token" or not self._token_ok(given):
            return Reply(403, _error("access_denied", "access denied"))
        if request.headers.get("Travis-API-Version") != "3":
            return Reply(400, _error("wrong_params", "this server only speaks API v3: send Travis-API-Version: 3"))
        return None

    def _error_body(self, message: Any) -> Any:
        if isinstance(message, Mapping):
            return {"@type": "error", **message}
        return _error("error", str(message))

    def _not_found(self) -> Reply:
        return Reply(404, _error("not_found", "resource not found (or insufficient access)"))

    # -- route handlers -----------------------------------------------------------------------------

    def _get_config(self, _: Request) -> Reply:
        return Reply(200, {"config": {"host": "travis-ci.com", "shorten_host": "trvs.io",
                                      "notifications": {"webhook": {"public_key": self._public_pem}}}})

    def _get_repo(self, _: Request, slug: str) -> Reply:
        with self._lock:
            repo = self._repo(slug)
            return Reply(200, {**repo.api(), "@representation": "standard", "active": repo.active})

    def _list_env_vars(self, _: Request, slug: str) -> Reply:
        with self._lock:
            repo = self._repo(slug)
            return Reply(200, {"@type": "env_vars", "@href": f"/repo/{repo.id}/env_vars",
                               "@representation": "standard",
                               "env_vars": [v.api(self._href(repo, v)) for v in repo.env_vars.values()]})

    def _get_env_var(self, _: Request, slug: str, var_id: str) -> Reply:
        with self._lock:
            repo = self._repo(slug)
            var = self._env_var(repo, var_id)
            return Reply(200, var.api(self._href(repo, var)))

    def _create_env_var(self, request: Request, slug: str) -> Reply:
        fields = _env_var_fields(request.json_object())
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, {"error_type": "unprocessable_entity", "error_message": "name is missing"})
        with self._lock:
            repo = self._repo(slug)
            branch = fields.get("branch")
            if any(v.name == name and v.branch == branch for v in repo.env_vars.values()):
                raise ApiError(409, {"error_type": "duplicate_resource", "error_message": "resource already exists"})
            var = _EnvVar(str(uuid.uuid4()), name, self._value(fields), fields.get("public") is True, branch)
            repo.env_vars[var.id] = var
            return Reply(201, var.api(self._href(repo, var)))

    def _update_env_var(self, request: Request, slug: str, var_id: str) -> Reply:
        fields = _env_var_fields(request.json_object())
        with self._lock:
            repo = self._repo(slug)
            var = self._env_var(repo, var_id)
            if "name" in fields:
                var.name = str(fields["name"])
            if "value" in fields:
                var.value = self._value(fields)
            if "public" in fields:
                var.public = fields["public"] is True
            if "branch" in fields:
                var.branch = fields["branch"]
            return Reply(200, var.api(self._href(repo, var)))

    def _delete_env_var(self, _: Request, slug: str, var_id: str) -> Reply:
        with self._lock:
            repo = self._repo(slug)
            del repo.env_vars[self._env_var(repo, var_id).id]
            return Reply(204)

    def _create_request(self, request: Request, slug: str) -> Reply:
        body = request.json_object()
        fields = body.get("request", body)
        if not isinstance(fields, dict):
            raise ApiError(400, {"error_type": "wrong_params", "error_message": "request must be an object"})
        config = fields.get("config") or {}
        if not isinstance(config, dict):
            raise ApiError(400, {"error_type": "wrong_params", "error_message": "config must be an object"})
        with self._lock:
            repo = self._repo(slug)
            if not repo.active:
                raise ApiError(406, {"error_type": "repo_inactive",
                                     "error_message": "cannot create requests on an inactive repository"})
            remaining = self._take_request_slot(repo)
            branch = str(fields.get("branch") or "main")
            created = self._requests_by_id.create(
                repo.slug.lower(),
                lambda request_id, _: _TravisRequest(request_id, repo, branch, str(fields.get("message") or ""),
                                                     config))
            rejected = self._take(self._reject_next, repo.slug.lower())
        self._spawn(self._process_request, f"travis-request-{created.id}", created, rejected)
        owner, name = repo.slug.split("/", 1)
        return Reply(202, {
            "@type": "pending", "remaining_requests": remaining, "resource_type": "request",
            "repository": {"@type": "repository", "@representation": "minimal", "id": repo.id, "name": name,
                           "slug": repo.slug},
            "request": {"repository": {"id": repo.id, "owner_name": owner, "name": name}, "user": {"id": 1},
                        "id": created.id, "message": created.message, "branch": branch,
                        "config": json.dumps(config)},
        })

    def _list_requests(self, request: Request, slug: str) -> Reply:
        try:
            limit = min(100, max(1, int(request.query.get("limit") or 25)))
            offset = max(0, int(request.query.get("offset") or 0))
        except ValueError:
            raise ApiError(400, {"error_type": "wrong_params", "error_message": "limit/offset must be numbers"}) \
                from None
        with self._lock:
            repo = self._repo(slug)
            found = [r.api() for r in reversed(self._requests_by_id.of(repo.slug.lower()))]
        return Reply(200, {"@type": "requests", "@representation": "standard", "requests": found[offset:offset + limit],
                           "@pagination": {"limit": limit, "offset": offset, "count": len(found)}})

    def _get_request(self, _: Request, slug: str, request_id: str) -> Reply:
        with self._lock:
            repo = self._repo(slug)
            found = self._requests_by_id.find(int(request_id))
            if found is None or found.repo is not repo:
                raise ApiError(404, {"error_type": "not_found", "error_message": "request not found",
                                     "resource_type": "request"})
            return Reply(200, found.api())

    def _get_build(self, _: Request, build_id: str) -> Reply:
        with self._lock:
            build = self._builds.find(int(build_id))
            if build is None:
                raise ApiError(404, {"error_type": "not_found", "error_message": "build not found",
                                     "resource_type": "build"})
            return Reply(200, build.api())

    # -- requests and builds ------------------------------------------------------------------------

    def _take_request_slot(self, repo: _Repo) -> int:
        now = sim_clock.now()
        while repo.request_times and now - repo.request_times[0] > 3600:
            repo.request_times.popleft()
        if len(repo.request_times) >= self.request_limit:
            self.requests_limited += 1
            # travis-api's RequestLimitReached: no Retry-After, the limit and its window in the body.
            raise ApiError(429, {"error_type": "request_limit_reached",
                                 "error_message": "request limit reached for resource",
                                 "max_requests": self.request_limit, "per_seconds": 3600,
                                 "repository": repo.api()})
        repo.request_times.append(now)
        return self.request_limit - len(repo.request_times)

    def _process_request(self, request: _TravisRequest, rejected: bool) -> None:
        """Travis's gatekeeper: approve (one build) or reject (none) the request, then run the build."""
        if self.build_delay:
            time.sleep(self.build_delay)
        with self._lock:
            if rejected:
                self._requests_by_id.update(request, state="finished", result="rejected")
                self._requests_by_id.settle(request)
                return
            self._requests_by_id.update(request, state="finished", result="approved")
            repo = request.repo
            build = self._builds.create(
                repo.slug.lower(), lambda build_id, number: _Build(build_id, str(number), repo, request.id,
                                                                   request.branch, request.message))
            request.builds.append(build)
            mode = self._take_build_mode(repo.slug.lower())
            # Variables are read when the job starts, as on Travis.
            env, mask = self._build_env(repo, build.branch), self._private_values(repo)
            self._builds.update(build, state="started", started_at=utc_now())
        result = self._build_outcome(mode, env, mask=mask)
        if result is None:
            return
        try:
            self._finish(build, _PASSED if result.passed else ("errored" if result.timed_out else _FAILED),
                         result.log)
        finally:
            self._builds.settle(build)
            self._requests_by_id.settle(request)

    def _finish(self, build: _Build, state: str, output: str) -> None:
        """End the build and record its webhook in one step, so a client that sees the final state
        also finds the delivery; the POST itself happens outside the lock (the receiver calls back)."""
        with self._lock:
            finished_at = utc_now()
            payload = self._webhook_payload(build, state, finished_at)
        body = urlencode({"payload": payload}).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Travis CI Notifications",
            "Travis-Repo-Slug": build.repo.slug,
            "Signature": self._sign(payload),
        }
        with self._lock:
            build.state, build.finished_at, build.log = state, finished_at, output
            # Travis sends no delivery id; the record's own id names it for redeliver().
            record = self._record_delivery(str(uuid.uuid4()), headers, body)
        self._send_delivery(record)

    def _sign(self, payload: str) -> str:
        """travis-tasks: base64 RSA PKCS#1 v1.5 signature over SHA-1 of the payload field's value."""
        signature = self._signing_key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
        return base64.b64encode(signature).decode()

    def _webhook_payload(self, build: _Build, state: str, finished_at: str) -> str:
        """travis-tasks' webhook payload (``payload.rb``), serialised once: the signature covers these bytes."""
        owner, name = build.repo.slug.split("/", 1)
        status = 0 if state == _PASSED else 1
        return json.dumps({
            "id": build.id, "number": build.number, "type": "api", "state": state,
            "status": status, "result": status,
            "status_message": _MESSAGES.get(state, state.title()),
            "result_message": _MESSAGES.get(state, state.title()),
            "started_at": build.started_at, "finished_at": finished_at, "duration": 1,
            "build_url": f"{self.url}/{build.repo.slug}/builds/{build.id}",
            "branch": build.branch, "message": build.message, "commit": "0" * 40,
            "pull_request": False, "pull_request_number": None, "tag": None,
            "repository": {"id": build.repo.id, "name": name, "owner_name": owner, "url": None},
            "matrix": [{"id": build.id * 10 + 1, "number": f"{build.number}.1", "state": state,
                        "result": status}],
        })

    # -- variables ----------------------------------------------------------------------------------

    def _build_env(self, repo: _Repo, branch: str) -> dict[str, str]:
        """What a build on ``branch`` sees: every-branch variables, overridden by that branch's own."""
        env = {v.name: v.value for v in repo.env_vars.values() if v.branch is None}
        env.update({v.name: v.value for v in repo.env_vars.values() if v.branch == branch})
        return env

    def _private_values(self, repo: _Repo) -> list[str]:
        # Travis masks private values in logs; public ones are printed as they are.
        return [v.value for v in repo.env_vars.values() if not v.public]

    def _value(self, fields: Mapping[str, Any]) -> str:
        value = fields.get("value")
        if not isinstance(value, str):
            raise ApiError(422, {"error_type": "unprocessable_entity", "error_message": "value must be a string"})
        self._record_secret(value)
        return value

    # -- lookups ------------------------------------------------------------------------------------

    def _repo(self, slug: str) -> _Repo:
        repo = self._repos.get(slug.lower())
        if repo is None and slug.isdigit():
            repo = next((r for r in self._repos.values() if r.id == int(slug)), None)
        if repo is None:
            raise ApiError(404, {"error_type": "not_found", "resource_type": "repository",
                                 "error_message": "repository not found (or insufficient access)"})
        return repo

    def _known(self, slug: str) -> _Repo:
        """For the Python-side API: a plain KeyError rather than an HTTP answer."""
        repo = self._repos.get(slug.lower())
        if repo is None:
            raise KeyError(f"no repository {slug!r}; add_repository() first")
        return repo

    def _env_var(self, repo: _Repo, var_id: str) -> _EnvVar:
        var = repo.env_vars.get(var_id)
        if var is None:
            raise ApiError(404, {"error_type": "not_found", "resource_type": "env_var",
                                 "error_message": "env_var not found (or insufficient access)"})
        return var

    def _href(self, repo: _Repo, var: _EnvVar) -> str:
        return f"/repo/{repo.id}/env_var/{var.id}"

    @staticmethod
    def _take(counters: dict[str, int], key: str) -> bool:
        if counters.get(key):
            counters[key] -= 1
            return True
        return False


def _env_var_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"env_var.name": ...}`` (the documented form) or ``{"env_var": {"name": ...}}``."""
    nested = body.get("env_var")
    fields = dict(nested) if isinstance(nested, dict) else {}
    fields.update({k.removeprefix("env_var."): v for k, v in body.items() if k.startswith("env_var.")})
    return fields


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"@type": "error", "error_type": error_type, "error_message": message}
