"""Session credentials from ``sts:GetSessionToken`` and ``sts:GetFederationToken`` as AWS issues and honours them.

moto 5.2.5 answers GetSessionToken with a fixed example key (``AKIAIOSFODNN7EXAMPLE``) that belongs to no one,
so with authentication on a session could not be used at all, and its identity policies ignore every
condition they cannot resolve (a ``Deny`` with a condition on a key that is absent denies *everything*).
AWS behaves otherwise, and the product's containment of a leaked key depends on exactly that:

- a session minted by an IAM user acts as that user, with that user's policies, until it expires; it
  **stays valid after the user's access key is deactivated or deleted**
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html);
- GetSessionToken needs no permission, lasts 900-129,600 s (default 43,200) for an IAM user and cannot be
  called with session credentials (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetSessionToken.html);
- its session "cannot call any IAM API operations unless MFA authentication information is included in the
  request" and "cannot call any STS API except AssumeRole or GetCallerIdentity" (same page; the table in
  https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_sts-comparison.html). AWS answers such an IAM
  call ``InvalidClientTokenId`` (403, "The security token included in the request is invalid"), as the SDKs'
  users report (https://github.com/aws/aws-sdk-js/issues/460, https://github.com/99designs/aws-vault/issues/15);
  an STS call outside those two is ``AccessDenied`` (403). MFA devices are not emulated, so every local session
  is one without MFA: ``SerialNumber``/``TokenCode`` are refused as not emulated rather than accepted unchecked,
  which would mint a session that may call IAM with no second factor at all;
- ``aws:TokenIssueTime`` is in the request context only for requests signed with temporary credentials,
  so a ``Deny`` conditioned on ``DateLessThan aws:TokenIssueTime`` cuts off older sessions and never the
  user's long-term key (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-tokenissuetime;
  date operators: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_Date).

``GetFederationToken`` (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetFederationToken.html): moto
5.2.5 answers it with the same fixed example key, which no request can then use. AWS mints a session for the
calling IAM user (its long-term key only; the user needs ``sts:GetFederationToken``), 900-129,600 s, whose
permissions are the intersection of the user's policies and the session policy passed with the call (none
passed: no permissions), and which cannot call IAM nor STS except ``GetCallerIdentity``
(https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_getfederationtoken.html).
Like a GetSessionToken session it outlives the key that minted it, and what stops it is a change to the
*IAM user's* policies, such as the containment's ``aws:TokenIssueTime`` Deny
(https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html).
Only the inline ``Policy`` is emulated; ``PolicyArns`` and session tags are refused as not emulated.

Refusals carry AWS's HTTP status: the codes STS's API reference lists per action keep the status it gives them
(e.g. https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html#API_AssumeRoleWithWebIdentity_Errors,
as botocore's STS model carries it); ``AccessDenied``, which the reference does not list, is 403 as AWS answers
it ("Status Code: 403; Error Code: AccessDenied" in the SDKs' reports, e.g.
https://github.com/aws-amplify/aws-sdk-android/issues/9), where moto serialised every code its model lacks as 400.

Expiry runs on local/sim_clock.py, so a 36 h Wait state that was not slept still ends the session.
"""

from __future__ import annotations

import contextvars
import json
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from local import sim_clock, strict

_MIN_SECONDS, _MAX_SECONDS, _DEFAULT_SECONDS = 900, 129_600, 43_200
_ALPHABET = string.ascii_uppercase + string.digits
#: GetFederationToken's Name: 2-32 characters of [\w+=,.@-]; its session policy at most 2,048 characters.
_FEDERATED_NAME = re.compile(r"^[\w+=,.@-]{2,32}$", re.ASCII)
_MAX_POLICY_CHARS = 2048


