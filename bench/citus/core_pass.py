"""`collector run` with only the collection pass's money path: for proving the claim,
recording and reconciliation on Citus while other steps (other helpers' areas) are not
ported yet. The skipped steps are no-ops; everything else is the real pass (run row,
liveness lock, reconcile, claim, charge, record, outbox events).

    COLLECTOR_DATABASE_URL=postgresql://postgres@127.0.0.1:9700/hcore \\
        uv run python bench/citus/core_pass.py [collector run arguments]

Not part of the engine: a stand-in until the lead's tests/citus harness runs the pass.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import collector.jobs.collect as collect
import collector.jobs.presentment as presentment
from collector.cli import main
from collector.jobs.settle import SettleCounts


async def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


async def _no_facts(*_args: Any, **_kwargs: Any) -> dict[Any, Any]:
    return {}


async def _no_settlement(*_args: Any, **_kwargs: Any) -> SettleCounts:
    return SettleCounts()


def _skip_other_areas() -> None:
    for name, stand_in in {
        "settle": _no_settlement,
        "assess_fees": _nothing,
        "write_due_notices": _nothing,
        "send_prenotes": _nothing,
        "refresh_gauges": _nothing,
        "aging": types.SimpleNamespace(charge_off=_nothing, snapshot=_nothing),
        "promises": types.SimpleNamespace(collect_promised=_nothing, resolve_promises=_nothing),
    }.items():
        setattr(collect, name, stand_in)
    # Regulation E notice facts (h-ach's notices.notice_facts): none known, so no notice
    # rule holds a debit back (the seeded book has no notice-worthy change).
    setattr(presentment, "notice_facts", _no_facts)  # noqa: B010


if __name__ == "__main__":
    _skip_other_areas()
    sys.exit(main(["run", *sys.argv[1:]]))
