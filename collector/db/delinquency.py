"""Delinquency aging's repository: the per-date snapshot a pass writes, the charge-off, and
the report's reads (``sql/queries/delinquency.sql``; the charge-off's journal rows through
``money_charge_off_v1`` in ``sql/0015_delinquency.sql``). Every statement is set-based: one
per pass for the snapshot and one for the charge-off, whatever the size of the book."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.aging import BucketTotal, bucket_labels
from collector.db.pool import Executor, transaction
from collector.db.queries import QUERIES
from collector.db.routing import one_node, shard_groups

# Two passes of one business date write its snapshot one after the other (a lock per date,
# held to the end of the writing transaction).
_SNAPSHOT_LOCK = 0x64656C71  # "delq"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargedOff:
    lease_id: int
    customer_id: int
    cents: int


async def write_snapshot(
    pool: asyncpg.Pool | asyncpg.pool.PoolConnectionProxy | asyncpg.Connection,
    *,
    as_of: date,
    edges: Sequence[int],
) -> list[BucketTotal]:
    """Write the snapshot of business date ``as_of`` (replacing one an earlier pass of the
    same date wrote) and, in its transaction, a ``lease.delinquent`` event per lease whose
    bucket changed since the previous snapshot; return its bucket totals, ``current`` first."""
    if isinstance(pool, asyncpg.Pool):
        async with pool.acquire() as conn:
            return await write_snapshot(conn, as_of=as_of, edges=edges)
    async with pool.transaction():
        await pool.execute(QUERIES["delinquency.lock_date"], _SNAPSHOT_LOCK, as_of.toordinal())
        await pool.execute(QUERIES["delinquency.clear_snapshot"], as_of)
        rows = await pool.fetch(
            QUERIES["delinquency.write_snapshot"], as_of, list(edges), bucket_labels(edges)
        )
        # lease.delinquent for each lease whose bucket changed, with the snapshot (issue 10).
        await pool.execute(QUERIES["delinquency.bucket_events"], as_of)
    return [
        BucketTotal(bucket=r["bucket"], leases=r["leases"], cents=r["past_due_cents"]) for r in rows
    ]


async def charge_off(db: Executor, *, as_of: date, days: int, source: str) -> list[ChargedOff]:
    """Charge off the active leases more than ``days`` days past due on ``as_of``: one
    statement on one node; on Citus the candidates' customers read once, then one call per
    shard group of them (sql/0027)."""
    if await one_node(db):
        rows = await db.fetch(QUERIES["delinquency.charge_off"], as_of, days, source)
    else:
        customers = [
            r["customer_id"]
            for r in await db.fetch(QUERIES["delinquency.charge_off_candidates"], as_of, days)
        ]
        rows = []
        for group in await shard_groups(db, customers):
            async with transaction(db) as conn:
                rows += await conn.fetch(
                    QUERIES["delinquency.charge_off_group"], as_of, days, source, group
                )
    return [
        ChargedOff(lease_id=r["lease_id"], customer_id=r["customer_id"], cents=r["cents"])
        for r in rows
    ]


async def snapshot_on_or_before(db: Executor, day: date) -> date | None:
    """The business date of the latest snapshot on or before ``day``."""
    found: date | None = await db.fetchval(QUERIES["delinquency.snapshot_dates"], day)
    return found


async def totals(db: Executor, day: date) -> dict[str, BucketTotal]:
    """The bucket totals of the snapshot of ``day``."""
    return {
        r["bucket"]: BucketTotal(bucket=r["bucket"], leases=r["leases"], cents=r["past_due_cents"])
        for r in await db.fetch(QUERIES["delinquency.totals"], day)
    }


async def moves(db: Executor, earlier: date, later: date) -> list[tuple[str, str, int, int]]:
    """(from bucket, to bucket, leases, cents) of snapshot ``earlier``'s leases by ``later``."""
    rows = await db.fetch(QUERIES["delinquency.roll_rates"], earlier, later)
    return [(r["from_bucket"], r["to_bucket"], r["leases"], r["cents"]) for r in rows]


async def recoveries(db: Executor, day: date) -> tuple[int, int]:
    """(leases, cents) recovered after charge-off, settled on or before ``day``."""
    row = await db.fetchrow(QUERIES["delinquency.recoveries"], day)
    assert row is not None
    return row["leases"], row["cents"]


async def lease_days_past_due(db: Executor, lease_id: int, *, today: date) -> int:
    """The lease's days past due on ``today`` (0: nothing past due)."""
    days: int = await db.fetchval(QUERIES["delinquency.lease_aging"], lease_id, today)
    return days
