"""NACHA files: write the accepted debits to the outbox, and apply the bank's return files.

Export runs in three steps, each its own function so a crash between any two is recoverable:

1. :func:`claim_files` (one transaction): for each effective entry date up to the next banking
   day after the business date, with debits not yet in a file, record an ``ach_files`` row and
   put those debits in it: one file per (effective date, SEC code, Company Entry Description),
   so reinitiations ("RETRY PYMT") never share a batch with first presentments. Which debits a
   file holds is decided here, once.
2. :func:`write_file`: render the file from its stored debits (their trace numbers, its stored
   creation time, file id modifier and entry description: the same bytes every time), write it to
   ``outbox/.<name>.tmp`` (mode 0600), fsync, rename to ``outbox/<name>``, fsync the directory.
3. Mark the file written (``ach_files.written_at``).

:func:`export_files` first finishes the files an earlier export claimed but did not mark
written (a crash after step 1), then claims and writes new ones. So no debit is lost, and no
debit is put in a second file. The one window left: a crash after the rename and before the
mark, while something else already took the file away from the outbox, makes the next export
write it again (same name, same traces); the bank rejects a duplicate file by its header.

Which dates are exported on business date D: every effective entry date up to and including
the next banking day after D. Debits effective D+1 must reach the bank a day ahead (standard
ACH); debits effective D or earlier (a missed export) go out at once, and the ACH operator
settles a stale effective date on its next settlement day.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
import asyncpg

from collector.ach.nacha import build_debit_file, parse_returns
from collector.calendar import next_banking_day
from collector.db.ach_entries import (
    AchFile,
    claim_file,
    dates_to_file,
    file_entries,
    keys_by_trace,
    lock_exports,
    mark_written,
    modifiers_used,
    unwritten_files,
)
from collector.db.settlement import attempt_by_key
from collector.exceptions import GatewayConfigError, GatewayError
from collector.gateways.base import Gateway, Returned
from collector.gateways.nacha_files import (
    OPTION_SETTINGS,
    AccountVault,
    NachaConfig,
    NachaGateway,
    debit_entry,
    originator_for,
)
from collector.jobs.settle import apply_by_key
from collector.logs import get_logger

log = get_logger()

GATEWAY: Final = "nacha"
# File ID Modifier (File Header position 34): tells apart files created on the same day.
_MODIFIERS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_FILE_MODE: Final = 0o600
_RETURNABLE: Final = frozenset({"processing", "succeeded"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    """What importing a return file did: returns applied now, applied by an earlier import,
    for traces this engine never sent, and for debits not in a returnable state yet."""

    applied: int = 0
    already_applied: int = 0
    unknown: int = 0
    deferred: int = 0


def file_name_of(effective_on: date, created_at: datetime, modifier: str) -> str:
    """The outbox name of a file: unique, since a day's modifiers are."""
    created = created_at.astimezone(UTC)
    return f"collector-{effective_on:%Y%m%d}-{created:%Y%m%d}{modifier}.ach"


