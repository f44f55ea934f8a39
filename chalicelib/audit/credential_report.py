"""Daily posture audit from the IAM credential report: old keys, unused keys, two active keys, root keys.

IAM refreshes the report at most every 4 hours; it covers what events cannot (a key nobody touched for
months). One digest finding for the users' keys, plus a separate CRITICAL one when root holds a key.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, dedup_key
from chalicelib.audit.detections.key_lifecycle import CREDENTIAL_REPORT
from chalicelib.audit.detections.root import ROOT_ACCESS_KEY_PRESENT
from chalicelib.audit.finding import Finding, Severity

ROOT_USER = "<root_account>"
CONSOLE_URL = "https://console.aws.amazon.com/iam/home#/credential_report"
_NOT_A_DATE = frozenset({"", "N/A", "no_information", "not_supported"})
#: Lines in the digest's summary; the rest is counted.
MAX_LINES = 40


class CredentialReportUnavailable(Exception):
    """IAM did not produce the report within the polling budget."""


@dataclass(frozen=True)
class KeyPolicy:
    max_age_days: int = 90  # CIS 1.14 / Security Hub IAM.3
    unused_days: int = 45  # CIS 1.12 / Security Hub IAM.22


@dataclass(frozen=True)
class KeyInfo:
    slot: int
    active: bool
    last_rotated: datetime | None
    last_used: datetime | None


@dataclass(frozen=True)
class UserRow:
    user: str
    arn: str
    created: datetime | None
    keys: tuple[KeyInfo, ...]

    @property
    def is_root(self) -> bool:
        return self.user == ROOT_USER

    @property
    def account(self) -> str | None:
        parts = self.arn.split(":")
        return parts[4] if len(parts) > 4 and parts[4] else None


def _date(value: str | None) -> datetime | None:
    if value is None or value in _NOT_A_DATE:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_credential_report(text: str) -> list[UserRow]:
    """Rows of the CSV IAM returns; unknown columns are ignored, missing ones read as "no data"."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        keys = tuple(
            KeyInfo(
                slot=slot,
                active=(raw.get(f"access_key_{slot}_active") or "").lower() == "true",
                last_rotated=_date(raw.get(f"access_key_{slot}_last_rotated")),
                last_used=_date(raw.get(f"access_key_{slot}_last_used_date")),
            )
            for slot in (1, 2)
        )
        rows.append(
            UserRow(user=raw.get("user") or "", arn=raw.get("arn") or "",
                    created=_date(raw.get("user_creation_time")), keys=keys)
        )
    return rows


def fetch_credential_report(
    iam: Any, *, attempts: int = 15, delay: float = 2.0, sleep: Callable[[float], None] = time.sleep
) -> tuple[str, datetime | None]:
    """Generate (poll until COMPLETE, bounded) and download the report: (CSV text, generated time)."""
    for attempt in range(attempts):
        state = iam.generate_credential_report().get("State")
        if state == "COMPLETE":
            try:
                response = iam.get_credential_report()
            except ClientError as exc:
                # ReportInProgress / ReportExpired race with generation: poll again.
                if attempt + 1 >= attempts:
                    raise CredentialReportUnavailable(f"credential report not readable: {exc}") from None
            else:
                content = response["Content"]
                text = content.decode("utf-8") if isinstance(content, bytes) else str(content)
                return text, response.get("GeneratedTime")
        if attempt + 1 < attempts:
            sleep(delay)
    raise CredentialReportUnavailable(f"credential report not COMPLETE after {attempts} attempts")


