"""The per-function IAM policies, checked against the code, one source of truth for every stage.

``.chalice/policy-<function>.json`` is a template: every Resource names the stage as ``${Stage}``
(``naming.STAGE_TOKEN``). ``for_stage(function, stage)`` renders it; ``write_stage(stage)`` writes the
rendered files Chalice deploys (``.chalice/stages/<stage>/policy-<function>.json``, named per function
in ``.chalice/config.json``), and the local runtime signs each function's calls with the same rendering
for its stage ``local``. Two stages in one account therefore cannot reach each other's resources.

``check(function)`` lists every problem with one function's policy file; the least-privilege test runs it
for every Chalice function and ``python -m deploy policies`` prints it. A policy must:

- use no wildcard action, no ``iam:*``-like grant, nothing that writes IAM policies or passes roles;
- put ``"Resource": "*"`` only on actions that have no resource type (X-Ray, the credential report);
- scope IAM key actions to the stage's managed users' path, the escrow to the stage's prefix, every
  other Secrets Manager and SSM resource to the stage's reference prefix, and put the stage in every
  other Resource but ``*``;
- grant every AWS call the function's code makes (``deploy.analysis``), on the resource it makes it on;
- grant nothing the code does not call (each action × resource pattern is justified by a call), so the
  escrow is readable only by functions that read it and ``states:SendTask*`` only by the functions that
  resolve verifications.

``render(function)`` writes the policy the code needs (``python -m deploy policies --write``): a starting
point for a new function; the committed files are reviewed like code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import error_code
from deploy import analysis, naming

CHALICE_DIR = analysis.ROOT / ".chalice"
#: Where the rendered per-stage files go (Chalice reads ``iam_policy_file`` relative to ``.chalice/``).
STAGES_DIR = CHALICE_DIR / "stages"

#: Every function may write its logs and traces.
BASELINE_STATEMENTS: list[dict[str, Any]] = [
    {"Sid": "Logs", "Effect": "Allow",
     "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": naming.TEMPLATE.log_group_pattern},
    {"Sid": "Traces", "Effect": "Allow",
     "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "Resource": "*"},
]
#: Actions AWS does not scope to any resource type: the only ones allowed ``"Resource": "*"``.
NO_RESOURCE_TYPE = frozenset({
    "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    "iam:GenerateCredentialReport", "iam:GetCredentialReport",
    # The Service Authorization Reference lists no resource type for the task-token calls: a Resource naming
    # the state machine never matches, so the grant must be "*". The token is the capability; the ledger keeps
    # it encrypted with the stage's key, so another stage's functions never hold one of this stage's tokens.
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html
    "states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat",
    # CloudTrail's event history has no resource type either: the exposure handler reads the leaked key's
    # recent calls with it. https://docs.aws.amazon.com/service-authorization/latest/reference/list_awscloudtrail.html
    "cloudtrail:LookupEvents",
})
#: Never granted to a Lambda, whatever the code says.
FORBIDDEN = re.compile(
    r"^(iam:(Put|Attach|Detach|Delete)\w*Policy\w*|iam:CreatePolicy\w*|iam:PassRole|iam:Create(User|Role|LoginProfile)"
    r"|iam:UpdateAssumeRolePolicy|iam:\w*Permissions?Boundary|sts:AssumeRole\w*|kms:\w*Grant\w*|\w+:\*)$",
    re.IGNORECASE,
)
#: The only grants broader than the managed path, each with its reason.
IAM_EXCEPTIONS = {
    ("exposure", "iam:GetAccessKeyLastUsed"): (
        "arn:aws:iam::*:user/*",
        "read-only; names the owner of a leaked key that is not managed, for the CRITICAL page",
    ),
    ("audit", "iam:GetRole"): (
        "arn:aws:iam::*:role/*",
        "read-only; a role-change event names only the role: its path tells a graduated role (HIGH) from others",
    ),
}
#: FORBIDDEN actions granted anyway, to exactly one function each, with the reason. Containing a leaked key
#: needs an inline policy on the leaked key's user: AWS documents no other way to revoke the sessions minted
#: from it (a Deny on aws:TokenIssueTime,
#: https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html).
#: Both stay on the stage's managed users (the ManagedUserKeys pattern), and the code names one policy
#: (chalicelib.workflow.session_revocation.POLICY_NAME), a Deny that can only take permissions away.
FORBIDDEN_EXCEPTIONS = {
    ("revoke_sessions", "iam:PutUserPolicy"): "puts the Deny that revokes the leaked key's sessions",
    ("lift_session_revocation", "iam:DeleteUserPolicy"): "removes that Deny once every such session expired",
    # Graduation (issue 15) makes the role a pipeline assumes instead of holding a key: only roles under
    # GRADUATED_ROLE_PATTERN, trusting one OIDC provider with an exact sub, with the permissions the user
    # already had (chalicelib/workflow/graduate_ensure_role.py); no iam:PassRole, so no Lambda can use them.
    ("graduate_ensure_role", "iam:CreateRole"): "creates the graduated role (its path is the only one granted)",
    ("graduate_ensure_role", "iam:UpdateAssumeRolePolicy"): "re-pins the trust of a graduated role it tagged",
    ("graduate_ensure_role", "iam:PutRolePolicy"): "copies the user's inline policies to the graduated role",
    ("graduate_ensure_role", "iam:AttachRolePolicy"): "attaches the user's managed policies to the graduated role",
    ("graduate_rollback", "iam:DeleteRolePolicy"): "empties the graduated role it created before deleting it",
    ("graduate_rollback", "iam:DetachRolePolicy"): "empties the graduated role it created before deleting it",
}
#: Graduated roles (chalicelib/federation.GRADUATED_ROLE_PATH) and the account's IAM OIDC providers: neither
#: ARN can name the stage (a role path is the audit's contract, a provider ARN is its issuer's host), so
#: they are the two IAM grants besides the managed users; the code tells its own roles by their tags.
GRADUATED_ROLE_PATTERN = "arn:aws:iam::*:role/ci-key-rotator/graduated/*"
OIDC_PROVIDER_PATTERN = "arn:aws:iam::*:oidc-provider/*"
UNSTAGED_IAM_PATTERNS = (GRADUATED_ROLE_PATTERN, OIDC_PROVIDER_PATTERN)
#: Their kinds: shared by the account's stages (tests/deploy/test_policies.py knows it).
UNSTAGED_KINDS = frozenset({"graduated-role", "oidc-provider"})
#: Functions that resolve parked verifications (the webhook route and the poller).
SEND_TASK_FUNCTIONS = frozenset({"api_handler", "poller"})

ACCOUNT, REGION, STAGE = "123456789012", "us-east-1", "prod"


def policy_path(function: str) -> Path:
    """The template (``${Stage}`` in every Resource)."""
    return CHALICE_DIR / f"policy-{function}.json"


def stage_policy_path(function: str, stage: str) -> Path:
    return STAGES_DIR / stage / f"policy-{function}.json"


def stage_policy_file(function: str, stage: str) -> str:
    """What ``.chalice/config.json`` names as the function's ``iam_policy_file`` in ``stage``."""
    return stage_policy_path(function, stage).relative_to(CHALICE_DIR).as_posix()


