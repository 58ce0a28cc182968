"""Promises to pay through whole passes over several business dates: the pause of automatic
collection until the promised date (the claim and the eligibility check), the dry run and the
schedule saying why, kept by a manual payment, broken when the date passes short, collected
automatically on the date when asked (once, and only the promised amount that day), an ACH
collection keeping its promise open until it settles, and the metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from collector.cli import _print_preview
from collector.config import Settings
from collector.db.attempts import ClaimCursor
from collector.db.preview import preview
from collector.db.runs import start_run
from collector.gateways.base import Gateway
from collector.gateways.sandbox import sandbox_charge_counts
from collector.jobs.collect import run_pass
from collector.jobs.presentment import claim, would_refuse
from collector.metrics import REGISTRY
from tests.factories import make_lease
from tests.jobs.portal import Portal

TODAY = date(2026, 11, 26)


async def _attempts(pool: asyncpg.Pool, lease_id: int) -> list[tuple[str, str, int, date]]:
    """(source, status, amount, business date) of every attempt on the lease's money."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.source, a.status, a.amount_cents, a.as_of FROM charge_attempts a"
            " LEFT JOIN installments i ON i.id = a.installment_id"
            " LEFT JOIN payments p ON p.id = a.payment_id"
            " WHERE coalesce(i.lease_id, p.lease_id) = $1 ORDER BY a.id",
            lease_id,
        )
    return [(r["source"], r["status"], r["amount_cents"], r["as_of"]) for r in rows]


async def _promise(portal: Portal, lease_id: int, **body: Any) -> dict[str, Any]:
    answer = await portal.http.post(f"/v1/leases/{lease_id}/promises", json=body)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


async def _promises(portal: Portal, lease_id: int) -> list[dict[str, Any]]:
    answer = await portal.http.get(f"/v1/leases/{lease_id}/promises")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


async def _good_card(portal: Portal, customer_id: int) -> None:
    added = await portal.http.post(
        f"/v1/customers/{customer_id}/payment-methods",
        json={
            "kind": "card",
            "gateway": "sandbox_card",
            "token": "sandbox_card_ok",
            "make_primary": True,
        },
    )
    assert added.status_code == 201, added.text


def _resolved(outcome: str) -> float:
    return REGISTRY.get_sample_value("collector_promises_resolved_total", {"outcome": outcome}) or 0


async def test_a_promise_pauses_retries_until_its_date_and_a_manual_payment_keeps_it(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    [iid] = lease.installment_ids
    assert (await run_pass(pool, gateways, settings, as_of=TODAY)).counts.declined == 1
    retry_on = TODAY + timedelta(days=settings.soft_retry_days[0])

    portal.today = TODAY + timedelta(days=1)
    promised_on = TODAY + timedelta(days=10)
    made = await _promise(
        portal, lease.lease_id, amount_cents=5_000, promised_on=promised_on.isoformat()
    )
    assert (made["status"], made["resume_on"], made["paid_cents"]) == (
        "open",
        promised_on.isoformat(),
        0,
    )

    # The retry's date comes: the dry run says the lease waits for its promise, and why.
    report = await preview(
        pool, as_of=retry_on, gateways=settings.gateways, charge_off_days=settings.charge_off_days
    )
    assert report.due == []
    assert [(s.reason, s.installments, s.sample_ids) for s in report.skipped] == [
        ("promise_open", 1, [iid])
    ]
    refused = await would_refuse(pool, as_of=retry_on, gateways=settings.gateways, batch_size=50)
    assert refused == []
    # The pass passes over it: no attempt at all (no refused one, no payment.failed event).
    assert (await run_pass(pool, gateways, settings, as_of=retry_on)).counts.due == 0
    assert [a[:2] for a in await _attempts(pool, lease.lease_id)] == [("batch", "declined")]
    portal.today = retry_on
    [line] = (await portal.http.get(f"/v1/leases/{lease.lease_id}/schedule")).json()["installments"]
    assert (line["collection_paused"], line["collection_resumes_on"]) == (
        "promise_open",
        promised_on.isoformat(),
    )

    # The customer pays before the date with another card: the promise is kept by that pass.
    portal.today = TODAY + timedelta(days=5)
    await _good_card(portal, lease.customer_id)
    paid = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments", headers={"Idempotency-Key": "pay-1"}
    )
    assert paid.status_code == 201, paid.text
    kept_before = _resolved("kept")
    await run_pass(pool, gateways, settings, as_of=portal.today)
    assert _resolved("kept") == kept_before + 1
    [promise] = await _promises(portal, lease.lease_id)
    assert (promise["status"], promise["paid_cents"], promise["resolved_on"]) == (
        "kept",
        5_000,
        portal.today.isoformat(),
    )
    assert REGISTRY.get_sample_value("collector_promises", {"status": "kept"}) == 1
    # Kept: a new promise may be made (and the lease has nothing overdue any more).
    again = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/promises",
        json={"amount_cents": 100, "promised_on": promised_on.isoformat()},
    )
    assert again.status_code == 422
    assert "nothing is overdue" in again.json()["detail"]


