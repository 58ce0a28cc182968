"""The pass watchdog under a simulated clock: progress lines at their interval, one stall
line when nothing moves, a resume line when it moves again, and the gauges that show it."""

from __future__ import annotations

import anyio
from structlog.testing import capture_logs

from collector.domain import PassCounts
from collector.metrics import PASS_LAST_PROGRESS, PASS_STALLED
from collector.watchdog import PassProgress, watch


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_pass_that_stops_moving_is_reported_stalled_once_then_resumed() -> None:
    wall = Wall()
    counts = PassCounts()
    progress = PassProgress(counts, wall=wall)
    progress.enter("collect")
    ticks = 0

    async def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        wall.now += seconds
        if ticks <= 3:
            counts.due += 10  # claims for the first 30 s
        if ticks == 15:
            counts.succeeded += 1  # and an answer after a long silence
        if ticks == 16:
            scope.cancel()
        await anyio.lowlevel.checkpoint()

    seen_stalled: list[float] = []
    with capture_logs() as logs, anyio.CancelScope() as scope:
        original = sleep

        async def sleep_and_look(seconds: float) -> None:
            await original(seconds)
            seen_stalled.append(PASS_STALLED._value.get())

        await watch(progress, interval_s=30, stall_s=60, tick_s=10, sleep=sleep_and_look)
    events = [e["event"] for e in logs]
    assert events.count("pass_stalled") == 1
    assert events.count("pass_resumed") == 1
    assert events.index("pass_stalled") < events.index("pass_resumed")
    # A progress line every 30 s of the 160 simulated.
    assert events.count("pass_progress") == 5
    stalled = next(e for e in logs if e["event"] == "pass_stalled")
    assert stalled["step"] == "collect" and stalled["due"] == 30 and stalled["idle_s"] >= 60
    # The gauge was 1 while stalled, and the watchdog leaves both gauges at 0 when it ends.
    assert 1.0 in seen_stalled
    assert PASS_STALLED._value.get() == 0
    assert PASS_LAST_PROGRESS._value.get() == 0


async def test_a_pass_that_keeps_moving_is_never_stalled() -> None:
    wall = Wall()
    counts = PassCounts()
    progress = PassProgress(counts, wall=wall)
    ticks = 0

    async def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        wall.now += seconds
        counts.due += 1
        if ticks == 50:
            scope.cancel()
        await anyio.lowlevel.checkpoint()

    with capture_logs() as logs, anyio.CancelScope() as scope:
        await watch(progress, interval_s=60, stall_s=30, tick_s=10, sleep=sleep)
    assert "pass_stalled" not in [e["event"] for e in logs]
