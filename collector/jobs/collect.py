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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

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
from collector.db.stats import snapshot
from collector.domain import ClaimedCharge, PassCounts
from collector.exceptions import DatabaseError
from collector.failures import describe_failure
from collector.gateways.base import Gateway
from collector.jobs import aging
from collector.jobs.charging import RECORD_SHIELD_S, Answer, Charger, Recorder, send_soon
from collector.jobs.presentment import claim
from collector.jobs.reconcile import reconcile
from collector.jobs.settle import settle
from collector.logs import get_logger
from collector.metrics import PASS_DURATION, PASSES, set_gauges

log = get_logger()


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
) -> PassResult:
    """Run one complete pass for business date ``as_of``; raise only if it could not run.

    ``charger``: the process's one Charger, when it has one (the daemon shares it with the
    API, so each gateway's rate limit holds for the process, not per path); else a new one.
    """
    # The entry points refuse such a date first, with the flag that allows it; this is the
    # backstop of every caller, before anything is written (DateOutOfRange).
    check_in_range(as_of)
    started = time.monotonic()
    if await ensure_statistics(pool):
        log.info("statistics_refreshed")
    counts = PassCounts()
    async with open_run(pool, as_of=as_of, host=socket.gethostname(), pid=os.getpid()) as run:
        run_id = run.run_id
        structlog.contextvars.bind_contextvars(run_id=run_id, as_of=as_of.isoformat())
        try:
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
            settled = await settle(
                pool,
                gateways,
                as_of=as_of,
                retry_days=settings.soft_retry_days,
                batch_size=settings.batch_size,
                concurrency=settings.concurrency,
            )
            counts.settled, counts.returned = settled.settled, settled.returned
            await aging.charge_off(pool, settings, as_of=as_of)
            await _collect_due(
                pool, charger, recorder, settings, gateways, counts, as_of, run_id, stop
            )
            await aging.snapshot(pool, settings, as_of=as_of)
            # Closed while its liveness lock is still held: no other pass sees it in between.
            await finish_run(pool, run_id, counts=counts)
        except BaseException as exc:
            failure = await _lost_session(run, exc)
            reason = describe_failure(failure or exc)
            await _record_failure(pool, run_id, counts, reason)
            PASSES.labels(status="failed").inc()
            log.error("pass_failed", error=reason, **_fields(counts))
            structlog.contextvars.unbind_contextvars("run_id", "as_of")
            if failure is not None:
                raise failure from exc
            raise
    duration_s = time.monotonic() - started
    PASSES.labels(status="completed").inc()
    PASS_DURATION.observe(duration_s)
    set_gauges(await snapshot(pool, as_of=as_of))
    log.info("pass_finished", duration_ms=round(duration_s * 1000), **_fields(counts))
    if settings.audit_after_pass:
        await _audit(pool, settings)
    structlog.contextvars.unbind_contextvars("run_id", "as_of")
    return PassResult(run_id=run_id, as_of=as_of, counts=counts, duration_s=duration_s)


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
        "lost the database connection mid-pass (the pass's session and its liveness lock are"
        " gone)"
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
