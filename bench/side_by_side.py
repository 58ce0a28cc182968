"""Run bench/collect.py at an older commit and at this tree, alternately, with one instrument.

    uv run python bench/side_by_side.py --before 90e03c6 --rounds 3 -- --installments 100000

The machine's speed drifts from minute to minute, so one figure per side means little: this
runs the two sides in turns (before, after, before, after, ...) and prints each round's
ratio and the ratio of the medians. Both sides are measured by *this* tree's ``bench/`` (copied
into a detached worktree of ``--before``), so only the engine differs: its code, its schema
and its migrations (each side seeds its own database from its own migrations).

The last line is machine-readable:

    before_per_s=<median> after_per_s=<median> after_vs_before=<ratio>
    cpu_before_vs_after=<ratio of the medians of CPU per charge> rounds=<n>
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKTREES = ROOT / ".collector" / "side-by-side"


def prepared_worktree(revision: str) -> Path:
    """A detached worktree of ``revision`` whose bench/ is this tree's."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = WORKTREES / commit[:12]
    if not path.exists():
        WORKTREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True
        )
    shutil.copytree(ROOT / "bench", path / "bench", dirs_exist_ok=True)
    return path


def last_line_fields(output: str) -> dict[str, str]:
    line = output.strip().splitlines()[-1]
    return dict(field.split("=", 1) for field in line.split())


def one_run(tree: Path, label: str, collect_args: list[str]) -> tuple[float, float]:
    """One collect.py run: (charges per second, CPU per charge in us, engine + PostgreSQL)."""
    command = ["uv", "run", "python", "bench/collect.py", *collect_args]
    print(f"[{label}] cd {tree} && {' '.join(command)}", flush=True)
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{label}: bench/collect.py failed with exit {done.returncode}")
    fields = last_line_fields(done.stdout)
    per_s = float(fields["charges_per_s"])
    cpu_us = float(fields["engine_cpu_us_per_charge"]) + float(fields["pg_cpu_us_per_charge"])
    print(f"[{label}] charges_per_s={per_s:.0f} cpu_us_per_charge={cpu_us:.0f}", flush=True)
    return per_s, cpu_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the older commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("collect_args", nargs=argparse.REMAINDER, help="-- then collect.py's")
    args = parser.parse_args()
    collect_args = [a for a in args.collect_args if a != "--"] or ["--installments", "100000"]
    if "--no-statements" not in collect_args:
        # The statement log costs the server; neither side needs it for a throughput ratio.
        collect_args.append("--no-statements")
    before_tree = prepared_worktree(args.before)

    before: list[float] = []
    after: list[float] = []
    before_cpu: list[float] = []
    after_cpu: list[float] = []
    for round_number in range(1, args.rounds + 1):
        rate, cpu = one_run(before_tree, f"round {round_number} before", collect_args)
        before.append(rate)
        before_cpu.append(cpu)
        rate, cpu = one_run(ROOT, f"round {round_number} after", collect_args)
        after.append(rate)
        after_cpu.append(cpu)
        print(f"round {round_number}: after/before = {after[-1] / before[-1]:.3f}", flush=True)

    before_median = statistics.median(before)
    after_median = statistics.median(after)
    ratios = ", ".join(f"{a / b:.3f}" for a, b in zip(after, before, strict=True))
    print(f"per-round ratios: {ratios}")
    # CPU per charge moves much less than a rate when other work shares the cores.
    cpu_ratio = statistics.median(before_cpu) / statistics.median(after_cpu)
    print(
        f"CPU per charge, engine + PostgreSQL, medians: before {statistics.median(before_cpu):.0f}"
        f" us, after {statistics.median(after_cpu):.0f} us (before/after = {cpu_ratio:.3f})"
    )
    print(
        "command: uv run python bench/side_by_side.py"
        f" --before {args.before} --rounds {args.rounds} -- {' '.join(collect_args)}"
    )
    print(
        f"before_per_s={before_median:.0f} after_per_s={after_median:.0f}"
        f" after_vs_before={after_median / before_median:.3f}"
        f" cpu_before_vs_after={cpu_ratio:.3f} rounds={args.rounds}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