@dataclass(frozen=True)
class Session:
    access_key_id: str
    secret_access_key: str
    session_token: str
    account: str
    user_name: str
    parent_key_id: str
    issued_at: datetime  # wall clock, as aws:TokenIssueTime carries it
    issued_sim: float  # sim_clock, for expiry
    duration_seconds: int
    #: GetFederationToken's: the federated user's name and the session policy (JSON) it was minted with.
    federated_name: str | None = None
    session_policy: str | None = None

    @property
    def federated(self) -> bool:
        return self.federated_name is not None

    def expired(self) -> bool:
        return sim_clock.now() - self.issued_sim >= self.duration_seconds


_sessions: dict[str, Session] = {}
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("sts_request_context", default=None)
_state: dict[str, Any] = {"installed": False}


def session(access_key_id: str) -> Session | None:
    return _sessions.get(access_key_id)


def install() -> None:
    if _state["installed"]:
        return
    install_error_statuses()
    _patch_get_session_token()
    _patch_get_federation_token()
    _patch_caller_identity()
    _patch_authentication()
    _patch_date_conditions()
    _state["installed"] = True


# -- minting ------------------------------------------------------------------------------------------


def _errors() -> dict[str, type[Exception]]:
    from moto.core.exceptions import ServiceException

    class AccessDenied(ServiceException):
        code = "AccessDenied"
        http_status = 403

    class MalformedPolicyDocument(ServiceException):
        code = "MalformedPolicyDocument"

    class ValidationError(ServiceException):
        code = "ValidationError"

    return {cls.__name__: cls for cls in (AccessDenied, MalformedPolicyDocument, ValidationError)}


_ERRORS: dict[str, type[Exception]] = {}


def error(name: str, message: str) -> Exception:
    """STS's error ``name`` (AccessDenied, MalformedPolicyDocument, ValidationError) with AWS's HTTP status."""
    if not _ERRORS:
        _ERRORS.update(_errors())
    return _ERRORS[name](message)


def install_error_statuses() -> None:
    """An STS error whose code botocore's STS model lacks (``AccessDenied``) is serialised by moto with status
    400; one that declares ``http_status`` gets that status instead. Codes the model has keep its status."""
    if _state.get("statuses"):
        return
    from moto.core import serialize
    from moto.core.errors import ErrorLookupFactory, ErrorShape

    original = serialize.get_error_model

    def get_error_model(exception: Exception, default_service_model: Any) -> Any:
        status = getattr(exception, "http_status", None)
        code = str(getattr(exception, "code", type(exception).__name__))
        if status is None or ErrorLookupFactory().for_service(default_service_model).from_code(code) is not None:
            return original(exception, default_service_model)
        return ErrorShape(shape_name=code, shape_model={
            "exception": True, "type": "structure", "members": {},
            "error": {"code": code, "httpStatusCode": status, "senderFault": True}})

    serialize.get_error_model = get_error_model
    _state["statuses"] = True


def _mint(account: str, user_name: str, parent_key_id: str, duration: int, **federation: str | None) -> Session:
    minted = Session(
        access_key_id="ASIA" + "".join(secrets.choice(_ALPHABET) for _ in range(16)),
        secret_access_key=secrets.token_urlsafe(30)[:40],
        session_token=secrets.token_urlsafe(96),
        account=account, user_name=user_name, parent_key_id=parent_key_id,
        issued_at=datetime.now(UTC), issued_sim=sim_clock.now(), duration_seconds=duration, **federation,
    )
    _sessions[minted.access_key_id] = minted
    return minted


def _credentials(minted: Session) -> dict[str, Any]:
    return {"AccessKeyId": minted.access_key_id, "SecretAccessKey": minted.secret_access_key,
            "SessionToken": minted.session_token,
            "Expiration": minted.issued_at + timedelta(seconds=minted.duration_seconds)}


def _calling_user(response: Any, action: str) -> Any:
    """The IAM user whose long-term key signed ``response``'s request; AccessDenied for anything else."""
    from moto.iam.models import iam_backends

    from local.iam_resources import _access_key_id

    caller = _access_key_id(response.headers) or ""
    if caller in _sessions:
        raise error("AccessDenied", f"Cannot call {action} with session credentials")
    user = iam_backends[response.current_account]["aws"].get_user_from_access_key_id(caller)
    if user is None:
        raise error("AccessDenied", f"{action} needs an IAM user's long-term access key")
    return user


