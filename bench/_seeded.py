"""What both benchmarks start from: a fresh, migrated database seeded with one installment
per customer, each due on a given date."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import asyncpg

from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from collector.seed import seed_demo

# The embedded server the benchmarks run on: kept between runs (initdb once) and never deleted
# while it runs; each run gets a fresh database on it.
BENCH_SERVER_DIR = Path(__file__).resolve().parent.parent / ".collector" / "bench-server"


async def seeded_database(server_url: str, name: str, *, customers: int, due_on: date) -> str:
    """Create database ``name`` anew on the server, migrate and seed it; return its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        # The name is one of the benchmarks' own constants, never input.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url_of(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    async with open_pool(url, size=4) as pool:
        await seed_demo(pool, customers=customers, due_on=due_on, mix="ok", installments=1)
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE")
            # Flush what seeding (and any earlier run on this server) left dirty now, so a
            # checkpoint does not land in the middle of the measurement.
            await conn.execute("CHECKPOINT")
    return url
