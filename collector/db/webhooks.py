"""Gateway webhook events: whether one was already applied, and the attempt one names.

Remembering an event is ``settlement.remember_webhook_event``, done after its fact is applied,
so a delivery that fails half-way is applied by the gateway's retry.
"""

from __future__ import annotations

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.domain import MethodKind, NamedAttempt


async def webhook_event_seen(db: Executor, *, gateway: str, event_id: str) -> bool:
    """True when this gateway's event was applied and remembered before (a replay)."""
    seen = await db.fetchval(QUERIES["webhooks.event_seen"], gateway, event_id)
    return bool(seen)


async def attempt_named(db: Executor, idempotency_key: str) -> NamedAttempt | None:
    """The attempt made under this key, with what an event about it must match; None when
    the ledger has no such attempt."""
    row = await db.fetchrow(QUERIES["webhooks.attempt_named"], idempotency_key)
    if row is None:
        return None
    return NamedAttempt(
        attempt_id=row["attempt_id"],
        gateway=row["gateway"],
        gateway_ref=row["gateway_ref"],
        amount_cents=row["amount_cents"],
        method_kind=MethodKind(row["method_kind"]),
    )
