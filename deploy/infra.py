"""Resources Chalice does not create: the table, the state machine definition's substitutions.

Shared by the local runtime and the deployment step so both run the same definition.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import error_code

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "statemachine" / "rotation.asl.json"
#: ``undo USER``: a separate machine (the rotation's stays as it is), sharing the rotation's VerifyBuild.
UNDO_DEFINITION = ROOT / "statemachine" / "undo.asl.json"
#: ``graduate USER [TARGET]``: a target from its access key to OIDC federation (issue 15), sharing the
#: rotation's VerifyBuild, DrainCheck and DeleteOldKey.
GRADUATE_DEFINITION = ROOT / "statemachine" / "graduate.asl.json"
#: Every state machine the product deploys: name suffix -> definition.
DEFINITIONS = {"rotation": DEFINITION, "undo": UNDO_DEFINITION, "graduate": GRADUATE_DEFINITION}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9]+)FunctionArn\}")


def task_handlers(definition: str | None = None) -> list[str]:
    """The Chalice handler names the definition refers to (``${CreateKeyFunctionArn}`` → create_key); by
    default those of every state machine."""
    text = definition if definition is not None else "".join(p.read_text() for p in DEFINITIONS.values())
    names = {re.sub(r"(?<!^)(?=[A-Z])", "_", m).lower() for m in _PLACEHOLDER.findall(text)}
    return sorted(names)


def render_definition(function_arns: dict[str, str], definition: str | None = None) -> str:
    """Substitute every ``${XFunctionArn}``; a missing function is an error, not a broken machine."""
    text = definition if definition is not None else DEFINITION.read_text()

    def substitute(match: re.Match[str]) -> str:
        handler = re.sub(r"(?<!^)(?=[A-Z])", "_", match.group(1)).lower()
        if handler not in function_arns:
            raise KeyError(f"no Lambda function for {match.group(0)} (handler {handler!r})")
        return function_arns[handler]

    rendered = _PLACEHOLDER.sub(substitute, text)
    json.loads(rendered)
    return rendered


#: The ledger table's shape, defined once: the local runtime (``ensure_table``), ``make deploy``
#: (deploy/resources.py) and the CloudFormation template (deploy/template.py) all build it from here,
#: so the three cannot drift apart (tests/deploy/test_table_schema.py).
TABLE_SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                             {"AttributeName": "sk", "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "BillingMode": "PAY_PER_REQUEST",
}
#: Items that carry ``expires_at`` (epoch seconds) are deleted by DynamoDB after that time.
TTL_ATTRIBUTE = "expires_at"
TTL_SPECIFICATION: dict[str, Any] = {"Enabled": True, "AttributeName": TTL_ATTRIBUTE}


def table_schema() -> dict[str, Any]:
    """A fresh deep copy of ``TABLE_SCHEMA``: callers add their own keys without touching the original."""
    return copy.deepcopy(TABLE_SCHEMA)


def ensure_table(dynamodb: Any, name: str) -> None:
    """The single ledger table (``TABLE_SCHEMA``, TTL on ``expires_at``). Idempotent."""
    try:
        dynamodb.create_table(TableName=name, **table_schema())
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=dict(TTL_SPECIFICATION))