def _duration(response: Any) -> int:
    duration = int(response._get_int_param("DurationSeconds", _DEFAULT_SECONDS))
    if not _MIN_SECONDS <= duration <= _MAX_SECONDS:
        raise error("ValidationError", f"DurationSeconds must be between {_MIN_SECONDS} and {_MAX_SECONDS}")
    return duration


def _patch_get_session_token() -> None:
    from moto.core.responses import ActionResult
    from moto.sts.responses import TokenResponse

    from local.iam_resources import _access_key_id

    def get_session_token(self: Any) -> ActionResult:
        if self._get_param("SerialNumber") is not None or self._get_param("TokenCode") is not None:
            raise error("ValidationError", "SerialNumber and TokenCode (MFA) are not emulated locally: the local "
                                           "world has no MFA devices to check a code against")
        duration = _duration(self)
        user = _calling_user(self, "GetSessionToken")
        minted = _mint(self.current_account, user.name, _access_key_id(self.headers) or "", duration)
        return ActionResult({"Credentials": _credentials(minted)})

    TokenResponse.get_session_token = get_session_token


def _patch_get_federation_token() -> None:
    from moto.core.responses import ActionResult
    from moto.sts.responses import TokenResponse

    from local.iam_resources import _access_key_id

    def get_federation_token(self: Any) -> ActionResult:
        name = self._get_param("Name") or ""
        if not _FEDERATED_NAME.match(name):
            raise error("ValidationError", f"1 validation error detected: Value '{name}' at 'name' failed to "
                                           r"satisfy constraint: Member must satisfy regular expression pattern: "
                                           r"[\w+=,.@-]+ and have length between 2 and 32")
        if any(k.startswith(("PolicyArns", "Tags")) for k in self.querystring):
            raise error("ValidationError", "PolicyArns and Tags are not emulated locally: pass an inline Policy")
        policy = self._get_param("Policy")
        if policy is not None:
            if len(policy) > _MAX_POLICY_CHARS:
                raise error("ValidationError", "1 validation error detected: Value at 'policy' failed to satisfy "
                                               f"constraint: Member must have length less than or equal to "
                                               f"{_MAX_POLICY_CHARS}")
            try:
                document = json.loads(policy)
            except ValueError:
                document = None
            if not isinstance(document, dict) or not isinstance(document.get("Statement"), list | dict):
                raise error("MalformedPolicyDocument", "The policy is not in the valid JSON format.")
        duration = _duration(self)
        user = _calling_user(self, "GetFederationToken")
        minted = _mint(self.current_account, user.name, _access_key_id(self.headers) or "", duration,
                       federated_name=name, session_policy=policy)
        return ActionResult({
            "Credentials": _credentials(minted),
            "FederatedUser": {"FederatedUserId": f"{minted.account}:{name}", "Arn": federated_arn(minted)},
            # AWS packs (compresses) the policy before measuring it; its plaintext share is an upper bound.
            "PackedPolicySize": -(-len(policy or "") * 100 // _MAX_POLICY_CHARS),
        })

    TokenResponse.get_federation_token = get_federation_token


def federated_arn(minted: Session) -> str:
    return f"arn:aws:sts::{minted.account}:federated-user/{minted.federated_name}"


def _patch_caller_identity() -> None:
    """GetCallerIdentity of a session names who it acts as: the IAM user (GetSessionToken) or the federated user
    (GetFederationToken); moto answered a made-up ``user/moto`` for both."""
    from moto.iam.models import iam_backends
    from moto.sts.models import STSBackend

    original = STSBackend.get_caller_identity

    def get_caller_identity(self: Any, access_key_id: str, region: str) -> tuple[str, str, str]:
        minted = _sessions.get(access_key_id)
        if minted is None:
            return original(self, access_key_id, region)
        if minted.federated:
            return f"{minted.account}:{minted.federated_name}", federated_arn(minted), minted.account
        user = iam_backends[minted.account]["aws"].users.get(minted.user_name)
        if user is None:
            return original(self, access_key_id, region)
        return str(user.id), str(user.arn), minted.account

    STSBackend.get_caller_identity = get_caller_identity  # type: ignore[method-assign]


# -- authenticating a request signed with a session -------------------------------------------------------


def _patch_authentication() -> None:
    from moto.iam import access_control
    from moto.iam.models import iam_backends

    class SessionAccessKey(access_control.IAMUserAccessKey):
        """The session acts as the user that minted it; its parent key's status does not matter."""

        def __init__(self, minted: Session, partition: str) -> None:
            # No super().__init__: that is moto's key lookup (and iam_consistency's key-status check).
            self.account_id, self.partition = minted.account, partition
            self._owner_user_name = minted.user_name
            self._access_key_id = minted.access_key_id
            self._secret_access_key = minted.secret_access_key
            self._session_token = minted.session_token
            self.session = minted

        @property
        def arn(self) -> str:
            if self.session.federated:
                return federated_arn(self.session)
            return str(iam_backends[self.account_id][self.partition].get_user(self._owner_user_name).arn)

        def create_credentials(self) -> Any:
            return access_control.Credentials(self._access_key_id, self._secret_access_key, self._session_token)

    original = access_control.create_access_key

    def create_access_key(account_id: str, partition: str, access_key_id: str, headers: dict[str, str]) -> Any:
        minted = _sessions.get(access_key_id)
        if minted is None or minted.account != account_id:
            return original(account_id, partition, access_key_id, headers)
        if headers.get("X-Amz-Security-Token") != minted.session_token:
            raise access_control.CreateAccessKeyFailure(reason="InvalidToken")
        if minted.expired():
            raise _expired_token()
        if not strict.current().session_credentials_outlive_parent_key and not _parent_active(minted):
            raise access_control.CreateAccessKeyFailure(reason="InvalidId")
        return SessionAccessKey(minted, partition)

    access_control.create_access_key = create_access_key

    original_check = access_control.IAMRequestBase.check_action_permitted

    def check_action_permitted(self: Any, resource: str) -> None:
        if self._action == "sts:GetSessionToken":
            return  # "No permissions are required" (GetSessionToken API reference)
        minted = getattr(self._access_key, "session", None)
        context = {"aws:TokenIssueTime": _iso(minted.issued_at)} if isinstance(minted, Session) else {}
        token = _context.set(context)
        try:
            if isinstance(minted, Session) and self._action != "sts:GetCallerIdentity":
                if minted.federated:
                    _federation_allows(self, minted, resource)
                else:
                    _session_token_allows(self)
            original_check(self, resource)  # the IAM user's policies (with the containment's Deny)
        finally:
            _context.reset(token)

    access_control.IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]


