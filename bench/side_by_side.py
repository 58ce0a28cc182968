"""Run bench/collect.py at an older commit and at this tree, alternately, with one instrument.

    uv run python bench/side_by_side.py --before 90e03c6 --rounds 3 -- --installments 100000

The machine's speed drifts from minute to minute, so one figure per side means little: this
runs the two sides in turns (before, after, before, after, ...) and prints each round's
ratio and the ratio of the medians. Both sides are measured by *this* tree's ``bench/`` (copied
into a detached worktree of ``--before``), so only the engine differs: its code, its schema
and its migrations (each side seeds its own database from its own migrations).

The last line is machine-readable:

    before_per_s=<median> after_per_s=<median> after_vs_before=<ratio> rounds=<n>
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


def one_run(tree: Path, label: str, collect_args: list[str]) -> float:
    command = ["uv", "run", "python", "bench/collect.py", *collect_args]
    print(f"[{label}] cd {tree} && {' '.join(command)}", flush=True)
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{label}: bench/collect.py failed with exit {done.returncode}")
    per_s = float(last_line_fields(done.stdout)["charges_per_s"])
    print(f"[{label}] charges_per_s={per_s:.0f}", flush=True)
    return per_s


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
    for round_number in range(1, args.rounds + 1):
        before.append(one_run(before_tree, f"round {round_number} before", collect_args))
        after.append(one_run(ROOT, f"round {round_number} after", collect_args))
        print(f"round {round_number}: after/before = {after[-1] / before[-1]:.3f}", flush=True)

    before_median = statistics.median(before)
    after_median = statistics.median(after)
    ratios = ", ".join(f"{a / b:.3f}" for a, b in zip(after, before, strict=True))
    print(f"per-round ratios: {ratios}")
    print(
        "command: uv run python bench/side_by_side.py"
        f" --before {args.before} --rounds {args.rounds} -- {' '.join(collect_args)}"
    )
    print(
        f"before_per_s={before_median:.0f} after_per_s={after_median:.0f}"
        f" after_vs_before={after_median / before_median:.3f} rounds={args.rounds}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
