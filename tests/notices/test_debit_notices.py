"""Regulation E: debit.upcoming before each automatic collection, 10 days ahead for a varying
amount, and a varying debit without a timely notice held back (and shown by the dry run)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg

from collector.config import Settings
from collector.db.notices import upcoming_debits
from collector.eligibility import (
    DEBIT_NOTICE_REQUIRED,
)
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.jobs.notices import write_due_notices
from collector.jobs.presentment import would_refuse
from tests.factories import attempts_of, installment, make_lease, put_state

DAY = date(2026, 11, 2)


async def _notices(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT e.as_of, e.body, d.varying FROM outbox_events e"
        " JOIN debit_notices d ON d.event_id = e.id ORDER BY e.id"
    )


async def test_debit_upcoming_goes_out_three_days_before_a_regular_collection(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    due = DAY + timedelta(days=5)
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[due])
    for day in range(5):
        await run_pass(pool, gateways, settings, as_of=DAY + timedelta(days=day))
    [notice] = await _notices(pool)
    assert notice["as_of"] == due - timedelta(days=3) and notice["varying"] is False
    assert notice["body"] == {
        "installment_id": lease.installment_ids[0],
        "collection_on": due.isoformat(),
        "amount_cents": 5_000,
        "varying": False,
        "method": {"id": lease.method_id, "kind": "card", "last4": "4242"},
    }
    await run_pass(pool, gateways, settings, as_of=due)
    async with pool.acquire() as conn:
        assert (await installment(conn, lease.installment_ids[0]))["status"] == "paid"


async def test_a_varying_debit_without_a_timely_notice_is_held_until_it_is(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY])
        iid = lease.installment_ids[0]
        # A partial payment made the amount differ from the schedule: 3,000 of 5,000 left.
        await put_state(conn, iid, status="scheduled", paid_cents=2_000)
    preview = await would_refuse(
        pool, as_of=DAY, gateways=settings.gateways, batch_size=settings.batch_size
    )
    assert [(g.reason, g.installments, g.amount_cents) for g in preview] == [
        (DEBIT_NOTICE_REQUIRED, 1, 3_000)
    ]
    result = await run_pass(pool, gateways, settings, as_of=DAY)
    assert result.counts.refused == 1 and result.counts.succeeded == 0
    [notice] = await _notices(pool)
    assert notice["varying"] is True and notice["body"]["amount_cents"] == 3_000
    async with pool.acquire() as conn:
        row = await installment(conn, iid)
        assert row["next_attempt_on"] == DAY + timedelta(days=10)
        [held] = await attempts_of(conn, iid)
        assert (held["status"], held["outcome_code"]) == ("refused", DEBIT_NOTICE_REQUIRED)
    # Nothing before the tenth day; then the debit goes, once.
    await run_pass(pool, gateways, settings, as_of=DAY + timedelta(days=9))
    await run_pass(pool, gateways, settings, as_of=DAY + timedelta(days=10))
    async with pool.acquire() as conn:
        row = await installment(conn, iid)
        assert (row["status"], row["paid_cents"]) == ("paid", 5_000)
        attempts = await attempts_of(conn, iid)
    assert [a["status"] for a in attempts] == ["refused", "succeeded"]


async def test_a_debit_within_the_customers_range_needs_no_ten_day_notice(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY])
        await conn.execute(
            "UPDATE leases SET notice_range_min_cents = 1000, notice_range_max_cents = 6000"
            " WHERE id = $1",
            lease.lease_id,
        )
        await put_state(conn, lease.installment_ids[0], status="scheduled", paid_cents=2_000)
    result = await run_pass(pool, gateways, settings, as_of=DAY)
    assert result.counts.succeeded == 1 and result.counts.refused == 0


async def test_the_horizon_is_read_a_batch_at_a_time_from_where_the_last_one_ended(
    pool: asyncpg.Pool,
) -> None:
    # Five debits in the ten-day horizon, three on one date: a batch of two ends between
    # two of them, and the next batch goes on from the second, not past the third.
    days = [1, 3, 3, 3, 8]
    async with pool.acquire() as conn:
        leases = [await make_lease(conn, due_dates=[DAY + timedelta(days=d)]) for d in days]
    expected = sorted(
        (DAY + timedelta(days=d), lease.installment_ids[0])
        for d, lease in zip(days, leases, strict=True)
    )
    seen = []
    async for batch in upcoming_debits(pool, as_of=DAY, days=10, batch_size=2):
        assert len(batch) <= 2
        seen += [(d.collection_on, d.installment_id) for d in batch]
    assert seen == expected


async def test_the_notices_step_writes_every_due_notice_however_small_its_batches(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    days = [1, 3, 3, 3, 8]
    async with pool.acquire() as conn:
        leases = [await make_lease(conn, due_dates=[DAY + timedelta(days=d)]) for d in days]
    written = await write_due_notices(pool, settings, as_of=DAY, batch_size=2)
    notified = sorted(n["body"]["installment_id"] for n in await _notices(pool))
    # Three days ahead and nearer; the debit eight days out has no notice yet.
    due = sorted(lease.installment_ids[0] for d, lease in zip(days, leases, strict=True) if d <= 3)
    assert written == 4 and notified == due
    # Once each: a second pass the same day writes none again.
    assert await write_due_notices(pool, settings, as_of=DAY, batch_size=2) == 0
