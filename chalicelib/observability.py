"""powertools Logger, Metrics and Tracer shared by every handler; the rotation id is the correlation id.

Every handler in app.py is wrapped in ``@observed(<function name>)``: an X-Ray subsegment (responses are
not recorded: invariant 3), the function's name on every log line, and the metrics the invocation
recorded flushed as one EMF line when it ends. The decorator takes any handler shape (Lambda tasks
``(event, context)``, Chalice schedules and EventBridge rules ``(event)``, routes ``(**view_args)``),
which powertools' own ``log_metrics``/``capture_lambda_handler`` do not.

Metrics (namespace ``POWERTOOLS_METRICS_NAMESPACE``, default ``CIKeyRotator``; dimension ``service``):
``RotationsSucceeded``, ``RotationsFailed``, ``KeyAge`` (seconds, of the key being replaced, at Plan),
``VerificationDuration`` (seconds, per target, trigger to verified), ``Findings`` (dimension
``severity``), and the audit pipeline's own counters. Locally ``POWERTOOLS_METRICS_DISABLED`` and
``POWERTOOLS_TRACE_DISABLED`` switch both off; tracing is also off outside Lambda.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = "ci-key-rotator"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "CIKeyRotator")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@functools.cache
def tracer() -> Tracer | None:
    """Made when a handler first runs, not on import: it loads the X-Ray SDK (and botocore), the largest
    part of importing app.py otherwise. In Lambda the SDK comes from the Powertools layer (deploy/layer.py);
    without it the handlers run untraced rather than fail."""
    if importlib.util.find_spec("aws_xray_sdk") is None:
        logger.warning("X-Ray SDK not found (is the Powertools layer attached?): tracing is off")
        return None
    return Tracer(service=SERVICE)


F = TypeVar("F", bound=Callable[..., Any])
_warm: set[str] = set()
_warm_lock = threading.Lock()


def observed(function_name: str) -> Callable[[F], F]:
    """Trace, label and flush the metrics of one Chalice handler (see the module docstring)."""

    def decorate(handler: F) -> F:
        traced: Callable[..., Any] | None = None

        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal traced
            xray = tracer()
            with _warm_lock:
                cold = function_name not in _warm
                _warm.add(function_name)
                if traced is None:
                    traced = xray.capture_method(capture_response=False)(handler) if xray else handler
            if xray:
                xray.put_annotation(key="ColdStart", value=cold)
                xray.put_annotation(key="Service", value=SERVICE)
            logger.thread_safe_append_keys(function=function_name)
            try:
                return traced(*args, **kwargs)
            finally:
                logger.thread_safe_remove_keys(["function"])
                flush()

        return wrapper  # type: ignore[return-value]

    return decorate


def flush() -> None:
    """Publish what this invocation recorded (one EMF line) and start the next one empty."""
    try:
        if metrics.metric_set:
            metrics.flush_metrics()
    except Exception:  # noqa: BLE001 - metrics must never fail a handler
        logger.debug("metrics not flushed")
    finally:
        # flush_metrics keeps the set when metrics are disabled; it must not grow across invocations.
        metrics.clear_metrics()


def count(name: str, value: float = 1, **metadata: Any) -> None:
    _record(name, MetricUnit.Count, value, metadata)


def seconds(name: str, value: float, **metadata: Any) -> None:
    _record(name, MetricUnit.Seconds, value, metadata)


def _record(name: str, unit: MetricUnit, value: float, metadata: dict[str, Any]) -> None:
    try:
        metrics.add_metric(name=name, unit=unit, value=value)
        for key, item in metadata.items():
            if item is not None:
                metrics.add_metadata(key=key, value=item)
    except Exception:  # noqa: BLE001 - metrics must never fail a handler
        logger.debug("metric not recorded", extra={"metric": name})


def findings_by_severity(results: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``Findings`` per ``severity`` dimension for the audit results a handler returned (repeats
    suppressed by the dedup window are not counted again)."""
    counts = Counter(str(r.get("severity")) for r in results if not r.get("suppressed"))
    for severity, n in sorted(counts.items()):
        try:
            # A separate metric set per severity: one EMF line each, with its own dimension.
            single = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            single.add_dimension(name="severity", value=severity)
            single.add_metric(name="Findings", unit=MetricUnit.Count, value=n)
            single.flush_metrics()
        except Exception:  # noqa: BLE001 - metrics must never fail a handler
            logger.debug("metric not recorded", extra={"metric": "Findings"})
    return dict(counts)
