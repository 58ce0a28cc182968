"""The transactional outbox: events for the customer portal and the messaging service, and
their deliveries (issue 10).

An event is written in the transaction of the change it reports. Money events (a payment
that succeeded, failed, is pending settlement, an ACH return, a lease paid off) come from the
money journal itself: a deferred trigger on ``money_movements`` writes them when the
transaction that moved the money commits (``sql/0011_outbox.sql``), so every path that moves
money reports it and none can forget to. The batch paths write their attempts' events
themselves, a batch at a time (:func:`write_money_events`, ``sql/0016``), in the transaction
of the answers; the trigger then finds each one written. ``method.disabled`` comes from a trigger on
``payment_methods``. The others are written here, by :func:`write_event`, with the caller's
connection inside its transaction.

Each event is fanned out to the configured endpoints as one delivery row per endpoint
(:func:`dispatch`); ``collector.jobs.deliver`` claims the deliveries at the head of their
ordering key (:func:`claim`) and records what the endpoint answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from collector.db.pool import Executor, Pool
from collector.db.queries import QUERIES
from collector.exceptions import CollectorError
from collector.sensitive import holds_number


class EventType(StrEnum):
    """Every event type (the CHECK of ``outbox_events.type``)."""

    DEBIT_UPCOMING = "debit.upcoming"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_PENDING_SETTLEMENT = "payment.pending_settlement"
    ACH_RETURNED = "ach.returned"
    METHOD_DISABLED = "method.disabled"
    METHOD_EXPIRING = "method.expiring"
    PRIMARY_CHANGED = "primary.changed"
    LEASE_DELINQUENT = "lease.delinquent"
    LEASE_PAID_OFF = "lease.paid_off"


class EventStatus(StrEnum):
    """An event's delivery status over all endpoints, as ``collector events list`` shows it."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class SensitiveBody(CollectorError):
    """An event body holds what looks like a card or bank account number: it is never
    written (nor sent)."""


def sensitive_paths(value: Any, path: str = "") -> list[str]:
    """The paths of the strings in ``value`` that look like a card or account number."""
    if isinstance(value, str):
        return [path or "."] if holds_number(value) else []
    if isinstance(value, Mapping):
        found: list[str] = []
        for key, item in value.items():
            found += sensitive_paths(str(key), f"{path}.{key}[key]")
            found += sensitive_paths(item, f"{path}.{key}")
        return found
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in sensitive_paths(item, f"{path}[{i}]")]
    return []


def check_body(body: Mapping[str, Any]) -> None:
    """Raise SensitiveBody when a string of ``body`` looks like a card or account number
    (the message names where, never the value)."""
    paths = sensitive_paths(body)
    if paths:
        raise SensitiveBody(
            "an event body holds what looks like a card or account number at " + ", ".join(paths)
        )


def ordering_key(*, customer_id: int, lease_id: int | None) -> str:
    """Delivery keeps order within a lease, or within a customer for events of no lease."""
    return f"lease:{lease_id}" if lease_id is not None else f"customer:{customer_id}"


async def write_event(
    db: Executor,
    *,
    type: EventType,
    customer_id: int,
    lease_id: int | None,
    as_of: date,
    body: Mapping[str, Any],
    dedupe_key: str | None = None,
) -> int | None:
    """Write an event in the caller's transaction; None when ``dedupe_key`` was written
    before (the event exists once). Raises SensitiveBody before anything is written."""
    check_body(body)
    event_id: int | None = await db.fetchval(
        QUERIES["outbox.insert"],
        customer_id,
        lease_id,
        ordering_key(customer_id=customer_id, lease_id=lease_id),
        type.value,
        as_of,
        dict(body),
        dedupe_key,
    )
    return event_id


async def write_money_events(
    db: Executor, attempt_ids: Sequence[int], *, customers: Sequence[int] | None = None
) -> int:
    """Write the events of these attempts' answers now, in one statement (call it in the
    transaction that recorded the answers, after the statement that did); how many were
    written. What is not written here the journal's trigger writes at commit, one by one.
    ``customers``: the attempts' customers, one shard group of them (Citus: the statement
    routes to their shard); without them (one node) the function finds them."""
    if not attempt_ids:
        return 0
    if customers is None:
        written = await db.fetchval(QUERIES["outbox.money_events"], list(attempt_ids))
    else:
        written = await db.fetchval(
            QUERIES["outbox.money_events_routed"], list(attempt_ids), list(customers)
        )
    return int(written or 0)


