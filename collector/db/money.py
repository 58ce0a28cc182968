"""The money journal's one door (DESIGN.md, "The money journal").

Every path that moves money adds journal rows through the SQL functions money_present_*,
money_follow_* and money_replan_*, each of which applies the rows it adds
(``money_apply_*``) in the same transaction: an installment's paid, in-flight, status and
plan columns are never written anywhere else. The v2 functions (sql/0023) name the
statement's customers, one shard group's on Citus, and are called as statements of their
own (these wrappers); the v1 functions find the customers themselves and run inside other
statements on one node (the claim, the record, manual pay, settlements). SQL in
``sql/0006_money_journal.sql``, ``sql/0023_route_money.sql`` and ``sql/queries/money.sql``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.db.routing import shard_groups
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
    """Reserve the money of these presentments and re-derive their installments, one
    statement per shard group of their customers (one on plain PostgreSQL)."""
    if not presentments:
        return
    for group in await shard_groups(db, (p.customer_id for p in presentments)):
        members = set(group)
        part = [p for p in presentments if p.customer_id in members]
        await db.execute(
            QUERIES["money.present"],
            [p.attempt_id for p in part],
            [p.installment_id for p in part],
            [p.amount_cents for p in part],
            [p.customer_id for p in part],
            [p.payment_id for p in part],
            as_of,
            [p.source for p in part],
            group,
        )


async def follow(
    db: Executor,
    endings: Sequence[Ending],
    *,
    as_of: date,
    source: str,
    customer_of: Mapping[int, int],
) -> None:
    """Apply what became of these attempts (each once); an ending of kind None (no answer
    yet: in doubt) adds nothing. ``customer_of``: each attempt's customer, so that each
    statement names its shard group's customers (one group on plain PostgreSQL). Required:
    a statement that does not name its customers cannot run on Citus."""
    endings = [e for e in endings if e.kind is not None]
    if not endings:
        return
    for group in await shard_groups(db, (customer_of[e.attempt_id] for e in endings)):
        members = set(group)
        part = [e for e in endings if customer_of[e.attempt_id] in members]
        await db.execute(QUERIES["money.follow"], *_follow_args(part, as_of, source), group)


def _follow_args(endings: Sequence[Ending], as_of: date, source: str) -> tuple[object, ...]:
    return (
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
    customer_of: Mapping[int, int],
) -> None:
    """Set the next collection date of these installments without moving money.
    ``customer_of``: each installment's customer (as for ``follow``)."""
    if not installment_ids:
        return
    for group in await shard_groups(db, (customer_of[i] for i in installment_ids)):
        members = set(group)
        part = [i for i in installment_ids if customer_of[i] in members]
        await db.execute(QUERIES["money.replan"], part, retry_on, as_of, source, reason, group)
