"""moto's IAM authorization, with the resource each request really touches and the policies on it.

moto 5.2.5 authorizes almost every request against the resource ``*`` (``BaseResponse.call_action`` asks
``_determine_resource``, which only SQS, STS and IAM roles define), so a policy scoped to one stage's
table would deny everything and a policy scoped to the wrong stage would allow everything once widened.
AWS evaluates each action against the ARN of the resource it acts on ("Policy evaluation logic",
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html; the resource
types of each action: https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
This module makes moto do the same for the actions the product uses:

- ``resource_arns``: the ARN(s) of a request: IAM user (with its path) for access-key operations, the
  secret's ARN (with moto's random suffix, matched by ``secret:<name>-??????`` as on AWS), the DynamoDB
  table (and index), the SNS topic, the state machine or execution (``SendTask*``: ``*``, as AWS has no resource type for them), the SSM parameter, the KMS key;
- ``_match``: Resource and Action patterns matched as IAM does (``*`` and ``?`` wildcards, everything
  else literal; moto used them as a regular expression, so ``?`` and ``.`` misbehaved);
- resource policies: a secret's resource policy and a KMS key policy are evaluated with their
  ``Principal``, explicit ``Deny`` and the condition operators the product's documents use, and a
  ``GetSecretValue``/``PutSecretValue`` on a secret encrypted with a customer-managed key also needs the
  key policy's ``kms:Decrypt``/``kms:GenerateDataKey`` via Secrets Manager, as on AWS
  (https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html,
  https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html: without a statement for
  the account root, IAM policies grant nothing on the key).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from enum import Enum
from functools import lru_cache
from typing import Any

#: A resource that every pattern matches: used where AWS would answer with its own error (a task token no
#: running execution holds) rather than AccessDenied, so the product sees the error AWS gives.
ANY_RESOURCE = "\x00any-resource"
#: moto's placeholder for a secret that does not exist yet (``CreateSecret``): AWS appends 6 characters.
_SUFFIX_PLACEHOLDER = "-??????"
#: Secrets Manager's AWS-managed key: no key policy of ours applies.
_DEFAULT_SECRETS_KEY = "alias/aws/secretsmanager"
_KMS_FOR = {"GetSecretValue": "kms:Decrypt", "PutSecretValue": "kms:GenerateDataKey"}


class Decision(Enum):
    DENY = "deny"
    ALLOW = "allow"          # the document names the principal itself
    DELEGATE = "delegate"    # the document allows the account root: IAM policies decide
    NONE = "none"


_state: dict[str, Any] = {"installed": False}


def install() -> None:
    if _state["installed"]:
        return
    _patch_resource_of_each_request()
    _patch_pattern_matching()
    _patch_resource_policies()
    _state["installed"] = True


# -- the resource of a request -----------------------------------------------------------------------


def _params(response: Any) -> dict[str, Any]:
    """The request's parameters: its JSON body (moto may have decoded it already), else its query."""
    body = getattr(response, "body", None)
    decoded: Any = body
    if isinstance(body, bytes | str) and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
    if isinstance(decoded, dict):
        return decoded
    return {k: v[0] for k, v in (getattr(response, "querystring", None) or {}).items() if v}


def resource_arns(response: Any) -> list[str]:
    """The resource ARN(s) AWS authorizes this request against (``["*"]`` where the action has none)."""
    service = response.service_name
    try:
        action = response._get_action()
    except Exception:  # noqa: BLE001 - a request moto cannot name is authorized as moto would
        return ["*"]
    calculate = _CALCULATORS.get(service)
    if calculate is None:
        return ["*"]
    arns = calculate(response, action, _params(response), response.region, response.current_account)
    return arns or ["*"]


