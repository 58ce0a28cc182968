"""``python -m bench._profiled_run cprofile|pyinstrument OUT ARGS...``: run ``collector ARGS``
with the profiler on only while ``run_pass`` runs, and write its profile to OUT (cProfile's
stats file, or pyinstrument's text report). Used by bench/profile_pass.py."""

from __future__ import annotations

import cProfile
import sys
from pathlib import Path
from typing import Any

import collector.cli as cli
import collector.jobs.collect as collect


def main() -> int:
    profiler, out, *argv = sys.argv[1:]
    original = collect.run_pass
    if profiler == "pyinstrument":
        from pyinstrument import Profiler

        # The whole thread, not one task's await chain: the event loop runs every task.
        sampler: Any = Profiler(async_mode="disabled")
    else:
        sampler = cProfile.Profile()

    async def profiled(*args: Any, **kwargs: Any) -> Any:
        sampler.start() if profiler == "pyinstrument" else sampler.enable()
        try:
            return await original(*args, **kwargs)
        finally:
            sampler.stop() if profiler == "pyinstrument" else sampler.disable()

    # The CLI calls run_pass by the name it imported.
    setattr(cli, "run_pass", profiled)  # noqa: B010 (a patch: mypy would refuse the assignment)
    code = cli.main(argv)
    if profiler == "pyinstrument":
        Path(out).write_text(sampler.output_text(unicode=False, color=False))
    else:
        sampler.dump_stats(out)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
