"""Test data written straight into the real database (tests may hold SQL; the engine may not)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date

import asyncpg

_seq = itertools.count(1)


@dataclass(frozen=True, slots=True)
class LeaseRef:
    customer_id: int
    lease_id: int
    method_id: int | None
    installment_ids: list[int]


async def make_lease(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    *,
    token: str = "sandbox_card_ok",
    due_dates: list[date],
    amount_cents: int = 5_000,
    lease_status: str = "active",
    method_status: str = "active",
    primary: bool = True,
    with_method: bool = True,
) -> LeaseRef:
    """A customer with one lease, one method (by token) and an installment per due date."""
    n = next(_seq)
    kind = "ach" if token.startswith("sandbox_ach") else "card"
    customer_id = await conn.fetchval(
        "INSERT INTO customers (email, name) VALUES ($1, $2) RETURNING id",
        f"t{n}@example.com",
        f"Test {n}",
    )
    method_id = None
    if with_method:
        method_id = await conn.fetchval(
            "INSERT INTO payment_methods (customer_id, kind, gateway, token, last4, status,"
            " is_primary) VALUES ($1, $2, $3, $4, '4242', $5, $6) RETURNING id",
            customer_id,
            kind,
            f"sandbox_{kind}",
            token,
            method_status,
            primary,
        )
    lease_id = await conn.fetchval(
        "INSERT INTO leases (customer_id, store, agreement_ref, status, order_details)"
        " VALUES ($1, 'Test Store', $2, $3, '{\"item\": \"sofa\"}') RETURNING id",
        customer_id,
        f"AGR-T-{n}",
        lease_status,
    )
    ids = []
    for seq, due_on in enumerate(due_dates, start=1):
        ids.append(
            await conn.fetchval(
                "INSERT INTO installments"
                " (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)"
                " VALUES ($1, $2, $3, $4, $4, $5) RETURNING id",
                lease_id,
                customer_id,
                seq,
                due_on,
                amount_cents,
            )
        )
    return LeaseRef(customer_id, lease_id, method_id, ids)


async def attempt_under_key(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    lease: LeaseRef,
    key: str,
    *,
    as_of: date,
    status: str = "declined",
    gateway_ref: str | None = None,
) -> int:
    """An attempt of ``lease``'s first installment, of 5,000 cents through its method, under
    ``key`` (no journal: the caller writes it, or rolls back); its id."""
    attempt_id: int = await conn.fetchval(
        "INSERT INTO charge_attempts (installment_id, payment_method_id, amount_cents,"
        " idempotency_key, source, status, gateway, gateway_ref, customer_id,"
        " instrument_key, as_of, effective_on)"
        " SELECT $1, pm.id, 5000, $2, 'batch', $3, pm.gateway, $4, pm.customer_id,"
        " pm.instrument_key, $5, $5"
        " FROM payment_methods pm WHERE pm.id = $6 RETURNING id",
        lease.installment_ids[0],
        key,
        status,
        gateway_ref,
        as_of,
        lease.method_id,
    )
    return attempt_id


async def next_payment_id(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> int:
    """The id the next payment will get (read without using it up): manual pay derives its
    idempotency key from it (collector-pay-<id>)."""
    next_id: int = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('payments', 'id'))")
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('payments', 'id'), $1, false)", next_id
    )
    return next_id


async def carried_over_attempt(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, key: str, *, as_of: date
) -> LeaseRef:
    """An attempt carried over from an earlier system under ``key`` (one the engine will
    derive for an attempt of its own), declined on ``as_of`` on a new lease of a new
    customer, with its journal and its key held across customers; that lease."""
    other = await make_lease(conn, due_dates=[as_of])
    attempt_id = await attempt_under_key(conn, other, key, as_of=as_of, gateway_ref="legacy-1")
    # Held across customers, as 0022's backfill holds every key of the earlier history.
    await conn.execute(
        "INSERT INTO idempotency_keys (idempotency_key, customer_id) VALUES ($1, $2)",
        key,
        other.customer_id,
    )
    await conn.execute(
        "SELECT money_present_v1(ARRAY[$1::bigint], ARRAY[$2::bigint], ARRAY[5000::bigint],"
        " ARRAY[$3::bigint], ARRAY[NULL::bigint], $4, ARRAY['batch'])",
        attempt_id,
        other.installment_ids[0],
        other.customer_id,
        as_of,
    )
    await conn.execute(
        "SELECT money_follow_v1(ARRAY[$1::bigint], ARRAY['released'], ARRAY[true],"
        " ARRAY[NULL::date], ARRAY['do_not_honor'], $2, 'migration')",
        attempt_id,
        as_of,
    )
    return other


async def installment(
    conn: asyncpg.pool.PoolConnectionProxy, installment_id: int
) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM installments WHERE id = $1", installment_id)
    assert row is not None
    return row


async def attempts_of(
    conn: asyncpg.pool.PoolConnectionProxy, installment_id: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM charge_attempts WHERE installment_id = $1 ORDER BY id", installment_id
    )


async def put_state(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    installment_id: int,
    *,
    status: str,
    paid_cents: int = 0,
    next_attempt_on: date | None = None,
    attempts: int = 0,
) -> None:
    """Bring an installment to a state the way its history would: through journal rows and
    the one derivation (the engine writes its money state nowhere else, and the audit checks
    it). ``attempts``: that many earlier batch presentments, declined."""
    row = await conn.fetchrow(
        "SELECT i.amount_cents, i.due_on, l.customer_id, pm.id AS method_id, pm.gateway,"
        " pm.instrument_key FROM installments i"
        " JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id"
        " LEFT JOIN payment_methods pm ON pm.customer_id = l.customer_id"
        " WHERE i.id = $1 ORDER BY pm.is_primary DESC NULLS LAST LIMIT 1",
        installment_id,
    )
    assert row is not None
    if status == "cancelled":
        await conn.execute(
            "UPDATE installments SET status = 'cancelled' WHERE id = $1", installment_id
        )
        # Cancelled is kept by the derivation; the plan it clears is derived too.
        await conn.execute("SELECT installments_derive_v1(ARRAY[$1::bigint])", installment_id)
        return
    if status == "paid":
        paid_cents = row["amount_cents"]
    if paid_cents:
        for kind in ("presented", "settled"):
            movement = await conn.fetchval(
                "INSERT INTO money_movements (customer_id, installment_id, kind, amount_cents,"
                " as_of, source, answers) VALUES ($1, $2, $3, $4, $5, 'migration', $3 = 'settled')"
                " RETURNING id",
                row["customer_id"],
                installment_id,
                kind,
                paid_cents,
                row["due_on"],
            )
            await conn.execute(
                "SELECT money_apply_v2(ARRAY[$1::bigint], ARRAY[$2::bigint])",
                movement,
                row["customer_id"],
            )
    for n in range(1, attempts + 1):
        attempt_id = await _attempt(
            conn, installment_id, row, n, row["amount_cents"] - paid_cents, "declined"
        )
        await conn.execute(
            "SELECT money_present_v2(ARRAY[$1::bigint], ARRAY[$2::bigint], ARRAY[$3::bigint],"
            " ARRAY[$4::bigint], ARRAY[NULL::bigint], $5, ARRAY['batch'], ARRAY[$4::bigint])",
            attempt_id,
            installment_id,
            row["amount_cents"] - paid_cents,
            row["customer_id"],
            row["due_on"],
        )
        await conn.execute(
            "SELECT money_follow_v2(ARRAY[$1::bigint], ARRAY['released'], ARRAY[true],"
            " ARRAY[NULL::date], ARRAY['test'], $2, 'test', ARRAY[$3::bigint])",
            attempt_id,
            row["due_on"],
            row["customer_id"],
        )
        if row["method_id"] is not None:
            # The customer authorized the method again after each: a history of declines in a
            # row that the two-strike stop allows, however many.
            await conn.execute(
                "INSERT INTO method_authorizations"
                " (customer_id, payment_method_id, instrument_key, source)"
                " VALUES ($1, $2, $3, 'primary')",
                row["customer_id"],
                row["method_id"],
                row["instrument_key"],
            )
    if status in ("processing", "pending_settlement"):
        attempt_status = "pending" if status == "processing" else "processing"
        attempt_id = await _attempt(
            conn,
            installment_id,
            row,
            attempts + 1,
            row["amount_cents"] - paid_cents,
            attempt_status,
        )
        await conn.execute(
            "SELECT money_present_v2(ARRAY[$1::bigint], ARRAY[$2::bigint], ARRAY[$3::bigint],"
            " ARRAY[$4::bigint], ARRAY[NULL::bigint], $5, ARRAY['batch'], ARRAY[$4::bigint])",
            attempt_id,
            installment_id,
            row["amount_cents"] - paid_cents,
            row["customer_id"],
            row["due_on"],
        )
        if attempt_status == "processing":
            # The gateway took the debit: answered, settling later.
            await conn.execute(
                "SELECT money_follow_v2(ARRAY[$1::bigint], ARRAY['accepted'], ARRAY[false],"
                " ARRAY[NULL::date], ARRAY[NULL::text], $2, 'test', ARRAY[$3::bigint])",
                attempt_id,
                row["due_on"],
                row["customer_id"],
            )
    if status == "overdue" or (next_attempt_on is not None and next_attempt_on != row["due_on"]):
        await conn.execute(
            "SELECT money_replan_v2(ARRAY[$1::bigint], ARRAY[$4::bigint], $2, $3, 'test',"
            " 'state for a test')",
            installment_id,
            next_attempt_on,
            row["due_on"],
            row["customer_id"],
        )
    got = await conn.fetchval("SELECT status FROM installments WHERE id = $1", installment_id)
    assert got == status, f"installment {installment_id} is {got}, not {status}"


async def _attempt(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    installment_id: int,
    row: asyncpg.Record,
    n: int,
    amount_cents: int,
    status: str,
) -> int:
    attempt_id: int = await conn.fetchval(
        "INSERT INTO charge_attempts (installment_id, payment_method_id, amount_cents,"
        " idempotency_key, source, status, gateway, gateway_ref, customer_id, instrument_key,"
        " as_of, effective_on, claimed_until)"
        " VALUES ($1, $2, $3, $4, 'batch', $5, $6, $7, $8, $9, $10, $10, now() + interval '1 hour')"
        " RETURNING id",
        installment_id,
        row["method_id"],
        amount_cents,
        f"collector-inst-{installment_id}-{n}",
        status,
        # Made up as history, not sent: no gateway of the engine's (and no sandbox record).
        "test_history",
        None if status == "pending" else f"test_{installment_id}_{n}",
        row["customer_id"],
        row["instrument_key"],
        row["due_on"],
    )
    return attempt_id


async def set_terms(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    lease_id: int,
    *,
    cash_price_cents: int,
    delivered_on: date,
    window_days: int = 90,
    window_fee_cents: int = 2_500,
    after_bps: int = 5_000,
) -> None:
    """Give a lease its terms (sql/0017): the total of payments is its schedule's sum."""
    await conn.execute(
        "UPDATE leases SET cash_price_cents = $2, delivered_on = $3, epo_window_days = $4,"
        " epo_window_fee_cents = $5, epo_after_bps = $6, total_of_payments_cents ="
        " (SELECT sum(amount_cents) FROM installments WHERE lease_id = $1) WHERE id = $1",
        lease_id,
        cash_price_cents,
        delivered_on,
        window_days,
        window_fee_cents,
        after_bps,
    )
