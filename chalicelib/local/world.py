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

from chalicelib.local.github_emulator import GitHubEmulator
from chalicelib.local.runtime import LocalRuntime
from chalicelib.scheduler import Started, start_rotation
from chalicelib.targets.base import Credentials
from chalicelib.targets.github import GitHubTarget, GitHubTargetConfig

GITHUB_TOKEN_REF = "ci-key-rotator/local/github-token"
GITHUB_WEBHOOK_REF = "ci-key-rotator/local/github-webhook-secret"
CI_USER_POLICY = {
    "Version": "2012-10-17",
    # What a CI user typically may do directly: prove who it is (the deploy role setup is in the README).
    "Statement": [{"Effect": "Allow", "Action": ["sts:GetCallerIdentity"], "Resource": "*"}],
}


@dataclass
class ManagedUser:
    name: str
    repositories: list[str]
    timings: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class World:
    def __init__(self, runtime: LocalRuntime, workdir: Path) -> None:
        self.runtime = runtime
        self.workdir = workdir
        self.users: dict[str, ManagedUser] = {}
        self.defaults: dict[str, str] = {"drain_period": "0s", "recovery_window": "0s", "verify_timeout": "60s"}

    def start(self) -> World:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # CI credentials live only in the (moto) Secrets Manager and in the emulator's memory.
        self._github_token = secrets.token_urlsafe(24)
        self._webhook_secret = secrets.token_urlsafe(24)
        sm = self.runtime.client("secretsmanager")
        sm.create_secret(Name=GITHUB_TOKEN_REF, SecretString=self._github_token)
        sm.create_secret(Name=GITHUB_WEBHOOK_REF, SecretString=self._webhook_secret)
        self.github = GitHubEmulator(
            token=self._github_token,
            aws_endpoint_url=self.runtime.endpoint,
            webhook_url=f"{self.runtime.webhook_base_url}/github",
            webhook_secret=self._webhook_secret,
        ).start()
        return self

    def stop(self) -> None:
        self.github.stop()

    # -- CI users --------------------------------------------------------------------------------

    def add_user(self, name: str, repositories: list[str], *, initial_key: bool = True,
                 timings: dict[str, str] | None = None, **extra: Any) -> str | None:
        """Create the IAM user (path /ci/) and its repositories; optionally a key set up by hand."""
        iam = self.runtime.client("iam")
        iam.create_user(UserName=name, Path="/ci/")
        iam.put_user_policy(UserName=name, PolicyName="ci", PolicyDocument=json.dumps(CI_USER_POLICY))
        for repo in repositories:
            self.github.add_repository(repo)
        self.users[name] = ManagedUser(name, repositories, timings or {}, extra)
        self.write_config()
        if not initial_key:
            return None
        # The "before" picture: a key someone created by hand and pasted into every repository.
        key = iam.create_access_key(UserName=name)["AccessKey"]
        credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        for repo in repositories:
            self.github_target(name, repo).push(credentials)
        return credentials.access_key_id

    def target_config(self, user: str, repo: str) -> dict[str, Any]:
        return {
            "id": repo.replace("/", "-"),
            "provider": "github",
            "api_url": self.github.url,
            "repository": repo,
            "token": f"secretsmanager:{GITHUB_TOKEN_REF}",
        }

    def github_target(self, user: str, repo: str) -> GitHubTarget:
        config = GitHubTargetConfig.model_validate(self.target_config(user, repo))
        return GitHubTarget(config, self._github_token)

    def write_config(self) -> Path:
        config = {
            "defaults": dict(self.defaults),
            "webhooks": {"github": {"secret": f"secretsmanager:{GITHUB_WEBHOOK_REF}"}},
            "users": [
                {"name": u.name, **u.timings, **u.extra,
                 "targets": [self.target_config(u.name, r) for r in u.repositories]}
                for u in self.users.values()
            ],
        }
        path = self.workdir / "rotation.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
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

    def held_key(self, repo: str) -> str | None:
        return self.github.secret_value(repo, "AWS_ACCESS_KEY_ID")
