"""What the tests, the demo and the provider contract suite need from a local CI server.

Every emulator is a real HTTP server on 127.0.0.1 speaking its provider's documented API subset
(docs/ci-providers/), whose builds run the verification job of the shipped pipeline file
(templates/verify/<provider>/, through ``local.build_job.run_template``) with the variables the build would see,
and which sends its provider's signed webhooks.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Self

from local.emulators import EMULATORS


class CIEmulator(Protocol):
    """Constructed as ``Emulator(token=..., aws_endpoint_url=..., webhook_url=..., webhook_secret=...)``."""

    provider: ClassVar[str]
    #: Webhook delivery faults, each switched on per test and off by ``reset_faults()`` (the delivery
    #: guarantees each provider documents: local/emulators/_server.py, "Webhook delivery faults").
    #: Never: lose every webhook (builds still complete): only the poller can confirm.
    drop_webhooks: bool
    #: Late: every delivery is sent this many seconds after the build ended (0: at once).
    webhook_delay: float
    #: Twice: every delivery is sent again with the same delivery id and bytes.
    duplicate_webhooks: bool
    #: Out of order: each delivery is held until the next one was sent (or ``reorder_window`` passed).
    reorder_webhooks: bool
    reorder_window: float

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    @property
    def url(self) -> str: ...

    def webhook_key(self) -> str:
        """What the rotator's webhook config must hold to verify this emulator's deliveries."""
        ...

    def add_project(self, name: str) -> None:
        """A repository / project / slug that holds variables and runs the verification build."""
        ...

    def target_config(self, project: str, token_ref: str) -> dict[str, Any]:
        """The rotation-config entry (without ``id``) for a target on ``project``."""
        ...

    def held_value(self, project: str, name: str) -> str | None:
        """The value a build of ``project`` would see for variable ``name``."""
        ...

    def received_secret_sha256s(self) -> list[str]: ...

    def run_build(self, project: str) -> bool:
        """Run the verification build now with the current variables (no webhook); True if it passed."""
        ...

    def fail_next_builds(self, project: str, n: int = 1) -> None: ...

    def hang_next_builds(self, project: str, n: int = 1) -> None: ...

    def inject(self, method: str, path_regex: str, statuses: Any = ..., retry_after: float | None = None) -> None:
        """The next matching requests get these statuses, then normal service."""
        ...

    def revoke_token(self) -> None: ...

    def reset_faults(self) -> None:
        """Normal service again: no injected statuses, failing/hanging builds, lost webhooks or revocation."""
        ...

    def deliveries(self) -> list[dict[str, Any]]: ...

    def wait_for_webhooks(self, timeout: float) -> bool:
        """Wait until no late or held delivery is still to be sent; False on timeout."""
        ...

    def redeliver(self, delivery_id: str) -> int | None: ...

    # -- OIDC (local/oidc.py, docs/oidc.md): None for a CI that issues no ID tokens (Travis CI), whose
    # projects then refuse the methods below with local.emulators._server.OidcUnsupported.
    oidc_profile: ClassVar[Any]

    def oidc_issuer(self, project: str) -> str:
        """The issuer URL (the provider's real https one) that ``project``'s ID tokens carry."""
        ...

    def oidc_settings(self, project: str) -> dict[str, str]:
        """The ``oidc:`` block a target on ``project`` needs for chalicelib.federation (may be empty)."""
        ...

    def mint_id_token(self, project: str, audience: str | None = None, **claim_overrides: Any) -> str:
        """An ID token of ``project`` (``audience`` None: the provider's default), claims overridable."""
        ...

    def set_verify_variant(self, project: str, variant: str) -> None:
        """``keys`` (default) or ``oidc``: which shipped verification file ``project``'s builds run."""
        ...


#: Class decorator: ``cls`` is the local server of ``cls.provider`` (the shared registry, __init__.py).
emulator = EMULATORS.register


def emulators() -> dict[str, type[Any]]:
    """Every emulator by provider name, importing this package's modules on first use."""
    return EMULATORS.as_dict()
