"""A running pass says what it is doing, and a watchdog says when it stops moving.

A pass blocked on a lock for 40 s used to say nothing at all: no line between its start and
its end, and the pass-too-slow alert only saw passes that finished. Now:

- the pass notes each step it enters (:meth:`PassProgress.enter`: reconcile, settle,
  collect, export, audit) and every claim and recorded batch moves its counts;
- the watchdog, a task beside the pass, logs ``pass_progress`` every
  ``COLLECTOR_PROGRESS_INTERVAL_S`` (step, counts, seconds since the last progress), and
  ``pass_stalled`` once when nothing moved for ``COLLECTOR_WATCHDOG_STALL_S`` (then
  ``pass_resumed`` when it moves again), with ``collector_pass_stalled`` set meanwhile.

The watchdog only watches: a stalled pass is an operator's call (a lock held by a person's
session, a gateway that hangs past its own timeout), and the statement and lock timeouts
(``COLLECTOR_STATEMENT_TIMEOUT_S``, ``COLLECTOR_LOCK_TIMEOUT_S``) end what the database
itself can end.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio

from collector.domain import PassCounts
from collector.logs import get_logger
from collector.metrics import PASS_LAST_PROGRESS, PASS_STALLED

log = get_logger()

WallClock = Callable[[], float]
"""Unix time in seconds (``time.time``); tests pass their own."""


class PassProgress:
    """What one pass is doing and when it last moved; read by :func:`watch`."""

    def __init__(self, counts: PassCounts, *, wall: WallClock = time.time) -> None:
        self.counts = counts
        self.step = "starting"
        self._wall = wall
        self._seen = self._figures()
        self.last_progress_at = wall()
        PASS_LAST_PROGRESS.set(self.last_progress_at)

    def _figures(self) -> tuple[object, ...]:
        return (self.step, *dataclasses.astuple(self.counts))

    def enter(self, step: str) -> None:
        """The pass begins ``step``: that is progress."""
        self.step = step
        self.check()

    def check(self) -> bool:
        """Whether anything moved since the last check (and note it if so)."""
        figures = self._figures()
        if figures == self._seen:
            return False
        self._seen = figures
        self.last_progress_at = self._wall()
        PASS_LAST_PROGRESS.set(self.last_progress_at)
        return True

    def idle_s(self) -> float:
        """Seconds since the pass last moved."""
        return max(0.0, self._wall() - self.last_progress_at)

    def fields(self) -> dict[str, object]:
        """The log fields of a progress line."""
        counts = self.counts
        return {
            "step": self.step,
            "due": counts.due,
            "succeeded": counts.succeeded,
            "declined": counts.declined,
            "in_doubt": counts.in_doubt,
            "processing": counts.processing,
            "failed": counts.failed,
            "reconciled": counts.reconciled,
            "idle_s": round(self.idle_s(), 1),
        }


async def watch(
    progress: PassProgress,
    *,
    interval_s: float,
    stall_s: float,
    tick_s: float | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Log progress every ``interval_s`` and a stall after ``stall_s`` without progress, until
    cancelled (the pass cancels it when it ends). ``tick_s``: how often it looks (tests)."""
    tick = tick_s if tick_s is not None else min(interval_s, stall_s, 5.0)
    since_report = 0.0
    stalled = False
    try:
        while True:
            await sleep(tick)
            since_report += tick
            moved = progress.check()
            if stalled and moved:
                stalled = False
                PASS_STALLED.set(0)
                log.info("pass_resumed", **progress.fields())
            if not stalled and progress.idle_s() >= stall_s:
                stalled = True
                PASS_STALLED.set(1)
                log.error("pass_stalled", stall_s=stall_s, **progress.fields())
            if since_report >= interval_s:
                since_report = 0.0
                log.info("pass_progress", **progress.fields())
    finally:
        PASS_STALLED.set(0)
        PASS_LAST_PROGRESS.set(0)


@asynccontextmanager
async def watching(
    progress: PassProgress, *, interval_s: float, stall_s: float
) -> AsyncIterator[PassProgress]:
    """Run :func:`watch` beside the block, and stop it when the block ends.

    The block's own exception comes out as it was raised, never wrapped in the task group's
    ExceptionGroup: callers of a pass catch its errors by type (DatabaseError, a gateway's).
    """
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(watch, progress, interval_s=interval_s, stall_s=stall_s))
        try:
            yield progress
        except BaseException as exc:  # re-raised below, once the watchdog has stopped
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
