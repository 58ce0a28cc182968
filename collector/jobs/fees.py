"""Late fees in a pass: after the charge-off (a lease charged off is never charged a fee) and
before the notices and the claim (a debit's notice and its amount include the fee), one
set-based statement assesses every fee due (see :mod:`collector.db.fees`)."""

from __future__ import annotations

from datetime import date

import asyncpg

from collector.config import Settings
from collector.db import fees
from collector.logs import get_logger
from collector.metrics import LATE_FEES_ASSESSED, LATE_FEES_ASSESSED_CENTS

log = get_logger()

FEE_SOURCE = "late_fee"


async def assess_fees(pool: asyncpg.Pool, settings: Settings, *, as_of: date) -> fees.Assessed:
    """Assess the late fees due on ``as_of`` (nothing when late fees are off)."""
    if not settings.late_fees:
        return fees.Assessed(fees=0, cents=0)
    async with pool.acquire() as conn, conn.transaction():
        done = await fees.assess(conn, settings.fee_table, as_of=as_of, source=FEE_SOURCE)
    if done.fees:
        LATE_FEES_ASSESSED.inc(done.fees)
        LATE_FEES_ASSESSED_CENTS.inc(done.cents)
        log.info("late_fees_assessed", count=done.fees, amount_cents=done.cents)
    return done
