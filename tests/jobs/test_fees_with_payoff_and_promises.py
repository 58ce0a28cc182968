"""Late fees together with the payoff and promises to pay, through whole passes over business
dates and the portal: a payoff of a lease with a late fee on an overdue installment includes
the fee (component late_fees), pays or cancels every installment, and leaves the audit clean;
a promise's amount may be the whole owed amount, the fee included."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from collector.config import Settings
from collector.db.audit import run_audit
from collector.db.stats import business_day
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.metrics import REGISTRY, set_business_day_gauges
from tests.factories import LeaseRef, make_lease, set_terms
from tests.jobs.portal import Portal

BROKE = "sandbox_card_insufficient_funds"
DELIVERED = date(2026, 10, 1)
# Twelve monthly installments of $100.00, the first due a month after delivery.
DUE_DATES = [date(2026 + (10 + n) // 12, (10 + n) % 12 + 1, 1) for n in range(12)]
CASH_PRICE = 72_000
WINDOW_FEE = 2_500


@pytest.fixture
def fee_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"late_fees": True})


async def _ok_card(pool: asyncpg.Pool, lease: LeaseRef) -> int:
    """A second card of the lease's customer that pays (not primary)."""
    method_id: int = await pool.fetchval(
        "INSERT INTO payment_methods (customer_id, kind, gateway, token, last4, status,"
        " is_primary) VALUES ($1, 'card', 'sandbox_card', 'sandbox_card_ok', '1111', 'active',"
        " false) RETURNING id",
        lease.customer_id,
    )
    return method_id


async def _passes(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, first: date, last: date
) -> None:
    day = first
    while day <= last:
        await run_pass(pool, gateways, settings, as_of=day)
        assert (await run_audit(pool, fee_table=settings.fee_table)).clean, day
        day += timedelta(days=1)


async def _fee(pool: asyncpg.Pool, installment_id: int) -> int:
    cents: int = await pool.fetchval(
        "SELECT coalesce(sum(amount_cents), 0) FROM money_movements"
        " WHERE installment_id = $1 AND kind = 'fee_assessed'",
        installment_id,
    )
    return cents


async def test_a_payoff_includes_the_late_fee_and_pays_or_cancels_every_installment(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], fee_settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=BROKE, due_dates=DUE_DATES, amount_cents=10_000)
        await set_terms(conn, lease.lease_id, cash_price_cents=CASH_PRICE, delivered_on=DELIVERED)
        await conn.execute("UPDATE leases SET state = 'CA' WHERE id = $1", lease.lease_id)
    ok_card = await _ok_card(pool, lease)

    # The first installment is declined and retried; more than 7 days past due (CA) it gets
    # its fee: the lesser of 5 % of $100.00 and $5.00.
    await _passes(pool, gateways, fee_settings, DUE_DATES[0], date(2026, 11, 10))
    first = lease.installment_ids[0]
    assert await _fee(pool, first) == 500
    assert sum([await _fee(pool, i) for i in lease.installment_ids[1:]]) == 0

    portal.today = date(2026, 11, 10)
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (quote["rule"], quote["amount_cents"], quote["late_fees_cents"]) == (
        "within_window",
        CASH_PRICE + WINDOW_FEE + 500,
        500,
    )
    assert quote["components"] == [
        {"kind": "cash_price", "cents": CASH_PRICE},
        {"kind": "rent_paid", "cents": 0},
        {"kind": "early_purchase_fee", "cents": WINDOW_FEE},
        {"kind": "late_fees", "cents": 500},
    ]
    assert sum(c["cents"] for c in quote["components"]) == quote["amount_cents"]
    assert (quote["remaining_rent_cents"], quote["payable"]) == (120_000, True)

    # The quote without the fee is not the payoff: 409, nothing written.
    short = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments",
        json={
            "payoff": True,
            "amount_cents": CASH_PRICE + WINDOW_FEE,
            "payment_method_id": ok_card,
        },
        headers={"Idempotency-Key": "payoff-short"},
    )
    assert short.status_code == 409, short.text
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0

    paid = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments",
        json={"payoff": True, "amount_cents": 75_000, "payment_method_id": ok_card},
        headers={"Idempotency-Key": "payoff-1"},
    )
    assert paid.status_code == 201, paid.text
    body = paid.json()
    assert (body["amount_cents"], body["status"], body["payoff"]) == (75_000, "succeeded", True)
    # Oldest first: the first installment's rent and fee, six rents, part of the eighth.
    assert [a["amount_cents"] for a in body["allocations"]] == [10_500] + [10_000] * 6 + [4_500]

    rows = await pool.fetch(
        "SELECT status, paid_cents, cancelled_cents, owed_cents FROM installments"
        " WHERE lease_id = $1 ORDER BY seq",
        lease.lease_id,
    )
    assert [(r["status"], r["paid_cents"], r["cancelled_cents"]) for r in rows] == (
        [("paid", 10_500, 0)]
        + [("paid", 10_000, 0)] * 6
        + [("cancelled", 4_500, 5_500)]
        + [("cancelled", 0, 10_000)] * 4
    )
    assert all(r["status"] in ("paid", "cancelled") for r in rows)
    assert all(r["paid_cents"] + r["cancelled_cents"] == r["owed_cents"] for r in rows)
    assert await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease.lease_id) == (
        "paid_off"
    )
    assert (await run_audit(pool, fee_table=fee_settings.fee_table)).clean
    # The payoff paid the fee: it is not waived any more (a refund).
    [fee] = (await portal.http.get(f"/v1/leases/{lease.lease_id}/fees")).json()["fees"]
    late = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/fees/{fee['fee_id']}/waive", json={"reason": "late"}
    )
    assert late.status_code == 409, late.text

    # Later passes charge nothing and assess no fee of the paid-off lease.
    attempts = await pool.fetchval("SELECT count(*) FROM charge_attempts")
    for day in DUE_DATES[1:3]:
        assert (await run_pass(pool, gateways, fee_settings, as_of=day)).counts.due == 0
        assert (await run_audit(pool, fee_table=fee_settings.fee_table)).clean
    assert await pool.fetchval("SELECT count(*) FROM charge_attempts") == attempts
    assert sum([await _fee(pool, i) for i in lease.installment_ids]) == 500
    after = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (after["amount_cents"], after["late_fees_cents"], after["payable"]) == (0, 0, False)


