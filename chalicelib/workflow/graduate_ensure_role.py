"""EnsureRole: the role the pipeline will assume, trusting exactly this target's tokens, with the user's
permissions.

- Name ``oidc.role_name`` or ``<user>-<target>`` (``graduation.role_name``), path ``GRADUATED_ROLE_PATH``.
- Trust: ``Federation.trust_policy`` (the issuer's provider, ``aud`` and an exact ``sub``; only the per-build
  part CircleCI and Bitbucket put last is a wildcard).
- Permissions: what the user had, copied: each inline policy (same name and document) and each attached
  managed policy ARN, and its permissions boundary if it has one. Group policies cannot be copied to a role;
  GraduatePlan refuses a user that has any.
- Tags name the user, the target and the graduation that created it. A role of that name that does not
  carry this user's and target's tags (or lives on another path) is someone else's: refused, never widened.
  Our own role (a retry, or a graduation rolled back earlier whose role survived) gets the trust and
  permissions set again.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from chalicelib.aws import client, error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.federation import GRADUATED_ROLE_PATH, Federation, federation_for, role_intent_subject
from chalicelib.graduation import TAG_GRADUATION, TAG_TARGET, TAG_USER, listed
from chalicelib.observability import logger
from chalicelib.workflow.graduate_state import GraduationState, RoleNotOurs

#: Longest a session of the role may last: an hour, as the CI identity templates' deploy role.
MAX_SESSION_SECONDS = 3600


def _document(value: Any) -> dict[str, Any]:
    """IAM returns policy documents parsed (boto3) or URL-encoded JSON text (the raw API)."""
    if isinstance(value, str):
        parsed: dict[str, Any] = json.loads(unquote(value))
        return parsed
    return dict(value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(_document(a), sort_keys=True) == json.dumps(_document(b), sort_keys=True)


def user_permissions(user: str) -> dict[str, Any]:
    """The user's inline policies (name -> document), attached managed policy ARNs and boundary ARN."""
    iam = client("iam")
    inline = {name: _document(iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"])
              for name in listed(iam.list_user_policies, "PolicyNames", UserName=user)}
    attached = [p["PolicyArn"] for p in listed(iam.list_attached_user_policies, "AttachedPolicies", UserName=user)]
    boundary = (iam.get_user(UserName=user)["User"].get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    return {"inline": inline, "attached": sorted(attached), "boundary": boundary}


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    federation = federation_for(deps.config.target(state.user, state.target_id))
    if not isinstance(federation, Federation):
        raise RoleNotOurs(f"target {state.target_id!r} no longer federates: {federation.reason}")
    trust = federation.trust_policy(state.provider_arn)
    permissions = user_permissions(state.user)
    iam = client("iam")
    try:
        role: dict[str, Any] | None = iam.get_role(RoleName=state.role_name)["Role"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            reraise_transient(exc)
            raise
        role = None
    if role is None:
        tags = {TAG_USER: state.user, TAG_TARGET: state.target_id, TAG_GRADUATION: state.rotation_id}
        kwargs: dict[str, Any] = {
            "RoleName": state.role_name, "Path": GRADUATED_ROLE_PATH,
            "AssumeRolePolicyDocument": json.dumps(trust), "MaxSessionDuration": MAX_SESSION_SECONDS,
            "Description": f"CI Key Rotator: {state.target_id} of {state.user} via OIDC",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if permissions["boundary"]:
            kwargs["PermissionsBoundary"] = permissions["boundary"]
        # Recorded first: if we crash after IAM created it, the rollback still knows it is this execution's.
        deps.ledger.update_rotation(state.user, state.rotation_id, role_created_by_us=True)
        announce(deps, state, "CreateRole")
        iam.create_role(**kwargs)
    else:
        _require_ours(state, role)
        if not _same(role["AssumeRolePolicyDocument"], trust):
            announce(deps, state, "UpdateAssumeRolePolicy")
            iam.update_assume_role_policy(RoleName=state.role_name, PolicyDocument=json.dumps(trust))
    for name, document in permissions["inline"].items():
        announce(deps, state, "PutRolePolicy")
        iam.put_role_policy(RoleName=state.role_name, PolicyName=name, PolicyDocument=json.dumps(document))
    for arn in permissions["attached"]:
        announce(deps, state, "AttachRolePolicy")
        iam.attach_role_policy(RoleName=state.role_name, PolicyArn=arn)
    deps.ledger.update_rotation(state.user, state.rotation_id, phase="role-ready", role_arn=state.role_arn,
                                role_permissions={"inline": sorted(permissions["inline"]),
                                                  "attached": permissions["attached"],
                                                  "boundary": permissions["boundary"]})
    logger.info("role ready", extra={"graduation_id": state.rotation_id, "role_arn": state.role_arn,
                                     "role_created": role is None})
    return state.out()


def announce(deps: Deps, state: GraduationState, action: str) -> None:
    """Tell the audit, before the call, that the workflow makes it: a change to a graduated role by anyone
    else (or unannounced) is HIGH (chalicelib/audit/detections/oidc_trust.py)."""
    deps.ledger.record_intent(role_intent_subject(state.role_name), state.rotation_id, action, None)


def _require_ours(state: GraduationState, role: dict[str, Any]) -> None:
    tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
    if role.get("Path") != GRADUATED_ROLE_PATH or tags.get(TAG_USER) != state.user \
            or tags.get(TAG_TARGET) != state.target_id:
        raise RoleNotOurs(f"role {state.role_name} exists and was not made by the rotator for target "
                          f"{state.target_id!r} of {state.user!r}: it is left as it is. Set oidc.role_name to "
                          "another name, or remove that role")
