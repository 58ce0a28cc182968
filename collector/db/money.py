"""The money journal's one door (DESIGN.md, "The money journal").

Every path that moves money adds journal rows through the SQL functions money_present_v1,
money_follow_v1 and money_replan_v1, each of which applies the rows it adds
(``money_apply_v1``) in the same transaction: an installment's paid, in-flight, status and
plan columns are never written anywhere else. The batch claim, the batch record, manual
pay's claim and a batch of settlements call them inside their own statement (one round trip
a batch); the rest (refusals, returns, declines, manual answers, the portal's replan) call
them through these wrappers. SQL in ``sql/0006_money_journal.sql`` (the functions) and
``sql/queries/money.sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.domain import MovementKind


@dataclass(frozen=True, slots=True, kw_only=True)
class Presentment:
    """Money an attempt presents for one installment."""

    attempt_id: int
    installment_id: int
    amount_cents: int
    customer_id: int
    source: str
    payment_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ending:
    """What became of an attempt's money: ``kind`` None adds nothing (no answer yet).
    ``sets_plan``: ``retry_on`` becomes the installment's next collection
    date (None: no automatic attempt)."""

    attempt_id: int
    kind: MovementKind | None
    sets_plan: bool = False
    retry_on: date | None = None
    reason: str | None = None


async def present(db: Executor, presentments: Sequence[Presentment], *, as_of: date) -> None:
    """Reserve the money of these presentments and re-derive their installments."""
    if not presentments:
        return
    await db.execute(
        QUERIES["money.present"],
        [p.attempt_id for p in presentments],
        [p.installment_id for p in presentments],
        [p.amount_cents for p in presentments],
        [p.customer_id for p in presentments],
        [p.payment_id for p in presentments],
        as_of,
        [p.source for p in presentments],
    )


async def follow(db: Executor, endings: Sequence[Ending], *, as_of: date, source: str) -> None:
    """Apply what became of these attempts (each once); an ending of kind None (no answer
    yet: in doubt) adds nothing."""
    endings = [e for e in endings if e.kind is not None]
    if not endings:
        return
    await db.execute(
        QUERIES["money.follow"],
        [e.attempt_id for e in endings],
        [e.kind.value for e in endings if e.kind is not None],
        [e.sets_plan for e in endings],
        [e.retry_on for e in endings],
        [e.reason for e in endings],
        as_of,
        source,
    )


async def replan(
    db: Executor,
    installment_ids: Sequence[int],
    *,
    retry_on: date | None,
    as_of: date,
    source: str,
    reason: str,
) -> None:
    """Set the next collection date of these installments without moving money."""
    if not installment_ids:
        return
    await db.execute(
        QUERIES["money.replan"], list(installment_ids), retry_on, as_of, source, reason
    )
