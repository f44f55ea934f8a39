"""Issue 15's audit depth on the embedded AWS: a graduated role deleted by hand, and the OIDC provider graduated
roles trust changed by hand, go IAM → CloudTrail → the real EventBridge pattern → the audit Lambda (its own
least-privilege identity: GetRole answers NoSuchEntity for the deleted role, the ledger still knows it) → SNS.
Graduation's own, announced provider calls stay quiet."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.deps import get_deps
from chalicelib.federation import GRADUATED_ROLE_PATH
from chalicelib.workflow import graduate_ensure_provider
from local.runtime import LocalRuntime
from local.world import World

GRADUATED = "self-protection.graduated-role-changed"
PROVIDER = "self-protection.graduated-provider-changed"
IDENTITY_PROVIDER = "persistence.identity-provider"


@pytest.fixture
def audited(clean_world: World, runtime: LocalRuntime, user: str) -> Iterator[LocalRuntime]:
    """`user`: the world writes the rotation config (which the audit Lambda loads) with it as a managed user."""
    runtime.enable_audit()
    runtime.bus.drain()
    yield runtime
    runtime.bus.drain()
    runtime.disable_audit()


def findings_for(runtime: LocalRuntime, text: str, since: int) -> list[dict[str, Any]]:
    runtime.bus.drain()
    return [a for a in runtime.alerts()[since:] if text in a["message"].get("summary", "")]


def record_graduation(user: str, gid: str, role: str, account: str, provider_arn: str, audience: str) -> str:
    """What GraduatePlan, EnsureRole and GraduateRecord write to the ledger for a graduated target."""
    role_arn = f"arn:aws:iam::{account}:role{GRADUATED_ROLE_PATH}{role}"
    ledger = get_deps().ledger
    ledger.start_rotation(user, gid, {"kind": "graduation", "reason": "graduation", "phase": "graduating",
                                      "target_id": f"t-{gid}", "role_arn": role_arn,
                                      "plan": {"role_name": role, "role_arn": role_arn, "provider_arn": provider_arn,
                                               "audience": audience}})
    ledger.update_rotation(user, gid, role_created_by_us=True, phase="graduated")
    ledger.set_graduation(user, f"t-{gid}", role_arn=role_arn, graduation_id=gid, issuer="https://example.invalid")
    return role_arn


def test_a_graduated_role_deleted_by_hand_is_high(audited: LocalRuntime, user: str) -> None:
    runtime, suffix = audited, uuid.uuid4().hex[:8]
    iam = runtime.client("iam")
    account = str(runtime.client("sts").get_caller_identity()["Account"])
    role, plain = f"{user}-grad-{suffix}", f"{user}-plain-{suffix}"
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName=role, Path=GRADUATED_ROLE_PATH, AssumeRolePolicyDocument=trust)
    iam.create_role(RoleName=plain, AssumeRolePolicyDocument=trust)
    gid = f"grad-{suffix}"
    record_graduation(user, gid, role, account, f"arn:aws:iam::{account}:oidc-provider/none-{suffix}.invalid", "aud")
    try:
        runtime.bus.drain()  # CreateRole's own findings first
        since = len(runtime.alerts())
        iam.delete_role(RoleName=role)
        iam.delete_role(RoleName=plain)
        (alert,) = [a for a in findings_for(runtime, role, since) if a["message"]["detection"] == GRADUATED]
        assert alert["severity"] == "HIGH"
        assert f"iam:DeleteRole on graduated role {GRADUATED_ROLE_PATH}{role}" in alert["message"]["summary"]
        assert all(a["message"]["detection"] != GRADUATED for a in findings_for(runtime, plain, since)), \
            "a role the ledger does not know is not a graduated one"
    finally:
        get_deps().ledger.clear_graduation(user, f"t-{gid}")


def test_the_provider_of_graduated_roles_changed_by_hand_is_high_and_graduation_s_own_calls_are_quiet(
        audited: LocalRuntime, user: str) -> None:
    """A provider of its own (not the shared GitHub one other tests federate through): EnsureOidcProvider creates
    it and adds a second audience, announced; then someone deletes it."""
    runtime, suffix = audited, uuid.uuid4().hex[:8]
    account = str(runtime.client("sts").get_caller_identity()["Account"])
    host = f"oidc-{suffix}.example.invalid"
    provider_arn = f"arn:aws:iam::{account}:oidc-provider/{host}"
    gid, role = f"grad-{suffix}", f"{user}-grad-{suffix}"
    record_graduation(user, gid, role, account, provider_arn, "sts.amazonaws.com")
    state = {"user": user, "rotation_id": gid, "target_id": f"t-{gid}", "provider": "github", "key_id": "AKIA0",
             "issuer": f"https://{host}", "audience": "sts.amazonaws.com", "provider_arn": provider_arn,
             "role_name": role, "role_arn": f"arn:aws:iam::{account}:role{GRADUATED_ROLE_PATH}{role}"}
    try:
        runtime.bus.drain()  # CreateRole's own findings first
        since = len(runtime.alerts())
        with aws.acting_as(runtime.identity_of("graduate_ensure_provider")):
            graduate_ensure_provider.run(state, get_deps())
            graduate_ensure_provider.run({**state, "audience": f"aud-{suffix}"}, get_deps())
        runtime.bus.drain()
        assert [a for a in runtime.alerts()[since:] if a["message"]["detection"] in (PROVIDER, IDENTITY_PROVIDER)] \
            == [], "graduation's own calls, announced"
        delivered = {e["detail"]["eventName"] for name, e in runtime.bus.delivered if name == "audit"
                     and host in json.dumps(e["detail"].get("requestParameters") or {})}
        assert {"CreateOpenIDConnectProvider", "AddClientIDToOpenIDConnectProvider"} <= delivered, delivered

        runtime.client("iam").delete_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
        (alert,) = findings_for(runtime, host, since)
        assert alert["severity"] == "HIGH" and alert["message"]["detection"] == PROVIDER
        assert "every graduated pipeline of that issuer fails to assume its role" in alert["message"]["summary"]
    finally:
        get_deps().ledger.clear_graduation(user, f"t-{gid}")
