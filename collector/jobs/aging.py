"""Delinquency aging in a pass: charge off what is too far past due (before anything is
claimed, so the pass never presents money of a lease it charges off), and write the
business date's snapshot once the pass's own collections are recorded (each one set-based
statement; see :mod:`collector.db.delinquency`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg

from collector.aging import BucketTotal, RollRow, all_buckets, roll_rates
from collector.config import Settings
from collector.db import delinquency
from collector.logs import get_logger
from collector.metrics import CHARGED_OFF_CENTS, CHARGED_OFF_LEASES, set_delinquency_gauges

log = get_logger()

CHARGE_OFF_SOURCE = "charge_off"


async def charge_off(pool: asyncpg.Pool, settings: Settings, *, as_of: date) -> int:
    """Charge off the leases more than ``settings.charge_off_days`` past due; how many."""
    if not settings.charge_off_days:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        done = await delinquency.charge_off(
            conn, as_of=as_of, days=settings.charge_off_days, source=CHARGE_OFF_SOURCE
        )
    for lease in done:
        CHARGED_OFF_LEASES.inc()
        CHARGED_OFF_CENTS.inc(lease.cents)
        log.warning(
            "lease_charged_off",
            lease_id=lease.lease_id,
            amount_cents=lease.cents,
            days=settings.charge_off_days,
        )
    return len(done)


async def snapshot(pool: asyncpg.Pool, settings: Settings, *, as_of: date) -> list[BucketTotal]:
    """Write the delinquency snapshot of ``as_of`` and show it on the gauges."""
    if not settings.delinquency_snapshots:
        return []
    totals = await delinquency.write_snapshot(
        pool, as_of=as_of, edges=settings.delinquency_bucket_days
    )
    set_delinquency_gauges(totals)
    return totals


@dataclass(frozen=True, slots=True, kw_only=True)
class DelinquencyReport:
    """The buckets of one snapshot, and the roll rates from an earlier one."""

    asked_for: date
    as_of: date | None  # the snapshot read: the latest on or before the date asked for
    buckets: list[BucketTotal]
    compared_with: date | None  # the earlier snapshot of the roll rates, if there is one
    roll_rates: list[RollRow]
    recovered_leases: int
    recovered_cents: int


async def report(pool: asyncpg.Pool, settings: Settings, *, day: date) -> DelinquencyReport:
    """Read the delinquency report of ``day`` (from the snapshots; reads only)."""
    edges = settings.delinquency_bucket_days
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        as_of = await delinquency.snapshot_on_or_before(conn, day)
        found = await delinquency.totals(conn, as_of) if as_of else {}
        earlier = None
        if as_of is not None:
            earlier = await delinquency.snapshot_on_or_before(
                conn, as_of - timedelta(days=settings.roll_rate_days)
            )
        moves = await delinquency.moves(conn, earlier, as_of) if earlier and as_of else []
        recovered = await delinquency.recoveries(conn, as_of or day)
    return DelinquencyReport(
        asked_for=day,
        as_of=as_of,
        buckets=[
            found.get(b, BucketTotal(bucket=b, leases=0, cents=0)) for b in all_buckets(edges)
        ],
        compared_with=earlier,
        roll_rates=roll_rates(moves, edges) if earlier else [],
        recovered_leases=recovered[0],
        recovered_cents=recovered[1],
    )
