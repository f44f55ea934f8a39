"""``sts:AssumeRoleWithWebIdentity`` as AWS serves it: the ID token and the role's trust policy are checked.

moto 5.2.5 hands out the role's credentials for any string as ``WebIdentityToken`` and evaluates no trust
policy for this action (``REQUIRE_RESOURCE_ACCESS_POLICIES_CHECK`` names ``sts:AssumeRole`` only), and with
authentication on it refuses the call outright, because the request is unsigned. AWS
(https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html) serves it unsigned and:

1. finds the account's IAM OIDC provider whose URL is the token's ``iss``, else ``InvalidIdentityToken``
   "No OpenIDConnect provider found in your account for <iss>";
2. verifies the RS256 signature with the issuer's published keys (discovery document -> ``jwks_uri``; here
   resolved to 127.0.0.1 through local/oidc.py's registry and fetched with PyJWT's ``PyJWKClient``);
3. wants an ``aud`` among the provider's client ids, else ``InvalidIdentityToken`` "Incorrect token audience";
4. refuses an expired token with ``ExpiredTokenException``, allowing the five minutes of clock skew IAM grants
   (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_oidc.html);
5. evaluates the role's trust policy: an ``Allow`` of ``sts:AssumeRoleWithWebIdentity`` for the principal
   ``{"Federated": <provider ARN>}`` whose conditions hold on the request context (``<issuer host+path>:aud``
   and ``:sub``, https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_iam-condition-keys.html#condition-keys-wif),
   no matching ``Deny``; else ``AccessDenied`` "Not authorized to perform sts:AssumeRoleWithWebIdentity".

Each refusal answers the HTTP status AWS gives its code: 400 for ``InvalidIdentityToken``,
``ExpiredTokenException`` and ``ValidationError`` (the API reference's "Errors" section), 403 for ``AccessDenied``.

Condition operators: the String ones (``*``/``?`` in the Like ones), their ``IfExists`` forms, ``Null``, and
``ForAnyValue:``/``ForAllValues:``; a key absent from the context fails a positive operator and satisfies a
negated one (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html).
An operator this module does not know makes an ``Allow`` not apply and a ``Deny`` apply (fail closed).
The session's calls are then authorised by the role's permission policies (moto's AssumedRoleAccessKey, with
local/iam_resources.py's resource ARNs). Switched off by ``strict.web_identity_tokens_validated=False``, which
tests use to prove the refusals come from here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import urllib3

from local import oidc, strict
from local.iam_resources import matches

_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
#: IAM accepts an OIDC JWT up to five minutes after its ``exp`` (clock skew).
_SKEW_SECONDS = 300
_MIN_SECONDS = 900
_ACTION = "sts:AssumeRoleWithWebIdentity"
_NOT_AUTHORIZED = f"Not authorized to perform {_ACTION}"
_INVALID = ("The web identity token that was passed could not be validated by AWS. Get a new identity token "
            "from the identity provider and then retry the request.")
_http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=5.0))
_jwk_clients: dict[str, jwt.PyJWKClient] = {}
_clients_lock = threading.Lock()
_state: dict[str, Any] = {"installed": False, "original": None}
#: The OIDC provider that vouched for each web-identity session (its access key id): CloudTrail names it in
#: the session's ``webIdFederationData`` (local/cloudtrail.py).
_providers: dict[str, str] = {}


def provider_of(access_key_id: str) -> str | None:
    """The ARN of the IAM OIDC provider behind a web-identity session, None for any other credentials."""
    with _clients_lock:
        return _providers.get(access_key_id)


def install() -> None:
    if _state["installed"]:
        return
    from local import sts_sessions

    sts_sessions.install_error_statuses()  # AccessDenied with AWS's 403
    _patch_unsigned()
    _patch_assume_role_with_web_identity()
    _state["installed"] = True


# -- errors, as STS names them ---------------------------------------------------------------------------

def _errors() -> dict[str, type[Exception]]:
    from moto.core.exceptions import ServiceException

    class InvalidIdentityToken(ServiceException):
        code = "InvalidIdentityToken"

    class ExpiredTokenException(ServiceException):
        code = "ExpiredTokenException"

    class IDPCommunicationError(ServiceException):
        code = "IDPCommunicationError"

    class AccessDenied(ServiceException):
        code = "AccessDenied"
        http_status = 403  # an authorization refusal; STS's model lacks the code, so moto would answer 400

    class ValidationError(ServiceException):
        code = "ValidationError"

    return {cls.__name__: cls for cls in (InvalidIdentityToken, ExpiredTokenException, IDPCommunicationError,
                                          AccessDenied, ValidationError)}


_ERRORS: dict[str, type[Exception]] = {}


def _error(name: str, message: str) -> Exception:
    if not _ERRORS:
        _ERRORS.update(_errors())
    return _ERRORS[name](message)


# -- the unsigned request -----------------------------------------------------------------------------------

def _patch_unsigned() -> None:
    """AssumeRoleWithWebIdentity carries no signature (the token is the credential): authentication must not
    refuse it, as IAM's own authorizer does not see it."""
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def authorize(self: Any, resource: str = "*") -> None:
        if strict.current().web_identity_tokens_validated and getattr(self, "service_name", None) == "sts" \
                and _action(self) == "AssumeRoleWithWebIdentity":
            return
        original(self, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authorize  # type: ignore[method-assign]


def _action(response: Any) -> str | None:
    try:
        return str(response._get_action())
    except Exception:  # noqa: BLE001 - a request moto cannot name is not ours
        return None


# -- the action ---------------------------------------------------------------------------------------------

def _patch_assume_role_with_web_identity() -> None:
    from moto.core.responses import ActionResult
    from moto.sts.responses import TokenResponse

    original = TokenResponse.assume_role_with_web_identity
    _state["original"] = original

    def assume_role_with_web_identity(self: Any) -> Any:
        if not strict.current().web_identity_tokens_validated:
            return original(self)
        role_arn = self._get_param("RoleArn") or ""
        session_name = self._get_param("RoleSessionName") or ""
        token = self._get_param("WebIdentityToken") or ""
        duration = self._get_int_param("DurationSeconds", 3600)
        if not _SESSION_NAME.match(session_name):
            raise _error("ValidationError", "1 validation error detected: Value at 'roleSessionName' failed to "
                                            "satisfy constraint: Member must satisfy regular expression pattern: "
                                            r"[\w+=,.@-]*")
        verified = verify_token(self.current_account, token)
        role = _role(self.current_account, role_arn)
        if role is None or not trust_admits(role.assume_role_policy_document, verified.provider_arn,
                                            verified.context):
            raise _error("AccessDenied", _NOT_AUTHORIZED)
        maximum = int(role.max_session_duration or 3600)
        if not _MIN_SECONDS <= duration <= maximum:
            raise _error("ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for "
                                            "this role." if duration > maximum else
                         f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
                         f"constraint: Member must have value greater than or equal to {_MIN_SECONDS}")
        assumed = self.backend.assume_role_with_web_identity(
            region_name=self.region, role_session_name=session_name, role_arn=role.arn, policy=None,
            duration=duration, external_id=None)
        with _clients_lock:
            _providers[assumed.access_key_id] = verified.provider_arn
        return ActionResult({
            "Credentials": assumed,
            "SubjectFromWebIdentityToken": verified.claims.get("sub"),
            "AssumedRoleUser": {"AssumedRoleId": assumed.user_id, "Arn": assumed.arn},
            "Provider": verified.provider_arn,
            "Audience": verified.audience,
            "PackedPolicySize": 0,
        })

    TokenResponse.assume_role_with_web_identity = assume_role_with_web_identity  # type: ignore[method-assign]


class Verified:
    """A token that passed: its claims, the provider that vouched for it, and the request context."""

    def __init__(self, claims: dict[str, Any], provider_arn: str, prefix: str, audience: str) -> None:
        self.claims = claims
        self.provider_arn = provider_arn
        self.audience = audience
        auds = claims.get("aud")
        self.context: dict[str, list[str]] = {
            f"{prefix}:aud": [str(a) for a in (auds if isinstance(auds, list) else [auds])],
            f"{prefix}:sub": [str(claims.get("sub", ""))],
        }


def verify_token(account: str, token: str) -> Verified:
    """Steps 1-4 of the module docstring; the error AWS answers when one fails."""
    issuer = oidc.token_issuer(token)
    if issuer is None:
        raise _error("InvalidIdentityToken", _INVALID)
    provider = _provider(account, issuer)
    if provider is None:
        raise _error("InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {issuer}")
    key = _signing_key(issuer, token)
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], issuer=issuer, leeway=_SKEW_SECONDS,
                            options={"verify_aud": False, "require": ["exp", "iat", "sub", "aud"]})
    except jwt.ExpiredSignatureError:
        expired = _expiry(token)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise _error("ExpiredTokenException", f"Token expired: current date/time {now} must be before the "
                                              f"expiration date/time {expired}") from None
    except jwt.PyJWTError:
        # A bad signature, a wrong issuer, a token not yet valid, a missing claim: no detail that helps forgery.
        raise _error("InvalidIdentityToken", _INVALID) from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    accepted = [a for a in audiences if a in provider.client_id_list]
    if not accepted:
        raise _error("InvalidIdentityToken", "Incorrect token audience")
    return Verified(claims, provider.arn, provider.url, accepted[0])


