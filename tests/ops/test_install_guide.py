"""ops/README.md's install guide, run where a test can run it: the role and database SQL as
written, on the embedded PostgreSQL, then the first migrate and one pass as that role (not a
superuser), through the env file's URL; and the failure the guide prevents, a database the
role does not own, is one clear error line."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.cli.commands import collector, env_for
from tests.ops.helpers import OPS

GUIDE = OPS / "README.md"


def _block(marker: str) -> str:
    """The fenced block of the guide whose first line is ``marker``."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL):
        if block.startswith(marker):
            return str(block)
    raise AssertionError(f"no block starting with {marker!r} in ops/README.md")


def _statements(sql: str) -> list[str]:
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def test_the_guide_assumes_no_sudo() -> None:
    commands = re.findall(r"```console\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    assert commands
    for block in commands:
        assert "sudo " not in block, block


@pytest.fixture
async def guide_role(server_url: str) -> AsyncIterator[tuple[str, str]]:
    """The guide's role and database, under a name of this test's own; dropped afterwards."""
    name = f"collector_guide_{os.getpid()}"
    password = secrets.token_hex(12)
    sql = re.sub(r"\bcollector\b", name, _block("-- guide: create-role-and-database"))
    sql = sql.replace("CHANGE_ME", password)
    admin = await asyncpg.connect(server_url)
    try:
        for statement in _statements(sql):
            await admin.execute(statement)
        yield name, password
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}_other" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


def _url(server_url: str, role: str, password: str, database: str) -> str:
    """The env file's COLLECTOR_DATABASE_URL, pointed at the test's server."""
    [line] = [
        line
        for line in _block("# guide: env").splitlines()
        if line.startswith("COLLECTOR_DATABASE_URL=")
    ]
    template = urlsplit(line.split("=", 1)[1])
    server = urlsplit(server_url)
    assert (template.username, template.password) == ("collector", "CHANGE_ME")
    # The test's server may listen on a Unix socket only (host=... in the query).
    where = f"{server.hostname}:{server.port}" if server.hostname else ""
    return template._replace(
        netloc=f"{role}:{password}@{where}", path=f"/{database}", query=server.query
    ).geturl()


async def test_the_guides_role_and_database_migrate_and_run_a_pass(
    server_url: str, guide_role: tuple[str, str]
) -> None:
    role, password = guide_role
    url = _url(server_url, role, password, role)
    conn = await asyncpg.connect(url)
    try:
        # The engine runs as an ordinary role: nothing in it needs a superuser.
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    finally:
        await conn.close()
    env = env_for(url)
    migrated = await collector("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema is up to date" in migrated.stdout
    seeded = await collector("seed", "--customers", "3", env=env)
    assert seeded.returncode == 0, seeded.stderr
    ran = await collector("run", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    assert '"due": 3' in ran.stdout.splitlines()[-1]
    audited = await collector("audit", env=env)
    assert audited.returncode == 0, audited.stdout + audited.stderr


async def test_a_database_the_role_does_not_own_fails_migrate_with_one_line(
    server_url: str, guide_role: tuple[str, str]
) -> None:
    role, password = guide_role
    other = f"{role}_other"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{other}"')  # owned by the superuser
    finally:
        await admin.close()
    done = await collector("migrate", env=env_for(_url(server_url, role, password, other)))
    assert done.returncode == 1
    assert "permission denied" in done.one_error_line()
    assert "Traceback" not in done.stderr
