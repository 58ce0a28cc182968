"""No trigger defaults an installment's collection date any more (sql/0022): an insert that
forgets next_attempt_on must not go unnoticed, or the installment would never be collected."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from collector.db.audit import run_audit
from tests.factories import make_lease


@pytest.mark.ledger_left_dirty("the test plants an installment with no collection date")
async def test_an_installment_inserted_without_its_collection_date_is_reported(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        ref = await make_lease(conn, due_dates=[date(2026, 11, 2)])
        forgotten = await conn.fetchval(
            "INSERT INTO installments (lease_id, customer_id, seq, due_on, amount_cents)"
            " VALUES ($1, $2, 2, '2026-12-02', 5000) RETURNING id",
            ref.lease_id,
            ref.customer_id,
        )
    report = await run_audit(pool)
    found = [v for vs in report.violations.values() for v in vs if forgotten in v.installment_ids]
    assert found, "an installment that no pass will ever collect went unreported"
