"""Benchmark one collection pass over N due installments in a fresh embedded database.

    uv run python bench/collect.py --installments 100000 --latency-ms 0
    uv run python bench/collect.py --installments 100000 --gateway memory --workers 4
    uv run python bench/collect.py --installments 1000000 --gateway memory

Seeds N customers with one installment each due on a past business date (cards that
approve: ``sandbox_card_ok`` on the durable sandbox, the default, or the in-memory gateway,
``--gateway memory``), runs ``--workers`` K ``collector run --json`` child processes at once on
that database, and prints the pass's throughput, each child's peak resident memory, and what
the pass cost the database per charge: SQL statements (the server's log, see
bench/_measure.py), commits, WAL bytes, rows written, CPU. The pass is the union of the
children's run rows (start-up and exit left out, as in ``duration_s``). The after-pass audit
is off unless ``--audit`` (it reads the whole book and is not the pass). The last line is
machine-readable, its first two fields always these:

    charges_per_s=<number> peak_rss_mb=<number> statements_per_charge=<number> ...
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import anyio
import asyncpg

from bench._engine import EngineRun, engine_env, run_engine
from bench._measure import Server, split_statements
from bench._seeded import BENCH_SERVER_DIR, progress_printer, seeded_database
from collector.db.embedded import start_embedded

# A past business date: a pass may not run for a date after today.
AS_OF = date(2026, 11, 26)
DATABASE = "bench_collect"


def command_line(args: argparse.Namespace) -> str:
    parts = [
        "uv run python bench/collect.py",
        f"--installments {args.installments}",
        f"--latency-ms {args.latency_ms:g}",
        f"--gateway {args.gateway}",
        f"--workers {args.workers}",
    ]
    parts.extend(
        f"--{flag.replace('_', '-')} {getattr(args, flag)}"
        for flag in ("concurrency", "batch_size", "claimers")
        if getattr(args, flag) is not None
    )
    if args.audit:
        parts.append("--audit")
    if not args.statements:
        parts.append("--no-statements")
    if args.durations:
        parts.append("--durations")
    return " ".join(parts)


async def bench(args: argparse.Namespace, server: Server) -> tuple[EngineRun, int]:
    started = time.monotonic()
    url = await seeded_database(
        server.url,
        DATABASE,
        customers=args.installments,
        due_on=AS_OF,
        gateway=f"{args.gateway}_card",
        progress=progress_printer("seeding", args.installments),
    )
    print(f"seeded {args.installments:,} due installments in {time.monotonic() - started:.1f}s")
    env = engine_env(
        url,
        gateway=args.gateway,
        latency_ms=args.latency_ms,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        claimers=args.claimers,
        audit_after_pass=args.audit,
    )
    run = await run_engine(
        server,
        url,
        DATABASE,
        env,
        as_of=AS_OF,
        workers=args.workers,
        count_statements=args.statements,
        durations=args.durations,
    )
    conn = await asyncpg.connect(url)
    try:
        # Each installment charged once, whatever the number of workers.
        charged_installments = await conn.fetchval(
            "SELECT count(DISTINCT installment_id) FROM charge_attempts"
            " WHERE status IN ('succeeded', 'processing')"
        )
    finally:
        await conn.close()
    return run, charged_installments


def report(args: argparse.Namespace, run: EngineRun, charged_installments: int) -> int:
    n = run.charged
    per = run.usage.per(n)
    statements, control = split_statements(run.statements)
    print(
        f"pass: {n:,} charged of {run.due:,} due in {run.pass_s:.2f}s by {run.workers}"
        f" worker(s) ({run.wall_s:.2f}s with process start-up and exit);"
        f" peak RSS {run.peak_rss_mb:.0f} MB (the largest child's"
        + (
            f", of which the memory gateway's record about {run.memory_gateway_record_mb:.1f} MB)"
            if run.memory_gateway_charges is not None
            else ")"
        )
    )
    print(
        f"  CPU in the pass: engine {run.client_cpu_s:.1f}s"
        f" ({run.client_cpu_s / run.pass_s:.2f} core),"
        f" PostgreSQL {run.server_cpu_s:.1f}s ({run.server_cpu_s / run.pass_s:.2f} core)"
    )
    if args.statements:
        print(
            f"  per charge: {statements / n:.4f} SQL statements ({control / n:.4f} of them"
            f" BEGIN/COMMIT), {per['commits']:.4f} commits, {run.wal_bytes / n:,.0f} WAL bytes,"
            f" {per['rows_written']:.1f} rows written,"
            f" engine CPU {run.client_cpu_s * 1e6 / n:.0f} us,"
            f" PostgreSQL CPU {run.server_cpu_s * 1e6 / n:.0f} us"
        )
        print("  statements in the pass, most frequent first:")
        for head, count in run.statements.most_common(12):
            print(f"    {count:>8,}  {head}")
    else:
        print(
            f"  per charge: {per['commits']:.4f} commits, {run.wal_bytes / n:,.0f} WAL bytes,"
            f" {per['rows_written']:.1f} rows written"
        )
    if run.durations:
        print("  server time by statement, most first (count, total ms, ms each):")
        for head, (count, total_ms) in list(run.durations.items())[:15]:
            print(f"    {count:>8,}  {total_ms:>10,.0f}  {total_ms / count:>8.3f}  {head}")
    problems = []
    if n != args.installments or charged_installments != args.installments:
        problems.append(
            f"expected {args.installments:,} installments charged once each: the passes"
            f" charged {n:,}, the ledger shows {charged_installments:,} installments charged"
        )
    if run.memory_gateway_repeats:
        problems.append(f"the memory gateways were asked {run.memory_gateway_repeats} keys again")
    if run.memory_gateway_charges is not None and run.memory_gateway_charges != n:
        problems.append(
            f"the memory gateways took {run.memory_gateway_charges:,} charges, the ledger {n:,}"
        )
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    print(f"command: {command_line(args)}")
    statements_field = f"{statements / n:.4f}" if args.statements else "nan"
    print(
        f"charges_per_s={run.per_s:.0f} peak_rss_mb={run.peak_rss_mb:.0f}"
        f" statements_per_charge={statements_field}"
        f" commits_per_charge={per['commits']:.4f}"
        f" wal_bytes_per_charge={run.wal_bytes / n:.0f}"
        f" engine_cpu_us_per_charge={run.client_cpu_s * 1e6 / n:.0f}"
        f" pg_cpu_us_per_charge={run.server_cpu_s * 1e6 / n:.0f}"
        f" gateway_record_mb={run.memory_gateway_record_mb:.1f}"
        f" workers={run.workers} gateway={args.gateway} latency_ms={args.latency_ms:g}"
        f" installments={args.installments}"
    )
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installments", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--gateway",
        choices=("sandbox", "memory"),
        default="sandbox",
        help="sandbox: the durable sandbox (every charge committed to its table);"
        " memory: approve in memory (the engine's own cost)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="collector run processes at once on the database"
    )
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--claimers", type=int, default=None)
    parser.add_argument("--audit", action="store_true", help="also audit the ledger after it")
    parser.add_argument(
        "--no-statements",
        dest="statements",
        action="store_false",
        help="do not log statements to count them (the log costs the server a little)",
    )
    parser.add_argument(
        "--durations",
        action="store_true",
        help="log each statement's duration and print the server time by statement"
        " (the log slows the pass: for finding where time goes, not for its rate)",
    )
    args = parser.parse_args()
    if args.installments < 1 or args.workers < 1:
        parser.error("--installments and --workers must be at least 1")

    server_url = start_embedded(BENCH_SERVER_DIR)
    server = Server(server_url, Path(BENCH_SERVER_DIR) / "pg")
    run, charged_installments = anyio.run(bench, args, server, backend="asyncio")
    return report(args, run, charged_installments)


if __name__ == "__main__":
    raise SystemExit(main())
