"""How ``collector report delinquency`` shows a
:class:`~collector.jobs.aging.DelinquencyReport`: lines for a person, one JSON object for a
machine. Counts, cents and shares only."""

from __future__ import annotations

import dataclasses
from typing import Any

from collector.aging import CHARGED_OFF
from collector.domain import format_cents
from collector.jobs.aging import DelinquencyReport


def render_text(report: DelinquencyReport) -> list[str]:
    """The buckets, then the roll-rate matrix (shares of each bucket's cents)."""
    if report.as_of is None:
        return [f"delinquency on {report.asked_for}: no snapshot yet (a pass writes one)"]
    lines = [f"delinquency on {report.as_of} (snapshot of the pass of that business date)"]
    lines.append(f"  {'bucket':<12} {'leases':>8} {'past due':>16}")
    lines.extend(
        f"  {b.bucket:<12} {b.leases:>8} {format_cents(b.cents):>16}" for b in report.buckets
    )
    if report.compared_with is None:
        lines.append("  roll rates: no snapshot old enough to compare with")
    else:
        columns = [b.bucket for b in report.buckets] + [CHARGED_OFF]
        lines.append(
            f"  roll rates from {report.compared_with} (share of each bucket's past-due cents)"
        )
        lines.append("  " + f"{'from':<12}" + "".join(f"{c:>12}" for c in columns))
        for row in report.roll_rates:
            shares = "".join(f"{row.to[c]:>12.1%}" for c in columns)
            lines.append(f"  {row.bucket:<12}{shares}")
        lines.append(
            "  " + f"{'':<12}" + f"{'cured':>12}{'stayed':>12}{'rolled back':>12}"
            f"{'forward':>12}{'charged off':>12}"
        )
        lines.extend(
            f"  {row.bucket:<12}{row.cured:>12.1%}{row.stayed:>12.1%}"
            f"{row.rolled_back:>12.1%}{row.rolled_forward:>12.1%}{row.charged_off:>12.1%}"
            for row in report.roll_rates
        )
    lines.append(
        f"  recovered after charge-off: {report.recovered_leases} lease(s),"
        f" {format_cents(report.recovered_cents)}"
    )
    return lines


def report_dict(report: DelinquencyReport) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    return {
        "as_of": report.as_of.isoformat() if report.as_of else None,
        "asked_for": report.asked_for.isoformat(),
        "buckets": [
            {"bucket": b.bucket, "leases": b.leases, "past_due_cents": b.cents}
            for b in report.buckets
        ],
        "roll_rates_from": report.compared_with.isoformat() if report.compared_with else None,
        "roll_rates": [
            {**dataclasses.asdict(row), "to": dict(row.to)} for row in report.roll_rates
        ],
        "recovered": {"leases": report.recovered_leases, "cents": report.recovered_cents},
    }
