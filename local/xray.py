"""X-Ray as a Lambda function with active tracing sees it, for the embedded runtime's in-process Lambdas.

In Lambda the X-Ray SDK never makes its own segment: the service opens one per sampled invocation and
passes its id in ``_X_AMZN_TRACE_ID`` (``Root=1-<hex8>-<hex24>;Parent=<hex16>;Sampled=1``); the SDK's
``LambdaContext`` (chosen because ``LAMBDA_TASK_ROOT`` is set) turns that header into a
``FacadeSegment`` that refuses annotations, metadata and ``close()``, and every subsegment is streamed
out on its own as soon as it closes (the facade is never sent). Sources: the Lambda runtime environment
variables (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime),
"Instrumenting Python code in AWS Lambda" (https://docs.aws.amazon.com/lambda/latest/dg/python-tracing.html),
and aws_xray_sdk/core/lambda_launcher.py.

Here many "Lambdas" run at once in one process (Map iterations, webhooks, EventBridge deliveries), so the
header cannot live in ``os.environ``: ``InvocationContext`` is the SDK's own ``LambdaContext`` reading
the header of *this thread's* invocation instead. The facade it builds is the SDK's
(``LambdaContext._initialize_context``). The daemon is replaced by ``MemoryEmitter``, which keeps every
document a function would have sent so tests can assert on them and scan them for secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.lambda_launcher import LambdaContext
from aws_xray_sdk.core.models.trace_header import TraceHeader
from aws_xray_sdk.core.sampling.local.sampler import LocalSampler

TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"
TASK_ROOT_ENV = "LAMBDA_TASK_ROOT"
ROOT = Path(__file__).resolve().parents[1]

_invocation = threading.local()


def new_trace_header() -> str:
    """What Lambda puts in ``_X_AMZN_TRACE_ID`` for a sampled invocation (trace id format:
    https://docs.aws.amazon.com/xray/latest/devguide/xray-api-sendingdata.html#xray-api-traceids)."""
    root = f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"
    return f"Root={root};Parent={os.urandom(8).hex()};Sampled=1"


def current_header() -> str | None:
    """The trace header of the invocation running on this thread (None: not inside one)."""
    return getattr(_invocation, "header", None)


class InvocationContext(LambdaContext):
    """The SDK's Lambda context with the trace header taken per thread rather than from ``os.environ``."""

    def _refresh_context(self) -> None:
        # LambdaContext._refresh_context with one change: the header's source.
        trace_header = TraceHeader.from_header_str(current_header())
        if not global_sdk_config.sdk_enabled():
            trace_header._sampled = False
        segment = getattr(self._local, "segment", None)
        if segment and (not trace_header.root or trace_header.root == segment.trace_id):
            return
        self._initialize_context(trace_header)

    def put_subsegment(self, subsegment: Any) -> None:
        # A thread of the runtime itself (moto, the CI emulators, a test's own boto3 call) is no Lambda:
        # its patched HTTP and AWS calls are simply not traced (the SDK would warn once per call).
        if current_header() is None:
            return
        super().put_subsegment(subsegment)


class MemoryEmitter:
    """Stands in for the X-Ray daemon: keeps each emitted (sub)segment as the JSON the daemon receives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._documents: list[str] = []

    def send_entity(self, entity: Any) -> None:
        document = entity.serialize()
        with self._lock:
            self._documents.append(document)

    def set_daemon_address(self, address: str | None) -> None:
        """Nothing to address: documents stay in memory."""

    def documents(self) -> list[str]:
        with self._lock:
            return list(self._documents)

    def segments(self) -> list[dict[str, Any]]:
        return [json.loads(document) for document in self.documents()]

    def clear(self) -> None:
        with self._lock:
            self._documents.clear()


EMITTER = MemoryEmitter()
#: Every trace header handed to an invocation, in order (tests match emitted documents to them).
ISSUED: list[str] = []


def install() -> MemoryEmitter:
    """Make this process an execution environment with active tracing (as every function in
    .chalice/config.json has, ``"xray": true``); returns the emitter holding what was traced."""
    os.environ[TASK_ROOT_ENV] = str(ROOT)
    global_sdk_config.set_sdk_enabled(True)
    # check_in_lambda() would have chosen these had LAMBDA_TASK_ROOT been set when the SDK was imported.
    xray_recorder.configure(context=InvocationContext(), emitter=EMITTER, sampler=LocalSampler(),
                            streaming_threshold=0)
    _forget_tracers_made_outside_lambda()
    _log_lines_carry_the_trace_id()
    return EMITTER


def _log_lines_carry_the_trace_id() -> None:
    """powertools' Logger puts ``xray_trace_id`` on every line from ``_X_AMZN_TRACE_ID``, as it does in Lambda;
    here that is the header of the invocation on the logging thread."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    original = LambdaPowertoolsFormatter._get_latest_trace_id
    if getattr(original, "_per_invocation", False):
        return

    def _get_latest_trace_id(self: LambdaPowertoolsFormatter) -> str | None:
        header = current_header()
        if header is None or self.log_format.get("xray_trace_id", "") is None:
            return original(self)
        return trace_id(header)

    _get_latest_trace_id._per_invocation = True  # type: ignore[attr-defined]
    LambdaPowertoolsFormatter._get_latest_trace_id = _get_latest_trace_id  # type: ignore[method-assign]


def _forget_tracers_made_outside_lambda() -> None:
    """A Tracer made before this process became a Lambda (a unit test calling a handler directly)
    decided, once and for all, that tracing is off; a real execution environment starts fresh."""
    from aws_lambda_powertools import Tracer

    from chalicelib import observability

    Tracer._reset_config()
    observability.tracer.cache_clear()


@contextlib.contextmanager
def invocation() -> Iterator[str]:
    """One sampled invocation on this thread: what Lambda does before calling the handler and after."""
    header = new_trace_header()
    ISSUED.append(header)
    _invocation.header = header
    try:
        yield header
    finally:
        _invocation.header = None
        # The next invocation (or the thread's non-Lambda work) must not inherit this facade.
        xray_recorder.context.clear_trace_entities()


def trace_id(header: str) -> str:
    return str(TraceHeader.from_header_str(header).root)
