"""A payoff under COLLECTOR_ALLOCATION_ORDER=newest_first with a late fee on the oldest
installment: the payoff's money pays the newest installments, its cancellation forgives the
oldest one's rent and fee, and the fee, covered by the payoff, is not waived any more."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg
import pytest

from collector.config import Settings
from collector.db.audit import run_audit
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from tests.factories import make_lease, set_terms
from tests.jobs.portal import Portal

DELIVERED = date(2026, 10, 1)
DUE_DATES = [date(2026 + (10 + n) // 12, (10 + n) % 12 + 1, 1) for n in range(12)]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"late_fees": True, "allocation_order": "newest_first"})


async def test_a_newest_first_payoff_cancels_the_oldest_rent_and_its_fee(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn,
            token="sandbox_card_insufficient_funds",
            due_dates=DUE_DATES,
            amount_cents=10_000,
        )
        await set_terms(conn, lease.lease_id, cash_price_cents=72_000, delivered_on=DELIVERED)
        await conn.execute("UPDATE leases SET state = 'CA' WHERE id = $1", lease.lease_id)
    day = DUE_DATES[0]
    while day <= date(2026, 11, 10):
        await run_pass(pool, gateways, settings, as_of=day)
        day += timedelta(days=1)
    portal.today = date(2026, 11, 10)
    card = await portal.http.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok"},
    )
    assert card.status_code == 201, card.text
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (quote["amount_cents"], quote["late_fees_cents"]) == (75_000, 500)

    paid = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments",
        json={"payoff": True, "amount_cents": 75_000, "payment_method_id": card.json()["id"]},
        headers={"Idempotency-Key": "payoff-newest"},
    )
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "succeeded"
    rows = await pool.fetch(
        "SELECT status, paid_cents, cancelled_cents, owed_cents FROM installments"
        " WHERE lease_id = $1 ORDER BY seq",
        lease.lease_id,
    )
    assert [(r["status"], r["paid_cents"], r["cancelled_cents"]) for r in rows] == (
        [("cancelled", 0, 10_500)]
        + [("cancelled", 0, 10_000)] * 3
        + [("cancelled", 5_000, 5_000)]
        + [("paid", 10_000, 0)] * 7
    )
    assert all(r["paid_cents"] + r["cancelled_cents"] == r["owed_cents"] for r in rows)
    assert await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease.lease_id) == (
        "paid_off"
    )
    assert (await run_audit(pool, fee_table=settings.fee_table)).clean

    [fee] = (await portal.http.get(f"/v1/leases/{lease.lease_id}/fees")).json()["fees"]
    waive = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/fees/{fee['fee_id']}/waive", json={"reason": "late"}
    )
    assert waive.status_code == 409, waive.text
    assert (await run_audit(pool, fee_table=settings.fee_table)).clean
