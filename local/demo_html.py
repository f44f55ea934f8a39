"""``.demo/index.html``: the state machine drawn as a graph, each scenario's path through it, its timeline.

``render(asl, histories)`` is a pure function: the ASL (statemachine/rotation.asl.json) and each scenario's
``get_execution_history`` in, one self-contained HTML string out (inline SVG, CSS and script: no network).
A scenario that ran on another state machine (the graduation, statemachine/graduate.asl.json) names it in
``machines`` and gets that machine's graph; the page shows the selected scenario's graph only.
The layout is a small layered one, like the Step Functions console's graph view: a state's layer is the
longest path to it from StartAt, Map iterators are drawn as nested boxes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from local.demo_timeline import ENDS, FAILURES, Timeline, all_states

NODE_W, NODE_H = 250, 46
GAP_X, GAP_Y = 70, 34
PAD, HEADER = 14, 30


@dataclass
class Node:
    name: str
    type: str
    w: float = NODE_W
    h: float = NODE_H
    x: float = 0.0
    y: float = 0.0
    children: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Edge:
    id: str
    source: str
    target: str
    #: "next", "default", "choice" or "catch".
    kind: str
    label: str = ""


def edges_of(name: str, state: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, kind, label) of every transition out of ``state``."""
    out: list[tuple[str, str, str]] = []
    if "Next" in state:
        out.append((state["Next"], "next", ""))
    for choice in state.get("Choices", ()):
        out.append((choice["Next"], "choice", _condition(choice)))
    if "Default" in state:
        out.append((state["Default"], "default", "default"))
    for catch in state.get("Catch", ()):
        out.append((catch["Next"], "catch", ", ".join(catch.get("ErrorEquals", ()))))
    return out


def _condition(choice: dict[str, Any]) -> str:
    operator = next((k for k in choice if k not in ("Variable", "Next", "Comment")), "")
    return f"{choice.get('Variable', '')} {operator} {json.dumps(choice.get(operator))}".strip()


def _layers(states: dict[str, dict[str, Any]], start: str) -> dict[str, int]:
    """Longest path from ``start`` over forward edges (edges closing a cycle are ignored)."""
    order = list(states)
    back: set[tuple[str, str]] = set()
    seen: set[str] = set()
    stack: set[str] = set()

    def visit(name: str) -> None:
        seen.add(name)
        stack.add(name)
        for target, _, _ in edges_of(name, states[name]):
            if target in stack:
                back.add((name, target))
            elif target not in seen and target in states:
                visit(target)
        stack.discard(name)

    visit(start)
    for name in order:  # states unreachable from StartAt are still drawn
        if name not in seen:
            visit(name)
    layer = {name: 0 for name in order}
    for _ in order:  # Bellman-Ford style relaxation: at most len(states) rounds on a DAG
        changed = False
        for name in order:
            for target, _, _ in edges_of(name, states[name]):
                if target in states and (name, target) not in back and layer[target] < layer[name] + 1:
                    layer[target] = layer[name] + 1
                    changed = True
        if not changed:
            break
    return layer


def layout(machine: dict[str, Any]) -> tuple[list[Node], float, float]:
    """Positions (relative to the machine's own top-left) of its states; returns (nodes, width, height)."""
    states = machine["States"]
    nodes: dict[str, Node] = {}
    for name, state in states.items():
        node = Node(name, state["Type"])
        inner = state.get("Iterator") or state.get("ItemProcessor")
        if inner:
            node.children, inner_w, inner_h = layout(inner)
            node.w = max(NODE_W, inner_w + 2 * PAD)
            node.h = HEADER + inner_h + PAD
            for child in node.children:
                _shift(child, (node.w - inner_w) / 2, HEADER)
        nodes[name] = node
    layer = _layers(states, machine["StartAt"])
    rows: dict[int, list[Node]] = {}
    for name in states:
        rows.setdefault(layer[name], []).append(nodes[name])
    columns = max(len(row) for row in rows.values())
    col_w = [max((row[c].w for row in rows.values() if len(row) > c), default=NODE_W) for c in range(columns)]
    y = 0.0
    for index in sorted(rows):
        row = rows[index]
        height = max(n.h for n in row)
        for c, node in enumerate(row):
            left = sum(col_w[:c]) + GAP_X * c
            _shift(node, left + (col_w[c] - node.w) / 2, y + (height - node.h) / 2)
        y += height + GAP_Y
    return list(nodes.values()), sum(col_w) + GAP_X * (columns - 1), y - GAP_Y


