"""Delinquency aging through whole passes over a month of business dates: the snapshot each
pass writes, the report's buckets and roll rates (by the CLI), the gauges, the portal's lease
view, and charge-off (never charged again automatically, recoveries by manual pay)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg

from collector.config import Settings
from collector.db.audit import run_audit
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.metrics import REGISTRY
from tests.cli.commands import collector as run_cli
from tests.cli.commands import env_for
from tests.factories import attempts_of, installment, make_lease
from tests.jobs.portal import Portal

TODAY = date(2026, 11, 26)


def _gauge(name: str, bucket: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"bucket": bucket})


async def test_a_month_of_passes_ages_the_book_rolls_it_and_charges_off(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    portal: Portal,
    database_url: str,
) -> None:
    broke = "sandbox_card_insufficient_funds"
    async with pool.acquire() as conn:
        paid = await make_lease(conn, due_dates=[TODAY - timedelta(days=5)])
        # A bank debit awaiting settlement is not past due.
        ach = await make_lease(conn, token="sandbox_ach_ok", due_dates=[TODAY - timedelta(days=3)])
        cures = await make_lease(conn, token=broke, due_dates=[TODAY - timedelta(days=20)])
        rolls = await make_lease(conn, token=broke, due_dates=[TODAY - timedelta(days=45)])
        late = await make_lease(conn, token=broke, due_dates=[TODAY - timedelta(days=100)])
        gone = await make_lease(
            conn, token=broke, due_dates=[TODAY - timedelta(days=130)], amount_cents=7_000
        )

    first = await run_pass(pool, gateways, settings, as_of=TODAY)
    # More than 120 days past due: charged off before anything is claimed, never presented.
    assert first.counts.due == 5
    async with pool.acquire() as conn:
        assert await attempts_of(conn, gone.installment_ids[0]) == []
        assert (
            await conn.fetchval("SELECT status FROM leases WHERE id = $1", gone.lease_id)
            == "charged_off"
        )
        [row] = await conn.fetch(
            "SELECT kind, amount_cents, as_of FROM money_movements WHERE installment_id = $1",
            gone.installment_ids[0],
        )
        assert tuple(row) == ("charged_off", 7_000, TODAY)
        snap = {
            r["lease_id"]: (r["bucket"], r["days_past_due"], r["past_due_cents"])
            for r in await conn.fetch("SELECT * FROM delinquency_snapshots WHERE as_of = $1", TODAY)
        }
    assert snap == {
        cures.lease_id: ("1-30", 20, 5_000),
        rolls.lease_id: ("31-60", 45, 5_000),
        late.lease_id: ("90+", 100, 5_000),
    }
    assert _gauge("collector_delinquency_leases", "current") == 2  # paid, ach
    assert _gauge("collector_delinquency_cents", "90+") == 5_000
    assert _gauge("collector_delinquency_cents", "61-90") == 0

    # The portal shows how far past due a lease is.
    lease = (await portal.http.get(f"/v1/leases/{rolls.lease_id}")).json()
    assert (lease["days_past_due"], lease["delinquency_bucket"]) == (45, "31-60")
    lease = (await portal.http.get(f"/v1/leases/{ach.lease_id}")).json()
    assert (lease["days_past_due"], lease["delinquency_bucket"]) == (0, "current")

    # A month of daily passes. On day 10 one customer adds a card that works; on day 12 the
    # charged-off customer pays by hand with a new card: a recovery. The charged-off lease is
    # never charged automatically, new card or not.
    for n in range(1, 31):
        day = TODAY + timedelta(days=n)
        portal.today = day
        if n == 10:
            added = await portal.http.post(
                f"/v1/customers/{cures.customer_id}/payment-methods",
                json={
                    "kind": "card",
                    "gateway": "sandbox_card",
                    "token": "sandbox_card_ok",
                    "last4": "4242",
                    "make_primary": True,
                },
            )
            assert added.status_code == 201, added.text
        if n == 12:
            added = await portal.http.post(
                f"/v1/customers/{gone.customer_id}/payment-methods",
                json={
                    "kind": "card",
                    "gateway": "sandbox_card",
                    "token": "sandbox_card_ok",
                    "last4": "4242",
                    "make_primary": True,
                },
            )
            assert added.status_code == 201, added.text
            async with pool.acquire() as conn:
                assert (await installment(conn, gone.installment_ids[0]))["next_attempt_on"] is None
            recovery = await portal.http.post(
                f"/v1/leases/{gone.lease_id}/payments", headers={"Idempotency-Key": "recover-1"}
            )
            assert recovery.status_code == 201, recovery.text
        await run_pass(pool, gateways, settings, as_of=day)

    later = TODAY + timedelta(days=30)
    async with pool.acquire() as conn:
        assert (await installment(conn, cures.installment_ids[0]))["status"] == "paid"
        assert (await installment(conn, paid.installment_ids[0]))["status"] == "paid"
        # 100 + 21 > 120 days past due on day 21: charged off by that pass.
        assert (
            await conn.fetchval("SELECT status FROM leases WHERE id = $1", late.lease_id)
            == "charged_off"
        )
        automatic_after = await conn.fetchval(
            "SELECT count(*) FROM charge_attempts a JOIN installments i ON i.id = a.installment_id"
            " WHERE i.lease_id = ANY($1::bigint[]) AND a.source <> 'manual' AND a.as_of > $2",
            [gone.lease_id, late.lease_id],
            TODAY + timedelta(days=21),
        )
        assert automatic_after == 0

    done = await run_cli(
        "report",
        "delinquency",
        "--date",
        later.isoformat(),
        "--json",
        "--allow-future-date",
        env=env_for(database_url),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["as_of"] == later.isoformat()
    assert report["roll_rates_from"] == TODAY.isoformat()
    buckets = {b["bucket"]: (b["leases"], b["past_due_cents"]) for b in report["buckets"]}
    assert buckets == {
        "current": (3, 0),  # paid, ach (settled), cures
        "1-30": (0, 0),
        "31-60": (0, 0),
        "61-90": (1, 5_000),  # rolls: 75 days past due
        "90+": (0, 0),
    }
    rates = {r["bucket"]: r for r in report["roll_rates"]}
    assert (rates["1-30"]["cured"], rates["1-30"]["to"]["current"]) == (1.0, 1.0)
    assert (rates["31-60"]["rolled_forward"], rates["31-60"]["to"]["61-90"]) == (1.0, 1.0)
    assert rates["90+"]["charged_off"] == 1.0
    assert rates["61-90"]["leases"] == 0 and rates["61-90"]["stayed"] == 0.0
    assert report["recovered"] == {"leases": 1, "cents": 7_000}
    assert "roll rates from 2026-11-26" in done.stdout
    assert "recovered after charge-off: 1 lease(s), $70.00" in done.stdout

    # Asking for a date with no snapshot reads the latest before it.
    done = await run_cli(
        "report",
        "delinquency",
        "--date",
        (TODAY - timedelta(days=1)).isoformat(),
        env=env_for(database_url),
    )
    assert done.returncode == 0, done.stderr
    assert "no snapshot yet" in done.stdout
    assert (await run_audit(pool, card_rules=settings.card_rules)).clean


async def test_a_second_pass_of_a_date_rewrites_its_snapshot(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY - timedelta(days=2)]
        )
    await run_pass(pool, gateways, settings, as_of=TODAY)
    async with pool.acquire() as conn:
        # The customer paid elsewhere (written as the journal would: an opening settlement).
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, kind, amount_cents, as_of,"
            " source, answers) SELECT $1, $2, k, 5000, $3, 'migration', k = 'settled'"
            " FROM unnest(ARRAY['presented', 'settled']) AS k",
            lease.customer_id,
            lease.installment_ids[0],
            TODAY,
        )
        await conn.execute(
            "SELECT installments_derive_v1(ARRAY[$1::bigint])", lease.installment_ids[0]
        )
    await run_pass(pool, gateways, settings, as_of=TODAY)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM delinquency_snapshots") == 0
        totals = dict(
            await conn.fetch(
                "SELECT bucket, leases FROM delinquency_totals WHERE as_of = $1", TODAY
            )
        )
    assert totals == {"current": 1, "1-30": 0, "31-60": 0, "61-90": 0, "90+": 0}


async def _delinquent_events(pool: asyncpg.Pool) -> list[tuple[int, str, dict[str, object]]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT lease_id, as_of, body, dedupe_key, ordering_key FROM outbox_events"
            " WHERE type = 'lease.delinquent' ORDER BY id"
        )
    for row in rows:
        assert row["dedupe_key"] == f"lease.delinquent:{row['lease_id']}:{row['as_of']}"
        assert row["ordering_key"] == f"lease:{row['lease_id']}"
    return [(r["lease_id"], r["as_of"].isoformat(), dict(r["body"])) for r in rows]


async def test_the_snapshot_writes_lease_delinquent_when_a_bucket_changes(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
        # Past due since before the first snapshot, and still in the same bucket after it.
        steady = await make_lease(
            conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY - timedelta(days=10)]
        )
    day1 = TODAY + timedelta(days=1)
    await run_pass(pool, gateways, settings, as_of=TODAY)
    # No snapshot before the first: every lease counts as having been current.
    assert await _delinquent_events(pool) == [
        (
            steady.lease_id,
            TODAY.isoformat(),
            {
                "lease_id": steady.lease_id,
                "old_bucket": "current",
                "new_bucket": "1-30",
                "days_past_due": 10,
                "past_due_cents": 5_000,
            },
        )
    ]
    await run_pass(pool, gateways, settings, as_of=day1)
    await run_pass(pool, gateways, settings, as_of=day1)  # a second pass of the date: once
    events = await _delinquent_events(pool)
    assert events[1:] == [
        (
            lease.lease_id,
            day1.isoformat(),
            {
                "lease_id": lease.lease_id,
                "old_bucket": "current",
                "new_bucket": "1-30",
                "days_past_due": 1,
                "past_due_cents": 5_000,
                "previous_as_of": TODAY.isoformat(),
            },
        )
    ]
    # Paid (written as the journal would: an opening settlement): back to current.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, kind, amount_cents, as_of,"
            " source, answers) SELECT $1, $2, k, 5000, $3, 'migration', k = 'settled'"
            " FROM unnest(ARRAY['presented', 'settled']) AS k",
            lease.customer_id,
            lease.installment_ids[0],
            day1,
        )
        await conn.execute(
            "SELECT installments_derive_v1(ARRAY[$1::bigint])", lease.installment_ids[0]
        )
    day2 = day1 + timedelta(days=1)
    await run_pass(pool, gateways, settings, as_of=day2)
    assert (await _delinquent_events(pool))[2:] == [
        (
            lease.lease_id,
            day2.isoformat(),
            {
                "lease_id": lease.lease_id,
                "old_bucket": "1-30",
                "new_bucket": "current",
                "days_past_due": 0,
                "past_due_cents": 0,
                "previous_as_of": day1.isoformat(),
            },
        )
    ]
