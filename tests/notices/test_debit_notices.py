"""Regulation E: debit.upcoming before each automatic collection, 10 days ahead for a varying
amount, and a varying debit without a timely notice held back (and shown by the dry run)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg

from collector.config import Settings
from collector.domain import MethodKind
from collector.eligibility import (
    DEBIT_NOTICE_REQUIRED,
    Eligible,
    InstrumentHistory,
    NoticeFacts,
    Presentation,
    Refused,
    check,
    debit_varies,
    notice_required,
)
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.jobs.presentment import would_refuse
from tests.factories import attempts_of, installment, make_lease, put_state

DAY = date(2026, 11, 2)


def facts(**kw: object) -> NoticeFacts:
    values: dict[str, object] = {"scheduled_cents": 5_000, "previous_cents": 5_000}
    values.update(kw)
    return NoticeFacts(**values)  # type: ignore[arg-type]


def verdict(amount: int, notice: NoticeFacts | None, *, on: date = DAY):  # type: ignore[no-untyped-def]
    return check(
        Presentation(
            attempt_id=1,
            installment_id=1,
            method_kind=MethodKind.CARD,
            brand="Visa",
            amount_cents=amount,
            as_of=on,
        ),
        instrument=InstrumentHistory(),
        notice=notice,
    )


def test_a_debit_varies_from_the_previous_or_else_the_scheduled_amount() -> None:
    assert not debit_varies(5_000, facts())
    assert debit_varies(4_000, facts())
    assert not debit_varies(5_000, facts(previous_cents=None))
    assert debit_varies(5_500, facts(previous_cents=None))
    # Notice only outside the customer's range, both ends included.
    ranged = facts(range_min_cents=4_000, range_max_cents=6_000)
    assert not notice_required(4_000, ranged) and not notice_required(6_000, ranged)
    assert notice_required(6_001, ranged) and notice_required(3_999, ranged)
    assert not notice_required(5_000, facts())


def test_a_varying_debit_goes_only_ten_days_after_its_notice() -> None:
    assert verdict(4_000, facts()) == Refused(DEBIT_NOTICE_REQUIRED, retry_on=DAY + timedelta(10))
    notified = facts(notified_on=DAY - timedelta(days=9))
    assert verdict(4_000, notified) == Refused(
        DEBIT_NOTICE_REQUIRED, retry_on=DAY + timedelta(days=1)
    )
    assert verdict(4_000, facts(notified_on=DAY - timedelta(days=10))) == Eligible()
    assert verdict(5_000, facts()) == Eligible()  # the same amount: no notice needed
    assert verdict(4_000, None) == Eligible()  # the customer's own payment


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
