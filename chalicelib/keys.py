"""IAM access-key operations and the escrow that holds secrets between CreateAccessKey and the targets.

Every destructive call takes an explicit AccessKeyId. The escrow is one Secrets Manager secret per user,
versioned per rotation with Secrets Manager's own labels (AWSPENDING → AWSCURRENT → AWSPREVIOUS) and a
version id derived from the rotation id, so every write is idempotent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws import client, error_code, reraise_transient
from chalicelib.errors import EscrowError, UnsafeKeyState
from chalicelib.targets.base import Credentials

_VERSION_NAMESPACE = uuid.UUID("6f1c1d2e-7b0a-4c55-9d7e-2b1f0c6a9e11")
PENDING, CURRENT, PREVIOUS = "AWSPENDING", "AWSCURRENT", "AWSPREVIOUS"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    status: str  # "Active" | "Inactive"
    created: datetime


def _call(fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except ClientError as exc:
        reraise_transient(exc)
        raise


# -- IAM ------------------------------------------------------------------------------------------


def list_keys(user: str) -> list[KeyInfo]:
    response = _call(client("iam").list_access_keys, UserName=user)
    return [
        KeyInfo(k["AccessKeyId"], k["Status"], k["CreateDate"])
        for k in sorted(response["AccessKeyMetadata"], key=lambda k: k["CreateDate"])
    ]


def key_status(user: str, key_id: str) -> str | None:
    """``Active``, ``Inactive``, or None when the key no longer exists."""
    for key in list_keys(user):
        if key.key_id == key_id:
            return key.status
    return None


def create_key(user: str) -> Credentials:
    try:
        key = client("iam").create_access_key(UserName=user)["AccessKey"]
    except ClientError as exc:
        if error_code(exc) == "LimitExceeded":
            raise UnsafeKeyState(f"user {user!r} already has two access keys; nothing was created") from None
        reraise_transient(exc)
        raise
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def set_status(user: str, key_id: str, status: str) -> None:
    _call(client("iam").update_access_key, UserName=user, AccessKeyId=key_id, Status=status)


def delete_key(user: str, key_id: str) -> bool:
    """Delete ``key_id``; False if it was already gone."""
    try:
        client("iam").delete_access_key(UserName=user, AccessKeyId=key_id)
        return True
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        reraise_transient(exc)
        raise


def last_used(key_id: str) -> datetime | None:
    """When AWS last saw ``key_id`` used; None if never, or if the key no longer exists."""
    try:
        response = client("iam").get_access_key_last_used(AccessKeyId=key_id)
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        reraise_transient(exc)
        raise
    used: datetime | None = response.get("AccessKeyLastUsed", {}).get("LastUsedDate")
    return used


def is_live(credentials: Credentials) -> bool:
    """Does AWS accept this key yet? New keys are eventually consistent for a few seconds."""
    sts = boto3.session.Session(
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
    ).client("sts")
    try:
        sts.get_caller_identity()
        return True
    except ClientError as exc:
        if error_code(exc) in ("InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure", "AccessDenied"):
            return False
        reraise_transient(exc)
        raise


# -- escrow ---------------------------------------------------------------------------------------


def version_id(rotation_id: str) -> str:
    """The escrow version of a rotation: a UUID because Secrets Manager wants 32-64 characters."""
    return str(uuid.uuid5(_VERSION_NAMESPACE, rotation_id))


#: What only the escrow's functions and the break-glass role may do to an escrowed secret: read it, write
#: or relabel versions, change its key (UpdateSecret re-encrypts every labelled version with the new key),
#: or change this policy. Deleting stays with administrators: it destroys the secret, never reveals it.
ESCROW_GUARDED_ACTIONS = (
    "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:UpdateSecret", "secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy",
    "secretsmanager:RotateSecret", "secretsmanager:RestoreSecret",
)


def escrow_resource_policy(principals: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Deny every guarded action to anyone whose ``aws:PrincipalArn`` is not one of ``principals`` (ARN
    patterns). An explicit Deny wins over any Allow, so an administrator's ``*`` cannot read the secret."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "OnlyTheEscrowFunctionsAndBreakGlass", "Effect": "Deny", "Principal": "*",
        "Action": list(ESCROW_GUARDED_ACTIONS), "Resource": "*",
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": list(principals)}},
    }]}


class Escrow:
    def __init__(self, prefix: str, kms_key_id: str | None = None, principals: tuple[str, ...] = ()) -> None:
        self.prefix = prefix.rstrip("/")
        self.kms_key_id = kms_key_id
        self.principals = tuple(principals)

    def secret_id(self, user: str) -> str:
        return f"{self.prefix}/{user}"

    @property
    def _sm(self) -> Any:
        return client("secretsmanager")

    def _ensure_secret(self, user: str) -> None:
        kwargs: dict[str, Any] = {
            "Name": self.secret_id(user),
            "Description": f"CI Key Rotator escrow for IAM user {user}",
            "Tags": [{"Key": "managed-by", "Value": "ci-key-rotator"}],
        }
        if self.kms_key_id:
            kwargs["KmsKeyId"] = self.kms_key_id
        try:
            self._sm.create_secret(**kwargs)
        except ClientError as exc:
            if error_code(exc) != "ResourceExistsException":
                reraise_transient(exc)
                raise
        if self.principals:
            # Before the first secret value is written, and again on every stash: a secret made before
            # the policy existed (or whose policy was removed) is guarded again by the next rotation.
            _call(self._sm.put_resource_policy, SecretId=self.secret_id(user), BlockPublicPolicy=True,
                  ResourcePolicy=json.dumps(escrow_resource_policy(self.principals)))

    def stash_pending(self, user: str, rotation_id: str, credentials: Credentials) -> None:
        self._ensure_secret(user)
        _call(
            self._sm.put_secret_value,
            SecretId=self.secret_id(user),
            ClientRequestToken=version_id(rotation_id),
            SecretString=json.dumps(
                {"AccessKeyId": credentials.access_key_id, "SecretAccessKey": credentials.secret_access_key}
            ),
            VersionStages=[PENDING],
        )

    def _read(self, user: str, **selector: str) -> Credentials | None:
        try:
            value = self._sm.get_secret_value(SecretId=self.secret_id(user), **selector)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            reraise_transient(exc)
            raise EscrowError(f"escrow of {user!r} is unreadable ({error_code(exc)})") from None
        data = json.loads(value["SecretString"])
        return Credentials(data["AccessKeyId"], data["SecretAccessKey"])

    def stashed(self, user: str, rotation_id: str) -> Credentials | None:
        """The secret this rotation escrowed, or None if it escrowed none. A version is immutable: once
        written, its token cannot carry another key (PutSecretValue refuses, ResourceExistsException)."""
        return self._read(user, VersionId=version_id(rotation_id))

    def pending(self, user: str, rotation_id: str) -> Credentials:
        credentials = self.stashed(user, rotation_id)
        if credentials is None:
            raise EscrowError(f"escrow of {user!r} holds no secret for rotation {rotation_id}")
        return credentials

    def current_for(self, user: str, key_id: str | None) -> Credentials | None:
        """The escrowed secret of ``key_id`` if the escrow's current version is that key, else None."""
        if key_id is None:
            return None
        for stage in (CURRENT, PREVIOUS):
            credentials = self._read(user, VersionStage=stage)
            if credentials is not None and credentials.access_key_id == key_id:
                return credentials
        return None

    def _stages(self, user: str) -> dict[str, list[str]]:
        try:
            versions = self._sm.list_secret_version_ids(SecretId=self.secret_id(user))["Versions"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return {}
            reraise_transient(exc)
            raise
        return {v["VersionId"]: v.get("VersionStages", []) for v in versions}

    def _move(self, user: str, stage: str, to: str | None, away_from: str | None) -> None:
        kwargs: dict[str, Any] = {"SecretId": self.secret_id(user), "VersionStage": stage}
        if to:
            kwargs["MoveToVersionId"] = to
        if away_from:
            kwargs["RemoveFromVersionId"] = away_from
        _call(self._sm.update_secret_version_stage, **kwargs)

    def promote(self, user: str, rotation_id: str) -> None:
        """PENDING becomes CURRENT, CURRENT becomes PREVIOUS. Re-running is a no-op."""
        new = version_id(rotation_id)
        stages = self._stages(user)
        if new not in stages:
            raise EscrowError(f"escrow of {user!r} has no version for rotation {rotation_id}")
        current = next((v for v, s in stages.items() if CURRENT in s), None)
        if current != new:
            previous = next((v for v, s in stages.items() if PREVIOUS in s), None)
            if current:
                self._move(user, PREVIOUS, to=current, away_from=previous if previous != current else None)
            self._move(user, CURRENT, to=new, away_from=current)
        if PENDING in self._stages(user).get(new, []):
            self._move(user, PENDING, to=None, away_from=new)

    def discard_pending(self, user: str, rotation_id: str) -> None:
        """Rollback: the rotation's version stops being PENDING (and CURRENT, if it was the first)."""
        new = version_id(rotation_id)
        stages = self._stages(user).get(new, [])
        if PENDING in stages:
            self._move(user, PENDING, to=None, away_from=new)

    def forget(self, user: str, key_id: str) -> None:
        """After ``key_id`` is deleted its secret has no use: drop the PREVIOUS label from it."""
        for version, stages in self._stages(user).items():
            if PREVIOUS in stages:
                held = self._read(user, VersionId=version)
                if held is not None and held.access_key_id == key_id:
                    self._move(user, PREVIOUS, to=None, away_from=version)
