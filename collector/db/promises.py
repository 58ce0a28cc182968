"""Promises to pay's repository (``sql/queries/promises.sql``; the table and the money counted
toward a promise, ``promise_money_v1``, in ``sql/0020_promises_to_pay.sql``).

A promise pauses automatic collection of its lease until ``resume_on`` (the claim and the
eligibility check read it); the pass resolves open promises in one statement
(:func:`resolve`) and collects those asked for on their date (``jobs/promises.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg

from collector.db.pool import Executor
from collector.db.portal import LeaseOwners, lease_customer, owner_of
from collector.db.queries import QUERIES
from collector.exceptions import Conflict, NotFound, Unprocessable


@dataclass(frozen=True, slots=True, kw_only=True)
class NewPromise:
    """What the customer promises: ``amount_cents`` by ``promised_on``."""

    lease_id: int
    amount_cents: int
    promised_on: date
    auto_collect: bool
    today: date  # the business date it is made
    max_days: int  # how far ahead a promise may be (COLLECTOR_PROMISE_MAX_DAYS)
    # The lease's customer when the caller knows it (the API's LeaseOwners), else read first:
    # every statement names it (on Citus it routes them to the customer's shard).
    customer_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Promise:
    """A promise as the portal shows it, with the money counted toward it."""

    id: int
    lease_id: int
    amount_cents: int
    made_on: date
    promised_on: date
    auto_collect: bool
    resume_on: date
    status: str
    resolved_on: date | None
    payment_id: int | None
    created_at: datetime
    paid_cents: int
    pending_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """A promise the pass resolved: kept, broken or cancelled."""

    id: int
    lease_id: int
    customer_id: int
    status: str
    amount_cents: int
    paid_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DueCollection:
    """A promise to collect automatically today: ``collect_cents`` of what it lacks."""

    id: int
    lease_id: int
    customer_id: int
    missing_cents: int
    collect_cents: int


async def make_promise(pool: asyncpg.Pool, new: NewPromise) -> Promise:
    """Record an open promise; raises NotFound (no such lease), Unprocessable (a date in the
    past, today or too far ahead, an amount above the overdue amount, nothing overdue, a lease
    not active) or Conflict (the lease already has an open promise). Nothing is written when
    it raises."""
    if new.promised_on <= new.today:
        raise Unprocessable(
            f"promised_on must be after today ({new.today.isoformat()}); to pay today, make a"
            " payment"
        )
    latest = new.today + timedelta(days=new.max_days)
    if new.promised_on > latest:
        raise Unprocessable(
            f"promised_on may be at most {new.max_days} days ahead (by {latest.isoformat()})"
        )
    async with pool.acquire() as conn, conn.transaction():
        customer_id = new.customer_id
        if customer_id is None:
            customer_id = await lease_customer(conn, new.lease_id)
        lease = None
        if customer_id is not None:
            lease = await conn.fetchrow(
                QUERIES["promises.lock_lease"], new.lease_id, new.today, customer_id
            )
        if lease is None:
            raise NotFound(f"lease {new.lease_id} does not exist")
        assert customer_id is not None
        if lease["status"] != "active":
            raise Unprocessable(f"lease {new.lease_id} is {lease['status']}: it takes no promise")
        if (
            await conn.fetchval(QUERIES["promises.open_promise"], new.lease_id, customer_id)
            is not None
        ):
            raise Conflict(f"lease {new.lease_id} already has an open promise")
        overdue: int = lease["overdue_cents"]
        if overdue == 0:
            raise Unprocessable("nothing is overdue on this lease")
        if new.amount_cents > overdue:
            raise Unprocessable(
                f"amount_cents {new.amount_cents} is more than the overdue amount {overdue}"
            )
        try:
            promise_id: int = await conn.fetchval(
                QUERIES["promises.insert"],
                new.lease_id,
                lease["customer_id"],
                new.amount_cents,
                new.today,
                new.promised_on,
                new.auto_collect,
            )
        except asyncpg.UniqueViolationError as exc:
            # Under the lease's lock no other open promise can appear; kept for the backstop.
            if exc.constraint_name == "promises_one_open":
                raise Conflict(f"lease {new.lease_id} already has an open promise") from exc
            raise
        found = [p for p in await _list(conn, new.lease_id, customer_id) if p.id == promise_id]
    return found[0]


async def lease_promises(
    pool: Executor, lease_id: int, *, owners: LeaseOwners | None = None
) -> list[Promise]:
    """Lease ``lease_id``'s promises, newest first; raises NotFound when there is no lease."""
    customer_id = await owner_of(pool, lease_id, owners)
    if customer_id is None:
        raise NotFound(f"lease {lease_id} does not exist")
    return await _list(pool, lease_id, customer_id)


async def _list(db: Executor, lease_id: int, customer_id: int) -> list[Promise]:
    rows = await db.fetch(QUERIES["promises.list"], lease_id, customer_id)
    return [Promise(**dict(row)) for row in rows]


async def resolve(db: Executor, *, as_of: date) -> list[Resolved]:
    """Resolve the open promises on ``as_of`` (one statement): kept, broken, cancelled."""
    return [Resolved(**dict(row)) for row in await db.fetch(QUERIES["promises.resolve"], as_of)]


async def due_collections(db: Executor, *, as_of: date) -> list[DueCollection]:
    """The promises to collect automatically on ``as_of``, with what to collect."""
    rows = await db.fetch(QUERIES["promises.due_collections"], as_of)
    return [DueCollection(**dict(row)) for row in rows]


async def link_payment(
    db: Executor, *, promise_id: int, customer_id: int, lease_id: int, request_key: str
) -> None:
    """Remember the manual-pay payment made under ``request_key`` for the promise."""
    await db.execute(
        QUERIES["promises.link_payment"], promise_id, lease_id, request_key, customer_id
    )


async def counts(db: Executor) -> dict[str, int]:
    """How many promises are in each status."""
    return {r["status"]: r["promises"] for r in await db.fetch(QUERIES["promises.counts"])}
