"""The NACHA gateway's ledger: debits accepted for a file, and the files they went out in.

One function per named query in ``sql/queries/ach_entries.sql``; rows become values here.
Entries hold the vault token of an account, never its number; a notification of change holds
at most the last four characters of a corrected account number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Final

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import QUERIES
from collector.db.routing import shard_groups

# Any fixed 64-bit number: the transaction-level advisory lock every export takes.
EXPORT_LOCK_KEY: Final = 0x6E61_6368_6578  # "nachex"


@dataclass(frozen=True, slots=True, kw_only=True)
class AchEntry:
    """A debit accepted under a key: its trace number, effective date and file state.

    ``effective_on`` is its file's effective entry date once filed, the requested one before."""

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
    customer_id: int  # whose debit: the distribution key its row is filed under (sql/0022)
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
    created_local: datetime | None
    """The creation date and time the header shows (the lessor's wall clock, naive); None for
    a file claimed before they were kept, whose header shows ``created_at`` in UTC."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One debit of a file, as the file renders it."""

    idempotency_key: str
    customer_id: int
    trace_number: str
    amount_cents: int
    token: str
    individual_id: str
    individual_name: str
    prenote: bool = False
    """A zero-dollar prenote (transaction code 28/38), not a debit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewChange:
    """A notification of change to record, its corrected data already masked."""

    idempotency_key: str
    customer_id: int  # the entry's customer (sql/0022)
    original_trace: str
    notice_trace: str
    change_code: str
    corrected_routing: str | None
    corrected_account_last4: str | None
    corrected_transaction_code: str | None
    corrected_text: str
    received_on: date


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
        entry.customer_id,
    )
    return _entry(row) if row is not None else None


async def insert_prenote(
    db: Executor,
    *,
    idempotency_key: str,
    customer_id: int,
    gateway: str,
    odfi_id: str,
    effective_on: date,
    token: str,
    individual_name: str,
    sec_code: str,
    entry_description: str,
) -> AchEntry | None:
    """Accept a zero-dollar prenote with the next trace number; None when its key was
    already accepted."""
    row = await db.fetchrow(
        QUERIES["ach_entries.insert_prenote"],
        idempotency_key,
        gateway,
        odfi_id,
        effective_on,
        token,
        individual_name,
        sec_code,
        entry_description,
        customer_id,
    )
    return _entry(row) if row is not None else None


async def lock_exports(db: Executor) -> None:
    """Make other exports wait until this transaction ends."""
    await db.execute(QUERIES["ach_entries.lock_exports"], EXPORT_LOCK_KEY)


async def dates_to_file(
    db: Executor, *, gateway: str, up_to: date, earliest: date
) -> list[tuple[date, str, str]]:
    """The (effective date, SEC code, entry description) groups with unfiled debits requested
    on or before ``up_to``, each effective on its requested date or ``earliest`` when that is
    later: each goes out as a file of its own."""
    rows = await db.fetch(QUERIES["ach_entries.dates_to_file"], gateway, up_to, earliest)
    return [(row["effective_on"], row["sec_code"], row["entry_description"]) for row in rows]


async def file_candidates(
    db: Executor,
    *,
    gateway: str,
    sec_code: str,
    entry_description: str,
    effective_on: date,
    up_to: date,
    earliest: date,
) -> list[FileEntry]:
    """The unfiled debits a file of this group effective ``effective_on`` would hold, in trace
    number order (see :func:`dates_to_file`)."""
    rows = await db.fetch(
        QUERIES["ach_entries.file_candidates"],
        gateway,
        sec_code,
        entry_description,
        effective_on,
        up_to,
        earliest,
    )
    return [_file_entry(row) for row in rows]


async def modifiers_used(db: Executor, *, created_on: date) -> set[str]:
    """The file id modifiers of the files whose header shows this creation date."""
    rows = await db.fetch(QUERIES["ach_entries.modifiers_used"], created_on)
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
    created_local: datetime,
    entries: Sequence[FileEntry],
) -> AchFile | None:
    """Record a file and put these unfiled debits in it, under its effective entry date, one
    statement per shard group of their customers (one on plain PostgreSQL); None (and no
    file) when none was left. Run it inside the caller's transaction."""
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
        created_local,
    )
    row = None
    for customers, keys in await _by_shard(db, entries):
        row = await db.fetchrow(
            QUERIES["ach_entries.claim_entries"], file_name, customers, keys, effective_on
        )
        assert row is not None  # the file row was inserted just above
    if row is None or row["entry_count"] == 0:
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
        created_local=created_local,
    )


