"""Read-only views of what a pass would do, for ``collector run --dry-run``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.queries import QUERIES


@dataclass(frozen=True, slots=True, kw_only=True)
class DueGroup:
    gateway: str
    kind: str
    installments: int
    amount_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedGroup:
    reason: str
    installments: int
    amount_cents: int
    sample_ids: list[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnresolvedGroup:
    status: str
    attempts: int
    amount_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """What a pass for ``as_of`` would charge, pass over, and reconcile."""

    as_of: date
    due: list[DueGroup]
    skipped: list[SkippedGroup]
    unresolved: list[UnresolvedGroup]


async def preview(pool: asyncpg.Pool, *, as_of: date, gateways: Sequence[str]) -> Preview:
    """Read the due set, the skipped set and the unresolved attempts in one snapshot."""
    names = list(gateways)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        due = await conn.fetch(QUERIES["preview.due_by_gateway"], as_of, names)
        skipped = await conn.fetch(QUERIES["preview.skipped"], as_of, names)
        unresolved = await conn.fetch(QUERIES["preview.unresolved_attempts"])
    return Preview(
        as_of=as_of,
        due=[DueGroup(**dict(row)) for row in due],
        skipped=[SkippedGroup(**dict(row)) for row in skipped],
        unresolved=[UnresolvedGroup(**dict(row)) for row in unresolved],
    )
