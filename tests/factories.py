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
                "INSERT INTO installments (lease_id, seq, due_on, amount_cents)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                lease_id,
                seq,
                due_on,
                amount_cents,
            )
        )
    return LeaseRef(customer_id, lease_id, method_id, ids)


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
