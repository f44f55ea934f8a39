"""What the task handlers need, built once per Lambda container from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from chalicelib.aws import client
from chalicelib.config import RotationConfig, clear_config_caches, get_config
from chalicelib.errors import TargetPushFailed
from chalicelib.keys import Escrow
from chalicelib.ledger import Ledger
from chalicelib.settings import Settings, get_settings
from chalicelib.settings import forget as forget_settings
from chalicelib.targets.base import CITarget, TargetConfig
from chalicelib.targets.registry import provider


@dataclass
class Deps:
    settings: Settings
    ledger: Ledger
    escrow: Escrow

    @property
    def config(self) -> RotationConfig:
        return get_config()

    def target(self, config: TargetConfig) -> CITarget:
        credential = config.credential()
        try:
            token = credential.ref.resolve()
        except Exception as exc:  # noqa: BLE001 - powertools raises several types; none may carry the value
            what = "API token" if credential.field == "token" else credential.field
            raise TargetPushFailed(
                f"cannot read the {what} of target {config.id!r} from {credential.ref} ({type(exc).__name__})"
            ) from None
        return provider(config.provider)(config, token)

    def webhook_secret(self, provider_name: str) -> str | None:
        hook = self.config.webhooks.get(provider_name)
        return hook.secret.resolve() if hook else None

    @property
    def sfn(self) -> Any:
        return client("stepfunctions")


def get_deps() -> Deps:
    return _deps_for(get_settings())


# Keyed by the (frozen, hashable) settings, so the deps always match the settings of the moment.
@lru_cache(maxsize=2)
def _deps_for(settings: Settings) -> Deps:
    return Deps(
        settings=settings,
        ledger=Ledger(settings.table_name),
        escrow=Escrow(settings.escrow_prefix, settings.escrow_kms_key_id, settings.escrow_principal_list),
    )


def reset() -> None:
    """Forget everything cached (tests and the local runtime change the environment)."""
    from aws_lambda_powertools.utilities import parameters

    from chalicelib.aws import reset_clients

    _deps_for.cache_clear()
    forget_settings()
    clear_config_caches()
    parameters.clear_caches()  # type: ignore[no-untyped-call]  # powertools leaves it unannotated
    reset_clients()
