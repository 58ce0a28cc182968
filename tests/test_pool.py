"""The engine's pool: what a connection brings back when it is released."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import anyio
import asyncpg

from collector.db.pool import (
    FEW_ROWS,
    SessionConnection,
    execute_counted,
    fetch_planned,
    init_connection,
    open_pool,
    took_session_lock,
)
from collector.db.routing import one_node, shard_groups

KEY = (4_242, 7)


async def backend_query(server: asyncpg.Pool, pid: int) -> str:
    query: str = await server.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    return query


async def test_a_session_lock_its_user_left_behind_is_freed_when_the_connection_comes_back(
    database_url: str,
) -> None:
    async with open_pool(database_url, size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", *KEY)
            took_session_lock(conn)
            # Its user dies here without unlocking (a cancelled pass).
        other = await asyncpg.connect(database_url)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *KEY)
        finally:
            await other.close()
        # Once freed, the connection comes back as it is again.
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("SELECT 1 AS after_unlock")
        async with open_pool(database_url, size=1) as watcher:
            assert await backend_query(watcher, pid) == "SELECT 1 AS after_unlock"


async def test_an_ordinary_connection_comes_back_without_a_reset_round_trip(
    database_url: str,
) -> None:
    async with open_pool(database_url, size=1) as pool:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("SELECT 42 AS last_statement")
        async with open_pool(database_url, size=1) as watcher:
            # The last statement its session ran is the user's, not a reset query.
            assert await backend_query(watcher, pid) == "SELECT 42 AS last_statement"
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid
            assert not await conn.fetchval("SELECT pg_is_in_recovery()")


async def test_asking_whether_the_pool_is_citus_takes_no_connection(database_url: str) -> None:
    # A repository handed the pool asks routing which backend it is; with every connection
    # held in a transaction (a pass under load), asking must not wait for one.
    async with (
        open_pool(database_url, size=1) as pool,
        pool.acquire() as conn,
        conn.transaction(),
    ):
        with anyio.fail_after(2):
            assert await one_node(pool)
            assert await shard_groups(pool, [3, 1, 3]) == [[1, 3]]


async def test_a_kept_open_pool_opens_every_connection_at_once(database_url: str) -> None:
    # The daemon's: a portal request never waits for a session to be opened.
    async with open_pool(database_url, size=4, keep_open=True) as pool:
        assert pool.get_size() == 4
        assert pool.get_idle_size() == 4
    async with open_pool(database_url, size=4) as pool:
        # A pass's or a command's: sessions open as they are needed.
        assert pool.get_size() == 1


class _CountingIntrospection(SessionConnection):
    """A connection that counts asyncpg's type introspection queries."""

    __slots__ = ("introspections",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.introspections = 0

    async def _introspect_types(self, *args: Any) -> Any:
        self.introspections += 1
        return await super()._introspect_types(*args)


async def test_a_new_connection_learns_the_array_types_in_one_introspection(
    database_url: str,
) -> None:
    # Without it, each statement that first binds or returns one of these arrays on a
    # connection cost one more introspection round trip (two or three in a first manual
    # payment).
    conn = await asyncpg.connect(database_url, connection_class=_CountingIntrospection)
    try:
        await init_connection(conn)
        learned = conn.introspections
        assert learned == 1
        row = await conn.fetchrow(
            "SELECT $1::bigint[] AS ids, $2::integer[] AS n, $3::boolean[] AS flags,"
            " $4::date[] AS days, $5::timestamptz[] AS at, ARRAY[$6::jsonb] AS bodies",
            [1, 2],
            [3],
            [True],
            [date(2026, 12, 4)],
            [datetime(2026, 12, 4, tzinfo=UTC)],
            {"a": 1},
        )
        assert row is not None and row["bodies"] == [{"a": 1}]
        assert conn.introspections == learned
    finally:
        await conn.close()


_FEW_ROWS_QUERY = "SELECT x FROM unnest($1::bigint[]) AS x ORDER BY x  -- fetch_planned test"


async def _executions(conn: asyncpg.Connection) -> list[int]:
    """How many times each of this session's prepared statements of the test query ran."""
    rows = await conn.fetch(
        "SELECT generic_plans + custom_plans AS runs FROM pg_prepared_statements"
        " WHERE statement = $1 ORDER BY prepare_time",
        _FEW_ROWS_QUERY,
    )
    return [row["runs"] for row in rows]


async def test_a_call_for_few_rows_runs_the_cached_statement(database_url: str) -> None:
    async with open_pool(database_url, size=1) as pool, pool.acquire() as conn:
        for _ in range(3):
            rows = await fetch_planned(conn, _FEW_ROWS_QUERY, [2, 1], rows=2)
            assert [r["x"] for r in rows] == [1, 2]
        # One statement, prepared once and run three times: one round trip a call.
        assert await _executions(conn) == [3]


async def test_a_batch_call_never_runs_on_the_few_rows_statement(database_url: str) -> None:
    async with open_pool(database_url, size=1) as pool, pool.acquire() as conn:
        await fetch_planned(conn, _FEW_ROWS_QUERY, [1], rows=1)
        batch = list(range(FEW_ROWS + 1))
        for _ in range(2):
            rows = await fetch_planned(conn, _FEW_ROWS_QUERY, batch, rows=len(batch))
            assert len(rows) == len(batch)
            rows = await fetch_planned(conn, _FEW_ROWS_QUERY, batch)
            assert len(rows) == len(batch)
        # The cached statement (the first prepared) ran once: each batch call prepared a
        # statement of its own, planned for its values, not on the plan a few rows chose.
        assert (await _executions(conn))[0] == 1


async def test_a_counted_statement_says_how_many_rows_it_wrote_and_returns_none(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE counted (n integer PRIMARY KEY) ON COMMIT DROP")
        insert = "INSERT INTO counted SELECT generate_series(1, $1::integer) ON CONFLICT DO NOTHING"
        assert await execute_counted(conn, insert, 3) == 3
        # Two of five are new: the ones that conflicted are not counted.
        assert await execute_counted(conn, insert, 5) == 2
        assert await execute_counted(conn, "UPDATE counted SET n = n + 10 WHERE n > $1", 3) == 2
        assert await execute_counted(conn, "DELETE FROM counted WHERE n < $1", 0) == 0
