"""``collector daemon``: serve the portal API and /metrics, and run collection passes on a
schedule: once a day at ``COLLECTOR_SCHEDULE_TIME`` (the lessor's local time), then a retry
pass every ``COLLECTOR_RETRY_INTERVAL_S`` until the day ends (each pass also reconciles what
is in doubt). A daemon started after the day's time runs a pass at once.

SIGTERM or SIGINT stops claiming new work; charges already claimed are sent and recorded; the
process exits 0 within ``COLLECTOR_SHUTDOWN_GRACE_S``. Past the grace period the pass is
cancelled: answers already received are still recorded (the recorder is shielded) and claims
never sent stay pending for the next pass to re-drive under their keys. Two daemons on one
database are safe: passes claim with SKIP LOCKED.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import anyio
import asyncpg

from collector.api.app import create_app, walk_routes
from collector.api.server import Listening, serve_api
from collector.config import Settings
from collector.failures import describe_failure
from collector.gateways.base import Gateway
from collector.jobs.ach_files import export_after_pass
from collector.jobs.charging import Charger
from collector.jobs.collect import run_pass
from collector.jobs.deliver import deliver_forever
from collector.jobs.gauges import refresh_forever, refresh_gauges
from collector.logs import get_logger
from collector.schedule import DailySchedule, next_pass_at, run_schedule

# next_pass_at lives in collector.schedule; kept importable from here for its callers.
__all__ = ["next_pass_at", "serve"]

log = get_logger()

Clock = Callable[[], datetime]


async def _schedule_passes(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    *,
    stop: anyio.Event,
    clock: Clock,
    charger: Charger,
) -> None:
    schedule = DailySchedule(
        zone=ZoneInfo(settings.timezone),
        daily=time.fromisoformat(settings.schedule_time),
        retry_interval=timedelta(seconds=settings.retry_interval_s),
    )

    async def one_pass(as_of: date) -> None:
        async def export_files() -> None:
            await export_after_pass(pool, gateways, as_of=as_of, now=clock())

        try:
            await run_pass(
                pool,
                gateways,
                settings,
                as_of=as_of,
                stop=stop,
                charger=charger,
                finish=[export_files],
                clock=clock,
            )
        except Exception as exc:
            # One failed pass must not end the daemon: the next one retries, and
            # collector_passes_total{status="failed"} pages someone (run_pass counted it,
            # whatever step failed, and logged pass_failed with the reason).
            log.error("scheduled_pass_failed", as_of=as_of.isoformat(), error=describe_failure(exc))

    await run_schedule(schedule, one_pass, clock=clock, stop=stop)


async def serve(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    *,
    host: str,
    port: int,
    schedule: bool,
    clock: Clock,
) -> None:
    """Serve and collect until SIGTERM/SIGINT, then stop within the grace period."""
    # The gauges start from the database, not from zero: a restart must not look like a stall.
    await refresh_gauges(pool, settings, now=clock())
    # One charger for the API's manual payments and the scheduled passes: each gateway's rate
    # limit is the process's, not one per path.
    charger = Charger.for_settings(gateways, settings)
    app = create_app(settings, pool, gateways, clock=clock, charger=charger)
    # Built now, not by the first customers' requests (and frozen with the rest below).
    await walk_routes(app)
    # Everything imported and built so far lives as long as the process: keep it out of the
    # garbage collector's scans, whose pauses showed in the API's tail latency.
    gc.freeze()
    stop = anyio.Event()
    stop_serving = anyio.Event()
    async with anyio.create_task_group() as tg:
        listening: Listening = await tg.start(
            partial(serve_api, app, settings, host=host, port=port, stop=stop_serving)
        )
        # The gauges stay true between passes: after midnight, and for passes of other hosts.
        refreshing = anyio.CancelScope()

        async def refresh() -> None:
            with refreshing:
                await refresh_forever(pool, settings, clock=clock)

        tg.start_soon(refresh)
        log.info(
            "daemon_started",
            host=host,
            port=listening.port,
            schedule=schedule,
            http_max_connections=listening.limits.max_connections,
            http_backlog=listening.limits.backlog,
            open_file_limit=listening.limits.open_file_limit,
        )
        async with anyio.create_task_group() as work:
            if schedule:
                work.start_soon(
                    lambda: _schedule_passes(
                        pool, gateways, settings, stop=stop, clock=clock, charger=charger
                    )
                )
            if settings.webhook_endpoints:
                # The outbox's webhooks, continuously (collector/jobs/deliver.py).
                work.start_soon(partial(deliver_forever, pool, settings, stop=stop))
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("daemon_stopping", signal=signal.Signals(signum).name)
                    stop.set()
                    # The portal takes no new request from now on (answered 503 until the
                    # listener closes): the requests in flight finish while the pass drains,
                    # within the same grace, not one after the other (a payment taken now
                    # would be charged after the signal).
                    app.state.drain.start()
                    stop_serving.set()
                    break
            # Claims stop at once; what was claimed is charged and recorded, within the grace.
            work.cancel_scope.deadline = anyio.current_time() + settings.shutdown_grace_s
        refreshing.cancel()
    log.info("daemon_stopped")
