"""A demo's passes emit every money event once, and a receiver that was down for a while then
gets every one of them, signed, in order per lease."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg

from collector.config import Settings
from collector.db.portal import NewMethod, add_method
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.seed import seed_demo
from collector.webhook_signing import verify
from tests.notices.receiver import OK, Reply, Request, receiver
from tests.notices.test_delivery import DAY, SECRET, deliver, hook_settings
from tests.notices.test_delivery_processes import delivered_in_order


async def test_a_demo_emits_each_event_once_and_a_receiver_back_from_down_gets_them_all(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    await seed_demo(pool, customers=200, due_on=DAY, installments=1)
    # One customer's lease runs on into December, and on the eve of its first due date the
    # customer adds a card that expires at the end of November and makes it primary through
    # the portal (primary.changed with the 2-day warning; method.expiring at the pass).
    customer_id, lease_id = await pool.fetchrow(
        "SELECT l.customer_id, l.id FROM leases l JOIN payment_methods pm"
        " ON pm.customer_id = l.customer_id AND pm.is_primary"
        " WHERE pm.token = 'sandbox_card_ok' ORDER BY l.id LIMIT 1"
    )
    await pool.execute(
        "WITH added AS (INSERT INTO installments"
        " (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)"
        " SELECT id, customer_id, 2, $2::date, $2::date, 5000 FROM leases WHERE id = $1"
        " RETURNING amount_cents)"
        " UPDATE leases SET total_of_payments_cents = total_of_payments_cents"
        " + (SELECT amount_cents FROM added) WHERE id = $1",
        lease_id,
        date(2026, 12, 7),
    )
    await add_method(
        pool,
        customer_id,
        NewMethod(
            kind="card",
            gateway="sandbox_card",
            token="sandbox_card_ok",
            brand="Visa",
            last4="1111",
            exp_month=11,
            exp_year=2026,
        ),
        make_primary=True,
        today=DAY - timedelta(days=1),
    )
    await run_pass(pool, gateways, settings, as_of=DAY)  # charges, declines, in doubt, ACH
    await run_pass(pool, gateways, settings, as_of=DAY + timedelta(days=7))  # settle, return
    rows = await pool.fetch("SELECT type, lease_id, body FROM outbox_events ORDER BY id")
    types = Counter(r["type"] for r in rows)
    assert set(types) == {
        "debit.upcoming",
        "payment.succeeded",
        "payment.failed",
        "payment.pending_settlement",
        "ach.returned",
        "method.disabled",
        "method.expiring",
        "primary.changed",
        "lease.paid_off",
        "lease.delinquent",
    }, types
    [changed] = [r for r in rows if r["type"] == "primary.changed"]
    assert changed["body"]["warning"], changed["body"]
    [expiring] = [r for r in rows if r["type"] == "method.expiring"]
    assert expiring["lease_id"] == lease_id and expiring["body"]["next_collection_on"] == (
        "2026-12-07"
    )
    # Once each: one event per attempt and kind (a notice per installment and date), as many
    # as the ledger's answers.
    subject = Counter(
        (
            r["type"],
            r["body"].get("attempt_id") or r["body"].get("method", {}).get("id"),
            r["lease_id"],
            r["body"].get("collection_on"),  # a notice: once per installment and date
        )
        for r in rows
    )
    assert max(subject.values()) == 1
    succeeded = await pool.fetchval(
        "SELECT count(*) FROM charge_attempts WHERE status = 'succeeded'"
    )
    # Every lease paid off by its one payment, but the one that runs on into December.
    assert types["payment.succeeded"] == succeeded == types["lease.paid_off"] + 1
    assert types["ach.returned"] == await pool.fetchval("SELECT count(*) FROM charge_returns")
    # Nothing was past due on the first date: each lease past due on the second changed bucket.
    assert types["lease.delinquent"] == await pool.fetchval(
        "SELECT count(*) FROM delinquency_snapshots WHERE as_of = $1", DAY + timedelta(days=7)
    )
    assert types["method.disabled"] == await pool.fetchval(
        "SELECT count(*) FROM payment_methods WHERE status = 'disabled'"
    )

    down = {"yes": True}

    def script(_: Request) -> Reply:
        return Reply(status=503) if down["yes"] else OK

    async with receiver(script) as rec:
        hooked = hook_settings(settings, rec, webhook_max_attempts=100)
        first, _ = await deliver(pool, hooked)
        assert first.delivered == 0 and first.pending == len(rows)
        down["yes"] = False
        second, _ = await deliver(pool, hooked)
    assert second.pending == 0
    ok = rec.requests[first.failed :]
    assert len(ok) == len(rows)
    ids = await pool.fetch("SELECT id FROM outbox_events ORDER BY id")
    delivered_in_order(ok, [r["id"] for r in ids])
    now = int(time.time())
    assert all(verify(r.body, r.headers["collector-signature"], [SECRET], now=now) for r in ok)
