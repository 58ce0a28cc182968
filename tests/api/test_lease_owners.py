"""A lease's customer, read once (collector.db.portal.LeaseOwners), and the portal's balances
(lease_balances_v1, sql/0023) agreeing with lease_balance_v3 (sql/0021), which the pass still
reads."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from collector.db.portal import LeaseOwners, lease_customer
from tests.factories import make_lease, put_state

pytestmark = pytest.mark.anyio

TODAY = date(2026, 11, 26)


async def test_a_lease_customer_is_read_once_and_an_unknown_lease_is_not_kept(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    owners = LeaseOwners()
    assert owners.known(lease.lease_id) is None
    assert await owners.customer_of(pool, lease.lease_id) == lease.customer_id
    assert owners.known(lease.lease_id) == lease.customer_id
    assert await owners.customer_of(pool, 999_999) is None
    assert owners.known(999_999) is None
    assert await lease_customer(pool, 999_999) is None


async def test_lease_owners_stay_bounded(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await make_lease(conn, due_dates=[TODAY])
        second = await make_lease(conn, due_dates=[TODAY])
    owners = LeaseOwners(max_size=1)
    await owners.customer_of(pool, first.lease_id)
    await owners.customer_of(pool, second.lease_id)
    assert owners.known(first.lease_id) is None
    assert owners.known(second.lease_id) == second.customer_id


async def test_balances_with_the_customer_agree_with_lease_balance_v3(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, due_dates=[date(2026, 10, 26), date(2026, 11, 20), TODAY, date(2026, 12, 26)]
        )
        older, overdue, _, _ = lease.installment_ids
        await put_state(conn, older, status="scheduled", paid_cents=1_000)
        await put_state(conn, overdue, status="overdue")
        other = await make_lease(conn, due_dates=[date(2026, 11, 1)])
        v3 = await conn.fetchrow("SELECT * FROM lease_balance_v3($1, $2)", lease.lease_id, TODAY)
        rows = await conn.fetch(
            "SELECT * FROM lease_balances_v1($1, NULL, $2)", lease.customer_id, TODAY
        )
        of_other = await conn.fetch(
            "SELECT * FROM lease_balances_v1($1, $2, $3)", lease.customer_id, other.lease_id, TODAY
        )
    assert v3 is not None
    [row] = rows  # the customer's one lease; the other customer's lease is not theirs
    assert row["lease_id"] == lease.lease_id
    for column in ("overdue_cents", "pending_cents", "next_due_on", "fees_owed_cents"):
        assert row[column] == v3[column], column
    assert row["next_due_cents"] == v3["next_due_cents"]
    assert row["overdue_cents"] == 4_000 + 5_000
    assert row["days_past_due"] == (TODAY - date(2026, 10, 26)).days
    assert of_other == []
