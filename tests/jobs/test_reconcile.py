"""Reconciliation of attempts a pass left behind: by liveness lock, by deadline, by key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import anyio
import asyncpg
import pytest

from collector.config import Settings
from collector.db.attempts import ClaimCursor, live_runs
from collector.db.runs import liveness_lock, start_run
from collector.domain import ClaimedCharge
from collector.gateways.base import ChargeRequest, Gateway, InDoubt, Succeeded
from collector.gateways.sandbox import sandbox_charge_counts
from collector.jobs.collect import run_pass
from collector.jobs.presentment import claim
from collector.seed import seed_demo
from tests.factories import attempts_of, make_lease

TODAY = date(2026, 11, 26)


async def _claim_as_another_pass(pool: asyncpg.Pool, run_id: int) -> list[ClaimedCharge]:
    claimed, _ = await claim(
        pool,
        as_of=TODAY,
        cursor=ClaimCursor(),
        limit=1_000,
        gateways=["sandbox_card", "sandbox_ach"],
        run_id=run_id,
        deadline_s=600,
    )
    return claimed


def _request(claimed: ClaimedCharge) -> ChargeRequest:
    return ChargeRequest(
        customer_id=claimed.customer_id,
        idempotency_key=claimed.idempotency_key,
        amount_cents=claimed.amount_cents,
        token=claimed.token,
        method_kind=claimed.method_kind,
        metadata={"installment_id": str(claimed.installment_id)},
    )


async def test_dead_pass_attempts_are_finished_under_their_own_keys(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    await seed_demo(pool, customers=40, due_on=TODAY, mix="ok", installments=1)
    dead_run = await start_run(pool, as_of=TODAY, host="gone", pid=1)
    claimed = await _claim_as_another_pass(pool, dead_run)
    assert len(claimed) == 40
    # The dead pass reached the gateway for half of them, and recorded nothing.
    for c in claimed[:20]:
        await gateways[c.gateway].charge(_request(c))

    result = await run_pass(pool, gateways, settings, as_of=TODAY)

    assert result.counts.reconciled == 40
    assert result.counts.due == 0
    assert result.counts.succeeded == 40
    async with pool.acquire() as conn:
        counts = await sandbox_charge_counts(conn)
        keys = await conn.fetch("SELECT idempotency_key FROM charge_attempts ORDER BY id")
        assert await conn.fetchval("SELECT count(*) FROM installments WHERE status = 'paid'") == 40
    # The same keys, each once (the order of ids is the claim's, which on Citus goes a shard
    # group at a time).
    assert sorted(r[0] for r in keys) == sorted(c.idempotency_key for c in claimed)
    assert set(counts.values()) == {1} and len(counts) == 40


async def test_a_live_pass_keeps_its_claims_until_it_dies(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    await seed_demo(pool, customers=10, due_on=TODAY, mix="ok", installments=1)
    live_run = await start_run(pool, as_of=TODAY, host="alive", pid=2)
    async with liveness_lock(pool, live_run):
        await _claim_as_another_pass(pool, live_run)
        meanwhile = await run_pass(pool, gateways, settings, as_of=TODAY)
        assert (meanwhile.counts.reconciled, meanwhile.counts.due) == (0, 0)
        async with pool.acquire() as conn:
            assert (
                await conn.fetchval("SELECT count(*) FROM installments WHERE status = 'processing'")
                == 10
            )
    # Its lock is gone: the next pass takes over at once, with no deadline to wait for.
    after = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert (after.counts.reconciled, after.counts.succeeded) == (10, 10)


async def test_the_live_runs_are_read_on_their_own_from_the_passes_locks(
    pool: asyncpg.Pool,
) -> None:
    # Read in a statement of their own (on Citus a pg_locks read inside a routed statement
    # ran on a worker, where every live pass looked dead), then given to claim_unresolved.
    live_run = await start_run(pool, as_of=TODAY, host="alive", pid=3)
    gone_run = await start_run(pool, as_of=TODAY, host="gone", pid=4)
    async with liveness_lock(pool, live_run):
        live, now = await live_runs(pool)
        assert live_run in live and gone_run not in live
        assert now.tzinfo is not None  # the database's clock, for the take-over's times
    live, _ = await live_runs(pool)
    assert live_run not in live


async def test_claim_deadline_is_a_backstop_for_a_live_but_stuck_pass(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    await seed_demo(pool, customers=5, due_on=TODAY, mix="ok", installments=1)
    stuck_run = await start_run(pool, as_of=TODAY, host="stuck", pid=3)
    async with liveness_lock(pool, stuck_run):
        await _claim_as_another_pass(pool, stuck_run)
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE charge_attempts SET claimed_until = now() - interval '1 second'"
            )
        result = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert result.counts.reconciled == 5
    async with pool.acquire() as conn:
        counts = await sandbox_charge_counts(conn)
    assert set(counts.values()) == {1}


async def test_rate_limit_bounds_the_charges_per_second(
    pool: asyncpg.Pool, database_url: str
) -> None:
    from collector.gateways.registry import open_gateways
    from tests.conftest import gateway_context

    await seed_demo(pool, customers=60, due_on=TODAY, mix="ok", installments=1)
    limited = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        rate_limits={"sandbox_card": 20},
        batch_size=100,
    )
    async with open_gateways(limited.gateways, gateway_context(database_url)) as gws:
        started = anyio.current_time()
        result = await run_pass(pool, gws, limited, as_of=TODAY)
        elapsed = anyio.current_time() - started
    assert result.counts.succeeded == 60
    # 20 a second, a first burst of 20 allowed: 60 charges cannot take less than 2 seconds.
    assert elapsed >= 1.9


class _LaggingSearch:
    """A gateway at its boundary: every charge times out, and its search finds nothing, the
    way a lagging search index answers right after a charge it did take."""

    def __init__(self, name: str, lag: timedelta) -> None:
        self.name = name
        self.lookup_lag = lag
        self.charges = 0

    async def charge(self, request: ChargeRequest) -> InDoubt:
        self.charges += 1
        return InDoubt(reason="timeout")

    async def lookup(self, idempotency_key: str) -> None:
        return None


@pytest.mark.parametrize(
    ("lag", "resolved"), [(timedelta(hours=1), "in_doubt"), (timedelta(0), "failed")]
)
async def test_not_found_is_no_answer_while_the_gateway_search_may_lag(
    pool: asyncpg.Pool, settings: Settings, lag: timedelta, resolved: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    gateway = _LaggingSearch("sandbox_card", lag)
    gws = {"sandbox_card": gateway}
    assert (await run_pass(pool, gws, settings, as_of=TODAY)).counts.in_doubt == 1  # type: ignore[arg-type]
    await run_pass(pool, gws, settings, as_of=TODAY)  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
    assert attempt["status"] == resolved
    # Never charged again under a new key while the first one may have been taken.
    assert gateway.charges == 1


class _LaggingButIdempotent:
    """A gateway whose search lags but which deduplicates keys (as Stripe does for 24 h)."""

    def __init__(self) -> None:
        self.name = "sandbox_card"
        self.lookup_lag = timedelta(hours=1)
        self.key_retention = timedelta(hours=24)
        self.keys: list[str] = []

    async def charge(self, request: ChargeRequest) -> Succeeded:
        self.keys.append(request.idempotency_key)
        return Succeeded(gateway_ref="ch_1")

    async def lookup(self, idempotency_key: str) -> None:
        return None


async def test_an_orphaned_pending_attempt_is_resent_under_its_key_despite_a_lagging_search(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    await seed_demo(pool, customers=1, due_on=TODAY, mix="ok", installments=1)
    dead_run = await start_run(pool, as_of=TODAY, host="gone", pid=1)
    [claimed] = await _claim_as_another_pass(pool, dead_run)
    gateway = _LaggingButIdempotent()
    result = await run_pass(pool, {"sandbox_card": gateway}, settings, as_of=TODAY)  # type: ignore[dict-item]
    assert (result.counts.reconciled, result.counts.succeeded) == (1, 1)
    assert gateway.keys == [claimed.idempotency_key]