def _provider(account: str, issuer: str) -> Any:
    from moto.iam.models import iam_backends

    wanted = issuer.removeprefix("https://").rstrip("/")
    if not issuer.startswith("https://"):
        return None
    for provider in iam_backends[account]["aws"].open_id_providers.values():
        if provider.url.rstrip("/") == wanted:
            return provider
    return None


def _signing_key(issuer: str, token: str) -> Any:
    """The key of the token's ``kid`` from the issuer's JWKS, found as a relying party finds it: the
    discovery document's ``jwks_uri`` (both resolved to 127.0.0.1 by local/oidc.py)."""
    unreachable = ("Couldn't retrieve verification key from your identity provider, please reference "
                   "AssumeRoleWithWebIdentity documentation for requirements")
    discovery = oidc.local_url(oidc.discovery_url(issuer))
    if discovery is None:
        raise _error("InvalidIdentityToken", unreachable)
    try:
        response = _http.request("GET", discovery)
        jwks_uri = json.loads(response.data)["jwks_uri"] if response.status == 200 else None
    except (urllib3.exceptions.HTTPError, ValueError, KeyError, TypeError):
        jwks_uri = None
    local_jwks = oidc.local_url(jwks_uri) if isinstance(jwks_uri, str) else None
    if local_jwks is None:
        raise _error("InvalidIdentityToken", unreachable)
    with _clients_lock:
        client = _jwk_clients.get(local_jwks)
        if client is None:
            # A short lifespan and no cooldown: a key the issuer publishes later is found at once.
            client = _jwk_clients[local_jwks] = jwt.PyJWKClient(local_jwks, lifespan=60, cooldown_duration=0,
                                                                timeout=5)
    try:
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError:
        raise _error("InvalidIdentityToken", unreachable) from None
    except jwt.PyJWTError:
        raise _error("InvalidIdentityToken", _INVALID) from None


