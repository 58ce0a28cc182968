"""The chaos suite's knobs: its seed and its length.

Every scenario draws its random choices (when to kill, which fault, which lease) from one
seed, printed at the start of the test and shown again with a failure; run it again with
``COLLECTOR_CHAOS_SEED=<seed>``. The default ``uv run pytest`` runs each scenario's short form;
``uv run pytest -m chaos`` (any marker expression that selects ``chaos``), or
``COLLECTOR_CHAOS_LONG=1``, runs the long one (``COLLECTOR_CHAOS_LONG=0`` forces the short).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Generator
from typing import TypeVar

import pytest

_T = TypeVar("_T")

_SEED_KEY = pytest.StashKey[int]()


def long_form(config: pytest.Config) -> bool:
    """Whether this session runs the chaos suite's long form."""
    forced = os.environ.get("COLLECTOR_CHAOS_LONG")
    if forced is not None and forced.strip() != "":
        return forced.strip() not in ("0", "false", "no")
    markexpr = str(config.getoption("markexpr", "") or "")
    # "-m chaos", "-m 'chaos and not slow'": selected; "-m 'not chaos'": not.
    return re.search(r"(?<!not )\bchaos\b", markexpr) is not None


class Scale:
    """Picks a scenario's figure for the form this session runs."""

    def __init__(self, long: bool) -> None:
        self.long = long

    def __call__(self, short: _T, long: _T) -> _T:
        return long if self.long else short

    def __repr__(self) -> str:
        return "long" if self.long else "short"


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> Scale:
    return Scale(long_form(request.config))


def new_seed(node: pytest.Item | pytest.Collector, what: str | None = None) -> int:
    """The seed of a scenario: COLLECTOR_CHAOS_SEED, else a fresh one; printed, and shown
    again with the test's failure."""
    raw = os.environ.get("COLLECTOR_CHAOS_SEED", "").strip()
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    node.stash[_SEED_KEY] = seed
    form = Scale(long_form(node.config))
    print(
        f"chaos seed {seed} ({form} form{'; ' + what if what else ''}); reproduce with"
        f" COLLECTOR_CHAOS_SEED={seed} uv run pytest '{node.nodeid}'"
    )
    return seed


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    return new_seed(request.node)


@pytest.fixture
def rng(chaos_seed: int) -> random.Random:
    return random.Random(chaos_seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # A test's own seed, else that of the module-scoped scenario it reads.
    seed = item.stash.get(_SEED_KEY, None)
    if seed is None:
        module = item.getparent(pytest.Module)
        seed = module.stash.get(_SEED_KEY, None) if module is not None else None
    if seed is not None and report.failed:
        report.sections.append(("chaos seed", f"COLLECTOR_CHAOS_SEED={seed}"))
    return report
