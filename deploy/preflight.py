"""What ``make deploy`` checks before it changes anything: the region, and the rotation config.

A config that fails validation is refused as a whole (the same pydantic models as the Lambdas), and so is
one the deployed functions could not use: a reference outside the prefixes their policies can read, a
managed user outside the path their IAM key actions are scoped to, or one too large to store in SSM
(deploy/config_store.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import config_store as stored
from chalicelib.config import RotationConfig, parse_yaml, read_parts
from chalicelib.errors import ConfigError
from chalicelib.secret_ref import SecretRef
from deploy import config_store, naming


class Refused(Exception):
    """The deployment must not go on; the message says why and what to do."""


def check_region(region: str, allow_elsewhere: bool = False) -> str | None:
    """Refuse (or, when allowed, warn about) a stage outside us-east-1: the audit rules would be silent."""
    if region == naming.AUDIT_REGION:
        return None
    message = (
        f"region {region}: the audit and exposure rules receive IAM, console sign-in and AWS Health RISK "
        f"events only in {naming.AUDIT_REGION}. Deploy there (AWS_REGION={naming.AUDIT_REGION}), or forward "
        f"those events from {naming.AUDIT_REGION} to this region's default bus with a cross-region EventBridge "
        "rule and pass --allow-region-outside-us-east-1."
    )
    if not allow_elsewhere:
        raise Refused(message)
    return "WARNING: " + message


def references(config: RotationConfig) -> list[tuple[str, SecretRef]]:
    found: list[tuple[str, SecretRef]] = []
    for provider, hook in config.webhooks.items():
        found.append((f"webhooks.{provider}.secret", hook.secret))
    for i, user in enumerate(config.users):
        for j, target in enumerate(user.targets):
            credential = target.credential()
            found.append((f"users[{i}].targets[{j}].{credential.field}", credential.ref))
    return found


def validate_config_text(text: str, source: str, stage: str | None = None) -> RotationConfig:
    """Parse and validate; refuse references the functions' policies (of ``stage``) cannot read."""
    secret_prefix, parameter_prefix = naming.SECRET_REFERENCE_PREFIX, naming.PARAMETER_REFERENCE_PREFIX
    if stage is not None:
        names = naming.StageNames(stage)
        secret_prefix, parameter_prefix = names.secret_reference_prefix, names.parameter_reference_prefix
    try:
        config = parse_yaml(text, source)
    except ConfigError as exc:
        raise Refused(f"the rotation config is invalid; nothing was deployed.\n{exc}") from None
    too_large = config_store.problem(text)
    if too_large:
        raise Refused(f"{source}: {too_large}; nothing was deployed.")
    problems = []
    for where, ref in references(config):
        if ref.source == "secretsmanager" and not ref.name.startswith(secret_prefix):
            problems.append(f"  {where}: {ref} is not under secretsmanager:{secret_prefix} "
                            "(the functions may read only secrets there)")
        if ref.source == "ssm" and not ref.name.startswith(parameter_prefix):
            problems.append(f"  {where}: {ref} is not under ssm:{parameter_prefix} "
                            "(the functions may read only parameters there)")
    if problems:
        raise Refused(f"{source} names secrets the deployed functions cannot read:\n" + "\n".join(problems))
    return config


def load_config_file(path: Path, stage: str | None = None) -> tuple[RotationConfig, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror}") from None
    return validate_config_text(text, str(path), stage), text


def deployed_config(session: Any, stage: str) -> RotationConfig | None:
    """The config already in SSM for the stage (validated), or None if there is none yet."""
    name = naming.StageNames(stage).config_parameter
    ssm = session.client("ssm")
    try:
        head = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    try:
        text = stored.resolve(head, functools.partial(read_parts, ssm), f"ssm:{name}")
    except ConfigError as exc:
        raise Refused(f"the deployed rotation config cannot be read: {exc}") from None
    return validate_config_text(text, f"ssm:{name}", stage)


def check_aws(session: Any, config: RotationConfig, stage: str | None = None) -> list[str]:
    """Against the account: refuse managed users outside the stage's managed path (``/ci/<stage>/``: a
    stage's policies reach only its own users); warn about missing users and referenced secrets that do
    not exist yet."""
    managed_path = naming.StageNames(stage).managed_path if stage is not None else naming.MANAGED_PATH
    iam, warnings, refused = session.client("iam"), [], []
    for user in config.users:
        try:
            path = iam.get_user(UserName=user.name)["User"].get("Path", "/")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise
            warnings.append(f"WARNING: IAM user {user.name} does not exist yet (create it under {managed_path})")
            continue
        if path != managed_path:
            refused.append(f"  IAM user {user.name} has path {path}; the rotator may manage keys only under "
                           f"{managed_path} (aws iam update-user --user-name {user.name} "
                           f"--new-path {managed_path})")
    if refused:
        raise Refused("managed users outside the managed path:\n" + "\n".join(refused))
    sm, ssm = session.client("secretsmanager"), session.client("ssm")
    for where, ref in references(config):
        try:
            if ref.source == "secretsmanager":
                sm.describe_secret(SecretId=ref.name)
            else:
                ssm.get_parameter(Name=ref.name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("ResourceNotFoundException", "ParameterNotFound"):
                warnings.append(f"WARNING: {where}: {ref} does not exist yet; rotations of that target will fail")
            else:
                raise
    return warnings

