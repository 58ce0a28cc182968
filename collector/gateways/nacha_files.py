"""The NACHA file gateway: bank debits go out as NACHA files written to an outbox directory.

``charge`` accepts a debit: it stores the entry in ``ach_entries`` (the engine's database) with
its requested date (the due date moved to a banking day) and a trace number fixed at once, and
answers ``Processing``. ``collector ach export`` (:mod:`collector.jobs.ach_files`) later writes
the entries due as one file per effective date, SEC code and Company Entry Description, and
fixes each entry's effective entry date then: the next banking day after the day the file is
written (the lessor's local date), or the requested date when that is later.
``collector ach import-returns`` applies the bank's return file and records its notifications
of change. A NACHA debit has no positive confirmation: it counts as settled once its file is
written and two banking days have passed after the effective entry date it was filed under,
with no return.

A reinitiation (a debit presented again after an R01/R09 return; the engine marks its request
with ``metadata["ach_reinitiation"] == "true"``) goes out under the Company Entry Description
"RETRY PYMT", as NACHA Operating Rules 2.12.4 require, in a file of its own; every other debit
goes out under the configured description, which therefore may not be "RETRY PYMT". The
description is stored with the entry when it is accepted, so the file never depends on the
setting at export time.

The database holds payment method TOKENS only. The account behind a token (routing and account
number, account type, holder's name) comes from an account vault outside the database: a JSON
file, ``{"<token>": {"routing_number", "account_number", "account_type", "name"}}`` (and an
optional ``"validated": true`` for an account validated by other means: no prenote), readable
by its owner only; notifications of change rewrite it (:meth:`AccountVault.correct`).

With SEC code WEB and prenotes on, :meth:`NachaGateway.prenote` accepts the zero-dollar
prenote (transaction code 28/38) that precedes a new account's first live debit
(:mod:`collector.jobs.prenotes`); its fingerprint of an account (routing and account number,
digested) keys the account's history whatever token names it.

Account numbers never reach logs, exception messages or reprs: at most their last four
characters do. This module logs nothing.

Its options (``GatewayContext.options``, filled from the ``COLLECTOR_NACHA_*`` settings) are
the keys of :data:`OPTION_SETTINGS`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import anyio.to_thread
import asyncpg

from collector.ach.nacha import (
    MAX_AMOUNT_CENTS,
    AccountType,
    DebitEntry,
    NachaError,
    Originator,
    SecCode,
    build_debit_file,
    check_entry,
)
from collector.calendar import ach_effective_date, ach_settles_on, next_banking_day
from collector.db.ach_entries import (
    AchEntry,
    NewEntry,
    entry_by_key,
    insert_entry,
    insert_prenote,
)
from collector.domain import MethodKind
from collector.exceptions import GatewayConfigError, GatewayError
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    GatewayContext,
    Outcome,
    Processing,
    Settlement,
    Succeeded,
)

OPTION_SETTINGS: Final[dict[str, str]] = {
    "vault_file": "COLLECTOR_NACHA_VAULT_FILE",
    "outbox": "COLLECTOR_NACHA_OUTBOX",
    "immediate_destination": "COLLECTOR_NACHA_IMMEDIATE_DESTINATION",
    "immediate_origin": "COLLECTOR_NACHA_IMMEDIATE_ORIGIN",
    "destination_name": "COLLECTOR_NACHA_DESTINATION_NAME",
    "origin_name": "COLLECTOR_NACHA_ORIGIN_NAME",
    "company_name": "COLLECTOR_NACHA_COMPANY_NAME",
    "company_id": "COLLECTOR_NACHA_COMPANY_ID",
    "odfi_id": "COLLECTOR_NACHA_ODFI_ID",
    "sec_code": "COLLECTOR_NACHA_SEC_CODE",
    "entry_description": "COLLECTOR_NACHA_ENTRY_DESCRIPTION",
    "timezone": "COLLECTOR_TIMEZONE",
    "prenotes": "COLLECTOR_PRENOTES",
    "fingerprint_key": "COLLECTOR_NACHA_FINGERPRINT_KEY",
}
"""Each option key of the adapter and the setting it comes from."""

REINITIATION_METADATA: Final = "ach_reinitiation"
"""The ChargeRequest metadata key whose value "true" marks a reinitiation."""
REINITIATION_DESCRIPTION: Final = "RETRY PYMT"
"""The Company Entry Description of reinitiations, and of nothing else (Rules 2.12.4)."""

UNKNOWN_ACCOUNT: Final = "unknown_account"
INVALID_ACCOUNT: Final = "invalid_account"
INVALID_AMOUNT: Final = "invalid_amount"

DEFAULT_TIMEZONE: Final = "America/New_York"
"""The lessor's zone when no ``timezone`` option is given (the default of COLLECTOR_TIMEZONE)."""

