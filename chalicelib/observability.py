"""powertools Logger, Metrics and Tracer shared by every handler; the rotation id is the correlation id.

Every handler in app.py is wrapped in ``@observed(<function name>)``: an X-Ray subsegment
``## <function name>`` carrying the ``ColdStart`` and ``Service`` annotations (responses are not recorded:
invariant 3; an exception is recorded by type and stack, its message only when it is one of ours), the
function's name on every log line, and the metrics the invocation recorded flushed as one EMF line when
it ends. The decorator takes any handler shape (Lambda tasks ``(event, context)``, Chalice schedules and
EventBridge rules ``(event)``, routes ``(**view_args)``), which powertools' own
``log_metrics``/``capture_lambda_handler`` do not.

In Lambda the X-Ray entity current when a handler starts is the *facade segment* Lambda made from
``_X_AMZN_TRACE_ID``: it refuses annotations and metadata (FacadeSegmentMutationException), so they go
on the subsegment opened here, never on the current entity.

Metrics (namespace ``POWERTOOLS_METRICS_NAMESPACE``, default ``CIKeyRotator``; dimension ``service``):
``RotationsSucceeded``, ``RotationsFailed``, ``KeyAge`` (seconds, of the key being replaced, at Plan),
``VerificationDuration`` (seconds, per target, trigger to verified), ``Findings`` (dimension
``severity``), and the audit pipeline's own counters. Locally ``POWERTOOLS_METRICS_DISABLED`` switches
metrics off; tracing is off only outside Lambda (no ``LAMBDA_TASK_ROOT``): the embedded runtime traces
every invocation under a facade segment, as Lambda does (local/xray.py).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from chalicelib import log_safety

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
        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            log_safety.enforce()  # before any library can log what crosses the wire (chalicelib/log_safety.py)
            xray = tracer()
            with _warm_lock:
                cold = function_name not in _warm
                _warm.add(function_name)
            logger.thread_safe_append_keys(function=function_name)
            try:
                if xray is None or xray.disabled:
                    return handler(*args, **kwargs)
                return _traced(xray, function_name, cold, handler, args, kwargs)
            finally:
                logger.thread_safe_remove_keys(["function"])
                flush()

        return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature F promises

    return decorate


def _traced(xray: Tracer, function_name: str, cold: bool, handler: Callable[..., Any],
            args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # The provider is the X-Ray SDK's recorder; powertools types it as its own narrower protocol.
    recorder: Any = xray.provider
    subsegment = None
    try:
        subsegment = recorder.begin_subsegment(f"## {function_name}")
        if subsegment is not None:
            subsegment.put_annotation("ColdStart", cold)
            subsegment.put_annotation("Service", SERVICE)
    except Exception as exc:  # noqa: BLE001 - a tracing fault must not fail the invocation (it once did)
        logger.warning("handler not traced", extra={"error": type(exc).__name__})
    try:
        return handler(*args, **kwargs)
    except Exception as exc:
        if subsegment is not None:
            _record_exception(subsegment, exc, recorder.max_trace_back)
        raise
    finally:
        if subsegment is not None:
            try:
                recorder.end_subsegment()
            except Exception as exc:  # noqa: BLE001 - as above
                logger.warning("trace not closed", extra={"error": type(exc).__name__})


def _record_exception(subsegment: Any, exc: Exception, limit: int) -> None:
    """The exception's type and stack (file, line, function: no values) on the subsegment. Only our own
    errors' messages are known to carry ids only (chalicelib/errors.py); a library's may quote its input
    (pydantic echoes values, an HTTP client its URL), so theirs is left out."""
    from chalicelib.errors import RotatorError

    try:
        subsegment.add_exception(exc, traceback.extract_tb(exc.__traceback__, limit=limit))
        if isinstance(exc, RotatorError) or not isinstance(subsegment.cause, dict):
            return
        for throwable in subsegment.cause.get("exceptions", []):
            if getattr(throwable, "message", None) is not None:
                throwable.message = f"{throwable.type} (message not recorded)"
    except Exception:  # noqa: BLE001 - tracing must never change what the handler raised
        logger.debug("exception not traced")


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
