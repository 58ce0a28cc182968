"""A demo's passes emit every money event once, and a receiver that was down for a while then
gets every one of them, signed, in order per lease."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta

import asyncpg

from collector.config import Settings
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
        "lease.paid_off",
        "lease.delinquent",
    }, types
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
    assert types["payment.succeeded"] == succeeded == types["lease.paid_off"]
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
