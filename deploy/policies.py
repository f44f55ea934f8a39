"""The per-function IAM policies in ``.chalice/policy-<function>.json``, checked against the code.

``check(function)`` lists every problem with one function's policy file; the least-privilege test runs it
for every Chalice function and ``python -m deploy policies`` prints it. A policy must:

- use no wildcard action, no ``iam:*``-like grant, nothing that writes IAM policies or passes roles;
- put ``"Resource": "*"`` only on actions that have no resource type (X-Ray, the credential report);
- scope IAM key actions to the managed users' path, the escrow to its prefix, every other Secrets
  Manager and SSM resource to the app's reference prefix;
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

from deploy import analysis, naming

CHALICE_DIR = analysis.ROOT / ".chalice"

#: Every function may write its logs and traces.
BASELINE_STATEMENTS: list[dict[str, Any]] = [
    {"Sid": "Logs", "Effect": "Allow",
     "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": naming.LOG_GROUP_PATTERN},
    {"Sid": "Traces", "Effect": "Allow",
     "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "Resource": "*"},
]
#: Actions AWS does not scope to any resource type: the only ones allowed ``"Resource": "*"``.
NO_RESOURCE_TYPE = frozenset({
    "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    "iam:GenerateCredentialReport", "iam:GetCredentialReport",
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
}
#: Functions that resolve parked verifications (the webhook route and the poller).
SEND_TASK_FUNCTIONS = frozenset({"api_handler", "poller"})

ACCOUNT, REGION, STAGE = "123456789012", "us-east-1", "prod"


def policy_path(function: str) -> Path:
    return CHALICE_DIR / f"policy-{function}.json"


def load(function: str) -> dict[str, Any]:
    return json.loads(policy_path(function).read_text())


# -- what a call touches ------------------------------------------------------------------------------


def family(action: str, origin: str) -> str:
    """Which kind of resource ``action`` made in the function ``origin`` touches."""
    service, _, name = action.partition(":")
    if service == "secretsmanager":
        return "escrow" if origin.startswith("chalicelib.keys.") else "reference-secret"
    if service == "ssm":
        return "config" if origin.startswith("chalicelib.config.") else "reference-parameter"
    if service == "iam":
        return "account" if action in NO_RESOURCE_TYPE else "managed-user"
    if service == "states":
        return "execution" if name == "DescribeExecution" else "state-machine"
    return {"dynamodb": "table", "sns": "topic"}.get(service, "unknown")


def example_arn(kind: str) -> str:
    """A realistic ARN of that kind in a deployment (stage ``prod``), to evaluate a policy against."""
    names = naming.StageNames(STAGE)
    a, r = ACCOUNT, REGION
    return {
        "escrow": f"arn:aws:secretsmanager:{r}:{a}:secret:{names.escrow_prefix}/ci-deployer-AbCdEf",
        "reference-secret": f"arn:aws:secretsmanager:{r}:{a}:secret:{names.slack_webhook_secret}-AbCdEf",
        "config": f"arn:aws:ssm:{r}:{a}:parameter{names.config_parameter}",
        "reference-parameter": f"arn:aws:ssm:{r}:{a}:parameter/{naming.APP}/{STAGE}/github-token",
        "managed-user": f"arn:aws:iam::{a}:user{naming.MANAGED_PATH}ci-deployer",
        "account": "*",
        "table": f"arn:aws:dynamodb:{r}:{a}:table/{names.table}",
        "topic": f"arn:aws:sns:{r}:{a}:{names.topic}",
        "state-machine": f"arn:aws:states:{r}:{a}:stateMachine:{names.state_machine}",
        "execution": f"arn:aws:states:{r}:{a}:execution:{names.state_machine}:ci-deployer-sched-20250101T00",
    }[kind]


#: The resource pattern each kind is granted on (what ``render`` writes).
PATTERNS = {
    "escrow": naming.ESCROW_PATTERN,
    "reference-secret": naming.REFERENCE_SECRET_PATTERN,
    "config": naming.PARAMETER_PATTERN,
    "reference-parameter": naming.PARAMETER_PATTERN,
    "managed-user": naming.MANAGED_USERS_PATTERN,
    "account": "*",
    "table": naming.TABLE_PATTERN,
    "topic": naming.TOPIC_PATTERN,
    "state-machine": naming.STATE_MACHINE_PATTERN,
    "execution": naming.EXECUTION_PATTERN,
}
_SIDS = {
    "escrow": "Escrow", "reference-secret": "ReferencedSecrets", "config": "ConfigAndParameters",
    "reference-parameter": "ConfigAndParameters", "managed-user": "ManagedUserKeys", "account": "CredentialReport",
    "table": "Ledger", "topic": "Outcomes", "state-machine": "StateMachine", "execution": "Executions",
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


def check(function: str, reach: analysis.Reach | None = None, policy: dict[str, Any] | None = None) -> list[str]:
    """Every problem with ``.chalice/policy-<function>.json`` (or ``policy``); empty when it is least
    privilege."""
    path = policy_path(function)
    if policy is None:
        if not path.exists():
            return [f"{path.name}: missing (every Chalice function needs its own policy file)"]
        try:
            policy = load(function)
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
        if FORBIDDEN.match(action):
            problems.append(f"{where}: {sid}: {action} is never granted to a Lambda")
        if resource == "*" and action not in NO_RESOURCE_TYPE:
            problems.append(f"{where}: {sid}: {action} on Resource '*' (scope it to a resource pattern)")
        service = action.split(":")[0].lower()
        if service == "iam" and action not in NO_RESOURCE_TYPE:
            allowed = IAM_EXCEPTIONS.get((function, action), (naming.MANAGED_USERS_PATTERN, ""))[0]
            if resource not in (naming.MANAGED_USERS_PATTERN, allowed):
                problems.append(f"{where}: {sid}: {action} on {resource}: IAM key actions are scoped to "
                                f"{naming.MANAGED_USERS_PATTERN}")
        if service == "secretsmanager" and resource not in (naming.ESCROW_PATTERN, naming.REFERENCE_SECRET_PATTERN):
            problems.append(f"{where}: {sid}: {action} on {resource}: Secrets Manager access is scoped to "
                            f"{naming.ESCROW_PATTERN} or {naming.REFERENCE_SECRET_PATTERN}")
        if service == "ssm" and resource != naming.PARAMETER_PATTERN:
            problems.append(f"{where}: {sid}: {action} on {resource}: SSM access is scoped to {naming.PARAMETER_PATTERN}")
        if action.lower().startswith("states:sendtask") and function not in SEND_TASK_FUNCTIONS:
            problems.append(f"{where}: {sid}: {action}: only {sorted(SEND_TASK_FUNCTIONS)} resolve verifications")

    required = needs(function, reach)
    for need in required:
        arn = example_arn(need.kind)
        if not allows(policy, need.action, arn):
            problems.append(f"{where}: the code calls {need.action} on the {need.kind} ({arn}) but the policy "
                            f"does not grant it; via {' -> '.join(need.via)}")
    baseline = {(a, r) for s in BASELINE_STATEMENTS for a in _as_list(s["Action"]) for r in _as_list(s["Resource"])}
    for action, resource, statement in grants(policy):
        if (action, resource) in baseline:
            continue
        used = [n for n in required if n.action.lower() == action.lower() and _glob(resource, example_arn(n.kind))]
        if not used:
            problems.append(f"{where}: {statement.get('Sid', '?')}: {action} on {resource} is granted but the "
                            "code never calls it there")
    for action, resource in sorted(baseline):
        if not allows(policy, action, resource if resource == "*" else example_log_stream(function)):
            problems.append(f"{where}: missing the baseline grant {action} (logs and traces)")
    return problems


def example_log_stream(function: str) -> str:
    group = f"/aws/lambda/{naming.StageNames(STAGE).function(function)}"
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:2025/01/01/[$LATEST]abc"


# -- rendering -----------------------------------------------------------------------------------------


def render(function: str, reach: analysis.Reach | None = None) -> dict[str, Any]:
    """The least-privilege policy the code of ``function`` needs."""
    statements: dict[str, dict[str, Any]] = {}
    for need in needs(function, reach):
        pattern = pattern_for(function, need)
        sid = "KeyOwnerLookup" if pattern != PATTERNS[need.kind] else _SIDS[need.kind]
        statement = statements.setdefault(sid, {"Sid": sid, "Effect": "Allow", "Action": [], "Resource": pattern})
        if need.action not in statement["Action"]:
            statement["Action"].append(need.action)
    for statement in statements.values():
        statement["Action"] = sorted(statement["Action"])
    return {"Version": "2012-10-17",
            "Statement": [*BASELINE_STATEMENTS, *sorted(statements.values(), key=lambda s: s["Sid"])]}


def write_all() -> list[Path]:
    written = []
    for function, reach in analysis.function_actions().items():
        path = policy_path(function)
        path.write_text(json.dumps(render(function, reach), indent=2) + "\n")
        written.append(path)
    return written


def functions() -> list[str]:
    return list(analysis.chalice_handlers())