async def dispatch(pool: Pool, endpoints: Sequence[str], *, limit: int) -> int:
    """Fan out up to ``limit`` undispatched events to ``endpoints``; how many were."""
    if not endpoints:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(QUERIES["outbox.dispatch_lock"])
        rows = await conn.fetch(QUERIES["outbox.dispatch"], list(endpoints), limit)
    return len(rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedDelivery:
    """One event claimed for sending to one endpoint."""

    customer_id: int
    event_id: int
    attempts: int  # before this one
    type: str
    lease_id: int | None
    as_of: date
    body: dict[str, Any]
    created_at: datetime


async def claim(
    db: Executor, endpoint: str, *, limit: int, claim_s: float
) -> list[ClaimedDelivery]:
    """Claim, for ``claim_s`` seconds, up to ``limit`` due deliveries to ``endpoint``, each
    the oldest pending one of its ordering key."""
    rows = await db.fetch(QUERIES["outbox.claim"], endpoint, limit, claim_s)
    return sorted(
        (
            ClaimedDelivery(
                customer_id=row["customer_id"],
                event_id=row["event_id"],
                attempts=row["attempts"],
                type=row["type"],
                lease_id=row["lease_id"],
                as_of=row["as_of"],
                body=row["body"],
                created_at=row["created_at"],
            )
            for row in rows
        ),
        key=lambda d: d.event_id,
    )


async def mark_delivered(
    db: Executor, endpoint: str, answered: Sequence[tuple[ClaimedDelivery, int]]
) -> None:
    """Record deliveries the endpoint answered with a 2xx status."""
    if not answered:
        return
    await db.execute(
        QUERIES["outbox.delivered"],
        [d.customer_id for d, _ in answered],
        [d.event_id for d, _ in answered],
        endpoint,
        [status for _, status in answered],
    )


async def mark_failed(
    db: Executor,
    endpoint: str,
    delivery: ClaimedDelivery,
    *,
    http_status: int | None,
    error: str,
    retry_in_s: float,
    dead: bool,
) -> None:
    """Record a failed delivery: due again in ``retry_in_s`` seconds, or dead-lettered."""
    await db.execute(
        QUERIES["outbox.failed"],
        delivery.customer_id,
        delivery.event_id,
        endpoint,
        http_status,
        error,
        retry_in_s,
        dead,
    )


async def release(db: Executor, endpoint: str, deliveries: Sequence[ClaimedDelivery]) -> None:
    """Give claimed deliveries back unsent, due at once, no attempt counted."""
    if not deliveries:
        return
    await db.execute(
        QUERIES["outbox.release"],
        [d.customer_id for d in deliveries],
        [d.event_id for d in deliveries],
        endpoint,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventLine:
    """One event as ``collector events list`` shows it."""

    id: int
    type: str
    status: str
    customer_id: int
    lease_id: int | None
    as_of: date
    created_at: datetime
    endpoints: int
    delivered: int
    attempts: int
    last_error: str | None


async def list_events(
    db: Executor, *, status: EventStatus | None, type: EventType | None, limit: int
) -> list[EventLine]:
    """Events, newest first, filtered by delivery status and type."""
    rows = await db.fetch(
        QUERIES["outbox.list"],
        status.value if status else None,
        type.value if type else None,
        limit,
    )
    return [
        EventLine(
            id=row["id"],
            type=row["type"],
            status=row["status"],
            customer_id=row["customer_id"],
            lease_id=row["lease_id"],
            as_of=row["as_of"],
            created_at=row["created_at"],
            endpoints=row["endpoints"],
            delivered=row["delivered"],
            attempts=row["attempts"],
            last_error=row["last_error"],
        )
        for row in rows
    ]


async def redeliver(db: Executor, event_id: int) -> list[str]:
    """Send an event again to every endpoint it was fanned out to; the endpoints."""
    return [row["endpoint"] for row in await db.fetch(QUERIES["outbox.redeliver"], event_id)]


async def redeliver_dead(db: Executor) -> int:
    """Send every dead-lettered delivery again; how many."""
    return len(await db.fetch(QUERIES["outbox.redeliver_dead"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Backlog:
    endpoint: str
    pending: int
    oldest_age_s: float


async def backlog(db: Executor, endpoints: Sequence[str]) -> list[Backlog]:
    """For each endpoint: how many deliveries wait, and the age of the oldest event it has
    not been sent yet."""
    rows = await db.fetch(QUERIES["outbox.backlog"], list(endpoints))
    return [
        Backlog(endpoint=r["endpoint"], pending=r["pending"], oldest_age_s=r["oldest_age_s"])
        for r in rows
    ]


def canonical_json(value: Any) -> bytes:
    """The bytes that are signed and sent: compact, keys sorted, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
