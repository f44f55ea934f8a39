"""Run-time settings from the environment (set per stage in .chalice/config.json)."""

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Names of the AWS resources the handlers use; no secret ever lives here."""

    model_config = SettingsConfigDict(env_prefix="ROTATOR_", frozen=True)

    table_name: str = "ci-key-rotator"
    topic_arn: str = ""
    state_machine_arn: str = ""
    #: The undo state machine (statemachine/undo.asl.json); by default the rotation's ARN ending in -undo.
    undo_state_machine_arn: str = ""
    #: The graduation state machine; by default the rotation's ARN ending in -graduate.
    graduate_state_machine_arn: str = ""
    escrow_prefix: str = "ci-key-rotator"
    escrow_kms_key_id: str | None = None
    #: Comma-separated ARN patterns of the only principals that may read or write an escrowed secret (the
    #: escrow's functions' roles and the break-glass role); every escrow secret's resource policy denies
    #: everyone else, administrators included.
    escrow_principals: str = ""
    config_path: str = "chalicelib/rotation.yaml"
    #: Seconds a webhook delivery id is remembered for de-duplication.
    delivery_ttl_seconds: int = 7 * 24 * 3600

    @property
    def undo_machine_arn(self) -> str:
        if self.undo_state_machine_arn or not self.state_machine_arn.endswith("-rotation"):
            return self.undo_state_machine_arn
        return self.state_machine_arn.removesuffix("-rotation") + "-undo"

    @property
    def graduate_machine_arn(self) -> str:
        """The graduation state machine (statemachine/graduate.asl.json): the rotation's ARN ending in -graduate."""
        if self.graduate_state_machine_arn or not self.state_machine_arn.endswith("-rotation"):
            return self.graduate_state_machine_arn
        return self.state_machine_arn.removesuffix("-rotation") + "-graduate"

    @property
    def escrow_principal_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.escrow_principals.split(",") if p.strip())


#: Bumped by ``forget``. Settings are cached per generation rather than merely cleared: a thread that was
#: reading the old environment while it changed stores its result under the old generation, where no
#: later caller looks (the local runtime's poller runs while tests change the environment).
_generation = 0


def get_settings() -> Settings:
    return _settings_of(_generation)


@lru_cache(maxsize=2)
def _settings_of(generation: int) -> Settings:
    return Settings()


def forget() -> None:
    """Read the environment again on next use (call it after changing the environment)."""
    global _generation
    _generation += 1
    _settings_of.cache_clear()
