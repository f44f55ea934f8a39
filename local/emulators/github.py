"""A local GitHub Actions server: the REST subset the GitHub target uses, over real HTTP on 127.0.0.1.

Sealed-box secrets (repository, environment, organization), workflow_dispatch, workflow runs and signed
``workflow_run`` webhooks, as in docs/ci-providers/github.md. A dispatched run is a real
build: a subprocess (``local.build_job``) that calls AWS with the secrets the run would see.
Secret values stay in memory; nothing here prints or logs one.

Rate limits, switched on per test with ``limit_rates()``, answer as GitHub documents
(https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api): the primary limit with
403, ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (epoch seconds) until the window ends; the
secondary limit on content-creating requests (POST/PATCH/PUT/DELETE) with 403 and "You have exceeded a
secondary rate limit", with a ``retry-after`` only if configured (GitHub may send none: clients must then
wait at least a minute) and ``x-ratelimit-remaining`` not 0.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from local import oidc, sim_clock
from local.emulators._runs import RunStore
from local.emulators._server import ApiError, BuildMode, BuildResult, EmulatorServer, Reply, Request, utc_now
from local.emulators.base import emulator
from local.emulators.github_apps import GitHubApps

API_VERSIONS = ("2022-11-28", "2026-03-10")
_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$")
_SECRET_NAME = re.compile(r"^(?!GITHUB_)[A-Z_][A-Z0-9_]*$")
_RATE_LIMIT = 5000
_CONTENT_CREATING = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"


@dataclass
class _Limits:
    #: Requests per window (primary limit); None: unlimited.
    primary: int | None = None
    window_seconds: float = 3600.0
    #: Content-creating requests per minute (secondary limit); None: unlimited.
    secondary_per_minute: int | None = None
    #: The retry-after a secondary-limit answer carries; None sends none.
    secondary_retry_after: float | None = None
    used: int = 0
    reset_at: float = 0.0
    recent_writes: list[float] = field(default_factory=list)
    #: Content-creating requests per hour (secondary limit, 500 on GitHub); None: unlimited.
    secondary_per_hour: int | None = None
    #: Secondary-limit points per minute (900 on GitHub: GET/HEAD/OPTIONS 1, others 5); None: unlimited.
    points_per_minute: int | None = None
    recent_points: list[tuple[float, int]] = field(default_factory=list)
_MAX_INPUTS = 25
_now = utc_now


def _sim_time() -> float:
    """Epoch seconds on the simulated clock (local/sim_clock.py): wall time plus every second a Wait state
    or Retry interval stood for without being slept, so a rate window passes exactly when the state
    machine's waits say it has (an hour-long window is benched in seconds)."""
    return time.time() + sim_clock.skipped()


@dataclass
class _SecretStore:
    """One place secrets live (repository, environment or organization), with its own key pair."""

    key_id: str = field(default_factory=lambda: str(secrets.randbelow(10**18)).zfill(18))
    private_key: PrivateKey = field(default_factory=PrivateKey.generate)
    values: dict[str, str] = field(default_factory=dict)

    def public_key(self) -> dict[str, str]:
        return {"key_id": self.key_id, "key": base64.b64encode(bytes(self.private_key.public_key)).decode()}


@dataclass
class _Repo:
    id: int
    full_name: str
    private: bool
    #: workflow file name -> the environment its job runs in (None: no environment).
    workflows: dict[str, str | None]
    store: _SecretStore = field(default_factory=_SecretStore)
    environments: dict[str, _SecretStore] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]

    def api(self) -> dict[str, Any]:
        owner, name = self.full_name.split("/")
        return {"id": self.id, "name": name, "full_name": self.full_name, "private": self.private,
                "visibility": "private" if self.private else "public", "owner": {"login": owner},
                "default_branch": "main"}


@dataclass
class _Org:
    name: str
    store: _SecretStore = field(default_factory=_SecretStore)
    #: secret name -> (visibility, selected repository ids)
    access: dict[str, tuple[str, frozenset[int]]] = field(default_factory=dict)

    def allows(self, secret: str, repo: _Repo) -> bool:
        visibility, selected = self.access[secret]
        if visibility == "all":
            return True
        if visibility == "private":
            return repo.private
        return repo.id in selected


