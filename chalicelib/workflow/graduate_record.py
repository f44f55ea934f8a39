"""GraduateRecord: the verification build proved OIDC; record the target as graduated and decide whether
this graduation retires the key.

Proof of OIDC: the build passed (VerifyBuild, confirmed through the CI's status API) after SwitchTarget
removed the key variables, and it reported no access key; a build that reports having authenticated with an
access key (``used_key_sha256``: a variable of the same name elsewhere, an old workflow file) is refused
(``NotFederated``), and so is one that reports a role session other than ours; where the CI reports what a
build authenticated with (GitHub's check-run annotations, Bitbucket's step log), the OIDC report itself is required. Then the target holds no key: its
holding is dropped, and rotations leave it alone from now on. The key is retired (``retire``) once no
configured target of the user still holds it.
"""

from __future__ import annotations

from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.graduation import key_targets
from chalicelib.observability import logger
from chalicelib.targets.registry import provider
from chalicelib.workflow.graduate_state import GraduationState, NotFederated


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    user, gid, tid = state.user, state.rotation_id, state.target_id
    result = ((deps.ledger.rotation(user, gid) or {}).get("targets") or {}).get(tid, {})
    if result.get("verified") is not True:
        raise InterlockViolation(f"target {tid!r} has not passed a verification build on OIDC; not graduating it")
    if result.get("used_key_sha256"):
        raise NotFederated(f"the verification build of {tid!r} passed with an access key, not through OIDC: "
                           "a key variable elsewhere (environment, organization) or a workflow that still reads "
                           "the key. The key setup is restored")
    used_role = result.get("used_role") or None
    if used_role is None and provider(state.provider).reports_identity:
        raise NotFederated(f"the verification build of {tid!r} passed without reporting an OIDC role session "
                           "(the rotate-verify 'oidc role' notice): is the OIDC verification workflow in place?")
    if used_role is not None and f":assumed-role/{state.role_name}/" not in used_role:
        raise NotFederated(f"the verification build of {tid!r} authenticated as {used_role}, not as "
                           f"{state.role_arn}")
    now = clock.iso(clock.now())
    deps.ledger.set_graduation(user, tid, role_arn=state.role_arn, graduation_id=gid, graduated_at=now,
                               key_id=state.key_id, provider=state.provider, issuer=state.issuer)
    deps.ledger.drop_holding(user, tid)
    remaining = key_targets(deps, user)
    holders = {t: k for t, k in deps.ledger.holdings(user).items() if t in remaining}
    retire = not remaining and not holders and keys.key_status(user, state.key_id) is not None
    deps.ledger.update_rotation(user, gid, phase="graduated", graduated_at=now, retire=retire,
                                key_still_held_by=remaining)
    logger.info("target graduated", extra={"graduation_id": gid, "target_id": tid, "retire": retire,
                                           "key_still_held_by": remaining})
    return state.out(retire=retire, old_key_id=state.key_id if retire else None)
