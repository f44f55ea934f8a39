"""The rotation configuration: managed CI users, their targets and timings, validated by pydantic.

One YAML document (``ROTATOR_CONFIG_PATH``): a file shipped with the app, or ``ssm:<parameter name>`` for
one stored in SSM Parameter Store (read with powertools Parameters, cached CONFIG_CACHE_SECONDS, so an
updated parameter takes effect without a deployment). A config too large for one parameter (4 KB) is
stored in parts that the parameter names (``config_store``): 1,000 users fit. A bad document is refused as a whole with every
problem named by its path in the file, e.g. ``users[0].targets[1].repository: Field required``.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib import config_store
from chalicelib.audit.profile import ManagedUserProfile
from chalicelib.audit.suppression import Suppression
from chalicelib.durations import Duration, seconds
from chalicelib.errors import ConfigError
from chalicelib.secret_ref import SecretRef
from chalicelib.settings import get_settings
from chalicelib.targets.base import TargetConfig
from chalicelib.targets.registry import providers


def _target_spec() -> Any:
    models = tuple(cls.config_model for cls in providers().values())
    if not models:
        return TargetConfig
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="provider")]  # noqa: UP007


if TYPE_CHECKING:
    # Every provider's model is a TargetConfig; the discriminated union is built at run time from the registry.
    TargetSpec = TargetConfig
else:
    TargetSpec = _target_spec()
_IAM_USER_NAME = r"^[\w+=,.@-]{1,64}$"


class Timings(BaseModel):
    """How often and how carefully a user's key is rotated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Rotate when the Active key is older than this.
    rotate_after: Duration = timedelta(days=30)
    #: Wait after verification before retiring the old key; at least your longest CI job.
    drain_period: Duration = timedelta(minutes=10)
    #: How long the old key stays Inactive (re-activatable) before it is deleted.
    recovery_window: Duration = timedelta(hours=24)
    #: How long a verification build may take before the rotation rolls back.
    verify_timeout: Duration = timedelta(minutes=30)

    @field_validator("rotate_after", "verify_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1 second")
        return value

    @field_validator("drain_period", "recovery_window")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 0:
            raise ValueError("must not be negative")
        return value


class UserConfig(BaseModel):
    """One managed CI user and every place that holds its key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_IAM_USER_NAME)
    rotate_after: Duration | None = None
    drain_period: Duration | None = None
    recovery_window: Duration | None = None
    verify_timeout: Duration | None = None
    #: Rotate a key the rotator did not create (the first rotation of an existing user).
    adopt_existing_key: bool = True
    #: Not rotated on schedule nor from the console while true (an exposure rotation still runs).
    paused: bool = False
    #: What this user's pipeline is expected to do; the audit rates anything else HIGH (chalicelib/audit/profile.py).
    profile: ManagedUserProfile | None = None
    targets: list[TargetSpec] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _unique_target_ids(cls, targets: list[TargetConfig]) -> list[TargetConfig]:
        ids = [t.id for t in targets]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"target ids must be unique within a user; repeated: {duplicates}")
        return targets


class WebhookConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The shared secret the provider signs deliveries with.
    secret: SecretRef


class RotationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    defaults: Timings = Timings()
    #: Per provider: how its webhook deliveries are authenticated. Without one, the poller confirms.
    webhooks: dict[str, WebhookConfig] = {}
    users: list[UserConfig] = Field(min_length=1)
    #: The audit's allow-list: routine work that must not reach Slack (chalicelib/audit/suppression.py).
    suppressions: list[Suppression] = []

    @model_validator(mode="after")
    def _check(self) -> RotationConfig:
        names = [u.name for u in self.users]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"user names must be unique; repeated: {repeated}")
        unknown = sorted(set(self.webhooks) - set(providers()))
        if unknown:
            raise ValueError(f"webhooks for unknown providers {unknown}; known: {sorted(providers())}")
        self._one_writer_per_variable()
        return self

    def _one_writer_per_variable(self) -> None:
        """Two targets writing one CI variable overwrite each other's key: each rotation would leave the
        other user's pipeline with a key that is then deactivated."""
        writers: dict[tuple[str, ...], str] = {}
        for user in self.users:
            for target in user.targets:
                for variable in target.variables_written():
                    here = f"{user.name}/{target.id}"
                    if variable in writers and writers[variable] != here:
                        raise ValueError(
                            f"targets {writers[variable]} and {here} both write the CI variable "
                            f"{variable[-1]} in the same place ({variable[0]} {'/'.join(variable[3:-1])}): "
                            "each rotation would overwrite the other's key; give one of them other "
                            "secret_names or another scope")
                    writers[variable] = here

    def user(self, name: str) -> UserConfig:
        for user in self.users:
            if user.name == name:
                return user
        raise ConfigError(f"user {name!r} is not in the rotation configuration")

    def timings(self, name: str) -> Timings:
        user = self.user(name)
        overrides = {
            field: getattr(user, field)
            for field in Timings.model_fields
            if getattr(user, field) is not None
        }
        return self.defaults.model_copy(update=overrides)

    def target(self, user: str, target_id: str) -> TargetConfig:
        for target in self.user(user).targets:
            if target.id == target_id:
                return target
        raise ConfigError(f"user {user!r} has no target {target_id!r}")


