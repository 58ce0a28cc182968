"""Bulk inserts for demo and benchmark data: one statement per table per chunk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoCustomer:
    """One demo customer with one lease and one primary method (a token, never a number)."""

    email: str
    name: str
    kind: str
    gateway: str
    token: str
    brand: str | None
    bank_name: str | None
    last4: str
    store: str
    order_details: dict[str, object]
    agreement_ref: str
    installment_cents: int
    first_due_on: date
    state: str | None = None  # the lease's jurisdiction (two-letter US code)


async def insert_customers(
    conn: asyncpg.pool.PoolConnectionProxy, customers: Sequence[DemoCustomer], *, installments: int
) -> None:
    """Insert the customers, their methods, leases and schedules in one transaction."""
    async with conn.transaction():
        rows = await conn.fetch(
            QUERIES["seed.insert_customers"],
            [c.email for c in customers],
            [c.name for c in customers],
        )
        ids = {row["email"]: row["id"] for row in rows}
        customer_ids = [ids[c.email] for c in customers]
        # Emails and agreement references are unique across customers through lookup tables
        # keyed by the value (sql/0022), in this transaction.
        await conn.execute(
            QUERIES["seed.insert_customer_emails"], [c.email for c in customers], customer_ids
        )
        await conn.execute(
            QUERIES["seed.insert_payment_methods"],
            customer_ids,
            [c.kind for c in customers],
            [c.gateway for c in customers],
            [c.token for c in customers],
            [c.brand for c in customers],
            [c.bank_name for c in customers],
            [c.last4 for c in customers],
        )
        lease_rows = await conn.fetch(
            QUERIES["seed.insert_leases"],
            customer_ids,
            [c.store for c in customers],
            [c.order_details for c in customers],
            [c.agreement_ref for c in customers],
            [c.state for c in customers],
        )
        lease_of = {row["customer_id"]: row["id"] for row in lease_rows}
        await conn.execute(
            QUERIES["seed.insert_agreement_refs"],
            [row["agreement_ref"] for row in lease_rows],
            [row["customer_id"] for row in lease_rows],
            [row["id"] for row in lease_rows],
        )
        await conn.execute(
            QUERIES["seed.insert_schedules"],
            [lease_of[cid] for cid in customer_ids],
            installments,
            [c.first_due_on for c in customers],
            [c.installment_cents for c in customers],
            customer_ids,
        )
        await conn.execute(QUERIES["seed.set_terms"], [lease_of[cid] for cid in customer_ids])


async def analyze_seeded(db: Executor) -> None:
    """Give the planner statistics for the tables a seed just filled."""
    await db.execute(QUERIES["seed.analyze"])
