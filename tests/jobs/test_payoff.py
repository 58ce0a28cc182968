"""Payoff and early purchase (issue 9, part 3), through the portal API and whole passes over
several business dates: the quote, a card payoff that pays the lease off at once, an ACH
payoff that stays pending until it settles, and one that is returned and undone."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import asyncpg
import httpx
import pytest

from collector.config import Settings
from collector.db.audit import AuditReport, run_audit
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.seed import seed_demo
from tests.factories import LeaseRef, make_lease, set_terms
from tests.jobs.portal import Portal

DELIVERED = date(2026, 10, 1)
# Twelve monthly installments of $100.00, the first due a month after delivery.
DUE_DATES = [date(2026 + (10 + n) // 12, (10 + n) % 12 + 1, 1) for n in range(12)]
CASH_PRICE = 72_000
FEE = 2_500


async def _lease(pool: asyncpg.Pool, token: str = "sandbox_card_ok") -> LeaseRef:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=DUE_DATES, amount_cents=10_000)
        await set_terms(conn, lease.lease_id, cash_price_cents=CASH_PRICE, delivered_on=DELIVERED)
    return lease


async def _statuses(pool: asyncpg.Pool, lease: LeaseRef) -> list[tuple[str, int, int]]:
    rows = await pool.fetch(
        "SELECT status, paid_cents, cancelled_cents FROM installments WHERE lease_id = $1"
        " ORDER BY seq",
        lease.lease_id,
    )
    return [(r["status"], r["paid_cents"], r["cancelled_cents"]) for r in rows]


async def _lease_status(pool: asyncpg.Pool, lease: LeaseRef) -> str:
    status: str = await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease.lease_id)
    return status


async def _attempts(pool: asyncpg.Pool, lease: LeaseRef) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM charge_attempts a"
        " LEFT JOIN installments i ON i.id = a.installment_id"
        " LEFT JOIN payments p ON p.id = a.payment_id"
        " WHERE coalesce(i.lease_id, p.lease_id) = $1",
        lease.lease_id,
    )
    return count


async def _events(pool: asyncpg.Pool, lease: LeaseRef, type_: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM outbox_events WHERE lease_id = $1 AND type = $2 ORDER BY id",
        lease.lease_id,
        type_,
    )


async def _pay_off(
    portal: Portal, lease: LeaseRef, key: str, *, amount_cents: int | None = None
) -> httpx.Response:
    """A payoff payment of the lease through the API, under Idempotency-Key ``key``."""
    body: dict[str, object] = {"payoff": True}
    if amount_cents is not None:
        body["amount_cents"] = amount_cents
    return await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments", json=body, headers={"Idempotency-Key": key}
    )


async def test_a_card_payoff_in_the_window_pays_the_lease_off_and_nothing_is_charged_again(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    lease = await _lease(pool)
    assert (await run_pass(pool, gateways, settings, as_of=DUE_DATES[0])).counts.succeeded == 1

    portal.today = date(2026, 11, 10)
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert quote == {
        "lease_id": lease.lease_id,
        "as_of": "2026-11-10",
        "amount_cents": 64_500,
        "rule": "within_window",
        "components": [
            {"kind": "cash_price", "cents": 72_000},
            {"kind": "rent_paid", "cents": -10_000},
            {"kind": "early_purchase_fee", "cents": 2_500},
        ],
        # Ten days (the setting), before the next due date 2026-12-01 and the window's end.
        "valid_until": "2026-11-19",
        "remaining_rent_cents": 110_000,
        "rent_paid_cents": 10_000,
        "pending_cents": 0,
        "payable": True,
        "window_ends_on": "2026-12-30",
        "next_due_on": "2026-12-01",
        "late_fees_cents": 0,
    }

    # An amount other than the quote is refused, and nothing is written.
    before = await _attempts(pool, lease)
    wrong = await _pay_off(portal, lease, "payoff-wrong", amount_cents=64_000)
    assert wrong.status_code == 409, wrong.text
    assert "64500 cents today" in wrong.json()["detail"]
    assert await _attempts(pool, lease) == before
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0

    paid = await _pay_off(portal, lease, "payoff-1", amount_cents=64_500)
    assert paid.status_code == 201, paid.text
    body = paid.json()
    assert (body["amount_cents"], body["status"], body["payoff"]) == (64_500, "succeeded", True)
    assert [a["amount_cents"] for a in body["allocations"]] == [10_000] * 6 + [4_500]
    # A repeat of the key replays the answer; nothing is charged twice.
    again = await _pay_off(portal, lease, "payoff-1", amount_cents=64_500)
    assert (again.status_code, again.json()) == (201, body)

    assert await _statuses(pool, lease) == (
        [("paid", 10_000, 0)] * 7 + [("cancelled", 4_500, 5_500)] + [("cancelled", 0, 10_000)] * 4
    )
    assert await _lease_status(pool, lease) == "paid_off"
    [event] = await _events(pool, lease, "lease.paid_off")
    assert event["as_of"] == date(2026, 11, 10)

    # The passes of the next due dates charge nothing of it.
    attempts = await _attempts(pool, lease)
    for day in DUE_DATES[1:4]:
        assert (await run_pass(pool, gateways, settings, as_of=day)).counts.due == 0
    assert await _attempts(pool, lease) == attempts
    after = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (after["amount_cents"], after["payable"]) == (0, False)
    # A paid-off lease takes no further payoff.
    more = await _pay_off(portal, lease, "payoff-2")
    assert more.status_code == 422, more.text


async def test_after_the_window_the_payoff_is_the_rent_past_due_and_a_share_of_the_rest(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    lease = await _lease(pool)
    for day in DUE_DATES[:3]:
        await run_pass(pool, gateways, settings, as_of=day)
    # The pass of 2027-02-01 did not run (yet): that installment is past due, unattempted.
    portal.today = date(2027, 2, 10)
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert quote["rule"] == "after_window"
    assert quote["components"] == [
        {"kind": "past_due_rent", "cents": 10_000},
        {"kind": "rent_not_yet_due", "cents": 80_000},
        {"kind": "early_purchase_discount", "cents": -40_000},
    ]
    assert (quote["amount_cents"], quote["valid_until"]) == (50_000, "2027-02-19")
    paid = await _pay_off(portal, lease, "payoff-after")
    assert paid.status_code == 201, paid.text
    assert await _statuses(pool, lease) == (
        [("paid", 10_000, 0)] * 8 + [("cancelled", 0, 10_000)] * 4
    )
    assert await _lease_status(pool, lease) == "paid_off"
    assert (await run_pass(pool, gateways, settings, as_of=date(2027, 3, 1))).counts.due == 0


async def test_an_ach_payoff_is_pending_until_it_settles_and_nothing_is_collected_meanwhile(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    lease = await _lease(pool, token="sandbox_ach_ok")
    portal.today = date(2026, 11, 30)
    paid = await _pay_off(portal, lease, "payoff-ach")
    assert paid.status_code == 201, paid.text
    assert (paid.json()["status"], paid.json()["amount_cents"]) == ("processing", 74_500)
    assert await _statuses(pool, lease) == (
        [("pending_settlement", 0, 0)] * 7
        + [("pending_settlement", 0, 5_500)]
        + [("cancelled", 0, 10_000)] * 4
    )
    assert await _lease_status(pool, lease) == "active"
    assert await _events(pool, lease, "lease.paid_off") == []

    # While it is in flight: the quote says so and cannot be paid, and no pass collects.
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (quote["pending_cents"], quote["payable"]) == (74_500, False)
    second = await _pay_off(portal, lease, "payoff-ach-2")
    assert second.status_code == 409, second.text
    attempts = await _attempts(pool, lease)
    first = await run_pass(pool, gateways, settings, as_of=DUE_DATES[1])
    assert (first.counts.due, first.counts.settled) == (0, 0)
    assert await _attempts(pool, lease) == attempts

    # Settled two banking days after it was sent: paid off.
    done = await run_pass(pool, gateways, settings, as_of=date(2026, 12, 2))
    assert done.counts.settled == 1
    assert await _statuses(pool, lease) == (
        [("paid", 10_000, 0)] * 7 + [("cancelled", 4_500, 5_500)] + [("cancelled", 0, 10_000)] * 4
    )
    assert await _lease_status(pool, lease) == "paid_off"
    [event] = await _events(pool, lease, "lease.paid_off")
    assert event["as_of"] == date(2026, 12, 2)
    assert (await run_pass(pool, gateways, settings, as_of=DUE_DATES[2])).counts.due == 0


async def test_a_returned_ach_payoff_is_undone_and_the_installments_are_collectable_again(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    lease = await _lease(pool, token="sandbox_ach_return_R01")
    portal.today = date(2026, 11, 30)
    paid = await _pay_off(portal, lease, "payoff-r01")
    assert paid.status_code == 201, paid.text
    assert (await run_pass(pool, gateways, settings, as_of=DUE_DATES[1])).counts.due == 0

    returned = await run_pass(pool, gateways, settings, as_of=date(2026, 12, 2))
    assert returned.counts.returned == 1
    rows = await pool.fetch(
        "SELECT kind, sum(amount_cents) AS cents FROM money_movements"
        " WHERE payment_id IS NOT NULL AND kind IN ('cancelled', 'reinstated') GROUP BY kind"
        " ORDER BY kind"
    )
    assert [(r["kind"], r["cents"]) for r in rows] == [
        ("cancelled", 45_500),
        ("reinstated", 45_500),
    ]
    assert await _lease_status(pool, lease) == "active"
    states = await pool.fetch(
        "SELECT status, paid_cents, in_flight_cents, cancelled_cents, next_attempt_on"
        " FROM installments WHERE lease_id = $1 ORDER BY seq",
        lease.lease_id,
    )
    # The installments that were due (11-01, 12-01) have the return's retry plan, as any
    # returned manual payment's; those not yet due are back on their schedule.
    assert [(s["status"], s["in_flight_cents"], s["cancelled_cents"]) for s in states[:2]] == [
        ("overdue", 0, 0)
    ] * 2
    assert [
        (s["status"], s["paid_cents"], s["in_flight_cents"], s["cancelled_cents"])
        for s in states[2:]
    ] == [("scheduled", 0, 0, 0)] * 10
    assert [s["next_attempt_on"] for s in states[2:]] == DUE_DATES[2:]
    assert await _events(pool, lease, "lease.paid_off") == []
    # The quote is payable again, and the next due date's pass presents its installment.
    quote = (await portal.http.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert quote["payable"] is True
    later = await run_pass(pool, gateways, settings, as_of=DUE_DATES[2])
    assert later.counts.due >= 1
    presented = await pool.fetch(
        "SELECT DISTINCT i.seq FROM charge_attempts a JOIN installments i"
        " ON i.id = a.installment_id WHERE i.lease_id = $1 ORDER BY i.seq",
        lease.lease_id,
    )
    assert [r["seq"] for r in presented] == [1, 2, 3]


@pytest.mark.ledger_left_dirty("payoffs are broken behind the engine's back to show the audit")
async def test_the_audit_reports_payoffs_that_do_not_hold(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    lease = await _lease(pool)
    portal.today = date(2026, 10, 20)
    paid = await _pay_off(portal, lease, "payoff-audit")
    assert paid.status_code == 201, paid.text
    payment_id = paid.json()["payment_id"]
    assert (await run_audit(pool)).clean

    # Cancellations under a payment that is no payoff.
    await pool.execute("UPDATE payments SET payoff = false WHERE id = $1", payment_id)
    messages = _only(await run_audit(pool), "payoffs")
    assert len(messages) == 5 and all("which is no payoff" in m for m in messages), messages
    await pool.execute("UPDATE payments SET payoff = true WHERE id = $1", payment_id)

    # A succeeded payoff whose lease is not paid off.
    await pool.execute("UPDATE leases SET status = 'active' WHERE id = $1", lease.lease_id)
    assert _only(await run_audit(pool), "payoffs") == [
        f"payoff payment {payment_id} of lease {lease.lease_id} is succeeded: its lease is active"
    ]
    await pool.execute("UPDATE leases SET status = 'paid_off' WHERE id = $1", lease.lease_id)

    # A lease paid off with an installment neither paid nor cancelled.
    async with pool.acquire() as conn:
        other = await make_lease(conn, due_dates=DUE_DATES[:2], lease_status="paid_off")
    assert _only(await run_audit(pool), "payoffs") == [
        f"lease {other.lease_id} is paid off but installment(s)"
        f" {other.installment_ids[0]}, {other.installment_ids[1]} are neither paid nor cancelled"
    ]
    await pool.execute("UPDATE leases SET status = 'active' WHERE id = $1", other.lease_id)

    # Terms whose total of payments is not the schedule's.
    await pool.execute(
        "UPDATE leases SET total_of_payments_cents = 200000 WHERE id = $1", lease.lease_id
    )
    assert _only(await run_audit(pool), "payoffs") == [
        f"lease {lease.lease_id}: its total of payments 200000 is not its schedule's sum 120000"
    ]


def _only(report: AuditReport, check: str) -> list[str]:
    others = {c: n for c, n in report.counts.items() if n and c != check}
    assert others == {}, [v.message for c in others for v in report.violations[c]]
    return [v.message for v in report.violations[check]]


async def test_seeded_leases_have_terms_and_a_quote(pool: asyncpg.Pool, portal: Portal) -> None:
    await seed_demo(pool, customers=3, due_on=date(2026, 12, 1), installments=12)
    leases = await pool.fetch(
        "SELECT id, cash_price_cents, total_of_payments_cents, delivered_on, epo_window_days,"
        " epo_window_fee_cents, epo_after_bps FROM leases ORDER BY id"
    )
    assert len(leases) == 3
    for lease in leases:
        total = await pool.fetchval(
            "SELECT sum(amount_cents) FROM installments WHERE lease_id = $1", lease["id"]
        )
        assert lease["total_of_payments_cents"] == total
        assert lease["cash_price_cents"] == total * 6 // 10
        assert lease["delivered_on"] == date(2026, 11, 1)
        assert (lease["epo_window_days"], lease["epo_after_bps"]) == (90, 5_000)
        quote = (await portal.http.get(f"/v1/leases/{lease['id']}/payoff")).json()
        assert quote["rule"] == "within_window"
        assert quote["amount_cents"] == lease["cash_price_cents"] + lease["epo_window_fee_cents"]
