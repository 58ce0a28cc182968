from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import asyncpg
import pytest

from collector.config import Settings
from collector.db.audit import run_audit
from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from collector.gateways.base import Gateway, GatewayContext
from collector.gateways.registry import open_gateways
from tests.pg import postgres_server

_counter = itertools.count()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# The embedded server's home for tests: stable, so initdb runs once per checkout, and outside
# pytest's basetemp, whose rotation could delete a running server's data under it.
EMBEDDED_TEST_DIR = Path(__file__).resolve().parent.parent / ".collector" / "test-server"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with postgres_server(EMBEDDED_TEST_DIR) as url:
        yield url


async def _admin(server_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(server_url)


@pytest.fixture(scope="session")
def template_name(server_url: str) -> str:
    """A migrated database that every test clones (CREATE DATABASE ... TEMPLATE)."""
    import anyio

    name = f"collector_template_{os.getpid()}"

    async def build() -> None:
        admin = await _admin(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(database_url_of(server_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    anyio.run(build)
    return name


@pytest.fixture
async def database_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"collector_test_{os.getpid()}_{next(_counter)}"
    admin = await _admin(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    finally:
        await admin.close()
    yield database_url_of(server_url, name)
    admin = await _admin(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[asyncpg.Pool]:
    """The test's database; when the test is done, the ledger audit must find it clean (every
    test that moves money ends with the audit), unless it is marked ``ledger_left_dirty``."""
    async with open_pool(database_url, size=10) as pool:
        yield pool
        if request.node.get_closest_marker("ledger_left_dirty") is None and await pool.fetchval(
            # Only a test that moved money has a ledger to audit.
            "SELECT EXISTS (SELECT 1 FROM charge_attempts)"
            " OR EXISTS (SELECT 1 FROM money_movements)"
            " OR EXISTS (SELECT 1 FROM needs_attention)"
            " OR EXISTS (SELECT 1 FROM installments WHERE status <> 'scheduled'"
            " OR paid_cents <> 0 OR in_flight_cents <> 0"
            " OR next_attempt_on IS DISTINCT FROM due_on)"
        ):
            rules = request.node.get_closest_marker("audit_rules")
            report = await run_audit(pool, **({"card_rules": rules.args[0]} if rules else {}))
            assert report.clean, "the ledger audit is not clean after the test: " + "; ".join(
                v.message for found in report.violations.values() for v in found
            )


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Engine settings for tests: the test's database, zero sandbox latency, small batches."""
    return Settings(
        database_url=database_url,  # type: ignore[arg-type]
        batch_size=50,
        concurrency=8,
        sandbox_latency_ms=0,
        gateway_timeout_s=5,
    )


def gateway_context(url: str) -> Callable[[str], GatewayContext]:
    def make(name: str) -> GatewayContext:
        return GatewayContext(name=name, database_url=url)

    return make


@pytest.fixture
async def gateways(database_url: str, settings: Settings) -> AsyncIterator[Mapping[str, Gateway]]:
    """The sandbox card and ACH gateways, keeping their charges in the test's database."""
    async with open_gateways(settings.gateways, gateway_context(database_url)) as opened:
        yield opened
