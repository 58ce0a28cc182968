"""method.expiring: a primary card that expires before the next collection date is notified
ahead, once per card and date; the expiry is display-only."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg

from collector.config import Settings
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from tests.factories import make_lease

DAY = date(2026, 11, 26)
DUE = date(2026, 12, 5)


async def _expiring(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM outbox_events WHERE type = 'method.expiring'")


async def _card(pool: asyncpg.Pool, *, exp: tuple[int, int] | None, token: str = "sandbox_card_ok"):  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=[DUE, DUE + timedelta(days=30)])
        if exp is not None:
            await conn.execute(
                "UPDATE payment_methods SET exp_month = $2, exp_year = $3 WHERE id = $1",
                lease.method_id,
                *exp,
            )
    return lease


async def test_a_card_expiring_before_the_next_collection_is_notified_once(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _card(pool, exp=(11, 2026))
    await _card(pool, exp=(12, 2026))  # valid through the due date: nothing
    await _card(pool, exp=None)  # no expiry known: nothing
    early = settings.model_copy(update={"card_expiry_notice_days": 5})
    await run_pass(pool, gateways, early, as_of=DAY)  # 12-05 is 9 days away: not yet
    assert await _expiring(pool) == []
    for day in (DAY, DAY, DAY + timedelta(days=1)):
        await run_pass(pool, gateways, settings, as_of=day)
    [event] = await _expiring(pool)
    assert event["customer_id"] == lease.customer_id and event["lease_id"] == lease.lease_id
    assert event["as_of"] == DAY
    assert event["body"] == {
        "method": {"id": lease.method_id, "kind": "card", "last4": "4242"},
        "exp_month": 11,
        "exp_year": 2026,
        "next_collection_on": DUE.isoformat(),
        "amount_cents": 5_000,
    }


async def test_the_next_date_is_notified_again(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    await _card(pool, exp=(11, 2026))
    await run_pass(pool, gateways, settings, as_of=DAY)
    # The card was not replaced: the next month's collection is notified too. (Its first
    # installment was collected on its date; the expired sandbox card is a token here.)
    await run_pass(pool, gateways, settings, as_of=DUE)
    await run_pass(pool, gateways, settings, as_of=DUE + timedelta(days=20))
    dates = sorted(e["body"]["next_collection_on"] for e in await _expiring(pool))
    assert dates == [DUE.isoformat(), (DUE + timedelta(days=30)).isoformat()]


async def test_expiry_is_for_cards_only_and_whole(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DUE])
        for values in ((11, 2026), (None, 2026)):
            try:
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE payment_methods SET exp_month = $2, exp_year = $3 WHERE id = $1",
                        lease.method_id,
                        *values,
                    )
            except asyncpg.CheckViolationError:
                continue
            raise AssertionError(f"expiry {values} accepted on a bank account")