def timing_seconds(timings: Timings) -> dict[str, int]:
    return {name: seconds(getattr(timings, name)) for name in Timings.model_fields}


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_config(data: Any, source: str = "configuration") -> RotationConfig:
    """Validate already-parsed data; ConfigError names every bad field and why."""
    try:
        return RotationConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            # Union members add their tag to the location; it is noise for a reader of the file.
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in providers()))
            problems.append(f"  {_where(loc)}: {error['msg']}")
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(problems)) from None


#: ``ROTATOR_CONFIG_PATH`` values with this prefix name an SSM parameter instead of a file.
SSM_SOURCE = "ssm:"
#: Seconds a configuration read from SSM is reused before the parameter is read again.
CONFIG_CACHE_SECONDS = 300


#: libyaml's safe loader when PyYAML was built with it (its wheels are): 8x faster on a 150-user file.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, source: str = "configuration") -> RotationConfig:
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader, C or pure Python
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    return parse_config(data, source=source)


def _read_ssm(name: str, fresh: bool = False) -> str:
    from chalicelib import aws

    source = f"{SSM_SOURCE}{name}"
    try:
        value = aws.ssm_provider().get(name, max_age=CONFIG_CACHE_SECONDS, force_fetch=fresh)
    except Exception as exc:  # noqa: BLE001 - powertools wraps the ClientError; say what and where
        raise ConfigError(f"cannot read configuration {source}: {type(exc).__name__}: {exc}") from None
    head = value.decode() if isinstance(value, bytes) else str(value)
    found = config_store.manifest(head)
    if found is None:
        return head
    # Parts never change once written (a new config gets a new path), so they are read once per digest.
    return _parts_text(str(found["path"]), str(found["sha256"]), head, source)


def read_parts(ssm: Any, path: str) -> dict[str, str]:
    """Every parameter directly under ``path``, by name (10 per GetParametersByPath page)."""
    values: dict[str, str] = {}
    kwargs: dict[str, Any] = {"Path": path, "Recursive": False}
    while True:
        page = ssm.get_parameters_by_path(**kwargs)
        values.update({p["Name"]: p["Value"] for p in page.get("Parameters", [])})
        if not page.get("NextToken"):
            return values
        kwargs["NextToken"] = page["NextToken"]


@lru_cache(maxsize=4)
def _parts_text(path: str, sha256: str, head: str, source: str) -> str:
    from chalicelib import aws

    try:
        values = read_parts(aws.client("ssm"), path)
    except ClientError as exc:
        raise ConfigError(f"cannot read configuration {source} (its parts under {path}): "
                          f"{aws.error_code(exc)}") from None
    return config_store.assemble(config_store.manifest(head) or {}, values, source)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def load_config(path: str | Path) -> RotationConfig:
    """Load and validate a configuration file, or ``ssm:<parameter name>``."""
    if str(path).startswith(SSM_SOURCE):
        return parse_yaml(_read_ssm(str(path)[len(SSM_SOURCE):], fresh=True), source=str(path))
    return parse_yaml(_read_file(Path(path)), source=str(path))


# Keyed by the text, not the path: a reader that parsed the old text while the file was replaced can
# only ever store the old text's result, so a changed file is never answered from a stale entry.
@lru_cache(maxsize=4)
def _from_text(text: str, source: str) -> RotationConfig:
    return parse_yaml(text, source)


def get_config(source: str | None = None) -> RotationConfig:
    """The deployed configuration (``ROTATOR_CONFIG_PATH`` unless ``source`` is given), validated once per
    distinct text: a file is re-read on each call (cheap; in Lambda it cannot change), an SSM parameter
    every CONFIG_CACHE_SECONDS."""
    source = source or get_settings().config_path
    if source.startswith(SSM_SOURCE):
        return _from_text(_read_ssm(source[len(SSM_SOURCE):]), source)
    return _from_text(_read_file(Path(source)), source)


def clear_config_caches() -> None:
    """Forget every parsed configuration (tests and the local runtime replace it)."""
    _from_text.cache_clear()
    _parts_text.cache_clear()
