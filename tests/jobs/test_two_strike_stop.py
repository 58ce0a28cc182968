"""The two-strike stop, through whole passes over several business dates: after two failed
automatic presentments in a row on one method, no automatic attempt on it until the customer
authorizes it again through the portal; the dry run and the schedule say why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date, timedelta

import asyncpg

from collector.config import Settings
from collector.db.audit import run_audit
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.jobs.presentment import would_refuse
from tests.factories import attempts_of, installment, make_lease
from tests.jobs.portal import Portal

TODAY = date(2026, 11, 26)


async def _statuses(pool: asyncpg.Pool, installment_id: int) -> list[tuple[str, str, str | None]]:
    async with pool.acquire() as conn:
        return [
            (a["source"], a["status"], a["outcome_code"])
            for a in await attempts_of(conn, installment_id)
        ]


async def test_two_declines_in_a_row_stop_automatic_attempts_until_reauthorized(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    [iid] = lease.installment_ids

    # Two automatic presentments, both declined: the batch's, and the first retry's.
    assert (await run_pass(pool, gateways, settings, as_of=TODAY)).counts.declined == 1
    first_retry = TODAY + timedelta(days=settings.soft_retry_days[0])
    assert (await run_pass(pool, gateways, settings, as_of=first_retry)).counts.declined == 1
    async with pool.acquire() as conn:
        second_retry = (await installment(conn, iid))["next_attempt_on"]
    assert second_retry == first_retry + timedelta(days=settings.soft_retry_days[1])

    # The dry run says the next one would be refused, and why.
    refused = await would_refuse(
        pool,
        as_of=second_retry,
        gateways=settings.gateways,
        batch_size=50,
        card_rules=settings.card_rules,
    )
    assert [(g.reason, g.installments, g.sample_ids) for g in refused] == [
        ("two_strike_stop", 1, [iid])
    ]

    # The pass refuses it: nothing sent, no automatic attempt planned, the schedule says why.
    done = await run_pass(pool, gateways, settings, as_of=second_retry)
    assert (done.counts.due, done.counts.refused, done.counts.declined) == (1, 1, 0)
    assert await _statuses(pool, iid) == [
        ("batch", "declined", "insufficient_funds"),
        ("retry", "declined", "insufficient_funds"),
        ("retry", "refused", "two_strike_stop"),
    ]
    async with pool.acquire() as conn:
        row = await installment(conn, iid)
        assert (row["status"], row["next_attempt_on"]) == ("overdue", None)
    portal.today = second_retry + timedelta(days=1)
    schedule = (await portal.http.get(f"/v1/leases/{lease.lease_id}/schedule")).json()
    [line] = schedule["installments"]
    assert (line["status"], line["collection_stopped"]) == ("overdue", "two_strike_stop")
    # Later passes leave it alone.
    for days in (1, 5, 20):
        later = await run_pass(pool, gateways, settings, as_of=second_retry + timedelta(days=days))
        assert later.counts.due == 0

    # A manual payment is the customer's own request: presented (and declined by the bank),
    # not stopped; it is no strike of the automatic ones either.
    portal.today = second_retry + timedelta(days=21)
    paid = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments", headers={"Idempotency-Key": "manual-1"}
    )
    assert paid.status_code == 402, paid.text

    # The customer chooses the same card again: a new authorization. The installment gets an
    # attempt that day, presented (and declined again: one strike since the authorization).
    chosen = await portal.http.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method",
        json={"payment_method_id": lease.method_id},
    )
    assert chosen.status_code == 200, chosen.text
    schedule = (await portal.http.get(f"/v1/leases/{lease.lease_id}/schedule")).json()
    assert schedule["installments"][0]["collection_stopped"] is None
    async with pool.acquire() as conn:
        assert (await installment(conn, iid))["next_attempt_on"] == portal.today
    again = await run_pass(pool, gateways, settings, as_of=portal.today)
    assert (again.counts.due, again.counts.declined, again.counts.refused) == (1, 1, 0)
    assert [s[1] for s in await _statuses(pool, iid)] == [
        "declined",
        "declined",
        "refused",
        "declined",
    ]
    async with pool.acquire() as conn:
        manual = await conn.fetch(
            "SELECT status, outcome_code FROM charge_attempts WHERE source = 'manual'"
        )
    assert [tuple(m) for m in manual] == [("declined", "insufficient_funds")]
    report = await run_audit(pool, card_rules=settings.card_rules)
    assert report.counts["two_strike_stop"] == 0


async def test_returned_debits_count_as_strikes_before_nachas_reinitiation_cap(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[TODAY])
    [iid] = lease.installment_ids
    day, reasons = TODAY, []
    for _ in range(40):
        done = await run_pass(pool, gateways, settings, as_of=day)
        if done.counts.refused:
            reasons = [s[2] for s in await _statuses(pool, iid) if s[1] == "refused"]
            break
        day += timedelta(days=1)
    # The original debit and its first reinitiation came back R01: two strikes, so the
    # second reinitiation NACHA would still allow is not sent.
    assert reasons == ["two_strike_stop"]
    assert [s[1] for s in await _statuses(pool, iid)] == ["returned", "returned", "refused"]


async def test_a_limit_of_zero_turns_the_stop_off_and_the_audit_reads_the_setting(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    off = settings.model_copy(update={"two_strike_limit": 0})
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    [iid] = lease.installment_ids
    day = TODAY
    for gap in [0, *off.soft_retry_days[:2]]:
        day += timedelta(days=gap)
        assert (await run_pass(pool, gateways, off, as_of=day)).counts.declined == 1
    assert [s[1] for s in await _statuses(pool, iid)] == ["declined"] * 3

    assert (await run_audit(pool, card_rules=off.card_rules)).clean
    # Read with the stop on, the third attempt broke it; a new authorization of the card
    # between the second decline and the third attempt would have made it fine.
    strict = await run_audit(pool, card_rules=replace(off.card_rules, two_strike_limit=2))
    [violation] = strict.violations["two_strike_stop"]
    async with pool.acquire() as conn:
        ids = [a["id"] for a in await attempts_of(conn, iid)]
        assert violation.attempt_ids == (ids[2], ids[0], ids[1])
        await conn.execute(
            "INSERT INTO method_authorizations"
            " (customer_id, payment_method_id, instrument_key, source, authorized_at)"
            " SELECT customer_id, id, instrument_key, 'primary',"
            " (SELECT created_at - interval '1 microsecond' FROM charge_attempts WHERE id = $2)"
            " FROM payment_methods WHERE id = $1",
            lease.method_id,
            ids[2],
        )
    fine = await run_audit(pool, card_rules=replace(off.card_rules, two_strike_limit=2))
    assert fine.counts["two_strike_stop"] == 0
