"""The ``collection_runs`` table: one row per pass, and the pass's liveness lock.

A pass opens its row and takes its lock in one statement (:func:`open_run`) and closes the row
itself, completed or failed with its reason (:func:`finish_run`). A pass that cannot close it
(killed, or the database gone) leaves it 'running', its lock freed by PostgreSQL with its
session; the next pass closes such rows as 'abandoned' (:func:`abandon_dead_runs`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from collector.db.attempts import LIVENESS_NAMESPACE
from collector.db.pool import took_session_lock
from collector.db.queries import QUERIES
from collector.domain import PassCounts, RunStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class AbandonedRun:
    """A run another pass found 'running' without its liveness lock, and closed."""

    run_id: int
    host: str
    pid: int
    started_at: datetime


async def start_run(pool: asyncpg.Pool, *, as_of: date, host: str, pid: int) -> int:
    """Open the record of a pass, without its liveness lock, and return its id (a pass uses
    :func:`open_run`; tests use this to play a pass that died)."""
    async with pool.acquire() as conn:
        run_id: int = await conn.fetchval(QUERIES["runs.start"], as_of, host, pid)
    return run_id


async def finish_run(
    pool: asyncpg.Pool, run_id: int, *, counts: PassCounts, error: str | None = None
) -> None:
    """Close the record of a pass: completed, or failed with the error."""
    async with pool.acquire() as conn:
        await conn.execute(
            QUERIES["runs.finish"],
            run_id,
            RunStatus.FAILED if error else RunStatus.COMPLETED,
            counts.due,
            counts.succeeded,
            counts.declined,
            counts.in_doubt,
            counts.processing,
            counts.failed,
            counts.reconciled,
            counts.charged_cents,
            error,
        )


@asynccontextmanager
async def liveness_lock(pool: asyncpg.Pool, run_id: int) -> AsyncIterator[None]:
    """Hold the pass's advisory lock on a connection of its own for as long as the pass runs.

    If the process dies, its connection closes and PostgreSQL frees the lock at once, which
    tells the next pass that this pass's pending attempts are orphans (see claim_unresolved).
    """
    # Run ids are bigserial; the two-key advisory lock takes int4. Ids stay far below 2**31
    # (one row per pass), and claim_unresolved compares the same value.
    async with pool.acquire() as conn:
        await conn.execute(QUERIES["runs.take_liveness_lock"], LIVENESS_NAMESPACE, run_id)
        took_session_lock(conn)
        try:
            yield
        finally:
            await _release_liveness_lock(conn, run_id)


@dataclass(frozen=True, slots=True)
class OpenRun:
    """A pass's run row, opened, and the session that holds its liveness lock."""

    run_id: int
    _conn: PoolConnectionProxy

    async def lock_held(self) -> bool:
        """Whether the pass's session is still there and holds its liveness lock: False once
        the database dropped it (then other passes take the pass for dead)."""
        if _gone(self._conn):
            return False
        try:
            held: bool = await self._conn.fetchval(
                QUERIES["runs.holds_liveness_lock"], LIVENESS_NAMESPACE, self.run_id
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return False
        return held


@asynccontextmanager
async def open_run(
    pool: asyncpg.Pool, *, as_of: date, host: str, pid: int
) -> AsyncIterator[OpenRun]:
    """Open the record of a pass and hold its liveness lock until the block ends.

    Row and lock come in one statement on the lock's own connection, so no other pass can
    see the row 'running' before its lock is held and take it for dead.
    """
    async with pool.acquire() as conn:
        run_id: int = await conn.fetchval(
            QUERIES["runs.open"], as_of, host, pid, LIVENESS_NAMESPACE
        )
        took_session_lock(conn)
        try:
            yield OpenRun(run_id, conn)
        finally:
            await _release_liveness_lock(conn, run_id)


async def _release_liveness_lock(conn: PoolConnectionProxy, run_id: int) -> None:
    try:
        await conn.execute(QUERIES["runs.release_liveness_lock"], LIVENESS_NAMESPACE, run_id)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        # A lock dies with its session: when the connection is gone (the database went
        # away, which is what the pass is failing of), there is nothing left to release,
        # and the pass's own error is the one to report.
        if not _gone(conn):
            raise


def _gone(conn: PoolConnectionProxy) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        # The pool has already taken back a connection that was lost under it.
        return True


async def abandon_dead_runs(pool: asyncpg.Pool) -> list[AbandonedRun]:
    """Close as 'abandoned' every run still 'running' whose liveness lock is free (its process
    died before it could close it); return them."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(QUERIES["runs.abandon_dead"], LIVENESS_NAMESPACE)
    return [
        AbandonedRun(run_id=r["id"], host=r["host"], pid=r["pid"], started_at=r["started_at"])
        for r in rows
    ]


async def ensure_statistics(pool: asyncpg.Pool) -> bool:
    """ANALYZE the claim's tables when any has never been analyzed; True when it did.

    Without statistics (a book bulk-loaded minutes ago, before autovacuum came by) the claim
    was planned from payment_methods outwards: seconds a batch at 240,000 installments,
    against milliseconds with them.
    """
    async with pool.acquire() as conn:
        if not await conn.fetch(QUERIES["runs.never_analyzed"]):
            return False
        await conn.execute(QUERIES["runs.analyze"])
    return True


async def record_failed_start(
    pool: asyncpg.Pool, *, as_of: date, host: str, pid: int, error: str
) -> int:
    """Record a pass that failed before it began (its gateways would not open), closed as
    failed with ``error``; return its id."""
    async with pool.acquire() as conn:
        run_id: int = await conn.fetchval(QUERIES["runs.failed_start"], as_of, host, pid, error)
    return run_id


async def mark_failed(pool: asyncpg.Pool, run_id: int, *, error: str) -> None:
    """Close completed run ``run_id`` as failed after all, with ``error`` (its metrics could
    not be exported: monitoring is blind to it)."""
    async with pool.acquire() as conn:
        await conn.execute(QUERIES["runs.mark_failed"], run_id, error)