def _days(delta: timedelta) -> int:
    return int(delta.total_seconds() // 86400)


def key_issues(
    row: UserRow, policy: KeyPolicy, now: datetime, rotating_users: Iterable[str] = ()
) -> list[str]:
    """Human-readable problems with one user's keys (empty when compliant)."""
    issues = []
    active = [k for k in row.keys if k.active]
    for key in active:
        if key.last_rotated and _days(now - key.last_rotated) > policy.max_age_days:
            issues.append(
                f"access key {key.slot} is {_days(now - key.last_rotated)} days old "
                f"(policy {policy.max_age_days})"
            )
        since = key.last_used or key.last_rotated or row.created
        if since and _days(now - since) >= policy.unused_days:
            what = "last used" if key.last_used else "never used, created"
            issues.append(f"access key {key.slot} is active and {what} {_days(now - since)} days ago")
    # A rotation in flight briefly holds two active keys by design (create, verify, then retire).
    if len(active) > 1 and row.user not in set(rotating_users):
        issues.append("two active access keys")
    return issues


def audit_credential_report(
    rows: Iterable[UserRow],
    ctx: AuditContext,
    policy: KeyPolicy = KeyPolicy(),
    now: datetime | None = None,
    rotating_users: Iterable[str] = (),
    generated: datetime | None = None,
) -> list[Finding]:
    now = now or datetime.now(UTC)
    rotating = set(rotating_users)
    rows = list(rows)
    findings: list[Finding] = []
    account = next((r.account for r in rows if r.account), None)
    lines: list[str] = []
    affected: list[str] = []
    managed_hit = False
    for row in rows:
        if row.is_root:
            root_keys = [k.slot for k in row.keys if k.active]
            if root_keys:
                findings.append(
                    _finding(ROOT_ACCESS_KEY_PRESENT, Severity.CRITICAL,
                             f"The root user of account {account or '?'} has {len(root_keys)} active access "
                             "key(s). Delete them: root keys cannot be scoped down.",
                             [row.arn or ROOT_USER], account, generated or now, ("root", str(root_keys)))
                )
            continue
        issues = key_issues(row, policy, now, rotating)
        if not issues:
            continue
        affected.append(row.user)
        managed = ctx.is_protected_user(row.user)
        managed_hit = managed_hit or managed
        label = f"{row.user} (managed)" if managed else row.user
        lines.extend(f"• {label}: {issue}" for issue in issues)
    if lines:
        shown = lines[:MAX_LINES]
        if len(lines) > MAX_LINES:
            shown.append(f"… and {len(lines) - MAX_LINES} more")
        summary = (
            f"Credential report: {len(lines)} issue(s) across {len(affected)} user(s) "
            f"(policy: rotate within {policy.max_age_days} days, disable after {policy.unused_days} days "
            "unused, one active key per user)\n" + "\n".join(shown)
        )
        severity = Severity.HIGH if managed_hit else Severity.MEDIUM
        findings.insert(
            0,
            _finding(CREDENTIAL_REPORT, severity, summary, sorted(affected), account, generated or now,
                     ("digest", *lines)),
        )
    return findings


def _finding(
    detection: Detection, severity: Severity, summary: str, resources: list[str], account: str | None,
    when: datetime, dedup_parts: tuple[str, ...],
) -> Finding:
    return Finding(
        detection=detection.id,
        category=detection.category,
        severity=severity,
        title=detection.title,
        principal="IAM credential report",
        action="iam:GetCredentialReport",
        summary=summary,
        event_id=f"credential-report-{when.date().isoformat()}",
        event_time=when,
        account=account,
        region="us-east-1",
        resources=resources,
        dedup_key=dedup_key(detection.id, dedup_parts),
        console_url=CONSOLE_URL,
    )


def run_credential_report(
    ctx: AuditContext,
    policy: KeyPolicy = KeyPolicy(),
    *,
    iam: Any = None,
    now: datetime | None = None,
    rotating_users: Iterable[str] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> list[Finding]:
    """The scheduled job: fetch, parse, audit. Raises CredentialReportUnavailable if IAM never finishes."""
    if iam is None:
        from chalicelib.aws import client

        iam = client("iam")
    text, generated = fetch_credential_report(iam, sleep=sleep)
    return audit_credential_report(
        parse_credential_report(text), ctx, policy, now=now, rotating_users=rotating_users,
        generated=generated if isinstance(generated, datetime) else None,
    )
