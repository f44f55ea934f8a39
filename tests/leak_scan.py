"""Scan everything the product wrote for secret material: the check behind invariant 3."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from local.emulators.base import emulators
from local.runtime import LocalRuntime
from local.world import GITHUB_APP_KEY_REF, token_ref, webhook_ref

SECRET_SHAPED = re.compile(r"[A-Za-z0-9/+=]{40}")


def corpus(runtime: LocalRuntime) -> dict[str, str]:
    """Every execution history with data, every log line, every SNS and Slack message, every DynamoDB item,
    every X-Ray (sub)segment a function emitted."""
    sfn = runtime.client("stepfunctions")
    texts: dict[str, str] = {}
    for machine in sfn.list_state_machines()["stateMachines"]:
        for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]:
            texts[f"history:{execution['name']}"] = json.dumps(runtime.history(execution["executionArn"]),
                                                               default=str)
    texts["logs"] = runtime.log_stream.getvalue()
    texts["sns"] = json.dumps(runtime.alerts())
    texts["slack"] = json.dumps(runtime.slack.messages)
    texts["traces"] = "\n".join(runtime.traces.documents())
    dynamodb = runtime.client("dynamodb")
    items, kwargs = [], {"TableName": runtime.table_name}
    while True:
        page = dynamodb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    texts["dynamodb"] = json.dumps(items)
    return texts


def known_secrets(runtime: LocalRuntime, received_hashes: set[str],
                  extra_literals: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """(sha256 of every secret access key that exists or reached a CI, literal CI credentials). A private key
    counts whole and line by line: a JSON dump escapes its newlines, and a leak may be a fragment.
    ``extra_literals``: credentials only the emulators know (World.credential_literals: installation tokens)."""
    from moto.iam.models import iam_backends

    hashes = set(received_hashes)
    for account in iam_backends.values():
        for backend in account.values():
            for user in backend.users.values():
                for key in user.access_keys:
                    hashes.add(hashlib.sha256(key.secret_access_key.encode()).hexdigest())
    sm = runtime.client("secretsmanager")
    literals = set(extra_literals)
    for name in [ref(p) for p in emulators() for ref in (token_ref, webhook_ref)] + [GITHUB_APP_KEY_REF]:
        try:
            value = sm.get_secret_value(SecretId=name)["SecretString"]
        except sm.exceptions.ResourceNotFoundException:
            continue
        literals.add(value)
        if "PRIVATE KEY-----" in value:
            literals.update(line for line in value.splitlines() if len(line) >= 40)
    return hashes, {value for value in literals if not value.startswith("-----BEGIN PUBLIC KEY")}


def leaks(texts: dict[str, str], hashes: set[str], literals: set[str]) -> list[str]:
    found = []
    for where, text in texts.items():
        if any(hashlib.sha256(t.encode()).hexdigest() in hashes for t in set(SECRET_SHAPED.findall(text))):
            found.append(f"secret access key in {where}")
        found.extend(f"CI credential in {where}" for literal in literals if literal in text)
    return found
