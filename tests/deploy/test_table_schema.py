"""The ledger table's schema is defined once (deploy/infra.py ``TABLE_SCHEMA``) and every path that
creates the table — the local runtime, ``make deploy`` and the CloudFormation template — builds it from
there: a key or billing change made in one place reaches all three, and a copy pasted back fails here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deploy import infra, resources, template

ROOT = Path(__file__).resolve().parents[2]


class RecordingDynamoDB:
    """Just enough of a DynamoDB client to see what the table is created with."""

    def __init__(self) -> None:
        self.created: dict[str, Any] | None = None
        self.ttl: dict[str, Any] | None = None

    def describe_table(self, TableName: str) -> dict[str, Any]:
        if self.created is None:
            raise ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no table"}},
                              "DescribeTable")
        return {"Table": {"TableName": TableName, "DeletionProtectionEnabled": True}}

    def create_table(self, **kwargs: Any) -> None:
        self.created = kwargs

    def get_waiter(self, name: str) -> Any:
        return SimpleNamespace(wait=lambda **_: None)

    def update_time_to_live(self, TableName: str, TimeToLiveSpecification: dict[str, Any]) -> None:
        self.ttl = TimeToLiveSpecification

    def describe_time_to_live(self, TableName: str) -> dict[str, Any]:
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}

    def describe_continuous_backups(self, TableName: str) -> dict[str, Any]:
        return {"ContinuousBackupsDescription": {
            "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "ENABLED"}}}


def _schema_of(created: dict[str, Any]) -> dict[str, Any]:
    return {key: created[key] for key in infra.TABLE_SCHEMA}


def test_the_local_runtime_creates_the_table_from_the_one_schema() -> None:
    ddb = RecordingDynamoDB()
    infra.ensure_table(ddb, "ledger")
    assert ddb.created is not None and _schema_of(ddb.created) == infra.TABLE_SCHEMA
    assert ddb.ttl == infra.TTL_SPECIFICATION


def test_make_deploy_creates_the_table_from_the_one_schema() -> None:
    ddb = RecordingDynamoDB()
    changes: list[str] = []
    deployment = SimpleNamespace(client=lambda service: ddb, names=SimpleNamespace(table="ledger", tags=dict),
                                 changed=changes.append, progress=print)
    resources.ensure_table(deployment)  # type: ignore[arg-type]  # a stand-in with the fields it reads
    assert ddb.created is not None and _schema_of(ddb.created) == infra.TABLE_SCHEMA
    assert ddb.ttl == infra.TTL_SPECIFICATION


def test_the_template_declares_the_table_from_the_one_schema() -> None:
    table = template.merge_template("dev")["Resources"]["LedgerTable"]["Properties"]
    assert _schema_of(table) == infra.TABLE_SCHEMA
    assert table["TimeToLiveSpecification"] == infra.TTL_SPECIFICATION


def test_callers_cannot_change_the_schema_by_editing_their_copy() -> None:
    copy = infra.table_schema()
    copy["KeySchema"].append({"AttributeName": "x", "KeyType": "RANGE"})
    assert len(infra.TABLE_SCHEMA["KeySchema"]) == 2


@pytest.mark.parametrize("path", ["deploy/resources.py", "deploy/template.py", "local/runtime.py"])
def test_no_other_module_spells_the_schema_out(path: str) -> None:
    text = (ROOT / path).read_text()
    assert "AttributeDefinitions" not in text and "KeySchema" not in text, (
        f"{path} defines the ledger table's keys itself; use deploy.infra.TABLE_SCHEMA")
