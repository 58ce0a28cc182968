"""The engine side by side with the same job written three other ways, in one run.

    uv run python bench/compare.py --installments 20000 --latency-ms 0

One embedded server (bench/_seeded.py's); N due installments seeded once into a template
database, and each contender run on its own fresh copy of it (same rows, pages and planner
statistics), one after the other:

- ``engine``: ``python -m collector run --json --date <past date>`` as a child process, through
  the in-memory gateway (``memory_card``: the engine's own cost), and ``engine+sandbox``
  through the durable sandbox (every charge committed to ``sandbox.charges``);
- ``loop``: the same batched claim/charge/record loop written directly on asyncpg (batches of
  500, one claimer, charges concurrent, one record statement per batch; no journal, no
  eligibility check, no policy: see bench/_contenders.py), through the same in-memory
  gateway, and ``loop+sandbox`` through the sandbox;
- ``loop+journal``: that loop writing, in its same two statements a batch, what the design
  asks of every charge besides: the journal's presented and answer rows, the money in flight,
  and the customer's money event (no eligibility check, no notices, no policy): the floor of
  any job that keeps this ledger;
- ``per_row``: one transaction per installment (lock it, insert its attempt, charge it,
  record it, commit), ``--per-row-workers`` connections at once;
- ``procrastinate``: one procrastinate job per installment (deferred first, timed apart),
  one worker with ``--procrastinate-concurrency`` until the queue is empty. It runs some
  300 jobs a second, so ``--procrastinate-jobs M`` defers only M of the N installments: its
  rate is M over its worker's time (a rate, so not scaled further); the output says so.

Every contender uses the same gateway latency (``--latency-ms``), the same concurrency and
batch size. A rate is charges recorded over the contender's own window (the engine: its
``collection_runs`` row, start-up and exit left out). For each: commits, WAL bytes and rows
written per charge, CPU per charge of the client (the engine's child; this process for the
others) and of PostgreSQL, and with ``--statements`` the SQL statements per charge (the server
log, which costs a little: off by default). The machine is shared: judge the ratios, which
are measured minutes apart on one server. The last line is machine-readable, one line:

    engine_per_s=<n> loop_per_s=<n> per_row_per_s=<n> procrastinate_per_s=<n>
    engine_vs_loop=<ratio> engine_vs_procrastinate=<ratio>
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import anyio
import asyncpg

from bench._contenders import batched_loop, per_row, procrastinate_jobs
from bench._engine import engine_env, run_engine
from bench._measure import Server, lsn_of, split_statements
from bench._seeded import (
    BENCH_SERVER_DIR,
    copy_database,
    drop_database,
    progress_printer,
    seeded_database,
)
from collector.db.embedded import start_embedded
from collector.gateways.base import Gateway, GatewayContext
from collector.gateways.memory import MemoryGateway
from collector.gateways.sandbox import open_sandbox_card

AS_OF = date(2026, 11, 26)
# Connections of procrastinate's psycopg pool, and of the pool its jobs' statements run on.
PROCRASTINATE_POOL = 20
TEMPLATES = {"memory": "bench_compare_tpl_memory", "sandbox": "bench_compare_tpl_sandbox"}
RUN_DATABASE = "bench_compare_run"
CONTENDERS = (
    "engine",
    "loop",
    "loop+journal",
    "per_row",
    "procrastinate",
    "engine+sandbox",
    "loop+sandbox",
)
LABELS = {
    "engine": "engine, memory gateway (collector run)",
    "loop": "batched loop on asyncpg, memory gateway",
    "loop+journal": "batched loop + journal and money events",
    "per_row": "one transaction per installment, memory",
    "procrastinate": "procrastinate, one job per installment",
    "engine+sandbox": "engine, durable sandbox gateway",
    "loop+sandbox": "batched loop, durable sandbox gateway",
}


@dataclass(slots=True)
class Result:
    name: str
    charges: int
    seconds: float
    commits: int
    rows_written: int
    wal_bytes: int
    client_cpu_s: float
    server_cpu_s: float
    statements: int | None = None
    peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.charges / self.seconds if self.seconds > 0 else 0.0


class Marks:
    """The window of an in-process contender: time, this process's CPU, the server's CPU and
    the WAL position at its start and end."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._admin: asyncpg.Connection | None = None
        self.seconds = self.client_cpu_s = self.server_cpu_s = 0.0
        self.wal_bytes = 0
        self._at: tuple[float, float, float, int] | None = None

    async def _now(self) -> tuple[float, float, float, int]:
        if self._admin is None:
            self._admin = await asyncpg.connect(self._server.url)
        lsn = lsn_of(await self._admin.fetchval("SELECT pg_current_wal_lsn()::text"))
        return time.perf_counter(), time.process_time(), self._server.server_cpu_s(), lsn

    async def start(self) -> None:
        self._at = await self._now()

    async def stop(self) -> None:
        assert self._at is not None, "stop() before start()"
        end = await self._now()
        self.seconds = end[0] - self._at[0]
        self.client_cpu_s = end[1] - self._at[1]
        self.server_cpu_s = end[2] - self._at[2]
        self.wal_bytes = end[3] - self._at[3]

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool connections go back as they are: the contenders leave no session state, and the
    default reset is one more round trip per release."""


async def _pool(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=size, max_size=size, reset=_no_reset)


async def _gateway(stack: AsyncExitStack, kind: str, url: str, latency_ms: float) -> Gateway:
    if kind == "memory":
        return MemoryGateway("memory_card", latency_ms=latency_ms)
    context = GatewayContext(name="sandbox_card", database_url=url, latency_ms=latency_ms)
    return await stack.enter_async_context(open_sandbox_card(context))


async def _paid(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM installments WHERE status = 'paid'"))
    finally:
        await conn.close()


async def in_process(
    server: Server,
    url: str,
    name: str,
    args: argparse.Namespace,
    body: Callable[[Marks], Awaitable[tuple[int, list[str]]]],
) -> Result:
    """Run one in-process contender on its copy, counting what the server did for it."""
    if args.statements:
        await server.log_statements(RUN_DATABASE)
    marks = Marks(server)
    before = await server.snapshot(RUN_DATABASE)
    try:
        charges, notes = await body(marks)
    finally:
        await marks.close()
    after = await server.snapshot(RUN_DATABASE)
    usage = Server.usage(before, after)
    statements = None
    if args.statements:
        statements = split_statements(server.count_statements(usage))[0]
    return Result(
        name=name,
        charges=charges,
        seconds=marks.seconds,
        commits=usage.commits,
        rows_written=usage.rows_written,
        wal_bytes=marks.wal_bytes,
        client_cpu_s=marks.client_cpu_s,
        server_cpu_s=marks.server_cpu_s,
        statements=statements,
        notes=notes,
    )


async def run_contender(server: Server, name: str, args: argparse.Namespace) -> Result:
    kind = "sandbox" if name.endswith("+sandbox") else "memory"
    url = await copy_database(server.url, TEMPLATES[kind], RUN_DATABASE)
    n = args.installments
    if name.startswith("engine"):
        env = engine_env(
            url,
            gateway=kind,
            latency_ms=args.latency_ms,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            audit_after_pass=False,
        )
        run = await run_engine(
            server, url, RUN_DATABASE, env, as_of=AS_OF, count_statements=args.statements
        )
        notes = []
        if run.memory_gateway_charges is not None and run.memory_gateway_charges != run.charged:
            notes.append(f"MISMATCH: gateway took {run.memory_gateway_charges}")
        return Result(
            name=name,
            charges=run.charged,
            seconds=run.pass_s,
            commits=run.usage.commits,
            rows_written=run.usage.rows_written,
            wal_bytes=run.wal_bytes,
            client_cpu_s=run.client_cpu_s,
            server_cpu_s=run.server_cpu_s,
            statements=split_statements(run.statements)[0] if args.statements else None,
            peak_rss_mb=run.peak_rss_mb,
            notes=notes,
        )

    async def loop(marks: Marks) -> tuple[int, list[str]]:
        async with AsyncExitStack() as stack:
            gateway = await _gateway(stack, kind, url, args.latency_ms)
            pool = await _pool(url, 2)
            stack.push_async_callback(pool.close)
            await marks.start()
            charges = await batched_loop(
                pool,
                gateway,
                as_of=AS_OF,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                journal=name == "loop+journal",
            )
            await marks.stop()
        return charges, _gateway_notes(gateway, charges)

    async def rows(marks: Marks) -> tuple[int, list[str]]:
        gateway = MemoryGateway("memory_card", latency_ms=args.latency_ms)
        connections = [await asyncpg.connect(url) for _ in range(args.per_row_workers)]
        try:
            await marks.start()
            charges = await per_row(connections, gateway, as_of=AS_OF)
            await marks.stop()
        finally:
            for conn in connections:
                await conn.close()
        return charges, [f"{args.per_row_workers} connections", *_gateway_notes(gateway, charges)]

    async def jobs(marks: Marks) -> tuple[int, list[str]]:
        gateway = MemoryGateway("memory_card", latency_ms=args.latency_ms)
        m = min(args.procrastinate_jobs or n, n)
        conn = await asyncpg.connect(url)
        try:
            ids = [r[0] for r in await conn.fetch("SELECT id FROM installments ORDER BY id")][:m]
        finally:
            await conn.close()
        pool = await _pool(url, min(args.procrastinate_concurrency, PROCRASTINATE_POOL))
        try:
            run = await procrastinate_jobs(
                url,
                pool,
                gateway,
                as_of=AS_OF,
                installment_ids=ids,
                concurrency=args.procrastinate_concurrency,
                pool_size=min(args.procrastinate_concurrency, PROCRASTINATE_POOL),
                before_worker=marks.start,
            )
            await marks.stop()
        finally:
            await pool.close()
        notes = [
            f"deferring {m:,} jobs took {run.defer_s:.1f}s, not counted",
            f"concurrency {args.procrastinate_concurrency}",
        ]
        if m < n:
            notes.append(f"ran {m:,} of the {n:,} installments (--procrastinate-jobs)")
        return run.paid, notes + _gateway_notes(gateway, run.paid)

    body = {
        "loop": loop,
        "loop+journal": loop,
        "loop+sandbox": loop,
        "per_row": rows,
        "procrastinate": jobs,
    }[name]
    result = await in_process(server, url, name, args, body)
    expected = min(args.procrastinate_jobs or n, n) if name == "procrastinate" else n
    paid = await _paid(url)
    if paid != expected or result.charges != expected:
        result.notes.append(f"MISMATCH: {result.charges} recorded, {paid} paid, {expected} due")
    return result


def _gateway_notes(gateway: Gateway, charges: int) -> list[str]:
    if isinstance(gateway, MemoryGateway) and gateway.count != charges:
        return [f"MISMATCH: the gateway took {gateway.count}"]
    return []


def _median(results: list[Result]) -> Result:
    """The round with the median rate (the rounds' figures stay together)."""
    return sorted(results, key=lambda r: r.per_s)[len(results) // 2]


def command_line(args: argparse.Namespace) -> str:
    parts = [
        "uv run python bench/compare.py",
        f"--installments {args.installments}",
        f"--latency-ms {args.latency_ms:g}",
    ]
    defaults = {
        "concurrency": 64,
        "batch_size": 500,
        "per_row_workers": 64,
        "procrastinate_jobs": None,
        "procrastinate_concurrency": args.concurrency,
        "rounds": 1,
    }
    for flag, default in defaults.items():
        value = getattr(args, flag)
        if value != default:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    if args.statements:
        parts.append("--statements")
    if not args.sandbox:
        parts.append("--no-sandbox")
    if args.only:
        parts.append(f"--only {','.join(args.only)}")
    return " ".join(parts)


def report(args: argparse.Namespace, results: dict[str, list[Result]]) -> int:
    print()
    print(
        f"{args.installments:,} due installments, gateway latency {args.latency_ms:g} ms,"
        f" concurrency {args.concurrency}, batches of {args.batch_size}; one embedded server,"
        f" each contender on a fresh copy of one seeded database"
        + (f"; median of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    header = (
        f"{'contender':<42} {'charges':>8} {'seconds':>8} {'per_s':>8} {'commits':>8}"
        f" {'WAL B':>7} {'rows':>5} {'client':>7} {'pg':>7} {'stmts':>7} {'RSS MB':>6}"
    )
    print(header)
    print(f"{'':<42} {'':>8} {'':>8} {'':>8} {'per charge':>8} {'':>7} {'':>5} {'CPU us':>7}")
    chosen: dict[str, Result] = {}
    problems = 0
    for name in CONTENDERS:
        if name not in results:
            continue
        r = chosen[name] = _median(results[name])
        n = max(r.charges, 1)
        statements = f"{r.statements / n:.3f}" if r.statements is not None else "-"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
        print(
            f"{LABELS[name]:<42} {r.charges:>8,} {r.seconds:>8.2f} {r.per_s:>8,.0f}"
            f" {r.commits / n:>8.4f} {r.wal_bytes / n:>7,.0f} {r.rows_written / n:>5.1f}"
            f" {r.client_cpu_s * 1e6 / n:>7,.0f} {r.server_cpu_s * 1e6 / n:>7,.0f}"
            f" {statements:>7} {rss:>6}"
        )
        for note in r.notes:
            print(f"{'':<4}{note}")
            problems += note.startswith("MISMATCH")
        if args.rounds > 1:
            rates = ", ".join(f"{x.per_s:,.0f}" for x in results[name])
            print(f"{'':<4}rounds: {rates} per s")

    def rate(name: str) -> float:
        return chosen[name].per_s if name in chosen else float("nan")

    def ratio(a: str, b: str) -> float:
        return rate(a) / rate(b) if rate(b) else float("nan")

    print("ratios:")
    pairs = [
        ("engine", "loop"),
        ("engine", "loop+journal"),
        ("loop+journal", "loop"),
        ("engine", "per_row"),
        ("engine", "procrastinate"),
        ("loop", "per_row"),
        ("loop", "procrastinate"),
        ("engine+sandbox", "loop+sandbox"),
        ("engine+sandbox", "engine"),
        ("loop+sandbox", "loop"),
    ]
    for a, b in pairs:
        if a in chosen and b in chosen:
            print(f"  {a} / {b} = {ratio(a, b):.3f}")
    # CPU per charge moves less than a rate when other work shares the cores: a cost ratio.
    cost = {
        name: (r.client_cpu_s + r.server_cpu_s) * 1e6 / max(r.charges, 1)
        for name, r in chosen.items()
    }
    print(
        "CPU per charge, client + PostgreSQL: "
        + ", ".join(f"{name} {us:,.0f} us" for name, us in cost.items())
    )
    for a, b in (
        ("engine", "loop"),
        ("engine", "loop+journal"),
        ("loop+journal", "loop"),
        ("engine+sandbox", "loop+sandbox"),
    ):
        if a in cost and b in cost and cost[a]:
            print(f"  {b} / {a} CPU per charge = {cost[b] / cost[a]:.3f}")
    if "procrastinate" in chosen and chosen["procrastinate"].charges < args.installments:
        print(
            f"  (procrastinate's rate is from {chosen['procrastinate'].charges:,} jobs of"
            f" {args.installments:,}: --procrastinate-jobs)"
        )
    print(f"command: {command_line(args)}")
    print(
        f"engine_per_s={rate('engine'):.0f} loop_per_s={rate('loop'):.0f}"
        f" per_row_per_s={rate('per_row'):.0f} procrastinate_per_s={rate('procrastinate'):.0f}"
        f" engine_vs_loop={ratio('engine', 'loop'):.3f}"
        f" engine_vs_procrastinate={ratio('engine', 'procrastinate'):.2f}"
    )
    return 1 if problems else 0


async def bench(args: argparse.Namespace, server: Server) -> dict[str, list[Result]]:
    wanted = args.only or CONTENDERS
    kinds = [
        kind
        for kind in ("memory", "sandbox")
        if any((c.endswith("+sandbox") == (kind == "sandbox")) for c in wanted)
        and (args.sandbox or kind == "memory")
    ]
    for kind in kinds:
        started = time.monotonic()
        await seeded_database(
            server.url,
            TEMPLATES[kind],
            customers=args.installments,
            due_on=AS_OF,
            gateway=f"{kind}_card",
            progress=progress_printer(f"seeding the {kind} template", args.installments),
        )
        print(
            f"seeded {args.installments:,} due installments ({kind}_card)"
            f" in {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
    names = [
        c
        for c in CONTENDERS
        if (args.sandbox or not c.endswith("+sandbox")) and (not args.only or c in args.only)
    ]
    results: dict[str, list[Result]] = {}
    try:
        for round_no in range(args.rounds):
            for name in names:
                result = await run_contender(server, name, args)
                results.setdefault(name, []).append(result)
                print(
                    f"round {round_no + 1}: {name}: {result.charges:,} in {result.seconds:.2f}s"
                    f" = {result.per_s:,.0f}/s",
                    file=sys.stderr,
                )
    finally:
        await drop_database(server.url, RUN_DATABASE)
        for kind in kinds:
            await drop_database(server.url, TEMPLATES[kind])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--installments", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=64, help="charges in flight")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--per-row-workers",
        type=int,
        default=64,
        help="connections of the one-transaction-per-installment contender",
    )
    parser.add_argument(
        "--procrastinate-jobs",
        type=int,
        default=None,
        help="defer only this many jobs (its rate is taken from them); default: all",
    )
    parser.add_argument(
        "--procrastinate-concurrency",
        type=int,
        default=None,
        help="jobs at once in its worker; default: --concurrency",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat all, report the median")
    parser.add_argument(
        "--statements", action="store_true", help="count SQL statements (the server log)"
    )
    parser.add_argument(
        "--no-sandbox", dest="sandbox", action="store_false", help="skip the sandbox runs"
    )
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help=f"run only these contenders (comma-separated: {', '.join(CONTENDERS)})",
    )
    args = parser.parse_args()
    if args.procrastinate_concurrency is None:
        args.procrastinate_concurrency = args.concurrency
    if args.installments < 1 or args.rounds < 1 or args.per_row_workers < 1:
        parser.error("--installments, --rounds and --per-row-workers must be at least 1")
    if args.only and set(args.only) - set(CONTENDERS):
        parser.error(f"--only: unknown contender(s); known: {', '.join(CONTENDERS)}")
    if args.per_row_workers > 80:
        parser.error("--per-row-workers: the embedded server takes 100 connections")

    server_url = start_embedded(BENCH_SERVER_DIR)
    server = Server(server_url, Path(BENCH_SERVER_DIR) / "pg")
    results = anyio.run(bench, args, server, backend="asyncio")
    return report(args, results)


if __name__ == "__main__":
    raise SystemExit(main())