@dataclass
class _Run:
    id: int
    repo: _Repo
    workflow: str
    ref: str
    nonce: str | None
    status: str = "queued"
    conclusion: str | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    run_started_at: str | None = None
    log: str = ""
    #: Check-run annotations the job's ``::notice`` workflow commands created (title, message).
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def api(self, base_url: str) -> dict[str, Any]:
        name = self.repo.full_name
        return {
            "id": self.id, "name": self.workflow, "run_attempt": 1, "run_number": self.id % 100000,
            "display_title": f"verify-{self.nonce}" if self.nonce else self.workflow,
            "status": self.status, "conclusion": self.conclusion, "event": "workflow_dispatch",
            "head_branch": self.ref, "head_sha": hashlib.sha1(self.ref.encode(), usedforsecurity=False).hexdigest(),
            "path": f".github/workflows/{self.workflow}", "created_at": self.created_at,
            "updated_at": self.updated_at, "run_started_at": self.run_started_at,
            "url": f"{base_url}/repos/{name}/actions/runs/{self.id}",
            "html_url": f"{base_url}/{name}/actions/runs/{self.id}",
            "jobs_url": f"{base_url}/repos/{name}/actions/runs/{self.id}/jobs",
            "repository": {"id": self.repo.id, "full_name": name},
        }


