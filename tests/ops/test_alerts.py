"""ops/prometheus/alerts.yml: Prometheus loads it (promtool, when installed), its unit tests
pass, and, always, each rule is complete and selects only metrics, labels and label values
the engine exposes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.helpers import OPS, promql_problems, run_tool, tool

RULES = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "alerts_test.yml"
# The day-over-day rules' tests, on a coarser evaluation step (see the file).
DAILY_RULE_TESTS = OPS / "prometheus" / "alerts_daily_test.yml"
README = OPS / "README.md"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}

# What operations are paged or ticketed for (the issue's list); more rules are welcome.
REQUIRED = {
    "CollectorPassFailed",
    "CollectorNoRecentSuccess",
    "CollectorPassTooSlow",
    "CollectorDeclineRateHigh",
    "CollectorInDoubtStuck",
    "CollectorChargesStuckInFlight",
    "CollectorCollectionServiceLevelLow",
    "CollectorGatewayLatencyHigh",
    "CollectorManualPayErrors",
    # Issue 11: every failure counted and alerted.
    "CollectorPassRunningTooLong",
    "CollectorPassStalled",
    "CollectorDailyPassMissing",
    "CollectorTextfileStale",
    "CollectorAchFilesNotWritten",
    "CollectorAchOutboxNotCollected",
    "CollectorWebhooksRejected",
    "CollectorApiErrors",
    "CollectorSettlementFailures",
}
# Series from outside the engine that a rule may read, with why.
FOREIGN = {
    "up": "scrape health of the daemon",
    "node_systemd_unit_state": "node_exporter's view of collector-run.service",
    "node_textfile_mtime_seconds": "node_exporter's age of the textfile a run writes",
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    names = set()
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        assert group["name"] not in names
        names.add(group["name"])
        assert group["rules"], f"group {group['name']} is empty"
        found += group["rules"]
    return found


def test_every_rule_is_a_complete_alert() -> None:
    for rule in rules():
        name = rule.get("alert")
        assert isinstance(name, str) and re.fullmatch(r"Collector[A-Z][A-Za-z]+", name), rule
        assert set(rule) <= RULE_KEYS, f"{name}: unexpected {set(rule) - RULE_KEYS}"
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
        assert _DURATION.match(str(rule["for"])), f"{name}: for {rule['for']!r}"
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert "\n" not in annotations["summary"], name


def test_alert_names_are_unique_and_cover_the_issue() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    assert sorted(REQUIRED - set(names)) == []


def test_every_alert_has_a_runbook_section_in_the_readme() -> None:
    headings = set(re.findall(r"^### (\w+)$", README.read_text(), flags=re.MULTILINE))
    for rule in rules():
        assert rule["alert"] in headings, f"ops/README.md has no ### {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"ops/README.md#{rule['alert'].lower()}"


def test_rules_select_only_what_the_engine_exposes() -> None:
    for rule in rules():
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        if any(re.search(rf"\b{name}\{{", expr) for name in FOREIGN):
            continue
        assert promql_problems(expr) == [], rule["alert"]


def test_the_name_check_catches_a_typo() -> None:
    # The check above is able to fail: a misspelt metric, label or label value is reported.
    assert promql_problems('collector_pases_total{status="failed"}') != []
    assert promql_problems('collector_passes_total{state="failed"}') != []
    assert promql_problems('collector_charges_total{outcome="declined_soft"}') != []
    assert promql_problems('collector_pass_duration_seconds_bucket{le="1800"}') != []
    assert promql_problems("sum by (gatway) (collector_charges_total)") != []
    assert promql_problems('collector_audit_violations{check="open_need_attention"}') != []
    assert promql_problems('collector_audit_violations{check!="open_need_attention"}') != []
    assert promql_problems('collector_passes_total{status="failed"}') == []
    assert promql_problems('collector_audit_violations{check="open_needs_attention"}') == []


def test_the_rule_tests_cover_failure_and_staleness() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text())
    assert document["rule_files"] == [RULES.name]
    known = {rule["alert"] for rule in rules()}
    firing = set()
    for case in document["tests"]:
        for check in case["alert_rule_test"]:
            assert check["alertname"] in known, check["alertname"]
            if check["exp_alerts"]:
                firing.add(check["alertname"])
    assert {"CollectorPassFailed", "CollectorNoRecentSuccess"} <= firing


def test_every_alert_has_a_test_that_fires_it_and_one_where_it_stays_quiet() -> None:
    # "Each shipped alert has a promtool test that fires it from the failure it names" (and
    # one that shows it quiet otherwise, so that an expression always true would fail).
    firing: set[str] = set()
    quiet: set[str] = set()
    for tests in (RULE_TESTS, DAILY_RULE_TESTS):
        for case in yaml.safe_load(tests.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert sorted(names - firing) == [], "alerts no test fires"
    assert sorted(names - quiet) == [], "alerts no test shows quiet"


PROMTOOL = tool("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    result = run_tool([PROMTOOL, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 26 * 3600", "> > 26 * 3600", 1))
    result = run_tool([PROMTOOL, "check", "rules", str(broken)])
    assert result.returncode != 0


@needs_promtool
def test_the_rules_fire_as_their_unit_tests_expect(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    # promtool resolves rule_files relative to the test file: run on copies so that a
    # test can never pick up stray files.
    for source in (RULES, RULE_TESTS, DAILY_RULE_TESTS):
        shutil.copy(source, tmp_path / source.name)
    # promtool evaluates every rule each minute of each case, up to 27 hours: about 40 s of
    # CPU, longer on a shared machine.
    for tests in (RULE_TESTS, DAILY_RULE_TESTS):
        result = run_tool([PROMTOOL, "test", "rules", tests.name], cwd=tmp_path, timeout_s=600)
        assert result.returncode == 0, result.stdout + result.stderr
