"""Apply ``sql/NNNN_*.sql`` in order, each once, recorded in ``schema_migrations``.

A session-level advisory lock serializes migrators, so two processes starting at once do not
collide: the second waits, then finds nothing left to do. A merged migration is never edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from collector.db.distribution import distribute
from collector.db.pool import Executor
from collector.db.queries import sql_dir
from collector.exceptions import MigrationError

# Arbitrary, fixed: the advisory lock key that every migrator of this schema takes.
MIGRATION_LOCK_KEY = 0x636F_6C6C_6D69_67  # "collmig"
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


def available_migrations() -> list[Migration]:
    """The migration files, in order; their numbers must run 1, 2, 3, ... without gaps."""
    found = []
    for path in sorted(sql_dir().glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {migration.path.name} breaks the numbering")
    return found


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def pending_migrations(conn: Executor) -> list[Migration]:
    """Migrations not yet applied to this database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m for m in available_migrations() if m.version not in applied]


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Bring the schema up to date; return the migrations applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        todo = await pending_migrations(conn)
        for migration in todo:
            sql = migration.path.read_text(encoding="utf-8")
            try:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
        # On Citus, every table the migrations made goes where distribution.py says (a no-op
        # on plain PostgreSQL, and once every table is placed).
        try:
            async with conn.transaction():
                await distribute(conn)
        except (asyncpg.PostgresError, LookupError) as exc:
            raise MigrationError(f"placing the tables on Citus failed: {exc}") from exc
        return todo
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
