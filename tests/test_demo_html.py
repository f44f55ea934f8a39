""".demo/index.html (local/demo_html.py) and the live timeline (local/demo.py ``stream``), on real executions.

Two rotations run in the test world: one succeeds over two targets, one fails its verification build and
rolls back. Saved as the demo saves them (one per demo scenario, by its expected outcome), they render the
page through ``demo.write_page``; headless Chromium opens it once per scenario, and the DOM it dumps (after
the page's script ran) must show every scenario the demo runs, every state of the ASL, and the selected
scenario's path.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from local import demo
from local.demo_html import render
from local.demo_timeline import Timeline, all_states
from local.world import World
from tests.conftest import new_user_name

ASL = demo.load_asl()
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@dataclass
class Run:
    history: list[dict[str, Any]]
    description: dict[str, Any]
    #: (wall-clock time, line) of every timeline line, as ``stream`` emitted it.
    emitted: list[tuple[datetime, str]]


def _run(world: World, user: str) -> Run:
    emitted: list[tuple[datetime, str]] = []
    arn = world.start_rotation(user).execution_arn
    description = demo.stream(world.runtime, arn, Timeline(ASL, world.runtime.time_scale),
                              emit=lambda line: emitted.append((datetime.now(UTC), line)))
    return Run(world.runtime.history(arn), description, emitted)


@pytest.fixture(scope="module")
def runs(world: World) -> Iterator[dict[str, Run]]:
    user = new_user_name("demo")
    repos = [f"acme/{user}-a", f"acme/{user}-b"]
    world.add_user(user, repos)
    succeeded = _run(world, user)
    world.github.fail_next_builds(repos[0], 1)
    failed = _run(world, user)
    yield {"rotation": succeeded, "failed-verification": failed}


def test_the_timeline_streams_while_the_execution_runs(runs: dict[str, Run]) -> None:
    run = runs["rotation"]
    assert run.description["status"] == "SUCCEEDED"
    first_at, first = run.emitted[0]
    assert first.strip().endswith("▶ IsPaced")  # the demo's rotations have no start slot: Plan next
    assert first_at < run.description["stopDate"], "the first state was shown only after the execution ended"
    lines = [line for _, line in run.emitted]
    assert lines[-1].strip().endswith("■ SUCCEEDED")
    # One line per state entered: nothing missed, nothing shown twice across polls.
    entered = [e["stateEnteredEventDetails"]["name"] for e in run.history if e["type"].endswith("StateEntered")]
    assert [re.sub(r"^.*▶ (\S+).*$", r"\1", line) for line in lines if "▶" in line] == entered
    targets = {f"▶ PushTarget [{t}]" for t in ("acme-" + u for u in _target_suffixes(run))}
    assert targets <= {line.split("s  ", 1)[1] for line in lines if "PushTarget" in line}, lines


def _target_suffixes(run: Run) -> list[str]:
    started = json.loads(run.history[1]["stateEnteredEventDetails"]["input"])
    user = started["user"]
    return [f"{user}-a", f"{user}-b"]


def test_the_page_is_self_contained(runs: dict[str, Run]) -> None:
    page = render(ASL, {name: run.history for name, run in runs.items()})
    without_namespace = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://|\bsrc=|<link\b|@import", without_namespace), "no network, no CDN"


class _Dom(HTMLParser):
    """Classes and data attributes of the elements the checks need, from Chromium's DOM dump. ``nodes`` and
    ``edges`` are those of the graph the page shows (one per state machine; the others are hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, set[str]] = {}
        self.edges: dict[str, tuple[str, str, set[str]]] = {}
        self.shown_graphs: list[str] = []
        self._in_hidden_graph = False
        self.buttons: list[str] = []
        self.sections: dict[str, set[str]] = {}
        self.selected: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = set(a.get("class", "").split())
        if tag == "body":
            self.selected = a.get("data-selected")
        elif tag == "svg" and "graph" in classes:
            self._in_hidden_graph = "hidden" in classes
            if not self._in_hidden_graph:
                self.shown_graphs.append(a["id"])
        elif self._in_hidden_graph:
            return
        elif tag == "g" and "node" in classes:
            self.nodes[a["data-state"]] = classes
        elif tag == "path" and "edge" in classes:
            self.edges[a["id"]] = (a["data-from"], a["data-to"], classes)
        elif tag == "button" and "pick" in classes:
            self.buttons.append(a["data-scenario"])
        elif tag == "section" and "scenario" in classes:
            self.sections[a["data-scenario"]] = classes

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._in_hidden_graph = False