@emulator
class GitHubEmulator(EmulatorServer):
    """The local GitHub. ``with GitHubEmulator(...) as gh: gh.url`` is the API base URL."""

    provider = "github"
    oidc_profile = oidc.GITHUB
    server_version = "GitHubEmulator/1"
    spec = "github"
    # GitHub answers a body or parameter its schema refuses with 422 "Invalid request".
    spec_invalid_status = 422

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
        #: Answer 422 when a dispatch carries return_run_details, like GHES before the feature.
        self.legacy_dispatch = False
        self._repos: dict[str, _Repo] = {}
        self._orgs: dict[str, _Org] = {}
        self._runs = RunStore[_Run](self._lock, ids=itertools.count(22_000_000_001).__next__)
        self._ids = itertools.count(1001)
        self._reset_at = int(time.time()) + 3600
        self._limits = _Limits()
        #: Requests refused by each rate limit since ``limit_rates`` ("primary", "secondary", "points").
        self.rate_limited: Counter[str] = Counter()
        #: GitHub Apps: ``apps.add_app()`` → private PEM, ``apps.install(...)``, App JWTs and installation tokens.
        self.apps = GitHubApps(self)
        self.apps.register_routes()
        owner_repo = r"/repos/([^/]+)/([^/]+)"
        self.route("GET", owner_repo, self._get_repo)
        self.route("GET", rf"{owner_repo}/actions/secrets/public-key", self._get_repo_key)
        self.route("PUT", rf"{owner_repo}/actions/secrets/([^/]+)", self._put_repo_secret)
        self.route("DELETE", rf"{owner_repo}/actions/secrets/([^/]+)", self._delete_repo_secret)
        self.route("GET", rf"{owner_repo}/environments/([^/]+)/secrets/public-key", self._get_env_key)
        self.route("PUT", rf"{owner_repo}/environments/([^/]+)/secrets/([^/]+)", self._put_env_secret)
        self.route("DELETE", rf"{owner_repo}/environments/([^/]+)/secrets/([^/]+)", self._delete_env_secret)
        self.route("GET", r"/orgs/([^/]+)/actions/secrets/public-key", self._get_org_key)
        self.route("PUT", r"/orgs/([^/]+)/actions/secrets/([^/]+)", self._put_org_secret)
        self.route("DELETE", r"/orgs/([^/]+)/actions/secrets/([^/]+)", self._delete_org_secret)
        self.route("POST", rf"{owner_repo}/actions/workflows/([^/]+)/dispatches", self._dispatch_workflow)
        self.route("GET", rf"{owner_repo}/actions/workflows/([^/]+)/runs", self._list_runs)
        self.route("GET", rf"{owner_repo}/actions/runs/(\d+)", self._get_run)
        self.route("GET", rf"{owner_repo}/actions/runs/(\d+)/jobs", self._list_jobs)
        self.route("GET", rf"{owner_repo}/check-runs/(\d+)/annotations", self._list_annotations)

    # -- setup --------------------------------------------------------------------------------------

    def add_repository(
        self,
        full_name: str,
        environments: Iterable[str] = (),
        workflows: Iterable[str] | Mapping[str, str | None] = ("rotate-verify.yml",),
        *,
        private: bool = True,
    ) -> int:
        """Create a repository; ``workflows`` may map a file name to the environment its job uses."""
        if not isinstance(workflows, Mapping):
            workflows = dict.fromkeys(workflows)
        with self._lock:
            repo = _Repo(next(self._ids), full_name, private, dict(workflows))
            repo.environments = {env: _SecretStore() for env in environments}
            for env in repo.workflows.values():
                if env is not None:
                    repo.environments.setdefault(env, _SecretStore())
            self._repos[full_name.lower()] = repo
            return repo.id

    def add_organization(self, name: str) -> None:
        with self._lock:
            self._orgs[name.lower()] = _Org(name)

    def reset_faults(self) -> None:
        """Normal service again: no injected statuses, failing or hanging builds, lost webhooks, revocation."""
        super().reset_faults()
        self.legacy_dispatch = False
        with self._lock:
            self._limits = _Limits()

    def limit_rates(self, *, primary: int | None = None, window_seconds: float = 3600.0,
                    secondary_per_minute: int | None = None, secondary_retry_after: float | None = None,
                    secondary_per_hour: int | None = None, points_per_minute: int | None = None) -> None:
        """Enforce GitHub's primary limit (``primary`` requests per ``window_seconds``) and/or its secondary
        limits on content-creating requests (``secondary_per_minute``, ``secondary_per_hour``) and points
        (``points_per_minute``), counted from now on the simulated clock (``_sim_time``)."""
        with self._lock:
            self._limits = _Limits(primary, window_seconds, secondary_per_minute, secondary_retry_after,
                                   reset_at=_sim_time() + window_seconds, secondary_per_hour=secondary_per_hour,
                                   points_per_minute=points_per_minute)
            self.rate_limited.clear()

    def limit_rates_as_documented(self) -> None:
        """GitHub.com's limits for one token, as its REST documentation gives them (``_DOCS``)."""
        self.limit_rates(primary=_RATE_LIMIT, secondary_per_minute=80, secondary_per_hour=500,
                         points_per_minute=900)

    # -- the CIEmulator contract (emulators/base.py) -------------------------------------------------

    def add_project(self, name: str) -> None:
        self.add_repository(name)

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        return {"provider": "github", "api_url": self.url, "repository": project, "token": token_ref}

    def held_value(self, project: str, name: str) -> str | None:
        return self.secret_value(project, name)

    def webhook_key(self) -> str:
        return self._webhook_secret

    def secret_value(self, repo: str, name: str, environment: str | None = None) -> str | None:
        """The value a run in ``repo`` (and ``environment``) would see for ``name``."""
        with self._lock:
            return self._effective_secrets(self._known(repo), environment).get(name.upper())

    def runs(self, repo: str) -> list[dict[str, Any]]:
        """Every run of ``repo``, oldest first, as the API shows it plus the build's masked ``log``."""
        with self._lock:
            return [{**run.api(self.url), "log": run.log} for run in self._runs.of(self._project_key(repo))]

    def wait_for_run(self, run_id: int | str, timeout: float) -> dict[str, Any]:
        """Wait until the run completed and its webhook (if any) was sent; its API view."""
        run = self._runs.wait(int(run_id), timeout)
        with self._lock:
            return {**run.api(self.url), "log": run.log}

    def run_build(self, repo: str, environment: str | None = None) -> bool:
        """Run the build now with the current effective secrets; no run record, no webhook."""
        with self._lock:
            env = self._effective_secrets(self._known(repo), environment)
        return self._run_job(env, project=repo).passed

    # -- request handling ---------------------------------------------------------------------------

    def _project_key(self, name: str) -> str:
        return self._known(name).full_name.lower()

    def _throttle_headers(self, status: int, retry_after: float | None) -> dict[str, str]:
        if status != 403:
            return {}
        # GitHub's secondary rate limit: a 403 that only the rate-limit headers tell apart from "forbidden".
        return {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time() + (retry_after or 1)))}

    def _refuse(self, request: Request) -> Reply | None:
        headers = request.headers
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        if not given:
            return Reply(401, {"message": "Requires authentication"})
        if self.apps.owns(request, given):  # an App JWT or installation token: its own rules
            refused = self.apps.refuse(request, given)
            if refused is not None:
                return refused
        elif scheme.lower() not in ("bearer", "token") or not self._token_ok(given):
            return Reply(401, {"message": "Bad credentials"})
        version = headers.get("X-GitHub-Api-Version")
        if version and version not in API_VERSIONS:
            return Reply(400, {"message": f"API version {version!r} is not supported."})
        return self._over_limit(request.method)

    def _over_limit(self, method: str) -> Reply | None:
        """The primary limit, then the secondary limit on content-creating requests, as GitHub answers them."""
        with self._lock:
            limits, now = self._limits, _sim_time()
            if limits.primary is not None:
                if now >= limits.reset_at:
                    limits.used, limits.reset_at = 0, now + limits.window_seconds
                if limits.used >= limits.primary:
                    self.rate_limited["primary"] += 1
                    return Reply(403, {"message": "API rate limit exceeded for user ID 1.", "documentation_url": _DOCS},
                                 {"x-ratelimit-remaining": "0", "x-ratelimit-used": str(limits.used)})
                limits.used += 1
            secondary = Reply(403, {"message": "You have exceeded a secondary rate limit. Please wait a few "
                                               "minutes before you try again.", "documentation_url": _DOCS},
                              {} if limits.secondary_retry_after is None else {
                                  "retry-after": f"{limits.secondary_retry_after:g}"})
            if limits.points_per_minute is not None:
                points = 5 if method in _CONTENT_CREATING else 1
                limits.recent_points = [(t, p) for t, p in limits.recent_points if now - t < 60]
                if sum(p for _, p in limits.recent_points) + points > limits.points_per_minute:
                    self.rate_limited["points"] += 1
                    return secondary
                limits.recent_points.append((now, points))
            writes_limited = limits.secondary_per_minute is not None or limits.secondary_per_hour is not None
            if writes_limited and method in _CONTENT_CREATING:
                limits.recent_writes = [t for t in limits.recent_writes if now - t < 3600]
                last_minute = sum(1 for t in limits.recent_writes if now - t < 60)
                if (limits.secondary_per_minute is not None and last_minute >= limits.secondary_per_minute) or (
                        limits.secondary_per_hour is not None
                        and len(limits.recent_writes) >= limits.secondary_per_hour):
                    self.rate_limited["secondary"] += 1
                    return secondary
                limits.recent_writes.append(now)
        return None

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            limits = self._limits
            if limits.primary is not None:
                # The reset as the client's wall clock reads it: the window runs on the simulated clock.
                limit, used = limits.primary, min(limits.used, limits.primary)
                reset = int(limits.reset_at - sim_clock.skipped())
            else:
                limit, used, reset = _RATE_LIMIT, min(self._requests, _RATE_LIMIT), self._reset_at
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(limit - used),
                "x-ratelimit-used": str(used), "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core", "X-GitHub-Request-Id": uuid.uuid4().hex[:16].upper()}

    # -- route handlers -----------------------------------------------------------------------------

    def _get_repo(self, _: Request, owner: str, name: str) -> Reply:
        with self._lock:
            return Reply(200, self._repo(f"{owner}/{name}").api())

    def _get_repo_key(self, _: Request, owner: str, name: str) -> Reply:
        with self._lock:
            return Reply(200, self._repo(f"{owner}/{name}").store.public_key())

    def _put_repo_secret(self, request: Request, owner: str, name: str, secret: str) -> Reply:
        with self._lock:
            return self._store_secret(self._repo(f"{owner}/{name}").store, secret, request.json_object())

    def _get_env_key(self, _: Request, owner: str, name: str, env: str) -> Reply:
        with self._lock:
            return Reply(200, self._environment(f"{owner}/{name}", env).public_key())

    def _put_env_secret(self, request: Request, owner: str, name: str, env: str, secret: str) -> Reply:
        with self._lock:
            return self._store_secret(self._environment(f"{owner}/{name}", env), secret, request.json_object())

    def _get_org_key(self, _: Request, org: str) -> Reply:
        with self._lock:
            return Reply(200, self._org(org).store.public_key())

    def _put_org_secret(self, request: Request, org_name: str, secret: str) -> Reply:
        body = request.json_object()
        visibility = body.get("visibility")
        if visibility not in ("all", "private", "selected"):
            raise ApiError(422, "Invalid request.\n\n\"visibility\" must be all, private or selected.")
        selected = body.get("selected_repository_ids", [])
        if not isinstance(selected, list) or not all(isinstance(i, int) for i in selected):
            raise ApiError(422, "Invalid request.\n\n\"selected_repository_ids\" must be a list of integers.")
        with self._lock:
            org = self._org(org_name)
            reply = self._store_secret(org.store, secret, body)
            org.access[secret.upper()] = (visibility, frozenset(selected))
            return reply

    # Deleting a secret answers 204 (https://docs.github.com/rest/actions/secrets#delete-a-repository-secret,
    # #delete-an-environment-secret, #delete-an-organization-secret); one that does not exist answers 404
    # "Not Found" like any missing resource (what `gh secret delete` reports), which the docs do not list.

    def _delete_repo_secret(self, _: Request, owner: str, name: str, secret: str) -> Reply:
        with self._lock:
            return _remove_secret(self._repo(f"{owner}/{name}").store, secret)

    def _delete_env_secret(self, _: Request, owner: str, name: str, env: str, secret: str) -> Reply:
        with self._lock:
            return _remove_secret(self._environment(f"{owner}/{name}", env), secret)

    def _delete_org_secret(self, _: Request, org_name: str, secret: str) -> Reply:
        with self._lock:
            org = self._org(org_name)
            reply = _remove_secret(org.store, secret)
            org.access.pop(secret.upper(), None)
            return reply

    def _dispatch_workflow(self, request: Request, owner: str, name: str, workflow: str) -> Reply:
        body = request.json_object()
        ref, inputs = body.get("ref"), body.get("inputs", {})
        if not isinstance(ref, str) or not ref:
            raise ApiError(422, "Invalid request.\n\n\"ref\" wasn't supplied.")
        if not isinstance(inputs, dict) or len(inputs) > _MAX_INPUTS:
            raise ApiError(422, f"Invalid request.\n\n\"inputs\" must be an object of at most {_MAX_INPUTS}.")
        if "return_run_details" in body and self.legacy_dispatch:
            raise ApiError(422, "Invalid request.\n\n\"return_run_details\" is not a permitted key.")
        with self._lock:
            repo = self._repo(f"{owner}/{name}")
            if workflow not in repo.workflows:
                raise ApiError(404, "Not Found")
            nonce = inputs.get("nonce")
            run = self._start_run(repo, workflow, ref, nonce if isinstance(nonce, str) else None)
            details = run.api(self.url)
        if body.get("return_run_details") is True or request.headers.get("X-GitHub-Api-Version") == API_VERSIONS[1]:
            return Reply(200, {"workflow_run_id": run.id, "run_url": details["url"],
                                "html_url": details["html_url"]})
        return Reply(204)

    def _list_runs(self, request: Request, owner: str, name: str, workflow: str) -> Reply:
        query = request.query
        with self._lock:
            repo = self._repo(f"{owner}/{name}")
            if workflow not in repo.workflows:
                raise ApiError(404, "Not Found")
            runs = [run.api(self.url) for run in self._runs.of(repo.full_name.lower()) if run.workflow == workflow]
        runs = [r for r in runs if _run_matches(r, query)]
        runs.reverse()  # newest first, as GitHub lists them
        per_page = min(int(query.get("per_page", "30")), 100)
        return Reply(200, {"total_count": len(runs), "workflow_runs": runs[:per_page]})

    def _get_run(self, _: Request, owner: str, name: str, run_id: str) -> Reply:
        with self._lock:
            repo = self._repo(f"{owner}/{name}")
            run = self._runs.find(int(run_id))
            if run is None or run.repo is not repo:
                raise ApiError(404, "Not Found")
            return Reply(200, run.api(self.url))

    def _list_jobs(self, _: Request, owner: str, name: str, run_id: str) -> Reply:
        """One job per run; its check run (same id) carries the job's annotations."""
        run = self._run_of(owner, name, run_id)
        with self._lock:
            job = {"id": run.id, "run_id": run.id, "name": "verify", "status": run.status,
                   "conclusion": run.conclusion, "started_at": run.run_started_at,
                   "check_run_url": f"{self.url}/repos/{run.repo.full_name}/check-runs/{run.id}"}
            return Reply(200, {"total_count": 1, "jobs": [job]})

    def _list_annotations(self, _: Request, owner: str, name: str, check_run_id: str) -> Reply:
        run = self._run_of(owner, name, check_run_id)
        with self._lock:
            return Reply(200, [dict(a) for a in run.annotations])

    def _run_of(self, owner: str, name: str, run_id: str) -> _Run:
        with self._lock:
            repo = self._repo(f"{owner}/{name}")
            run = self._runs.find(int(run_id))
            if run is None or run.repo is not repo:
                raise ApiError(404, "Not Found")
            return run

    # -- secrets ------------------------------------------------------------------------------------

    def _store_secret(self, store: _SecretStore, name: str, body: Mapping[str, Any]) -> Reply:
        name = name.upper()  # GitHub secret names are case-insensitive and shown upper-case
        if not _SECRET_NAME.match(name):
            raise ApiError(422, "Secret names may contain only [A-Za-z0-9_] and must not start with GITHUB_.")
        value, key_id = body.get("encrypted_value"), body.get("key_id")
        if not isinstance(value, str) or not _BASE64.match(value):
            raise ApiError(422, "Invalid request.\n\n\"encrypted_value\" does not match the base64 pattern.")
        if key_id != store.key_id:
            raise ApiError(422, "Invalid request.\n\n\"key_id\" does not match the current public key.")
        try:
            plaintext = SealedBox(store.private_key).decrypt(base64.b64decode(value)).decode()
        except (CryptoError, binascii.Error, UnicodeDecodeError):
            raise ApiError(422, "Invalid request.\n\n\"encrypted_value\" could not be decrypted.") from None
        created = name not in store.values
        store.values[name] = plaintext
        self._record_secret(plaintext)
        return Reply(201, {}) if created else Reply(204)

    def _effective_secrets(self, repo: _Repo, environment: str | None) -> dict[str, str]:
        """GitHub precedence: environment over repository over organization (if the repo may read it)."""
        values: dict[str, str] = {}
        org = self._orgs.get(repo.owner.lower())
        if org is not None:
            values.update({k: v for k, v in org.store.values.items() if org.allows(k, repo)})
        values.update(repo.store.values)
        if environment is not None:
            values.update(repo.environments[environment].values)
        return values

    def _repo(self, full_name: str) -> _Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise ApiError(404, "Not Found")
        return repo

    def _known(self, full_name: str) -> _Repo:
        """For the Python-side API: a plain KeyError rather than an HTTP answer."""
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"no repository {full_name!r}; add_repository() first")
        return repo

    def _environment(self, full_name: str, env: str) -> _SecretStore:
        store = self._repo(full_name).environments.get(env)
        if store is None:
            raise ApiError(404, "Not Found")
        return store

    def _org(self, name: str) -> _Org:
        org = self._orgs.get(name.lower())
        if org is None:
            raise ApiError(404, "Not Found")
        return org

    # -- runs ---------------------------------------------------------------------------------------

    def _start_run(self, repo: _Repo, workflow: str, ref: str, nonce: str | None) -> _Run:
        key = repo.full_name.lower()
        run = self._runs.create(key, lambda run_id, _: _Run(run_id, repo, workflow, ref, nonce),
                                inputs={"nonce": nonce or ""})
        self._spawn(self._execute, f"run-{run.id}", run, self._take_build_mode(key))
        return run

    def _execute(self, run: _Run, mode: BuildMode) -> None:
        # GitHub sends ``workflow_run`` with action requested, then in_progress, then completed
        # (https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_run). Each delivery is
        # recorded with the state change it reports, so a client that sees the run in that state also finds
        # its delivery; each POST happens outside the lock (the receiver calls back into this server).
        with self._lock:
            requested = self._workflow_run_delivery(run, "requested")
        self._send_delivery(requested)
        with self._lock:
            # Secrets are read when the job starts, as on GitHub.
            env = self._effective_secrets(run.repo, run.repo.workflows[run.workflow])
            self._runs.update(run, status="in_progress", run_started_at=_now(), updated_at=_now())
            started = self._workflow_run_delivery(run, "in_progress")
        self._send_delivery(started)
        result = self._build_outcome(mode, env, inputs=self._runs.inputs_of(run), project=run.repo.full_name)
        if result is None:
            return
        try:
            with self._lock:
                self._runs.update(run, status="completed", conclusion=_conclusion(result), log=result.log,
                                  updated_at=_now(), annotations=_annotations(result.log))
                finished = self._workflow_run_delivery(run, "completed")
            self._send_delivery(finished)
        finally:
            self._runs.settle(run)

    # -- webhooks -----------------------------------------------------------------------------------

    def _workflow_run_delivery(self, run: _Run, action: str) -> dict[str, Any] | None:
        """Build, sign and record one ``workflow_run`` delivery showing the run as it is now (call with the
        lock held); None when none is sent."""
        payload = {
            "action": action,
            "workflow_run": run.api(self.url),
            "workflow": {"id": run.repo.id * 1000 + list(run.repo.workflows).index(run.workflow),
                         "name": run.workflow,
                         "path": f".github/workflows/{run.workflow}"},
            "repository": run.repo.api(),
            "sender": {"login": "github-emulator"},
        }
        body = json.dumps(payload).encode()
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/emulator",
            "X-GitHub-Event": "workflow_run",
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Hook-ID": "1",
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Hook-Installation-Target-ID": str(run.repo.id),
            "X-Hub-Signature-256": "sha256="
            + hmac.new(self._webhook_secret.encode(), body, hashlib.sha256).hexdigest(),
        }
        # The run's start and end are one reordering stream (out of order, ``completed`` arrives before
        # ``in_progress``); ``requested`` is its own, so it goes out alone, after both.
        stream = f"{run.id}:requested" if action == "requested" else str(run.id)
        return self._record_delivery(delivery_id, headers, body, stream=stream)

