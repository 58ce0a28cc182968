"""The engine's tests on a Citus cluster: ``uv run pytest -m citus``.

Every test under ``tests/citus/`` is marked ``citus``. It runs only when the session selects
the marker (a plain ``uv run pytest`` skips it, saying how to run it) and a Citus coordinator
answers at ``COLLECTOR_TEST_CITUS_URL`` (default ``postgresql://postgres@127.0.0.1:9700/
postgres``, the README's 3-node loopback cluster); otherwise it is skipped with the reason.

The session makes one database on every node of the cluster, registers the workers, and
migrates it (tests/citus/cluster.py) (``collector migrate`` places the tables: collector/db/distribution.py). Each
test then gets that database emptied (every row deleted) in place of the plain suite's fresh copy: ``database_url`` is overridden here, so the root
conftest's ``pool`` (with its closing audit), ``settings`` and ``gateways`` fixtures serve
Citus tests unchanged, and a module here can re-run a plain test module's tests on Citus by
importing them.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator

import anyio
import asyncpg
import pytest

from collector.db.distribution import TABLES
from tests.citus.cluster import ClusterUnavailable, make_cluster_database

DEFAULT_URL = "postgresql://postgres@127.0.0.1:9700/postgres"
DATABASE = "collector_citus_test"
# Few shards keep TRUNCATE between tests quick; more than one per worker keeps every test's
# batches split across shards and nodes, as in production.
SHARD_COUNT = 8

HOW = "README, Scaling past one database: build Citus, start the cluster, `uv run pytest -m citus`"


def selected(config: pytest.Config) -> bool:
    """Whether the session's marker expression selects the ``citus`` marker."""
    markexpr = str(config.getoption("markexpr", "") or "")
    return re.search(r"(?<!not )\bcitus\b", markexpr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(os.path.dirname(__file__)):
            item.add_marker(pytest.mark.citus)
            if not selected(config):
                item.add_marker(pytest.mark.skip(reason=f"a Citus test: {HOW}"))


@pytest.fixture(scope="session")
def citus_admin_url(request: pytest.FixtureRequest) -> str:
    """The cluster's coordinator, its ``postgres`` database."""
    if not selected(request.config):
        pytest.skip(f"a Citus test: {HOW}")
    return os.environ.get("COLLECTOR_TEST_CITUS_URL", DEFAULT_URL)


@pytest.fixture(scope="session")
def citus_url(citus_admin_url: str) -> Iterator[str]:
    """The migrated, distributed test database on the cluster."""
    try:
        yield anyio.run(make_cluster_database, citus_admin_url, DATABASE, SHARD_COUNT)
    except ClusterUnavailable as exc:
        pytest.skip(f"{exc}; {HOW}")


# The sandbox gateways' own schema (local to the coordinator, made by the gateways when they
# open): dropped, so that a test starts as on a fresh plain database, where the sandbox is
# there only if a sandbox gateway opened (the audit compares it with the ledger only then).
_DROP_SANDBOX = "DROP SCHEMA IF EXISTS sandbox CASCADE"
# The journal refuses DELETE (its append-only trigger, on the table and on each shard:
# Citus does not carry ENABLE/DISABLE TRIGGER to the shards); the test's owner turns it off.
_JOURNAL_TRIGGERS = "ALTER TABLE money_movements {action} TRIGGER USER"
_SHARD_TRIGGERS = (
    "SELECT run_command_on_shards('money_movements', 'ALTER TABLE %s {action} TRIGGER USER')"
)


@pytest.fixture
async def database_url(citus_url: str) -> AsyncIterator[str]:
    """The cluster's test database, emptied for this test (replaces the plain suite's fresh
    database per test)."""
    conn = await asyncpg.connect(citus_url)
    try:
        # DELETE, referencing tables first (the map's order reversed): a TRUNCATE of every
        # shard took 6.5 s a test, this under one. Each step on its own: run_command_on_shards
        # reaches the shards over connections of its own, which would wait for a transaction
        # of this one that holds the table. Ids are not restarted: no Citus test counts on
        # them.
        await conn.execute("SET citus.enable_unsafe_triggers = on")
        await conn.execute(_JOURNAL_TRIGGERS.format(action="DISABLE"))
        await conn.execute(_SHARD_TRIGGERS.format(action="DISABLE"))
        try:
            emptied = [
                table.name
                for table in reversed(TABLES)
                if await conn.execute(f"DELETE FROM {table.name}") != "DELETE 0"
            ]
            await conn.execute(_DROP_SANDBOX)
        finally:
            await conn.execute(_SHARD_TRIGGERS.format(action="ENABLE"))
            await conn.execute(_JOURNAL_TRIGGERS.format(action="ENABLE"))
        if emptied:
            # A fresh database's tables were never analyzed: the planner sizes them by their
            # pages and row width. An emptied one keeps the last test's statistics, a few rows
            # on a page, which it scales to the next test's pages: hundreds of rows read as a
            # handful, and the closing audit, planned as nested loops over them, ran for a
            # minute (test_concurrent_passes...[2] on Citus). VACUUM of the emptied table
            # (Citus runs it on every shard) records 0 pages, which sends the planner back to
            # pages and width.
            await conn.execute(f"VACUUM {', '.join(emptied)}")
    finally:
        await conn.close()
    yield citus_url
