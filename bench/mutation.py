"""Mutation scores of the rules: each module mutated by mutmut against its own unit test file.

    uv run python -m bench.mutation                     # every module in the table, then scores
    uv run python -m bench.mutation calendar policy     # some of them (by file stem)
    uv run python -m bench.mutation --scores            # the scores of the last runs, no run
    uv run python -m bench.mutation --survivors policy  # the diff of each mutant left alive

The modules and their test files are ``[tool.collector.mutation]`` in pyproject.toml; the
settings every run shares are ``[tool.mutmut]``. mutmut 3 takes one configuration per working
directory (its pyproject.toml, its ``mutants/``), so each module runs in a scratch copy of the
project under ``.mutation/<stem>/`` whose ``[tool.mutmut]`` mutates that module alone and
selects that test file alone. The copies are kept: a second run tests the functions whose
source changed and tries every mutant left alive again (``--fresh`` starts over). The score
counts every mutant that no test killed, message texts included, against the module:
``killed / total``.

Too slow for CI (minutes per module on two cores); run it by hand after changing a rule.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutation"
COPIED = ("collector", "tests")
KILLED = {1, 3, 36, 37, -24, 24, 152, 255}  # failed, pytest error, timeout, type check
NOT_RUN = {None}


@dataclass(frozen=True, slots=True)
class Score:
    module: str
    total: int
    killed: int
    survivors: list[str]

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def modules() -> dict[str, str]:
    """Module path to its unit test file, from ``[tool.collector.mutation]``."""
    table = _project()["tool"]["collector"]["mutation"]  # type: ignore[index]
    return dict(table)


def _scratch_pyproject(module: str, tests: str) -> str:
    """The project's pyproject.toml with a ``[tool.mutmut]`` for this module alone."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    shared = dict(_project()["tool"]["mutmut"])  # type: ignore[index]
    shared.update(
        source_paths=["collector"],
        only_mutate=[module],
        pytest_add_cli_args_test_selection=[tests],
    )
    # Drop the shared table and this runner's; json's strings and lists are TOML's too.
    text = re.sub(r"(?ms)^\[tool\.(mutmut|collector\.mutation)\]\n.*?(?=^\[|\Z)", "", text)
    section = "\n".join(f"{key} = {json.dumps(value)}" for key, value in shared.items())
    return f"{text.rstrip()}\n\n[tool.mutmut]\n{section}\n"


def _workdir(module: str) -> Path:
    return SCRATCH / Path(module).stem


def prepare(module: str, tests: str) -> Path:
    """Lay out the scratch copy for ``module``; mtimes are kept, so mutmut's cache holds."""
    work = _workdir(module)
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(
            ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    pyproject = work / "pyproject.toml"
    wanted = _scratch_pyproject(module, tests)
    if not pyproject.exists() or pyproject.read_text("utf-8") != wanted:
        pyproject.write_text(wanted, "utf-8")
    return work


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


def run(module: str, tests: str, *, jobs: int, fresh: bool) -> None:
    if fresh:
        shutil.rmtree(_workdir(module), ignore_errors=True)
    work = prepare(module, tests)
    print(f"== {module} against {tests} (in {work.relative_to(ROOT)})", flush=True)
    command = [_mutmut(), "run", "--max-children", str(jobs)]
    subprocess.run(command, cwd=work, check=True)
    # mutmut keeps a verdict until the mutated function changes, even when its tests did:
    # a mutant left alive by the tests of an earlier run is tried again against today's.
    previous = score(module)
    if previous is not None and previous.survivors:
        print(f"== {module}: trying the {len(previous.survivors)} left alive again", flush=True)
        subprocess.run([*command, *previous.survivors], cwd=work, check=True)


def score(module: str) -> Score | None:
    meta = _workdir(module) / "mutants" / f"{module}.meta"
    if not meta.exists():
        return None
    codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    survivors = sorted(name for name, code in codes.items() if code not in KILLED)
    return Score(
        module=module, total=len(codes), killed=len(codes) - len(survivors), survivors=survivors
    )


def show(module: str, names: list[str]) -> None:
    for name in names:
        subprocess.run([_mutmut(), "show", name], cwd=_workdir(module), check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("only", nargs="*", help="file stems of the modules to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--scores", action="store_true", help="print the last scores, run none")
    parser.add_argument("--fresh", action="store_true", help="forget earlier runs' verdicts")
    parser.add_argument("--survivors", action="store_true", help="show each survivor's diff")
    args = parser.parse_args(argv)
    table = modules()
    chosen = {m: t for m, t in table.items() if not args.only or Path(m).stem in args.only}
    if unknown := set(args.only) - {Path(m).stem for m in table}:
        parser.error(f"not in [tool.collector.mutation]: {', '.join(sorted(unknown))}")
    if not (args.scores or args.survivors):
        for module, tests in chosen.items():
            run(module, tests, jobs=args.jobs, fresh=args.fresh)
    print(f"\n{'module':<28} {'mutants':>8} {'killed':>7} {'score':>7}")
    for module in chosen:
        result = score(module)
        if result is None:
            print(f"{module:<28} {'not run':>8}")
            continue
        print(f"{module:<28} {result.total:>8} {result.killed:>7} {result.percent:>6.1f}%")
        if args.survivors:
            show(module, result.survivors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
