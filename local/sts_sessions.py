"""Session credentials from ``sts:GetSessionToken`` as AWS issues and honours them.

moto 5.2.5 answers GetSessionToken with a fixed example key (``AKIAIOSFODNN7EXAMPLE``) that belongs to no one,
so with authentication on a session could not be used at all, and its identity policies ignore every
condition they cannot resolve (a ``Deny`` with a condition on a key that is absent denies *everything*).
AWS behaves otherwise, and the product's containment of a leaked key depends on exactly that:

- a session minted by an IAM user acts as that user, with that user's policies, until it expires; it
  **stays valid after the user's access key is deactivated or deleted**
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html);
- GetSessionToken needs no permission, lasts 900-129,600 s (default 43,200) for an IAM user and cannot be
  called with session credentials (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetSessionToken.html);
- ``aws:TokenIssueTime`` is in the request context only for requests signed with temporary credentials,
  so a ``Deny`` conditioned on ``DateLessThan aws:TokenIssueTime`` cuts off older sessions and never the
  user's long-term key (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-tokenissuetime;
  date operators: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_Date).

Expiry runs on local/sim_clock.py, so a 36 h Wait state that was not slept still ends the session.
"""

from __future__ import annotations

import contextvars
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from local import sim_clock, strict

_MIN_SECONDS, _MAX_SECONDS, _DEFAULT_SECONDS = 900, 129_600, 43_200
_ALPHABET = string.ascii_uppercase + string.digits


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
    _patch_get_session_token()
    _patch_authentication()
    _patch_date_conditions()
    _state["installed"] = True


# -- minting ------------------------------------------------------------------------------------------


def _patch_get_session_token() -> None:
    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult
    from moto.iam.models import iam_backends
    from moto.sts.exceptions import STSValidationError
    from moto.sts.responses import TokenResponse

    from local.iam_resources import _access_key_id

    class AccessDenied(ServiceException):
        code = "AccessDenied"

    def get_session_token(self: Any) -> ActionResult:
        duration = self._get_int_param("DurationSeconds", _DEFAULT_SECONDS)
        if not _MIN_SECONDS <= duration <= _MAX_SECONDS:
            raise STSValidationError(f"DurationSeconds must be between {_MIN_SECONDS} and {_MAX_SECONDS}")
        caller = _access_key_id(self.headers) or ""
        if caller in _sessions:
            raise AccessDenied("Cannot call GetSessionToken with session credentials")
        user = iam_backends[self.current_account]["aws"].get_user_from_access_key_id(caller)
        if user is None:
            raise AccessDenied("GetSessionToken needs an IAM user's long-term access key")
        minted = Session(
            access_key_id="ASIA" + "".join(secrets.choice(_ALPHABET) for _ in range(16)),
            secret_access_key=secrets.token_urlsafe(30)[:40],
            session_token=secrets.token_urlsafe(96),
            account=self.current_account, user_name=user.name, parent_key_id=caller,
            issued_at=datetime.now(UTC), issued_sim=sim_clock.now(), duration_seconds=duration,
        )
        _sessions[minted.access_key_id] = minted
        return ActionResult({"Credentials": {
            "AccessKeyId": minted.access_key_id, "SecretAccessKey": minted.secret_access_key,
            "SessionToken": minted.session_token,
            "Expiration": minted.issued_at + timedelta(seconds=duration),
        }})

    TokenResponse.get_session_token = get_session_token


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
            raise access_control.CreateAccessKeyFailure(reason="ExpiredToken")
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
            original_check(self, resource)
        finally:
            _context.reset(token)

    access_control.IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]


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
