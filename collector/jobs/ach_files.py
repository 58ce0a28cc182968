"""NACHA files: write the accepted debits to the outbox, and apply the bank's return files.

Export runs in three steps, each its own function so a crash between any two is recoverable:

1. :func:`claim_files` (one transaction): for each group of debits due, record an ``ach_files``
   row and put those debits in it: one file per (effective date, SEC code, Company Entry
   Description), so reinitiations ("RETRY PYMT") never share a batch with first presentments.
   The file's creation date and time are the lessor's wall clock now, and its effective entry
   date is the next banking day after that date, or the debit's requested date when that is
   later: never a day already past when the file is written. Each debit takes that date. A
   debit the file could not hold (its token gone from the vault, a field the layout refuses)
   is set aside (``needs_attention``) and left unfiled, so the next export tries it again; the
   rest of the file goes out. Which debits a file holds is decided here, once.
2. :func:`write_file`: render the file from its stored debits (their trace numbers, its stored
   creation time, file id modifier and entry description: the same bytes every time), write it to
   ``outbox/.<name>.tmp`` (mode 0600), fsync, rename to ``outbox/<name>``, fsync the directory.
   A debit that can no longer be rendered (the vault changed since the claim) is taken out of
   the file, which is not on disk yet, and set aside.
3. Mark the file written (``ach_files.written_at``).

:func:`export_files` first finishes the files an earlier export claimed but did not mark
written (a crash after step 1), then claims and writes new ones. So no debit is lost, and no
debit is put in a second file. The one window left: a crash after the rename and before the
mark, while something else already took the file away from the outbox, makes the next export
write it again (same name, same traces); the bank rejects a duplicate file by its header.

Which debits are exported on business date D: every one requested for a date up to and
including the next banking day after D. A day has 36 file id modifiers (A-Z, 0-9); a group
left without one stays unfiled and goes out with the next export on a later day.

:func:`import_returns` applies the returns of a return file, records its notifications of change
(``ach_notifications_of_change``, corrected account numbers as their last four only), and sets
aside each entry it cannot read or apply; the rest of the file is applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, cast

import anyio
import anyio.to_thread
import asyncpg

from collector.ach.nacha import (
    MAX_BATCH_ENTRIES,
    MAX_BATCH_TOTAL_CENTS,
    NachaError,
    SecCode,
    build_debit_file,
    check_entry,
    read_returns,
)
from collector.calendar import next_banking_day
from collector.db import prenotes
from collector.db.ach_entries import (
    AchFile,
    FileEntry,
    NewChange,
    claim_file,
    dates_to_file,
    entries_by_trace,
    file_candidates,
    file_entries,
    insert_change,
    lock_exports,
    mark_written,
    modifiers_used,
    release_entries,
    unwritten_files,
)
from collector.db.attention import is_row_error, set_aside
from collector.db.pool import Executor
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
from collector.jobs.prenotes import apply_change, apply_prenote_return
from collector.jobs.settle import apply_by_key
from collector.logs import get_logger

log = get_logger()

GATEWAY: Final = "nacha"
# File ID Modifier (File Header position 34): tells apart files created on the same day.
_MODIFIERS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_FILE_MODE: Final = 0o600
_RETURNABLE: Final = frozenset({"processing", "succeeded"})

# needs_attention reasons (subject "ach_entry").
VAULT_TOKEN_MISSING: Final = "vault_token_missing"
UNRENDERABLE_ENTRY: Final = "unrenderable_entry"
MALFORMED_RETURN_ENTRY: Final = "malformed_return_entry"
RETURN_NOT_APPLIED: Final = "return_not_applied"
CHANGE_NOT_RECORDED: Final = "change_not_recorded"
CHANGE_FOR_UNKNOWN_ENTRY: Final = "change_for_unknown_entry"
_SUBJECT: Final = "ach_entry"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    """What importing a return file did: returns applied now, applied by an earlier import,
    for traces this engine never sent, and for debits not in a returnable state yet;
    notifications of change recorded now and by an earlier import; entries set aside (not
    readable, or refused by the database)."""

    applied: int = 0
    already_applied: int = 0
    unknown: int = 0
    deferred: int = 0
    changes: int = 0
    changes_already: int = 0
    set_aside: int = 0


def file_name_of(effective_on: date, created_local: datetime, modifier: str) -> str:
    """The outbox name of a file: unique, since a creation date's modifiers are."""
    return f"collector-{effective_on:%Y%m%d}-{created_local:%Y%m%d}{modifier}.ach"


