"""Validly signed webhook deliveries for every provider: what a sender holding the secret could send."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib.targets.registry import PROVIDERS as REGISTRY

#: Every registered provider: one without a sender below fails the webhook tests instead of being skipped.
PROVIDERS = tuple(REGISTRY.names())
#: The event header that makes each parser read the body as a build event.
BUILD_EVENTS = {
    "github": {"X-GitHub-Event": "workflow_run"},
    "gitlab": {"X-Gitlab-Event": "Pipeline Hook"},
    "bitbucket": {"X-Event-Key": "repo:commit_status_updated"},
    "circleci": {"Circleci-Event-Type": "workflow-completed"},
    "travis": {},
}


@dataclass(frozen=True)
class Sender:
    provider: str
    #: What the rotator's webhook config holds (for Travis, the PEM public key).
    secret: str
    #: Travis only: signs the ``payload`` field with the private key.
    rsa_sign: Callable[[str], str] | None = None

    def deliver(self, payload: bytes, delivery: str) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of a correctly signed build event carrying ``payload`` as its JSON."""
        headers = {"Content-Type": "application/json", **BUILD_EVENTS.get(self.provider, {})}
        body = payload
        if self.provider == "github":
            headers |= {"X-GitHub-Delivery": delivery, "X-Hub-Signature-256": "sha256=" + _hmac(self.secret, body)}
        elif self.provider == "bitbucket":
            headers |= {"X-Request-UUID": delivery, "X-Hub-Signature": "sha256=" + _hmac(self.secret, body)}
        elif self.provider == "circleci":
            headers |= {"Circleci-Signature": "v1=" + _hmac(self.secret, body)}
        elif self.provider == "gitlab":
            headers |= {"Idempotency-Key": delivery}
            if self.secret.startswith("whsec_"):
                stamp = str(int(time.time()))
                key = base64.b64decode(self.secret.removeprefix("whsec_"))
                digest = hmac.new(key, f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest()
                headers |= {"webhook-id": delivery, "webhook-timestamp": stamp,
                            "webhook-signature": "v1," + base64.b64encode(digest).decode()}
            else:
                headers |= {"X-Gitlab-Token": self.secret}
        elif self.provider == "travis":
            assert self.rsa_sign is not None
            text = payload.decode("utf-8", "surrogateescape")
            body = urlencode({"payload": text}).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", "Signature": self.rsa_sign(text)}
        else:
            # A provider added later signs its own way, and its emulator says how (``signed_delivery``).
            from local.emulators.base import emulators

            signer = getattr(emulators()[self.provider], "signed_delivery", None)
            if signer is None:
                raise ValueError(self.provider)
            signed: tuple[bytes, dict[str, str]] = signer(self.secret, payload, delivery)
            return signed
        return body, headers


def _hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def offline_sender(provider: str) -> Sender:
    """A sender with a secret of its own (for calling ``parse_webhook`` directly)."""
    if provider != "travis":
        return Sender(provider, "a-webhook-secret")
    key = _travis_key()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return Sender(provider, pem, lambda text: base64.b64encode(
        key.sign(text.encode("utf-8", "surrogateescape"), padding.PKCS1v15(), hashes.SHA1())).decode())


def emulator_sender(emulator: object) -> Sender:
    """A sender holding what the local emulator of a provider signs with (the rotator is configured for it)."""
    provider = emulator.provider  # type: ignore[attr-defined]
    rsa_sign = emulator._sign if provider == "travis" else None  # type: ignore[attr-defined]
    return Sender(provider, emulator.webhook_key(), rsa_sign)  # type: ignore[attr-defined]


_KEY: list[rsa.RSAPrivateKey] = []


def _travis_key() -> rsa.RSAPrivateKey:
    if not _KEY:
        _KEY.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _KEY[0]
