"""A complete local installation: the runtime, a GitHub emulator, managed CI users and their config.

The demo and the tests build the same world, so what the demo shows is what the tests check.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chalicelib.scheduler import Started, start_rotation
from chalicelib.targets.base import CITarget, Credentials
from chalicelib.targets.registry import provider as provider_class
from local import iam_consistency
from local.emulators.base import CIEmulator, emulators
from local.runtime import LocalRuntime


def token_ref(provider: str) -> str:
    return f"ci-key-rotator/local/{provider}-token"


def webhook_ref(provider: str) -> str:
    return f"ci-key-rotator/local/{provider}-webhook-secret"


#: Where the local GitHub App's private key (PEM) is stored, next to the tokens.
GITHUB_APP_KEY_REF = "ci-key-rotator/local/github-app-private-key"
LOCAL_GITHUB_APP_ID = 424242
GITHUB_TOKEN_REF = token_ref("github")
GITHUB_WEBHOOK_REF = webhook_ref("github")
CI_USER_POLICY = {
    "Version": "2012-10-17",
    # What a CI user typically may do directly: prove who it is (the deploy role setup is in the README).
    "Statement": [{"Effect": "Allow", "Action": ["sts:GetCallerIdentity"], "Resource": "*"}],
}


@dataclass
class ManagedUser:
    name: str
    #: "owner/repo" (GitHub) or "<provider>:<project>" for any other emulated CI.
    repositories: list[str]
    timings: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def split(project: str) -> tuple[str, str]:
    """``"gitlab:acme/app"`` → ``("gitlab", "acme/app")``; a bare name is a GitHub repository."""
    provider, sep, name = project.partition(":")
    return (provider, name) if sep else ("github", project)


def target_id(project: str) -> str:
    provider, name = split(project)
    slug = name.replace("/", "-")
    return slug if provider == "github" else f"{provider}-{slug}"


class World:
    def __init__(self, runtime: LocalRuntime, workdir: Path) -> None:
        self.runtime = runtime
        self.workdir = workdir
        self.users: dict[str, ManagedUser] = {}
        self.defaults: dict[str, str] = {"drain_period": "0s", "recovery_window": "0s", "verify_timeout": "60s"}

    def start(self) -> World:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._emulators: dict[str, CIEmulator] = {}
        self._tokens: dict[str, str] = {}
        #: GitHub repositories whose target authenticates as the GitHub App (use_github_app).
        self._app_projects: set[str] = set()
        self._app: tuple[int, str] | None = None
        self._app_installed: set[str] = set()
        #: Projects whose target carries the ``oidc:`` block its CI's tokens need (configure_oidc).
        self._oidc_projects: set[str] = set()
        return self

    def stop(self) -> None:
        for running in self._emulators.values():
            running.stop()

    def emulator(self, provider: str) -> CIEmulator:
        """The local CI of ``provider``, started on first use."""
        if provider not in self._emulators:
            # CI credentials live only in the (moto) Secrets Manager and in the emulator's memory.
            token = secrets.token_urlsafe(24)
            started = emulators()[provider](
                token=token,
                aws_endpoint_url=self.runtime.endpoint,
                webhook_url=f"{self.runtime.webhook_base_url}/{provider}",
                webhook_secret=secrets.token_urlsafe(24),
            ).start()
            sm = self.runtime.client("secretsmanager")
            sm.create_secret(Name=token_ref(provider), SecretString=token)
            sm.create_secret(Name=webhook_ref(provider), SecretString=started.webhook_key())
            self._emulators[provider] = started
            self._tokens[provider] = token
            self.write_config()
        return self._emulators[provider]

    @property
    def github(self) -> Any:
        return self.emulator("github")

    # -- CI users --------------------------------------------------------------------------------

    def add_user(self, name: str, repositories: list[str], *, initial_key: bool = True,
                 timings: dict[str, str] | None = None, **extra: Any) -> str | None:
        """Create the IAM user (under the stage's managed path, /ci/local/) and its repositories; optionally
        a key set up by hand."""
        iam = self.runtime.client("iam")
        iam.create_user(UserName=name, Path=self.runtime.names.managed_path)
        iam.put_user_policy(UserName=name, PolicyName="ci", PolicyDocument=json.dumps(CI_USER_POLICY))
        for project in repositories:
            provider, project_name = split(project)
            self.emulator(provider).add_project(project_name)
        self.users[name] = ManagedUser(name, repositories, timings or {}, extra)
        self.write_config()
        if not initial_key:
            return None
        # The "before" picture: a key someone created by hand and pasted into every repository.
        key = iam.create_access_key(UserName=name)["AccessKey"]
        # A person pastes it into CI some time later: IAM has propagated it by then.
        iam_consistency.settle()
        credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        for project in repositories:
            self.target(project).push(credentials)
        return credentials.access_key_id

    def target_config(self, project: str) -> dict[str, Any]:
        provider, name = split(project)
        config = self.emulator(provider).target_config(name, f"secretsmanager:{token_ref(provider)}")
        if project in self._app_projects and self._app is not None:
            config.pop("token")
            config["app"] = {"app_id": self._app[0], "private_key": f"secretsmanager:{GITHUB_APP_KEY_REF}"}
        if project in self._oidc_projects:
            settings = self.emulator(provider).oidc_settings(name)
            if settings:
                config["oidc"] = settings
        return {"id": target_id(project), **config}

    def configure_oidc(self, project: str) -> None:
        """From now on the target of ``project`` carries the ``oidc:`` block an operator copies from the CI's
        settings (CircleCI organization/project ids, Bitbucket workspace/repository UUIDs: ids its tokens name
        and its target config does not), so that it can graduate. Call after ``add_user``."""
        self._oidc_projects.add(project)
        self.write_config()

    def target(self, project: str) -> CITarget:
        """The rotator's own target for ``project``, as an operator would use it by hand."""
        provider, _ = split(project)
        cls = provider_class(provider)
        secret = self._app[1] if project in self._app_projects and self._app is not None else self._tokens[provider]
        return cls(cls.config_model.model_validate(self.target_config(project)), secret)

    def use_github_app(self, repository: str) -> None:
        """From now on the target of GitHub ``repository`` authenticates as the local GitHub App (registered on
        first use, its private key in Secrets Manager, installed on the repository's owner) instead of with the
        token. Call before ``add_user``."""
        github = self.github
        if self._app is None:
            app_id = LOCAL_GITHUB_APP_ID
            pem = github.apps.add_app(app_id)
            self.runtime.client("secretsmanager").create_secret(Name=GITHUB_APP_KEY_REF, SecretString=pem)
            self._app = (app_id, pem)
        owner = repository.split("/")[0].lower()
        if owner not in self._app_installed:
            github.apps.install(self._app[0], owner)
            self._app_installed.add(owner)
        self._app_projects.add(repository)

    def credential_literals(self) -> set[str]:
        """CI credentials only the emulators know, for the leak scan (tests/leak_scan.py reads the stored ones
        from Secrets Manager): every GitHub App installation token issued."""
        if self._app is None:
            return set()
        return set(self.github.apps.issued_tokens())

    def write_config(self) -> Path:
        config = {
            "defaults": dict(self.defaults),
            "webhooks": {p: {"secret": f"secretsmanager:{webhook_ref(p)}"} for p in self._emulators},
            "users": [
                {"name": u.name, **u.timings, **u.extra,
                 "targets": [self.target_config(r) for r in u.repositories]}
                for u in self.users.values()
            ],
        }
        if not config["users"]:
            return self.workdir / "rotation.yaml"
        path = self.workdir / "rotation.yaml"
        # Replace, never rewrite in place: the runtime's poller may be reading the file right now.
        staging = path.with_suffix(".yaml.new")
        staging.write_text(yaml.safe_dump(config, sort_keys=False))
        staging.replace(path)
        self.runtime.use_config(path)
        return path

    # -- rotations -------------------------------------------------------------------------------

    def start_rotation(self, user: str, reason: str = "manual", rotation_id: str | None = None,
                       **kwargs: Any) -> Started:
        from chalicelib.deps import get_deps

        return start_rotation(get_deps(), user, reason, rotation_id or f"{reason}-{secrets.token_hex(4)}",
                              **kwargs)

    def rotate(self, user: str, timeout: float = 60, **kwargs: Any) -> dict[str, Any]:
        started = self.start_rotation(user, **kwargs)
        return self.runtime.wait(started.execution_arn, timeout)

    def key_statuses(self, user: str) -> dict[str, str]:
        metadata = self.runtime.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in metadata}

    def held_key(self, project: str) -> str | None:
        provider, name = split(project)
        return self.emulator(provider).held_value(name, "AWS_ACCESS_KEY_ID")

    def run_build(self, project: str) -> bool:
        provider, name = split(project)
        return self.emulator(provider).run_build(name)

    def received_secret_sha256s(self) -> list[str]:
        return sorted({h for e in self._emulators.values() for h in e.received_secret_sha256s()})
