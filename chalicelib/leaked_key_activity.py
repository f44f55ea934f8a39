"""What a leaked key did: its recent CloudTrail events, classified by the audit's detections, for the page.

CloudTrail's event history answers ``LookupEvents`` by ``AccessKeyId`` for the last 90 days of management
events (https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_LookupEvents.html; at most 50 a
page, 2 calls a second per account). Calls made with sessions minted from the key carry the session's key id;
its GetSessionToken calls are listed here and name each session's key id in ``responseElements``.

The lookup never stands in the way of containment: it runs after the emergency rotation started, and any
failure is reported in the summary, not raised.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import clock
from chalicelib.audit.pipeline import classify
from chalicelib.audit.service import build_context
from chalicelib.aws import client, error_code
from chalicelib.deps import Deps
from chalicelib.observability import logger

DAYS = 7
#: 10 pages of 50: enough to see what an attacker did, within a Lambda's seconds and LookupEvents' 2 TPS.
MAX_PAGES = 10
MAX_FINDINGS = 20


def lookup(key_id: str, days: int = DAYS) -> tuple[list[dict[str, Any]], bool]:
    """The key's CloudTrail records of the last ``days``, newest first, and whether there were more."""
    trail = client("cloudtrail")
    end = clock.now()
    request: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": key_id}],
        "StartTime": end - timedelta(days=days), "EndTime": end, "MaxResults": 50,
    }
    records: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        page = trail.lookup_events(**request)
        for event in page.get("Events", []):
            try:
                records.append(json.loads(event["CloudTrailEvent"]))
            except (KeyError, TypeError, ValueError):
                continue
        if not page.get("NextToken"):
            return records, False
        request["NextToken"] = page["NextToken"]
    return records, True


def summarise(deps: Deps, key_id: str) -> dict[str, Any]:
    """Counts per event, failed calls, source IPs, sessions minted and the audit's findings."""
    try:
        records, truncated = lookup(key_id)
    except (ClientError, BotoCoreError) as exc:
        code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        logger.warning("leaked key activity not looked up", extra={"access_key_id": key_id, "error": code})
        return {"days": DAYS, "error": f"CloudTrail LookupEvents failed: {code}"}
    from chalicelib.audit_handlers import exposure_lookup

    config = deps.config
    context = build_context([u.name for u in config.users], deps.ledger.find_intent,
                            profiles={u.name: u.profile for u in config.users if u.profile is not None},
                            exposure_lookup=exposure_lookup)
    findings = sorted(classify({"Records": records}, context), key=lambda f: -f.severity.rank)
    by_event = Counter(f"{str(r.get('eventSource', '')).split('.')[0]}:{r.get('eventName')}" for r in records)
    sessions = sorted({str(((r.get("responseElements") or {}).get("credentials") or {}).get("accessKeyId"))
                       for r in records if r.get("eventName") in ("GetSessionToken", "GetFederationToken")
                       and not r.get("errorCode")} - {"None"})
    return {
        "days": DAYS,
        "events": len(records),
        "truncated": truncated,
        "by_event": dict(by_event.most_common()),
        "failed_calls": sum(1 for r in records if r.get("errorCode")),
        "source_ips": sorted({str(r.get("sourceIPAddress")) for r in records if r.get("sourceIPAddress")})[:10],
        "sessions_minted": sessions,
        "findings": [{"severity": f.severity.value, "detection": f.detection, "title": f.title,
                      "action": f.action, "event_time": f.event_time.isoformat() if f.event_time else None}
                     for f in findings[:MAX_FINDINGS]],
    }
