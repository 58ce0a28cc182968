"""The customer portal's repository: balances, schedules and payment methods of a customer.

One function per named query of ``sql/queries/portal.sql``, rows become the values below; and
the few operations that need several queries in one transaction (reads in one snapshot, a
change of primary method). No value read here ever includes a payment method's token.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import asyncpg

from collector.db import money, outbox, prenotes
from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.domain import MethodStatus
from collector.eligibility import DEBIT_NOTICE_REQUIRED, PRENOTE_PENDING
from collector.exceptions import NotFound, Unprocessable
from collector.policy import primary_change_warning

# COLLECTOR_PRIMARY_CHANGE_NOTICE_DAYS's default, for callers without settings (tests).
DEFAULT_NOTICE_DAYS = 2
# Refusals that plan the attempt for a later date: the schedule says why it waits, and until when.
HELD_REASONS = (PRENOTE_PENDING, DEBIT_NOTICE_REQUIRED)


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodView:
    """What may be shown of a payment method: display fields, never the token."""

    id: int
    kind: str
    gateway: str
    brand: str | None
    bank_name: str | None
    last4: str | None
    status: str
    is_primary: bool
    # A card's expiry, display only (never used to charge); None for bank accounts.
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSummary:
    """One lease of a customer, with what is overdue and what is due next."""

    id: int
    agreement_ref: str
    store: str
    status: str
    overdue_cents: int
    next_due_on: date | None
    next_due_cents: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    """One lease in full, with its amounts and its customer's primary method."""

    id: int
    customer_id: int
    agreement_ref: str
    store: str
    status: str
    order_details: dict[str, Any]
    overdue_cents: int
    pending_cents: int
    next_due_on: date | None
    next_due_cents: int | None
    primary_payment_method: MethodView | None
    days_past_due: int = 0  # of its oldest installment with money past due
    state: str | None = None  # the jurisdiction whose late-fee rule applies
    fees_owed_cents: int = 0  # late fees not paid yet (net of waivers)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleItem:
    """One installment as the portal shows it (``status`` is the displayed status)."""

    installment_id: int
    seq: int
    due_on: date
    amount_cents: int
    paid_cents: int
    status: str
    collection_stopped: str | None = None  # why no automatic attempt is planned
    collection_held: str | None = None  # why the planned attempt waits (e.g. prenote_pending)
    held_until: date | None = None  # the day it may be presented
    collection_paused: str | None = None  # why automatic collection waits (promise_open)
    collection_resumes_on: date | None = None  # until when
    rent_paid_cents: int = 0
    fee_cents: int = 0  # the late fee, net of its waiver
    fee_paid_cents: int = 0
    fee_waived_cents: int = 0
    fee_id: int | None = None
    owed_cents: int = 0  # rent + fee - waiver


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMethod:
    """A gateway token to register, with its display fields."""

    kind: str
    gateway: str
    # Kept out of the repr, so a log line or a traceback cannot carry it.
    token: str = field(repr=False)
    brand: str | None = None
    bank_name: str | None = None
    last4: str | None = None
    # The gateway's name for the card or account behind the token, where it has one.
    fingerprint: str | None = field(default=None, repr=False)
    # The adapter says the bank account is validated already (no NACHA prenote needed).
    account_validated: bool = False
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrimaryChange:
    """The outcome of a change of primary method."""

    customer_id: int
    method: MethodView
    changed: bool  # False when the method was already the primary one
    reopened: int  # overdue installments given a new attempt date
    next_due_on: date | None  # the customer's next due date on an active lease


def _method(row: asyncpg.Record) -> MethodView:
    return MethodView(
        id=row["id"],
        kind=row["kind"],
        gateway=row["gateway"],
        brand=row["brand"],
        bank_name=row["bank_name"],
        last4=row["last4"],
        status=row["status"],
        is_primary=row["is_primary"],
        exp_month=row.get("exp_month"),
        exp_year=row.get("exp_year"),
    )


