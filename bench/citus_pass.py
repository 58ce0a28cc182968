"""The same pass on plain PostgreSQL and on a Citus cluster, side by side in one run.

    uv run python bench/citus_pass.py --customers 5000

Each backend gets a fresh database (on Citus: on every node, tables placed by `collector
migrate`), the same seed (every installment due today, approvals only), and one `collector
run` child against the in-memory gateways (the engine's and the database's cost, no
gateway's). Printed per backend: charges, the pass's time (its collection_runs row),
charges per second, and SQL statements per charge: those the engine sent (the plain
server's or the coordinator's log) and, on Citus, those the coordinator sent the workers
(the workers' logs). Statements are counted from the servers' logs, with log_statement set
to 'all' on the measured database only.

The defaults are the README's loopback servers: plain PostgreSQL 15 on 5499 and the 3-node
cluster (coordinator 9700, workers 9701 and 9702), all on this machine. Three nodes on two
cores can only lose to one server: what carries over to separate machines is the statements
per charge, not the rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from bench._engine import engine_env
from bench._seeded import seed_due
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from tests.citus.cluster import make_cluster_database

DATABASE = "collector_bench"
_STATEMENT = ("LOG:  statement:", "LOG:  execute ")


@dataclass(frozen=True, slots=True)
class Figures:
    backend: str
    charged: int
    pass_s: float
    client_statements: int
    worker_statements: int | None

    @property
    def per_charge(self) -> float:
        return self.client_statements / max(self.charged, 1)

    @property
    def per_s(self) -> float:
        return self.charged / self.pass_s if self.pass_s > 0 else 0.0

    def line(self) -> str:
        workers = ""
        if self.worker_statements is not None:
            per = self.worker_statements / max(self.charged, 1)
            workers = f" worker_statements_per_charge={per:.2f}"
        return (
            f"{self.backend}: charged={self.charged} pass_s={self.pass_s:.2f}"
            f" charges_per_s={self.per_s:.0f} statements_per_charge={self.per_charge:.2f}{workers}"
        )


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def _plain_database(admin_url: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    url = _with_database(admin_url, DATABASE)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def _prepare(url: str, customers: int, as_of: date) -> None:
    async with open_pool(url, size=8) as pool:
        await seed_due(pool, customers=customers, due_on=as_of, gateway="memory_card")
        await pool.execute("ANALYZE")
    conn = await asyncpg.connect(url)
    try:
        # On Citus, the coordinator carries the setting to the workers.
        await conn.execute(f"ALTER DATABASE \"{DATABASE}\" SET log_statement = 'all'")
    finally:
        await conn.close()


def _count(log: Path, since: int) -> int:
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    return sum(1 for line in text.splitlines() if any(s in line for s in _STATEMENT))


async def _pass_s(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        seconds: float = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8"
            " FROM collection_runs"
        )
    finally:
        await conn.close()
    return seconds


def measure(
    backend: str,
    url: str,
    *,
    as_of: date,
    client_log: Path,
    worker_logs: list[Path],
    concurrency: int,
) -> Figures:
    offsets = {log: log.stat().st_size for log in [client_log, *worker_logs]}
    env = engine_env(url, gateway="memory", latency_ms=0, concurrency=concurrency)
    done = subprocess.run(
        [sys.executable, "-m", "collector", "run", "--json", "--date", as_of.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{backend}: collector run failed: {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    time.sleep(0.5)  # the servers' loggers write asynchronously
    return Figures(
        backend=backend,
        charged=int(summary["succeeded"]) + int(summary["processing"]),
        pass_s=anyio.run(_pass_s, url),
        client_statements=_count(client_log, offsets[client_log]),
        worker_statements=(
            sum(_count(log, offsets[log]) for log in worker_logs) if worker_logs else None
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--date", default=date.today().isoformat(), help="the pass's date")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--shard-count", type=int, default=32)
    parser.add_argument("--plain-url", default="postgresql://postgres@127.0.0.1:5499/postgres")
    parser.add_argument("--plain-log", type=Path, default=Path("/tmp/plainpg/log"))
    parser.add_argument("--citus-url", default="postgresql://postgres@127.0.0.1:9700/postgres")
    parser.add_argument(
        "--citus-logs",
        type=Path,
        nargs=3,
        default=[Path(f"/tmp/citus-nodes/{n}.log") for n in ("coord", "w1", "w2")],
        help="the coordinator's log, then the workers'",
    )
    args = parser.parse_args()
    print("command: uv run python bench/citus_pass.py " + " ".join(sys.argv[1:]))

    plain = anyio.run(_plain_database, args.plain_url)
    as_of = date.fromisoformat(args.date)
    anyio.run(_prepare, plain, args.customers, as_of)
    plain_f = measure(
        "plain",
        plain,
        as_of=as_of,
        client_log=args.plain_log,
        worker_logs=[],
        concurrency=args.concurrency,
    )
    print(plain_f.line(), flush=True)

    citus = anyio.run(make_cluster_database, args.citus_url, DATABASE, args.shard_count)
    anyio.run(_prepare, citus, args.customers, as_of)
    citus_f = measure(
        "citus",
        citus,
        as_of=as_of,
        client_log=args.citus_logs[0],
        worker_logs=list(args.citus_logs[1:]),
        concurrency=args.concurrency,
    )
    print(citus_f.line())
    print(
        f"citus_vs_plain_rate={citus_f.per_s / max(plain_f.per_s, 1e-9):.3f}"
        f" citus_vs_plain_statements={citus_f.per_charge / max(plain_f.per_charge, 1e-9):.3f}"
    )


if __name__ == "__main__":
    main()
