"""Strict mode: the AWS behaviours the embedded runtime reproduces, each with the value AWS documents.

moto answers instantly, has no quotas and records exact timestamps; real AWS does not. Each field of
``Strictness`` is one behaviour the product relies on, enforced by a patch in ``local/`` and covered by a
test that fails if the enforcement goes away (docs/strict-aws.md lists them with AWS's documentation).

Strict mode is on by default for ``make test`` and ``make demo``; a test that needs another value (the
worst case a behaviour is designed for, or 0) passes its own ``Strictness`` to ``LocalRuntime`` or uses
``override``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Strictness:
    """One field per enforced behaviour; the defaults are AWS's (documented or measured)."""

    # IAM is eventually consistent: "changes that you make in IAM ... are not immediately visible" and
    # applications must "retry" (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html
    # #troubleshoot_general_eventual-consistency). All three windows run on local/sim_clock.py, so Wait states
    # and Retry intervals that were not slept still count; enforced by local/iam_consistency.py.

    #: A new access key answers InvalidClientTokenId this long after CreateAccessKey (no bound documented;
    #: aws-vault retries 20 s, rhyeal/aws-rotate-iam-keys 60 s; AwaitKeyLive's Retry budget is ~98 s).
    key_propagation_seconds: float = 10.0
    #: A deactivated or deleted key keeps working this long (no bound documented; OFFENSAI's 2025 public
    #: measurement: about 3-4 s across regions).
    key_revocation_seconds: float = 4.0
    #: GetAccessKeyLastUsed shows a use only this long after it (AWS documents no freshness bound:
    #: https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetAccessKeyLastUsed.html). DrainCheck is
    #: designed for (and tested with) up to 4 h, the delay AWS gives for last-accessed data
    #: (https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_last-accessed.html).
    last_used_lag_seconds: float = 60.0
    #: GetAccessKeyLastUsed's LastUsedDate is truncated to the minute: every AWS example has seconds :00
    #: (API reference ``2015-03-13T10:45:00Z``; CLI reference
    #: https://docs.aws.amazon.com/cli/latest/reference/iam/get-access-key-last-used.html ``2015-06-16T22:45:00Z``).
    last_used_minute_granularity: bool = True

    # -- service limits (local/service_limits.py; 0 / False = not enforced) --
    #: SSM parameter value size, Standard tier: 4 KB. https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html
    ssm_standard_value_bytes: int = 4096
    #: Advanced (and Intelligent-Tiering once it upgrades): 8 KB. Same page; PutParameter API reference "Value".
    ssm_advanced_value_bytes: int = 8192
    #: StartExecution "name": 1-80 characters, no whitespace, brackets, wildcards, "#%\^|~`$&,;:/ or control
    #: characters. https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html
    sfn_execution_name_rules: bool = True
    sfn_execution_name_max: int = 80
    #: PutSecretValue with an existing ClientRequestToken: same value is a no-op, another value is
    #: ResourceExistsException ("you can't modify an existing version").
    #: https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html
    secrets_manager_immutable_versions: bool = True

    # -- EventBridge and Lambda asynchronous invocation (local/eventbridge.py, local/async_invoke.py) --
    #: Event pattern size, default quota 2,048 characters (4,096 only after an increase); a rule over it
    #: is refused at startup. https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html
    event_pattern_max_chars: int = 2048
    #: A rule in state ENABLED does not receive read-only CloudTrail management events; only
    #: ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS does.
    #: https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail-management.html
    read_only_events_need_admitting_state: bool = True
    #: Asynchronous invocation payload: 256 KB. https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
    async_payload_max_bytes: int = 256 * 1024
    #: On a function error Lambda retries an asynchronous event twice (MaximumRetryAttempts default 2),
    #: one minute before the first retry and two before the second (compressed by the runtime's
    #: time_scale), then sends it to the on-failure destination.
    #: https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html
    async_max_retry_attempts: int = 2
    async_retry_delays_seconds: tuple[float, ...] = (60.0, 120.0)

    # -- API Gateway REST API in front of the webhook route (local/runtime.py, the app server) --
    #: Integration timeout 29 s: a slower Lambda gets the caller a 504 (the Lambda itself runs on).
    #: https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
    api_gateway_integration_timeout_seconds: float = 29.0
    #: Lambda proxy input: ``headers`` keeps the LAST value of a repeated header, ``multiValueHeaders`` has
    #: every value (Chalice's local server keeps the first and has no multiValueHeaders).
    #: https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html
    api_gateway_header_semantics: bool = True

    # -- Lambda invocations (local/lambda_limits.py, applied by local/runtime.py and moto_patches.py) --
    #: A function runs at most its configured timeout (.chalice/config.json lambda_timeout, Chalice's
    #: default 60 s, at most 900 s); then Lambda stops it and reports Sandbox.Timedout, "Task timed out
    #: after N.00 seconds". https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html
    lambda_timeouts: bool = True
    #: Synchronous invocation (Invoke RequestResponse: every state-machine task): 6 MB each for request
    #: and response. https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
    lambda_sync_payload_bytes: int = 6 * 1024 * 1024
    #: A task's result (and a state's input or output) is at most 256 KiB of UTF-8 JSON, or the state fails
    #: with States.DataLimitExceeded. https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html
    sfn_state_payload_bytes: int = 256 * 1024

    # -- temporary credentials (local/sts_sessions.py) --
    #: A session from GetSessionToken keeps working after its parent access key is deactivated or deleted,
    #: until it expires (up to 36 h): "Disabling permissions for temporary security credentials",
    #: https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html
    session_credentials_outlive_parent_key: bool = True
    #: Date condition operators are evaluated in identity policies, and aws:TokenIssueTime is in the request
    #: context only for requests signed with temporary credentials (moto ignored both and denied everything a
    #: conditioned Deny names). https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-tokenissuetime
    token_issue_time_condition: bool = True

    # -- OIDC federation (local/sts_web_identity.py) --
    #: AssumeRoleWithWebIdentity verifies the ID token (the IAM OIDC provider of its issuer, the signature
    #: against the issuer's JWKS, the audience among the provider's client ids, expiry) and the role's trust
    #: policy with its conditions on the token's claims (moto checked none of it and admitted any token).
    #: https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html
    web_identity_tokens_validated: bool = True


_current: list[Strictness] = [Strictness()]


def current() -> Strictness:
    return _current[0]


def configure(strictness: Strictness) -> None:
    _current[0] = strictness


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Strictness]:
    """Run a block with some behaviours changed (``with override(key_propagation_seconds=0): ...``)."""
    before = _current[0]
    _current[0] = dataclasses.replace(before, **changes)
    try:
        yield _current[0]
    finally:
        _current[0] = before