async def release_entries(
    db: Executor, file: AchFile, entries: Sequence[FileEntry]
) -> AchFile | None:
    """Take these debits out of a file not yet on disk (unfiled again, for the next export),
    one statement per shard group of their customers; the file as it is now, or None when it
    holds nothing any more (its record is dropped). Run it inside the caller's transaction."""
    row = None
    for customers, keys in await _by_shard(db, entries):
        row = await db.fetchrow(
            QUERIES["ach_entries.release_entries"], file.file_name, customers, keys
        )
        if row is None:
            raise ValueError(f"file {file.file_name} is already written")
    if row is None:
        return file
    if row["entry_count"] == 0:
        await db.execute(QUERIES["ach_entries.delete_file"], file.file_name)
        return None
    return replace(file, entry_count=row["entry_count"], total_cents=row["total_cents"])


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
            created_local=row["created_local"],
        )
        for row in rows
    ]


async def file_entries(db: Executor, file_name: str) -> list[FileEntry]:
    """The debits of a file in trace number order."""
    rows = await db.fetch(QUERIES["ach_entries.file_entries"], file_name)
    return [_file_entry(row) for row in rows]


async def _by_shard(
    db: Executor, entries: Sequence[FileEntry]
) -> list[tuple[list[int], list[str]]]:
    """The entries' customers and keys, one pair per shard group (collector/db/routing.py)."""
    pairs = []
    for customers in await shard_groups(db, (e.customer_id for e in entries)):
        group = set(customers)
        pairs.append((customers, [e.idempotency_key for e in entries if e.customer_id in group]))
    return pairs


def _file_entry(row: asyncpg.Record) -> FileEntry:
    return FileEntry(
        idempotency_key=row["idempotency_key"],
        customer_id=row["customer_id"],
        trace_number=row["trace_number"],
        amount_cents=row["amount_cents"],
        token=row["token"],
        individual_id=row["individual_id"],
        individual_name=row["individual_name"],
        prenote=row["prenote"],
    )


async def mark_written(db: Executor, file_name: str, *, written_at: datetime) -> None:
    """Record that the file is on disk in the outbox since ``written_at``."""
    await db.execute(QUERIES["ach_entries.mark_written"], file_name, written_at)


async def keys_by_trace(db: Executor, traces: Sequence[tuple[str, int]]) -> dict[str, str]:
    """The idempotency key of the debit each (trace number, amount) names: trace numbers repeat
    once the sequence rolls over, so the most recent filed debit of that trace, one of that
    amount first (0: any amount). Unknown traces are left out."""
    return {trace: key for trace, (key, _) in (await entries_by_trace(db, traces)).items()}


async def entries_by_trace(
    db: Executor, traces: Sequence[tuple[str, int]]
) -> dict[str, tuple[str, int]]:
    """The idempotency key and customer of the debit each (trace number, amount) names, as
    :func:`keys_by_trace` picks it. Unknown traces are left out."""
    rows = await db.fetch(
        QUERIES["ach_entries.keys_by_trace"],
        [trace for trace, _ in traces],
        [amount for _, amount in traces],
    )
    return {row["trace_number"]: (row["idempotency_key"], row["customer_id"]) for row in rows}


async def insert_change(db: Executor, change: NewChange) -> bool:
    """Record a notification of change; False when it was recorded before."""
    row = await db.fetchrow(
        QUERIES["ach_entries.insert_change"],
        change.idempotency_key,
        change.original_trace,
        change.notice_trace,
        change.change_code,
        change.corrected_routing,
        change.corrected_account_last4,
        change.corrected_transaction_code,
        change.corrected_text,
        change.received_on,
        change.customer_id,
    )
    return row is not None
