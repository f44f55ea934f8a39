"""The rotator's memory in one DynamoDB table: locks, rotations, keys, targets, callbacks, intents.

Single-table layout (``pk``/``sk`` strings, TTL attribute ``expires_at``):

================================  ===============================  =====================================
pk                                sk                               what
================================  ===============================  =====================================
``USER#<user>``                   ``LOCK``                         the per-user rotation lock
``USER#<user>``                   ``ROTATION#<rid>``               one rotation: key ids, phase, outcome
``USER#<user>``                   ``ROTATION#<rid>#TARGET#<tid>``  one target's push/verify result
``USER#<user>``                   ``KEY#<key id>``                 a key the rotator created or adopted
``USER#<user>``                   ``HOLDS#<tid>``                  which key id a target holds now
``USER#<user>``                   ``PAUSE``                        an operator paused the user's rotations
``USER#<user>``                   ``GRADUATED#<tid>``              a target that federates (OIDC) instead of a key
``INTENT#<user>``                 ``<iso time>#<action>``          an IAM call the workflow is about to make
``CALLBACK``                      ``<provider>#<run id>``          a verification build's task token (KMS-sealed)
``DELIVERY#<provider>#<id>``      ``DELIVERY``                     a webhook delivery already handled
================================  ===============================  =====================================

Only key ids, run ids and timestamps are stored: never a secret access key or a CI token.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib import aws, clock, task_tokens
from chalicelib.aws import error_code, reraise_transient
from chalicelib.errors import RotationInProgress
from chalicelib.settings import get_settings

#: DynamoDB's limit on a sort key value (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html).
_SORT_KEY_MAX_BYTES = 1024


def _plain(value: Any) -> Any:
    """JSON-able values: DynamoDB returns Decimal for every number, at any depth."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(value) for name, value in item.items() if name not in ("pk", "sk")}