async def test_a_promise_short_by_its_date_is_broken_and_the_schedule_resumes(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    await run_pass(pool, gateways, settings, as_of=TODAY)
    portal.today = TODAY + timedelta(days=1)
    promised_on = TODAY + timedelta(days=5)
    await _promise(portal, lease.lease_id, amount_cents=3_000, promised_on=promised_on.isoformat())

    for day in range(1, 5):
        assert (
            await run_pass(pool, gateways, settings, as_of=TODAY + timedelta(days=day))
        ).counts.due == 0
    # On its date the normal schedule resumes (the retry planned for day 3 is presented);
    # declined, the promise is broken by the next pass.
    on_date = await run_pass(pool, gateways, settings, as_of=promised_on)
    assert (on_date.counts.due, on_date.counts.declined) == (1, 1)
    assert (await _promises(portal, lease.lease_id))[0]["status"] == "open"
    broken_before = _resolved("broken")
    await run_pass(pool, gateways, settings, as_of=promised_on + timedelta(days=1))
    assert _resolved("broken") == broken_before + 1
    [promise] = await _promises(portal, lease.lease_id)
    assert (promise["status"], promise["paid_cents"], promise["resolved_on"]) == (
        "broken",
        0,
        (promised_on + timedelta(days=1)).isoformat(),
    )
    assert [(a[0], a[1], a[3]) for a in await _attempts(pool, lease.lease_id)] == [
        ("batch", "declined", TODAY),
        ("retry", "declined", promised_on),
    ]
    assert REGISTRY.get_sample_value("collector_promises", {"status": "broken"}) == 1
    assert REGISTRY.get_sample_value("collector_promises", {"status": "open"}) == 0


async def test_auto_collect_takes_the_promised_amount_on_its_date_once_then_the_schedule(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    await run_pass(pool, gateways, settings, as_of=TODAY)
    portal.today = TODAY + timedelta(days=1)
    promised_on = TODAY + timedelta(days=4)
    made = await _promise(
        portal,
        lease.lease_id,
        amount_cents=3_000,
        promised_on=promised_on.isoformat(),
        auto_collect=True,
    )
    assert made["resume_on"] == (promised_on + timedelta(days=1)).isoformat()
    # A new primary card plans the overdue installment again at once: the promise holds it.
    await _good_card(portal, lease.customer_id)
    for day in range(1, 4):
        assert (
            await run_pass(pool, gateways, settings, as_of=TODAY + timedelta(days=day))
        ).counts.due == 0

    # On the date: the promised amount, through manual pay from the primary card, and
    # nothing else; a second pass of the date charges nothing again.
    await run_pass(pool, gateways, settings, as_of=promised_on)
    await run_pass(pool, gateways, settings, as_of=promised_on)
    assert [a[:3] for a in await _attempts(pool, lease.lease_id)] == [
        ("batch", "declined", 5_000),
        ("manual", "succeeded", 3_000),
    ]
    [promise] = await _promises(portal, lease.lease_id)
    assert (promise["status"], promise["paid_cents"]) == ("kept", 3_000)
    assert promise["payment_id"] is not None
    async with pool.acquire() as conn:
        key = await conn.fetchval(
            "SELECT request_key FROM payments WHERE id = $1", promise["payment_id"]
        )
    assert key == f"promise-{promise['id']}"

    # The day after, the normal schedule resumes with all its rules: the rest is a debit of
    # another amount, held back for its Regulation E notice (10 days ahead).
    after = await run_pass(pool, gateways, settings, as_of=promised_on + timedelta(days=1))
    assert (after.counts.due, after.counts.refused) == (1, 1)
    async with pool.acquire() as conn:
        last = await conn.fetchrow(
            "SELECT source, amount_cents, outcome_code FROM charge_attempts"
            " ORDER BY id DESC LIMIT 1"
        )
    assert tuple(last) == ("retry", 2_000, "debit_notice_required")


async def test_an_ach_collection_keeps_its_promise_open_until_it_settles_or_comes_back(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    start = date(2026, 12, 1)  # a Tuesday: banking days ahead
    async with pool.acquire() as conn:
        good = await make_lease(conn, token="sandbox_ach_ok", due_dates=[start - timedelta(days=5)])
        bad = await make_lease(
            conn, token="sandbox_ach_return_R01", due_dates=[start - timedelta(days=5)]
        )
    portal.today = start
    promised_on = start + timedelta(days=1)
    for lease in (good, bad):
        await _promise(
            portal,
            lease.lease_id,
            amount_cents=5_000,
            promised_on=promised_on.isoformat(),
            auto_collect=True,
        )
    # Never attempted and overdue, but promised: the claim passes over both.
    assert (await run_pass(pool, gateways, settings, as_of=start)).counts.due == 0

    await run_pass(pool, gateways, settings, as_of=promised_on)
    day = promised_on + timedelta(days=1)
    await run_pass(pool, gateways, settings, as_of=day)
    portal.today = day
    for lease in (good, bad):
        [promise] = await _promises(portal, lease.lease_id)
        assert (promise["status"], promise["paid_cents"], promise["pending_cents"]) == (
            "open",
            0,
            5_000,
        )
    statuses: dict[int, str] = {}
    for _ in range(6):
        day += timedelta(days=1)
        await run_pass(pool, gateways, settings, as_of=day)
        portal.today = day
        statuses = {
            lease.lease_id: (await _promises(portal, lease.lease_id))[0]["status"]
            for lease in (good, bad)
        }
        if "open" not in statuses.values():
            break
    assert statuses == {good.lease_id: "kept", bad.lease_id: "broken"}


async def test_reconciliation_does_not_resend_an_automatic_attempt_during_a_promise(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    # A pass claims the installment and dies before sending it.
    dead_run = await start_run(pool, as_of=TODAY, host="gone", pid=1)
    claimed, _ = await claim(
        pool,
        as_of=TODAY,
        cursor=ClaimCursor(),
        limit=10,
        gateways=list(gateways),
        run_id=dead_run,
        deadline_s=600,
    )
    assert len(claimed) == 1
    # Meanwhile the customer promised to pay by a later date (made as the API would, without
    # its overdue rule: the money is in flight).
    resume_on = TODAY + timedelta(days=5)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO promises (customer_id, lease_id, amount_cents, made_on, promised_on)"
            " VALUES ($1, $2, 5000, $3, $4)",
            lease.customer_id,
            lease.lease_id,
            TODAY,
            resume_on,
        )
    # The next pass's reconciliation would re-send it under its key: the eligibility check
    # refuses it, and plans the money for the day the pause ends.
    done = await run_pass(pool, gateways, settings, as_of=TODAY + timedelta(days=1))
    assert done.counts.reconciled == 1
    async with pool.acquire() as conn:
        attempt = await conn.fetchrow("SELECT status, outcome_code FROM charge_attempts")
        planned = await conn.fetchval(
            "SELECT next_attempt_on FROM installments WHERE id = $1", lease.installment_ids[0]
        )
        assert await sandbox_charge_counts(conn) == {}
    assert tuple(attempt) == ("refused", "promise_open")
    assert planned == resume_on
    # On that day the normal schedule takes it.
    later = await run_pass(pool, gateways, settings, as_of=resume_on)
    assert (later.counts.due, later.counts.succeeded) == (1, 1)


async def test_the_dry_run_lists_the_leases_it_would_charge_off(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with pool.acquire() as conn:
        gone = await make_lease(
            conn,
            token="sandbox_card_insufficient_funds",
            due_dates=[TODAY - timedelta(days=130), TODAY + timedelta(days=20)],
            amount_cents=7_000,
        )
        kept = await make_lease(conn, due_dates=[TODAY - timedelta(days=3)])
    report = await preview(
        pool, as_of=TODAY, gateways=settings.gateways, charge_off_days=settings.charge_off_days
    )
    assert [(c.lease_id, c.days_past_due, c.amount_cents) for c in report.charge_offs] == [
        (gone.lease_id, 130, 14_000)
    ]
    # Its installment is not among those the pass would charge: it is charged off first.
    assert [(g.installments, g.amount_cents) for g in report.due] == [(1, 5_000)]
    assert [(s.reason, s.sample_ids) for s in report.skipped] == [
        ("charge_off", [gone.installment_ids[0]])
    ]
    _print_preview(report, as_json=True)
    out = capsys.readouterr().out.splitlines()
    assert (
        f"  would charge off 1 lease(s) first ($140.00 written off), e.g. lease(s) {gone.lease_id}"
        in out
    )
    assert json.loads(out[-1])["charge_offs"] == [
        {
            "lease_id": gone.lease_id,
            "customer_id": gone.customer_id,
            "days_past_due": 130,
            "amount_cents": 14_000,
        }
    ]
    done = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert (done.counts.due, done.counts.succeeded) == (1, 1)
    async with pool.acquire() as conn:
        statuses = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM leases")}
    assert statuses == {gone.lease_id: "charged_off", kept.lease_id: "active"}
