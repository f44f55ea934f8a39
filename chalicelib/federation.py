"""What OIDC federation looks like for each CI provider: issuer, audience, ``sub`` and the trust policy.

Pure functions over a target's config, shared by the graduation workflow (which creates the IAM OIDC provider
and the role), the operator's ``plan`` (which says why a target cannot graduate) and the audit (which rates a
trust policy whose ``sub`` condition is missing or spans repositories). The claim formats are the providers'
own (docs/oidc.md cites each):

- GitHub Actions: issuer ``https://token.actions.githubusercontent.com``, audience ``sts.amazonaws.com``,
  ``sub`` ``repo:<owner>/<repo>:ref:refs/heads/<branch>`` or ``repo:<owner>/<repo>:environment:<name>``.
- GitLab CI/CD: issuer the instance URL (``https://gitlab.com``), audience chosen in ``id_tokens`` (the
  instance URL by convention), ``sub`` ``project_path:<group>/<project>:ref_type:branch:ref:<branch>``.
- CircleCI: issuer ``https://oidc.circleci.com/org/<org-id>``, audience the org id, ``sub``
  ``org/<org-id>/project/<project-id>/user/<user-id>``: the user part varies per build, so the trust pins
  org and project and leaves only ``user/*`` open.
- Bitbucket Pipelines: issuer ``https://api.bitbucket.org/2.0/workspaces/<workspace>/pipelines-config/
  identity/oidc``, audience ``ari:cloud:bitbucket::workspace/<workspace-uuid>``, ``sub``
  ``{<repository-uuid>}:{<step-uuid>}``: the step part varies per build, so only ``:{*}`` is left open.
- Travis CI and the others issue no OIDC token: such a target stays on keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: IAM path of every role graduation creates: the audit rates a change to a role under it HIGH, and the
#: rotator's IAM grants on roles are scoped to it.
GRADUATED_ROLE_PATH = "/ci-key-rotator/graduated/"


def role_intent_subject(role_name: str) -> str:
    """The ledger intent key under which the workflow announces an IAM call on a role it manages
    (``ledger.record_intent(role_intent_subject(name), rid, "UpdateAssumeRolePolicy", None)``): the audit finds
    the call announced and stays quiet. IAM user names cannot contain "/", so it never meets a user's intents."""
    return f"role/{role_name}"


def provider_intent_subject(provider: str) -> str:
    """The same for an IAM OIDC provider: ``provider`` is an ARN or its part after ``oidc-provider/`` (the
    issuer's host and path, which is what the audit reads from the event)."""
    return f"oidc-provider/{provider.split(':oidc-provider/', 1)[-1]}"


#: The CI variable the OIDC verification templates read the role to assume from.
ROLE_ARN_VARIABLE = "AWS_ROLE_ARN"
_UUID_BRACED = r"^\{[0-9a-fA-F-]{36}\}$"


class OidcSettings(BaseModel):
    """A target's ``oidc:`` block: what graduation needs that the target's key config does not say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Name of the role the pipeline will assume (created under GRADUATED_ROLE_PATH); default from the ids.
    role_name: str | None = Field(None, pattern=r"^[\w+=,.@-]{1,64}$")
    #: Self-hosted GitLab: the issuer URL when it is not the API URL's origin.
    issuer: str | None = Field(None, pattern=r"^https://[^\s/]+(/[^\s]*)?$")
    #: Overrides the provider's usual audience (GitLab: what the pipeline's ``id_tokens`` asks for).
    audience: str | None = Field(None, min_length=1, max_length=255)
    #: CircleCI projects on a ``gh/``/``bb/`` slug: the org and project ids (Project Settings > Overview).
    organization_id: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{36}$")
    project_id: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{36}$")
    #: Bitbucket: the workspace and repository UUIDs, braces included (Repository settings > OpenID Connect).
    workspace_uuid: str | None = Field(None, pattern=_UUID_BRACED)
    repository_uuid: str | None = Field(None, pattern=_UUID_BRACED)


@dataclass(frozen=True)
class Federation:
    """How one target's pipeline federates: the facts its trust policy is made of."""

    provider: str
    #: https URL without a trailing slash; the IAM OIDC provider's URL.
    issuer: str
    audience: str
    #: The exact ``sub``, or a pattern whose only wildcard is the per-build part the provider puts last.
    subject: str
    subject_operator: Literal["StringEquals", "StringLike"]

    @property
    def condition_prefix(self) -> str:
        """IAM's condition-key prefix for this issuer: the URL without its scheme."""
        return issuer_host(self.issuer)

    def provider_arn(self, account_id: str, partition: str = "aws") -> str:
        return f"arn:{partition}:iam::{account_id}:oidc-provider/{self.condition_prefix}"

    def trust_policy(self, provider_arn: str) -> dict[str, Any]:
        """Admits exactly this pipeline: the issuer's tokens, for this audience, with this ``sub``."""
        conditions: dict[str, dict[str, str]] = {
            "StringEquals": {f"{self.condition_prefix}:aud": self.audience},
        }
        conditions.setdefault(self.subject_operator, {})[f"{self.condition_prefix}:sub"] = self.subject
        return {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": conditions,
            }],
        }


@dataclass(frozen=True)
class Blocked:
    """Why a target cannot graduate, in words an operator can act on."""

    reason: str


def issuer_host(issuer: str) -> str:
    return re.sub(r"^https://", "", issuer).rstrip("/")