def _open_in_chromium(page: Path, scenario: str, profile: Path) -> tuple[_Dom, str]:
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--dump-dom", f"{page.as_uri()}#{scenario}"],
        capture_output=True, text=True, timeout=120, check=True)
    dom = _Dom()
    dom.feed(result.stdout)
    return dom, result.stdout


def _demo_page(runs: dict[str, Run], out: Path) -> dict[str, list[dict[str, Any]]]:
    """``demo.write_page`` over histories saved as the demo saves them (JSON, timestamps as strings): each
    demo scenario gets the real history with its expected outcome. Returns what each scenario was given."""
    (out / "histories").mkdir(parents=True)
    given: dict[str, list[dict[str, Any]]] = {}
    for scenario in demo.SCENARIOS:
        run = runs["rotation" if scenario.expected == "SUCCEEDED" else "failed-verification"]
        text = json.dumps(run.history, indent=1, default=str)
        (out / "histories" / f"{scenario.name}.json").write_text(text)
        given[scenario.name] = json.loads(text)
    demo.write_page(out)
    # The graduation's own graph with a real execution: tests/test_demo_graduation.py.
    return given | {demo.GRADUATION: [], demo.AUDIT: []}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; "
                                             ".ci/run installs it)")
def test_headless_chromium_shows_every_scenario_and_its_path(runs: dict[str, Run], tmp_path: Path) -> None:
    histories = _demo_page(runs, tmp_path / "demo")
    assert list(histories) == demo.scenario_names()
    page = tmp_path / "demo" / "index.html"
    for scenario, history in histories.items():
        dom, text = _open_in_chromium(page, scenario, tmp_path / "profile")
        graduation = scenario == demo.GRADUATION
        states = set(all_states(demo.load_graduate_asl() if graduation else ASL))
        assert dom.shown_graphs == (["graph-1"] if graduation else ["graph"]), "the scenario's machine, only"
        assert dom.selected == scenario, "the page's script selected the scenario named in the URL"
        assert dom.buttons == demo.scenario_names(), "one button per scenario the demo runs, in order"
        assert set(dom.sections) == set(histories), "one timeline per scenario"
        assert {name for name, classes in dom.sections.items() if "shown" in classes} == {scenario}
        assert set(dom.nodes) == states, "every state of the ASL is drawn, Map iterator states included"
        entered = {e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")}
        assert {name for name, classes in dom.nodes.items() if "visited" in classes} == entered
        taken = {(src, dst) for src, dst, classes in dom.edges.values() if "taken" in classes}
        expected = next((s.expected for s in demo.SCENARIOS if s.name == scenario), None)
        if expected == "SUCCEEDED":
            assert ("DeactivateOldKey", "RecoveryWindow") in taken
            assert not any("catch" in classes and "taken" in classes for *_, classes in dom.edges.values())
        elif expected == "FAILED":
            assert {"VerifyBuilds", "VerifyBuild"} <= {n for n, c in dom.nodes.items() if "failed" in c}
            assert ("VerifyBuilds", "Rollback") in taken and ("Rollback", "Alert") in taken
            assert "DrainPeriod" not in entered
        else:
            assert not taken and "no Step Functions execution" in text
        for name in histories:  # every scenario's timeline is in the page, shown or not
            assert f'id="scenario-{name}"' in text
        assert "▶ PushTarget [acme-" in text, "Map iterations name their target on the page too"
