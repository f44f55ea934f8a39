"""AWS's size limits, name rules and version semantics, enforced on moto (installed by moto_patches.install).

moto accepts what AWS refuses: a 60,000-character SSM parameter, any Step Functions execution name, a
Secrets Manager version overwritten with a new value under the same ClientRequestToken. Code that passed here would fail in AWS. Each check reads
``strict.current()`` at call time, so a test can switch one off (``strict.override``) to show what it
guards; the values and their sources are the fields of ``local.strict.Strictness``.
"""

from __future__ import annotations

import re
from typing import Any

from local import strict

_installed: list[bool] = []

# StartExecution "name": no whitespace, brackets, wildcards, these specials, or control characters.
_SFN_NAME_FORBIDDEN = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\u0000-\u001f\u007f-\u009f]")


def install() -> None:
    if _installed:
        return
    _limit_ssm_parameter_values()
    _check_execution_names()
    _immutable_secret_versions()
    _installed.append(True)


# -- SSM Parameter Store ----------------------------------------------------------------------------------


def ssm_value_limit(tier: str | None, previous_tier: str | None) -> int:
    """Bytes a value may have: Standard 4 KB; Advanced (or Intelligent-Tiering, which upgrades) 8 KB."""
    limits = strict.current()
    effective = tier or previous_tier or "Standard"
    if effective in ("Advanced", "Intelligent-Tiering"):
        return limits.ssm_advanced_value_bytes
    return limits.ssm_standard_value_bytes


def _limit_ssm_parameter_values() -> None:
    from moto.ssm.exceptions import ValidationException
    from moto.ssm.models import SimpleSystemManagerBackend

    original = SimpleSystemManagerBackend.put_parameter

    def put_parameter(self: Any, name: str, description: str, value: str, *args: Any, **kwargs: Any) -> Any:
        tier = kwargs.get("tier", args[6] if len(args) > 6 else None)
        versions = self._parameters.get(name) if name in self._parameters else None
        previous_tier = versions[-1].tier if versions else None
        limit = ssm_value_limit(tier, previous_tier)
        size = len((value or "").encode())
        if limit and size > limit:
            # The code AWS answers with; the message names the limit that was hit.
            raise ValidationException(
                f"Parameter value of {size} bytes exceeds the {limit}-byte limit of the "
                f"{tier or previous_tier or 'Standard'} tier. To store a larger value, use the advanced "
                "tier (8 KB) or store it elsewhere."
            )
        return original(self, name, description, value, *args, **kwargs)

    SimpleSystemManagerBackend.put_parameter = put_parameter


# -- Step Functions -------------------------------------------------------------------------------------


def execution_name_problem(name: str) -> str | None:
    """Why StartExecution would refuse ``name`` (None when it is valid)."""
    if not strict.current().sfn_execution_name_rules:
        return None
    if not 1 <= len(name) <= strict.current().sfn_execution_name_max:
        return f"must have 1 to {strict.current().sfn_execution_name_max} characters (has {len(name)})"
    bad = _SFN_NAME_FORBIDDEN.search(name)
    if bad:
        return f"contains {bad.group()!r}, which execution names may not"
    return None


def _check_execution_names() -> None:
    # Closed-name reuse (ExecutionAlreadyExists) and the idempotent same-name, same-input start of a
    # RUNNING execution are moto's own (StateMachine._handle_name_input_idempotency); tests pin both.
    from moto.stepfunctions.exceptions import InvalidName
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.start_execution

    def start_execution(self: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if name is not None:
            problem = execution_name_problem(name)
            if problem:
                raise InvalidName(f"Invalid Name: '{name}': {problem}")
        return original(self, state_machine_arn, name, *args, **kwargs)

    StepFunctionsParserBackend.start_execution = start_execution


# -- DynamoDB -------------------------------------------------------------------------------------------
# Item 400 KB, partition key 2,048 bytes, sort key 1,024 bytes (ValidationException): moto 5.2.5 refuses
# these itself, in PutItem and in an UpdateItem that creates the item (its item limit, 405,000 bytes, is a
# little stricter than AWS's 409,600). tests/test_service_limits.py pins them, so an upgrade that drops
# them shows.


# -- Secrets Manager ------------------------------------------------------------------------------------


def _immutable_secret_versions() -> None:
    """A version is immutable: PutSecretValue with an existing ClientRequestToken succeeds (a no-op) only
    with the same value; with another it is ResourceExistsException. moto let an AWSPENDING version be
    overwritten, which hid a retried CreateKey that escrowed a second key under the first one's token."""
    from moto.secretsmanager.exceptions import ResourceExistsException
    from moto.secretsmanager.models import SecretsManagerBackend

    original = SecretsManagerBackend.put_secret_value

    def put_secret_value(self: Any, secret_id: str, secret_string: str | None, secret_binary: str | None,
                         client_request_token: str | None, version_stages: list[str]) -> Any:
        if strict.current().secrets_manager_immutable_versions and client_request_token \
                and self._is_valid_identifier(secret_id):
            secret = self.secrets[secret_id]
            existing = getattr(secret, "versions", {}).get(client_request_token)
            if existing is not None:
                same = existing.get("secret_string") == secret_string and \
                    existing.get("secret_binary") == secret_binary
                if not same:
                    raise ResourceExistsException(
                        f"You can't use ClientRequestToken {client_request_token} because that value is "
                        f"already in use for a version of secret {secret.arn}."
                    )
                return secret.to_short_dict(include_version_stages=True, version_id=client_request_token)
        return original(self, secret_id, secret_string, secret_binary, client_request_token, version_stages)

    SecretsManagerBackend.put_secret_value = put_secret_value
