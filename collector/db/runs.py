"""The ``collection_runs`` table: one row per pass, and the pass's liveness lock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

import asyncpg

from collector.db.attempts import LIVENESS_NAMESPACE
from collector.db.queries import QUERIES
from collector.domain import PassCounts


async def start_run(pool: asyncpg.Pool, *, as_of: date, host: str, pid: int) -> int:
    """Open the record of a pass and return its id."""
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
            "failed" if error else "completed",
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
        try:
            yield
        finally:
            await conn.execute(QUERIES["runs.release_liveness_lock"], LIVENESS_NAMESPACE, run_id)


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