def federation_for(target: Any) -> Federation | Blocked:
    """The federation facts of ``target`` (a TargetConfig), or why it cannot federate."""
    settings: OidcSettings = getattr(target, "oidc", None) or OidcSettings()
    provider = target.provider
    if provider == "github":
        return _github(target, settings)
    if provider == "gitlab":
        return _gitlab(target, settings)
    if provider == "circleci":
        return _circleci(target, settings)
    if provider == "bitbucket":
        return _bitbucket(target, settings)
    if provider == "azure_devops":
        # Its OIDC tokens belong to an AWS service connection (AWS Toolkit for Azure DevOps), not to the
        # pipeline's own steps, so pushing a role ARN to a variable group cannot switch it over.
        return Blocked("Azure Pipelines federates through an AWS service connection with OIDC (AWS Toolkit for "
                       "Azure DevOps), which this tool does not create: switch it by hand "
                       "(docs/ci-providers/azure_devops.md), then remove the target")
    return Blocked(f"{provider} issues no OIDC ID token to its builds: this target stays on access keys")


def _github(t: Any, s: OidcSettings) -> Federation | Blocked:
    if t.scope == "organization":
        return Blocked("an organization secret is shared by several repositories: graduate each repository's "
                       "own target instead")
    if t.api_url.rstrip("/") != "https://api.github.com" and not t.api_url.startswith("http://"):
        if s.issuer is None:
            return Blocked("GitHub Enterprise Server issues tokens from its own host: set oidc.issuer")
    issuer = s.issuer or "https://token.actions.githubusercontent.com"
    if t.scope == "environment":
        subject = f"repo:{t.repository}:environment:{t.environment}"
    else:
        subject = f"repo:{t.repository}:ref:refs/heads/{t.ref}"
    return Federation("github", issuer, s.audience or "sts.amazonaws.com", subject, "StringEquals")


def _gitlab(t: Any, s: OidcSettings) -> Federation | Blocked:
    if t.scope == "group":
        return Blocked("a group variable is shared by the group's projects: graduate each project's own target")
    issuer = s.issuer or _origin(t.api_url)
    if not issuer.startswith("https://"):
        issuer = "https://gitlab.com" if s.issuer is None else s.issuer
    subject = f"project_path:{t.project}:ref_type:branch:ref:{t.ref}"
    return Federation("gitlab", issuer, s.audience or issuer, subject, "StringEquals")


def _circleci(t: Any, s: OidcSettings) -> Federation | Blocked:
    if t.scope == "context":
        return Blocked("a context is shared by the organisation's projects: graduate each project's own target")
    parts = t.project_slug.split("/")
    org, project = s.organization_id, s.project_id
    if parts[0] == "circleci" and len(parts) == 3:
        org, project = org or parts[1], project or parts[2]
    if not org or not project:
        return Blocked("CircleCI's token names the project by id: set oidc.organization_id and oidc.project_id")
    return Federation("circleci", f"https://oidc.circleci.com/org/{org}", s.audience or org,
                      f"org/{org}/project/{project}/user/*", "StringLike")


def _bitbucket(t: Any, s: OidcSettings) -> Federation | Blocked:
    if t.scope == "workspace":
        return Blocked("a workspace variable is shared by the workspace's repositories: graduate each "
                       "repository's own target")
    if not s.workspace_uuid or not s.repository_uuid:
        return Blocked("Bitbucket's token names the workspace and repository by UUID: set oidc.workspace_uuid "
                       "and oidc.repository_uuid")
    issuer = f"https://api.bitbucket.org/2.0/workspaces/{t.workspace}/pipelines-config/identity/oidc"
    audience = s.audience or f"ari:cloud:bitbucket::workspace/{s.workspace_uuid.strip('{}')}"
    return Federation("bitbucket", issuer, audience, f"{s.repository_uuid}:*", "StringLike")


def _origin(api_url: str) -> str:
    match = re.match(r"^(https?://[^/]+)", api_url)
    return match.group(1) if match else api_url


#: For each issuer family, the literal ``sub`` prefix that names one repository/project; a wildcard before
#: its end admits other repositories (the audit's CRITICAL).
_REPOSITORY_PREFIX: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (re.compile(r"^token\.actions\.githubusercontent\.com(/.*)?$"), re.compile(r"^repo:[^:*?]+/[^:*?]+:")),
    (re.compile(r"^oidc\.circleci\.com/org/"), re.compile(r"^org/[^/*?]+/project/[^/*?]+/")),
    (re.compile(r"^api\.bitbucket\.org/2\.0/workspaces/"), re.compile(r"^\{[^}*?]+\}")),
)
_GENERIC_PREFIX = re.compile(r"^project_path:[^:*?]+/[^:*?]+:")


def sub_spans_repositories(issuer: str, sub: str) -> bool:
    """True when a ``sub`` condition value admits tokens of more than one repository/project: a wildcard
    (``*``/``?``) before the part that names the repository ends. Unknown issuers are judged by GitLab's
    format (self-hosted GitLab is the common unknown) and, failing that, any wildcard counts."""
    if "*" not in sub and "?" not in sub:
        return False
    host = issuer_host(issuer)
    for issuer_pattern, prefix in _REPOSITORY_PREFIX:
        if issuer_pattern.match(host):
            return not prefix.match(sub)
    if sub.startswith("project_path:"):
        return not _GENERIC_PREFIX.match(sub)
    return True
