"""A method whose kind its gateway does not charge is never sent, on any path (the API refuses
to store one; an older row or another writer may still hold one)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import asyncpg

from collector.config import Settings
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from tests.factories import attempts_of, installment, make_lease

TODAY = date(2026, 11, 26)


async def test_the_batch_declines_a_mismatched_method_without_sending_it(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        card_under_ach = await make_lease(conn, due_dates=[TODAY])
        await conn.execute(
            "UPDATE payment_methods SET gateway = 'sandbox_ach' WHERE id = $1",
            card_under_ach.method_id,
        )
        fine = await make_lease(conn, due_dates=[TODAY])

    result = await run_pass(pool, gateways, settings, as_of=TODAY)

    assert (result.counts.succeeded, result.counts.declined) == (1, 1)
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, card_under_ach.installment_ids[0])
        assert (attempt["status"], attempt["outcome_code"]) == ("declined", "method_kind_mismatch")
        row = await installment(conn, card_under_ach.installment_ids[0])
        assert (row["status"], row["paid_cents"], row["next_attempt_on"]) == ("overdue", 0, None)
        method = await conn.fetchval(
            "SELECT status FROM payment_methods WHERE id = $1", card_under_ach.method_id
        )
        assert method == "disabled"
        # The gateway's own record: only the well-filed method was sent.
        sent = await conn.fetch("SELECT idempotency_key FROM sandbox.charges")
        [fine_attempt] = await attempts_of(conn, fine.installment_ids[0])
    assert [r["idempotency_key"] for r in sent] == [fine_attempt["idempotency_key"]]
