"""Manual payments: claim the overdue installments of a lease and record a pending attempt
(one transaction), then apply the gateway's answer (another). SQL in sql/queries/payments.sql."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

from collector.db.attempts import register_keys
from collector.db.outbox import write_money_events
from collector.db.payoff import read_payoff
from collector.db.pool import Executor, transaction
from collector.db.portal import lease_customer
from collector.db.queries import QUERIES
from collector.db.routing import one_node
from collector.domain import AttemptSource, ClaimedCharge, LeaseStatus, MethodKind
from collector.exceptions import Conflict, NotFound, RateLimited, Unprocessable


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """At most ``max_attempts`` manual payments per customer in any ``window_s`` seconds."""

    max_attempts: int
    window_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRequest:
    """A portal request to pay overdue installments of a lease now."""

    lease_id: int
    request_key: str
    request_hash: str
    amount_cents: int | None
    payment_method_id: int | None
    as_of: date
    gateways: Sequence[str]
    deadline_s: int
    # The kinds of payment method each gateway charges, where it says (method_kinds): a
    # method whose kind its gateway does not charge is refused before anything is recorded.
    gateway_kinds: Mapping[str, frozenset[MethodKind] | None] = field(default_factory=dict)
    # None: no limit (the engine's own callers); the API passes the configured one.
    rate_limit: RateLimit | None = None
    # A payoff: pay exactly the lease's payoff quote today (amount_cents, when given, must
    # be that) and cancel what is left of its installments (sql/0017).
    payoff: bool = False
    payoff_quote_days: int = 10
    # What the payment pays first (COLLECTOR_ALLOCATION_ORDER): see allocate_in_order.
    allocation_order: str = "installment"
    # The lease's customer, when the caller knows it (the API's LeaseOwners); else it is read
    # first (every statement of the payment names it: on Citus it routes them to one shard).
    customer_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Earlier:
    """The payment made earlier under this Idempotency-Key: the answer given then (None when
    the request died before answering) and where it stands now."""

    payment_id: int
    status_code: int | None
    body: dict[str, Any] | None
    payment_status: str
    attempt_status: str | None
    outcome_code: str | None
    amount_cents: int
    payment_method_id: int
    created_at: datetime
    allocations: list[tuple[int, int]]
    payoff: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedPayment:
    """A pending manual payment, its attempt on record, its installments claimed."""

    payment_id: int
    created_at: datetime
    charge: ClaimedCharge
    allocations: list[tuple[int, int]]  # (installment id, cents), oldest first
    refused: str | None = None  # the eligibility check's reason: nothing may be sent


Present = Callable[[Executor, ClaimedCharge], Awaitable[tuple[ClaimedCharge, str | None]]]
"""Presents a claimed payment's money in the caller's transaction; returns the charge to
send (labelled a reinitiation where it is one) and the eligibility check's refusal reason,
or None when it may be sent."""


async def start_payment(
    pool: asyncpg.Pool, req: PaymentRequest, *, present: Present
) -> ClaimedPayment | Earlier:
    """Claim and record a manual payment and present its money (``present``), or return the
    payment made earlier under a repeated key.

    Raises NotFound (no such lease), Unprocessable (key reused with another body, a lease
    that is not active, nothing overdue, amount above the overdue total, unusable method, a
    method its gateway cannot charge), RateLimited (the customer started too many payments
    in the window) and Conflict (the batch is charging one of these installments now); when
    it raises, nothing was recorded.
    """
    async with pool.acquire() as conn, conn.transaction():
        customer_id = req.customer_id
        if customer_id is None and not await one_node(conn):
            # The locks must route to the customer's shard: find the customer first. On plain
            # PostgreSQL the locking statement finds it, as many statements as before.
            customer_id = await lease_customer(conn, req.lease_id)
            if customer_id is None:
                raise NotFound(f"lease {req.lease_id} does not exist")
        # Two round trips before the insert: the locks, then everything read under them (a
        # read in the locking statement would use a snapshot taken before its lock waits).
        lease = await conn.fetchrow(QUERIES["payments.lock_lease"], req.lease_id, customer_id)
        if lease is None:
            raise NotFound(f"lease {req.lease_id} does not exist")
        view = await conn.fetchrow(
            QUERIES["payments.claim_view"],
            req.lease_id,
            req.request_key,
            req.as_of,
            lease["customer_id"],
            req.payment_method_id,
            req.rate_limit.max_attempts if req.rate_limit is not None else None,
            req.rate_limit.window_s if req.rate_limit is not None else None,
        )
        assert view is not None
        if view["earlier_id"] is not None:
            if view["request_hash"] != req.request_hash:
                raise Unprocessable(
                    "this Idempotency-Key was already used with a different request body"
                )
            return Earlier(
                payment_id=view["earlier_id"],
                status_code=view["response_status"],
                body=view["response_body"],
                payment_status=view["earlier_status"],
                attempt_status=view["attempt_status"],
                outcome_code=view["outcome_code"],
                amount_cents=view["earlier_amount_cents"],
                payment_method_id=view["earlier_method_id"],
                created_at=view["earlier_created_at"],
                allocations=list(
                    zip(view["allocation_ids"], view["allocation_cents"], strict=True)
                ),
                payoff=bool(view["earlier_payoff"]),
            )

        if req.payoff and lease["status"] == LeaseStatus.CHARGED_OFF:
            raise Unprocessable(
                f"lease {req.lease_id} is charged off: only an active lease can be paid off"
                " (a payment without payoff is accepted as a recovery)"
            )
        if lease["status"] not in (LeaseStatus.ACTIVE, LeaseStatus.CHARGED_OFF):
            # The batch collects active leases only; a lease paid off or closed takes no
            # payment through the portal either (a replay above still answers). A charged-off
            # lease does: the customer's payment is a recovery (the report counts it).
            raise Unprocessable(
                f"lease {req.lease_id} is {lease['status'].replace('_', ' ')}:"
                " only an active or charged-off lease can be paid"
            )
        if req.rate_limit is not None and view["wait_s"] is not None:
            raise RateLimited(
                f"at most {req.rate_limit.max_attempts} manual payments per customer in"
                f" {req.rate_limit.window_s} s; try again later",
                retry_after_s=max(1, math.ceil(view["wait_s"])),
            )
        if view["any_processing"]:
            raise Conflict("a payment is in progress for this lease; try again shortly")
        if req.payoff:
            lines, amount = await _payoff_claim(conn, req, lease["customer_id"])
        else:
            lines = [
                (iid, cents, rent)
                for iid, cents, rent in zip(
                    view["unpaid_ids"],
                    view["unpaid_cents"],
                    view["unpaid_rent_cents"],
                    strict=True,
                )
                if cents
            ]
            overdue_cents = sum(cents for _, cents, _ in lines)
            if overdue_cents == 0:
                raise Unprocessable("nothing is overdue on this lease")
            amount = req.amount_cents if req.amount_cents is not None else overdue_cents
            if amount > overdue_cents:
                raise Unprocessable(
                    f"amount_cents {amount} is more than the overdue amount {overdue_cents}"
                )
        if view["method_id"] is None:
            raise Unprocessable(
                "no active primary payment method on file"
                if req.payment_method_id is None
                else f"payment method {req.payment_method_id} cannot be used for this customer"
            )
        method = {
            "id": view["method_id"],
            "kind": view["kind"],
            "gateway": view["gateway"],
            "token": view["token"],
            "brand": view["brand"],
            "instrument_key": view["instrument_key"],
        }
        if method["gateway"] not in req.gateways:
            raise Unprocessable(f"payment method {method['id']} uses a gateway not enabled here")
        kinds = req.gateway_kinds.get(method["gateway"])
        if kinds is not None and MethodKind(method["kind"]) not in kinds:
            # A token filed under the wrong kind: the gateway would be asked to charge a card
            # as a bank debit (or the reverse), under the other kind's rules.
            raise Unprocessable(
                f"payment method {method['id']} is recorded as {method['kind']}, which its"
                f" gateway {method['gateway']} does not charge; register it again"
            )

        allocations = allocate_in_order(lines, amount, req.allocation_order)
        row = await conn.fetchrow(
            QUERIES["payments.insert_payment"],
            req.lease_id,
            lease["customer_id"],
            method["id"],
            amount,
            req.request_key,
            req.request_hash,
            req.as_of,
            method["gateway"],
            req.deadline_s,
            [iid for iid, _ in allocations],
            [cents for _, cents in allocations],
            req.payoff,
        )
        assert row is not None
        # The payment's key, once across all customers (sql/0022), before anything is sent.
        await register_keys(conn, [(row["idempotency_key"], lease["customer_id"])])
        if req.payoff:
            # What the payoff's money does not cover is forgiven now, so that nothing of the
            # lease is collectable while that money is in flight; the payment's ending keeps
            # or undoes it (money_payoff_follow_v1).
            await conn.fetchval(
                QUERIES["payments.cancel_remaining"],
                row["payment_id"],
                row["attempt_id"],
                req.lease_id,
                req.as_of,
                AttemptSource.MANUAL.value,
                lease["customer_id"],
            )
        charge = ClaimedCharge(
            attempt_id=row["attempt_id"],
            installment_id=None,
            payment_id=row["payment_id"],
            lease_id=req.lease_id,
            customer_id=lease["customer_id"],
            payment_method_id=method["id"],
            gateway=method["gateway"],
            method_kind=MethodKind(method["kind"]),
            token=method["token"],
            amount_cents=amount,
            idempotency_key=row["idempotency_key"],
            attempt_no=1,
            due_on=None,
            source=AttemptSource.MANUAL,
            brand=method["brand"],
            as_of=req.as_of,
            effective_on=req.as_of,
            instrument_key=method["instrument_key"],
            allocations=tuple(allocations),
        )
        charge, refused = await present(conn, charge)
    return ClaimedPayment(
        payment_id=row["payment_id"],
        created_at=row["created_at"],
        charge=charge,
        allocations=allocations,
        refused=refused,
    )


async def _payoff_claim(
    conn: asyncpg.pool.PoolConnectionProxy, req: PaymentRequest, customer_id: int
) -> tuple[list[tuple[int, int, int]], int]:
    """Lock the lease's installments with money left and return them (id, cents left, of it
    rent; oldest first; late fees are part of what is left) with the payoff amount; raises
    Conflict while money of the lease is in flight or when the request names another amount
    than today's quote, Unprocessable when nothing is left to pay."""
    locked = await conn.fetchrow(
        QUERIES["payments.lock_open_installments"], req.lease_id, customer_id
    )
    assert locked is not None
    if locked["any_in_flight"]:
        # Counting it as paid would give the goods away if it comes back; counting it as
        # owed would take it twice if it settles: the payoff waits for it (README).
        raise Conflict(
            "money of this lease is in flight (a bank debit awaiting settlement): the payoff"
            " can be paid once it has settled"
        )
    quote = await read_payoff(
        conn,
        req.lease_id,
        as_of=req.as_of,
        quote_days=req.payoff_quote_days,
        customer_id=customer_id,
    )
    if quote.amount_cents == 0:
        raise Unprocessable("nothing is left to pay on this lease")
    if req.amount_cents is not None and req.amount_cents != quote.amount_cents:
        raise Conflict(
            f"the payoff of lease {req.lease_id} is {quote.amount_cents} cents today, not"
            f" {req.amount_cents}: ask for the quote again"
        )
    lines = [
        (iid, cents, rent)
        for iid, cents, rent in zip(
            locked["ids"], locked["cents"], locked["rent_cents"], strict=True
        )
        if cents
    ]
    return lines, quote.amount_cents


