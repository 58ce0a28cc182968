from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import anyio
import asyncpg
import pytest

from collector.config import Settings
from collector.db.preview import preview
from collector.gateways.base import Gateway
from collector.gateways.registry import open_gateways
from collector.gateways.sandbox import sandbox_charge_counts
from collector.jobs.collect import run_pass
from collector.policy import CardRetryRules
from collector.seed import seed_demo
from tests.conftest import gateway_context
from tests.factories import attempts_of, installment, make_lease

TODAY = date(2026, 11, 26)


async def test_pass_charges_every_due_installment_once_and_nothing_else(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        due = await make_lease(
            conn, due_dates=[TODAY, TODAY + timedelta(days=30)], amount_cents=4_321
        )
        late = await make_lease(conn, due_dates=[TODAY - timedelta(days=3)], amount_cents=1_000)
        ach = await make_lease(conn, token="sandbox_ach_ok", due_dates=[TODAY], amount_cents=7_000)
        closed = await make_lease(conn, due_dates=[TODAY], lease_status="closed")
        no_method = await make_lease(conn, due_dates=[TODAY], with_method=False)
        disabled = await make_lease(conn, due_dates=[TODAY], method_status="disabled")
        not_primary = await make_lease(conn, due_dates=[TODAY], primary=False)

    result = await run_pass(pool, gateways, settings, as_of=TODAY)

    assert result.counts.due == 3
    assert result.counts.succeeded == 2
    assert result.counts.processing == 1
    assert result.counts.charged_cents == 4_321 + 1_000
    async with pool.acquire() as conn:
        paid = await installment(conn, due.installment_ids[0])
        assert (paid["status"], paid["paid_cents"], paid["attempts"]) == ("paid", 4_321, 1)
        future = await installment(conn, due.installment_ids[1])
        assert (future["status"], future["attempts"]) == ("scheduled", 0)
        assert (await installment(conn, late.installment_ids[0]))["status"] == "paid"
        pending = await installment(conn, ach.installment_ids[0])
        assert (pending["status"], pending["paid_cents"]) == ("pending_settlement", 0)
        for untouched in (closed, no_method, disabled, not_primary):
            row = await installment(conn, untouched.installment_ids[0])
            assert (row["status"], row["attempts"]) == ("scheduled", 0)
            assert await attempts_of(conn, untouched.installment_ids[0]) == []
        [attempt] = await attempts_of(conn, due.installment_ids[0])
        assert attempt["status"] == "succeeded"
        assert attempt["idempotency_key"] == f"collector-inst-{due.installment_ids[0]}-1"
        assert attempt["source"] == "batch"
        counts = await sandbox_charge_counts(conn)
    assert counts == {
        due.installment_ids[0]: 1,
        late.installment_ids[0]: 1,
        ach.installment_ids[0]: 1,
    }

    again = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert again.counts.due == 0


@pytest.mark.parametrize("passes", [2, 4])
async def test_concurrent_passes_charge_each_installment_exactly_once(
    pool: asyncpg.Pool, database_url: str, settings: Settings, passes: int
) -> None:
    await seed_demo(pool, customers=1_500, due_on=TODAY, mix="ok", installments=1)
    totals = []

    async def one_pass() -> None:
        # Each pass opens its own gateways, as separate processes would.
        async with open_gateways(settings.gateways, gateway_context(database_url)) as gws:
            totals.append((await run_pass(pool, gws, settings, as_of=TODAY)).counts)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(passes):
                tg.start_soon(one_pass)

    assert sum(c.due for c in totals) == 1_500
    assert sum(c.succeeded for c in totals) == 1_500
    async with pool.acquire() as conn:
        counts = await sandbox_charge_counts(conn)
        assert len(counts) == 1_500
        assert set(counts.values()) == {1}
        assert await conn.fetchval("SELECT count(*) FROM installments WHERE status <> 'paid'") == 0
        assert await conn.fetchval("SELECT count(*) FROM charge_attempts") == 1_500


async def test_soft_decline_makes_overdue_with_a_retry_date(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    result = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert result.counts.declined == 1
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        assert row["status"] == "overdue"
        assert row["next_attempt_on"] == TODAY + timedelta(days=settings.soft_retry_days[0])
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
        assert (attempt["status"], attempt["outcome_code"]) == ("declined", "insufficient_funds")
        method = await conn.fetchrow(
            "SELECT status FROM payment_methods WHERE id = $1", lease.method_id
        )
        assert method["status"] == "active"

    # Not before the retry date; on it, a retry under a new key.
    assert (
        await run_pass(pool, gateways, settings, as_of=TODAY + timedelta(days=1))
    ).counts.due == 0
    retry_on = TODAY + timedelta(days=settings.soft_retry_days[0])
    assert (await run_pass(pool, gateways, settings, as_of=retry_on)).counts.due == 1
    async with pool.acquire() as conn:
        attempts = await attempts_of(conn, lease.installment_ids[0])
        assert [a["source"] for a in attempts] == ["batch", "retry"]
        assert attempts[1]["idempotency_key"].endswith("-2")


# Every retry declined on one card: the two-strike stop would end them first.
@pytest.mark.audit_rules(CardRetryRules(two_strike_limit=0))
async def test_soft_retries_stop_after_the_configured_number(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    settings = settings.model_copy(update={"two_strike_limit": 0})
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_do_not_honor", due_dates=[TODAY])
    day = TODAY
    for _ in range(len(settings.soft_retry_days) + 1):
        assert (await run_pass(pool, gateways, settings, as_of=day)).counts.declined == 1
        async with pool.acquire() as conn:
            next_on = (await installment(conn, lease.installment_ids[0]))["next_attempt_on"]
        if next_on is None:
            break
        day = next_on
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
    assert row["attempts"] == len(settings.soft_retry_days) + 1
    assert (row["status"], row["next_attempt_on"]) == ("overdue", None)


async def test_hard_decline_is_never_retried_and_disables_the_method(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_stolen", due_dates=[TODAY, TODAY])
    result = await run_pass(pool, gateways, settings, as_of=TODAY)
    # Both installments were claimed together; both are declined, the method disabled once.
    assert result.counts.declined == 2
    async with pool.acquire() as conn:
        for iid in lease.installment_ids:
            row = await installment(conn, iid)
            assert (row["status"], row["next_attempt_on"]) == ("overdue", None)
        method = await conn.fetchrow(
            "SELECT status, disabled_reason FROM payment_methods WHERE id = $1", lease.method_id
        )
        assert (method["status"], method["disabled_reason"]) == ("disabled", "stolen_card")
    later = await run_pass(pool, gateways, settings, as_of=TODAY + timedelta(days=30))
    assert later.counts.due == 0


@pytest.mark.parametrize(
    ("token", "resolved_attempt", "resolved_installment", "charges"),
    [
        ("sandbox_card_timeout_taken", "succeeded", "paid", 1),
        ("sandbox_card_timeout_not_taken", "failed", "overdue", 0),
    ],
)
async def test_timeout_is_in_doubt_until_reconciliation_finds_the_truth(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    token: str,
    resolved_attempt: str,
    resolved_installment: str,
    charges: int,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=[TODAY])
    first = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert (first.counts.in_doubt, first.counts.declined) == (1, 0)
    async with pool.acquire() as conn:
        assert (await installment(conn, lease.installment_ids[0]))["status"] == "processing"
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
        assert attempt["status"] == "in_doubt"

    second = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert second.counts.reconciled == 1
    assert second.counts.due == 0  # the in-doubt installment was not charged anew
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
        assert attempt["status"] == resolved_attempt
        assert (await installment(conn, lease.installment_ids[0]))["status"] == resolved_installment
        counts = await sandbox_charge_counts(conn)
    assert counts.get(lease.installment_ids[0], 0) == charges


async def _table_digest(conn: asyncpg.pool.PoolConnectionProxy) -> dict[str, str]:
    digest = {}
    for table in (
        "installments",
        "charge_attempts",
        "payment_methods",
        "collection_runs",
        "leases",
    ):
        digest[table] = await conn.fetchval(
            f"SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') FROM {table} t"
        )
    return digest


async def test_dry_run_reports_the_due_set_a_pass_then_charges_and_writes_nothing(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    await seed_demo(pool, customers=120, due_on=TODAY, installments=2)
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY], lease_status="charged_off", amount_cents=999)
        await make_lease(conn, due_dates=[TODAY], with_method=False, amount_cents=888)
        before = await _table_digest(conn)

    report = await preview(pool, as_of=TODAY, gateways=settings.gateways)

    async with pool.acquire() as conn:
        assert await _table_digest(conn) == before
    skipped = {s.reason: (s.installments, s.amount_cents) for s in report.skipped}
    assert skipped == {"lease_charged_off": (1, 999), "no_primary_method": (1, 888)}

    result = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert result.counts.due == sum(g.installments for g in report.due) == 120
    async with pool.acquire() as conn:
        charged = await conn.fetch(
            "SELECT a.gateway, pm.kind, count(*) AS n, sum(a.amount_cents) AS cents"
            " FROM charge_attempts a JOIN payment_methods pm"
            " ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        )
    assert [(r["gateway"], r["kind"], r["n"], r["cents"]) for r in charged] == [
        (g.gateway, g.kind, g.installments, g.amount_cents) for g in report.due
    ]


async def test_a_pass_gives_the_planner_statistics_it_never_had(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        never = "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'installments' AND last_analyze IS NULL AND last_autoanalyze IS NULL"
        assert await conn.fetchval(never) == 1
    await run_pass(pool, gateways, settings, as_of=TODAY)
    async with pool.acquire() as conn:
        assert await conn.fetchval(never) == 0


async def test_a_seed_leaves_statistics_behind(pool: asyncpg.Pool) -> None:
    await seed_demo(pool, customers=10, due_on=TODAY, installments=1)
    async with pool.acquire() as conn:
        analyzed = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
            " AND relname IN ('customers', 'payment_methods', 'leases', 'installments')"
        )
    assert analyzed == 4
