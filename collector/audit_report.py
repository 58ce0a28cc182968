"""How ``collector audit`` shows an :class:`~collector.db.audit.AuditReport`: lines for a
person, one JSON object for a machine. Only ids, amounts and reasons: never a token."""

from __future__ import annotations

from typing import Any

from collector.db.audit import CHECKS, AuditReport, Violation


def render_text(report: AuditReport) -> list[str]:
    """The report as lines: a summary, then each check that found something, its rows."""
    if report.clean:
        lines = [f"audit: clean ({len(CHECKS)} checks)"]
    else:
        failing = sum(1 for check in CHECKS if report.counts.get(check, 0))
        lines = [f"audit: {report.total} violation(s) in {failing} of {len(CHECKS)} checks"]
    for check in CHECKS:
        if check in report.skipped:
            lines.append(f"  {check}: skipped ({report.skipped[check]})")
            continue
        count = report.counts.get(check, 0)
        if not count:
            continue
        listed = report.violations.get(check, ())
        more = f", {len(listed)} listed" if len(listed) < count else ""
        lines.append(f"  {check}: {count}{more}")
        lines.extend(f"    {v.message}" for v in listed)
    return lines


def _violation_dict(v: Violation) -> dict[str, Any]:
    return {
        "message": v.message,
        "installment_ids": list(v.installment_ids),
        "attempt_ids": list(v.attempt_ids),
        "payment_ids": list(v.payment_ids),
        "customer_ids": list(v.customer_ids),
        "attention_ids": list(v.attention_ids),
        "keys": list(v.keys),
        "facts": dict(v.facts),
    }


def report_dict(report: AuditReport) -> dict[str, Any]:
    """The report as JSON-ready data: stable keys scripts rely on, every check present."""
    return {
        "clean": report.clean,
        "total": report.total,
        "checks": {
            check: {
                "count": report.counts.get(check, 0),
                "skipped": report.skipped.get(check),
                "violations": [_violation_dict(v) for v in report.violations.get(check, ())],
            }
            for check in CHECKS
        },
    }
