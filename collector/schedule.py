"""When the daemon's passes run: the daily pass at ``COLLECTOR_SCHEDULE_TIME`` in the lessor's
zone, then retry passes every ``COLLECTOR_RETRY_INTERVAL_S`` until that day ends.

Every instant here is compared in UTC. Two aware datetimes of one ``ZoneInfo`` subtract as
wall-clock times (Python ignores their offsets then), so a wait from 23:00 to 06:00 across
the spring-forward night came out as 7 hours where 6 pass, and the daily pass ran an hour
late. Local times are only made from a business date and a time of day (:func:`local_at`),
then converted.

The wait is never one long sleep: the loop sleeps at most ``max_nap_s`` on the monotonic
clock and then reads the wall clock again, so a clock stepped forward, a suspended VM or a
leap of NTP delays a pass by at most one nap, and a clock stepped back never runs the daily
pass twice (the daily pass is remembered by its business date, not by a time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import anyio

from collector.logs import get_logger

log = get_logger()

Clock = Callable[[], datetime]
"""The wall clock: an aware datetime (the daemon's is ``datetime.now(UTC)``)."""

Nap = Callable[[float], Awaitable[None]]
"""Sleep up to this many seconds, or less when the daemon is stopping."""

MAX_NAP_S = 30.0
"""Longest sleep between two readings of the wall clock."""


def local_at(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant (UTC) at which the wall clock of ``zone`` shows ``at`` on ``day``.

    A time the clock skips (02:30 on a spring-forward night) is read with the offset before
    the change, so it falls as far after the gap as it was into it (03:30); a time shown
    twice (01:30 on a fall-back night) is its first showing. Both are zoneinfo's ``fold=0``.
    """
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def next_pass_at(
    now: datetime,
    *,
    daily: time,
    retry_interval: timedelta,
    last_pass: datetime | None,
    daily_done_for: date | None = None,
    zone: ZoneInfo | None = None,
) -> datetime:
    """When the next pass should start (an aware UTC datetime).

    Before today's daily time: at it. After it: at once when today's daily pass has not run
    (``daily_done_for`` is not today, and no ``last_pass`` today at or after the daily time),
    else one retry interval after the last pass, unless that falls on the next day: then the
    next day's daily time. "Today" is the local date of ``now`` in ``zone`` (default: now's).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone_info = zone or (now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else ZoneInfo("UTC"))
    today = now.astimezone(zone_info).date()
    today_at = local_at(today, daily, zone_info)
    done = daily_done_for == today or (
        last_pass is not None
        and last_pass >= today_at
        and last_pass.astimezone(zone_info).date() == today
    )
    if not done:
        return today_at if now < today_at else now.astimezone(UTC)
    base = last_pass if last_pass is not None else now
    retry_at = base + retry_interval
    if retry_at < local_at(today + timedelta(days=1), time(0), zone_info):
        return max(retry_at, now).astimezone(UTC)
    return local_at(today + timedelta(days=1), daily, zone_info)


@dataclass(slots=True)
class DailySchedule:
    """The daemon's schedule and what it has run so far (in this process)."""

    zone: ZoneInfo
    daily: time
    retry_interval: timedelta
    last_pass: datetime | None = None
    daily_done_for: date | None = None

    def next_pass(self, now: datetime) -> datetime:
        """When the next pass starts, seen from ``now``."""
        if self.last_pass is not None and self.last_pass > now:
            # The clock was stepped back past the last pass: count the retry interval from
            # now, or the next retry would wait for the step as well.
            log.warning(
                "clock_stepped_back",
                last_pass_at=self.last_pass.isoformat(),
                now=now.isoformat(),
            )
            self.last_pass = now
        return next_pass_at(
            now,
            daily=self.daily,
            retry_interval=self.retry_interval,
            last_pass=self.last_pass,
            daily_done_for=self.daily_done_for,
            zone=self.zone,
        )

    def business_date(self, now: datetime) -> date:
        """The business date of a pass starting at ``now``: the lessor's local date."""
        return now.astimezone(self.zone).date()

    def started(self, now: datetime) -> date:
        """Note that a pass starts at ``now``; return its business date."""
        as_of = self.business_date(now)
        self.last_pass = now
        if now >= local_at(as_of, self.daily, self.zone):
            self.daily_done_for = as_of
        return as_of


async def run_schedule(
    schedule: DailySchedule,
    run: Callable[[date], Awaitable[object]],
    *,
    clock: Clock,
    stop: anyio.Event,
    nap: Nap | None = None,
    max_nap_s: float = MAX_NAP_S,
) -> None:
    """Run ``run(business_date)`` on the schedule until ``stop`` is set.

    ``run`` must not raise for a failed pass (the daemon's logs it and carries on).
    """

    async def default_nap(seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await stop.wait()

    sleep = nap or default_nap
    while not stop.is_set():
        now = clock()
        at = schedule.next_pass(now)
        wait_s = (at - now).total_seconds()
        if wait_s > 0:
            # A short nap, then the wall clock again: a step or a suspend moves the pass by
            # at most one nap.
            await sleep(min(wait_s, max_nap_s))
            continue
        await run(schedule.started(now))
