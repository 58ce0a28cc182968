"""Notices the engine owes customers ahead of a collection (issue 10), written to the outbox
by every pass before it claims anything: ``method.expiring`` when the primary card expires
before the next collection date, ``COLLECTOR_CARD_EXPIRY_NOTICE_DAYS`` ahead, once per card
and date."""

from __future__ import annotations

from datetime import date

import asyncpg

from collector.config import Settings
from collector.db.queries import QUERIES
from collector.logs import get_logger

log = get_logger()


async def write_due_notices(pool: asyncpg.Pool, settings: Settings, *, as_of: date) -> int:
    """Write the notices due on business date ``as_of``; how many were new."""
    rows = await pool.fetch(
        QUERIES["notices.expiring_cards"], as_of, settings.card_expiry_notice_days
    )
    if rows:
        log.info("notices_written", type="method.expiring", count=len(rows))
    return len(rows)
