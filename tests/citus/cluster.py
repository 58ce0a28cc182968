"""A database of one's own on a Citus cluster: for the Citus tests and the Citus bench."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from collector.db.migrate import migrate


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class ClusterUnavailable(Exception):
    """No usable Citus coordinator: the reason, for a skip or an error message."""


async def make_cluster_database(
    admin_url: str,
    database: str,
    shard_count: int,
    *,
    plain_first: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> str:
    """(Re)create ``database`` on every node of the cluster whose coordinator ``admin_url``
    reaches, register its nodes, migrate it (which places the tables) with ``shard_count``
    shards per distributed table; its URL.

    With ``plain_first``, the coordinator's database is first a plain PostgreSQL one:
    migrated before it has the extension, then given to ``plain_first`` (to write rows in
    it), and only then made a Citus database and migrated again, as a lessor's database that
    moves to Citus."""
    try:
        admin = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ClusterUnavailable(f"no Citus coordinator answers at {admin_url} ({exc})") from exc
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'citus'"):
            raise ClusterUnavailable(f"{admin_url} has no citus extension")
        workers = await admin.fetch(
            "SELECT nodename, nodeport FROM pg_dist_node"
            " WHERE noderole = 'primary' AND shouldhaveshards ORDER BY nodeport"
        )
    finally:
        await admin.close()
    if not workers:
        raise ClusterUnavailable(f"the coordinator at {admin_url} has no workers registered")
    nodes = [admin_url] + [_with_port(admin_url, w["nodename"], w["nodeport"]) for w in workers]
    # Citus does not create databases on the workers by itself (13.x): each node gets it.
    for node_url in nodes:
        conn = await asyncpg.connect(node_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(_with_database(node_url, database))
        try:
            if plain_first is not None and node_url == admin_url:
                await migrate(conn)
                await plain_first(conn)
            await conn.execute("CREATE EXTENSION citus")
        finally:
            await conn.close()
    url = _with_database(admin_url, database)
    conn = await asyncpg.connect(url)
    try:
        coordinator = urlsplit(admin_url)
        await conn.execute(
            "SELECT citus_set_coordinator_host($1, $2)",
            coordinator.hostname,
            coordinator.port or 5432,
        )
        for worker in workers:
            await conn.execute(
                "SELECT citus_add_node($1, $2)", worker["nodename"], worker["nodeport"]
            )
        # The README's settings: catalog reads without the shard-hiding filter (asyncpg's
        # type introspection took seconds per connection), the test's shard count.
        await conn.execute(f'ALTER DATABASE "{database}" SET citus.override_table_visibility = off')
        await conn.execute(f'ALTER DATABASE "{database}" SET citus.shard_count = {shard_count}')
    finally:
        await conn.close()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url