def _expiry(token: str) -> str:
    try:
        exp = int(jwt.decode(token, options={"verify_signature": False}).get("exp", 0))
    except (jwt.PyJWTError, TypeError, ValueError):
        exp = int(time.time())
    return datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _role(account: str, role_arn: str) -> Any:
    from moto.iam.models import iam_backends

    try:
        return iam_backends[account]["aws"].get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - moto's NotFoundException: AWS answers AccessDenied, not "no such role"
        return None


# -- the trust policy ---------------------------------------------------------------------------------------

def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def trust_admits(document: str | dict[str, Any], provider_arn: str, context: dict[str, list[str]]) -> bool:
    """Whether a role's trust policy lets this provider's token (with ``context``) assume it."""
    policy = json.loads(document) if isinstance(document, str) else document
    allowed = False
    for statement in _as_list(policy.get("Statement", [])):
        if not isinstance(statement, dict) or not _names_action(statement) or \
                not _names_principal(statement, provider_arn):
            continue
        holds = conditions_hold(statement.get("Condition") or {}, context)
        deny = statement.get("Effect") == "Deny"
        if deny and holds is not False:
            return False
        if not deny and holds is True:
            allowed = True
    return allowed


def _names_action(statement: dict[str, Any]) -> bool:
    if "NotAction" in statement:
        return not any(matches(a, _ACTION, case_sensitive=False) for a in _as_list(statement["NotAction"]))
    return any(matches(a, _ACTION, case_sensitive=False) for a in _as_list(statement.get("Action", [])))


def _names_principal(statement: dict[str, Any], provider_arn: str) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    return provider_arn in _as_list(principal.get("Federated", []))


_BASE_OPERATORS = {
    # name: (negated, compare)
    "StringEquals": (False, lambda wanted, actual: wanted == actual),
    "StringNotEquals": (True, lambda wanted, actual: wanted == actual),
    "StringEqualsIgnoreCase": (False, lambda wanted, actual: wanted.lower() == actual.lower()),
    "StringNotEqualsIgnoreCase": (True, lambda wanted, actual: wanted.lower() == actual.lower()),
    "StringLike": (False, lambda wanted, actual: matches(wanted, actual)),
    "StringNotLike": (True, lambda wanted, actual: matches(wanted, actual)),
}


def conditions_hold(condition: dict[str, Any], context: dict[str, list[str]]) -> bool | None:
    """Every operator block holds (AND across operators and keys, OR across a key's values); None when an
    operator is unknown here (the caller fails closed)."""
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        if not isinstance(tests, dict):
            return None
        for key, wanted in tests.items():
            result = _one(operator, [str(w) for w in _as_list(wanted)], lowered.get(str(key).lower()))
            if result is not True:
                return result
    return True


def _one(operator: str, wanted: list[str], actual: list[str] | None) -> bool | None:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    if base == "Null":
        return (actual is None) == (wanted[0].lower() == "true") if not qualifier else None
    if base not in _BASE_OPERATORS or qualifier not in ("", "ForAnyValue", "ForAllValues"):
        return None
    negated, compare = _BASE_OPERATORS[base]
    if actual is None:
        # Absent key: ...IfExists and the negated operators hold, ForAllValues holds over the empty set.
        return if_exists or qualifier == "ForAllValues" or (negated and not qualifier)

    def value_matches(value: str) -> bool:
        hit = any(compare(w, value) for w in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(value_matches(v) for v in actual)
    if qualifier == "ForAnyValue":
        return any(value_matches(v) for v in actual)
    # A single-valued operator on a key with several values (``aud`` may be a list): negated operators must
    # hold for every value, positive ones for one.
    return all(value_matches(v) for v in actual) if negated else any(value_matches(v) for v in actual)
