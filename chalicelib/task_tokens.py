"""Step Functions task tokens at rest: KMS ciphertext bound to the verification it belongs to.

Whoever holds a task token can complete the waiting state (``SendTaskSuccess`` needs nothing else but
``states:SendTaskSuccess``), so a plain token in the ledger would let anyone who can read the table
resume a verification the CI never confirmed. The ledger stores only ``seal()``'s output: ciphertext
under the escrow's customer-managed key, with an encryption context naming the provider, run and
rotation. ``open()`` needs ``kms:Decrypt`` on that key (only the webhook route and the poller have it)
and the same context, so a ciphertext copied onto another callback item does not decrypt either.

https://docs.aws.amazon.com/kms/latest/developerguide/encrypt_context.html
"""

from __future__ import annotations

import base64
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.aws import error_code, reraise_transient
from chalicelib.errors import ConfigError, RotatorError


class SealedTokenUnusable(RotatorError):
    """A stored task token that cannot be decrypted (wrong context, tampered, key unusable)."""


def context(provider: str, run_id: str, rotation_id: str) -> dict[str, str]:
    return {"purpose": "ci-key-rotator/task-token", "provider": provider, "run_id": run_id,
            "rotation_id": rotation_id}


def seal(key_id: str | None, token: str, encryption_context: dict[str, str]) -> dict[str, str]:
    """The ledger fields for ``token``: ``task_token_sealed`` (base64) and ``task_token_key`` (key ARN)."""
    if not key_id:
        raise ConfigError("ROTATOR_ESCROW_KMS_KEY_ID is not set: task tokens are only stored encrypted")
    try:
        answer = aws.client("kms").encrypt(KeyId=key_id, Plaintext=token.encode(),
                                           EncryptionContext=encryption_context)
    except ClientError as exc:
        reraise_transient(exc)
        raise ConfigError(f"cannot encrypt the task token with {key_id} ({error_code(exc)})") from None
    return {"task_token_sealed": base64.b64encode(answer["CiphertextBlob"]).decode(),
            "task_token_key": str(answer["KeyId"])}


def open_sealed(item: dict[str, Any], encryption_context: dict[str, str]) -> str:
    """The task token of a callback item written by ``seal``."""
    sealed, key_id = item.get("task_token_sealed"), item.get("task_token_key")
    if not sealed or not key_id:
        raise SealedTokenUnusable("callback without a sealed task token")
    try:
        answer = aws.client("kms").decrypt(KeyId=key_id, CiphertextBlob=base64.b64decode(sealed),
                                           EncryptionContext=encryption_context)
    except ClientError as exc:
        reraise_transient(exc)
        raise SealedTokenUnusable(f"task token does not decrypt ({error_code(exc)})") from None
    except ValueError:
        raise SealedTokenUnusable("task token is not base64") from None
    return bytes(answer["Plaintext"]).decode()
