"""Every failure, at start or mid-pass, ends in one line on stderr and a non-zero exit, with the
pass's run row closed: by the pass itself ('failed', with its reason) when the database is
still there, else by the next pass ('abandoned')."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path

import anyio
import asyncpg
import pytest
from anyio.abc import Process

from collector.db.embedded import database_url_of
from collector.gateways.sandbox import sandbox_charge_counts
from collector.seed import seed_demo
from tests.cli.commands import Done, collector, env_for

TODAY = date(2026, 11, 26)
DUE = 1_500
# Charges take 20 ms each, 8 at a time: the pass takes seconds, so the fault it meets when
# its first answers are recorded always lands with most of the due set still to claim.
SLOW = {
    "COLLECTOR_SANDBOX_LATENCY_MS": "20",
    "COLLECTOR_CONCURRENCY": "8",
    "COLLECTOR_BATCH_SIZE": "100",
}
FIRST_ANSWERS = 50

# A statement trigger on the test's database: NOTIFY once the pass has recorded its first
# answers. The test waits for that event instead of polling or sleeping.
_NOTIFY_WHEN_ANSWERED = """
CREATE FUNCTION test_answers_recorded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM charge_attempts WHERE status = 'succeeded') >= {n} THEN
        PERFORM pg_notify('answers_recorded', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_answers_recorded AFTER UPDATE ON charge_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION test_answers_recorded();
"""

# The child's sessions: every one opened on this database since it started, but ours.
_TERMINATE_CHILD = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_start >= $1
"""


@asynccontextmanager
async def _pass_in_a_child(
    database_url: str, conn: asyncpg.Connection
) -> AsyncIterator[tuple[Process, datetime]]:
    """Start ``collector run`` on the due set and return once it has recorded answers."""
    await conn.execute(_NOTIFY_WHEN_ANSWERED.format(n=FIRST_ANSWERS))
    answered = anyio.Event()
    await conn.add_listener("answers_recorded", lambda *_: answered.set())
    started_at: datetime = await conn.fetchval("SELECT clock_timestamp()")
    proc = await anyio.open_process(
        [sys.executable, "-m", "collector", "run", "--date", TODAY.isoformat()],
        env=env_for(database_url, **SLOW),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with proc:
        try:
            with anyio.fail_after(90):
                await answered.wait()
            yield proc, started_at
        finally:
            if proc.returncode is None:
                proc.kill()


async def _finish(proc: Process) -> Done:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    with anyio.fail_after(60):
        async for chunk in proc.stderr:
            err += chunk
        async for chunk in proc.stdout:
            out += chunk
        code = await proc.wait()
    return Done(code, out.decode(), err.decode())


async def _runs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, status, error, finished_at FROM collection_runs ORDER BY id"
    )


async def _next_pass_finishes_the_work(pool: asyncpg.Pool, database_url: str) -> None:
    done = await collector(
        "run", "--date", TODAY.isoformat(), "--json", env=env_for(database_url, **SLOW)
    )
    assert done.returncode == 0, done.stderr
    async with pool.acquire() as conn:
        statuses = dict(await conn.fetch("SELECT status, count(*) FROM installments GROUP BY 1"))
        counts = await sandbox_charge_counts(conn)
    assert statuses == {"paid": DUE}
    assert len(counts) == DUE and set(counts.values()) == {1}


async def test_the_database_dropping_the_pass_mid_way_is_one_line_and_a_failed_run(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await seed_demo(pool, customers=DUE, due_on=TODAY, mix="ok", installments=1)
    conn = await asyncpg.connect(database_url)
    try:
        async with _pass_in_a_child(database_url, conn) as (proc, started_at):
            assert await conn.fetchval(_TERMINATE_CHILD, started_at) > 0
            done = await _finish(proc)
        assert done.returncode == 1, done.stderr
        line = done.one_error_line()
        assert "lost the database connection" in line
        assert "ExceptionGroup" not in line
        [run] = await _runs(conn)
    finally:
        await conn.close()
    # The database was still there: the pass closed its own row, with the reason.
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert "lost the database connection" in run["error"]
    failed = [e for e in done.events if e["event"] == "pass_failed"]
    assert len(failed) == 1 and failed[0]["error"] == run["error"]
    await _next_pass_finishes_the_work(pool, database_url)


async def test_a_pass_that_cannot_close_its_row_leaves_it_to_the_next_pass(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await seed_demo(pool, customers=DUE, due_on=TODAY, mix="ok", installments=1)
    conn = await asyncpg.connect(database_url)
    name = await conn.fetchval("SELECT current_database()")
    # A database cannot close itself to new sessions: the maintenance database does it.
    admin = await asyncpg.connect(database_url_of(database_url, "postgres"))
    try:
        async with _pass_in_a_child(database_url, conn) as (proc, started_at):
            # An outage: the sessions go, and no new one is let in until it ends.
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                assert await conn.fetchval(_TERMINATE_CHILD, started_at) > 0
                done = await _finish(proc)
            finally:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert done.returncode == 1, done.stderr
        assert "lost the database connection" in done.one_error_line()
        assert any(e["event"] == "run_record_failed" for e in done.events)
        [run] = await _runs(conn)
        assert run["status"] == "running"
    finally:
        await admin.close()
        await conn.close()
    # The way out: the next pass finds the row running without its liveness lock.
    await _next_pass_finishes_the_work(pool, database_url)
    async with pool.acquire() as conn:
        first, second = await _runs(conn)
    assert first["id"] == run["id"] and first["status"] == "abandoned"
    assert first["finished_at"] is not None and "abandoned" in first["error"]
    assert second["status"] == "completed"


async def test_a_killed_pass_is_closed_as_abandoned_by_the_next(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await seed_demo(pool, customers=DUE, due_on=TODAY, mix="ok", installments=1)
    conn = await asyncpg.connect(database_url)
    try:
        async with _pass_in_a_child(database_url, conn) as (proc, _):
            proc.send_signal(signal.SIGKILL)
            with anyio.fail_after(30):
                await proc.wait()
        [run] = await _runs(conn)
        assert run["status"] == "running"
    finally:
        await conn.close()
    await _next_pass_finishes_the_work(pool, database_url)
    async with pool.acquire() as conn:
        statuses = [r["status"] for r in await _runs(conn)]
    assert statuses == ["abandoned", "completed"]


NOWHERE = "postgresql://collector:secret-pw@127.0.0.1:1/nowhere"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (NOWHERE, "cannot connect to the database"),
        ("postgresql://collector:secret-pw@nowhere.invalid/db", "cannot connect"),
        ("postgresql://collector:secret-pw@127.0.0.1/db?sslmode=bogus", "sslmode"),
        ("postgresql://collector:secret-pw@127.0.0.1:99999/db", "COLLECTOR_DATABASE_URL"),
        ("postgresql://collector:secret-pw@[::1/db", "COLLECTOR_DATABASE_URL"),
        ("postgresql://collector:secret-pw@host:port/db", "COLLECTOR_DATABASE_URL"),
    ],
)
async def test_a_bad_database_url_is_one_line_without_its_password(url: str, says: str) -> None:
    done = await collector("run", env=env_for(url))
    assert done.returncode == 1, done.stderr
    line = done.one_error_line()
    assert says in line
    assert "secret-pw" not in done.stderr


@pytest.mark.parametrize("under", ["a-file", "proc"])
async def test_an_unusable_data_directory_is_one_line_naming_it(tmp_path: Path, under: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = blocker / "data" if under == "a-file" else Path("/proc/collector-data")
    env = env_for("", COLLECTOR_DATA_DIR=str(data_dir))
    del env["COLLECTOR_DATABASE_URL"]
    done = await collector("migrate", env=env)
    assert done.returncode == 1, done.stderr
    line = done.one_error_line()
    assert "COLLECTOR_DATA_DIR" in line and str(data_dir) in line


async def test_the_audit_that_cannot_run_is_one_line_and_exit_2() -> None:
    done = await collector("audit", "--json", env=env_for(NOWHERE))
    assert done.returncode == 2, done.stderr
    assert "cannot connect" in done.one_error_line()
    assert json.dumps("secret-pw") not in done.stderr


async def test_a_daemon_that_cannot_bind_its_port_is_one_line(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = env_for(database_url, COLLECTOR_API_TOKENS="a-token-of-sixteen-chars")
        done = await collector("daemon", "--no-schedule", "--port", port, env=env)
    assert done.returncode == 1, done.stderr
    # The server names the address it could not take and why, in the one line.
    line = done.one_error_line()
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "address already in use" in line.lower()