class Ledger:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._tables: dict[Any, Any] = {}

    @property
    def table(self) -> Any:
        """The table resource signed by the running Lambda's identity (chalicelib.aws), one per identity."""
        identity = aws.current_identity()
        table = self._tables.get(identity)
        if table is None:
            table = self._tables.setdefault(identity, aws.resource("dynamodb").Table(self.table_name))
        return table

    # -- low level -------------------------------------------------------------------------------

    def _put(self, item: dict[str, Any], condition: Any = None) -> bool:
        kwargs: dict[str, Any] = {"Item": {k: v for k, v in item.items() if v is not None}}
        if condition is not None:
            kwargs["ConditionExpression"] = condition
        try:
            self.table.put_item(**kwargs)
            return True
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            reraise_transient(exc)
            raise

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            item = self.table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")
        except ClientError as exc:
            reraise_transient(exc)
            raise
        return _clean(item) if item else None

    def _update(self, pk: str, sk: str, fields: dict[str, Any]) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        if not fields:
            return
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": value for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        try:
            self.table.update_item(
                Key={"pk": pk, "sk": sk},
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            reraise_transient(exc)
            raise

    def _query(self, condition: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition, "ConsistentRead": True}
        while True:
            try:
                page = self.table.query(**kwargs)
            except ClientError as exc:
                reraise_transient(exc)
                raise
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _delete(self, pk: str, sk: str, condition: Any = None) -> bool:
        kwargs: dict[str, Any] = {"Key": {"pk": pk, "sk": sk}}
        if condition is not None:
            kwargs["ConditionExpression"] = condition
        try:
            self.table.delete_item(**kwargs)
            return True
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            reraise_transient(exc)
            raise

    # -- lock ------------------------------------------------------------------------------------

    def acquire_lock(self, user: str, rotation_id: str, execution_arn: str, ttl: timedelta) -> None:
        """Take the user's lock for ``rotation_id``; re-taking your own lock is a no-op (retries)."""
        now = clock.now()
        claimed = self._put(
            {
                "pk": f"USER#{user}",
                "sk": "LOCK",
                "rotation_id": rotation_id,
                "execution_arn": execution_arn,
                "acquired_at": clock.iso(now),
                "expires_at": clock.epoch(now + ttl),
            },
            condition=Attr("pk").not_exists()
            | Attr("rotation_id").eq(rotation_id)
            | Attr("expires_at").lt(clock.epoch(now)),
        )
        if not claimed:
            holder = self.lock_holder(user) or {}
            raise RotationInProgress(
                f"user {user!r} is being rotated by {holder.get('rotation_id', '?')} "
                f"(since {holder.get('acquired_at', '?')}); this trigger changed nothing"
            )

    def take_over_lock(self, user: str, rotation_id: str, execution_arn: str, ttl: timedelta,
                       from_rotation_id: str) -> None:
        """Take a lock whose holder's execution is no longer running (stopped, or its Alert failed)."""
        now = clock.now()
        claimed = self._put(
            {"pk": f"USER#{user}", "sk": "LOCK", "rotation_id": rotation_id, "execution_arn": execution_arn,
             "acquired_at": clock.iso(now), "expires_at": clock.epoch(now + ttl),
             "taken_over_from": from_rotation_id},
            condition=Attr("rotation_id").eq(from_rotation_id),
        )
        if not claimed:
            raise RotationInProgress(f"user {user!r}: another trigger took the stale lock first")

    def release_lock(self, user: str, rotation_id: str) -> bool:
        """Release the lock only if ``rotation_id`` holds it."""
        return self._delete(f"USER#{user}", "LOCK", condition=Attr("rotation_id").eq(rotation_id))

    def lock_holder(self, user: str) -> dict[str, Any] | None:
        lock = self._get(f"USER#{user}", "LOCK")
        if lock and lock["expires_at"] < clock.epoch(clock.now()):
            return None
        return lock

    # -- rotations -------------------------------------------------------------------------------

    def start_rotation(self, user: str, rotation_id: str, fields: dict[str, Any]) -> bool:
        """Record a rotation once; False if it was already recorded (a retried Plan)."""
        return self._put(
            {"pk": f"USER#{user}", "sk": f"ROTATION#{rotation_id}", "user": user,
             "rotation_id": rotation_id, **fields},
            condition=Attr("pk").not_exists(),
        )

    def update_rotation(self, user: str, rotation_id: str, **fields: Any) -> None:
        # Also creates the record (an Alert for a Plan that failed before recording anything).
        self._update(f"USER#{user}", f"ROTATION#{rotation_id}", {"user": user, "rotation_id": rotation_id,
                                                                 **fields})

    def set_target(self, user: str, rotation_id: str, target_id: str, **fields: Any) -> None:
        self._update(
            f"USER#{user}", f"ROTATION#{rotation_id}#TARGET#{target_id}", {"target_id": target_id, **fields}
        )

    def rotation(self, user: str, rotation_id: str) -> dict[str, Any] | None:
        """The rotation with its per-target results under ``targets``."""
        items = self._query(Key("pk").eq(f"USER#{user}") & Key("sk").begins_with(f"ROTATION#{rotation_id}"))
        record: dict[str, Any] | None = None
        targets: dict[str, dict[str, Any]] = {}
        for item in items:
            if item["sk"] == f"ROTATION#{rotation_id}":
                record = _clean(item)
            elif item["sk"].startswith(f"ROTATION#{rotation_id}#TARGET#"):
                target = _clean(item)
                targets[target["target_id"]] = target
        if record is not None:
            record["targets"] = targets
        return record

    def rotations(self, user: str) -> list[dict[str, Any]]:
        """Every rotation of ``user``, oldest first (without per-target results)."""
        items = self._query(Key("pk").eq(f"USER#{user}") & Key("sk").begins_with("ROTATION#"))
        records = [_clean(i) for i in items if "#TARGET#" not in i["sk"]]
        return sorted(records, key=lambda r: r.get("started_at", ""))

    def history(self, user: str) -> list[dict[str, Any]]:
        """Every rotation of ``user``, oldest first, each with its per-target results under ``targets``."""
        items = self._query(Key("pk").eq(f"USER#{user}") & Key("sk").begins_with("ROTATION#"))
        records = {i["sk"]: {**_clean(i), "targets": {}} for i in items if "#TARGET#" not in i["sk"]}
        for item in items:
            parent, _, _ = item["sk"].partition("#TARGET#")
            if parent != item["sk"] and parent in records:
                records[parent]["targets"][item["target_id"]] = _clean(item)
        return sorted(records.values(), key=lambda r: r.get("started_at", ""))

    # -- pause -----------------------------------------------------------------------------------

    def set_pause(self, user: str, paused_by: str, note: str | None = None) -> None:
        self._put({"pk": f"USER#{user}", "sk": "PAUSE", "user": user, "paused_by": paused_by, "note": note,
                   "paused_at": clock.iso(clock.now())})

    def clear_pause(self, user: str) -> bool:
        """True if the user was paused."""
        return self._delete(f"USER#{user}", "PAUSE", condition=Attr("pk").exists())

    def pause(self, user: str) -> dict[str, Any] | None:
        return self._get(f"USER#{user}", "PAUSE")

    # -- keys and holdings -----------------------------------------------------------------------

    def record_key(self, user: str, key_id: str, **fields: Any) -> None:
        self._update(f"USER#{user}", f"KEY#{key_id}", {"key_id": key_id, **fields})

    def key(self, user: str, key_id: str) -> dict[str, Any] | None:
        return self._get(f"USER#{user}", f"KEY#{key_id}")

    def keys(self, user: str) -> dict[str, dict[str, Any]]:
        items = self._query(Key("pk").eq(f"USER#{user}") & Key("sk").begins_with("KEY#"))
        return {i["key_id"]: _clean(i) for i in items}

    def set_holding(self, user: str, target_id: str, key_id: str, rotation_id: str) -> None:
        self._update(
            f"USER#{user}",
            f"HOLDS#{target_id}",
            {"target_id": target_id, "key_id": key_id, "rotation_id": rotation_id,
             "updated_at": clock.iso(clock.now())},
        )

    def holdings(self, user: str) -> dict[str, str]:
        """target id -> the key id the rotator last put there."""
        items = self._query(Key("pk").eq(f"USER#{user}") & Key("sk").begins_with("HOLDS#"))
        return {i["target_id"]: i["key_id"] for i in items}

    def drop_holding(self, user: str, target_id: str) -> None:
        """The target holds no key of the user any more (it graduated to OIDC federation)."""
        self._delete(f"USER#{user}", f"HOLDS#{target_id}")

    # -- graduations (chalicelib/graduation.py) ----------------------------------------------------

    def set_graduation(self, user: str, target_id: str, **fields: Any) -> None:
        self._update(f"USER#{user}", f"GRADUATED#{target_id}", {"target_id": target_id, **fields})

    def clear_graduation(self, user: str, target_id: str) -> None:
        self._delete(f"USER#{user}", f"GRADUATED#{target_id}")

    def graduations(self, user: str) -> dict[str, dict[str, Any]]:
        """target id -> its graduation record (role ARN, graduation id, when)."""
        items = self._query(Key("pk").eq(f"USER#{user}") & Key("sk").begins_with("GRADUATED#"))
        return {i["target_id"]: _clean(i) for i in items}

    # -- intents (read by the audit pipeline to tell the rotator's changes from others') ---------

    def record_intent(self, user: str, rotation_id: str, action: str, key_id: str | None) -> None:
        at = clock.now()
        self._put(
            {
                "pk": f"INTENT#{user}",
                "sk": f"{clock.iso(at)}#{action}#{key_id or '-'}",
                "rotation_id": rotation_id,
                "action": action,
                "key_id": key_id,
                "at": clock.iso(at),
                "expires_at": clock.epoch(at + timedelta(days=30)),
            }
        )

    def intents(self, user: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        condition = Key("pk").eq(f"INTENT#{user}") & Key("sk").between(clock.iso(since), clock.iso(until) + "~")
        return [_clean(i) for i in self._query(condition)]

    def find_intent(
        self, user: str, action: str, key_id: str | None, at: datetime, window: timedelta = timedelta(minutes=10)
    ) -> bool:
        """Did the workflow announce ``action`` on ``key_id`` shortly before ``at``?"""
        for intent in self.intents(user, at - window, at + timedelta(minutes=1)):
            if intent["action"] != action:
                continue
            if key_id is None or intent.get("key_id") in (None, key_id):
                return True
        return False

    # -- verification callbacks and webhook deliveries -------------------------------------------

    def put_callback(self, provider: str, run_id: str, ttl: timedelta, *, task_token: str, rotation_id: str,
                     **fields: Any) -> None:
        """Park a verification; the task token is stored only sealed with KMS (chalicelib/task_tokens.py)."""
        now = clock.now()
        sealed = task_tokens.seal(get_settings().escrow_kms_key_id, task_token,
                                  task_tokens.context(provider, run_id, rotation_id))
        self._put(
            {
                "pk": "CALLBACK",
                "sk": f"{provider}#{run_id}",
                "provider": provider,
                "run_id": run_id,
                "rotation_id": rotation_id,
                "created_at": clock.iso(now),
                "expires_at": clock.epoch(now + ttl),
                **fields,
                **sealed,
            }
        )

    def task_token(self, callback: dict[str, Any]) -> str:
        """The task token of a ``callback()`` item (kms:Decrypt, bound to its provider, run and rotation)."""
        return task_tokens.open_sealed(callback, task_tokens.context(
            callback["provider"], callback["run_id"], callback["rotation_id"]))

    def callback(self, provider: str, run_id: str) -> dict[str, Any] | None:
        if len(f"{provider}#{run_id}".encode("utf-8", "surrogateescape")) > _SORT_KEY_MAX_BYTES:
            return None  # no such item can exist, and DynamoDB refuses to look for one
        return self._get("CALLBACK", f"{provider}#{run_id}")

    def delete_callback(self, provider: str, run_id: str) -> bool:
        """True if this call removed it: only one resolver wins a run."""
        return self._delete("CALLBACK", f"{provider}#{run_id}", condition=Attr("pk").exists())

    def callbacks(self) -> list[dict[str, Any]]:
        return [_clean(i) for i in self._query(Key("pk").eq("CALLBACK"))]

    def claim_delivery(self, provider: str, delivery_id: str, ttl: timedelta) -> bool:
        """False if this delivery id was seen before (a replay or a redelivery)."""
        now = clock.now()
        return self._put(
            {
                "pk": f"DELIVERY#{provider}#{delivery_id}",
                "sk": "DELIVERY",
                "received_at": clock.iso(now),
                "expires_at": clock.epoch(now + ttl),
            },
            condition=Attr("pk").not_exists(),
        )
