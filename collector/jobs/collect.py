"""One collection pass: reconcile what earlier passes left unresolved, then claim every
installment due by ``as_of``, charge each through its gateway, and record the answers.

The pass is a pipeline of bounded streams, so memory does not grow with the number due::

    claimers --(claims, one batch buffered)--> chargers x concurrency
             --(answers, one batch buffered)--> recorder (one statement per batch)

Every claim commits its pending attempts before any gateway call (see DESIGN.md, "The
exactly-once protocol"); a pass that dies leaves pending attempts that the next pass's
reconciliation resolves by key.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime

import anyio
import asyncpg
import structlog
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from collector.business_dates import check_in_range
from collector.config import Settings
from collector.db.attempts import ClaimCursor
from collector.db.audit import export_audit_gauges, run_audit
from collector.db.runs import (
    OpenRun,
    abandon_dead_runs,
    ensure_statistics,
    finish_run,
    open_run,
)
from collector.domain import ClaimedCharge, PassCounts
from collector.exceptions import DatabaseError
from collector.failures import describe_failure
from collector.gateways.base import Gateway
from collector.jobs import aging, promises
from collector.jobs.charging import RECORD_SHIELD_S, Answer, Charger, Recorder, send_soon
from collector.jobs.fees import assess_fees
from collector.jobs.gauges import refresh_gauges
from collector.jobs.notices import write_due_notices
from collector.jobs.prenotes import send_prenotes
from collector.jobs.presentment import claim
from collector.jobs.reconcile import reconcile
from collector.jobs.settle import settle
from collector.logs import get_logger
from collector.metrics import PASS_DURATION, PASS_RUNNING_SINCE, PASSES
from collector.watchdog import PassProgress, watching

log = get_logger()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PassResult:
    """The outcome of one pass, as the CLI prints it."""

    run_id: int
    as_of: date
    counts: PassCounts
    duration_s: float


async def run_pass(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    *,
    as_of: date,
    progress: Callable[[int], None] | None = None,
    stop: anyio.Event | None = None,
    charger: Charger | None = None,
    on_started: Callable[[int], Awaitable[object]] | None = None,
    finish: Sequence[Callable[[], Awaitable[object]]] = (),
    clock: Callable[[], datetime] = _utcnow,
) -> PassResult:
    """Run one complete pass for business date ``as_of``; raise only if it could not run.

    ``charger``: the process's one Charger, when it has one (the daemon shares it with the
    API, so each gateway's rate limit holds for the process, not per path); else a new one.
    ``on_started(run_id)``: called once the run row is open (the CLI leaves its textfile
    saying a pass runs). ``finish``: steps that belong to the pass after its charges (the
    NACHA export): one that fails fails the pass, with its run row closed and counted.

    A pass that fails at any step, before its run row exists too, counts in
    ``collector_passes_total{status="failed"}`` and logs ``pass_failed`` with its reason.
    """
    # The entry points refuse such a date first, with the flag that allows it; this is the
    # backstop of every caller, before anything is written (DateOutOfRange).
    check_in_range(as_of)
    started = time.monotonic()
    counts = PassCounts()
    try:
        if await ensure_statistics(pool):
            log.info("statistics_refreshed")
        run_cm = open_run(pool, as_of=as_of, host=socket.gethostname(), pid=os.getpid())
        run = await run_cm.__aenter__()
    except BaseException as exc:
        # No run row to close: the database refused the start (or is gone). Counted all the
        # same, or a daemon whose every pass fails at start looks merely idle.
        PASSES.labels(status="failed").inc()
        if isinstance(exc, Exception):
            log.error(
                "pass_failed", step="start", as_of=as_of.isoformat(), error=describe_failure(exc)
            )
        raise
    async with _entered(run_cm, run):
        run_id = run.run_id
        structlog.contextvars.bind_contextvars(run_id=run_id, as_of=as_of.isoformat())
        watch = PassProgress(counts)
        PASS_RUNNING_SINCE.set(time.time())
        log.info("pass_started", host=socket.gethostname(), pid=os.getpid())
        try:
            # The gauges as of the start: a run's textfile, written next, must say when the
            # day's pass is due and when the last one succeeded while this one runs (or hangs).
            # (The refresh reads this pass's start from its run row, or an older pass's still
            # running; without the database the time set above stays.)
            await _refresh_gauges(pool, settings, clock)
            if on_started is not None:
                await on_started(run_id)
            async with watching(
                watch,
                interval_s=settings.progress_interval_s,
                stall_s=settings.watchdog_stall_s,
            ):
                await _steps(
                    pool,
                    gateways,
                    settings,
                    counts,
                    watch,
                    as_of,
                    run_id,
                    stop,
                    charger,
                    progress,
                    finish,
                )
            # Closed while its liveness lock is still held: no other pass sees it in between.
            await finish_run(pool, run_id, counts=counts)
        except BaseException as exc:
            failure = await _lost_session(run, exc)
            reason = describe_failure(failure or exc)
            await _record_failure(pool, run_id, counts, reason)
            PASSES.labels(status="failed").inc()
            PASS_RUNNING_SINCE.set(0)
            log.error("pass_failed", step=watch.step, error=reason, **_fields(counts))
            structlog.contextvars.unbind_contextvars("run_id", "as_of")
            if failure is not None:
                raise failure from exc
            raise
    PASS_RUNNING_SINCE.set(0)
    duration_s = time.monotonic() - started
    PASSES.labels(status="completed").inc()
    PASS_DURATION.observe(duration_s)
    await _refresh_gauges(pool, settings, clock)
    log.info("pass_finished", duration_ms=round(duration_s * 1000), **_fields(counts))
    if settings.audit_after_pass:
        await _audit(pool, settings)
    structlog.contextvars.unbind_contextvars("run_id", "as_of")
    return PassResult(run_id=run_id, as_of=as_of, counts=counts, duration_s=duration_s)


async def _refresh_gauges(
    pool: asyncpg.Pool, settings: Settings, clock: Callable[[], datetime]
) -> None:
    try:
        await refresh_gauges(pool, settings, now=clock())
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # The pass goes on (or is done and recorded); the gauges keep their values until the
        # next refresh.
        log.error("gauges_refresh_failed", error=describe_failure(exc))


@asynccontextmanager
async def _entered(
    manager: AbstractAsyncContextManager[OpenRun], run: OpenRun
) -> AsyncIterator[None]:
    """Leave ``manager`` (already entered, as ``run``) when the block ends, as ``async with``
    would have: the run's entry is outside the block so that a failed start is told apart."""
    try:
        yield
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)