POOL_MAX_SIZE: Final = 4
POOL_CLOSE_TIMEOUT_S: Final = 5.0
# How often a charge looks whether the vault file changed (new accounts are added to it).
VAULT_RECHECK_S: Final = 1.0

_REQUIRED_OPTIONS: Final = (
    "immediate_destination",
    "immediate_origin",
    "company_name",
    "company_id",
    "odfi_id",
)
_ACCOUNT_TYPES: Final = ("checking", "savings")
_VAULT_FIELDS: Final = ("routing_number", "account_number", "account_type", "name")
# Any banking day: originator checks build a one-entry file dated on it.
_PROBE_DAY: Final = date(2026, 1, 2)
_PROBE_AT: Final = datetime(2026, 1, 2, tzinfo=UTC)
_PROBE_ENTRY: Final = DebitEntry(
    routing_number="091000019",
    account_number="0000",
    account_type="checking",
    amount_cents=1,
    individual_id="",
    individual_name="PROBE",
)


def _setting_of(nacha_field: str) -> str:
    # NachaError.field of an originator value is "originator.<option>".
    option = nacha_field.removeprefix("originator.")
    return OPTION_SETTINGS.get(option, "a COLLECTOR_NACHA_ setting")


@dataclass(frozen=True, slots=True, kw_only=True)
class NachaConfig:
    """The adapter's settings: where the vault and outbox are, and who originates the files."""

    vault_file: Path
    outbox: Path | None
    originator: Originator
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))
    """The lessor's time zone: a file's creation date and time, and the day it is written."""
    prenotes: bool = True
    """Send a prenote before the first WEB debit of a new account (COLLECTOR_PRENOTES)."""
    fingerprint_key: bytes = field(default=b"", repr=False)
    """The HMAC key of account fingerprints (COLLECTOR_NACHA_FINGERPRINT_KEY); empty: a plain
    digest, which a reader of the database could match against guessed account numbers."""

    @property
    def requires_prenotes(self) -> bool:
        """Whether new accounts get a prenote before their first live debit: WEB debits only
        (NACHA Rules 2.5.17.4, account validation for WEB debits), and only when enabled."""
        return self.prenotes and self.originator.sec_code == "WEB"

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> NachaConfig:
        """Read and check the options; raise GatewayConfigError naming the setting."""
        vault = options.get("vault_file", "").strip()
        if not vault:
            raise GatewayConfigError(f"{OPTION_SETTINGS['vault_file']}: is required")
        missing = [
            OPTION_SETTINGS[key] for key in _REQUIRED_OPTIONS if not options.get(key, "").strip()
        ]
        if missing:
            raise GatewayConfigError(f"{', '.join(missing)}: required by the nacha gateway")
        sec_code = options.get("sec_code", "PPD").strip().upper() or "PPD"
        if sec_code not in ("PPD", "WEB"):
            raise GatewayConfigError(f"{OPTION_SETTINGS['sec_code']}: must be PPD or WEB")
        entry_description = options.get("entry_description", "LEASE PMT") or "LEASE PMT"
        if " ".join(entry_description.split()).upper() == REINITIATION_DESCRIPTION:
            raise GatewayConfigError(
                f"{OPTION_SETTINGS['entry_description']}: {REINITIATION_DESCRIPTION!r} is "
                "reserved for reinitiated debits (NACHA Rules 2.12.4); choose another description"
            )
        originator = Originator(
            immediate_destination=options["immediate_destination"].strip(),
            immediate_origin=options["immediate_origin"],
            destination_name=options.get("destination_name", ""),
            origin_name=options.get("origin_name", ""),
            company_name=options["company_name"],
            company_id=options["company_id"].strip(),
            odfi_id=options["odfi_id"].strip(),
            sec_code=cast(SecCode, sec_code),
            entry_description=entry_description,
        )
        try:
            # Every field is checked the way the file will use it: build a one-entry file.
            build_debit_file(
                originator, [_PROBE_ENTRY], effective_on=_PROBE_DAY, created_at=_PROBE_AT
            )
        except NachaError as exc:
            raise GatewayConfigError(f"{_setting_of(exc.field)}: {exc}") from exc
        outbox = options.get("outbox", "").strip()
        timezone = options.get("timezone", "").strip() or DEFAULT_TIMEZONE
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise GatewayConfigError(
                f"{OPTION_SETTINGS['timezone']}: unknown time zone {timezone!r}"
            ) from exc
        prenotes = options.get("prenotes", "true").strip().lower() or "true"
        if prenotes not in ("true", "false"):
            raise GatewayConfigError(f"{OPTION_SETTINGS['prenotes']}: must be true or false")
        return cls(
            vault_file=Path(vault),
            outbox=Path(outbox) if outbox else None,
            originator=originator,
            zone=zone,
            prenotes=prenotes == "true",
            fingerprint_key=options.get("fingerprint_key", "").encode(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultAccount:
    """One bank account from the vault; ``account_last4`` is the only part ever shown."""

    routing_number: str
    account_number: str = field(repr=False)
    account_type: AccountType
    name: str
    validated: bool = False
    """The account was validated before it reached the vault (e.g. an instant account
    verification service): no prenote precedes its first debit."""

    @property
    def account_last4(self) -> str:
        """The last four characters of the account number."""
        return self.account_number[-4:] if len(self.account_number) > 4 else "****"

    def fingerprint(self, key: bytes = b"") -> str:
        """A name of the account (routing and account number) that the same account gets
        under any token: the engine keys its NACHA history and its prenote by it. An HMAC
        under ``key`` (a plain digest without one), never the number; it is kept in the
        database like a token."""
        message = f"nacha-account:{self.routing_number}:{self.account_number}".encode()
        if key:
            return f"nacha:k:{hmac.new(key, message, hashlib.sha256).hexdigest()[:32]}"
        return f"nacha:{hashlib.sha256(message).hexdigest()[:32]}"


def _vault_error(path: Path, problem: str) -> GatewayConfigError:
    return GatewayConfigError(f"{OPTION_SETTINGS['vault_file']}: {path}: {problem}")


def _read_vault(path: Path) -> tuple[dict[str, VaultAccount], tuple[int, int, int]]:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise _vault_error(path, "no such file") from exc
    except OSError as exc:
        raise _vault_error(path, f"cannot be read ({type(exc).__name__})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _vault_error(path, "is not a regular file")
    if info.st_mode & 0o077:
        # It holds full account numbers: nobody but the engine's user may read or change it.
        raise _vault_error(
            path,
            f"mode {stat.S_IMODE(info.st_mode):04o} lets group or others access it; it holds "
            "bank account numbers, so it must be readable by its owner only (chmod 600)",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _vault_error(path, f"cannot be read ({type(exc).__name__})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The decoder's message may quote the file's text: name the kind of failure only.
        raise _vault_error(path, f"is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise _vault_error(path, "must be a JSON object of token -> account")
    accounts: dict[str, VaultAccount] = {}
    for token, account in raw.items():
        if not isinstance(account, dict) or not all(
            isinstance(account.get(name), str) for name in _VAULT_FIELDS
        ):
            fields = ", ".join(_VAULT_FIELDS)
            raise _vault_error(path, f"token {token!r} needs the string fields {fields}")
        if account["account_type"] not in _ACCOUNT_TYPES:
            raise _vault_error(path, f"token {token!r}: account_type must be checking or savings")
        if not isinstance(account.get("validated", False), bool):
            raise _vault_error(path, f"token {token!r}: validated must be true or false")
        accounts[token] = VaultAccount(
            routing_number=account["routing_number"],
            account_number=account["account_number"],
            account_type=cast(AccountType, account["account_type"]),
            name=account["name"],
            validated=account.get("validated", False),
        )
    return accounts, (info.st_ino, info.st_mtime_ns, info.st_size)


class AccountVault:
    """The token → bank account map, read from its file and read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._accounts, self._version = _read_vault(path)
        self._checked_at = time.monotonic()

    @classmethod
    async def open(cls, path: Path) -> AccountVault:
        """Read the vault; raise GatewayConfigError if missing, unreadable or not private."""
        return await anyio.to_thread.run_sync(cls, path)

    def get(self, token: str) -> VaultAccount | None:
        """The account behind a token, or None."""
        return self._accounts.get(token)

    async def refresh(self) -> None:
        """Read the file again if it changed since the last look (at most once a second)."""
        now = time.monotonic()
        if now - self._checked_at < VAULT_RECHECK_S:
            return
        self._checked_at = now
        await anyio.to_thread.run_sync(self._refresh_sync)

    async def correct(
        self,
        token: str,
        *,
        routing_number: str | None = None,
        account_number: str | None = None,
        account_type: AccountType | None = None,
        name: str | None = None,
    ) -> VaultAccount | None:
        """Apply a bank's notification of change to the account behind ``token`` in the vault
        file (written whole, atomically, mode 0600) so the next entry carries the corrected
        data; the account as it is now, or None when the vault has no such token."""
        return await anyio.to_thread.run_sync(
            self._correct_sync, token, routing_number, account_number, account_type, name
        )

    def _correct_sync(
        self,
        token: str,
        routing_number: str | None,
        account_number: str | None,
        account_type: AccountType | None,
        name: str | None,
    ) -> VaultAccount | None:
        self._accounts, self._version = _read_vault(self.path)
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        account = raw.get(token)
        if not isinstance(account, dict):
            return None
        for key, value in (
            ("routing_number", routing_number),
            ("account_number", account_number),
            ("account_type", account_type),
            ("name", name),
        ):
            if value is not None:
                account[key] = value
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(raw, indent=2).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        self._accounts, self._version = _read_vault(self.path)
        self._checked_at = time.monotonic()
        return self._accounts.get(token)

    def _refresh_sync(self) -> None:
        try:
            info = self.path.stat()
        except OSError:
            info = None
        if info is not None and (info.st_ino, info.st_mtime_ns, info.st_size) == self._version:
            return
        # Changed (or gone): read it again with every check; a bad vault is an error.
        self._accounts, self._version = _read_vault(self.path)


def debit_entry(
    account: VaultAccount,
    *,
    amount_cents: int,
    individual_id: str,
    individual_name: str,
    trace_sequence: int | None = None,
    prenote: bool = False,
) -> DebitEntry:
    """The file entry debiting this account (a zero-dollar prenote of it, ``prenote``)."""
    return DebitEntry(
        prenote=prenote,
        trace_sequence=trace_sequence,
        routing_number=account.routing_number,
        account_number=account.account_number,
        account_type=account.account_type,
        amount_cents=amount_cents,
        individual_id=individual_id,
        individual_name=individual_name or account.name,
    )


def _individual_id(request: ChargeRequest) -> str:
    # Individual Identification Number (15 characters): the lease, so the customer's statement
    # and a return name the agreement the debit serves.
    lease_id = request.metadata.get("lease_id", "")
    return lease_id if lease_id.isdecimal() and len(lease_id) <= 15 else ""


def is_reinitiation(request: ChargeRequest) -> bool:
    """Whether the engine marked this debit as presented again after an R01/R09 return."""
    return request.metadata.get(REINITIATION_METADATA) == "true"


class NachaGateway:
    """Accepts bank debits for NACHA files and says where each stands."""

    method_kinds = frozenset({MethodKind.ACH})

    def __init__(
        self, name: str, pool: asyncpg.Pool, config: NachaConfig, vault: AccountVault
    ) -> None:
        self.name = name
        self.config = config
        self.vault = vault
        self._pool = pool

    async def charge(self, request: ChargeRequest) -> Outcome:
        """Accept the debit for its effective date's file (Processing, the trace number as the
        reference); a repeated key gets the first answer."""
        key = request.idempotency_key
        existing = await entry_by_key(self._pool, key, gateway=self.name)
        if existing is not None:
            return Processing(gateway_ref=existing.trace_number)
        amount_cents = request.amount_cents
        if not 0 < amount_cents <= MAX_AMOUNT_CENTS:
            return Declined(
                kind=DeclineKind.HARD,
                code=INVALID_AMOUNT,
                message=f"A NACHA debit is from 1 to {MAX_AMOUNT_CENTS} cents.",
            )
        await self.vault.refresh()
        account = self.vault.get(request.token)
        if account is None:
            return Declined(
                kind=DeclineKind.HARD,
                code=UNKNOWN_ACCOUNT,
                message="The account vault holds no bank account for this payment method.",
            )
        # The engine passes the business date; without one, the lessor's today stands in.
        due_on = request.effective_on or datetime.now(self.config.zone).date()
        # A debit due on a weekend or holiday is requested for the next banking day, so it
        # settles then and never before the due date (collector.calendar). The export moves it
        # later still when its file is written on or after that day.
        effective_on = ach_effective_date(due_on)
        individual_id = _individual_id(request)
        entry_description = (
            REINITIATION_DESCRIPTION
            if is_reinitiation(request)
            else self.config.originator.entry_description
        )
        originator = replace(self.config.originator, entry_description=entry_description)
        entry = debit_entry(
            account,
            amount_cents=amount_cents,
            individual_id=individual_id,
            individual_name=account.name,
        )
        try:
            # Refuse now what a file could not hold (routing check digit, account characters,
            # names): the file renders every entry the same way.
            check_entry(entry, originator.sec_code)
        except NachaError as exc:
            # NachaError shows at most the account's last four characters.
            return Declined(kind=DeclineKind.HARD, code=INVALID_ACCOUNT, message=str(exc))
        new = NewEntry(
            idempotency_key=key,
            customer_id=request.customer_id,
            gateway=self.name,
            odfi_id=self.config.originator.odfi_id,
            effective_on=effective_on,
            amount_cents=amount_cents,
            token=request.token,
            individual_id=individual_id,
            individual_name=account.name,
            sec_code=originator.sec_code,
            entry_description=entry_description,
        )
        stored = await insert_entry(self._pool, new)
        if stored is None:
            # Another call with this key won the insert: answer with its entry.
            stored = await entry_by_key(self._pool, key, gateway=self.name)
            if stored is None:
                raise GatewayError("the nacha gateway lost a debit it had just stored")
        return Processing(gateway_ref=stored.trace_number)

    @property
    def requires_prenotes(self) -> bool:
        """Whether a new account gets a prenote before its first live debit here."""
        return self.config.requires_prenotes

    async def fingerprint(self, token: str) -> str | None:
        """The vault account's fingerprint (routing and account number, digested), the same
        under any token; None for a token the vault does not hold."""
        await self.vault.refresh()
        account = self.vault.get(token)
        return account.fingerprint(self.config.fingerprint_key) if account is not None else None

    async def account_validated(self, token: str) -> bool:
        """Whether the vault marks the account as validated already (no prenote needed)."""
        await self.vault.refresh()
        account = self.vault.get(token)
        return account is not None and account.validated

    async def prenote(
        self, idempotency_key: str, token: str, *, customer_id: int, on: date
    ) -> str | None:
        """Accept a zero-dollar prenote of the account behind ``token`` for the next file
        (requested for business date ``on``); its trace number, or None when the vault holds
        no usable account for the token. A repeated key keeps the first entry."""
        existing = await entry_by_key(self._pool, idempotency_key, gateway=self.name)
        if existing is not None:
            return existing.trace_number
        await self.vault.refresh()
        account = self.vault.get(token)
        if account is None:
            return None
        entry = debit_entry(
            account, amount_cents=0, individual_id="", individual_name=account.name, prenote=True
        )
        try:
            check_entry(entry, self.config.originator.sec_code)
        except NachaError:
            return None
        stored = await insert_prenote(
            self._pool,
            idempotency_key=idempotency_key,
            customer_id=customer_id,
            gateway=self.name,
            odfi_id=self.config.originator.odfi_id,
            effective_on=ach_effective_date(on),
            token=token,
            individual_name=account.name,
            sec_code=self.config.originator.sec_code,
            entry_description=self.config.originator.entry_description,
        )
        if stored is None:
            stored = await entry_by_key(self._pool, idempotency_key, gateway=self.name)
        return stored.trace_number if stored is not None else None

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        """The debit accepted under this key (Processing), or None."""
        entry = await entry_by_key(self._pool, idempotency_key, gateway=self.name)
        return Processing(gateway_ref=entry.trace_number) if entry is not None else None

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Settled once its file is written and 2 banking days passed after its effective date;
        Processing before; None for a key never accepted. Returns come from return files."""
        entry = await entry_by_key(self._pool, idempotency_key, gateway=self.name)
        if entry is None:
            return None
        settles_on = settles_on_of(entry, self.config.zone)
        if settles_on is None or as_of < settles_on:
            return Processing(gateway_ref=entry.trace_number)
        return Succeeded(gateway_ref=entry.trace_number, code="settled")


def settles_on_of(entry: AchEntry, zone: ZoneInfo) -> date | None:
    """The day a written debit counts as settled; None while its file is not written (a debit
    set aside at export stays unfiled, so in flight)."""
    if entry.written_at is None or entry.exported_on is None:
        return None
    # Counted from the effective entry date the file carries. A file that reached the outbox
    # later than planned (an export that died between claiming and writing it, seen again a day
    # later) carries a stale date, which the ACH operator settles on its next settlement day:
    # count from the banking day after the file was written, when that is later.
    written_on = entry.written_at.astimezone(zone).date()
    return ach_settles_on(max(entry.effective_on, next_banking_day(written_on)))


def originator_for(config: NachaConfig, sec_code: str, entry_description: str) -> Originator:
    """The originator with the SEC code and Company Entry Description a file's entries were
    accepted under."""
    return replace(
        config.originator, sec_code=cast(SecCode, sec_code), entry_description=entry_description
    )


@asynccontextmanager
async def open_nacha(ctx: GatewayContext) -> AsyncIterator[NachaGateway]:
    """A ready NACHA gateway named ``ctx.name`` on the engine's database ``ctx.database_url``;
    raise GatewayConfigError naming the setting when its options or vault are wrong."""
    config = NachaConfig.from_options(ctx.options)
    vault = await AccountVault.open(config.vault_file)
    try:
        pool = await asyncpg.create_pool(
            ctx.database_url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            server_settings={"application_name": f"collector-{ctx.name}"},
            timeout=10,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        # The URL may carry a password: name the failure, not the URL.
        raise GatewayError(
            f"gateway {ctx.name!r} cannot reach its database: {type(exc).__name__}"
        ) from exc
    try:
        yield NachaGateway(ctx.name, pool, config, vault)
    finally:
        with anyio.move_on_after(POOL_CLOSE_TIMEOUT_S, shield=True) as closing:
            await pool.close()
        if closing.cancelled_caught:
            pool.terminate()