async def claim_files(
    pool: asyncpg.Pool, *, as_of: date, now: datetime, gateway: str = GATEWAY
) -> list[AchFile]:
    """Claim, in one transaction, one file per effective date, SEC code and entry description
    due for export."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    created_at = now.astimezone(UTC)
    claimed: list[AchFile] = []
    async with pool.acquire() as conn, conn.transaction():
        # One export at a time: modifiers are picked from what is already there.
        await lock_exports(conn)
        due = await dates_to_file(conn, gateway=gateway, up_to=next_banking_day(as_of))
        if not due:
            return []
        used = await modifiers_used(conn, created_on=created_at.date())
        free = [modifier for modifier in _MODIFIERS if modifier not in used]
        if len(free) < len(due):
            raise GatewayError(
                f"no file id modifier left for {created_at.date().isoformat()}: "
                f"{len(_MODIFIERS)} files a day at most"
            )
        for (effective_on, sec_code, description), modifier in zip(due, free, strict=False):
            file = await claim_file(
                conn,
                file_name=file_name_of(effective_on, created_at, modifier),
                gateway=gateway,
                sec_code=sec_code,
                entry_description=description,
                effective_on=effective_on,
                exported_on=as_of,
                file_id_modifier=modifier,
                created_at=created_at,
            )
            if file is not None:
                claimed.append(file)
    return claimed


async def render_file(
    pool: asyncpg.Pool, config: NachaConfig, vault: AccountVault, file: AchFile
) -> str:
    """The text of a claimed file, rendered from its stored debits: the same every time."""
    entries = await file_entries(pool, file.file_name)
    # The description stored with the file, not today's setting: the same bytes every time.
    originator = originator_for(config, file.sec_code, file.entry_description)
    missing = sorted({entry.token for entry in entries if vault.get(entry.token) is None})
    if missing:
        # Tokens are not secrets (the database holds them); the accounts are.
        raise GatewayConfigError(
            f"{OPTION_SETTINGS['vault_file']}: file {file.file_name} has debits for tokens "
            f"the vault no longer holds: {', '.join(missing)}"
        )
    debits = []
    for entry in entries:
        if not entry.trace_number.startswith(originator.odfi_id):
            raise GatewayConfigError(
                f"{OPTION_SETTINGS['odfi_id']}: file {file.file_name} holds trace "
                f"{entry.trace_number}, accepted under another ODFI id"
            )
        account = vault.get(entry.token)
        assert account is not None  # checked above
        debits.append(
            debit_entry(
                account,
                amount_cents=entry.amount_cents,
                individual_id=entry.individual_id,
                individual_name=entry.individual_name,
                # Trace Number positions 88-94: the sequence stored when the debit was accepted.
                trace_sequence=int(entry.trace_number[8:]),
            )
        )
    built = build_debit_file(
        originator,
        debits,
        effective_on=file.effective_on,
        created_at=file.created_at.astimezone(UTC),
        file_id_modifier=file.file_id_modifier,
    )
    if list(built.trace_numbers) != [entry.trace_number for entry in entries]:
        raise GatewayError(f"file {file.file_name} did not render its stored trace numbers")
    return built.text


def _write_atomically(outbox: Path, name: str, text: str) -> Path:
    final = outbox / name
    if final.exists():
        # Renamed by an export that died before marking it written: the same bytes are there.
        return final
    temporary = outbox / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)  # a leftover temporary file keeps its old mode otherwise
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, final)
    # The rename is durable only once the directory entry is.
    dir_fd = os.open(outbox, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


async def write_file(
    pool: asyncpg.Pool, config: NachaConfig, vault: AccountVault, outbox: Path, file: AchFile
) -> Path:
    """Render a claimed file, put it in the outbox atomically, and mark it written."""
    text = await render_file(pool, config, vault, file)
    path = await anyio.to_thread.run_sync(_write_atomically, outbox, file.file_name, text)
    await mark_written(pool, file.file_name)
    log.info(
        "ach_file_written",
        file_name=file.file_name,
        effective_on=file.effective_on.isoformat(),
        entry_description=file.entry_description,
        entries=file.entry_count,
        total_cents=file.total_cents,
    )
    return path


async def export_files(
    pool: asyncpg.Pool,
    config: NachaConfig,
    vault: AccountVault,
    outbox: Path,
    *,
    as_of: date,
    now: datetime,
    gateway: str = GATEWAY,
) -> list[Path]:
    """Write every file due on business date ``as_of``, finishing any an earlier export left
    unwritten first; return the paths written, oldest first."""
    if not await anyio.Path(outbox).is_dir():
        raise GatewayConfigError(f"{OPTION_SETTINGS['outbox']}: {outbox} is not a directory")
    # Files claimed by an export that died before writing them go first, then the new ones.
    files = await unwritten_files(pool, gateway=gateway)
    files += await claim_files(pool, as_of=as_of, now=now, gateway=gateway)
    return [await write_file(pool, config, vault, outbox, file) for file in files]


async def import_returns(
    pool: asyncpg.Pool, text: str, *, as_of: date, retry_days: Sequence[int]
) -> ImportResult:
    """Apply every return of a return file to its debit, each once; raise NachaError (nothing
    applied) for a file that cannot be read."""
    returns = parse_returns(text)
    keys = await keys_by_trace(pool, [entry.original_trace for entry in returns])
    applied = already = unknown = deferred = 0
    for entry in returns:
        key = keys.get(entry.original_trace)
        debit = await attempt_by_key(pool, key) if key is not None else None
        if key is None or debit is None:
            unknown += 1
            log.warning("ach_return_for_unknown_trace", trace=entry.original_trace)
            continue
        if debit.status == "returned":
            already += 1
            continue
        if debit.status not in _RETURNABLE:
            # Still pending or in doubt: the next pass resolves it; import the file again.
            deferred += 1
            log.warning("ach_return_deferred", attempt_id=debit.attempt_id, status=debit.status)
            continue
        fact = Returned(
            code=entry.return_code,
            gateway_ref=entry.original_trace,
            gateway_code=entry.return_code,
        )
        counts = await apply_by_key(
            pool, key, fact, as_of=as_of, retry_days=retry_days, source="return_file"
        )
        if counts.returned:
            applied += 1
        else:
            already += 1  # another import applied it in between
    return ImportResult(
        applied=applied, already_applied=already, unknown=unknown, deferred=deferred
    )


async def export_after_pass(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], *, as_of: date, now: datetime
) -> list[Path]:
    """Write the files due now for every NACHA gateway that has an outbox: a pass that
    accepted debits leaves them ready for the bank without a second command."""
    written: list[Path] = []
    for name, gateway in gateways.items():
        if isinstance(gateway, NachaGateway) and gateway.config.outbox is not None:
            written += await export_files(
                pool,
                gateway.config,
                gateway.vault,
                gateway.config.outbox,
                as_of=as_of,
                now=now,
                gateway=name,
            )
    return written
