"""The engine's pool: what a connection brings back when it is released."""

from __future__ import annotations

import anyio
import asyncpg

from collector.db.pool import open_pool, took_session_lock
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
