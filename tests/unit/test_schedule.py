"""The daemon's schedule under frozen, stepped and suspended clocks: the clock is injected and
every nap is simulated, nothing sleeps. A daily pass is never late by a DST change, a clock
step or a suspend (beyond one nap), and never runs twice for one business date."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest

from collector.schedule import MAX_NAP_S, DailySchedule, local_at, next_pass_at, run_schedule

ZONE = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)


class SteppedClock:
    """A wall clock that moves only when a nap is simulated, or when a test steps it."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)
        self.naps: list[float] = []
        # Applied after the nap that passes the given instant: a step, a suspend.
        self.steps: list[tuple[datetime, timedelta]] = []

    def __call__(self) -> datetime:
        return self.now

    async def nap(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += timedelta(seconds=seconds)
        for at, step in list(self.steps):
            if self.now >= at:
                self.steps.remove((at, step))
                self.now += step
        await anyio.lowlevel.checkpoint()


async def _passes(
    clock: SteppedClock, *, daily: time, until: datetime, interval: timedelta = 6 * HOUR
) -> list[tuple[datetime, date]]:
    """(wall-clock start, business date) of each pass the schedule runs before ``until``."""
    ran: list[tuple[datetime, date]] = []
    stop = anyio.Event()
    schedule = DailySchedule(zone=ZONE, daily=daily, retry_interval=interval)

    async def run(as_of: date) -> None:
        ran.append((clock.now, as_of))
        # A pass takes a minute of wall time.
        clock.now += timedelta(minutes=1)

    async def nap(seconds: float) -> None:
        await clock.nap(seconds)
        if clock.now >= until:
            stop.set()

    with anyio.fail_after(10):
        await run_schedule(schedule, run, clock=clock, stop=stop, nap=nap)
    return ran


def test_local_times_are_made_in_the_zone_then_compared_in_utc() -> None:
    # Spring forward (2027-03-14, 02:00 EST -> 03:00 EDT): 06:00 is 10:00 UTC, and from 23:00
    # the evening before that is 6 hours, not the 7 that wall clocks subtract to.
    eve = datetime(2027, 3, 13, 23, 0, tzinfo=ZONE)
    at = next_pass_at(eve, daily=time(6), retry_interval=HOUR, last_pass=eve)
    assert at == datetime(2027, 3, 14, 10, 0, tzinfo=UTC)
    assert at - eve == timedelta(hours=6)
    # A time the clock skips falls as far after the gap as it was into it; a time shown twice
    # is its first showing.
    assert local_at(date(2027, 3, 14), time(2, 30), ZONE) == datetime(
        2027, 3, 14, 7, 30, tzinfo=UTC
    )
    assert local_at(date(2027, 11, 7), time(1, 30), ZONE) == datetime(
        2027, 11, 7, 5, 30, tzinfo=UTC
    )


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_pass_at(datetime(2027, 3, 13, 23), daily=time(6), retry_interval=HOUR, last_pass=None)


async def test_across_spring_forward_the_daily_pass_runs_at_six_local_not_an_hour_late() -> None:
    clock = SteppedClock(datetime(2027, 3, 13, 23, 0, tzinfo=ZONE))
    ran = await _passes(clock, daily=time(6), until=datetime(2027, 3, 14, 12, 0, tzinfo=ZONE))
    # Started after the 13th's daily time: a pass for the 13th at once, then the 14th's.
    assert ran[0] == (datetime(2027, 3, 13, 23, 0, tzinfo=ZONE), date(2027, 3, 13))
    daily_at, daily_date = ran[1]
    assert daily_date == date(2027, 3, 14)
    assert daily_at == datetime(2027, 3, 14, 6, 0, tzinfo=ZONE)
    assert all(nap <= MAX_NAP_S for nap in clock.naps)


async def test_across_fall_back_each_business_date_gets_one_daily_pass() -> None:
    # 01:30 happens twice on 2027-11-07: the pass runs at the first, and not at the second.
    clock = SteppedClock(datetime(2027, 11, 6, 12, 0, tzinfo=ZONE))
    ran = await _passes(
        clock, daily=time(1, 30), until=datetime(2027, 11, 8, 3, 0, tzinfo=ZONE), interval=24 * HOUR
    )
    assert [d for _at, d in ran] == [date(2027, 11, 6), date(2027, 11, 7), date(2027, 11, 8)]
    assert ran[1][0] == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)


async def test_a_clock_stepped_forward_delays_the_pass_by_at_most_one_nap() -> None:
    clock = SteppedClock(datetime(2026, 11, 26, 2, 0, tzinfo=ZONE))
    # At 02:10 the clock jumps 5 hours (NTP, an operator): it reads 07:10.
    clock.steps.append((datetime(2026, 11, 26, 2, 10, tzinfo=ZONE), timedelta(hours=5)))
    ran = await _passes(clock, daily=time(6), until=datetime(2026, 11, 26, 9, 0, tzinfo=ZONE))
    first_at, first_date = ran[0]
    assert first_date == date(2026, 11, 26)
    assert first_at - datetime(2026, 11, 26, 7, 10, tzinfo=ZONE) <= timedelta(seconds=MAX_NAP_S)


async def test_a_suspended_machine_runs_the_missed_pass_when_it_wakes() -> None:
    clock = SteppedClock(datetime(2026, 11, 26, 5, 0, tzinfo=ZONE))
    # Suspended at 05:30 for 4 hours: the first reading after it says 09:30.
    clock.steps.append((datetime(2026, 11, 26, 5, 30, tzinfo=ZONE), timedelta(hours=4)))
    ran = await _passes(clock, daily=time(6), until=datetime(2026, 11, 26, 11, 0, tzinfo=ZONE))
    assert ran[0][0] - datetime(2026, 11, 26, 9, 30, tzinfo=ZONE) <= timedelta(seconds=MAX_NAP_S)
    assert [d for _at, d in ran] == [date(2026, 11, 26)]


async def test_a_clock_stepped_back_past_the_daily_pass_never_runs_it_twice() -> None:
    clock = SteppedClock(datetime(2026, 11, 26, 5, 50, tzinfo=ZONE))
    # Ten minutes after the daily pass (06:00) the clock is stepped back to 05:10.
    clock.steps.append((datetime(2026, 11, 26, 6, 11, tzinfo=ZONE), timedelta(minutes=-61)))
    ran = await _passes(
        clock, daily=time(6), until=datetime(2026, 11, 26, 8, 0, tzinfo=ZONE), interval=2 * HOUR
    )
    starts = [at.astimezone(ZONE) for at, _d in ran]
    # The daily pass once; the next is a retry 2 hours after the step, not another "06:00".
    assert starts[0] == datetime(2026, 11, 26, 6, 0, tzinfo=ZONE)
    assert len(ran) == 1 or starts[1] >= datetime(2026, 11, 26, 7, 10, tzinfo=ZONE)


async def test_a_frozen_clock_before_the_daily_time_runs_nothing() -> None:
    clock = SteppedClock(datetime(2026, 11, 26, 5, 0, tzinfo=ZONE))
    stop = anyio.Event()
    schedule = DailySchedule(zone=ZONE, daily=time(6), retry_interval=HOUR)
    ran: list[date] = []
    naps = 0

    async def frozen_nap(seconds: float) -> None:
        nonlocal naps
        naps += 1
        if naps == 100:
            stop.set()
        await anyio.lowlevel.checkpoint()

    async def run(as_of: date) -> None:
        ran.append(as_of)

    await run_schedule(schedule, run, clock=clock, stop=stop, nap=frozen_nap)
    assert ran == []
