"""Gateway webhook events: whether one was already applied.

Remembering an event is ``settlement.remember_webhook_event``, done after its fact is applied,
so a delivery that fails half-way is applied by the gateway's retry.
"""

from __future__ import annotations

from collector.db.pool import Executor
from collector.db.queries import QUERIES


async def webhook_event_seen(db: Executor, *, gateway: str, event_id: str) -> bool:
    """True when this gateway's event was applied and remembered before (a replay)."""
    seen = await db.fetchval(QUERIES["webhooks.event_seen"], gateway, event_id)
    return bool(seen)
