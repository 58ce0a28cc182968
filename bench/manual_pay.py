"""Benchmark manual pay through the HTTP API at a fixed request rate, alone or during a pass.

    uv run python bench/manual_pay.py --rps 200 --seconds 10
    uv run python bench/manual_pay.py --rps 200 --seconds 10 --during-pass 100000

Seeds (on the benchmarks' embedded server) one lease with an overdue installment per
request, starts ``collector daemon --no-schedule`` (sandbox gateways at zero latency), then
sends POST /v1/leases/{id}/payments at a steady rate (open loop: a slow answer does not delay
the next request) and prints latency percentiles.

With ``--during-pass N`` the database also holds N installments due on an earlier business
date, which a ``collector run`` child process collects (``--pass-gateway``: the durable
sandbox or the in-memory gateway) while the requests are sent: the requests start once the
pass has claimed its first batch, and the output says whether the pass was still running
when the last one was answered, and the pass's rate over the requests' window and overall.
The manual payments' installments are due after the pass's date, so the pass never takes
them. ``--pass-nice N`` runs the pass at niceness N, as ops/systemd/collector-run.service
does. The last line is machine-readable:

    p50_ms=<number> p99_ms=<number> errors=<count> [pass_charges_per_s=<n> ...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import anyio
import asyncpg
import httpx
import psutil

from bench._engine import engine_env
from bench._measure import Server, split_statements
from bench._seeded import (
    BENCH_SERVER_DIR,
    SEED_CONNECTIONS,
    progress_printer,
    seed_due,
    seeded_database,
)
from collector.db.embedded import start_embedded
from collector.db.pool import open_pool

TOKEN = "bench-token-0123456789abcdef"
DATABASE = "bench_manual_pay"


@dataclass(frozen=True, slots=True)
class Answered:
    sent_s: float  # after the first request was sent
    latency_ms: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prepare(
    server_url: str,
    leases: int,
    overdue_on: date,
    *,
    pass_installments: int = 0,
    pass_on: date | None = None,
    pass_gateway: str = "sandbox",
) -> tuple[str, list[int]]:
    url = await seeded_database(server_url, DATABASE, customers=leases, due_on=overdue_on)
    if pass_installments:
        assert pass_on is not None
        async with open_pool(url, size=SEED_CONNECTIONS + 1) as pool:
            await seed_due(
                pool,
                customers=pass_installments,
                due_on=pass_on,
                gateway=f"{pass_gateway}_card",
                first=leases,
                progress=progress_printer("seeding the pass", pass_installments),
            )
            async with pool.acquire() as held:
                await held.execute("VACUUM ANALYZE")
                await held.execute("CHECKPOINT")
    conn = await asyncpg.connect(url)
    try:
        ids = [
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT i.lease_id FROM installments i WHERE i.due_on = $1"
                " ORDER BY i.lease_id",
                overdue_on,
            )
        ]
    finally:
        await conn.close()
    return url, ids


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def load(port: int, lease_ids: list[int], rps: float) -> tuple[list[Answered], int, float]:
    """Send one payment per lease at ``rps`` a second: each one's send time and latency, the
    failures, and the wall clock (epoch s) of the first request."""
    answered: list[Answered] = []
    errors = 0
    # An idle connection is given up before the daemon's keep-alive timeout (5 s) closes it:
    # at the same 5 s (httpx's default) a request now and then went out on a connection the
    # daemon was closing, and failed with ReadError.
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=2)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        limits=limits,
        timeout=30,
    ) as http:
        start = anyio.current_time()
        started_at = time.time()

        async def one(lease_id: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            sent_s = anyio.current_time() - start
            try:
                response = await http.post(
                    f"/v1/leases/{lease_id}/payments",
                    json={},
                    headers={"Idempotency-Key": f"bench-{lease_id}"},
                )
                if response.status_code != 201:
                    errors += 1
                    _say_error(f"HTTP {response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                errors += 1
                _say_error(f"{type(exc).__name__}: {exc}")
            answered.append(Answered(sent_s, (time.perf_counter() - started) * 1000))

        async with anyio.create_task_group() as tg:
            for n, lease_id in enumerate(lease_ids):
                # Open loop: each request leaves at its own time, whatever the others do.
                await anyio.sleep_until(start + n / rps)
                tg.start_soon(one, lease_id)
    return answered, errors, started_at


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


async def batch_charges(url: str) -> int:
    """Attempts the pass has claimed so far."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM charge_attempts WHERE source = 'batch'")
        )
    finally:
        await conn.close()