async def _steps(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    counts: PassCounts,
    watch: PassProgress,
    as_of: date,
    run_id: int,
    stop: anyio.Event | None,
    charger: Charger | None,
    progress: Callable[[int], None] | None,
    finish: Sequence[Callable[[], Awaitable[object]]],
) -> None:
    """The pass's work, step by step; the watchdog reads ``watch.step``."""
    watch.enter("abandon_dead_runs")
    for dead in await abandon_dead_runs(pool):
        log.warning(
            "run_abandoned",
            abandoned_run_id=dead.run_id,
            host=dead.host,
            pid=dead.pid,
            started_at=dead.started_at.isoformat(),
        )
    charger = charger or Charger.for_settings(gateways, settings)
    recorder = Recorder(
        pool,
        counts,
        as_of=as_of,
        retry_days=settings.soft_retry_days,
        batch_size=settings.batch_size,
        progress=progress,
        card_rules=settings.card_rules,
    )
    watch.enter("reconcile")
    counts.reconciled = await reconcile(
        pool,
        charger,
        recorder,
        gateways=list(gateways),
        run_id=run_id,
        batch_size=settings.batch_size,
        concurrency=settings.concurrency,
        deadline_s=settings.claim_deadline_s,
        card_rules=settings.card_rules,
    )
    watch.enter("settle")
    settled = await settle(
        pool,
        gateways,
        as_of=as_of,
        retry_days=settings.soft_retry_days,
        batch_size=settings.batch_size,
        concurrency=settings.concurrency,
    )
    counts.settled, counts.returned = settled.settled, settled.returned
    # Leases past the charge-off age are never charged again automatically: before the claim.
    watch.enter("charge_off")
    await aging.charge_off(pool, settings, as_of=as_of)
    # Late fees after the charge-off (none on a lease charged off) and before the notices
    # and the claim, which see what is owed with the fee.
    watch.enter("late_fees")
    await assess_fees(pool, settings, as_of=as_of)
    # Notices owed ahead of collections (the outbox), before anything is claimed.
    watch.enter("notices")
    await write_due_notices(pool, settings, as_of=as_of)
    # NACHA account validation: prenotes for new accounts with debits coming, before the claim
    # (whose eligibility check holds their first live debits until the prenotes are old
    # enough); the pass's export files them.
    watch.enter("prenotes")
    await send_prenotes(pool, gateways, as_of=as_of)
    # Promises asked to be collected on this date, before the claim (which passes over the
    # lease on that date: only the promised amount is taken).
    watch.enter("promises")
    await promises.collect_promised(pool, charger, gateways, settings, as_of=as_of)
    watch.enter("collect")
    await _collect_due(pool, charger, recorder, settings, gateways, counts, as_of, run_id, stop)
    # Kept, broken, cancelled: once the day's collections are recorded.
    watch.enter("promises")
    await promises.resolve_promises(pool, as_of=as_of)
    # The day's delinquency snapshot, once its collections are recorded.
    watch.enter("aging")
    await aging.snapshot(pool, settings, as_of=as_of)
    for step in finish:
        watch.enter("export")
        await step()