def _expired_token() -> Exception:
    """AWS refuses a request signed with an expired session as ``ExpiredToken`` (403); moto's authenticator
    knows only InvalidClientTokenId for a key it refuses."""
    from moto.core.exceptions import InvalidClientTokenIdError

    class ExpiredToken(InvalidClientTokenIdError):
        def __init__(self) -> None:
            super(InvalidClientTokenIdError, self).__init__(
                "ExpiredToken", "The security token included in the request is expired")

    return ExpiredToken()


#: What a GetSessionToken session without MFA may call in STS besides GetCallerIdentity. GetFederationToken goes
#: on to its handler, which refuses any session caller with AWS's "Cannot call ... with session credentials".
_SESSION_TOKEN_STS = frozenset({"sts:AssumeRole", "sts:GetFederationToken"})


def _session_token_allows(request: Any) -> None:
    """A GetSessionToken session (never with MFA locally): no IAM, no STS but AssumeRole and GetCallerIdentity;
    everything else is decided by the user's policies, checked after this."""
    service = request._action.split(":", 1)[0]
    if service == "iam":
        request._raise_invalid_access_key("InvalidToken")  # what IAM answers a session token without MFA
    if service == "sts" and request._action not in _SESSION_TOKEN_STS:
        request._raise_access_denied()