async def wait_claiming(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the pass has claimed its first batch."""
    with anyio.fail_after(120):
        while not await batch_charges(url):
            if proc.poll() is not None:
                raise RuntimeError("the pass exited before it claimed anything")
            await anyio.sleep(0.05)


_ERRORS_SHOWN = 5


def _say_error(what: str) -> None:
    """Print the first few failed requests: which failure, not only how many."""
    global _ERRORS_SHOWN
    if _ERRORS_SHOWN:
        _ERRORS_SHOWN -= 1
        print(f"request failed: {what}", file=sys.stderr)


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _sent(answered: Answered) -> float:
    return answered.sent_s


def _pass_rate_limits(gateway: str, rate: float | None) -> str | None:
    if rate is None:
        return None
    return json.dumps({f"{gateway}_card": rate, f"{gateway}_ach": rate})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--during-pass",
        type=int,
        default=0,
        metavar="N",
        help="send the requests while a collector run collects N other installments",
    )
    parser.add_argument("--pass-gateway", choices=("sandbox", "memory"), default="sandbox")
    parser.add_argument(
        "--pass-batch-size",
        type=int,
        default=None,
        metavar="N",
        help="the pass's COLLECTOR_BATCH_SIZE (default: the engine's, 500)",
    )
    parser.add_argument(
        "--pass-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the pass at niceness N, as ops/systemd/collector-run.service does (Nice=10)",
    )
    parser.add_argument(
        "--pass-rate",
        type=float,
        default=None,
        metavar="R",
        help="pace the pass at R charges a second (its gateways' COLLECTOR_RATE_LIMITS), to"
        " leave the cores room for the portal",
    )
    parser.add_argument(
        "--latencies",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each request's send time (s) and latency (ms), one a line: where in the"
        " run the slow ones were (at the start: something the daemon had not warmed)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="log the daemon's statements and print them per request (not with --during-pass:"
        " the pass's would be counted too)",
    )
    args = parser.parse_args()
    if args.statements and args.during_pass:
        parser.error("--statements counts every statement of the database: not with --during-pass")
    requests = int(args.rps * args.seconds)

    server_url = start_embedded(BENCH_SERVER_DIR)
    today = date.today()
    overdue_on = today - timedelta(days=10)
    pass_on = today - timedelta(days=20)
    url, lease_ids = anyio.run(
        lambda: prepare(
            server_url,
            requests,
            overdue_on,
            pass_installments=args.during_pass,
            pass_on=pass_on,
            pass_gateway=args.pass_gateway,
        ),
        backend="asyncio",
    )
    server = Server(server_url, BENCH_SERVER_DIR / "pg")
    if args.statements:
        # Before the daemon starts: the setting applies to sessions opened after it.
        anyio.run(server.log_statements, DATABASE, backend="asyncio")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        COLLECTOR_DATABASE_URL=url,
        COLLECTOR_API_TOKENS=TOKEN,
        COLLECTOR_SANDBOX_LATENCY_MS="0",
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "collector", "daemon", "--no-schedule", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon_process = psutil.Process(daemon.pid)
    cpu_from = cpu_to = (0.0, 0.0)
    pass_proc: subprocess.Popen[bytes] | None = None
    window: tuple[float, int, int] | None = None
    still_running = False
    with tempfile.TemporaryFile() as pass_out:
        try:
            anyio.run(wait_ready, port, daemon, backend="asyncio")
            if args.during_pass:
                pass_env = engine_env(
                    url,
                    gateway=args.pass_gateway,
                    latency_ms=0,
                    audit_after_pass=False,
                    batch_size=args.pass_batch_size,
                    rate_limits=_pass_rate_limits(args.pass_gateway, args.pass_rate),
                )
                pass_proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "collector",
                        "run",
                        "--json",
                        "--date",
                        pass_on.isoformat(),
                    ],
                    env=pass_env,
                    stdout=pass_out,
                    stderr=subprocess.DEVNULL,
                    # The pass's own process only: its PostgreSQL backends keep theirs.
                    preexec_fn=(lambda: os.nice(args.pass_nice)) if args.pass_nice else None,
                )
                anyio.run(wait_claiming, url, pass_proc, backend="asyncio")
                claimed_before = anyio.run(batch_charges, url, backend="asyncio")
            started = time.monotonic()
            log_from = server.log_size()
            cpu_from = (_cpu_s(daemon_process), server.server_cpu_s())
            answered, errors, load_started_at = anyio.run(
                load, port, lease_ids, args.rps, backend="asyncio"
            )
            log_to = server.log_size()
            cpu_to = (_cpu_s(daemon_process), server.server_cpu_s())
            if pass_proc is not None:
                still_running = pass_proc.poll() is None
                claimed_after = anyio.run(batch_charges, url, backend="asyncio")
                window = (time.monotonic() - started, claimed_before, claimed_after)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            if pass_proc is not None and pass_proc.poll() is None:
                pass_proc.wait(timeout=3600)
        pass_out.seek(0)
        pass_lines = pass_out.read().decode().strip().splitlines()
    if args.latencies is not None:
        # The first line gives the wall clock (epoch seconds, UTC) of the first request, to
        # set the slow ones beside the server's log.
        args.latencies.write_text(
            f"# first request sent at {load_started_at:.3f} (epoch s); send s, latency ms\n"
            + "".join(f"{a.sent_s:.3f} {a.latency_ms:.1f}\n" for a in sorted(answered, key=_sent))
        )
    latencies = sorted(a.latency_ms for a in answered)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"{len(latencies)} manual payments at {args.rps:g}/s for {args.seconds:g}s;"
        f" max {latencies[-1]:.1f} ms, errors {errors}"
    )
    daemon_ms = (cpu_to[0] - cpu_from[0]) * 1000 / requests
    server_ms = (cpu_to[1] - cpu_from[1]) * 1000 / requests
    print(
        f"CPU per request while they were sent: daemon {daemon_ms:.1f} ms, PostgreSQL"
        f" {server_ms:.1f} ms" + (" (the server's includes the pass's)" if args.during_pass else "")
    )
    fields = f"p50_ms={p50:.1f} p99_ms={p99:.1f} errors={errors}"
    if not args.during_pass:
        fields += f" daemon_cpu_ms={daemon_ms:.2f} pg_cpu_ms={server_ms:.2f}"
    if args.statements:
        found = server.statements_logged(log_from, log_to)
        total, control = split_statements(found)
        print(
            f"statements per request: {total / requests:.2f}"
            f" ({control / requests:.2f} of them BEGIN/COMMIT/...), most frequent first:"
        )
        for head, count in found.most_common(20):
            print(f"  {count / requests:>6.2f}  {head}")
        fields += f" statements_per_request={total / requests:.2f}"
    if pass_proc is not None and window is not None:
        if pass_proc.returncode != 0 or not pass_lines:
            print(f"ERROR: the pass exited {pass_proc.returncode}", file=sys.stderr)
            return 1
        summary = json.loads(pass_lines[-1])
        overall = summary["succeeded"] / summary["duration_s"]
        seconds, before, after = window
        during = (after - before) / seconds
        print(
            f"during a pass over {args.during_pass:,} installments ({args.pass_gateway} gateway):"
            f" it claimed {after - before:,} while the requests were sent ({during:,.0f}/s),"
            f" {summary['succeeded']:,} in {summary['duration_s']:.2f}s overall"
            f" ({overall:,.0f}/s); still running after the last answer: "
            + ("yes" if still_running else "NO (the last requests were not during the pass)")
        )
        fields += (
            f" pass_charges_per_s={overall:.0f} pass_claims_per_s_during={during:.0f}"
            f" pass_running_throughout={'yes' if still_running else 'no'}"
        )
    command = f"uv run python bench/manual_pay.py --rps {args.rps:g} --seconds {args.seconds:g}"
    if args.during_pass:
        command += f" --during-pass {args.during_pass} --pass-gateway {args.pass_gateway}"
        if args.pass_nice:
            command += f" --pass-nice {args.pass_nice}"
        if args.pass_batch_size is not None:
            command += f" --pass-batch-size {args.pass_batch_size}"
        if args.pass_rate is not None:
            command += f" --pass-rate {args.pass_rate:g}"
    if args.statements:
        command += " --statements"
    print(f"command: {command}")
    print(fields)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