def allocate(owed: Sequence[tuple[int, int]], amount_cents: int) -> list[tuple[int, int]]:
    """Spread ``amount_cents`` over (installment, unpaid cents) pairs, oldest first."""
    allocations = []
    left = amount_cents
    for installment_id, unpaid in owed:
        if left == 0:
            break
        share = min(unpaid, left)
        allocations.append((installment_id, share))
        left -= share
    if left:
        raise ValueError("amount exceeds what is owed")
    return allocations


def allocate_in_order(
    lines: Sequence[tuple[int, int, int]], amount_cents: int, order: str
) -> list[tuple[int, int]]:
    """Spread ``amount_cents`` over (installment, unpaid cents, of it rent) lines, oldest
    first, in allocation order ``order``: 'installment' (each installment's rent, then its
    fee, then the next installment), 'rent_first' (every installment's rent, oldest first,
    then the fees), 'newest_first' (the most recent installment's rent and fee first). Within
    an installment the rent is always paid before the fee: the journal keeps one paid amount
    per installment, and the schedule shows its rent part and its fee part from it."""
    if order == "installment":
        return allocate([(iid, unpaid) for iid, unpaid, _ in lines], amount_cents)
    if order == "newest_first":
        newest = dict(allocate([(iid, unpaid) for iid, unpaid, _ in reversed(lines)], amount_cents))
        return [(iid, newest[iid]) for iid, _, _ in lines if iid in newest]
    if order != "rent_first":
        raise ValueError(f"unknown allocation order {order!r}")
    rent = [(iid, min(rent_cents, unpaid)) for iid, unpaid, rent_cents in lines]
    rent_total = sum(cents for _, cents in rent)
    shares = dict.fromkeys((iid for iid, _, _ in lines), 0)
    for iid, cents in allocate([r for r in rent if r[1]], min(amount_cents, rent_total)):
        shares[iid] += cents
    fees = [(iid, unpaid - min(rent_cents, unpaid)) for iid, unpaid, rent_cents in lines]
    for iid, cents in allocate(
        [f for f in fees if f[1]], amount_cents - min(amount_cents, rent_total)
    ):
        shares[iid] += cents
    return [(iid, cents) for iid, cents in shares.items() if cents]


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentOutcome:
    """What to store for a manual payment's answer."""

    attempt_status: str
    payment_status: str
    gateway_ref: str | None
    code: str | None
    message: str | None
    disable_method: bool
    response_status: int | None = None
    response_body: dict[str, Any] | None = None
    network_advice: str | None = None


