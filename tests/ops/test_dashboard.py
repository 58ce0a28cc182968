"""ops/grafana/collector-dashboard.json: Grafana can import it (shape, unique ids, a layout
without overlaps, a data source variable), and every query selects only what the engine
exposes and is valid PromQL (promtool, when installed)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.metrics import REGISTRY
from tests.ops.helpers import OPS, exposed_series, promql_problems, run_tool, tool

DASHBOARD = OPS / "grafana" / "collector-dashboard.json"
PANEL_TYPES = {"row", "timeseries", "stat", "gauge"}
# What Grafana substitutes before a query reaches Prometheus, with a value of the same kind.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def series_in(expr: str) -> set[str]:
    """The engine's series an expression reads."""
    known = exposed_series()
    return {name for name in re.findall(r"\bcollector_[a-z_]+", expr) if name in known}


def queries() -> list[tuple[str, str]]:
    """(panel title + refId, expr) of every query."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel.get("targets", [])
    ]


def filled(expr: str) -> str:
    """The query as Prometheus receives it, with every variable replaced: Grafana's own, and
    the dashboard's with a value that selects everything (longest names first)."""
    variables = {**GRAFANA_VARIABLES}
    variables |= {f"${v['name']}": ".*" for v in dashboard()["templating"]["list"]}
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


def test_the_dashboard_has_what_an_import_needs() -> None:
    data = dashboard()
    assert data["title"].strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", data["uid"])
    assert data["schemaVersion"] >= 36
    assert data["panels"]
    assert "id" not in data or data["id"] is None, "an exported id would clash on import"


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) for i in ids)


def test_every_panel_has_a_place_on_the_grid_and_none_overlap() -> None:
    boxes = []
    for panel in panels():
        assert panel["type"] in PANEL_TYPES, panel["title"]
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) and pos[k] >= 0 for k in "xywh"), panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos))
    for (a, p), (b, q) in itertools.combinations(boxes, 2):
        apart = (
            p["x"] + p["w"] <= q["x"]
            or q["x"] + q["w"] <= p["x"]
            or p["y"] + p["h"] <= q["y"]
            or q["y"] + q["h"] <= p["y"]
        )
        assert apart, f"{a!r} overlaps {b!r}"


def test_every_panel_queries_through_the_data_source_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in targets), panel["title"]


def test_queries_select_only_what_the_engine_exposes() -> None:
    for where, expr in queries():
        assert "$" not in filled(expr), f"{where}: a variable the dashboard does not define"
        assert promql_problems(filled(expr)) == [], where


def test_every_metric_of_the_engine_is_on_the_dashboard() -> None:
    shown = " ".join(expr for _where, expr in queries())
    families = [family.name for family in REGISTRY.collect()]
    assert [
        f for f in families if not re.search(rf"\b{f}(_total|_bucket|_sum|_count)?\b", shown)
    ] == []


PROMTOOL = tool("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    # promtool has no "check this expression" command, but it parses every rule it checks:
    # one recording rule per query, with Grafana's variables filled in.
    recorded = [
        {"record": f"dashboard:query_{number}", "expr": filled(expr)}
        for number, (_where, expr) in enumerate(queries())
    ]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = run_tool([PROMTOOL, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr


# A panel marked so reads a process's own counters or histograms, which only a scraped daemon
# keeps: `collector run` is a new process each pass, and its textfile holds that pass alone.
DAEMON_ONLY = "Scraped daemon only: "
# The panels a textfile (timer, cron) host needs, which must be right for it as well.
FOR_EVERY_SOURCE = {
    "Today's passes by status",
    "Today's attempts by outcome",
    "Amount charged today",
    "Decline rate today",
    "Pass duration today",
    "Passes today by status",
    "Rows set aside today",
    "Presentments refused today by reason",
    "ACH settled and returned today",
    "Charge-offs today",
    "Late fees today",
}


def _counter_series() -> set[str]:
    """Series of the engine's counters and histograms: reset by each new process."""
    kinds = {family.name: family.type for family in REGISTRY.collect()}
    return {
        name
        for name, series in exposed_series().items()
        if kinds[series.family] in ("counter", "histogram")
    }


def test_panels_for_every_source_read_no_process_counter() -> None:
    """A panel not marked daemon-only reads only gauges: on a textfile host a counter restarts
    at 0 each pass, so rate() and increase() of it (or its raw value) are wrong there."""
    counters = _counter_series()
    titles = set()
    for panel in panels():
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        daemon_only = panel.get("description", "").startswith(DAEMON_ONLY)
        read = set().union(*(series_in(t["expr"]) for t in panel["targets"]))
        if daemon_only:
            assert panel["title"] not in FOR_EVERY_SOURCE, panel["title"]
            assert read & counters, f"{panel['title']} is marked daemon-only and reads no counter"
            continue
        assert read & counters == set(), f"{panel['title']} reads a process's counter"
        for target in panel["targets"]:
            assert not re.search(r"\b(rate|irate|increase|delta|resets)\(", target["expr"]), (
                f"{panel['title']}: {target['expr']}"
            )
    assert titles >= FOR_EVERY_SOURCE


def test_every_business_day_series_is_in_the_readme_metrics_table() -> None:
    readme = (OPS.parent / "README.md").read_text()
    families = [f.name for f in REGISTRY.collect() if f.name.startswith("collector_business_day_")]
    assert families
    assert [f for f in families if f"`{f}" not in readme] == []
