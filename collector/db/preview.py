"""Read-only views of what a pass would do, for ``collector run --dry-run``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from collector.db import fees
from collector.db.fees import FeesDue
from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.domain import AttemptSource, ClaimedCharge, MethodKind
from collector.fees.rules import FeeTable


@dataclass(frozen=True, slots=True, kw_only=True)
class DueGroup:
    gateway: str
    kind: str
    installments: int
    amount_cents: int
    fee_cents: int = 0  # of the amount: late fees assessed before


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedGroup:
    reason: str
    installments: int
    amount_cents: int
    sample_ids: list[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnresolvedGroup:
    status: str
    attempts: int
    amount_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeOffLine:
    """A lease the pass would charge off before its claim, and the cents written off."""

    lease_id: int
    customer_id: int
    days_past_due: int
    amount_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """What a pass for ``as_of`` would charge, pass over, refuse, and reconcile."""

    as_of: date
    due: list[DueGroup]
    skipped: list[SkippedGroup]
    unresolved: list[UnresolvedGroup]
    # Of the due: what the eligibility check would refuse, by reason.
    refused: list[SkippedGroup] = field(default_factory=list)
    # The leases the pass would charge off first (their installments are not in ``due``).
    charge_offs: list[ChargeOffLine] = field(default_factory=list)
    # The late fees the pass would assess before it claims (by rule; added to the due).
    fees: list[FeesDue] = field(default_factory=list)


# An attempt id above every real one: the dry run's would-be attempts, so the history of
# every attempt on record counts as earlier.
_WOULD_BE_ATTEMPT = 2**62


async def due_claims(
    db: Executor,
    *,
    as_of: date,
    gateways: Sequence[str],
    batch_size: int,
    charge_off_days: int = 0,
) -> AsyncIterator[list[ClaimedCharge]]:
    """The due set a pass would claim, as would-be charges (no attempt on record), streamed a
    batch at a time in claim order, without the leases it would charge off first (more than
    ``charge_off_days`` past due; 0: none). Reads only."""
    after: tuple[date, int] = (date.min, 0)
    while True:
        rows = await db.fetch(
            QUERIES["preview.due_rows"],
            as_of,
            after[0],
            after[1],
            list(gateways),
            batch_size,
            charge_off_days,
        )
        if not rows:
            return
        after = (rows[-1]["next_attempt_on"], rows[-1]["installment_id"])
        yield [
            ClaimedCharge(
                attempt_id=_WOULD_BE_ATTEMPT,
                installment_id=row["installment_id"],
                lease_id=row["lease_id"],
                customer_id=row["customer_id"],
                payment_method_id=row["payment_method_id"],
                gateway=row["gateway"],
                method_kind=MethodKind(row["kind"]),
                token="",
                amount_cents=row["amount_cents"],
                idempotency_key="",
                attempt_no=0,
                due_on=row["due_on"],
                source=AttemptSource(row["source"]),
                brand=row["brand"],
                as_of=as_of,
                instrument_key=row["instrument_key"],
            )
            for row in rows
        ]


async def preview(
    pool: asyncpg.Pool,
    *,
    as_of: date,
    gateways: Sequence[str],
    charge_off_days: int = 0,
    fee_table: FeeTable | None = None,
) -> Preview:
    """Read the due set, the skipped set, the leases to charge off (more than
    ``charge_off_days`` past due; 0: none), the unresolved attempts and (with ``fee_table``:
    late fees are on) the fees the pass would assess, in one snapshot."""
    names = list(gateways)
    days = charge_off_days
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        due = await conn.fetch(QUERIES["preview.due_by_gateway"], as_of, names, days)
        skipped = await conn.fetch(QUERIES["preview.skipped"], as_of, names, days)
        charge_offs = await conn.fetch(QUERIES["preview.charge_offs"], as_of, days)
        unresolved = await conn.fetch(QUERIES["preview.unresolved_attempts"])
        fees_due = (
            await fees.due(
                conn,
                fee_table,
                as_of=as_of,
                charged_off_first=[row["lease_id"] for row in charge_offs],
            )
            if fee_table
            else []
        )
    return Preview(
        as_of=as_of,
        due=[DueGroup(**dict(row)) for row in due],
        skipped=[SkippedGroup(**dict(row)) for row in skipped],
        unresolved=[UnresolvedGroup(**dict(row)) for row in unresolved],
        charge_offs=[ChargeOffLine(**dict(row)) for row in charge_offs],
        fees=fees_due,
    )
