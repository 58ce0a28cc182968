"""Regulation E notices of automatic debits (issue 10): what deciding a notice needs, and
the notices written with their ``debit.upcoming`` events (``sql/queries/notices.sql``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.eligibility import NoticeFacts


async def notice_facts(
    db: Executor, presentments: Sequence[tuple[int, int, int]]
) -> dict[tuple[int, int], NoticeFacts]:
    """The notice facts of each (attempt, installment, amount) presentment, by (attempt,
    installment)."""
    if not presentments:
        return {}
    rows = await db.fetch(
        QUERIES["notices.notice_facts"],
        [p[0] for p in presentments],
        [p[1] for p in presentments],
        [p[2] for p in presentments],
    )
    return {
        (row["attempt_id"], row["installment_id"]): NoticeFacts(
            scheduled_cents=row["scheduled_cents"],
            previous_cents=row["previous_cents"],
            range_min_cents=row["notice_range_min_cents"],
            range_max_cents=row["notice_range_max_cents"],
            notified_on=row["notified_on"],
        )
        for row in rows
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class UpcomingDebit:
    """An automatic collection planned soon, with its notice facts and display fields."""

    installment_id: int
    lease_id: int
    customer_id: int
    collection_on: date
    amount_cents: int
    facts: NoticeFacts
    method_id: int | None
    method_kind: str | None
    brand: str | None
    bank_name: str | None
    last4: str | None


async def upcoming_debits(
    db: Executor, *, as_of: date, days: int, batch_size: int
) -> AsyncIterator[list[UpcomingDebit]]:
    """The automatic collections planned from ``as_of`` to ``days`` days later, streamed
    ``batch_size`` at a time in (collection date, installment id) order (as
    :func:`collector.db.preview.due_claims` streams the due set)."""
    after: tuple[date, int] = (date.min, 0)
    while True:
        rows = await db.fetch(
            QUERIES["notices.upcoming_debits"], as_of, days, after[0], after[1], batch_size
        )
        if rows:
            yield [_upcoming(r) for r in rows]
        if len(rows) < batch_size:
            return
        after = (rows[-1]["collection_on"], rows[-1]["installment_id"])


def _upcoming(r: asyncpg.Record) -> UpcomingDebit:
    return UpcomingDebit(
        installment_id=r["installment_id"],
        lease_id=r["lease_id"],
        customer_id=r["customer_id"],
        collection_on=r["collection_on"],
        amount_cents=r["amount_cents"],
        facts=NoticeFacts(
            scheduled_cents=r["scheduled_cents"],
            previous_cents=r["previous_cents"],
            range_min_cents=r["notice_range_min_cents"],
            range_max_cents=r["notice_range_max_cents"],
        ),
        method_id=r["method_id"],
        method_kind=r["method_kind"],
        brand=r["brand"],
        bank_name=r["bank_name"],
        last4=r["last4"],
    )


async def write_debit_notices(
    db: Executor, debits: Sequence[tuple[UpcomingDebit, bool]], *, as_of: date
) -> int:
    """Write a notice and its debit.upcoming event for each (debit, varying), each once
    (per installment, date and amount); how many were new."""
    if not debits:
        return 0
    rows = await db.fetch(
        QUERIES["notices.write_debit_notices"],
        [d.customer_id for d, _ in debits],
        [d.lease_id for d, _ in debits],
        [d.installment_id for d, _ in debits],
        [d.amount_cents for d, _ in debits],
        [d.collection_on for d, _ in debits],
        [varying for _, varying in debits],
        [d.facts.previous_cents for d, _ in debits],
        [d.method_id for d, _ in debits],
        [d.method_kind for d, _ in debits],
        [d.brand for d, _ in debits],
        [d.bank_name for d, _ in debits],
        [d.last4 for d, _ in debits],
        as_of,
    )
    return len(rows)
