"""ACH settlement and returns: the debits in flight, and applying what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.outbox import write_money_events
from collector.db.pool import Executor, fetch_planned, transaction
from collector.db.queries import QUERIES
from collector.db.routing import shard_groups


@dataclass(frozen=True, slots=True, kw_only=True)
class DebitInFlight:
    """A debit the ledger knows was sent, with what settling or returning it needs."""

    attempt_id: int
    idempotency_key: str
    gateway: str
    installment_id: int | None
    payment_id: int | None
    amount_cents: int
    payment_method_id: int
    customer_id: int
    original_on: date  # business date of the original entry of this money on this account
    nsf_returns: int  # earlier NSF returns of this money on this account
    primary_method_id: int | None  # the customer's active primary method now
    attempt_no: int = 1
    status: str = "processing"
    age_s: float = 0.0  # since the key was last sent, by the database's clock


def _debit(row: asyncpg.Record) -> DebitInFlight:
    return DebitInFlight(
        attempt_id=row["attempt_id"],
        idempotency_key=row["idempotency_key"],
        gateway=row["gateway"],
        installment_id=row["installment_id"],
        payment_id=row["payment_id"],
        amount_cents=row["amount_cents"],
        payment_method_id=row["payment_method_id"],
        customer_id=row["customer_id"],
        original_on=row["original_on"],
        nsf_returns=row["nsf_returns"],
        primary_method_id=row["primary_method_id"],
        attempt_no=row["attempt_no"],
        status=row.get("status", "processing"),
        age_s=row.get("age_s", 0.0),
    )


async def debits_in_flight(
    db: Executor, *, after_id: int, gateways: Sequence[str], limit: int
) -> list[DebitInFlight]:
    """The next ``limit`` debits still processing, in id order."""
    rows = await fetch_planned(
        db, QUERIES["settlement.processing_attempts"], after_id, list(gateways), limit
    )
    return [_debit(row) for row in rows]


async def attempt_by_key(db: Executor, idempotency_key: str) -> DebitInFlight | None:
    """The attempt made under this key, whatever its status, or None."""
    row = await db.fetchrow(QUERIES["settlement.attempt_by_key"], idempotency_key)
    return _debit(row) if row is not None else None


async def settle_attempts(
    db: Executor, debits: Sequence[DebitInFlight], *, as_of: date, source: str
) -> list[int]:
    """Mark these debits settled (and their manual payments) and settle their money, one
    statement per shard group of their customers (one on plain PostgreSQL), and their outbox
    events; return the ids that changed."""
    if not debits:
        return []
    async with transaction(db) as conn:
        changed: list[int] = []
        for customers in await shard_groups(conn, (d.customer_id for d in debits)):
            group = set(customers)
            rows = await fetch_planned(
                conn,
                QUERIES["settlement.settle_attempts"],
                customers,
                [d.attempt_id for d in debits if d.customer_id in group],
                as_of,
                source,
            )
            ids = [row["attempt_id"] for row in rows]
            await write_money_events(conn, ids, customers=customers)
            changed += ids
    return changed


async def decline_processing(
    db: Executor,
    *,
    attempt_id: int,
    customer_id: int,
    code: str,
    message: str,
    disable_method: bool,
) -> bool:
    """Mark a payment its gateway had left processing as declined; False if it was not."""
    row = await db.fetchrow(
        QUERIES["settlement.decline_processing"],
        attempt_id,
        code,
        message,
        disable_method,
        customer_id,
    )
    return row is not None


async def record_return(
    db: Executor,
    *,
    attempt_id: int,
    customer_id: int,
    code: str,
    category: str,
    source: str,
    disable_method: bool,
    as_of: date,
) -> bool | None:
    """Record a return once: whether the money had settled (True: reverse it), or None when
    it was already applied or the attempt cannot be returned."""
    row = await db.fetchrow(
        QUERIES["settlement.record_return"],
        attempt_id,
        code,
        category,
        source,
        disable_method,
        as_of,
        customer_id,
    )
    return None if row is None else bool(row["reversed_paid"])


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