async def test_a_payoff_after_a_waiver_leaves_the_fee_out(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], fee_settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=BROKE, due_dates=DUE_DATES[:2], amount_cents=10_000)
        await conn.execute("UPDATE leases SET state = 'CA' WHERE id = $1", lease.lease_id)
    ok_card = await _ok_card(pool, lease)
    await _passes(pool, gateways, fee_settings, DUE_DATES[0], date(2026, 11, 10))
    portal.today = date(2026, 11, 10)
    fees = (await portal.http.get(f"/v1/leases/{lease.lease_id}/fees")).json()["fees"]
    [fee] = fees

    # No terms: the remaining rent and the fee.
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (quote["rule"], quote["amount_cents"], quote["late_fees_cents"]) == (
        "no_terms",
        20_500,
        500,
    )
    waived = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/fees/{fee['fee_id']}/waive", json={"reason": "goodwill"}
    )
    assert waived.status_code == 200, waived.text
    # The business date's late-fee gauges, from the journal (assessed on 11-09, waived today).
    zone = ZoneInfo("America/New_York")
    assessed_day = await business_day(pool, as_of=date(2026, 11, 9), zone=zone)
    assert assessed_day.late_fees == {"assessed": (1, 500), "waived": (0, 0)}
    today = await business_day(pool, as_of=portal.today, zone=zone)
    assert today.late_fees == {"assessed": (0, 0), "waived": (1, 500)}
    set_business_day_gauges(today, start=datetime.now(UTC))
    gauge = REGISTRY.get_sample_value
    assert gauge("collector_business_day_late_fees", {"kind": "waived"}) == 1
    assert gauge("collector_business_day_late_fees_cents", {"kind": "waived"}) == 500
    assert gauge("collector_business_day_late_fees_cents", {"kind": "assessed"}) == 0
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (quote["amount_cents"], quote["late_fees_cents"]) == (20_000, 0)
    assert [c["kind"] for c in quote["components"]] == ["past_due_rent", "rent_not_yet_due"]

    paid = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments",
        json={"payoff": True, "payment_method_id": ok_card},
        headers={"Idempotency-Key": "payoff-waived"},
    )
    assert paid.status_code == 201, paid.text
    assert paid.json()["amount_cents"] == 20_000
    assert await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease.lease_id) == (
        "paid_off"
    )
    assert (await run_audit(pool, fee_table=fee_settings.fee_table)).clean


async def test_a_promise_may_be_for_the_owed_amount_with_the_fee(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], fee_settings: Settings, portal: Portal
) -> None:
    due = date(2026, 11, 1)
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=BROKE, due_dates=[due], amount_cents=5_000)
        await conn.execute("UPDATE leases SET state = 'CA' WHERE id = $1", lease.lease_id)
    await _passes(pool, gateways, fee_settings, due, date(2026, 11, 10))
    assert await _fee(pool, lease.installment_ids[0]) == 250  # 5 % of $50.00

    portal.today = date(2026, 11, 10)
    view = (await portal.http.get(f"/v1/leases/{lease.lease_id}")).json()
    assert (view["overdue_cents"], view["fees_owed_cents"]) == (5_250, 250)
    promised_on = (portal.today + timedelta(days=5)).isoformat()
    url = f"/v1/leases/{lease.lease_id}/promises"
    over = await portal.http.post(url, json={"amount_cents": 5_251, "promised_on": promised_on})
    assert over.status_code == 422, over.text
    assert await pool.fetchval("SELECT count(*) FROM promises") == 0
    made = await portal.http.post(url, json={"amount_cents": 5_250, "promised_on": promised_on})
    assert made.status_code == 201, made.text
    assert made.json()["amount_cents"] == 5_250
    assert (await run_audit(pool, fee_table=fee_settings.fee_table)).clean
