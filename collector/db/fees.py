"""Late fees' repository (``sql/queries/fees.sql``): the pass's assessment (one statement a
pass, through ``money_assess_fees_v1``), the waiver (``money_waive_fee_v2``, under the
installment's row lock), and the reads of the dry run and the portal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from collector.db.pool import Executor, transaction
from collector.db.queries import QUERIES
from collector.db.routing import one_node, shard_groups
from collector.fees.rules import FeeTable


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessed:
    fees: int
    cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FeesDue:
    """Of the late fees a pass would assess: those of one rule (a state, or 'default')."""

    rule: str
    fees: int
    cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiver:
    """What became of a waiver: 'waived', 'not_found', 'already_waived' or 'fee_paid'."""

    outcome: str
    waiver_id: int | None
    installment_id: int | None
    amount_cents: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseFee:
    fee_id: int
    installment_id: int
    seq: int
    amount_cents: int
    assessed_on: date
    rule: str
    waiver_id: int | None
    waived_on: date | None
    waiver_reason: str | None


async def assess(db: Executor, table: FeeTable, *, as_of: date, source: str) -> Assessed:
    """Assess every late fee due on ``as_of``; what was added. One statement on one node; on
    Citus the fees due read once, then recorded one shard group of customers at a time
    (sql/0027)."""
    if await one_node(db):
        row = await db.fetchrow(QUERIES["fees.assess"], as_of, *table.sql_args(), source)
        assert row is not None
        return Assessed(fees=row["fees"], cents=row["cents"])
    due_rows = await db.fetch(QUERIES["fees.due_rows"], as_of, *table.sql_args())
    fees = cents = 0
    for group in await shard_groups(db, [r["customer_id"] for r in due_rows]):
        members = set(group)
        mine = [r for r in due_rows if r["customer_id"] in members]
        async with transaction(db) as conn:
            row = await conn.fetchrow(
                QUERIES["fees.record_group"],
                [r["installment_id"] for r in mine],
                [r["customer_id"] for r in mine],
                [r["fee_cents"] for r in mine],
                [r["rule"] for r in mine],
                as_of,
                source,
                group,
            )
        assert row is not None
        fees += row["fees"]
        cents += row["cents"]
    return Assessed(fees=fees, cents=cents)


async def due(
    db: Executor, table: FeeTable, *, as_of: date, charged_off_first: Sequence[int] = ()
) -> list[FeesDue]:
    """The late fees a pass on ``as_of`` would assess, by rule, leaving out the leases it
    would charge off before (``charged_off_first``). Reads only."""
    rows = await db.fetch(QUERIES["fees.due"], as_of, *table.sql_args(), list(charged_off_first))
    return [FeesDue(rule=r["rule"], fees=r["fees"], cents=r["cents"]) for r in rows]


async def waive(
    db: Executor,
    *,
    customer_id: int,
    lease_id: int,
    fee_id: int,
    as_of: date,
    source: str,
    reason: str,
) -> Waiver:
    """Waive fee ``fee_id`` of customer ``customer_id``'s lease ``lease_id`` whole, with
    ``reason``; what became of it."""
    row = await db.fetchrow(
        QUERIES["fees.waive"], lease_id, fee_id, as_of, source, reason, customer_id
    )
    assert row is not None
    return Waiver(
        outcome=row["outcome"],
        waiver_id=row["waiver_id"],
        installment_id=row["installment_id"],
        amount_cents=row["amount_cents"],
    )


async def lease_fees(db: Executor, customer_id: int, lease_id: int) -> list[LeaseFee]:
    """The fees of a lease of the customer, oldest installment first, with their waivers."""
    rows = await db.fetch(QUERIES["fees.lease_fees"], lease_id, customer_id)
    return [LeaseFee(**dict(r)) for r in rows]


async def set_lease_state(db: Executor, customer_id: int, lease_id: int, state: str | None) -> bool:
    """Set the jurisdiction of a lease of the customer; False when they have no such lease."""
    found = await db.fetchval(QUERIES["fees.lease_state"], lease_id, state, customer_id)
    return found is not None
