"""Benchmark manual pay through the HTTP API at a fixed request rate.

    uv run python bench/manual_pay.py --rps 200 --seconds 10

Starts an embedded PostgreSQL in a temporary directory, seeds one lease with an overdue
installment per request, starts `collector daemon --no-schedule` (sandbox gateways at zero
latency), then sends POST /v1/leases/{id}/payments at a steady rate (open loop: a slow answer
does not delay the next request) and prints latency percentiles. The last line is
machine-readable:

    p50_ms=<number> p99_ms=<number> errors=<count>
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from datetime import date, timedelta

import anyio
import asyncpg
import httpx

from bench._seeded import BENCH_SERVER_DIR, seeded_database
from collector.db.embedded import start_embedded

TOKEN = "bench-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prepare(server_url: str, leases: int, overdue_on: date) -> tuple[str, list[int]]:
    url = await seeded_database(server_url, "bench_manual_pay", customers=leases, due_on=overdue_on)
    conn = await asyncpg.connect(url)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM leases ORDER BY id")]
    finally:
        await conn.close()
    return url, ids


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def load(port: int, lease_ids: list[int], rps: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        limits=limits,
        timeout=30,
    ) as http:

        async def one(lease_id: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                response = await http.post(
                    f"/v1/leases/{lease_id}/payments",
                    json={},
                    headers={"Idempotency-Key": f"bench-{lease_id}"},
                )
                if response.status_code != 201:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for n, lease_id in enumerate(lease_ids):
                # Open loop: each request leaves at its own time, whatever the others do.
                await anyio.sleep_until(start + n / rps)
                tg.start_soon(one, lease_id)
    return latencies, errors


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        with anyio.fail_after(60):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("the daemon exited")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    requests = int(args.rps * args.seconds)

    server_url = start_embedded(BENCH_SERVER_DIR)
    overdue_on = date.today() - timedelta(days=10)
    url, lease_ids = anyio.run(prepare, server_url, requests, overdue_on, backend="asyncio")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        COLLECTOR_DATABASE_URL=url,
        COLLECTOR_API_TOKENS=TOKEN,
        COLLECTOR_SANDBOX_LATENCY_MS="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "daemon", "--no-schedule", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        anyio.run(wait_ready, port, proc, backend="asyncio")
        latencies, errors = anyio.run(load, port, lease_ids, args.rps, backend="asyncio")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    latencies.sort()
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"{len(latencies)} manual payments at {args.rps:g}/s for {args.seconds:g}s;"
        f" max {latencies[-1]:.1f} ms"
    )
    print(
        f"command: uv run python bench/manual_pay.py --rps {args.rps:g} --seconds {args.seconds:g}"
    )
    print(f"p50_ms={p50:.1f} p99_ms={p99:.1f} errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
