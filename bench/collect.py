"""Benchmark one collection pass over N due installments in a fresh embedded database.

    uv run python bench/collect.py --installments 100000 --latency-ms 0

Seeds N customers with one installment each due today (sandbox cards that approve), runs
`collector run --json` as a child process, and prints the pass's throughput and the child's
peak resident memory. The last line is machine-readable:

    charges_per_s=<number> peak_rss_mb=<number>
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date

import anyio

from bench._seeded import BENCH_SERVER_DIR, seeded_database
from collector.db.embedded import start_embedded

AS_OF = date(2026, 11, 26)


async def prepare(server_url: str, installments: int) -> str:
    return await seeded_database(server_url, "bench_collect", customers=installments, due_on=AS_OF)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installments", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--claimers", type=int, default=None)
    args = parser.parse_args()

    server_url = start_embedded(BENCH_SERVER_DIR)
    started = time.monotonic()
    url = anyio.run(prepare, server_url, args.installments, backend="asyncio")
    print(f"seeded {args.installments} due installments in {time.monotonic() - started:.1f}s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = url
    env["COLLECTOR_SANDBOX_LATENCY_MS"] = str(args.latency_ms)
    for flag, name in (
        ("concurrency", "COLLECTOR_CONCURRENCY"),
        ("batch_size", "COLLECTOR_BATCH_SIZE"),
        ("claimers", "COLLECTOR_CLAIMERS"),
    ):
        if getattr(args, flag) is not None:
            env[name] = str(getattr(args, flag))
    wall = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "collector", "run", "--json", "--date", AS_OF.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - wall
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return 1
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # ru_maxrss of the children is in KiB on Linux: the pass's own process, not this one.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rate = summary["succeeded"] / summary["duration_s"]
    print(
        f"pass: {summary['succeeded']} charged of {summary['due']} due in"
        f" {summary['duration_s']:.2f}s ({wall:.2f}s with process start-up)"
    )
    print(
        f"command: uv run python bench/collect.py --installments {args.installments}"
        f" --latency-ms {args.latency_ms:g}"
    )
    print(f"charges_per_s={rate:.0f} peak_rss_mb={peak_rss_mb:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
