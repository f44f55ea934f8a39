"""Run-time settings from the environment (set per stage in .chalice/config.json)."""

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Names of the AWS resources the handlers use; no secret ever lives here."""

    model_config = SettingsConfigDict(env_prefix="ROTATOR_", frozen=True)

    table_name: str = "ci-key-rotator"
    topic_arn: str = ""
    state_machine_arn: str = ""
    escrow_prefix: str = "ci-key-rotator"
    escrow_kms_key_id: str | None = None
    config_path: str = "chalicelib/rotation.yaml"
    #: Seconds a webhook delivery id is remembered for de-duplication.
    delivery_ttl_seconds: int = 7 * 24 * 3600


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