def _shift(node: Node, dx: float, dy: float) -> None:
    node.x += dx
    node.y += dy
    for child in node.children:
        _shift(child, dx, dy)


def _flatten(nodes: list[Node]) -> dict[str, Node]:
    found: dict[str, Node] = {}
    for node in nodes:
        found[node.name] = node
        found.update(_flatten(node.children))
    return found


def all_edges(asl: dict[str, Any]) -> list[Edge]:
    edges = []
    for name, state in all_states(asl).items():
        for target, kind, label in edges_of(name, state):
            edges.append(Edge(f"e{len(edges)}", name, target, kind, label))
    return edges


def _edge_path(a: Node, b: Node, edge: Edge) -> str:
    sx, sy = a.x + a.w / 2, a.y + a.h
    tx, ty = b.x + b.w / 2, b.y
    if edge.kind == "catch":  # failures leave from the right side, like the console draws them
        sx, sy = a.x + a.w, a.y + a.h / 2
        return f"M{sx:.0f},{sy:.0f} C{sx + 60:.0f},{sy:.0f} {tx:.0f},{ty - 60:.0f} {tx:.0f},{ty:.0f}"
    if ty <= sy:  # an edge going back up: around the left side
        return (f"M{sx:.0f},{sy:.0f} C{a.x - 80:.0f},{sy + 40:.0f} {b.x - 80:.0f},{ty - 40:.0f} "
                f"{tx:.0f},{ty:.0f}")
    bend = 0.0
    if abs(sx - tx) < 1 and ty - sy > GAP_Y + 1:  # skips states in its column: bow out to the left
        bend = -(a.w / 2 + 70)  # a cubic reaches 3/4 of its control points' offset
    return (f"M{sx:.0f},{sy:.0f} C{sx + bend:.0f},{sy + 40:.0f} {tx + bend:.0f},{ty - 40:.0f} "
            f"{tx:.0f},{ty:.0f}")