def _federation_allows(request: Any, minted: Session, resource: str) -> None:
    """A federation session: no IAM, no STS but GetCallerIdentity, and only what its session policy allows
    (the user's policies are checked after this, so the permissions are the intersection)."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    service = request._action.split(":", 1)[0]
    if service == "iam":
        request._raise_invalid_access_key("InvalidToken")  # IAM does not take a federation session's token
    if service == "sts":
        request._raise_access_denied()
    if minted.session_policy is None:
        request._raise_access_denied()  # no session policy: the session has no permissions
    result = IAMPolicy(minted.session_policy).is_action_permitted(request._action, resource)
    if result != PermissionResult.PERMITTED:
        request._raise_access_denied()


def _parent_active(minted: Session) -> bool:
    from moto.iam.models import iam_backends

    user = iam_backends[minted.account]["aws"].users.get(minted.user_name)
    return user is not None and any(k.access_key_id == minted.parent_key_id and k.status == "Active"
                                    for k in user.access_keys)


# -- date conditions in identity policies ------------------------------------------------------------------


_DATE_TESTS = {
    "DateEquals": lambda a, w: a == w, "DateNotEquals": lambda a, w: a != w,
    "DateLessThan": lambda a, w: a < w, "DateLessThanEquals": lambda a, w: a <= w,
    "DateGreaterThan": lambda a, w: a > w, "DateGreaterThanEquals": lambda a, w: a >= w,
}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_date(value: Any) -> datetime:
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)  # IAM also accepts epoch seconds
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def date_condition_holds(operator: str, tests: dict[str, Any], context: dict[str, str]) -> bool:
    """One Date* operator block: every key must match one of its values (OR within a key, AND across)."""
    if_exists = operator.endswith("IfExists")
    compare = _DATE_TESTS[operator.removesuffix("IfExists")]
    for key, wanted in tests.items():
        actual = next((v for k, v in context.items() if k.lower() == key.lower()), None)
        if actual is None:
            # An absent key fails the condition, except ...IfExists (true): IAM's rule for absent keys.
            if not if_exists:
                return False
            continue
        values = wanted if isinstance(wanted, list) else [wanted]
        try:
            if not any(compare(_parse_date(actual), _parse_date(w)) for w in values):
                return False
        except ValueError:
            return False  # an unparseable date never matches
    return True


def _is_date_operator(operator: str) -> bool:
    return operator.removesuffix("IfExists") in _DATE_TESTS


def _patch_date_conditions() -> None:
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    original = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self: Any, action: str, resource: str = "*", principal: str | None = None,
                            incoming_condition_values: dict[str, str] | None = None) -> Any:
        condition = self._statement.get("Condition")
        if not strict.current().token_issue_time_condition or not isinstance(condition, dict) \
                or not any(_is_date_operator(op) for op in condition):
            return original(self, action, resource, principal, incoming_condition_values)
        context = _context.get() or {}
        if not all(date_condition_holds(op, tests, context) for op, tests in condition.items()
                   if _is_date_operator(op) and isinstance(tests, dict)):
            return PermissionResult.NEUTRAL  # the statement does not apply to this request
        rest = {op: tests for op, tests in condition.items() if not _is_date_operator(op)}
        remaining = IAMPolicyStatement({**self._statement, "Condition": rest} if rest else
                                       {k: v for k, v in self._statement.items() if k != "Condition"})
        return original(remaining, action, resource, principal, incoming_condition_values)

    IAMPolicyStatement.is_action_permitted = is_action_permitted  # type: ignore[method-assign]
