"""The audit's and the gauges' queries, a base commit's SQL against the working tree's, side by
side on one database: alternating, N rounds, each set in one repeatable-read snapshot; prints
each round, the medians, the ratio, and whether both sets returned the same rows.

    uv run python -m bench.audit_side_by_side postgresql://postgres@127.0.0.1:5499/<db> \\
        [--base 5c5b1cd] [--rounds 3]

The base's SQL is read with ``git show <base>:<path>``, so run it from the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from collector.calendar import next_banking_day
from collector.db.audit import CHECKS
from collector.db.queries import parse_queries, sql_dir
from collector.fees.rules import load_rules
from collector.policy import (
    DEFAULT_CARD_RULES,
    MAX_REINITIATIONS,
    PRENOTE_CLOSING_RETURNS,
    REINITIATION_WINDOW_DAYS,
)

FILES = (
    ("sql/queries/audit.sql", "audit"),
    ("sql/queries/stats.sql", "stats"),
    ("sql/external/sandbox.sql", "sandbox"),
)
DAY = date(2026, 11, 6)

Calls = list[tuple[str, str, tuple[Any, ...]]]


def queries(base: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    root = sql_dir().parent
    for path, prefix in FILES:
        if base is None:
            text = (root / path).read_text(encoding="utf-8")
        else:
            text = subprocess.run(
                ["git", "show", f"{base}:{path}"],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            ).stdout
        out.update(parse_queries(prefix, text))
    return out


def audit_calls(q: dict[str, str]) -> Calls:
    rules = DEFAULT_CARD_RULES
    args: dict[str, tuple[Any, ...]] = {
        "audit.late_fees": load_rules().sql_args(),
        "audit.pending_past_deadline": (None, timedelta(hours=1)),
        "audit.reinitiation_cap": (MAX_REINITIATIONS, REINITIATION_WINDOW_DAYS),
        "audit.card_cap": (
            rules.visa_max_declines_30d,
            rules.mastercard_max_declines_30d,
            rules.other_max_declines_30d,
        ),
        "audit.two_strike_stop": (rules.two_strike_limit,),
        "sandbox.sandbox_matches_ledger": (["sandbox_card", "sandbox_ach"],),
        "audit.prenote_before_live": (sorted(PRENOTE_CLOSING_RETURNS),),
    }
    calls: Calls = []
    for check in CHECKS:
        name = "sandbox.sandbox_matches_ledger" if check == "sandbox_matches_ledger" else ""
        name = name or f"audit.{check}"
        calls.append((name, q[name], (100, *args.get(name, ()))))
    return calls


def gauge_calls(q: dict[str, str]) -> Calls:
    calls: Calls = []
    for name in sorted(n for n in q if n.startswith("stats.")):
        a: tuple[Any, ...] = ()
        if name == "stats.business_day_set_aside":
            a = (
                datetime.combine(DAY, datetime.min.time(), UTC),
                datetime.combine(DAY + timedelta(days=1), datetime.min.time(), UTC),
            )
        elif name == "stats.ach_unfiled":
            a = (next_banking_day(DAY),)
        elif "$1" in q[name]:
            a = (DAY,)
        calls.append((name, q[name], a))
    return calls


async def timed(conn: asyncpg.Connection, calls: Calls) -> tuple[float, dict[str, Any]]:
    per: dict[str, Any] = {}
    start = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for name, sql, a in calls:
            s = time.perf_counter()
            rows = await conn.fetch(sql, *a)
            per[name] = (time.perf_counter() - s, [tuple(r) for r in rows])
    return time.perf_counter() - start, per


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--base", default="5c5b1cd")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    sets = {"before": queries(opts.base), "after": queries(None)}
    conn = await asyncpg.connect(opts.url)
    totals: dict[tuple[str, str], list[float]] = {}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in range(opts.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for kind, make in (("audit", audit_calls), ("gauges", gauge_calls)):
            for label in order:
                total, per = await timed(conn, make(sets[label]))
                totals.setdefault((kind, label), []).append(total)
                last[(kind, label)] = per
                print(f"round {r} {kind} {label}: {total * 1000:.0f} ms")
    await conn.close()
    for kind in ("audit", "gauges"):
        b = statistics.median(totals[(kind, "before")])
        a = statistics.median(totals[(kind, "after")])
        before, after = last[(kind, "before")], last[(kind, "after")]
        same = all(before[n][1] == after[n][1] for n in after)
        print(
            f"{kind}: before {b * 1000:.0f} ms, after {a * 1000:.0f} ms,"
            f" after/before {a / b:.2f}, same rows: {same}"
        )
        for n in after:
            print(f"  {n}: {before[n][0] * 1000:.0f} -> {after[n][0] * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
