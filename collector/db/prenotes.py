"""NACHA account validation: prenotes, what the eligibility check knows of them, and what a
prenote's return or a notification of change does to a payment method.

One function per named query in ``sql/queries/prenotes.sql``. Nothing here holds an account
number: methods keep display fields (last four), the vault keeps the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.eligibility import PrenoteFacts
from collector.policy import MAX_PRENOTES, PRENOTE_CLOSING_RETURNS

_CLOSING = sorted(PRENOTE_CLOSING_RETURNS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A primary bank-account method whose account needs a prenote now."""

    payment_method_id: int
    customer_id: int
    instrument_key: str
    token: str = field(repr=False)
    returned: int  # prenotes of the account returned before (the next one's number - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Prenote:
    """A prenote sent for an account."""

    id: int
    customer_id: int
    instrument_key: str
    payment_method_id: int
    gateway: str
    return_code: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryMethod:
    """The method an entry (prenote or debit) was sent for."""

    id: int
    customer_id: int
    gateway: str
    token: str = field(repr=False)
    last4: str | None
    bank_name: str | None
    instrument_key: str


async def candidates(
    db: Executor, *, gateway: str, customer_id: int | None = None
) -> list[Candidate]:
    """The primary bank-account methods of ``gateway`` (of one customer, or all) whose
    accounts need a prenote before their first live debit."""
    rows = await db.fetch(
        QUERIES["prenotes.candidates"], gateway, customer_id, _CLOSING, MAX_PRENOTES
    )
    return [Candidate(**dict(row)) for row in rows]


async def record(
    db: Executor,
    candidate: Candidate,
    *,
    gateway: str,
    idempotency_key: str,
    as_of: date,
) -> bool:
    """Record the prenote sent as entry ``idempotency_key``; False when the account already
    has an open one."""
    row = await db.fetchrow(
        QUERIES["prenotes.record"],
        candidate.customer_id,
        candidate.instrument_key,
        candidate.payment_method_id,
        gateway,
        idempotency_key,
        as_of,
    )
    return row is not None


async def facts(
    db: Executor, presentments: Sequence[tuple[int, str, int, str]]
) -> dict[int, PrenoteFacts]:
    """The account validation facts of each (attempt, instrument key, method, gateway)
    presentment, by attempt id."""
    if not presentments:
        return {}
    rows = await db.fetch(
        QUERIES["prenotes.facts"],
        [p[0] for p in presentments],
        [p[1] for p in presentments],
        [p[2] for p in presentments],
        [p[3] for p in presentments],
        _CLOSING,
    )
    return {
        row["attempt_id"]: PrenoteFacts(
            validated=row["validated"],
            debited_before=row["debited_before"],
            closed_code=row["closed_code"],
            returned=row["returned"],
            requested_on=row["requested_on"],
            effective_on=row["effective_on"],
            written=bool(row["written"]),
        )
        for row in rows
    }


async def by_key(db: Executor, idempotency_key: str) -> Prenote | None:
    """The prenote sent as this entry, or None when the entry is not a prenote."""
    row = await db.fetchrow(QUERIES["prenotes.by_key"], idempotency_key)
    return Prenote(**dict(row)) if row is not None else None


async def mark_returned(
    db: Executor, prenote_id: int, *, customer_id: int, code: str, as_of: date
) -> bool:
    """Record the prenote's return; False when it was recorded before."""
    row = await db.fetchrow(QUERIES["prenotes.mark_returned"], prenote_id, code, as_of, customer_id)
    return row is not None


async def disable_account(
    db: Executor, *, customer_id: int, instrument_key: str, reason: str
) -> list[asyncpg.Record]:
    """Disable every active method of the customer for this account; the rows disabled."""
    return list(
        await db.fetch(QUERIES["prenotes.disable_account"], customer_id, instrument_key, reason)
    )


async def method_of_entry(db: Executor, idempotency_key: str) -> EntryMethod | None:
    """The method the entry with this key (a prenote or a debit) was sent for."""
    row = await db.fetchrow(QUERIES["prenotes.method_of_entry"], idempotency_key)
    return EntryMethod(**dict(row)) if row is not None else None


async def methods_of_token(
    db: Executor, *, customer_id: int, gateway: str, token: str
) -> list[asyncpg.Record]:
    """The customer's methods on ``gateway`` holding vault token ``token``."""
    return list(await db.fetch(QUERIES["prenotes.methods_of_token"], customer_id, gateway, token))


async def set_last4(db: Executor, method_id: int, last4: str, *, customer_id: int) -> None:
    """Show ``last4`` as the method's account's last four."""
    await db.execute(QUERIES["prenotes.set_last4"], method_id, last4, customer_id)


async def record_change(
    db: Executor,
    *,
    customer_id: int,
    method_id: int,
    source: str,
    code: str,
    original_trace: str,
    changed: Mapping[str, Any],
    received_on: date,
) -> bool:
    """Record what a prenote return or notification of change did to a method (display
    values only); False when it was recorded before."""
    row = await db.fetchrow(
        QUERIES["prenotes.record_change"],
        customer_id,
        method_id,
        source,
        code,
        original_trace,
        dict(changed),
        received_on,
    )
    return row is not None


async def closed_accounts(db: Executor, instrument_keys: Sequence[str]) -> set[str]:
    """Of these accounts, those a prenote found closed or unauthorized."""
    rows = await db.fetch(QUERIES["prenotes.closed_accounts"], list(instrument_keys), _CLOSING)
    return {row["instrument_key"] for row in rows}


async def mark_validated(db: Executor, method_id: int) -> None:
    """Record that the adapter validated the method's account (no prenote)."""
    await db.execute(QUERIES["prenotes.mark_validated"], method_id)


async def close_if_closed(db: Executor, method_id: int) -> bool:
    """Disable a method just added when a prenote found its account closed or unauthorized
    before; True when it did."""
    row = await db.fetchrow(QUERIES["prenotes.close_if_closed"], method_id, _CLOSING)
    return row is not None


async def change_applied(db: Executor, method_id: int, *, code: str, original_trace: str) -> bool:
    """Whether this notification of change was applied to the method already."""
    applied: bool = await db.fetchval(
        QUERIES["prenotes.change_applied"], method_id, code, original_trace
    )
    return applied
