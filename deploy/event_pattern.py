"""The EventBridge pattern of the audit rule, derived from the detections so the two cannot drift.

One rule (Chalice gives a function one rule): the CloudTrail events some detection indexes, any root
activity, any denied call, and AWS Health RISK events. It must fit EventBridge's *default* pattern quota,
2,048 characters as Chalice sends it (``json.dumps`` with its default separators, spaces included;
4,096 only after a quota increase): https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html

The exact list of eventNames does not fit, so the derivation compresses it: names sharing a leading verb
(``Delete…``, ``Put…``) become one ``prefix`` matcher, the verbs that save most first, until the pattern
fits. The rule then admits a superset of what the detections index; the classifier indexes on
eventSource and eventName, so an extra event costs one dict lookup in the Lambda and yields nothing.
No prefix is ever a ``Get``/``List``/``Describe`` verb, so none admits the high-volume reads; the only read
names are exact: ``WATCHED_READS``, the session-minting calls (each admits itself, one call per session).

Root activity and denied calls include read-only calls (a root ``ListUsers``, a denied ``GetSecretValue``),
which reach a rule only in state ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail-management.html):
``AUDIT_RULE_STATE``; Chalice cannot set it, ``deploy`` does. IAM and sign-in events exist only in us-east-1.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chalicelib.audit.detections.base import ANY
from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.models import CLOUDTRAIL_DETAIL_TYPES, HEALTH_DETAIL_TYPE, HEALTH_SOURCE

#: EventBridge's default quota on a rule's pattern, in characters (adjustable up to 4,096).
MAX_PATTERN_CHARS = 2048
#: The rule state that lets read-only management events through (root reads, denied reads).
AUDIT_RULE_STATE = "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
#: Names with these prefixes are the read-only calls whose volume the admitting state would let in.
READ_PREFIXES = ("Get", "List", "Describe")
#: Read-only names the detections need, matched exactly: session minting with a CI key (managed_user.py).
WATCHED_READS = frozenset({"GetSessionToken", "GetFederationToken", "GetSigninToken"})
# Lambda's eventNames carry an API version suffix (UpdateFunctionCode20150331v2) that an exact name
# cannot spell: its names are matched as prefixes.
_VERSIONED_SOURCES = frozenset({"lambda.amazonaws.com"})
_VERB = re.compile(r"^[A-Z][a-z]+")

Matcher = str | dict[str, str]


def chalice_size(pattern: dict[str, Any]) -> int:
    """The pattern's size as EventBridge counts it: Chalice sends ``json.dumps(pattern)``."""
    return len(json.dumps(pattern))


def event_sources() -> list[str]:
    return sorted({s for d in all_detections() for s in d.triggers if s not in (ANY, HEALTH_SOURCE)})


def indexed_names() -> dict[str, set[str]]:
    """eventSource -> the eventNames some detection indexes (a source indexed whole adds none)."""
    names: dict[str, set[str]] = {}
    for detection in all_detections():
        for source, wanted in detection.triggers.items():
            if source in (ANY, HEALTH_SOURCE):
                continue
            # A source indexed whole sees the names other matchers admit; "" would match no event.
            names.setdefault(source, set()).update(wanted or ())
    return names


def _exact_matchers() -> list[Matcher]:
    matchers: set[str] = set()
    prefixes: set[str] = set()
    for source, names in indexed_names().items():
        (prefixes if source in _VERSIONED_SOURCES else matchers).update(names)
    exact = sorted(m for m in matchers if not m.startswith(tuple(prefixes)))
    return [*exact, *({"prefix": p} for p in sorted(prefixes))]


def _text(matcher: Matcher) -> str:
    return matcher if isinstance(matcher, str) else matcher["prefix"]


def _compress(matchers: list[Matcher], verb: str) -> list[Matcher]:
    kept = [m for m in matchers if not _text(m).startswith(verb)]
    return [*kept, {"prefix": verb}]


def _saving(matchers: list[Matcher], verb: str) -> int:
    return chalice_size({"m": matchers}) - chalice_size({"m": _compress(matchers, verb)})


def _pattern(names: list[Matcher], sources: list[Matcher] | None = None) -> dict[str, Any]:
    return {
        "detail-type": [*CLOUDTRAIL_DETAIL_TYPES, HEALTH_DETAIL_TYPE],
        "$or": [
            {"detail": {"eventSource": sources if sources is not None else event_sources(), "eventName": names}},
            {"detail": {"userIdentity": {"type": ["Root"]}}},
            {"detail": {"errorCode": [{"prefix": "AccessDenied"}, {"suffix": "UnauthorizedOperation"}]}},
            {"source": [HEALTH_SOURCE], "detail": {"service": ["RISK"]}},
        ],
    }


def _source_prefixes(sources: list[Matcher]) -> set[str]:
    """Leading parts shared by two or more listed sources (``ss`` for ssm and sso, ``s`` for s3 and sts)."""
    texts = [s for s in sources if isinstance(s, str)]
    found = set()
    for text in texts:
        for end in range(1, text.index(".") if "." in text else len(text)):
            if sum(other.startswith(text[:end]) for other in texts) > 1:
                found.add(text[:end])
    return found


def audit_event_pattern(limit: int = MAX_PATTERN_CHARS) -> dict[str, Any]:
    """For ``@app.on_cw_event(...)``: exact names where they fit, verb prefixes where they do not, and
    only then source prefixes (a prefix admits the named calls of every service it starts)."""
    names = _exact_matchers()
    sources: list[Matcher] = list(event_sources())
    while chalice_size(_pattern(names, sources)) > limit:
        verbs = ({m.group(0) for n in names if (m := _VERB.match(_text(n)))} - {_text(n) for n in names}
                 - set(READ_PREFIXES))
        if verbs:
            # Most characters saved first; ties by name, so the stored pattern is reproducible.
            best = max(sorted(verbs), key=lambda verb: _saving(names, verb))
            names = _compress(names, best)
            continue
        shared = _source_prefixes(sources)
        if not shared:
            raise ValueError(f"the detections' events need more than {limit} characters even as prefixes")
        # Most saved first; among equals the longest (narrowest) prefix.
        best = max(sorted(shared), key=lambda p: (_saving(sources, p), len(p)))
        sources = _compress(sources, best)
    names.sort(key=lambda m: (isinstance(m, dict), _text(m)))
    sources.sort(key=lambda m: (isinstance(m, dict), _text(m)))
    return _pattern(names, sources)


def read_only_matchers(pattern: dict[str, Any]) -> list[Matcher]:
    """The pattern's eventName matchers that would admit a Get/List/Describe call other than the exact
    ``WATCHED_READS`` (should be none)."""
    found = []
    for clause in pattern["$or"]:
        for matcher in clause.get("detail", {}).get("eventName", []):
            text = _text(matcher)
            if isinstance(matcher, str) and text in WATCHED_READS:
                continue
            if text.startswith(READ_PREFIXES) or any(p.startswith(text) for p in READ_PREFIXES):
                found.append(matcher)
    return found


if __name__ == "__main__":
    import sys

    from chalicelib.event_patterns import STORED

    if "--write" in sys.argv[1:]:  # app.py reads the stored copy (chalicelib/event_patterns.py says why)
        STORED.write_text(json.dumps(audit_event_pattern(), indent=1) + "\n")
    else:
        print(json.dumps(audit_event_pattern()))
