"""The gauges, read from the database and the outbox, true between passes.

Every pass refreshes them when it ends, and the daemon every ``COLLECTOR_METRICS_REFRESH_S``
(:func:`refresh_forever`), so that after midnight the service level describes the new
business date, and a pass run by another host or a cron job shows on this one. Times are
exported as Unix timestamps and the rules compute ages with ``time()``: a gauge that stood
still between refreshes (a textfile until the next run) would otherwise show an age that
stopped growing.

The business date's totals (``collector_business_day_*``: attempts by outcome, money taken,
passes, ACH settled and returned, charge-offs, refusals, rows set aside) are read here too,
from the database: a textfile host's counters hold only the last process's pass, so the
dashboard reads these where it needs a total.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import anyio
import asyncpg

from collector.config import Settings
from collector.db import promises
from collector.db.stats import Snapshot, business_day, snapshot
from collector.failures import describe_failure
from collector.logs import get_logger
from collector.metrics import (
    ACH_OUTBOX_FILES,
    ACH_OUTBOX_OLDEST,
    NEXT_PASS_DUE_BY,
    PASS_RUNNING_SINCE,
    set_business_day_gauges,
    set_gauges,
    set_promise_gauges,
)
from collector.schedule import Clock, local_at

log = get_logger()


def next_pass_due_by(snap: Snapshot, settings: Settings, *, today: date) -> datetime:
    """When a completed pass for the business date after the last completed one is due: that
    date at ``COLLECTOR_PASS_DEADLINE_TIME`` in the lessor's zone (today's, when no pass ever
    completed). A catch-up pass for an earlier date never moves it back."""
    due_for = (
        snap.last_completed_as_of + timedelta(days=1)
        if snap.last_completed_as_of is not None
        else today
    )
    at = datetime.strptime(settings.pass_deadline_time, "%H:%M").time()
    return local_at(due_for, at, settings.zone)


@dataclass(frozen=True, slots=True)
class Outbox:
    """What is waiting in the NACHA outbox for the bank to collect."""

    files: int
    oldest_mtime: float


def read_outbox(outbox: Path) -> Outbox:
    """Count the NACHA files in ``outbox`` (not the exporter's hidden temporary files)."""
    files, oldest = 0, 0.0
    with os.scandir(outbox) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            files += 1
            mtime = entry.stat(follow_symlinks=False).st_mtime
            oldest = mtime if oldest == 0.0 else min(oldest, mtime)
    return Outbox(files=files, oldest_mtime=oldest)


async def refresh_gauges(pool: asyncpg.Pool, settings: Settings, *, now: datetime) -> Snapshot:
    """Set every database- and outbox-derived gauge for the business date of ``now``."""
    today = now.astimezone(settings.zone).date()
    snap = await snapshot(pool, as_of=today)
    set_gauges(snap)
    day = await business_day(pool, as_of=today, zone=settings.zone)
    set_business_day_gauges(day, start=local_at(today, time(0), settings.zone))
    set_promise_gauges(await promises.counts(pool))
    NEXT_PASS_DUE_BY.set(next_pass_due_by(snap, settings, today=today).timestamp())
    PASS_RUNNING_SINCE.set(snap.running_since.timestamp() if snap.running_since else 0.0)
    if settings.nacha_outbox is not None and "nacha" in settings.gateways:
        try:
            outbox = await anyio.to_thread.run_sync(read_outbox, settings.nacha_outbox)
        except OSError as exc:
            log.error("outbox_unreadable", outbox=str(settings.nacha_outbox), error=str(exc))
        else:
            ACH_OUTBOX_FILES.set(outbox.files)
            ACH_OUTBOX_OLDEST.set(outbox.oldest_mtime)
    return snap


async def refresh_forever(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Refresh the gauges every ``COLLECTOR_METRICS_REFRESH_S`` until cancelled; a refresh
    that fails (the database away) is logged and the gauges keep their last values."""
    while True:
        try:
            await refresh_gauges(pool, settings, now=clock())
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("gauges_refresh_failed", error=describe_failure(exc))
        await sleep(settings.metrics_refresh_s)
