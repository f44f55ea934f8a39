"""What classification needs to know about this deployment: who the rotator is and whom it manages."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from chalicelib.audit.models import Record
from chalicelib.audit.profile import ManagedUserProfile
from chalicelib.audit.suppression import Suppression
from chalicelib.audit.telemetry import count, logger
from chalicelib.federation import provider_intent_subject, role_intent_subject

#: (user name, action e.g. "CreateAccessKey", access key id or None, event time) -> did the rotation
#: workflow announce this call? ``chalicelib.ledger.Ledger.find_intent`` has exactly this shape.
IntentLookup = Callable[[str, str, str | None, datetime], bool]
#: user name -> when the rotator last handled an exposure of one of that user's keys (None: never).
#: ``chalicelib.audit_handlers.exposure_lookup`` reads it from the ledger's exposure rotations.
ExposureLookup = Callable[[str], datetime | None]
#: role name -> its IAM path ("/" included), or None when no such role exists. Only role-change events that
#: do not carry the path (all but CreateRole) ask it; ``chalicelib.audit_handlers.role_path_lookup`` asks IAM.
RolePathLookup = Callable[[str], str | None]


@dataclass(frozen=True)
class Graduated:
    """What the graduation workflow made that pipelines now depend on, as its ledger records it: known without
    asking IAM, so a role that is gone (DeleteRole) is still known to have been a graduated one."""

    #: role name -> its IAM path (from the role ARN the workflow recorded).
    roles: Mapping[str, str] = field(default_factory=dict)
    #: IAM OIDC provider (the part of its ARN after ``oidc-provider/``) -> {graduated role trusting it -> the
    #: audience its pipeline's tokens carry}.
    providers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


#: () -> the graduated roles and the providers they trust; ``chalicelib.audit_handlers.graduated_lookup`` reads
#: the ledger's graduation records and graduations in flight.
GraduatedLookup = Callable[[], Graduated]

#: How long after an exposure a managed user's unexpected calls stay CRITICAL: sessions minted from the
#: leaked key live up to 36 hours (GetSessionToken's maximum); a week covers a slow attacker and the triage.
EXPOSURE_HORIZON = timedelta(days=7)

DEFAULT_ROTATOR_ROLE = "ci-key-rotator"
DEFAULT_RESOURCE_PREFIX = "ci-key-rotator"


def arn_names(arn: str, marker: str, name: str) -> bool:
    """Does ``arn`` name the IAM ``marker`` ("role"/"user") ``name``, with or without an IAM path?"""
    if not name:
        return False
    index = arn.find(f":{marker}/")
    if index < 0:
        return False
    resource = arn[index + len(marker) + 2 :]
    return resource == name or resource.endswith("/" + name)


@dataclass(frozen=True)
class AuditContext:
    managed_users: frozenset[str] = frozenset()
    #: The rotator's IAM role name; several comma-separated names when each Lambda has its own role.
    rotator_role_name: str = DEFAULT_ROTATOR_ROLE
    resource_prefix: str = DEFAULT_RESOURCE_PREFIX
    intent_lookup: IntentLookup | None = None
    #: Per managed user: what its pipeline is expected to do (``chalicelib.audit.profile``).
    profiles: Mapping[str, ManagedUserProfile] = field(default_factory=dict, compare=False)
    exposure_lookup: ExposureLookup | None = field(default=None, compare=False)
    #: The allow-list (``chalicelib.audit.suppression``), applied by the pipeline after classification.
    suppressions: tuple[Suppression, ...] = field(default=(), compare=False)
    role_path_lookup: RolePathLookup | None = field(default=None, compare=False)
    graduated_lookup: GraduatedLookup | None = field(default=None, compare=False)
    rotator_names: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        if not isinstance(self.managed_users, frozenset):
            object.__setattr__(self, "managed_users", frozenset(_as_iterable(self.managed_users)))
        names = frozenset(n.strip() for n in (self.rotator_role_name or "").split(",") if n.strip())
        object.__setattr__(self, "rotator_names", names)
        object.__setattr__(self, "_exposures", {})
        object.__setattr__(self, "_role_paths", {})
        object.__setattr__(self, "_graduated", [])

    def is_rotator(self, record: Record) -> bool:
        """Was this call made by the rotator: its role (session issuer), or an IAM user of that name?"""
        if record.issuer_arn:
            return self.is_rotator_role_arn(record.issuer_arn)
        identity = record.identity
        if identity.type != "IAMUser" or not identity.arn:
            return False
        return any(arn_names(identity.arn, "user", name) for name in self.rotator_names)

    def announced_role_change(self, record: Record) -> bool:
        """A call on a role made by the rotator's identity AND announced by the workflow beforehand (graduation
        records its role changes under ``federation.role_intent_subject``): the rotator's own, expected change."""
        role = record.params.get("roleName")
        if not isinstance(role, str) or not role or not self.is_rotator(record):
            return False
        return self.intended(role_intent_subject(role), record.name, None, record.event_time)

    def announced_provider_change(self, record: Record, provider: str) -> bool:
        """The same for an IAM OIDC provider (``provider``: its ARN's part after ``oidc-provider/``), announced
        under ``federation.provider_intent_subject``."""
        if not provider or not self.is_rotator(record):
            return False
        return self.intended(provider_intent_subject(provider), record.name, None, record.event_time)

    def is_rotator_role_arn(self, arn: str) -> bool:
        return bool(arn) and any(arn_names(arn, "role", name) for name in self.rotator_names)

    def is_managed(self, user: str) -> bool:
        return user in self.managed_users

    def is_protected_user(self, user: str) -> bool:
        """A managed CI user, or the rotator's own IAM user (local runtime)."""
        return bool(user) and (user in self.managed_users or user in self.rotator_names)

    def managed_caller(self, record: Record) -> str:
        """The managed CI user who made this call with its own key, or "" (one dict lookup: this runs
        on every event)."""
        identity = record.identity
        kind = identity.type
        if kind == "IAMUser":
            # Also a GetSessionToken session: CloudTrail logs its calls as the IAM user (ASIA key id).
            name = identity.userName
        elif kind == "FederatedUser" and identity.sessionContext and identity.sessionContext.sessionIssuer:
            # A GetFederationToken session: the issuer is the IAM user whose key minted it.
            name = identity.sessionContext.sessionIssuer.userName
        else:
            return ""
        return name if name and name in self.managed_users else ""

    def profile(self, user: str) -> ManagedUserProfile | None:
        return self.profiles.get(user)

    def exposed_before(self, user: str, at: datetime | None) -> datetime | None:
        """When ``user``'s key was exposed, if that was before ``at`` and within EXPOSURE_HORIZON.
        A failing lookup means "not known to be exposed" (the finding is HIGH already) and is logged."""
        if self.exposure_lookup is None or at is None or not user:
            return None
        cache: dict[str, datetime | None] = self._exposures  # type: ignore[attr-defined]  # set in __post_init__ of the frozen dataclass
        if user not in cache:
            try:
                cache[user] = self.exposure_lookup(user)
            except Exception as exc:  # noqa: BLE001 - a severity lookup must not lose the finding
                logger.warning("exposure lookup failed", extra={"user": user, "error": type(exc).__name__})
                return None
        exposed = cache[user]
        if exposed is None:
            return None
        # CloudTrail times carry a zone; a hand-made event or ledger row may not (both are UTC).
        at, exposed = _utc(at), _utc(exposed)
        if exposed > at or at - exposed > EXPOSURE_HORIZON:
            return None
        return exposed

    def role_path(self, role: str) -> str | None:
        """The IAM path of ``role``, asked once per role per context; when IAM does not know it (no such role:
        it was just deleted; or a failing lookup, which is logged and counted), the path the ledger recorded
        for a graduated role of that name; else None (policy and trust changes still get the generic
        iam-policy finding)."""
        if not role:
            return None
        path = self._iam_role_path(role)
        return path if path is not None else self.graduated().roles.get(role)

    def graduated(self) -> Graduated:
        """The graduated roles and their providers, read once per context; nothing known when there is no
        lookup or it fails (logged and counted: a deleted graduated role goes unrated meanwhile)."""
        cache: list[Graduated] = self._graduated  # type: ignore[attr-defined]  # set in __post_init__ of the frozen dataclass
        if not cache:
            if self.graduated_lookup is None:
                return Graduated()
            try:
                cache.append(self.graduated_lookup())
            except Exception as exc:  # noqa: BLE001 - a lookup must not lose the other findings
                logger.warning("graduated roles lookup failed", extra={"error": type(exc).__name__})
                count("GraduatedLookupFailures")
                cache.append(Graduated())
        return cache[0]

    def _iam_role_path(self, role: str) -> str | None:
        if self.role_path_lookup is None:
            return None
        cache: dict[str, str | None] = self._role_paths  # type: ignore[attr-defined]  # set in __post_init__ of the frozen dataclass
        if role not in cache:
            try:
                cache[role] = self.role_path_lookup(role)
            except Exception as exc:  # noqa: BLE001 - a lookup must not lose the other findings
                logger.warning("role path lookup failed", extra={"role": role, "error": type(exc).__name__})
                count("RolePathLookupFailures")  # an alarm can watch it: graduated-role changes go unrated meanwhile
                return None
        return cache[role]

    def owns(self, resource_name: str) -> bool:
        """Is this one of the product's own resources (Lambdas, rules, state machine, table...)?"""
        return bool(self.resource_prefix) and resource_name.startswith(self.resource_prefix)

    def intended(self, user: str, action: str, key_id: str | None, at: datetime | None) -> bool:
        """Did the workflow announce this call? No lookup, no time or a failing lookup all mean no:
        an unconfirmed change made with the rotator's identity must alert, never pass silently."""
        if self.intent_lookup is None or at is None or not user:
            return False
        try:
            return bool(self.intent_lookup(user, action, key_id, at))
        except Exception as exc:  # noqa: BLE001 - fail closed
            logger.warning("intent lookup failed; treating the change as unannounced",
                           extra={"user": user, "action": action, "error": type(exc).__name__})
            return False


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _as_iterable(value: Iterable[str] | str | None) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return value
