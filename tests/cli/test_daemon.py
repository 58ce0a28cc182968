"""``collector daemon`` as systemd runs it: a subprocess that serves, collects on its schedule
and stops cleanly on SIGTERM in the middle of a pass."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.daemon import next_pass_at
from collector.seed import seed_demo

TOKEN = "daemon-test-token-0123456789"
ZONE = ZoneInfo("America/New_York")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_next_pass_waits_for_the_daily_time_then_retries_until_midnight() -> None:
    daily = datetime(2026, 11, 26, 6, 0, tzinfo=ZONE).timetz()
    hour = timedelta(hours=1)
    early = datetime(2026, 11, 26, 5, 0, tzinfo=ZONE)
    assert next_pass_at(early, daily=daily, retry_interval=hour, last_pass=None) == early.replace(
        hour=6
    )
    late = datetime(2026, 11, 26, 9, 30, tzinfo=ZONE)
    assert next_pass_at(late, daily=daily, retry_interval=hour, last_pass=None) == late
    after = datetime(2026, 11, 26, 9, 45, tzinfo=ZONE)
    assert next_pass_at(after, daily=daily, retry_interval=hour, last_pass=late) == late + hour
    night = datetime(2026, 11, 26, 23, 30, tzinfo=ZONE)
    assert next_pass_at(night, daily=daily, retry_interval=hour, last_pass=night) == datetime(
        2026, 11, 27, 6, 0, tzinfo=ZONE
    )


@pytest.mark.slow
async def test_daemon_serves_collects_and_stops_cleanly_mid_pass(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    today = datetime.now(ZONE).date()
    total = 4_000
    await seed_demo(pool, customers=total, due_on=today, mix="ok", installments=1)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        COLLECTOR_DATABASE_URL=database_url,
        COLLECTOR_API_TOKENS=TOKEN,
        # The daily time has passed (00:00), so the daemon starts a pass at once; 20 ms a
        # charge, 16 at a time, makes that pass last seconds: SIGTERM lands in the middle.
        COLLECTOR_SCHEDULE_TIME="00:00",
        COLLECTOR_SANDBOX_LATENCY_MS="20",
        COLLECTOR_CONCURRENCY="16",
        COLLECTOR_BATCH_SIZE="100",
        COLLECTOR_SHUTDOWN_GRACE_S="20",
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await anyio.open_process(
            [sys.executable, "-m", "collector", "daemon", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    async with proc, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            with anyio.fail_after(30):
                while True:
                    assert proc.returncode is None, "the daemon exited"
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)  # polling a port that is not open yet
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert (await http.get("/v1/customers/1/leases")).status_code == 401
            # Wait (on the database's own state) until the pass is well under way.
            deadline = time.monotonic() + 30
            async with pool.acquire() as conn:
                while (
                    await conn.fetchval("SELECT count(*) FROM installments WHERE status = 'paid'")
                    < 200
                ):
                    assert time.monotonic() < deadline, "the daemon's pass made no progress"
            metrics = (await http.get("/metrics")).text
            names = {f.name for f in text_string_to_metric_families(metrics)}
            assert {"collector_charges", "collector_charges_in_flight"} <= names
            stopping_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(25):
                code = await proc.wait()
            assert code == 0, log_path.read_text()
            assert time.monotonic() - stopping_at < 20
        finally:
            if proc.returncode is None:
                proc.kill()

    async with pool.acquire() as conn:
        statuses = dict(await conn.fetch("SELECT status, count(*) FROM installments GROUP BY 1"))
        attempts = dict(await conn.fetch("SELECT status, count(*) FROM charge_attempts GROUP BY 1"))
        runs = await conn.fetch("SELECT status FROM collection_runs")
    assert "processing" not in statuses
    assert "pending" not in attempts
    assert statuses.get("scheduled", 0) > 0, "the pass finished before SIGTERM: nothing tested"
    assert statuses["paid"] == attempts["succeeded"]
    assert [r["status"] for r in runs] == ["completed"]
