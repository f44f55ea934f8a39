"""Emergency rotations only: cut off every session minted from the leaked key, and lift that later.

Deactivating a key does not end the sessions minted from it: GetSessionToken/GetFederationToken credentials
stay valid until they expire, up to 36 h. AWS's documented revocation is an inline ``Deny *`` on the user
conditioned on ``aws:TokenIssueTime`` before the cut-off ("Disabling permissions for temporary security
credentials", https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html).
The key is absent from requests signed with a long-term key, so the user's new key is untouched.

``revoke`` (RevokeSessions, right after DeactivateCompromisedKey) puts it; ``lift`` (LiftSessionRevocation,
after a Wait longer than any such session) removes it, but only if the policy still carries this rotation's
cut-off: a later exposure of the same user re-puts it with a later one, and that rotation lifts it.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.aws import client, error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.observability import logger
from chalicelib.workflow.state import RotationState

#: The only inline policy the rotator ever writes or deletes (deploy/policies.py grants exactly that).
POLICY_NAME = "ci-key-rotator-revoke-older-sessions"
#: GetSessionToken's and GetFederationToken's longest duration for an IAM user (STS API reference); the
#: state machine's SessionRevocationWindow waits at least this long after the cut-off.
LONGEST_SESSION_SECONDS = 36 * 3600


def document(cutoff: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "RevokeSessionsMintedBeforeContainment", "Effect": "Deny", "Action": "*", "Resource": "*",
        "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
    }]}


def _guard(state: RotationState, step: str) -> None:
    if not state.emergency or not state.compromised_key_id:
        raise InterlockViolation(f"rotation {state.rotation_id} is not an emergency rotation; not running {step}")


def revoke(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    _guard(state, "RevokeSessions")
    user, rid = state.user, state.rotation_id
    record = deps.ledger.rotation(user, rid) or {}
    if not record.get("compromised_deactivated_at"):
        raise InterlockViolation(f"{state.compromised_key_id} is not deactivated yet; sessions are revoked after")
    # A retried step keeps its first cut-off, so lift compares against the one that was put.
    cutoff = str(record.get("sessions_revoked_before") or clock.iso(clock.now()))
    deps.ledger.update_rotation(user, rid, sessions_revoked_before=cutoff, session_revocation_policy=POLICY_NAME)
    deps.ledger.record_intent(user, rid, "PutUserPolicy", None)  # the audit sees an announced change
    client("iam").put_user_policy(UserName=user, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(document(cutoff)))
    logger.warning("sessions minted from the leaked key revoked",
                   extra={"rotation_id": rid, "key_id": state.compromised_key_id, "revoked_before": cutoff})
    return state.out()


def lift(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    _guard(state, "LiftSessionRevocation")
    user, rid = state.user, state.rotation_id
    cutoff = (deps.ledger.rotation(user, rid) or {}).get("sessions_revoked_before")
    if not cutoff:
        raise InterlockViolation(f"rotation {rid} revoked no sessions; nothing of its own to lift")
    iam = client("iam")
    try:
        current = iam.get_user_policy(UserName=user, PolicyName=POLICY_NAME)["PolicyDocument"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            reraise_transient(exc)
            raise
        current = None  # lifted already (a retried step, or by hand)
    outcome = "lifted" if current is None else "superseded"
    if current is not None and _cutoff_of(current) == cutoff:
        deps.ledger.record_intent(user, rid, "DeleteUserPolicy", None)
        try:
            iam.delete_user_policy(UserName=user, PolicyName=POLICY_NAME)
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                reraise_transient(exc)
                raise
        outcome = "lifted"
    deps.ledger.update_rotation(user, rid, session_revocation=outcome,
                                session_revocation_lifted_at=clock.iso(clock.now()))
    logger.info("session revocation lifted" if outcome == "lifted" else
                "session revocation left to a later containment", extra={"rotation_id": rid, "outcome": outcome})
    return state.out()


def _cutoff_of(policy: Any) -> str | None:
    """The cut-off in a stored policy (IAM returns the document URL-encoded on the wire; boto3 decodes it)."""
    try:
        parsed = json.loads(policy) if isinstance(policy, str) else policy
        return str(parsed["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
