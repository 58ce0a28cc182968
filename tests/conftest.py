from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from tests.pg import postgres_server

_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every coroutine test runs under anyio's plugin, on asyncio (asyncpg needs it).
    for item in items:
        if isinstance(item, pytest.Function) and _is_coroutine(item.obj):
            item.add_marker(pytest.mark.anyio)


def _is_coroutine(func: object) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("pg")) as url:
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
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(database_url, size=10) as pool:
        yield pool