def path_of(asl: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The scenario's path: states entered (with how often an attempt failed), states whose failure was
    caught or ended the execution, Map targets per state, and the ids of the edges taken."""
    states = all_states(asl)
    edges = all_edges(asl)
    by_id = {e["id"]: e for e in history}
    visited: list[str] = []
    attempts_failed: dict[str, int] = {}
    failed: set[str] = set()
    targets: dict[str, list[str]] = {}
    taken: list[str] = []
    owner: dict[int, str] = {}
    for event in history:
        kind = event["type"]
        state = owner.get(event.get("previousEventId") or 0, "")
        if kind.endswith("StateEntered"):
            details = event["stateEnteredEventDetails"]
            state = details["name"]
            if state not in visited:
                visited.append(state)
            target = (json.loads(details.get("input") or "{}") or {}).get("target_id")
            if isinstance(target, str):
                targets.setdefault(state, []).append(target)
            previous = by_id.get(event.get("previousEventId") or 0)
            if previous and previous["type"].endswith("StateExited"):
                source = previous["stateExitedEventDetails"]["name"]
                before = by_id.get(previous.get("previousEventId") or 0, {})
                caught = before.get("type", "") in FAILURES or before.get("type", "").endswith("Failed")
                if caught:
                    failed.add(source)
                edge = _pick(edges, source, state, caught)
                if edge:
                    taken.append(edge.id)
        owner[event["id"]] = state
        if kind in FAILURES and state:
            attempts_failed[state] = attempts_failed.get(state, 0) + 1
        if kind == "MapIterationFailed" and state:  # the iteration's state failed for good
            failed.add(state)
        if kind in ENDS and kind != "ExecutionSucceeded" and state and states.get(state, {}).get("Type") != "Fail":
            failed.add(state)
    return {"visited": visited, "attempts_failed": attempts_failed, "failed": sorted(failed),
            "targets": targets, "edges": taken}


def _pick(edges: list[Edge], source: str, target: str, caught: bool) -> Edge | None:
    candidates = [e for e in edges if e.source == source and e.target == target]
    preferred = [e for e in candidates if (e.kind == "catch") == caught]
    return (preferred or candidates or [None])[0]


def _status(history: list[dict[str, Any]]) -> str:
    ends = [e["type"] for e in history if e["type"] in ENDS]
    if not history:
        return "no execution"
    return ends[-1].removeprefix("Execution").upper() if ends else "RUNNING"


def chain(histories: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Several executions' histories, one after the other, as one: each later history's event ids (and its
    ``previousEventId`` links) are shifted past the earlier ones', so the timeline and the path read them as one
    run (the graduation scenario: one execution per target)."""
    chained: list[dict[str, Any]] = []
    for history in histories:
        offset = chained[-1]["id"] if chained else 0
        for event in history:
            previous = event.get("previousEventId") or 0
            chained.append({**event, "id": event["id"] + offset,
                            "previousEventId": previous + offset if previous else 0})
    return chained


def _svg(asl: dict[str, Any], graph_id: str = "graph", prefix: str = "") -> str:
    """The machine's graph; ``prefix`` keeps element ids unique when the page draws several machines."""
    nodes, width, height = layout(asl)
    flat = _flatten(nodes)
    margin = 100
    parts = [f'<svg id="{graph_id}" class="graph" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width + 2 * margin:.0f}" '
             f'height="{height + 40:.0f}" viewBox="{-margin} -20 {width + 2 * margin:.0f} {height + 40:.0f}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
             'markerUnits="userSpaceOnUse" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>']

    def draw(node: Node) -> None:
        name = html.escape(node.name)
        klass = "map" if node.children else node.type.lower()
        parts.append(f'<g class="node {klass}" id="{prefix}state-{name}" data-state="{name}">'
                     f'<title>{name} ({html.escape(node.type)})</title>'
                     f'<rect x="{node.x:.0f}" y="{node.y:.0f}" width="{node.w:.0f}" height="{node.h:.0f}" '
                     f'rx="6"/>')
        label_y = node.y + (18 if node.children else 20)
        badge_y = node.y + node.h - (10 if node.children else 6)
        parts.append(f'<text x="{node.x + node.w / 2:.0f}" y="{label_y:.0f}">{name}'
                     f'<tspan class="kind"> · {html.escape(node.type)}</tspan></text>'
                     f'<text class="badge" x="{node.x + node.w / 2:.0f}" y="{badge_y:.0f}"></text></g>')
        for child in node.children:
            draw(child)

    for node in nodes:
        draw(node)
    for edge in all_edges(asl):
        a, b = flat.get(edge.source), flat.get(edge.target)
        if a is None or b is None:
            continue
        parts.append(f'<path class="edge {edge.kind}" id="{prefix}{edge.id}" data-from="{html.escape(edge.source)}" '
                     f'data-to="{html.escape(edge.target)}" d="{_edge_path(a, b, edge)}" '
                     f'marker-end="url(#arrow)"><title>{html.escape(edge.label or edge.kind)}</title></path>')
        if edge.kind in ("choice", "default"):
            # next to where the edge leaves its Choice: choices to the right, the default to the left
            side, anchor = (8, "start") if edge.kind == "choice" else (-8, "end")
            parts.append(f'<text class="edge-label" text-anchor="{anchor}" x="{a.x + a.w / 2 + side:.0f}" '
                         f'y="{a.y + a.h + 14:.0f}">{html.escape(edge.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(asl: dict[str, Any], histories: Mapping[str, list[dict[str, Any]]],
           titles: Mapping[str, str] | None = None, time_scale: float = 0.0,
           machines: Mapping[str, dict[str, Any]] | None = None) -> str:
    """The page. ``histories`` maps scenario name → its execution history (events in id order); a scenario
    with no execution (the audit) has an empty list and is listed with its title only. ``machines``: the ASL
    of each scenario that ran on another state machine than ``asl`` (drawn as its own graph)."""
    titles = titles or {}
    machines = machines or {}
    # One graph per distinct machine: "graph" is ``asl``'s, the others are "graph-1", "graph-2", ...
    graphs: list[tuple[str, str, dict[str, Any]]] = [("graph", "", asl)]
    graph_of: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for name in histories:
        machine = machines.get(name, asl)
        found = next((g for g in graphs if g[2] is machine or g[2] == machine), None)
        if found is None:
            found = (f"graph-{len(graphs)}", f"g{len(graphs)}-", machine)
            graphs.append(found)
        graph_of[name] = found
    paths: dict[str, dict[str, Any]] = {}
    for name, history in histories.items():
        graph_id, prefix, machine = graph_of[name]
        path = path_of(machine, history)
        paths[name] = {**path, "edges": [prefix + e for e in path["edges"]], "graph": graph_id}
    buttons, sections = [], []
    for name, history in histories.items():
        status = _status(history)
        safe = html.escape(name)
        buttons.append(f'<button type="button" class="pick {status.lower().replace(" ", "-")}" '
                       f'data-scenario="{safe}">{safe}<small>{html.escape(status)}</small></button>')
        timeline = Timeline(graph_of[name][2], time_scale)
        timeline.feed(history)
        rows = "".join(f'<tr class="{line.kind}"><td>+{line.at:.2f}s</td><td>{html.escape(line.text)}</td></tr>'
                       for line in timeline.lines)
        route = " → ".join(paths[name]["visited"]) or "no Step Functions execution"
        # A scenario on another machine says which, since the page's header describes ``asl``.
        machine_comment = graph_of[name][2].get("Comment", "") if graph_of[name][0] != "graph" else ""
        machine_line = f'<p class="machine">{html.escape(machine_comment)}</p>' if machine_comment else ""
        sections.append(f'<section class="scenario" id="scenario-{safe}" data-scenario="{safe}">'
                        f'<h2>{safe} <span class="status">{html.escape(status)}</span></h2>'
                        f'<p class="title">{html.escape(titles.get(name, ""))}</p>{machine_line}'
                        f'<p class="route">{html.escape(route)}</p>'
                        f'<table class="timeline">{rows}</table></section>')
    data = json.dumps(paths).replace("</", "<\\/")
    return _PAGE.format(comment=html.escape(asl.get("Comment", "")), buttons="".join(buttons),
                        svg="".join(_svg(m, g, p) for g, p, m in graphs), sections="".join(sections), data=data)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CI Key Rotator demo</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #16191f; }}
header {{ padding: 12px 20px; background: #232f3e; color: #fff; }}
header p {{ margin: 4px 0 0; color: #d5dbdb; font-size: 13px; }}
nav {{ padding: 10px 20px; border-bottom: 1px solid #ddd; }}
button.pick {{ margin: 0 6px 6px 0; padding: 6px 10px; border: 1px solid #aab7b8; border-radius: 4px;
  background: #fff; cursor: pointer; }}
button.pick small {{ display: block; font-size: 11px; color: #545b64; }}
button.pick.selected {{ border-color: #0073bb; box-shadow: 0 0 0 2px #0073bb inset; }}
main {{ display: flex; gap: 20px; padding: 20px; align-items: flex-start; }}
#graph-pane {{ flex: 0 0 auto; }}
#details {{ flex: 1 1 auto; min-width: 360px; }}
.node rect {{ fill: #fafafa; stroke: #879596; stroke-width: 1.2; }}
.node.map > rect {{ fill: #f2f8fd; stroke-dasharray: 5 3; }}
.node text {{ text-anchor: middle; font-size: 13px; }}
.node text .kind {{ fill: #687078; font-size: 11px; }}
.node text.badge {{ font-size: 11px; fill: #8a6d00; }}
.node.visited > rect {{ fill: #e9f7e6; stroke: #1d8102; stroke-width: 2.2; }}
.node.retried > rect {{ stroke: #c49000; }}
.node.failed > rect {{ fill: #fde8e8; stroke: #d13212; stroke-width: 2.2; }}
.edge {{ fill: none; stroke: #aab7b8; stroke-width: 1.3; }}
.edge.catch {{ stroke-dasharray: 4 3; }}
.edge.taken {{ stroke: #1d8102; stroke-width: 3; }}
.edge.catch.taken {{ stroke: #d13212; }}
.edge-label {{ font-size: 10px; fill: #545b64; }}
svg.graph.hidden {{ display: none; }}
section.scenario {{ display: none; }}
section.scenario.shown {{ display: block; }}
.status {{ font-size: 13px; padding: 2px 6px; border-radius: 3px; background: #eaeded; }}
.route, .machine {{ color: #545b64; }}
.machine {{ font-style: italic; }}
table.timeline {{ border-collapse: collapse; font: 12px/1.5 ui-monospace, monospace; }}
table.timeline td {{ padding: 1px 8px; vertical-align: top; white-space: pre-wrap; }}
tr.fail td {{ color: #d13212; }} tr.verify td {{ color: #1d8102; }} tr.end td {{ font-weight: bold; }}
</style></head>
<body data-selected="">
<header><h1>CI Key Rotator — make demo</h1><p>{comment}</p></header>
<nav id="scenarios">{buttons}</nav>
<main><div id="graph-pane">{svg}</div><div id="details">{sections}</div></main>
<script type="application/json" id="paths">{data}</script>
<script>
const paths = JSON.parse(document.getElementById("paths").textContent);
function select(name) {{
  if (!(name in paths)) return;
  const path = paths[name];
  document.body.dataset.selected = name;
  document.querySelectorAll("svg.graph").forEach(g => g.classList.toggle("hidden", g.id !== path.graph));
  document.querySelectorAll("#" + path.graph + " .node").forEach(n => {{
    const state = n.dataset.state;
    n.classList.toggle("visited", path.visited.includes(state));
    n.classList.toggle("failed", path.failed.includes(state));
    n.classList.toggle("retried", (path.attempts_failed[state] || 0) > 0);
    const targets = path.targets[state] || [];
    const retries = path.attempts_failed[state] || 0;
    const distinct = [...new Set(targets)];
    // The badge must fit the box: one target by name, several by count (all of them are in the timeline).
    n.querySelector("text.badge").textContent = [
      distinct.length === 1 ? distinct[0] : distinct.length ? distinct.length + " targets" : "",
      retries ? retries + " failed attempt" + (retries > 1 ? "s" : "") : ""].filter(Boolean).join(" · ");
  }});
  document.querySelectorAll("#" + path.graph + " .edge").forEach(
    e => e.classList.toggle("taken", path.edges.includes(e.id)));
  document.querySelectorAll("section.scenario").forEach(
    s => s.classList.toggle("shown", s.dataset.scenario === name));
  document.querySelectorAll("button.pick").forEach(
    b => b.classList.toggle("selected", b.dataset.scenario === name));
}}
document.querySelectorAll("button.pick").forEach(b => b.addEventListener("click", () => {{
  history.replaceState(null, "", "#" + b.dataset.scenario);
  select(b.dataset.scenario);
}}));
const wanted = decodeURIComponent(location.hash.slice(1));
select(wanted in paths ? wanted : Object.keys(paths)[0]);
</script></body></html>
"""