_NOTICE = re.compile(r"^::(notice|warning|error)(?: title=([^:]*))?::(.*)$", re.MULTILINE)


def _annotations(log: str) -> list[dict[str, Any]]:
    """Workflow commands in a job's (already masked) output, as the check-run annotations API shows them."""
    levels = {"notice": "notice", "warning": "warning", "error": "failure"}
    return [{"path": ".github", "start_line": 1, "end_line": 1, "annotation_level": levels[level],
             "title": title or "", "message": message.strip(), "raw_details": None}
            for level, title, message in _NOTICE.findall(log)]


def _remove_secret(store: _SecretStore, name: str) -> Reply:
    if store.values.pop(name.upper(), None) is None:  # names are case-insensitive, stored upper-case
        raise ApiError(404, "Not Found")
    return Reply(204)


def _conclusion(result: BuildResult) -> str:
    if result.timed_out:
        return "timed_out"
    return "success" if result.passed else "failure"


def _run_matches(run: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    if "event" in query and run["event"] != query["event"]:
        return False
    if "branch" in query and run["head_branch"] != query["branch"]:
        return False
    if "status" in query and query["status"] not in (run["status"], run["conclusion"]):
        return False
    created = query.get("created", "")
    # Only the ">=<timestamp>" form; ISO-8601 UTC strings of one format order like their instants.
    return not (created.startswith(">=") and run["created_at"] < created[2:])
