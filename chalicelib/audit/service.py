"""Wiring for app.py: build context, notifiers and dedup from settings; one call per handler."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from chalicelib.audit.allow_list_log import DynamoAllowListLog, digest
from chalicelib.audit.context import (
    AuditContext,
    ExposureLookup,
    GraduatedLookup,
    IntentLookup,
    RolePathLookup,
)
from chalicelib.audit.credential_report import KeyPolicy, run_credential_report
from chalicelib.audit.dedup import Deduplicator, DynamoDeduplicator
from chalicelib.audit.notifiers.base import Notifier
from chalicelib.audit.notifiers.slack import SlackNotifier
from chalicelib.audit.notifiers.sns import SnsNotifier
from chalicelib.audit.pipeline import handle_event, notify_findings
from chalicelib.audit.profile import ManagedUserProfile
from chalicelib.audit.settings import AuditSettings, get_audit_settings
from chalicelib.audit.suppression import Suppression
from chalicelib.audit.telemetry import logger


def build_context(
    managed_users: Iterable[str], intent_lookup: IntentLookup | None, settings: AuditSettings | None = None,
    *, profiles: Mapping[str, ManagedUserProfile] | None = None, suppressions: Sequence[Suppression] = (),
    exposure_lookup: ExposureLookup | None = None, role_path_lookup: RolePathLookup | None = None,
    graduated_lookup: GraduatedLookup | None = None,
) -> AuditContext:
    settings = settings or get_audit_settings()
    return AuditContext(
        managed_users=frozenset(managed_users),
        rotator_role_name=settings.audit_rotator_role,
        resource_prefix=settings.audit_resource_prefix,
        intent_lookup=intent_lookup,
        profiles=dict(profiles or {}),
        exposure_lookup=exposure_lookup,
        suppressions=tuple(suppressions),
        role_path_lookup=role_path_lookup,
        graduated_lookup=graduated_lookup,
    )


def build_notifiers(settings: AuditSettings | None = None) -> list[Notifier]:
    settings = settings or get_audit_settings()
    notifiers: list[Notifier] = []
    if settings.slack_webhook_ref is not None:
        notifiers.append(SlackNotifier(settings.slack_webhook_ref, min_severity=settings.audit_slack_min_severity))
    if settings.findings_topic_arn:
        notifiers.append(SnsNotifier(settings.findings_topic_arn))
    return notifiers


def build_dedup(settings: AuditSettings | None = None) -> Deduplicator:
    settings = settings or get_audit_settings()
    return DynamoDeduplicator(settings.table_name, settings.audit_dedup_window_seconds)


def audit_event(
    event: Any, *, managed_users: Iterable[str], intent_lookup: IntentLookup | None,
    settings: AuditSettings | None = None, profiles: Mapping[str, ManagedUserProfile] | None = None,
    suppressions: Sequence[Suppression] = (), exposure_lookup: ExposureLookup | None = None,
    role_path_lookup: RolePathLookup | None = None, graduated_lookup: GraduatedLookup | None = None,
) -> dict[str, Any]:
    """The EventBridge audit Lambda's body."""
    settings = settings or get_audit_settings()
    return handle_event(
        event,
        build_context(managed_users, intent_lookup, settings, profiles=profiles, suppressions=suppressions,
                      exposure_lookup=exposure_lookup, role_path_lookup=role_path_lookup,
                      graduated_lookup=graduated_lookup),
        build_notifiers(settings),
        build_dedup(settings),
        min_severity=settings.audit_min_severity,
        allow_log=DynamoAllowListLog(settings.table_name),
    )


def credential_report_audit(
    *,
    managed_users: Iterable[str],
    rotating_users: Iterable[str] = (),
    settings: AuditSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The daily scheduled credential-report audit's body. ``rotating_users``: users with a rotation in
    flight (two active keys is expected for them)."""
    settings = settings or get_audit_settings()
    ctx = build_context(managed_users, None, settings)
    policy = KeyPolicy(settings.audit_key_max_age_days, settings.audit_key_unused_days)
    findings = run_credential_report(ctx, policy, rotating_users=rotating_users, sleep=sleep)
    try:
        quieted = digest(DynamoAllowListLog(settings.table_name))
    except Exception as exc:  # noqa: BLE001 - the credential report must still go out
        logger.warning("allow-list digest unavailable", extra={"error": type(exc).__name__})
        quieted = None
    if quieted is not None:
        findings.append(quieted)
    return notify_findings(
        findings, build_notifiers(settings), build_dedup(settings), min_severity=settings.audit_min_severity
    )
