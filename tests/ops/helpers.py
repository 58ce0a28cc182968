"""What the ops tests share: where ops/ is, the metrics the engine defines, a PromQL name check,
and a parser for systemd unit files (which allow repeated keys, unlike configparser)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

import collector.metrics
from collector.db.audit import CHECKS
from collector.domain import AttemptStatus, MethodKind, RunStatus
from collector.metrics import ACH_RESULTS, DELIVERY_RESULTS, REGISTRY, STATES

OPS = Path(__file__).resolve().parents[2] / "ops"

# Labels Prometheus adds to every series it scrapes (or a Pushgateway group carries).
TARGET_LABELS = frozenset({"job", "instance"})

# Label values the engine emits, where the set is closed: a rule or panel selecting another
# value would silently select nothing.
CLOSED_VALUES: dict[str, frozenset[str]] = {
    "outcome": frozenset(status.value for status in AttemptStatus),
    "method_kind": frozenset(kind.value for kind in MethodKind),
    "state": frozenset(STATES),
    # jobs/collect.py counts each pass as completed or failed; collector_business_day_passes
    # shows every run row's status.
    "status": frozenset(status.value for status in RunStatus),
    "result": frozenset(ACH_RESULTS) | frozenset(DELIVERY_RESULTS),
    "operation": frozenset({"charge", "lookup"}),
    # jobs/settle.py, after NACHA's return-rate categories.
    "category": frozenset({"unauthorized", "administrative", "overall"}),
    # db/audit.py sets collector_audit_violations for each of these after every pass.
    "check": frozenset(CHECKS),
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


@dataclass(frozen=True, slots=True)
class Series:
    """One series name the registry exposes, with the labels it may carry."""

    family: str
    labels: frozenset[str]


def _metric_objects() -> list[MetricWrapperBase]:
    return [m for m in vars(collector.metrics).values() if isinstance(m, MetricWrapperBase)]


def exposed_series() -> dict[str, Series]:
    """Every series name collector.metrics.REGISTRY exposes, e.g. collector_charges_total."""
    # prometheus_client keeps label names private; the families the registry collects do not
    # carry them until a child exists, so read them off the metric objects.
    labels = {m._name: frozenset(m._labelnames) for m in _metric_objects()}
    series: dict[str, Series] = {}
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[family.name + suffix] = Series(
                family=family.name, labels=labels.get(family.name, frozenset()) | extra
            )
    return series


def histogram_bounds(family: str) -> frozenset[str]:
    """The ``le`` values a histogram exposes, formatted as the client formats them."""
    for metric in _metric_objects():
        if metric._name == family and metric._type == "histogram":
            return frozenset(floatToGoString(bound) for bound in metric._upper_bounds)
    raise KeyError(family)


_NAME = re.compile(r"\bcollector_[a-z_]+")
_SELECTOR = re.compile(r"\b(collector_[a-z_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_problems(expr: str) -> list[str]:
    """What in a PromQL expression names a metric, label or label value the engine lacks."""
    known = exposed_series()
    all_labels = set().union(*(s.labels for s in known.values())) | TARGET_LABELS
    problems: list[str] = []
    names = _NAME.findall(expr)
    if not names:
        problems.append(f"no collector metric in {expr!r}")
    problems += [f"unknown metric {n}" for n in names if n not in known]
    for name, body in _SELECTOR.findall(expr):
        if name not in known:
            continue
        for label, op, value in _MATCHER.findall(body):
            if label not in known[name].labels | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
                continue
            allowed = CLOSED_VALUES.get(label)
            if label == "le":
                allowed = histogram_bounds(known[name].family)
            if allowed is None:
                continue
            # A misspelt value excludes nothing with != and selects nothing with =.
            if op in ("=", "!=") and value not in allowed:
                problems.append(f"{name}{{{label}{op}{value!r}}}: not one of {sorted(allowed)}")
            if op == "=~" and not any(re.fullmatch(value, v) for v in allowed):
                problems.append(f"{name}{{{label}=~{value!r}}} matches no value the engine emits")
    for group in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in all_labels:
                problems.append(f"no collector metric has a label {label!r} (in {group!r})")
    return problems


UnitFile = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> UnitFile:
    """Sections → keys → values of a systemd unit file (a key may repeat; an empty assignment
    resets the list, as systemd does for list settings)."""
    sections: UnitFile = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # continuation: systemd joins with a space
            logical.append(line[:-1].rstrip())
            continue
        line = " ".join([*logical, line]).strip()
        logical = []
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            if name in sections:
                raise ValueError(f"section [{name}] appears twice")
            current = sections[name] = {}
            continue
        if current is None or "=" not in line:
            raise ValueError(f"not a key=value line in a section: {raw!r}")
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def one(unit: UnitFile, section: str, key: str) -> str:
    """The single value of a key: a repeated key where one is expected is a mistake."""
    values = unit[section][key]
    assert len(values) == 1, f"[{section}] {key} set {len(values)} times: {values}"
    return values[0]


_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)\s*")
_SPAN_UNITS_S = {
    **dict.fromkeys(("", "s", "sec", "second", "seconds"), 1.0),
    "ms": 0.001,
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}


def timespan_s(text: str) -> float:
    """Seconds in a systemd time span such as ``90``, ``90s``, ``1min 30s`` or ``3h``."""
    text = text.strip()
    total, pos = 0.0, 0
    while pos < len(text):
        match = _SPAN.match(text, pos)
        if match is None or match.group(2) not in _SPAN_UNITS_S:
            raise ValueError(f"not a time span: {text!r}")
        total += float(match.group(1)) * _SPAN_UNITS_S[match.group(2)]
        pos = match.end()
    return total


def run_tool(
    argv: Sequence[str], *, cwd: Path | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run an outside checker (promtool, systemd-analyze) and capture what it says."""
    return subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def tool(name: str) -> str | None:
    """The path of a checker, or None when this machine lacks it (the test then skips)."""
    return shutil.which(name)
