"""What the outbox's money events cost a pass: one sandbox pass over N installments due, on
databases seeded alike, without them and with them, alternately. Without: the journal's
outbox trigger disabled and the function the batch paths call to write them
(outbox_money_events_v1, sql/0016) made to write nothing, in that bench database only.

    uv run python bench/outbox_cost.py --installments 10000 [--rounds 2]

Each round seeds a fresh database on the test suite's embedded server, writes the day's
notices (timed on their own), then runs one pass (sandbox gateways, latency 0, no audit).
Last line: ``without_s=<median> with_s=<median> ratio=<with/without>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from pathlib import Path

import anyio
import asyncpg

from collector.config import Settings
from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from collector.gateways.base import GatewayContext
from collector.gateways.registry import open_gateways
from collector.jobs.collect import run_pass
from collector.jobs.notices import write_due_notices
from collector.seed import seed_demo
from tests.pg import postgres_server

DAY = date(2026, 11, 2)
NO_MONEY_EVENTS = """
CREATE OR REPLACE FUNCTION outbox_money_events_v1(p_attempts bigint[]) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$
"""
SERVER = Path(__file__).resolve().parent.parent / ".collector" / "test-server"


async def one_pass(server: str, name: str, *, trigger: bool, installments: int) -> float:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url_of(server, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        if not trigger:
            await conn.execute("ALTER TABLE money_movements DISABLE TRIGGER money_movements_outbox")
            await conn.execute(NO_MONEY_EVENTS)
    finally:
        await conn.close()
    settings = Settings(database_url=url, audit_after_pass=False)  # type: ignore[arg-type]
    async with open_pool(url, size=10) as pool:
        await seed_demo(pool, customers=installments, due_on=DAY, mix="ok", installments=1)
        await pool.execute("ANALYZE")
        started = time.monotonic()
        await write_due_notices(pool, settings, as_of=DAY)
        print(f"  notices: {time.monotonic() - started:.2f} s", flush=True)
        context = lambda n: GatewayContext(name=n, database_url=url)  # noqa: E731
        async with open_gateways(settings.gateways, context) as gateways:
            started = time.monotonic()
            await run_pass(pool, gateways, settings, as_of=DAY)
            took = time.monotonic() - started
        events = await pool.fetchval("SELECT count(*) FROM outbox_events")
    print(f"trigger={trigger} pass_s={took:.2f} events={events}", flush=True)
    return took


async def main(installments: int, rounds: int) -> None:
    without: list[float] = []
    with_trigger: list[float] = []
    with postgres_server(SERVER) as server:
        for n in range(rounds):
            without.append(
                await one_pass(
                    server, f"outbox_cost_{n}_0", trigger=False, installments=installments
                )
            )
            with_trigger.append(
                await one_pass(
                    server, f"outbox_cost_{n}_1", trigger=True, installments=installments
                )
            )
    a, b = statistics.median(without), statistics.median(with_trigger)
    print(f"without_s={a:.2f} with_s={b:.2f} ratio={b / a:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installments", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    anyio.run(main, args.installments, args.rounds)