def _problem(
    config: NachaConfig, vault: AccountVault, entry: FileEntry, sec_code: str
) -> tuple[str, dict[str, Any]] | None:
    """Why a file cannot hold this debit (a needs_attention reason and its detail), or None."""
    # Tokens are not secrets (the database holds them); the accounts are, and NachaError
    # shows at most an account's last four characters.
    detail: dict[str, Any] = {"trace_number": entry.trace_number, "token": entry.token}
    account = vault.get(entry.token)
    if account is None:
        return VAULT_TOKEN_MISSING, detail
    if not entry.trace_number.startswith(config.originator.odfi_id):
        return UNRENDERABLE_ENTRY, detail | {"problem": "accepted under another ODFI id"}
    debit = debit_entry(
        account,
        amount_cents=entry.amount_cents,
        individual_id=entry.individual_id,
        individual_name=entry.individual_name,
        trace_sequence=int(entry.trace_number[8:]),
        prenote=entry.prenote,
    )
    try:
        check_entry(debit, cast(SecCode, sec_code))
    except NachaError as exc:
        return UNRENDERABLE_ENTRY, detail | {"problem": str(exc)}
    return None


async def _set_aside_entry(
    db: Executor, entry: FileEntry, reason: str, detail: dict[str, Any]
) -> None:
    await set_aside(
        db, subject=_SUBJECT, subject_id=entry.idempotency_key, reason=reason, detail=detail
    )


def _chunks(entries: Sequence[FileEntry]) -> Iterator[list[FileEntry]]:
    # A file holds one batch: at most 999,999 entries and a 12-digit total.
    chunk: list[FileEntry] = []
    total = 0
    for entry in entries:
        if chunk and (
            len(chunk) == MAX_BATCH_ENTRIES or total + entry.amount_cents > MAX_BATCH_TOTAL_CENTS
        ):
            yield chunk
            chunk, total = [], 0
        chunk.append(entry)
        total += entry.amount_cents
    if chunk:
        yield chunk


