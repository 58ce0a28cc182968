"""PostgreSQL stopped and started again under a ``collector run``: in the middle of a pass, and
in the middle of recording answers. The pass fails with one clear line (``collector: error:
...``, its causes at most) or recovers; the next pass finishes and closes the run row the lost
pass left ``running``; the audit is clean and the gateway's record is the ledger's.

The engine's database is a server of the suite's own (tests/chaos/pgcluster.py), so stopping
it disturbs no other test; the sandbox gateway keeps its charges on the suite's shared server
(``COLLECTOR_SANDBOX_DATABASE_URL``), as a real gateway is a system of its own: it goes on
taking charges while the engine's database is down, and those answers are what the engine
must not lose.

The daemon's portal through a restart too: while the database is away a manual payment is
answered 503 with nothing recorded, and once it is back every connection the daemon kept
open (all of them dead) is replaced as it is used: more payments at once than the pool
holds are all answered.

"In the middle of recording" is made exact rather than hoped for: the test takes an EXCLUSIVE
lock on ``money_movements``, waits until ``pg_stat_activity`` shows the recorder's statement
(attempts.record_outcomes) waiting on it, and stops the server then: the batch of answers
being recorded is lost with the server, while the sandbox holds every one of those charges.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from collector.db.queries import QUERIES
from collector.seed import seed_demo
from tests.chaos.conftest import Scale, long_form, new_seed
from tests.chaos.helpers import (
    Child,
    assert_audit_clean,
    assert_gateway_matches_ledger,
    assert_where_tokens_put_them,
    business_today,
    chaos_settings,
    child_env,
    free_port,
    pass_in_process,
    passes_until_resolved,
    run_collector,
    sandbox_record,
    start_collector,
    start_daemon,
    wait_until,
)
from tests.chaos.pgcluster import ChaosServer, chaos_server
from tests.chaos.storm import API_TOKEN, STORM_ATTEMPTS, make_overdue_leases

pytestmark = pytest.mark.chaos

# How long the server stays down at most while the child has not exited: a pass that neither
# fails nor recovers in this time is hung.
DOWN_S = 20


@pytest.fixture(scope="module")
def engine_server() -> Iterator[ChaosServer]:
    with chaos_server() as server:
        yield server


@dataclass
class Outage:
    where: str
    seed: int
    mode: str
    child: Child
    returncode: int
    total: int
    database_url: str
    sandbox_url: str
    next_pass_done: bool = False

    def __str__(self) -> str:
        box = "its own server" if self.sandbox_url != self.database_url else "the same database"
        return (
            f"PostgreSQL stopped ({self.mode}) in the middle of {self.where}, sandbox on {box},"
            f" seed {self.seed}"
            f" (COLLECTOR_CHAOS_SEED={self.seed})"
        )


async def _recorder_waiting(conn: asyncpg.Connection) -> bool:
    # The recorder's statement has reached the server and waits on the test's lock.
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND starts_with(query, $1))",
        QUERIES["attempts.record_outcomes"][:120],
    )
    return found


@asynccontextmanager
async def _databases(
    engine_server: ChaosServer, server_url: str, tag: str
) -> AsyncIterator[tuple[str, str]]:
    """A migrated engine database on the throwaway server, and a fresh database for the
    sandbox on the suite's shared server (dropped afterwards): their URLs."""
    engine_db, sandbox_db = f"chaos_engine_{tag}", f"chaos_sandbox_{tag}"
    admin = await asyncpg.connect(engine_server.url)
    await admin.execute(f'CREATE DATABASE "{engine_db}"')
    await admin.close()
    shared = await asyncpg.connect(server_url)
    await shared.execute(f'DROP DATABASE IF EXISTS "{sandbox_db}" WITH (FORCE)')
    await shared.execute(f'CREATE DATABASE "{sandbox_db}"')
    await shared.close()
    url = engine_server.url_of(engine_db)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield url, database_url_of(server_url, sandbox_db)
    shared = await asyncpg.connect(server_url)
    await shared.execute(f'DROP DATABASE IF EXISTS "{sandbox_db}" WITH (FORCE)')
    await shared.close()


