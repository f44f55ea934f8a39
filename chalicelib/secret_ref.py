"""References to secrets held in Secrets Manager or SSM; the configuration never holds a secret."""

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from chalicelib import aws

# Values that are obviously a credential pasted where its *location* belongs.
_LOOKS_LIKE_A_TOKEN = re.compile(
    r"^(gh[pousr]_|github_pat_|glpat-|glptt-|xox[abp]-|CCIPAT_|AKIA|ASIA|ATBB|https://hooks\.slack\.com/)"
)

#: Seconds a resolved secret is cached in the Lambda container (powertools Parameters).
CACHE_SECONDS = 300


class SecretRef(BaseModel):
    """Where a secret lives, written ``secretsmanager:<name>`` or ``ssm:<parameter name>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["secretsmanager", "ssm"]
    name: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            if _LOOKS_LIKE_A_TOKEN.match(value):
                raise ValueError(
                    "looks like a secret value; give where it is stored "
                    "('secretsmanager:<name>' or 'ssm:<parameter>'), never the secret itself"
                )
            source, sep, name = value.partition(":")
            if not sep or not name or source not in ("secretsmanager", "ssm"):
                raise ValueError("must be 'secretsmanager:<name>' or 'ssm:<parameter name>'")
            return {"source": source, "name": name}
        return value

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"

    def resolve(self) -> str:
        """The secret's value, cached for CACHE_SECONDS per identity (powertools Parameters, signed by the
        running Lambda's identity: see chalicelib.aws). Never log the result."""
        if self.source == "secretsmanager":
            value = aws.secrets_provider().get(self.name, max_age=CACHE_SECONDS)
        else:
            value = aws.ssm_provider().get(self.name, decrypt=True, max_age=CACHE_SECONDS)
        if not isinstance(value, str):
            value = value.decode() if isinstance(value, bytes) else str(value)
        return value
