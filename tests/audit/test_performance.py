"""Classification stays fast: indexed detections, one validation per record, no per-event compiles."""

from __future__ import annotations

import re

from bench.audit_corpus import measure, sample_events
from chalicelib.audit.context import AuditContext

# A floor far below the target (>= 20,000 events/s per core) so a loaded CI machine does not flake;
# it still catches an accidental per-event regex compile or a linear scan over every detection.
FLOOR = 4_000


def test_classification_throughput() -> None:
    events = sample_events(1500, match_ratio=0.3)
    rate, findings = measure(events, AuditContext({"ci-user-0"}), seconds=0.6)
    assert findings >= 450
    print(f"classify: {rate:,.0f} events/s per core")
    assert rate >= FLOOR


def test_no_regex_is_compiled_per_event(monkeypatch) -> None:
    events = sample_events(300, match_ratio=1.0)
    ctx = AuditContext({"ci-user-0"})
    measure(events[:50], ctx, seconds=0.0)  # warm up module-level state
    compiled: list[str] = []
    real = re._compile  # what re.compile/match/sub/... all go through

    def spy(pattern, flags):
        compiled.append(str(pattern))
        return real(pattern, flags)

    monkeypatch.setattr(re, "_compile", spy)
    re.purge()
    measure(events, ctx, seconds=0.0)
    assert compiled == []