@pytest.fixture(scope="module", params=["a pass", "recording"], ids=["mid-pass", "mid-recording"])
async def outage(
    request: pytest.FixtureRequest,
    engine_server: ChaosServer,
    server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Outage]:
    """Run the scenario once per place the server is stopped; the tests read what happened."""
    where: str = request.param
    seed = new_seed(request.node, f"outage in the middle of {where}")
    rng = random.Random(seed)
    scale = Scale(long_form(request.config))
    tag = f"{os.getpid()}_{re.sub(r'[^a-z]', '', where)}"
    async with _databases(engine_server, server_url, tag) as (url, sandbox_of_its_own):
        # The sandbox on a server of its own (the gateway takes charges while the engine's
        # database is down), or in the engine's database, the default (it goes down too).
        own = rng.random() < 0.5
        sandbox_url = sandbox_of_its_own if own else url

        total = scale(600, 10_000)
        async with open_pool(url) as pool:
            await seed_demo(
                pool, customers=total, due_on=business_today(), mix="demo", installments=1
            )
        env = child_env(
            url,
            COLLECTOR_SANDBOX_DATABASE_URL=sandbox_url,
            COLLECTOR_SANDBOX_LATENCY_MS="5",
            COLLECTOR_CONCURRENCY="32",
            COLLECTOR_BATCH_SIZE="100",
        )
        logs = tmp_path_factory.mktemp("outage")
        mode = rng.choice(["fast", "immediate"])
        stop_after = int(total * rng.uniform(0.1, 0.6))
        watch = await asyncpg.connect(url)
        child = await start_collector(["run", "--date", business_today().isoformat()], env, logs)
        try:

            async def recorded() -> bool:
                n: int = await watch.fetchval(
                    "SELECT count(*) FROM charge_attempts WHERE status <> 'pending'"
                )
                return n >= stop_after

            await wait_until(recorded, what=f"{stop_after} answers recorded", alive=child)
            if where == "recording":
                blocker = await asyncpg.connect(url)
                await blocker.execute("BEGIN; LOCK TABLE money_movements IN EXCLUSIVE MODE")
                await wait_until(
                    lambda: _recorder_waiting(watch), what="the recorder mid-statement", alive=child
                )
            await watch.close(timeout=1)
            stopped_at = time.monotonic()
            await anyio.to_thread.run_sync(engine_server.stop, mode)
            with anyio.move_on_after(DOWN_S):
                await child.process.wait()
            down_s = time.monotonic() - stopped_at
            await anyio.to_thread.run_sync(engine_server.start)
            returncode = await child.wait()
            print(
                f"stopped ({mode}) after {stop_after} answers, in the middle of {where}, the"
                f" sandbox {'on its own server' if own else 'in the same database'};"
                f" the child exited {returncode}, the server was down {down_s:.1f} s"
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                if not engine_server.running:
                    engine_server.start()
                await child.kill()
            raise
        yield Outage(
            where=where,
            seed=seed,
            mode=mode,
            child=child,
            returncode=returncode,
            total=total,
            database_url=url,
            sandbox_url=sandbox_url,
        )


async def test_after_a_database_outage_the_next_pass_finishes_exactly_once(
    outage: Outage,
) -> None:
    # The pass failed (a non-zero exit, not a hang), or recovered and completed.
    assert outage.returncode is not None, outage
    today = business_today()
    settings = chaos_settings(outage.database_url)
    async with open_pool(outage.database_url) as pool:
        # The next pass (in this process: a child would spend seconds importing) finishes,
        # and takes over what the lost pass left; then passes until nothing is unknown.
        await pass_in_process(pool, settings, today, sandbox_url=outage.sandbox_url)
        outage.next_pass_done = True
        await passes_until_resolved(
            pool,
            lambda: pass_in_process(pool, settings, today, sandbox_url=outage.sandbox_url),
        )
        await assert_where_tokens_put_them(pool, outage.total)
        await assert_audit_clean(pool)
        box = await asyncpg.connect(outage.sandbox_url)
        try:
            record = await sandbox_record(box)
        finally:
            await box.close()
        assert record, "the sandbox took no charge: nothing tested"
        await assert_gateway_matches_ledger(pool, record, gateways=["sandbox_card", "sandbox_ach"])


async def test_a_pass_that_loses_its_database_fails_with_one_clear_line(outage: Outage) -> None:
    # A pass that recovered has nothing to explain: it printed its summary.
    if outage.returncode == 0:
        assert "collection pass" in outage.child.stdout(), outage
        return
    stderr = outage.child.stderr()
    # Past the JSON log lines: one "collector: error:" line, and at most its causes.
    plain = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert plain and plain[0].startswith("collector: error:"), f"{outage}: {stderr[-3000:]}"
    assert all(line.startswith("  caused by:") for line in plain[1:]), f"{outage}: {plain}"


async def test_the_run_row_of_a_pass_that_lost_its_database_is_closed(
    outage: Outage, tmp_path: Path
) -> None:
    if not outage.next_pass_done:
        env = child_env(outage.database_url, COLLECTOR_SANDBOX_DATABASE_URL=outage.sandbox_url)
        done = await run_collector(["run", "--date", business_today().isoformat()], env, tmp_path)
        assert done.returncode == 0, done.stderr()[-3000:]
    conn = await asyncpg.connect(outage.database_url)
    try:
        running = await conn.fetch("SELECT id, pid FROM collection_runs WHERE status = 'running'")
    finally:
        await conn.close()
    assert not running, f"{outage}: run rows still 'running': {[dict(r) for r in running]}"


# What a manual payment may answer once the daemon has its database: taken (201), in flight
# or in doubt (202), declined (402); never a 5xx.
_ANSWERED = {201, 202, 402}


async def test_the_daemon_serves_again_on_every_kept_connection_after_its_database_restarts(
    engine_server: ChaosServer, server_url: str, tmp_path: Path, rng: random.Random
) -> None:
    # The daemon keeps all its pool's connections open (open_pool(keep_open=True)): after a
    # restart every one of them is dead, and each must be replaced as it is next used.
    pool_size = 4
    tag = f"{os.getpid()}_daemon"
    async with _databases(engine_server, server_url, tag) as (url, sandbox_url):
        async with open_pool(url) as pool:
            leases = await make_overdue_leases(pool, 3 * pool_size + 2, rng, business_today())
        env = child_env(
            url,
            COLLECTOR_API_TOKENS=API_TOKEN,
            COLLECTOR_SANDBOX_DATABASE_URL=sandbox_url,
            COLLECTOR_POOL_SIZE=str(pool_size),
            COLLECTOR_MANUAL_PAY_MAX_ATTEMPTS=STORM_ATTEMPTS,
        )
        port = free_port()
        daemon = await start_daemon(env, tmp_path / "logs", port=port, schedule=False)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=30,
            ) as http:

                async def pay(lease_id: int, key: str) -> httpx.Response:
                    return await http.post(
                        f"/v1/leases/{lease_id}/payments", json={}, headers={"Idempotency-Key": key}
                    )

                first = await pay(leases[0].lease_id, "before")
                assert first.status_code in _ANSWERED, first.text

                await anyio.to_thread.run_sync(engine_server.stop, "fast")
                try:
                    away = await pay(leases[1].lease_id, "during")
                    assert away.status_code == 503, away.text
                    assert (await http.get("/readyz")).status_code == 503
                finally:
                    await anyio.to_thread.run_sync(engine_server.start)

                # The same key again: nothing of it was recorded while the database was away.
                again = await pay(leases[1].lease_id, "during")
                assert again.status_code in _ANSWERED, again.text
                # More payments at once than the pool holds: every connection, each of them
                # dead after the restart, is used (and so replaced) at least once.
                answers: list[httpx.Response] = []

                async def one(lease_id: int) -> None:
                    answers.append(await pay(lease_id, "after"))

                async with anyio.create_task_group() as tg:
                    for lease in leases[2:]:
                        tg.start_soon(one, lease.lease_id)
                assert [a.status_code for a in answers if a.status_code not in _ANSWERED] == []
                assert len(answers) == len(leases) - 2
                assert (await http.get("/readyz")).status_code == 200
        finally:
            with anyio.CancelScope(shield=True):
                await daemon.kill()
        async with open_pool(url) as pool:
            await assert_audit_clean(pool)
            # Nothing is pending for good: every payment the portal answered has its outcome.
            pending = await pool.fetchval("SELECT count(*) FROM payments WHERE status = 'pending'")
            assert pending == 0
            # Payments the sandbox left in doubt (202) are resolved by the next passes' lookups.
            settings = chaos_settings(url)
            today = business_today()
            await passes_until_resolved(
                pool, lambda: pass_in_process(pool, settings, today, sandbox_url=sandbox_url)
            )
            # And the gateway took each key at most once, as the ledger says (no double charge
            # across the restart).
            box = await asyncpg.connect(sandbox_url)
            try:
                record = await sandbox_record(box)
            finally:
                await box.close()
            assert record, "the sandbox took no charge: nothing tested"
            await assert_gateway_matches_ledger(
                pool, record, gateways=["sandbox_card", "sandbox_ach"]
            )
