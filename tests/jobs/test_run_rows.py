"""A run row never stays 'running' once its pass is gone: the next pass closes it, and never
the row of a pass that is alive."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import asyncpg

from collector.config import Settings
from collector.db.runs import abandon_dead_runs, open_run, start_run
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass

TODAY = date(2026, 11, 26)


async def _status(pool: asyncpg.Pool, run_id: int) -> str:
    status: str = await pool.fetchval("SELECT status FROM collection_runs WHERE id = $1", run_id)
    return status


async def test_only_a_run_without_its_liveness_lock_is_abandoned(pool: asyncpg.Pool) -> None:
    dead = await start_run(pool, as_of=TODAY, host="gone", pid=1)  # its process is no more
    async with open_run(pool, as_of=TODAY, host="alive", pid=2) as alive:
        assert await alive.lock_held()
        abandoned = await abandon_dead_runs(pool)
        assert [run.run_id for run in abandoned] == [dead]
        assert (abandoned[0].host, abandoned[0].pid) == ("gone", 1)
        assert await _status(pool, alive.run_id) == "running"
    assert await _status(pool, dead) == "abandoned"
    row = await pool.fetchrow("SELECT finished_at, error FROM collection_runs WHERE id = $1", dead)
    assert row["finished_at"] is not None and row["error"].startswith("abandoned")
    # Once the block is over, its lock is released: a row left running would now be taken.
    assert [run.run_id for run in await abandon_dead_runs(pool)] == [alive.run_id]


async def test_each_pass_closes_the_rows_dead_passes_left_running(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    dead = await start_run(pool, as_of=TODAY, host="killed", pid=3)
    result = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert await _status(pool, dead) == "abandoned"
    assert await _status(pool, result.run_id) == "completed"