def template(function: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(policy_path(function).read_text())
    return document


def render_stage(document: dict[str, Any], stage: str) -> dict[str, Any]:
    """A template with the stage in every place it names ``${Stage}``."""
    naming.StageNames(stage)  # refuses a stage name that would make the patterns ambiguous
    rendered: dict[str, Any] = json.loads(json.dumps(document).replace(naming.STAGE_TOKEN, stage))
    return rendered


def for_stage(function: str, stage: str) -> dict[str, Any]:
    return render_stage(template(function), stage)


def load(function: str, stage: str | None = None) -> dict[str, Any]:
    """The function's policy as deployed to ``stage`` (default: the example stage ``prod``)."""
    return for_stage(function, stage or STAGE)


def write_stage(stage: str, chalice_dir: Path | None = None) -> list[Path]:
    """Render every template for ``stage`` into ``chalice_dir`` (default ``.chalice/``): ``deploy prepare``
    does it before ``chalice deploy``."""
    written = []
    for function in functions():
        path = (chalice_dir or CHALICE_DIR) / stage_policy_file(function, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(for_stage(function, stage), indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


# -- what a call touches ------------------------------------------------------------------------------


def family(action: str, origin: str) -> str:
    """Which kind of resource ``action`` made in the function ``origin`` touches."""
    service, _, name = action.partition(":")
    if service == "secretsmanager":
        return "escrow" if origin.startswith("chalicelib.keys.") else "reference-secret"
    if service == "ssm":
        return "config" if origin.startswith("chalicelib.config.") else "reference-parameter"
    if service == "iam":
        if action in NO_RESOURCE_TYPE:
            return "account"
        if "OpenIDConnectProvider" in name:
            return "oidc-provider"
        return "graduated-role" if "Role" in name else "managed-user"
    if service == "states":
        if action in NO_RESOURCE_TYPE:
            return "account"
        # StopExecution acts on an execution, as DescribeExecution does (Service Authorization Reference:
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html).
        return "execution" if name in ("DescribeExecution", "StopExecution") else "state-machine"
    return {"dynamodb": "table", "sns": "topic", "kms": "escrow-key", "cloudtrail": "event-history"}.get(service, "unknown")


def example_arn(kind: str, stage: str | None = None) -> str:
    """A realistic ARN of that kind in a deployment (stage ``prod``), to evaluate a policy against."""
    names = naming.StageNames(stage or STAGE)
    a, r = ACCOUNT, REGION
    return {
        "escrow": f"arn:aws:secretsmanager:{r}:{a}:secret:{names.escrow_prefix}/ci-deployer-AbCdEf",
        "reference-secret": f"arn:aws:secretsmanager:{r}:{a}:secret:{names.slack_webhook_secret}-AbCdEf",
        "config": f"arn:aws:ssm:{r}:{a}:parameter{names.config_parameter}",
        "reference-parameter": f"arn:aws:ssm:{r}:{a}:parameter{names.parameter_reference_prefix}github-token",
        "managed-user": f"arn:aws:iam::{a}:user{names.managed_path}ci-deployer",
        "graduated-role": f"arn:aws:iam::{a}:role/ci-key-rotator/graduated/ci-deployer-acme-web-app",
        "oidc-provider": f"arn:aws:iam::{a}:oidc-provider/token.actions.githubusercontent.com",
        "account": "*",
        "event-history": "*",
        "table": f"arn:aws:dynamodb:{r}:{a}:table/{names.table}",
        "topic": f"arn:aws:sns:{r}:{a}:{names.topic}",
        "state-machine": f"arn:aws:states:{r}:{a}:stateMachine:{names.state_machine}",
        "execution": f"arn:aws:states:{r}:{a}:execution:{names.state_machine}:ci-deployer-sched-20250101T00",
        "escrow-key": f"arn:aws:kms:{r}:{a}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    }[kind]


#: KMS keys are granted on any key ARN, narrowed to the stage's escrow key by its alias (``kms_condition``):
#: an alias ARN is no Resource for Encrypt/Decrypt.
#: https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-resource-aliases
KMS_KEY_PATTERN = "arn:aws:kms:*:*:key/*"


def kms_condition(names: naming.StageNames) -> dict[str, Any]:
    return {"ForAnyValue:StringEquals": {"kms:ResourceAliases": names.kms_alias}}


def patterns(names: naming.StageNames) -> dict[str, str]:
    """The resource pattern each kind is granted on in that stage (``naming.TEMPLATE``: the templates')."""
    return {
        "escrow": names.escrow_pattern,
        "reference-secret": names.reference_secret_pattern,
        "config": names.parameter_pattern,
        "reference-parameter": names.parameter_pattern,
        "managed-user": names.managed_users_pattern,
        "graduated-role": GRADUATED_ROLE_PATTERN,
        "oidc-provider": OIDC_PROVIDER_PATTERN,
        "account": "*",
        "event-history": "*",
        "table": names.table_pattern,
        "topic": names.topic_pattern,
        "state-machine": names.state_machine_pattern,
        "execution": names.execution_pattern,
        # A key ARN carries no name: the stage is in the statement's kms:ResourceAliases condition.
        "escrow-key": KMS_KEY_PATTERN,
    }


#: What ``render`` writes into the templates.
PATTERNS = patterns(naming.TEMPLATE)
_SIDS = {
    "escrow": "Escrow", "reference-secret": "ReferencedSecrets", "config": "ConfigAndParameters",
    "reference-parameter": "ConfigAndParameters", "managed-user": "ManagedUserKeys",
    "graduated-role": "GraduatedRoles", "oidc-provider": "OidcProviders", "account": "CredentialReport", "event-history": "EventHistory",
    "table": "Ledger", "topic": "Outcomes", "state-machine": "StateMachine", "execution": "Executions",
    "escrow-key": "TaskTokenKey",
}


@dataclass(frozen=True)
class Need:
    action: str
    kind: str
    via: tuple[str, ...]  # handler → ... → the function that makes the call


def needs(function: str, reach: analysis.Reach | None = None) -> list[Need]:
    """Every (action, kind of resource) the function's code calls."""
    reach = reach or analysis.function_actions()[function]
    found: dict[tuple[str, str], Need] = {}
    for action, origins in sorted(reach.origins.items()):
        for origin in sorted(origins):
            kind = family(action, origin)
            found.setdefault((action, kind), Need(action, kind, tuple(reach.chain(origin))))
    return list(found.values())


def pattern_for(function: str, need: Need) -> str:
    special = IAM_EXCEPTIONS.get((function, need.action))
    return special[0] if special else PATTERNS[need.kind]


# -- evaluating a policy ---------------------------------------------------------------------------


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    regex = "^" + ".*".join(".".join(re.escape(p) for p in part.split("?")) for part in pattern.split("*")) + "$"
    return re.match(regex, value, 0 if case else re.IGNORECASE) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Identity-policy evaluation without conditions: an Allow matches and no Deny does."""
    allowed = False
    for statement in _as_list(policy.get("Statement", [])):
        if not any(_glob(a, action, case=False) for a in _as_list(statement.get("Action", []))):
            continue
        if not any(_glob(r, resource) or r == resource for r in _as_list(statement.get("Resource", []))):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = True
    return allowed


def grants(policy: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(action, resource pattern, statement) for every Allow."""
    for statement in _as_list(policy.get("Statement", [])):
        if statement.get("Effect") != "Allow":
            continue
        for action in _as_list(statement.get("Action", [])):
            for resource in _as_list(statement.get("Resource", [])):
                yield action, resource, statement


# -- the check ---------------------------------------------------------------------------------------


def check(function: str, reach: analysis.Reach | None = None, policy: dict[str, Any] | None = None,
          stage: str | None = None) -> list[str]:
    """Every problem with ``.chalice/policy-<function>.json`` rendered for ``stage`` (default ``prod``), or
    with ``policy`` (already rendered for it); empty when it is least privilege."""
    stage = stage or STAGE
    names = naming.StageNames(stage)
    path = policy_path(function)
    if policy is None:
        if not path.exists():
            return [f"{path.name}: missing (every Chalice function needs its own policy file)"]
        try:
            policy = load(function, stage)
        except ValueError as exc:
            return [f"{path.name}: not JSON: {exc}"]
    problems: list[str] = []
    where = path.name
    if policy.get("Version") != "2012-10-17":
        problems.append(f"{where}: Version must be 2012-10-17")
    for statement in _as_list(policy.get("Statement", [])):
        for key in ("NotAction", "NotResource", "NotPrincipal"):
            if key in statement:
                problems.append(f"{where}: {statement.get('Sid', '?')}: {key} is not allowed (it grants by omission)")
    for action, resource, statement in grants(policy):
        sid = statement.get("Sid", "?")
        if "*" in action or "?" in action:
            problems.append(f"{where}: {sid}: wildcard action {action!r}")
        if FORBIDDEN.match(action) and (function, action) not in FORBIDDEN_EXCEPTIONS:
            problems.append(f"{where}: {sid}: {action} is never granted to a Lambda")
        if resource == "*" and action not in NO_RESOURCE_TYPE:
            problems.append(f"{where}: {sid}: {action} on Resource '*' (scope it to a resource pattern)")
        service = action.split(":")[0].lower()
        exception = IAM_EXCEPTIONS.get((function, action), (None, ""))[0]
        if resource == KMS_KEY_PATTERN and statement.get("Condition") != kms_condition(names):
            problems.append(f"{where}: {sid}: {action} on {resource} needs the condition {kms_condition(names)}")
        elif resource not in ("*", exception, KMS_KEY_PATTERN, *UNSTAGED_IAM_PATTERNS) and names.prefix not in resource \
                and f"/{stage}/" not in resource:
            problems.append(f"{where}: {sid}: {action} on {resource}: every Resource names the stage "
                            f"({stage!r}), or another stage in the account could be reached")
        if service == "iam" and action not in NO_RESOURCE_TYPE:
            if resource not in (names.managed_users_pattern, exception, *UNSTAGED_IAM_PATTERNS):
                problems.append(f"{where}: {sid}: {action} on {resource}: IAM key actions are scoped to "
                                f"{names.managed_users_pattern}")
        if service == "secretsmanager" and resource not in (names.escrow_pattern, names.reference_secret_pattern):
            problems.append(f"{where}: {sid}: {action} on {resource}: Secrets Manager access is scoped to "
                            f"{names.escrow_pattern} or {names.reference_secret_pattern}")
        if service == "ssm" and resource != names.parameter_pattern:
            problems.append(f"{where}: {sid}: {action} on {resource}: SSM access is scoped to {names.parameter_pattern}")
        if action.lower().startswith("states:sendtask") and function not in SEND_TASK_FUNCTIONS:
            problems.append(f"{where}: {sid}: {action}: only {sorted(SEND_TASK_FUNCTIONS)} resolve verifications")

    required = needs(function, reach)
    for need in required:
        arn = example_arn(need.kind, stage)
        if not allows(policy, need.action, arn):
            problems.append(f"{where}: the code calls {need.action} on the {need.kind} ({arn}) but the policy "
                            f"does not grant it; via {' -> '.join(need.via)}")
    baseline = {(a, r) for s in render_stage({"Statement": BASELINE_STATEMENTS}, stage)["Statement"]
                for a in _as_list(s["Action"]) for r in _as_list(s["Resource"])}
    for action, resource, statement in grants(policy):
        if (action, resource) in baseline:
            continue
        used = [n for n in required
                if n.action.lower() == action.lower() and _glob(resource, example_arn(n.kind, stage))]
        if not used:
            problems.append(f"{where}: {statement.get('Sid', '?')}: {action} on {resource} is granted but the "
                            "code never calls it there")
    for action, resource in sorted(baseline):
        if not allows(policy, action, resource if resource == "*" else example_log_stream(function, stage)):
            problems.append(f"{where}: missing the baseline grant {action} (logs and traces)")
    return problems


def example_log_stream(function: str, stage: str | None = None) -> str:
    group = f"/aws/lambda/{naming.StageNames(stage or STAGE).function(function)}"
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:2025/01/01/[$LATEST]abc"


# -- rendering -----------------------------------------------------------------------------------------


def render(function: str, reach: analysis.Reach | None = None) -> dict[str, Any]:
    """The least-privilege policy template the code of ``function`` needs."""
    statements: dict[str, dict[str, Any]] = {}
    for need in needs(function, reach):
        pattern = pattern_for(function, need)
        sid = "KeyOwnerLookup" if pattern != PATTERNS[need.kind] else _SIDS[need.kind]
        statement = statements.setdefault(sid, {"Sid": sid, "Effect": "Allow", "Action": [], "Resource": pattern})
        if pattern == KMS_KEY_PATTERN:
            statement["Condition"] = kms_condition(naming.TEMPLATE)
        if need.action not in statement["Action"]:
            statement["Action"].append(need.action)
    for statement in statements.values():
        statement["Action"] = sorted(statement["Action"])
    return {"Version": "2012-10-17",
            "Statement": [*BASELINE_STATEMENTS, *sorted(statements.values(), key=lambda s: s["Sid"])]}


def write_all() -> list[Path]:
    """Rewrite the templates from the code, then re-render every stage already rendered."""
    written = []
    for function, reach in analysis.function_actions().items():
        path = policy_path(function)
        path.write_text(json.dumps(render(function, reach), indent=2) + "\n")
        written.append(path)
    for stage_dir in sorted(STAGES_DIR.glob("*/")):
        written.extend(write_stage(stage_dir.name))
    return written


def functions() -> list[str]:
    return list(analysis.chalice_handlers())


def same_document(a: Any, b: Any) -> bool:
    """Two policy documents (or any JSON, as text or parsed) are equal regardless of key order and spacing."""
    def norm(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        return json.loads(json.dumps(value, sort_keys=True))

    return bool(norm(a) == norm(b))


def put_role_policy(iam: Any, role: str, name: str, document: dict[str, Any]) -> str | None:
    """Make the role's inline policy ``name`` exactly ``document``: "set" (it had none), "updated" (it differed)
    or None (already so: nothing written, so a second deploy changes nothing)."""
    try:
        current = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        current = None
    if current is not None and same_document(current, document):
        return None
    iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))
    return "updated" if current is not None else "set"
