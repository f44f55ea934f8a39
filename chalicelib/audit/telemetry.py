"""Logger and metrics for the audit pipeline.

The logger is the product's shared powertools Logger. ``metrics`` is a powertools Metrics instance;
powertools keeps one metric set per process, so decorating the audit handler with
``@metrics.log_metrics`` (this instance or the app's own) flushes what the pipeline recorded.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.observability import SERVICE, logger

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "CIKeyRotator")
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

__all__ = ["NAMESPACE", "MetricUnit", "count", "logger", "metrics"]


def count(name: str, value: int = 1, target: Metrics | None = None) -> None:
    """Add ``value`` to counter ``name``; metrics must never break the pipeline."""
    if value <= 0:
        return
    try:
        (target or metrics).add_metric(name=name, unit=MetricUnit.Count, value=value)
    except Exception:  # noqa: BLE001
        logger.debug("metric not recorded", extra={"metric": name})
