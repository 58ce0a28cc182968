"""Settings as ``collector run`` meets them: a bad one stops it at start with one line naming
it and exit 1, before any work; a fractional rate limit paces the pass instead of failing it."""

from __future__ import annotations

import json
from datetime import date

import asyncpg
import pytest

from tests.cli.commands import collector, env_for
from tests.factories import make_lease

TODAY = date(2026, 11, 26)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COLLECTOR_RATE_LIMITS", '{"sandbox_crad": 5}'),
        ("COLLECTOR_RATE_LIMITS", '{"sandbox_card": 0}'),
        ("COLLECTOR_GATEWAYS", ""),
        ("COLLECTOR_POOL_SIZE", "2"),
        ("COLLECTOR_SOFT_RETRY_DAYS", "3,100000"),
    ],
)
async def test_a_bad_setting_stops_the_pass_before_any_work(
    pool: asyncpg.Pool, database_url: str, name: str, value: str
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY])
    done = await collector(
        "run", "--date", TODAY.isoformat(), env=env_for(database_url, **{name: value})
    )
    assert done.returncode == 1, done.stderr
    assert f"{name}: " in done.one_error_line()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collection_runs") == 0
        assert await conn.fetchval("SELECT count(*) FROM charge_attempts") == 0


async def test_a_pass_under_half_a_charge_a_second_is_paced_not_failed(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as conn:
        for _ in range(3):
            await make_lease(conn, due_dates=[TODAY])
    env = env_for(
        database_url,
        COLLECTOR_RATE_LIMITS='{"sandbox_card": 0.5}',
        COLLECTOR_BATCH_SIZE="10",
        COLLECTOR_CONCURRENCY="4",
    )
    done = await collector("run", "--date", TODAY.isoformat(), "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["succeeded"] == 3
    # One charge every two seconds: the third goes out at least 4 s after the first.
    assert summary["duration_s"] >= 4
