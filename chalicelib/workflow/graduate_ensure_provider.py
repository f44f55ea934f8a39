"""EnsureOidcProvider: the account's IAM OIDC identity provider for the target's issuer, with its audience.

Created when missing; when it exists without the target's audience, the audience is added as a client id.
Nothing is ever removed from a provider: other roles (other targets, other teams) may trust it, and a
provider that no role trusts grants nothing (IAM: https://docs.aws.amazon.com/IAM/latest/UserGuide/
id_roles_providers_create_oidc.html). No thumbprint is sent: IAM secures the connection to the issuer's
JWKS with its own trusted root CAs for the common issuers and derives it otherwise
(https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateOpenIDConnectProvider.html).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import client, error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.federation import provider_intent_subject
from chalicelib.observability import logger
from chalicelib.workflow.graduate_state import GraduationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    iam = client("iam")
    created = False
    try:
        provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=state.provider_arn)
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            reraise_transient(exc)
            raise
        provider = None
    if provider is None:
        try:
            announce(deps, state, "CreateOpenIDConnectProvider")
            iam.create_open_id_connect_provider(Url=state.issuer, ClientIDList=[state.audience])
            created = True
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":  # a concurrent graduation of the same issuer won
                reraise_transient(exc)
                raise
            provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=state.provider_arn)
    if provider is not None and state.audience not in provider.get("ClientIDList", []):
        announce(deps, state, "AddClientIDToOpenIDConnectProvider")
        iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=state.provider_arn,
                                                      ClientID=state.audience)
    deps.ledger.update_rotation(state.user, state.rotation_id, phase="provider-ready",
                                **({"provider_created": True} if created else {}))
    logger.info("OIDC provider ready", extra={"graduation_id": state.rotation_id,
                                              "provider_arn": state.provider_arn, "provider_created": created})
    return state.out()


def announce(deps: Deps, state: GraduationState, action: str) -> None:
    """Tell the audit, before the call, that the workflow makes it: a change to a provider graduated roles
    trust by anyone else (or unannounced) is HIGH (chalicelib/audit/detections/oidc_trust.py)."""
    deps.ledger.record_intent(provider_intent_subject(state.provider_arn), state.rotation_id, action, None)
