"""``collector daemon`` started before its database exists: it waits and retries instead of
exiting, /healthz answers, /readyz says why it is not ready, and once the database is there
it migrates and serves; SIGTERM while it waits is a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import httpx

from collector.db.embedded import database_url_of
from tests.cli.commands import env_for

TOKEN = "daemon-start-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until_up(http: httpx.AsyncClient, proc: anyio.abc.Process) -> None:
    with anyio.fail_after(60):
        while True:
            assert proc.returncode is None, "the daemon exited"
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await anyio.sleep(0.05)  # polling a port that is not open yet


async def test_a_daemon_waits_for_its_database_and_says_why_it_is_not_ready(
    server_url: str, tmp_path: Path
) -> None:
    name = f"collector_late_{os.getpid()}"
    port = _free_port()
    env = env_for(
        database_url_of(server_url, name),
        COLLECTOR_API_TOKENS=TOKEN,
        COLLECTOR_SCHEDULE_TIME="23:59",
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await anyio.open_process(
            [sys.executable, "-m", "collector", "daemon", "--port", str(port), "--no-schedule"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    admin = await asyncpg.connect(server_url)
    try:
        async with proc, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            try:
                await _until_up(http, proc)
                ready = await http.get("/readyz")
                assert ready.status_code == 503
                assert "waiting for the database" in ready.json()["detail"]
                assert name in ready.json()["detail"]  # "database ... does not exist"
                assert (await http.get("/v1/customers/1/leases")).status_code == 503
                # The database appears: the daemon migrates it and becomes ready.
                await admin.execute(f'CREATE DATABASE "{name}"')
                with anyio.fail_after(60):
                    while True:
                        try:
                            if (await http.get("/readyz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass  # between the placeholder and the real server
                        await anyio.sleep(0.2)  # the daemon retries with backoff (<= 2 s here)
                assert (await http.get("/v1/customers/1/leases")).status_code == 401
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    assert await proc.wait() == 0, log_path.read_text()
            finally:
                if proc.returncode is None:
                    proc.kill()
        assert "database_unavailable" in log_path.read_text()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_sigterm_while_waiting_for_the_database_is_a_clean_stop(
    server_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = env_for(database_url_of(server_url, f"collector_never_{os.getpid()}"))
    proc = await anyio.open_process(
        [sys.executable, "-m", "collector", "daemon", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with proc, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            await _until_up(http, proc)
            assert (await http.get("/readyz")).status_code == 503
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