class LeaseOwners:
    """The customer of each lease, as found: a lease never changes customer, and every
    statement about a lease names its customer (on Citus the distribution key, so the
    statement routes to one shard; a lease id alone does not). A lease's customer is read
    once (``portal.lease_customer``: on Citus a read of every shard) and kept for as long as
    this lives: the API keeps one per application, that is per pool and database. At most
    ``max_size`` leases are kept (then it starts afresh). A lease not found is not kept."""

    __slots__ = ("_known", "_max_size")

    def __init__(self, max_size: int = 100_000) -> None:
        self._known: dict[int, int] = {}
        self._max_size = max_size

    async def customer_of(self, db: Executor, lease_id: int) -> int | None:
        """The lease's customer, or None when there is no such lease."""
        known = self._known.get(lease_id)
        if known is not None:
            return known
        found = await lease_customer(db, lease_id)
        if found is not None:
            if len(self._known) >= self._max_size:
                self._known.clear()
            self._known[lease_id] = found
        return found

    def known(self, lease_id: int) -> int | None:
        """The lease's customer if it was read before, else None (nothing is read)."""
        return self._known.get(lease_id)


async def owner_of(db: Executor, lease_id: int, owners: LeaseOwners | None) -> int | None:
    """The lease's customer, through ``owners`` when given (else read now); None: no lease."""
    if owners is not None:
        return await owners.customer_of(db, lease_id)
    return await lease_customer(db, lease_id)


# -- One function per named query ---------------------------------------------------------------


async def customer_exists(db: Executor, customer_id: int) -> bool:
    """Whether the customer exists."""
    found: bool = await db.fetchval(QUERIES["portal.customer_exists"], customer_id)
    return found


async def lease_customer(db: Executor, lease_id: int) -> int | None:
    """The customer of the lease, or None when there is no such lease."""
    found: int | None = await db.fetchval(QUERIES["portal.lease_customer"], lease_id)
    return found


async def customer_leases(db: Executor, customer_id: int, *, today: date) -> list[LeaseSummary]:
    """The customer's leases in id order, with their amounts on ``today``."""
    rows = await db.fetch(QUERIES["portal.customer_leases"], customer_id, today)
    return [LeaseSummary(**dict(row)) for row in rows]


async def lease_detail(
    db: Executor, customer_id: int, lease_id: int, *, today: date
) -> LeaseView | None:
    """The customer's lease with its amounts on ``today``, or None when they have no such
    lease."""
    row = await db.fetchrow(QUERIES["portal.lease_detail"], customer_id, lease_id, today)
    if row is None:
        return None
    method = None
    if row["method_id"] is not None:
        method = MethodView(
            id=row["method_id"],
            kind=row["method_kind"],
            gateway=row["method_gateway"],
            brand=row["method_brand"],
            bank_name=row["method_bank_name"],
            last4=row["method_last4"],
            status=row["method_status"],
            is_primary=True,
        )
    return LeaseView(
        id=row["id"],
        customer_id=row["customer_id"],
        agreement_ref=row["agreement_ref"],
        store=row["store"],
        status=row["status"],
        order_details=row["order_details"],
        overdue_cents=row["overdue_cents"],
        pending_cents=row["pending_cents"],
        next_due_on=row["next_due_on"],
        next_due_cents=row["next_due_cents"],
        primary_payment_method=method,
        days_past_due=row["days_past_due"],
        state=row["state"],
        fees_owed_cents=row["fees_owed_cents"],
    )


async def lease_schedule(
    db: Executor, lease_id: int, *, today: date, customer_id: int | None = None
) -> list[ScheduleItem]:
    """Every installment of the lease in seq order, with the status shown on ``today``
    (``customer_id``: the lease's customer, read when not given)."""
    if customer_id is None:
        customer_id = await lease_customer(db, lease_id)
    rows = await db.fetch(
        QUERIES["portal.lease_schedule"], lease_id, today, list(HELD_REASONS), customer_id
    )
    return [ScheduleItem(**dict(row)) for row in rows]


async def customer_methods(db: Executor, customer_id: int) -> list[MethodView]:
    """The customer's payment methods, primary first."""
    rows = await db.fetch(QUERIES["portal.customer_methods"], customer_id)
    return [_method(row) for row in rows]


async def lock_customer(db: Executor, customer_id: int) -> bool:
    """Lock the customer for a change of payment methods; False when there is no such customer."""
    return await db.fetchval(QUERIES["portal.lock_customer"], customer_id) is not None


async def lock_customer_methods(db: Executor, customer_id: int) -> list[MethodView]:
    """Lock the customer's payment methods in id order and return them."""
    rows = await db.fetch(QUERIES["portal.lock_customer_methods"], customer_id)
    return [_method(row) for row in rows]