def _iam(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    from moto.iam.models import iam_backends

    backend = iam_backends[account]["aws"]
    user_name = params.get("UserName")
    if user_name is None and action == "GetAccessKeyLastUsed":
        owner = backend.get_user_from_access_key_id(params.get("AccessKeyId", ""))
        # A key no user owns (deleted): IAM answers NoSuchEntity, which the product handles.
        return [owner.arn if owner else ANY_RESOURCE]
    if user_name is None and action in ("CreateAccessKey", "ListAccessKeys", "UpdateAccessKey", "DeleteAccessKey"):
        caller = _caller_user(response, account)
        return [caller] if caller else []
    if user_name is None:
        return _iam_role_or_provider(backend, action, params, account)
    user = backend.users.get(user_name)
    return [user.arn if user is not None else f"arn:aws:iam::{account}:user/{user_name}"]


def _iam_role_or_provider(backend: Any, action: str, params: dict[str, Any], account: str) -> list[str]:
    """Graduation's calls: a role by its path and name (moto resolves only roles that exist), an IAM OIDC
    provider by its ARN (or, being created, by its URL's host and path, as IAM names it)."""
    role_name = params.get("RoleName")
    if role_name is not None:
        role = next((r for r in backend.roles.values() if r.name == role_name), None)
        if role is not None:
            return [str(role.arn)]
        if action == "CreateRole":
            return [f"arn:aws:iam::{account}:role{params.get('Path') or '/'}{role_name}"]
        return [ANY_RESOURCE]  # IAM answers NoSuchEntity, which the product handles
    if params.get("OpenIDConnectProviderArn"):
        return [str(params["OpenIDConnectProviderArn"])]
    if action == "CreateOpenIDConnectProvider" and params.get("Url"):
        return [f"arn:aws:iam::{account}:oidc-provider/" + re.sub(r"^https://", "", str(params["Url"])).rstrip("/")]
    return []


def _caller_user(response: Any, account: str) -> str | None:
    access_key_id = _access_key_id(response.headers)
    return _user_arn_of_key(account, access_key_id) if access_key_id else None


def _access_key_id(headers: Any) -> str | None:
    match = re.search(r"Credential=([^/]+)/", headers.get("Authorization", "") or "")
    return match.group(1) if match else None


#: access key id -> its user's ARN: a key never changes owner, and moto finds it by scanning every user.
_key_owners: dict[tuple[str, str], str] = {}


def _user_arn_of_key(account: str, access_key_id: str) -> str | None:
    from moto.iam.models import iam_backends

    cached = _key_owners.get((account, access_key_id))
    if cached is not None:
        return cached
    user = iam_backends[account]["aws"].get_user_from_access_key_id(access_key_id)
    if user is None:
        return None
    _key_owners[(account, access_key_id)] = str(user.arn)
    return str(user.arn)


def _secretsmanager(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    from moto.secretsmanager.models import secretsmanager_backends

    secret_id = params.get("SecretId") or params.get("Name")
    if not secret_id:
        return []
    secret = secretsmanager_backends[account][region].secrets.get(secret_id)
    if secret is not None:
        return [str(secret.arn)]
    if str(secret_id).startswith("arn:"):
        return [str(secret_id)]
    return [f"arn:aws:secretsmanager:{region}:{account}:secret:{secret_id}{_SUFFIX_PLACEHOLDER}"]


def _dynamodb(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    tables: list[tuple[str, str | None]] = []
    if params.get("TableName"):
        tables.append((params["TableName"], params.get("IndexName")))
    tables.extend((name, None) for name in (params.get("RequestItems") or {}))
    for item in params.get("TransactItems") or []:
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("TableName"):
                tables.append((operation["TableName"], None))
    arns = []
    for table, index in tables:
        arn = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
        arns.append(f"{arn}/index/{index}" if index else arn)
    return sorted(set(arns))


def _sns(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    topic = params.get("TopicArn") or params.get("TargetArn")
    return [topic] if topic else []


def _states(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    if params.get("executionArn"):
        return [params["executionArn"]]
    if params.get("stateMachineArn"):
        return [params["stateMachineArn"]]
    if params.get("taskToken"):
        # SendTask* have no resource type (Service Authorization Reference): the request's resource is "*",
        # which only a policy Resource of "*" matches, as on AWS.
        return ["*"]
    return []



def _ssm(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    names = [params["Name"]] if params.get("Name") else list(params.get("Names") or [])
    if params.get("Path"):
        names.append(params["Path"])
    return [_parameter_arn(str(n), region, account) for n in names]


def _parameter_arn(name: str, region: str, account: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ssm:{region}:{account}:parameter{name if name.startswith('/') else '/' + name}"


def _kms(response: Any, action: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    key_id = params.get("KeyId") or params.get("TargetKeyId")
    if not key_id:
        return []
    arns = [key_arn(str(key_id), region, account)]
    if params.get("AliasName"):
        arns.append(f"arn:aws:kms:{region}:{account}:{params['AliasName']}")
    return arns


def key_arn(key_id: str, region: str, account: str) -> str:
    from moto.kms.models import kms_backends

    backend = kms_backends[account][region]
    try:
        return str(backend.keys[backend.any_id_to_key_id(key_id)].arn)
    except (KeyError, Exception):  # noqa: BLE001 - an unknown key: AWS answers NotFound, so does moto
        if key_id.startswith("arn:"):
            return key_id
        if key_id.startswith("alias/"):
            return f"arn:aws:kms:{region}:{account}:{key_id}"
        return f"arn:aws:kms:{region}:{account}:key/{key_id}"


_CALCULATORS: dict[str, Callable[[Any, str, dict[str, Any], str, str], list[str]]] = {
    "iam": _iam, "secretsmanager": _secretsmanager, "dynamodb": _dynamodb, "sns": _sns,
    "stepfunctions": _states, "ssm": _ssm, "kms": _kms,
}


def _patch_resource_of_each_request() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def authorize(self: Any, resource: str = "*") -> None:
        from moto import settings

        if resource != "*" or ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
            original(self, resource)
            return
        for arn in resource_arns(self):
            original(self, arn)

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authorize  # type: ignore[method-assign]


# -- matching --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _glob(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    # fnmatch's [..] classes do not exist in IAM: escape them so only * and ? are wildcards.
    escaped = pattern.replace("[", "\x01").replace("]", "\x02")
    regex = fnmatch.translate(escaped).replace("\x01", r"\[").replace("\x02", r"\]")
    return re.compile(regex, 0 if case_sensitive else re.IGNORECASE)


def matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` one character, the rest literal."""
    if value == ANY_RESOURCE:
        return True
    return _glob(pattern, case_sensitive).match(value) is not None


def _patch_pattern_matching() -> None:
    from moto.iam.access_control import IAMPolicyStatement

    def _match(pattern: str, string: str) -> Any:
        # Actions are case-insensitive in IAM; ARNs are not.
        case_sensitive = string.startswith("arn:") or string == ANY_RESOURCE
        return True if matches(pattern, string, case_sensitive=case_sensitive) else None

    IAMPolicyStatement._match = staticmethod(_match)  # type: ignore[method-assign]


# -- resource policies and key policies -------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def principal_arn(request: Any) -> str:
    """``aws:PrincipalArn`` of the request: the user's ARN with its path, or the assumed role's ARN."""
    from moto.iam.access_control import AssumedRoleAccessKey

    key = request._access_key
    if isinstance(key, AssumedRoleAccessKey):
        try:
            return str(request.backend.get_role(key._owner_role_name).arn)
        except Exception:  # noqa: BLE001 - the role was deleted after the session began
            return str(key.arn)
    return _user_arn_of_key(request.account_id, key._access_key_id) or str(key.arn)


_OPERATORS: dict[str, tuple[bool, bool, bool]] = {
    # operator: (arn/string glob, negated, glob allowed)
    "StringEquals": (False, False, False), "StringNotEquals": (False, True, False),
    "StringLike": (False, False, True), "StringNotLike": (False, True, True),
    "ArnEquals": (True, False, True), "ArnNotEquals": (True, True, True),
    "ArnLike": (True, False, True), "ArnNotLike": (True, True, True),
}


def conditions_hold(condition: dict[str, Any] | None, context: dict[str, str]) -> bool:
    """IAM's condition evaluation for the operators above; an operator we do not know fails closed."""
    for operator, tests in (condition or {}).items():
        if operator == "Bool":
            if any(str(context.get(k, "")).lower() != str(v).lower() for k, v in tests.items()):
                return False
            continue
        if operator not in _OPERATORS:
            return False
        _, negated, glob = _OPERATORS[operator]
        for key, wanted in tests.items():
            actual = next((v for k, v in context.items() if k.lower() == key.lower()), None)
            if actual is None:
                if not negated:  # a missing key satisfies only the negated operators
                    return False
                continue
            hit = any(matches(str(w), actual) if glob else str(w) == actual for w in _as_list(wanted))
            if hit == negated:
                return False
    return True


def _principal_decision(principal: Any, caller: str, account: str) -> Decision:
    if principal == "*" or principal == {"AWS": "*"}:
        return Decision.ALLOW
    if not isinstance(principal, dict):
        return Decision.NONE
    for named in _as_list(principal.get("AWS", [])):
        if named == caller:
            return Decision.ALLOW
        if named in (account, f"arn:aws:iam::{account}:root"):
            return Decision.DELEGATE
    return Decision.NONE


def evaluate(document: dict[str, Any], action: str, resource: str, caller: str, account: str,
             context: dict[str, str]) -> Decision:
    """A resource-based policy (secret resource policy, KMS key policy) for one request."""
    allowed = Decision.NONE
    for statement in _as_list(document.get("Statement", [])):
        if not any(matches(a, action, case_sensitive=False) for a in _as_list(statement.get("Action", []))):
            continue
        if not any(r == "*" or matches(r, resource) for r in _as_list(statement.get("Resource", "*"))):
            continue
        who = _principal_decision(statement.get("Principal"), caller, account)
        if who is Decision.NONE or not conditions_hold(statement.get("Condition"), context):
            continue
        if statement.get("Effect") == "Deny":
            return Decision.DENY
        if who is Decision.ALLOW or allowed is Decision.NONE:
            allowed = who
    return allowed


def _context(caller: str, account: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"aws:PrincipalArn": caller, "aws:PrincipalAccount": account, **(extra or {})}


def _secret(account: str, region: str, arn: str) -> Any:
    from moto.secretsmanager.models import secretsmanager_backends

    if not arn.startswith("arn:aws:secretsmanager:") or arn.endswith(_SUFFIX_PLACEHOLDER):
        return None
    return secretsmanager_backends[account][region].secrets.get(arn)


def _key_policy(account: str, region: str, arn: str) -> dict[str, Any] | None:
    from moto.kms.models import kms_backends

    if ":key/" not in arn:
        return None
    backend = kms_backends[account][region]
    key = backend.keys.get(arn.rsplit("/", 1)[1])
    return json.loads(key.policy) if key is not None and key.policy else None


def _patch_resource_policies() -> None:
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase.check_action_permitted

    def check_action_permitted(self: Any, resource: str) -> None:
        if self._action == "sts:GetCallerIdentity":
            original(self, resource)
            return
        service = self._action.split(":", 1)[0]
        account, region = self.account_id, self._region
        if service == "secretsmanager":
            secret = _secret(account, region, resource)
            caller = principal_arn(self)
            decision = Decision.NONE
            if secret is not None and secret.policy:
                decision = evaluate(json.loads(secret.policy), self._action, resource, caller, account,
                                    _context(caller, account))
            if decision is Decision.DENY:
                self._raise_access_denied()
            if decision is not Decision.ALLOW:
                original(self, resource)
            _check_key_behind(self, secret, caller)
            return
        if service == "kms":
            document = _key_policy(account, region, resource)
            if document is not None:
                caller = principal_arn(self)
                decision = evaluate(document, self._action, resource, caller, account,
                                    _context(caller, account, {"kms:CallerAccount": account}))
                if decision in (Decision.DENY, Decision.NONE):
                    self._raise_access_denied()
                if decision is Decision.DELEGATE:
                    original(self, resource)
                return
        original(self, resource)

    def _check_key_behind(request: Any, secret: Any, caller: str) -> None:
        """Secrets Manager decrypts and encrypts with the caller's permissions on the secret's key."""
        kms_action = _KMS_FOR.get(request._action.split(":", 1)[1])
        key_id = getattr(secret, "kms_key_id", None)
        if kms_action is None or not key_id or key_id == _DEFAULT_SECRETS_KEY:
            return
        account, region = request.account_id, request._region
        arn = key_arn(str(key_id), region, account)
        document = _key_policy(account, region, arn)
        if document is None:
            return
        context = _context(caller, account, {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
                                             "kms:CallerAccount": account})
        decision = evaluate(document, kms_action, arn, caller, account, context)
        if decision in (Decision.DENY, Decision.NONE):
            request._raise_access_denied()
        if decision is Decision.DELEGATE:
            saved = request._action
            request._action = kms_action
            try:
                original(request, arn)
            finally:
                request._action = saved

    IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]
