"""Notices the engine owes customers ahead of a collection (issue 10), written to the outbox
by every pass before it claims anything:

- ``debit.upcoming`` (Regulation E, 12 CFR 1005.10(d)) for each automatic collection,
  ``COLLECTOR_DEBIT_NOTICE_DAYS`` (3) before it, and 10 days before when its amount differs
  from the previous debit and the customer's range does not cover it; once per installment,
  date and amount. The eligibility check holds back a varying debit whose notice was late;
- ``method.expiring`` when the primary card expires before the next collection date,
  ``COLLECTOR_CARD_EXPIRY_NOTICE_DAYS`` ahead, once per card and date.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg

from collector.config import Settings
from collector.db.notices import UpcomingDebit, upcoming_debits, write_debit_notices
from collector.db.pool import execute_counted
from collector.db.queries import QUERIES
from collector.eligibility import VARYING_DEBIT_NOTICE_DAYS, debit_varies, notice_required
from collector.logs import get_logger

log = get_logger()


# Upcoming debits read and their notices written per statement. Each batch costs a plan and
# a round trip of each statement (in batches of 500 the notices of 20,000 debits cost 718 ms
# of the server's time against 553 ms in one statement); a batch of 5,000 holds a few MB.
NOTICE_BATCH = 5_000


async def write_due_notices(
    pool: asyncpg.Pool, settings: Settings, *, as_of: date, batch_size: int = NOTICE_BATCH
) -> int:
    """Write the notices due on business date ``as_of``; how many were new. The upcoming
    debits are read ``batch_size`` at a time."""
    written = await _debit_notices(pool, settings, as_of=as_of, batch_size=batch_size)
    expiring = await execute_counted(
        pool, QUERIES["notices.expiring_cards"], as_of, settings.card_expiry_notice_days
    )
    if expiring:
        log.info("notices_written", type="method.expiring", count=expiring)
    return written + expiring


async def _debit_notices(
    pool: asyncpg.Pool, settings: Settings, *, as_of: date, batch_size: int
) -> int:
    """The debit notices due on ``as_of``, a batch of upcoming debits at a time: the horizon
    holds ten days of collections, which a pass must not hold in memory at once (nor write in
    one statement). Each batch's notices commit on their own; a pass that stops part way
    leaves the rest to the next one, which writes each notice once all the same."""
    horizon = max(settings.debit_notice_days, VARYING_DEBIT_NOTICE_DAYS)
    written = 0
    async for batch in upcoming_debits(pool, as_of=as_of, days=horizon, batch_size=batch_size):
        written += await write_debit_notices(pool, _due(batch, settings, as_of), as_of=as_of)
    if written:
        log.info("notices_written", type="debit.upcoming", count=written)
    return written


def _due(
    debits: Sequence[UpcomingDebit], settings: Settings, as_of: date
) -> list[tuple[UpcomingDebit, bool]]:
    """Those of ``debits`` whose notice is due on ``as_of``, each with whether it varies."""
    due = []
    for debit in debits:
        ahead = (
            VARYING_DEBIT_NOTICE_DAYS
            if notice_required(debit.amount_cents, debit.facts)
            else settings.debit_notice_days
        )
        if (debit.collection_on - as_of).days <= ahead:
            due.append((debit, debit_varies(debit.amount_cents, debit.facts)))
    return due
