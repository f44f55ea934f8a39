"""GraduateRollback: the graduation failed before its key was retired; the target's key setup, exactly as
it was.

- The target gets its key pair back from the escrow (the escrowed secret of the key it held, which stayed
  Active throughout) and loses ``AWS_ROLE_ARN``; the ledger says it holds that key again.
- A graduation record this execution wrote is removed.
- The role is deleted only if this execution created it (the ledger says so and its graduation tag names
  this execution): its inline policies and attached policies first, as IAM requires. A role that existed
  before is left as it was found (EnsureRole only ever re-set our own role's trust and permissions).
- The IAM OIDC provider stays: other targets' roles may trust it, and on its own it grants nothing.

Then the lock is released; GraduateAlert reports what was restored.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import client, error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.errors import EscrowError, RotatorError
from chalicelib.federation import ROLE_ARN_VARIABLE
from chalicelib.graduation import TAG_GRADUATION, listed
from chalicelib.observability import logger
from chalicelib.workflow.graduate_ensure_role import announce
from chalicelib.workflow.graduate_state import MAY_HAVE_SWITCHED, GraduationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    user, gid, tid = state.user, state.rotation_id, state.target_id
    record = deps.ledger.rotation(user, gid) or {}
    result = (record.get("targets") or {}).get(tid, {})
    summary: dict[str, Any] = {"target_id": tid, "key_restored": False, "role_deleted": False,
                               "not_restored": None}
    if result.get("restored") or result.get("status") in MAY_HAVE_SWITCHED:
        summary.update(_restore(deps, state, bool(result.get("restored"))))
    else:
        summary["key_restored"] = None  # nothing was written to the CI: it holds what it held
    if (deps.ledger.graduations(user).get(tid) or {}).get("graduation_id") == gid:
        deps.ledger.clear_graduation(user, tid)
    if record.get("role_created_by_us"):
        summary["role_deleted"] = _delete_role(deps, state)
    phase = "rolled-back" if summary["not_restored"] is None else "rollback-incomplete"
    deps.ledger.update_rotation(user, gid, phase=phase, rollback=summary)
    deps.ledger.release_lock(user, gid)
    logger.warning("graduation rolled back", extra={"graduation_id": gid, "target_id": tid,
                                                    "key_restored": summary["key_restored"],
                                                    "role_deleted": summary["role_deleted"]})
    return state.out(rollback=summary)


def _restore(deps: Deps, state: GraduationState, already: bool) -> dict[str, Any]:
    user, gid, tid = state.user, state.rotation_id, state.target_id
    if not already:
        try:
            credentials = deps.escrow.current_for(user, state.key_id)
        except EscrowError:
            credentials = None
        if credentials is None:
            deps.ledger.set_target(user, gid, tid, restored=False)
            return {"not_restored": f"the escrow holds no secret of {state.key_id}"}
        try:
            target = deps.target(deps.config.target(user, tid))
            target.push(credentials)
            target.delete_variables([ROLE_ARN_VARIABLE])
        except RotatorError as exc:
            deps.ledger.set_target(user, gid, tid, restored=False)
            return {"not_restored": f"{type(exc).__name__}: {exc}"}
        deps.ledger.set_target(user, gid, tid, restored=True, status="restored")
    deps.ledger.set_holding(user, tid, state.key_id, gid)
    return {"key_restored": True, "not_restored": None}


def _delete_role(deps: Deps, state: GraduationState) -> bool:
    """Delete the role this graduation created (confirmed by its tag); False if it is gone already."""
    iam = client("iam")
    name = state.role_name
    try:
        role = iam.get_role(RoleName=name)["Role"]
        tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
        if tags.get(TAG_GRADUATION) != state.rotation_id:
            logger.warning("role not deleted: another graduation made it", extra={"role_name": name})
            return False
        for policy in listed(iam.list_role_policies, "PolicyNames", RoleName=name):
            announce(deps, state, "DeleteRolePolicy")
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for attached in listed(iam.list_attached_role_policies, "AttachedPolicies", RoleName=name):
            announce(deps, state, "DetachRolePolicy")
            iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        announce(deps, state, "DeleteRole")
        iam.delete_role(RoleName=name)
        return True
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        reraise_transient(exc)
        raise
