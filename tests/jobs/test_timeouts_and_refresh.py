"""Statement and lock timeouts on the engine's connections (settings), so that a statement
blocked behind someone's lock fails with that reason instead of hanging a pass; and the
daemon's gauges, refreshed on a timer, follow the database between passes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import anyio
import asyncpg
import pytest

from collector.config import Settings
from collector.db.pool import open_pool
from collector.jobs.gauges import refresh_forever
from collector.metrics import REGISTRY
from tests.factories import make_lease

TODAY = date(2026, 11, 26)


async def test_a_statement_waiting_on_a_lock_fails_after_the_lock_timeout(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY])
    async with (
        open_pool(database_url, size=1, lock_timeout_s=0.2, statement_timeout_s=5) as engine,
        pool.acquire() as holder,
        holder.transaction(),
    ):
        await holder.execute("SELECT 1 FROM installments FOR UPDATE")  # someone holds it
        with anyio.fail_after(10), pytest.raises(asyncpg.LockNotAvailableError):
            await engine.execute("UPDATE installments SET due_on = due_on")
        assert await engine.fetchval("SHOW statement_timeout") == "5s"


async def test_a_statement_running_too_long_is_cancelled_after_the_statement_timeout(
    database_url: str,
) -> None:
    async with open_pool(database_url, size=1, statement_timeout_s=0.2) as engine:
        with anyio.fail_after(10), pytest.raises(asyncpg.QueryCanceledError):
            await engine.execute("SELECT pg_sleep(5)")


async def test_the_daemons_gauges_follow_the_database_between_passes(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY], amount_cents=1_234)
    now = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)

    def due_today() -> float | None:
        return REGISTRY.get_sample_value("collector_due_today_cents", {"part": "due"})

    # Each refresh ends in the refresher's sleep: the test hears of it there, and lets it go on.
    refreshed_send, refreshed = anyio.create_memory_object_stream[float](0)

    async def sleep(seconds: float) -> None:
        assert seconds == settings.metrics_refresh_s
        await refreshed_send.send(seconds)

    async with anyio.create_task_group() as tg, refreshed:
        tg.start_soon(lambda: refresh_forever(pool, settings, clock=lambda: now, sleep=sleep))
        with anyio.fail_after(10):
            await refreshed.receive()
        assert due_today() == 1_234
        # Nothing but the refresher runs: a new installment due today shows without a pass.
        async with pool.acquire() as conn:
            await make_lease(conn, due_dates=[TODAY], amount_cents=1_000)
        with anyio.fail_after(10):
            await refreshed.receive()  # the refresh that was under way may predate the insert
            await refreshed.receive()
        assert due_today() == 2_234
        tg.cancel_scope.cancel()
