"""What a managed CI user is expected to do: the calls it makes, from where, and whether it may mint sessions.

A CI key is held by a pipeline that does the same few things from the same few places; anything else done
with it is the first thing to look at when the key leaks. ``expected`` names calls as CloudTrail spells them,
``<service>:<EventName>`` where ``<service>`` is the eventSource's first label (``s3:PutObject``,
``cloudfront:CreateInvalidation``), ``<service>:*`` for a whole service, or a glob (``ecr:*Layer*``).
``source_cidrs`` are the runners' egress ranges; GitHub publishes its hosted runners' ranges in the
``actions`` list of https://api.github.com/meta (https://docs.github.com/en/rest/meta/meta), GitLab.com's
are documented at https://docs.gitlab.com/user/gitlab_com/#ip-range. An empty list means "not checked".
"""

from __future__ import annotations

import fnmatch
import ipaddress
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

_SERVICE_CALL = r"^[a-z0-9-]+:[A-Za-z0-9*?]+$"


class ManagedUserProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Calls the pipeline makes (``service:EventName``, ``service:*``, globs). Empty: not checked.
    expected: list[str] = Field(default_factory=list)
    #: Where the pipeline runs (its runners' egress CIDRs). Empty: not checked.
    source_cidrs: list[IPvAnyNetwork] = Field(default_factory=list)
    #: GetSessionToken/GetFederationToken are normal for this pipeline (they are HIGH otherwise: sessions
    #: minted from a key outlive the key's deactivation).
    may_mint_sessions: bool = False

    @field_validator("expected")
    @classmethod
    def _calls(cls, values: list[str]) -> list[str]:
        import re

        bad = [v for v in values if not re.match(_SERVICE_CALL, v)]
        if bad:
            raise ValueError(f"expected calls are '<service>:<EventName>' (e.g. s3:PutObject, s3:*), not {bad}")
        return values

    @cached_property
    def _exact(self) -> frozenset[str]:
        return frozenset(v for v in self.expected if not any(c in v for c in "*?"))

    @cached_property
    def _globs(self) -> tuple[str, ...]:
        return tuple(v for v in self.expected if any(c in v for c in "*?"))

    def expects(self, action: str) -> bool:
        """Is ``service:EventName`` part of the profile (always, when the profile lists no calls)?"""
        if not self.expected or action in self._exact:
            return True
        return any(fnmatch.fnmatchcase(action, g) for g in self._globs)

    def from_expected_place(self, source_ip: str | None) -> bool:
        """Is the caller's address in the profile's CIDRs (always, when it lists none)? AWS services
        calling on the user's behalf put a service name here, not an address: those are not checked."""
        if not self.source_cidrs or not source_ip:
            return True
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return True
        return any(address.version == net.version and address in net for net in self.source_cidrs)
