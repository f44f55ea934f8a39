"""SwitchTarget: the role ARN into the CI (``AWS_ROLE_ARN``, not a secret), then the key pair out of it.

After this the target's verification build can only pass through OIDC: the key variables are gone, and the
OIDC verification templates fail closed without ``AWS_ROLE_ARN``. Both calls are idempotent (an upsert, and
a delete where "not found" is done), so a retry repeats them. The status is recorded before the first
write, so GraduateRollback restores the key variables even if we crash after the CI accepted a change.
"""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.deps import Deps
from chalicelib.federation import ROLE_ARN_VARIABLE
from chalicelib.observability import logger
from chalicelib.workflow.graduate_state import GraduationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    config = deps.config.target(state.user, state.target_id)
    target = deps.target(config)
    deps.ledger.set_target(state.user, state.rotation_id, state.target_id, provider=config.provider,
                           status="switching")
    # A refusal (TargetPushFailed) goes to GraduateRollback, which restores whatever the CI accepted.
    target.set_variables({ROLE_ARN_VARIABLE: state.role_arn})
    target.delete_variables(state.key_variables)
    now = clock.iso(clock.now())
    # pushed_at is when the target stopped holding the key: DrainCheck measures later uses of it from here.
    deps.ledger.set_target(state.user, state.rotation_id, state.target_id, status="switched",
                           switched_at=now, pushed_at=now, role_arn=state.role_arn)
    logger.info("target switched to OIDC", extra={"graduation_id": state.rotation_id,
                                                  "target_id": state.target_id, "role_arn": state.role_arn})
    return state.out()
