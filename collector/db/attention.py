"""Rows set aside for an operator (DESIGN.md, "Failure isolation").

A row that a batch statement cannot apply (a constraint it violates, an entry a NACHA file
cannot render, a vault without its token, a settlement or return that contradicts the
journal) is recorded here with its reason, counted, logged, and listed by
``collector audit``; the rest of the batch, the pass and the file go on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.logs import get_logger
from collector.metrics import NEEDS_ATTENTION
from collector.sensitive import redact_numbers, redact_value

log = get_logger()

_T = TypeVar("_T")

# SQLSTATE classes that one row's data can raise: 22 data exception, 23 integrity
# constraint violation, P0 raised by a PL/pgSQL function. Anything else (a lost
# connection, a deadlock, a cancelled statement) is not the row's fault and is raised.
ROW_ERROR_CLASSES = ("22", "23", "P0")


def is_row_error(exc: BaseException) -> bool:
    """True when the database refused a statement because of the data it was given."""
    state = getattr(exc, "sqlstate", None)
    return (
        isinstance(exc, asyncpg.PostgresError)
        and bool(state)
        and (str(state)[:2] in ROW_ERROR_CLASSES)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAside:
    """One open row of needs_attention."""

    id: int
    subject: str
    subject_id: str
    customer_id: int | None
    reason: str
    detail: dict[str, Any]
    created_at: datetime


async def set_aside(
    db: Executor,
    *,
    subject: str,
    subject_id: int | str,
    reason: str,
    customer_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Record that ``subject`` ``subject_id`` could not be applied, count and log it; False
    when it was already set aside for that reason and is still open. Card and bank numbers
    in the detail (a gateway's text, a line of a bank's file) are masked before it is kept."""
    subject_id = redact_numbers(str(subject_id))
    detail = redact_value(json.loads(json.dumps(detail or {}, default=str)))
    row = await db.fetchrow(
        QUERIES["money.set_aside"], subject, subject_id, customer_id, reason, detail
    )
    if row is None:
        return False
    NEEDS_ATTENTION.labels(subject=subject, reason=reason).inc()
    log.error("set_aside", subject=subject, subject_id=subject_id, reason=reason, **detail)
    return True


async def open_attention(db: Executor, *, limit: int = 1000) -> list[SetAside]:
    """The rows set aside and not yet resolved, oldest first."""
    rows = await db.fetch(QUERIES["money.open_attention"], limit)
    return [
        SetAside(
            id=r["id"],
            subject=r["subject"],
            subject_id=r["subject_id"],
            customer_id=r["customer_id"],
            reason=r["reason"],
            detail=r["detail"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def apply_isolated(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    items: Sequence[_T],
    apply: Callable[[Executor, Sequence[_T]], Awaitable[None]],
    on_failure: Callable[[Executor, _T, BaseException], Awaitable[None]],
) -> list[_T]:
    """Apply ``items`` (``apply`` is atomic by itself: one statement, or one transaction of
    its own, as the recorder's with its outbox events); when the database refuses the batch
    because of one row's data, apply them one by one and hand each row that still fails to
    ``on_failure`` (which sets it aside). Returns the failed items."""
    if not items:
        return []
    try:
        await apply(conn, items)
        return []
    except asyncpg.PostgresError as exc:
        if not is_row_error(exc):
            raise
    failed: list[_T] = []
    for item in items:
        try:
            await apply(conn, [item])
        except asyncpg.PostgresError as exc:
            if not is_row_error(exc):
                raise
            failed.append(item)
            async with conn.transaction():
                await on_failure(conn, item, exc)
    return failed
