"""Audit throughput on one core and per-event handler latency (no network: notifiers off, in-memory dedup)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from bench.audit_corpus import measure, sample_events
from chalicelib.audit.context import AuditContext
from chalicelib.audit.dedup import MemoryDeduplicator
from chalicelib.audit.pipeline import handle_event
from chalicelib.observability import metrics

CORPUS = 100_000


def run(runs: int = 3) -> dict[str, Any]:
    # The figures are the pipeline's; EMF metric lines on stdout would bury the table.
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    events = sample_events(CORPUS, match_ratio=0.3)
    ctx = AuditContext(managed_users=frozenset({"ci-deployer"}))
    # process_time on one thread: events per CPU-second of one core.
    rates = [measure(events, ctx, seconds=3.0)[0] for _ in range(runs)]
    dedup = MemoryDeduplicator()
    latencies = []
    for event in events[:20_000]:
        started = time.perf_counter()
        handle_event(event, ctx, [], dedup)
        latencies.append((time.perf_counter() - started) * 1000)
        # As each Lambda invocation's flush does: powertools prints a metric set that reaches 100 values
        # even when metrics are disabled.
        metrics.clear_metrics()
    latencies.sort()
    return {
        "audit_events_per_second": round(statistics.median(rates)),
        "audit_p50_ms": round(latencies[len(latencies) // 2], 3),
        "audit_p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
        "audit_corpus_events": CORPUS,
    }
