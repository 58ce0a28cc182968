"""What every benchmark starts from: a fresh, migrated database on the benchmarks' embedded
server, seeded with one installment per customer, each due on a given date, every customer's
primary method a card of one gateway that approves (``sandbox_card_ok``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import anyio
import asyncpg

from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from collector.db.seed import DemoCustomer, insert_customers

# The embedded server the benchmarks run on: kept between runs (initdb once) and never deleted
# while it runs; each run gets fresh databases on it.
BENCH_SERVER_DIR = Path(__file__).resolve().parent.parent / ".collector" / "bench-server"

# Customers per seeding transaction, and transactions at once: memory stays that of a few
# chunks whatever the count (1,000,000 seeds in bounded memory).
SEED_CHUNK = 5_000
SEED_CONNECTIONS = 2


def progress_printer(label: str, total: int) -> Callable[[int], None]:
    """A progress callback printing ``label: done/total`` to stderr (a line each tenth when
    stderr is not a terminal)."""
    done = 0
    step = max(1, total // 10)
    next_line = step
    tty = sys.stderr.isatty()
    started = time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, next_line
        done += n
        elapsed = time.monotonic() - started
        if tty:
            end = "\n" if done >= total else ""
            print(f"\r{label}: {done:,}/{total:,} ({elapsed:.0f}s)", end=end, file=sys.stderr)
        elif done >= next_line or done >= total:
            print(f"{label}: {done:,}/{total:,} ({elapsed:.0f}s)", file=sys.stderr)
            next_line = done + step

    return advance


def _customer(i: int, due_on: date, gateway: str) -> DemoCustomer:
    return DemoCustomer(
        email=f"bench-{i}@example.com",
        name=f"Bench Customer {i}",
        kind="card",
        gateway=gateway,
        token="sandbox_card_ok",
        brand="Visa",
        bank_name=None,
        last4=f"{(i * 7919) % 10_000:04d}",
        store="Bench Store",
        order_details={"item": "sofa", "sku": f"SKU-{i % 997:04d}", "quantity": 1},
        agreement_ref=f"AGR-BENCH-{i:08d}",
        # $25.00 to $124.99 an installment, as the demo data.
        installment_cents=2_500 + (i * 3_331) % 10_000,
        first_due_on=due_on,
    )


async def seed_due(
    pool: asyncpg.Pool,
    *,
    customers: int,
    due_on: date,
    gateway: str,
    progress: Callable[[int], None] | None = None,
    first: int = 0,
) -> None:
    """Insert ``customers`` customers, each with one lease and one installment due on
    ``due_on``, paid by a card of ``gateway``; in chunks, a few transactions at once. They are
    numbered from ``first`` (a second seed into one database starts after the first's). The
    caller analyzes (seeded_database runs VACUUM ANALYZE)."""
    last = first + customers
    starts = iter(range(first, last, SEED_CHUNK))

    async def seeder() -> None:
        async with pool.acquire() as conn:
            for start in starts:
                end = min(start + SEED_CHUNK, last)
                chunk = [_customer(i, due_on, gateway) for i in range(start, end)]
                await insert_customers(conn, chunk, installments=1)
                if progress is not None:
                    progress(len(chunk))

    async with anyio.create_task_group() as tg:
        for _ in range(SEED_CONNECTIONS):
            tg.start_soon(seeder)


async def _recreate(server_url: str, name: str, *, template: str | None = None) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        # The names are the benchmarks' own constants, never input.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template is None:
            await admin.execute(f'CREATE DATABASE "{name}"')
        else:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            # Flush the copy now, so a checkpoint does not land in the middle of a measurement.
            await admin.execute("CHECKPOINT")
    finally:
        await admin.close()


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seeded_database(
    server_url: str,
    name: str,
    *,
    customers: int,
    due_on: date,
    gateway: str = "sandbox_card",
    progress: Callable[[int], None] | None = None,
) -> str:
    """Create database ``name`` anew on the server, migrate and seed it; return its URL."""
    await _recreate(server_url, name)
    url = database_url_of(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    async with open_pool(url, size=SEED_CONNECTIONS + 1) as pool:
        await seed_due(pool, customers=customers, due_on=due_on, gateway=gateway, progress=progress)
        async with pool.acquire() as held:
            await held.execute("VACUUM ANALYZE")
            # Flush what seeding (and any earlier run on this server) left dirty now, so a
            # checkpoint does not land in the middle of the measurement.
            await held.execute("CHECKPOINT")
    return url


async def copy_database(server_url: str, template: str, name: str) -> str:
    """Create database ``name`` anew as a copy of ``template`` (same rows, same pages, same
    planner statistics); return its URL. Nothing may be connected to the template."""
    await _recreate(server_url, name, template=template)
    return database_url_of(server_url, name)
