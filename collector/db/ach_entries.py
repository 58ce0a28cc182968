"""The NACHA gateway's ledger: debits accepted for a file, and the files they went out in.

One function per named query in ``sql/queries/ach_entries.sql``; rows become values here.
Entries hold the vault token of an account, never its number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES

# Any fixed 64-bit number: the transaction-level advisory lock every export takes.
EXPORT_LOCK_KEY: Final = 0x6E61_6368_6578  # "nachex"


@dataclass(frozen=True, slots=True, kw_only=True)
class AchEntry:
    """A debit accepted under a key: its trace number, effective date and file state."""

    idempotency_key: str
    trace_number: str
    effective_on: date
    amount_cents: int
    file_name: str | None
    written_at: datetime | None
    exported_on: date | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEntry:
    """What accepting a debit stores (the account stays in the vault: only its token here)."""

    idempotency_key: str
    gateway: str
    odfi_id: str
    effective_on: date
    amount_cents: int
    token: str
    individual_id: str
    individual_name: str
    sec_code: str
    entry_description: str
    """The Company Entry Description its file's batch header carries ("RETRY PYMT" for a
    reinitiation)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AchFile:
    """A file claimed for export: what renders it again, byte for byte."""

    file_name: str
    sec_code: str
    entry_description: str
    effective_on: date
    file_id_modifier: str
    entry_count: int
    total_cents: int
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One debit of a file, as the file renders it."""

    idempotency_key: str
    trace_number: str
    amount_cents: int
    token: str
    individual_id: str
    individual_name: str


def _entry(row: asyncpg.Record) -> AchEntry:
    return AchEntry(
        idempotency_key=row["idempotency_key"],
        trace_number=row["trace_number"],
        effective_on=row["effective_on"],
        amount_cents=row["amount_cents"],
        file_name=row["file_name"],
        written_at=row["written_at"],
        exported_on=row["exported_on"],
    )


async def entry_by_key(db: Executor, idempotency_key: str, *, gateway: str) -> AchEntry | None:
    """The debit ``gateway`` accepted under this key, or None."""
    row = await db.fetchrow(QUERIES["ach_entries.entry_by_key"], idempotency_key, gateway)
    return _entry(row) if row is not None else None


async def insert_entry(db: Executor, entry: NewEntry) -> AchEntry | None:
    """Accept a debit with the next trace number; None when its key was already accepted."""
    row = await db.fetchrow(
        QUERIES["ach_entries.insert_entry"],
        entry.idempotency_key,
        entry.gateway,
        entry.odfi_id,
        entry.effective_on,
        entry.amount_cents,
        entry.token,
        entry.individual_id,
        entry.individual_name,
        entry.sec_code,
        entry.entry_description,
    )
    return _entry(row) if row is not None else None


async def lock_exports(db: Executor) -> None:
    """Make other exports wait until this transaction ends."""
    await db.execute(QUERIES["ach_entries.lock_exports"], EXPORT_LOCK_KEY)


async def dates_to_file(db: Executor, *, gateway: str, up_to: date) -> list[tuple[date, str, str]]:
    """The (effective date, SEC code, entry description) groups with unfiled debits effective
    on or before ``up_to``: each goes out as a file of its own."""
    rows = await db.fetch(QUERIES["ach_entries.dates_to_file"], gateway, up_to)
    return [(row["effective_on"], row["sec_code"], row["entry_description"]) for row in rows]


async def modifiers_used(db: Executor, *, created_on: date) -> set[str]:
    """The file id modifiers of the files created on this UTC day."""
    start = datetime(created_on.year, created_on.month, created_on.day, tzinfo=UTC)
    rows = await db.fetch(QUERIES["ach_entries.modifiers_used"], start, start + timedelta(days=1))
    return {row["file_id_modifier"] for row in rows}


async def claim_file(
    db: Executor,
    *,
    file_name: str,
    gateway: str,
    sec_code: str,
    entry_description: str,
    effective_on: date,
    exported_on: date,
    file_id_modifier: str,
    created_at: datetime,
) -> AchFile | None:
    """Record a file and put every unfiled debit of its date, SEC code and entry description
    in it; None (and no file) when there was none. Run it inside the caller's transaction."""
    await db.execute(
        QUERIES["ach_entries.insert_file"],
        file_name,
        gateway,
        sec_code,
        effective_on,
        exported_on,
        file_id_modifier,
        created_at,
        entry_description,
    )
    row = await db.fetchrow(
        QUERIES["ach_entries.claim_entries"],
        file_name,
        gateway,
        sec_code,
        effective_on,
        entry_description,
    )
    assert row is not None  # the file row was inserted just above
    if row["entry_count"] == 0:
        await db.execute(QUERIES["ach_entries.delete_file"], file_name)
        return None
    return AchFile(
        file_name=file_name,
        sec_code=sec_code,
        entry_description=entry_description,
        effective_on=effective_on,
        file_id_modifier=file_id_modifier,
        entry_count=row["entry_count"],
        total_cents=row["total_cents"],
        created_at=created_at,
    )


async def unwritten_files(db: Executor, *, gateway: str) -> list[AchFile]:
    """The files claimed but not yet written to the outbox, oldest first."""
    rows = await db.fetch(QUERIES["ach_entries.unwritten_files"], gateway)
    return [
        AchFile(
            file_name=row["file_name"],
            sec_code=row["sec_code"],
            entry_description=row["entry_description"],
            effective_on=row["effective_on"],
            file_id_modifier=row["file_id_modifier"],
            entry_count=row["entry_count"],
            total_cents=row["total_cents"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


async def file_entries(db: Executor, file_name: str) -> list[FileEntry]:
    """The debits of a file in trace number order."""
    rows = await db.fetch(QUERIES["ach_entries.file_entries"], file_name)
    return [
        FileEntry(
            idempotency_key=row["idempotency_key"],
            trace_number=row["trace_number"],
            amount_cents=row["amount_cents"],
            token=row["token"],
            individual_id=row["individual_id"],
            individual_name=row["individual_name"],
        )
        for row in rows
    ]


async def mark_written(db: Executor, file_name: str) -> None:
    """Record that the file is on disk in the outbox."""
    await db.execute(QUERIES["ach_entries.mark_written"], file_name)


async def keys_by_trace(db: Executor, traces: Sequence[str]) -> dict[str, str]:
    """The idempotency key of each known trace number."""
    rows = await db.fetch(QUERIES["ach_entries.keys_by_trace"], list(traces))
    return {row["trace_number"]: row["idempotency_key"] for row in rows}
