"""Profile one collection pass: where the engine's process spends its time.

    uv run python bench/profile_pass.py --installments 20000
    uv run python bench/profile_pass.py --installments 20000 --gateway sandbox --top 40
    uv run python bench/profile_pass.py --installments 20000 --pyinstrument   # if installed

Seeds N due installments in a fresh database (as bench/collect.py does), runs ``collector
run --json`` as a child process under cProfile, enabled only while ``run_pass`` runs (start-up,
migrations check and exit left out), and prints the pass's time by package and module (own
time, "tottime") and the top functions by own and by cumulative time. The figures are
cProfile's, which slows Python code down (roughly twice) and not the server: read them as
shares, beside a plain bench/collect.py run. The profile is kept (``--output``) for
``python -m pstats`` or snakeviz. ``--pyinstrument`` uses pyinstrument instead (a sampling
profiler with async call stacks; not a dependency of the project: ``uv pip install
pyinstrument``) and prints its text report.
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import anyio

from bench._engine import engine_env
from bench._seeded import BENCH_SERVER_DIR, progress_printer, seeded_database
from collector.db.embedded import start_embedded

AS_OF = "2026-11-26"
DATABASE = "bench_profile"

_SITE = re.compile(r"[/\\](?:site|dist)-packages[/\\]([^/\\]+)")
_STDLIB = re.compile(r"[/\\]lib[/\\]python3\.\d+[/\\]([^/\\]+)")


def group_of(filename: str, function: str) -> str:
    """The package (or collector module) a profile entry belongs to."""
    if filename == "~":
        # Built-ins: the event loop's wait for I/O is the process doing nothing.
        if "poll" in function or "select" in function:
            return "(waiting: epoll)"
        return "(built-ins)"
    path = filename.replace("\\", "/")
    if "/collector/" in path and "site-packages" not in path:
        module = path.rsplit("/collector/", 1)[1].removesuffix(".py").replace("/", ".")
        return f"collector.{module}"
    site = _SITE.search(filename)
    if site:
        return site.group(1).removesuffix(".py")
    std = _STDLIB.search(filename)
    if std:
        return f"stdlib {std.group(1).removesuffix('.py')}"
    return path


def print_cprofile(path: Path, top: int, pass_s: float) -> None:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _, function), (_, _, tt, _, _) in entries.items():
        by_group[group_of(filename, function)] += tt
    print(f"profiled time {total:.2f}s (the pass took {pass_s:.2f}s under the profiler)")
    print("own time by package / collector module:")
    for group, tt in sorted(by_group.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {tt:8.2f}s {100 * tt / total:5.1f}%  {group}")
    for key, title in (("tottime", "own"), ("cumulative", "cumulative")):
        print(f"top {top} functions by {title} time:")
        ordered = sorted(
            entries.items(), key=lambda kv: -(kv[1][2] if key == "tottime" else kv[1][3])
        )
        for (filename, line, function), (_, calls, tt, ct, _) in ordered[:top]:
            where = group_of(filename, function)
            share = 100 * (tt if key == "tottime" else ct) / total
            print(
                f"  {tt:7.2f}s own {ct:7.2f}s cum {share:5.1f}%"
                f" {calls:>9,} calls  {where}:{line} {function}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--installments", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--gateway", choices=("memory", "sandbox"), default="memory")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--output", type=Path, default=Path(".collector/pass.prof"))
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()

    server_url = start_embedded(BENCH_SERVER_DIR)
    url = anyio.run(
        lambda: seeded_database(
            server_url,
            DATABASE,
            customers=args.installments,
            due_on=date.fromisoformat(AS_OF),
            gateway=f"{args.gateway}_card",
            progress=progress_printer("seeding", args.installments),
        ),
        backend="asyncio",
    )
    env = engine_env(url, gateway=args.gateway, latency_ms=args.latency_ms, audit_after_pass=False)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    profiler = "pyinstrument" if args.pyinstrument else "cprofile"
    command = [
        sys.executable,
        "-m",
        "bench._profiled_run",
        profiler,
        str(args.output),
        "run",
        "--json",
        "--date",
        AS_OF,
    ]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"pass under {profiler}: {summary['succeeded']:,} charged in {summary['duration_s']:.2f}s"
        f" ({time.monotonic() - started:.1f}s with start-up)"
    )
    if args.pyinstrument:
        print(args.output.read_text())
    else:
        print_cprofile(args.output, args.top, summary["duration_s"])
    print(f"profile kept in {args.output}")
    print(
        f"command: uv run python bench/profile_pass.py --installments {args.installments}"
        f" --latency-ms {args.latency_ms:g} --gateway {args.gateway}"
        + (" --pyinstrument" if args.pyinstrument else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
