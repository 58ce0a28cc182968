"""Aggregates behind the dashboards' gauges: one snapshot, three small queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from collector.db.pool import Executor
from collector.db.queries import QUERIES


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Installments by state (count, unpaid cents), unknown outcomes, and today's collection."""

    states: dict[str, tuple[int, int]] = field(default_factory=dict)
    in_doubt: tuple[int, int] = (0, 0)
    oldest_in_doubt_age_s: float = 0.0
    due_today_cents: int = 0
    collected_today_cents: int = 0
    last_success_at: datetime | None = None


async def snapshot(db: Executor, *, as_of: date) -> Snapshot:
    """Read the figures the gauges show for business date ``as_of``."""
    states = {
        row["state"]: (row["installments"], row["cents"])
        for row in await db.fetch(QUERIES["stats.installment_states"], as_of)
    }
    doubt = await db.fetchrow(QUERIES["stats.in_doubt"])
    today = await db.fetchrow(QUERIES["stats.due_today_collected"], as_of)
    last_success_at = await db.fetchval(QUERIES["stats.last_success"])
    assert doubt is not None and today is not None
    return Snapshot(
        states=states,
        in_doubt=(doubt["attempts"], doubt["cents"]),
        oldest_in_doubt_age_s=doubt["oldest_age_s"],
        due_today_cents=today["due_cents"],
        collected_today_cents=today["paid_cents"],
        last_success_at=last_success_at,
    )