async def claim_files(
    pool: asyncpg.Pool,
    config: NachaConfig,
    vault: AccountVault,
    *,
    as_of: date,
    now: datetime,
    gateway: str = GATEWAY,
) -> list[AchFile]:
    """Claim, in one transaction, one file per effective date, SEC code and entry description
    due for export, setting aside each debit the file could not hold."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    created_at = now.astimezone(UTC)
    # The header shows the lessor's wall clock, and a file written today takes effect on the
    # next banking day at the earliest (its creation date is never after its effective date).
    created_local = now.astimezone(config.zone).replace(tzinfo=None, microsecond=0)
    earliest = next_banking_day(created_local.date())
    up_to = next_banking_day(as_of)
    claimed: list[AchFile] = []
    async with pool.acquire() as conn, conn.transaction():
        # One export at a time: modifiers are picked from what is already there.
        await lock_exports(conn)
        due = await dates_to_file(conn, gateway=gateway, up_to=up_to, earliest=earliest)
        if not due:
            return []
        used = await modifiers_used(conn, created_on=created_local.date())
        free = [modifier for modifier in _MODIFIERS if modifier not in used]
        left_over = 0
        for effective_on, sec_code, description in due:
            candidates = await file_candidates(
                conn,
                gateway=gateway,
                sec_code=sec_code,
                entry_description=description,
                effective_on=effective_on,
                up_to=up_to,
                earliest=earliest,
            )
            healthy = []
            for entry in candidates:
                problem = _problem(config, vault, entry, sec_code)
                if problem is None:
                    healthy.append(entry)
                else:
                    await _set_aside_entry(conn, entry, *problem)
            for chunk in _chunks(healthy):
                if not free:
                    # Out of file id modifiers for today: these go out with a later export.
                    left_over += len(chunk)
                    continue
                modifier = free.pop(0)
                file = await claim_file(
                    conn,
                    file_name=file_name_of(effective_on, created_local, modifier),
                    gateway=gateway,
                    sec_code=sec_code,
                    entry_description=description,
                    effective_on=effective_on,
                    exported_on=as_of,
                    file_id_modifier=modifier,
                    created_at=created_at,
                    created_local=created_local,
                    entries=chunk,
                )
                if file is not None:
                    claimed.append(file)
        if left_over:
            log.warning(
                "ach_file_modifiers_exhausted",
                created_on=created_local.date().isoformat(),
                debits_left_unfiled=left_over,
                files_a_day=len(_MODIFIERS),
            )
    return claimed


def _created_at_of(config: NachaConfig, file: AchFile) -> datetime:
    # The wall clock stored at the claim (a file claimed before it was stored: UTC).
    if file.created_local is not None:
        return file.created_local.replace(tzinfo=config.zone)
    return file.created_at.astimezone(UTC)


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
                prenote=entry.prenote,
            )
        )
    built = build_debit_file(
        originator,
        debits,
        effective_on=file.effective_on,
        created_at=_created_at_of(config, file),
        file_id_modifier=file.file_id_modifier,
    )
    if list(built.trace_numbers) != [entry.trace_number for entry in entries]:
        raise GatewayError(f"file {file.file_name} did not render its stored trace numbers")
    return built.text


async def _without_unrenderable(
    pool: asyncpg.Pool, config: NachaConfig, vault: AccountVault, outbox: Path, file: AchFile
) -> AchFile | None:
    """The file without the debits it can no longer hold (set aside and unfiled again); None
    when nothing is left of it."""
    entries = await file_entries(pool, file.file_name)
    problems = [(entry, _problem(config, vault, entry, file.sec_code)) for entry in entries]
    bad = [(entry, problem) for entry, problem in problems if problem is not None]
    if not bad:
        return file
    async with pool.acquire() as conn, conn.transaction():
        await lock_exports(conn)
        if await anyio.Path(outbox / file.file_name).exists():
            return file  # another export put it on disk meanwhile: it is what it is
        for entry, (reason, detail) in bad:
            await _set_aside_entry(conn, entry, reason, detail | {"file_name": file.file_name})
        return await release_entries(conn, file, [entry for entry, _ in bad])


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
    pool: asyncpg.Pool,
    config: NachaConfig,
    vault: AccountVault,
    outbox: Path,
    file: AchFile,
    *,
    now: datetime,
) -> Path | None:
    """Render a claimed file, put it in the outbox atomically, and mark it written at ``now``;
    None when none of its debits could be rendered any more (each set aside, the file
    dropped)."""
    path = outbox / file.file_name
    if not await anyio.Path(path).exists():
        kept = await _without_unrenderable(pool, config, vault, outbox, file)
        if kept is None:
            return None
        file = kept
        text = await render_file(pool, config, vault, file)
        path = await anyio.to_thread.run_sync(_write_atomically, outbox, file.file_name, text)
    # The settlement clock of its debits starts from the day it is written (settles_on_of).
    await mark_written(pool, file.file_name, written_at=now)
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
    # Accounts added or removed since the vault was read count from now on.
    await vault.refresh()
    # Files claimed by an export that died before writing them go first, then the new ones.
    files = await unwritten_files(pool, gateway=gateway)
    files += await claim_files(pool, config, vault, as_of=as_of, now=now, gateway=gateway)
    written = []
    for file in files:
        path = await write_file(pool, config, vault, outbox, file, now=now)
        if path is not None:
            written.append(path)
    return written


async def import_returns(
    pool: asyncpg.Pool,
    text: str,
    *,
    as_of: date,
    retry_days: Sequence[int],
    vault: AccountVault | None = None,
) -> ImportResult:
    """Apply every return of a return file to its debit or prenote and record every
    notification of change, each once, correcting the account in ``vault`` and the method's
    display fields (no vault: recorded and set aside, not applied); an entry that cannot be
    read or applied is set aside and the rest go on. Raise NachaError (nothing applied) for a
    file whose structure cannot be read."""
    parsed = read_returns(text)
    traced = await entries_by_trace(
        pool,
        [(entry.original_trace, entry.amount_cents) for entry in parsed.returns]
        + [(change.original_trace, 0) for change in parsed.changes],
    )
    keys = {trace: key for trace, (key, _) in traced.items()}
    applied = already = unknown = deferred = changes = changes_already = set_aside_count = 0
    for bad in parsed.malformed:
        subject_id = bad.original_trace or bad.trace or f"line {bad.line}"
        await set_aside(
            pool,
            subject=_SUBJECT,
            subject_id=subject_id,
            reason=MALFORMED_RETURN_ENTRY,
            detail={"line": bad.line, "trace": bad.trace, "problem": bad.problem},
        )
        set_aside_count += 1
    for entry in parsed.returns:
        key = keys.get(entry.original_trace)
        prenote = await prenotes.by_key(pool, key) if key is not None else None
        if prenote is not None and key is not None:
            # A prenote carries no money: its return validates nothing, or closes the account.
            if await apply_prenote_return(
                pool,
                prenote,
                idempotency_key=key,
                code=entry.return_code,
                trace=entry.original_trace,
                as_of=as_of,
            ):
                applied += 1
            else:
                already += 1
            continue
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
        try:
            counts = await apply_by_key(
                pool, key, fact, as_of=as_of, retry_days=retry_days, source="return_file"
            )
        except asyncpg.PostgresError as exc:
            if not is_row_error(exc):
                raise
            # This debit's data is refused: the other returns of the file still go in.
            await set_aside(
                pool,
                subject=_SUBJECT,
                subject_id=key,
                reason=RETURN_NOT_APPLIED,
                detail={
                    "trace": entry.original_trace,
                    "return_code": entry.return_code,
                    "sqlstate": str(getattr(exc, "sqlstate", "")),
                },
            )
            set_aside_count += 1
            continue
        if counts.returned:
            applied += 1
        else:
            already += 1  # another import applied it in between
    for change in parsed.changes:
        key = keys.get(change.original_trace)
        if key is None:
            # A notice is filed under its entry's customer (sql/0022): one about a trace this
            # originator never sent names nobody, so an operator sees it instead.
            await set_aside(
                pool,
                subject=_SUBJECT,
                subject_id=change.original_trace,
                reason=CHANGE_FOR_UNKNOWN_ENTRY,
                detail={"trace": change.original_trace, "change_code": change.change_code},
            )
            set_aside_count += 1
            continue
        new = NewChange(
            idempotency_key=key,
            customer_id=traced[change.original_trace][1],
            original_trace=change.original_trace,
            notice_trace=change.notice_trace,
            change_code=change.change_code,
            corrected_routing=change.corrected_routing,
            corrected_account_last4=change.corrected_account_last4,
            corrected_transaction_code=change.corrected_transaction_code,
            corrected_text=change.corrected_text,
            received_on=as_of,
        )
        try:
            recorded = await insert_change(pool, new)
        except asyncpg.PostgresError as exc:
            if not is_row_error(exc):
                raise
            await set_aside(
                pool,
                subject=_SUBJECT,
                subject_id=key or change.original_trace,
                reason=CHANGE_NOT_RECORDED,
                detail={"trace": change.original_trace, "change_code": change.change_code},
            )
            set_aside_count += 1
            continue
        if recorded:
            changes += 1
            log.warning(
                "ach_notification_of_change",
                trace=change.original_trace,
                change_code=change.change_code,
            )
        else:
            changes_already += 1
        # Applied once per method (payment_method_changes): a file imported again, or an
        # import that died after recording the notice, applies what is still missing.
        await apply_change(pool, vault, idempotency_key=key, change=change, as_of=as_of)
    return ImportResult(
        applied=applied,
        already_applied=already,
        unknown=unknown,
        deferred=deferred,
        changes=changes,
        changes_already=changes_already,
        set_aside=set_aside_count,
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
