"""ACH settlement and returns: the debits in flight, and applying what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES


@dataclass(frozen=True, slots=True, kw_only=True)
class DebitInFlight:
    """A bank debit the ledger knows was sent, with what settling or returning it needs."""

    attempt_id: int
    idempotency_key: str
    gateway: str
    installment_id: int | None
    payment_id: int | None
    amount_cents: int
    payment_method_id: int
    first_attempt_on: date
    nsf_returns: int
    status: str = "processing"
    age_s: float = 0.0  # since the attempt was recorded, by the database's clock


def _debit(row: asyncpg.Record) -> DebitInFlight:
    first = row["first_attempt_at"] or row["created_at"]
    return DebitInFlight(
        attempt_id=row["attempt_id"],
        idempotency_key=row["idempotency_key"],
        gateway=row["gateway"],
        installment_id=row["installment_id"],
        payment_id=row["payment_id"],
        amount_cents=row["amount_cents"],
        payment_method_id=row["payment_method_id"],
        first_attempt_on=first.date(),
        nsf_returns=row["nsf_returns"],
        status=row.get("status", "processing"),
        age_s=row.get("age_s", 0.0),
    )


async def debits_in_flight(
    db: Executor, *, after_id: int, gateways: Sequence[str], limit: int
) -> list[DebitInFlight]:
    """The next ``limit`` debits still processing, in id order."""
    rows = await db.fetch(
        QUERIES["settlement.processing_attempts"], after_id, list(gateways), limit
    )
    return [_debit(row) for row in rows]


async def attempt_by_key(db: Executor, idempotency_key: str) -> DebitInFlight | None:
    """The attempt made under this key, whatever its status, or None."""
    row = await db.fetchrow(QUERIES["settlement.attempt_by_key"], idempotency_key)
    return _debit(row) if row is not None else None


async def settle_installment_debits(db: Executor, attempt_ids: Sequence[int]) -> int:
    """Mark these batch debits settled and their installments paid; return how many changed."""
    if not attempt_ids:
        return 0
    rows = await db.fetch(QUERIES["settlement.settle_installments"], list(attempt_ids))
    return len(rows)


async def settle_payment_debit(db: Executor, *, payment_id: int, attempt_id: int) -> bool:
    """Mark a manual payment's debit settled and pay its allocations."""
    rows = await db.fetch(QUERIES["settlement.settle_payment"], payment_id, attempt_id)
    return bool(rows)


async def record_return(
    db: Executor,
    *,
    attempt_id: int,
    code: str,
    category: str,
    source: str,
    next_attempt_on: date | None,
    disable_method: bool,
    as_of: date,
) -> bool:
    """Apply a return once; False when it was already applied (or the attempt cannot be)."""
    row = await db.fetchrow(
        QUERIES["settlement.record_return"],
        attempt_id,
        code,
        category,
        source,
        next_attempt_on,
        disable_method,
        as_of,
    )
    return row is not None


async def remember_webhook_event(db: Executor, *, gateway: str, event_id: str, kind: str) -> bool:
    """True the first time this event is seen; False for a replay."""
    row = await db.fetchrow(QUERIES["settlement.record_webhook_event"], gateway, event_id, kind)
    return row is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReturnRates:
    debits: int
    unauthorized: int
    administrative: int
    returns: int


async def return_rates(db: Executor) -> ReturnRates:
    """ACH debits and returns by category over the last 60 days."""
    row = await db.fetchrow(QUERIES["settlement.return_rates"])
    assert row is not None
    return ReturnRates(
        debits=row["debits"],
        unauthorized=row["unauthorized"],
        administrative=row["administrative"],
        returns=row["returns"],
    )