async def insert_method(db: Executor, customer_id: int, new: NewMethod) -> MethodView:
    """Register a payment method of the customer, not primary."""
    row = await db.fetchrow(
        QUERIES["portal.insert_method"],
        customer_id,
        new.kind,
        new.gateway,
        new.token,
        new.brand,
        new.bank_name,
        new.last4,
        new.fingerprint,
        new.exp_month,
        new.exp_year,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return _method(row)


async def clear_primary(db: Executor, customer_id: int) -> None:
    """Leave the customer without a primary method."""
    await db.execute(QUERIES["portal.clear_primary"], customer_id)


async def set_primary(db: Executor, customer_id: int, method_id: int) -> bool:
    """Make the customer's active method the primary one; False when it is not such a method."""
    return await db.fetchval(QUERIES["portal.set_primary"], customer_id, method_id) is not None


async def authorize(db: Executor, customer_id: int, method_id: int, *, source: str) -> None:
    """Record the customer's authorization of the method now ('added' or 'primary')."""
    await db.execute(QUERIES["portal.authorize"], customer_id, method_id, source)


async def reopen_authorized(db: Executor, customer_id: int, *, today: date) -> int:
    """Plan an attempt on ``today`` for the customer's overdue installments that the
    two-strike stop ended, now that the customer authorized the method again."""
    ids = [
        row["id"]
        for row in await db.fetch(QUERIES["portal.waiting_for_authorization"], customer_id)
    ]
    await money.replan(
        db,
        ids,
        retry_on=today,
        as_of=today,
        source="portal",
        reason="method_reauthorized",
        customer_of=dict.fromkeys(ids, customer_id),
    )
    return len(ids)


async def reopen_retries(db: Executor, customer_id: int, *, today: date) -> int:
    """Plan an attempt on ``today`` for the customer's overdue installments that have none
    (a journal line: the plan is derived like the money). The eligibility check still judges
    each presentment by the card's or account's history, whatever row names it now."""
    ids = [row["id"] for row in await db.fetch(QUERIES["portal.waiting_for_method"], customer_id)]
    await money.replan(
        db,
        ids,
        retry_on=today,
        as_of=today,
        source="portal",
        reason="primary_method_changed",
        customer_of=dict.fromkeys(ids, customer_id),
    )
    return len(ids)


async def customer_next_due(db: Executor, customer_id: int, *, today: date) -> date | None:
    """The customer's next due date on or after ``today`` over their active leases, if any."""
    due: date | None = await db.fetchval(QUERIES["portal.customer_next_due"], customer_id, today)
    return due


# -- Operations of several queries ------------------------------------------------------------


async def read_customer_leases(
    pool: asyncpg.Pool, customer_id: int, *, today: date
) -> list[LeaseSummary]:
    """The customer's leases; raise NotFound when there is no such customer."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if not await customer_exists(conn, customer_id):
            raise NotFound("no such customer")
        return await customer_leases(conn, customer_id, today=today)


async def read_lease(
    pool: asyncpg.Pool, lease_id: int, *, today: date, owners: LeaseOwners | None = None
) -> LeaseView:
    """The lease in full; raise NotFound when there is no such lease."""
    customer_id = await owner_of(pool, lease_id, owners)
    view = None
    if customer_id is not None:
        view = await lease_detail(pool, customer_id, lease_id, today=today)
    if view is None:
        raise NotFound("no such lease")
    return view


async def read_schedule(
    pool: asyncpg.Pool, lease_id: int, *, today: date, owners: LeaseOwners | None = None
) -> list[ScheduleItem]:
    """The lease's schedule; raise NotFound when there is no such lease."""
    # One statement once the lease's customer is known (a lease never changes customer, so
    # the two need no common snapshot).
    customer_id = await owner_of(pool, lease_id, owners)
    if customer_id is None:
        raise NotFound("no such lease")
    return await lease_schedule(pool, lease_id, today=today, customer_id=customer_id)


async def read_customer_methods(pool: asyncpg.Pool, customer_id: int) -> list[MethodView]:
    """The customer's payment methods; raise NotFound when there is no such customer."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if not await customer_exists(conn, customer_id):
            raise NotFound("no such customer")
        return await customer_methods(conn, customer_id)


async def _make_primary(
    conn: Executor,
    customer_id: int,
    method: MethodView,
    *,
    previous_id: int | None,
    today: date,
    notice_days: int,
) -> int:
    # Called with the customer and their methods locked, inside the caller's transaction.
    await clear_primary(conn, customer_id)
    if not await set_primary(conn, customer_id, method.id):
        # The caller checked the method under lock; reaching this is a bug, not a bad request.
        raise AssertionError(f"method {method.id} could not be made primary")
    await authorize(conn, customer_id, method.id, source="primary")
    reopened = await reopen_retries(conn, customer_id, today=today)
    # The event is written in the change's own transaction (the outbox, issue 10).
    next_due_on = await customer_next_due(conn, customer_id, today=today)
    await outbox.write_event(
        conn,
        type=outbox.EventType.PRIMARY_CHANGED,
        customer_id=customer_id,
        lease_id=None,
        as_of=today,
        body={
            "method": {
                "id": method.id,
                "kind": method.kind,
                "brand": method.brand,
                "bank_name": method.bank_name,
                "last4": method.last4,
            },
            "previous_method_id": previous_id,
            "next_due_on": next_due_on.isoformat() if next_due_on else None,
            "warning": primary_change_warning(next_due_on, today=today, notice_days=notice_days),
        },
    )
    return reopened


async def add_method(
    pool: asyncpg.Pool,
    customer_id: int,
    new: NewMethod,
    *,
    make_primary: bool,
    today: date,
    notice_days: int = DEFAULT_NOTICE_DAYS,
) -> MethodView:
    """Register a method of the customer, made primary if asked, in one transaction; raise
    NotFound when there is no such customer."""
    async with pool.acquire() as conn, conn.transaction():
        if not await lock_customer(conn, customer_id):
            raise NotFound("no such customer")
        previous_id = None
        if make_primary:
            methods = await lock_customer_methods(conn, customer_id)
            previous_id = next((m.id for m in methods if m.is_primary), None)
        method = await insert_method(conn, customer_id, new)
        await authorize(conn, customer_id, method.id, source="added")
        if make_primary:
            await _make_primary(
                conn,
                customer_id,
                method,
                previous_id=previous_id,
                today=today,
                notice_days=notice_days,
            )
            method = replace(method, is_primary=True)
        if new.account_validated:
            await prenotes.mark_validated(conn, method.id)
        # An account a prenote found closed stays closed under a new row (by its fingerprint).
        if await prenotes.close_if_closed(conn, method.id):
            method = replace(method, status="disabled")
    return method


async def change_primary(
    pool: asyncpg.Pool,
    customer_id: int,
    method_id: int,
    *,
    today: date,
    notice_days: int = DEFAULT_NOTICE_DAYS,
) -> PrimaryChange:
    """Make an active method of the customer their primary one and give the installments that
    waited for a new method an attempt on ``today``, in one transaction; raise NotFound for an
    unknown customer and Unprocessable for a method that is not theirs or not active."""
    async with pool.acquire() as conn, conn.transaction():
        if not await lock_customer(conn, customer_id):
            raise NotFound("no such customer")
        methods = await lock_customer_methods(conn, customer_id)
        chosen = next((m for m in methods if m.id == method_id), None)
        if chosen is None:
            # The same words whether the method belongs to someone else or does not exist at
            # all, so the answer reveals nothing about other customers.
            raise Unprocessable(f"payment method {method_id} is not a method of this customer")
        if chosen.status != MethodStatus.ACTIVE:
            raise Unprocessable(
                f"payment method {method_id} is disabled and cannot be made primary;"
                " choose an active method"
            )
        reopened = 0
        if not chosen.is_primary:
            # Only a different method reopens retries: re-selecting the method that just failed
            # would present the same card or account again, past the networks' and NACHA's
            # reattempt limits that made the engine stop.
            reopened = await _make_primary(
                conn,
                customer_id,
                chosen,
                previous_id=next((m.id for m in methods if m.is_primary), None),
                today=today,
                notice_days=notice_days,
            )
        else:
            # Choosing the primary method again is the customer's new authorization of it
            # (the two-strike stop waits for one); only what that stop ended is reopened, the
            # networks' and NACHA's limits still hold for the rest.
            await authorize(conn, customer_id, method_id, source="primary")
            reopened = await reopen_authorized(conn, customer_id, today=today)
        next_due_on = await customer_next_due(conn, customer_id, today=today)
    return PrimaryChange(
        customer_id=customer_id,
        method=replace(chosen, is_primary=True),
        changed=not chosen.is_primary,
        reopened=reopened,
        next_due_on=next_due_on,
    )