async def record_payment_outcome(
    db: Executor,
    *,
    customer_id: int,
    payment_id: int,
    attempt_id: int,
    outcome: PaymentOutcome,
    money_kind: str | None,
    as_of: date,
    source: str,
) -> bool:
    """Store the answer and apply what it does to the money (journal kind ``money_kind``,
    None for nothing yet), in one statement; False when the attempt was already resolved."""
    if not await one_node(db):
        # On Citus the journal's outbox trigger cannot run (distribution.py): the events of
        # the answer are written here, in its transaction.
        async with transaction(db) as conn:
            recorded = await _record_payment_outcome(
                conn, customer_id, payment_id, attempt_id, outcome, money_kind, as_of, source
            )
            if recorded and money_kind is not None:
                await write_money_events(conn, [attempt_id], customers=[customer_id])
        return recorded
    return await _record_payment_outcome(
        db, customer_id, payment_id, attempt_id, outcome, money_kind, as_of, source
    )


async def _record_payment_outcome(
    db: Executor,
    customer_id: int,
    payment_id: int,
    attempt_id: int,
    outcome: PaymentOutcome,
    money_kind: str | None,
    as_of: date,
    source: str,
) -> bool:
    rows = await db.fetch(
        QUERIES["payments.record_outcome"],
        payment_id,
        attempt_id,
        outcome.attempt_status,
        outcome.payment_status,
        outcome.gateway_ref,
        outcome.code,
        outcome.message,
        outcome.disable_method,
        outcome.response_status,
        outcome.response_body,
        outcome.network_advice,
        money_kind,
        as_of,
        source,
        customer_id,
    )
    return bool(rows)


async def refuse_payment(
    db: Executor, *, customer_id: int, payment_id: int, status_code: int, body: dict[str, Any]
) -> None:
    """Mark a payment refused before any charge, with the answer to replay."""
    await db.execute(QUERIES["payments.refuse"], payment_id, status_code, body, customer_id)


def response_json(body: dict[str, Any]) -> dict[str, Any]:
    """A body as it will be stored in jsonb and read back (dates as strings)."""
    loaded: dict[str, Any] = json.loads(json.dumps(body, default=str))
    return loaded
