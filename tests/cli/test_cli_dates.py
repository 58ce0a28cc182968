"""Business dates on the command line: a pass never runs ahead of today without
--allow-future-date, never further than 31 days ahead, and never outside the banking calendar;
a refused date is one line and exit 2, before any work."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from collector.business_dates import MAX_DAYS_AHEAD, SEED_MAX_DAYS_AHEAD
from tests.cli.commands import collector, env_for, local_today
from tests.factories import make_lease

# Nothing listens here: a command that got as far as the database would fail with exit 1.
NOWHERE = "postgresql://collector:secret-pw@127.0.0.1:1/nowhere"


def _date_commands(day: str) -> list[list[str]]:
    return [
        ["run", "--date", day],
        ["run", "--dry-run", "--date", day],
        ["ach", "export", "--date", day],
        ["ach", "import-returns", "returns.ach", "--date", day],
    ]


@pytest.mark.parametrize("command", _date_commands("{ahead}"), ids=" ".join)
async def test_a_date_after_today_is_refused_before_any_work(command: list[str]) -> None:
    # Two days ahead: still ahead if midnight passes while the test runs.
    ahead = (local_today() + timedelta(days=2)).isoformat()
    done = await collector(*[a.format(ahead=ahead) for a in command], env=env_for(NOWHERE))
    assert done.returncode == 2, done.stderr
    line = done.one_error_line()
    assert f"--date {ahead} is 2 day(s) after today" in line
    assert "America/New_York" in line and "--allow-future-date" in line


# Each date on one command, and the furthest on every command: each child costs seconds.
FAR = [
    ["run", "--date", day] for day in ("9999-12-31", "2100-01-01", "1998-12-31", "0001-01-01")
] + _date_commands("9999-12-31")[1:]


@pytest.mark.parametrize("command", FAR, ids=" ".join)
async def test_far_dates_are_refused_even_with_the_flag(command: list[str]) -> None:
    done = await collector(*command, "--allow-future-date", env=env_for(NOWHERE))
    assert done.returncode == 2, done.stderr
    line = done.one_error_line()
    assert f"--date {command[command.index('--date') + 1]} is " in line
    assert "banking calendar" in line


async def test_the_flag_allows_at_most_31_days_ahead() -> None:
    ahead = (local_today() + timedelta(days=MAX_DAYS_AHEAD + 5)).isoformat()
    done = await collector("run", "--allow-future-date", "--date", ahead, env=env_for(NOWHERE))
    assert done.returncode == 2, done.stderr
    assert f"more than the {MAX_DAYS_AHEAD} allowed" in done.one_error_line()


async def test_a_future_pass_collects_nothing_without_the_flag_and_early_with_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    later = local_today() + timedelta(days=3)
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[later])
    env = env_for(database_url)

    refused = await collector("run", "--date", later.isoformat(), env=env)
    assert refused.returncode == 2, refused.stderr
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collection_runs") == 0
        assert await conn.fetchval("SELECT count(*) FROM charge_attempts") == 0

    done = await collector("run", "--allow-future-date", "--date", later.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT as_of FROM collection_runs") == later
        status = await conn.fetchval(
            "SELECT status FROM installments WHERE id = $1", lease.installment_ids[0]
        )
    assert status == "paid"


async def test_seed_takes_due_dates_up_to_a_year_ahead(
    pool: asyncpg.Pool, database_url: str
) -> None:
    env = env_for(database_url)
    too_far = local_today() + timedelta(days=SEED_MAX_DAYS_AHEAD + 5)
    refused = await collector(
        "seed", "--customers", "2", "--due-date", too_far.isoformat(), env=env
    )
    assert refused.returncode == 2, refused.stderr
    assert f"--due-date {too_far.isoformat()}" in refused.one_error_line()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM installments") == 0

    later = local_today() + timedelta(days=30)
    done = await collector("seed", "--customers", "2", "--due-date", later.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT min(due_on) FROM installments") == later
