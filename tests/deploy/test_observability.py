"""powertools on every handler: Tracer, Metrics (EMF) and the Logger's correlation id = rotation id."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from chalicelib import handlers, observability
from chalicelib.deps import get_deps
from local.world import World

APP = Path(__file__).resolve().parents[2] / "app.py"


def emf_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def test_every_handler_is_observed_under_its_function_name() -> None:
    tree = ast.parse(APP.read_text())
    seen = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        decorators = node.decorator_list
        chalice = [d for d in decorators if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                   and isinstance(d.func.value, ast.Name) and d.func.value.id == "app"]
        if not chalice:
            continue
        (registration,) = chalice
        name = next((k.value.value for k in registration.keywords if k.arg == "name"), "api_handler")
        observed = [d for d in decorators if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "observed"]
        assert [o.args[0].value for o in observed] == [name], f"{node.name} must be @observed({name!r})"
        assert decorators.index(registration) < decorators.index(observed[0]), "observed wraps the function itself"
        seen.append(name)
    # Every Chalice function: the ones the policies analysis knows (one policy file each).
    from deploy import analysis

    assert sorted(seen) == sorted(analysis.chalice_handlers())


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    observability.metrics.clear_metrics()


def test_an_observed_handler_flushes_its_metrics_once(metrics_on: None, capsys: pytest.CaptureFixture[str]) -> None:
    @observability.observed("report")
    def handler(event: dict, context: object) -> dict:
        observability.count("RotationsSucceeded", rotation_id="r-1")
        return {"ok": True}

    assert handler({}, None) == {"ok": True}
    (line,) = emf_lines(capsys.readouterr().out)
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CIKeyRotator"
    assert line["RotationsSucceeded"] == [1.0] and line["service"] == "ci-key-rotator" and line["rotation_id"] == "r-1"
    assert handler({}, None) == {"ok": True}
    (again,) = emf_lines(capsys.readouterr().out)
    assert again["RotationsSucceeded"] == [1.0], "the next invocation starts empty"


def test_an_exception_still_flushes_and_propagates(metrics_on: None, capsys: pytest.CaptureFixture[str]) -> None:
    @observability.observed("alert")
    def handler(event: object) -> None:
        observability.count("RotationsFailed")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handler({})
    assert emf_lines(capsys.readouterr().out)[0]["RotationsFailed"] == [1.0]


def test_findings_are_counted_by_severity(metrics_on: None, capsys: pytest.CaptureFixture[str]) -> None:
    counts = handlers.audit_result({"results": [
        {"severity": "HIGH"}, {"severity": "HIGH"}, {"severity": "CRITICAL"}, {"severity": "LOW", "suppressed": True}]})
    assert counts["results"]
    lines = emf_lines(capsys.readouterr().out)
    by_severity = {line["severity"]: line["Findings"] for line in lines}
    assert by_severity == {"CRITICAL": [1.0], "HIGH": [2.0]}
    assert all(sorted(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == ["service", "severity"] for line in lines)


def test_metrics_disabled_locally_print_nothing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    @observability.observed("plan")
    def handler(event: dict, context: object) -> None:
        observability.seconds("KeyAge", 42.0)

    handler({}, None)
    handlers.audit_result({"results": [{"severity": "HIGH"}]})
    assert emf_lines(capsys.readouterr().out) == []
    assert not observability.metrics.metric_set, "nothing accumulates across invocations"


def test_rotation_metrics_from_a_real_rotation(clean_world: World, user: str, metrics_on: None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    result = clean_world.rotate(user)
    assert result["status"] == "SUCCEEDED"
    state = json.loads(result["output"])
    deps = get_deps()
    capsys.readouterr()

    @observability.observed("report")
    def report(event: dict, context: object) -> None:
        handlers.rotation_succeeded({}, state, deps)

    report({}, None)
    (line,) = emf_lines(capsys.readouterr().out)
    assert line["RotationsSucceeded"] == [1.0]
    assert line["VerificationDuration"][0] > 0
    assert {"Name": "VerificationDuration", "Unit": "Seconds"} in [
        {k: m[k] for k in ("Name", "Unit")} for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]]


def test_every_task_log_line_carries_the_rotation_id_as_correlation_id(clean_world: World, user: str) -> None:
    clean_world.rotate(user, rotation_id="manual-corr-1")
    lines = [json.loads(line) for line in clean_world.runtime.log_stream.getvalue().splitlines()
             if line.startswith("{") and '"manual-corr-1"' in line]
    tasks = [line for line in lines if line.get("task")]
    assert {line["task"] for line in tasks} >= {"plan", "create_key", "push_target", "report"}
    bad = [line for line in tasks if line.get("correlation_id") != "manual-corr-1" or line.get("function") != line["task"]]
    assert bad == []


def test_without_the_x_ray_sdk_handlers_run_untraced(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The SDK comes from the Powertools layer in Lambda; a function deployed without it must still work."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "aws_xray_sdk" else real(name, *a))
    observability.tracer.cache_clear()
    try:
        @observability.observed("report")
        def handler(event: dict, context: object) -> dict:
            return {"ran": event["n"]}

        assert observability.tracer() is None
        assert handler({"n": 1}, None) == {"ran": 1}
        assert handler({"n": 2}, None) == {"ran": 2}
        assert "tracing is off" in caplog.text
    finally:
        monkeypatch.undo()
        observability.tracer.cache_clear()
    assert observability.tracer() is not None, "with the SDK back, the Tracer is made again"