async def _lost_session(run: OpenRun, exc: BaseException) -> DatabaseError | None:
    """The pass's failure as what it is when the database dropped the pass's session.

    Its tasks then fail each of whatever the dropped connection did to it (an admin
    shutdown, a connection "released back to the pool", a protocol state error, a closed
    stream between them): the session that holds the liveness lock, asked, tells which.
    A cancellation (a stop, a deadline) stays what it is.
    """
    if not isinstance(exc, Exception):
        return None
    with anyio.move_on_after(RECORD_SHIELD_S, shield=True):
        if await run.lock_held():
            return None
    return DatabaseError(
        "lost the database connection mid-pass (the pass's session and its liveness lock are gone)"
    )


# How often a failed pass tries to close its run row: the first connection the pool hands out
# may be one the database already dropped (what the pass is failing of), the next a new one.
_RECORD_FAILURE_TRIES = 3


async def _record_failure(pool: asyncpg.Pool, run_id: int, counts: PassCounts, reason: str) -> None:
    """Close the run as failed with ``reason``, shielded from the cancellation that may be
    ending the pass; when the database cannot be reached the row stays 'running' for the next
    pass to close as abandoned (its liveness lock goes with this process's session)."""
    error: BaseException | None = None
    with anyio.move_on_after(RECORD_SHIELD_S, shield=True):
        for _ in range(_RECORD_FAILURE_TRIES):
            try:
                await finish_run(pool, run_id, counts=counts, error=reason)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                error = exc
                continue
            return
    log.error(
        "run_record_failed",
        error=describe_failure(error) if error is not None else "timed out",
        left="running, to be closed as abandoned by the next pass",
    )


async def _audit(pool: asyncpg.Pool, settings: Settings) -> None:
    """Check the ledger's invariants after the pass and show them on the gauges; an audit
    that cannot run is logged, never a failed pass (the money was recorded)."""
    try:
        report = await run_audit(
            pool,
            card_rules=settings.card_rules,
            sandbox_gateways=[g for g in settings.gateways if g.startswith("sandbox")],
            fee_table=settings.fee_table,
        )
    except DatabaseError as exc:
        log.error("audit_failed", error=str(exc))
        return
    export_audit_gauges(report)
    if not report.clean:
        log.error("audit_violations", total=report.total, **dict(report.counts))


def _fields(counts: PassCounts) -> dict[str, int]:
    return dataclasses.asdict(counts)


async def _collect_due(
    pool: asyncpg.Pool,
    charger: Charger,
    recorder: Recorder,
    settings: Settings,
    gateways: Mapping[str, Gateway],
    counts: PassCounts,
    as_of: date,
    run_id: int,
    stop: anyio.Event | None,
) -> None:
    claims_send, claims_recv = anyio.create_memory_object_stream[ClaimedCharge](settings.batch_size)
    answers_send, answers_recv = anyio.create_memory_object_stream[tuple[ClaimedCharge, Answer]](
        settings.batch_size
    )
    names = list(gateways)

    async def claim_loop(send: MemoryObjectSendStream[ClaimedCharge]) -> None:
        async with send, pool.acquire() as conn:
            cursor = ClaimCursor()
            while stop is None or not stop.is_set():
                # The claim, the eligibility verdicts and the money reserved commit together.
                to_send, refused = await claim(
                    conn,
                    as_of=as_of,
                    cursor=cursor,
                    limit=settings.batch_size,
                    gateways=names,
                    run_id=run_id,
                    deadline_s=settings.claim_deadline_s,
                    card_rules=settings.card_rules,
                )
                batch = len(to_send) + len(refused)
                if not batch:
                    if cursor.at_start:
                        return
                    # Rows another pass held when this cursor went by may be free now.
                    cursor.reset()
                    continue
                counts.due += batch
                counts.refused += len(refused)
                for claimed in to_send:
                    await send_soon(send, claimed)

    async def charge_loop(
        recv: ObjectReceiveStream[ClaimedCharge],
        send: MemoryObjectSendStream[tuple[ClaimedCharge, Answer]],
    ) -> None:
        async with recv, send:
            # The receive yields to the loop once a charge; the answer goes on without another
            # yield while the recorder's buffer has room.
            async for claimed in recv:
                await send_soon(send, (claimed, await charger.charge(claimed)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.drain, answers_recv)
        async with claims_recv, answers_send:
            for _ in range(settings.concurrency):
                tg.start_soon(charge_loop, claims_recv.clone(), answers_send.clone())
            async with anyio.create_task_group() as claimers:
                for _ in range(settings.claimers):
                    claimers.start_soon(claim_loop, claims_send.clone())
                await claims_send.aclose()
