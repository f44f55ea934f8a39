"""Audit throughput on one core and per-event handler latency (no network: notifiers off, in-memory dedup)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from bench.audit_corpus import measure, measure_floor, sample_events
from chalicelib.audit.context import AuditContext
from chalicelib.audit.dedup import MemoryDeduplicator
from chalicelib.audit.pipeline import handle_event
from chalicelib.observability import metrics

CORPUS = 100_000
#: Classification may cost at most this many times the floor (parse + event-name lookup) on one corpus.
MAX_COST_RATIO = 3.0


def run(runs: int = 3) -> dict[str, Any]:
    # The figures are the pipeline's; EMF metric lines on stdout would bury the table.
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    events = sample_events(CORPUS, match_ratio=0.3)
    ctx = AuditContext(managed_users=frozenset({"ci-deployer"}))
    # process_time on one thread: events per CPU-second of one core.
    # Each run measures the floor right after classify, on the same corpus and core: the ratio cancels
    # the machine's speed out, so it is comparable across machines where the absolute figure is not.
    rates, ratios = [], []
    for _ in range(runs):
        rate = measure(events, ctx, seconds=3.0)[0]
        rates.append(rate)
        ratios.append(measure_floor(events, seconds=3.0) / rate)
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
        "audit_cost_ratio": round(statistics.median(ratios), 2),
        "audit_p50_ms": round(latencies[len(latencies) // 2], 3),
        "audit_p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
        "audit_corpus_events": CORPUS,
    }
