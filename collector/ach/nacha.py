"""NACHA ACH files: build a debit file, parse and validate any file, read the returns in one.

The layouts are the NACHA Operating Rules' Appendix Three record formats. A file is a sequence
of 94-character records: a File Header (type 1), batches made of a Batch Header (5), Entry
Details (6) each followed by its Addenda (7), and a Batch Control (8), then a File Control (9);
the file is padded with records of 94 '9's to a multiple of 10 records (the blocking factor).
Positions in the comments are the 1-based, inclusive field positions of the published layouts.

Choices made here, for what the Rules leave to the originator:

* Debit files only (service class 225): one batch of PPD or WEB debits per file.
* Names (company, individual, bank) are upper-cased, accents are folded (``José`` → ``JOSE``)
  and the result is cut to the field's width, as banks expect; a name with characters that do
  not fold to printable ASCII is refused. Identifiers (routing and account numbers, company and
  individual ids, the entry description) are never cut: too long is refused.
* Full account numbers never appear in exception messages, reprs or logs: only the last four.

Errors: every refused input raises :class:`NachaError` (a ``ValueError``) naming the field;
:func:`parse_file` raises it, with the line number, for a file whose structure it cannot read;
:func:`validate` never raises and returns the problems as sentences. :func:`read_returns` reads
a return file entry by entry: an entry it cannot read is reported as a :class:`MalformedEntry`
and the others are still read; only a file whose structure is broken raises.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final, Literal

from collector.calendar import is_banking_day

__all__ = [
    "BLOCKING_FACTOR",
    "FILLER_RECORD",
    "MAX_AMOUNT_CENTS",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_TOTAL_CENTS",
    "RECORD_LENGTH",
    "AccountType",
    "Addenda",
    "Batch",
    "BatchControl",
    "BatchHeader",
    "ChangeNotice",
    "DebitEntry",
    "EntryDetail",
    "FileControl",
    "FileHeader",
    "MalformedEntry",
    "NachaError",
    "NachaFile",
    "Originator",
    "ParsedFile",
    "ReturnEntry",
    "ReturnFile",
    "SecCode",
    "build_debit_file",
    "check_entry",
    "is_valid_routing_number",
    "parse_file",
    "parse_returns",
    "read_returns",
    "routing_check_digit",
    "validate",
]

RECORD_LENGTH: Final = 94
BLOCKING_FACTOR: Final = 10
FILLER_RECORD: Final = "9" * RECORD_LENGTH
MAX_AMOUNT_CENTS: Final = 99_999_999_99
"""The Entry Detail amount field holds 10 digits: $99,999,999.99."""

AccountType = Literal["checking", "savings"]
SecCode = Literal["PPD", "WEB"]

# Service Class Code 225: "ACH Debits Only" (Batch Header field 2 and Batch Control field 2).
_SERVICE_CLASS_DEBITS: Final = 225
_SERVICE_CLASSES: Final = frozenset({200, 220, 225})
# Transaction Codes (Entry Detail field 2): 27 demand (checking) debit, 37 savings debit.
_DEBIT_TRANSACTION_CODES: Final[dict[str, int]] = {"checking": 27, "savings": 37}
# 28 demand (checking) debit prenotification, 38 savings debit prenotification.
_PRENOTE_TRANSACTION_CODES: Final[dict[str, int]] = {"checking": 28, "savings": 38}
MAX_BATCH_ENTRIES: Final = 999_999
"""The most entries a batch (and so a file of this module) holds: Entry/Addenda Count, 6 digits."""
MAX_BATCH_TOTAL_CENTS: Final = 10**12 - 1
"""The largest total of a batch's amounts: Total Debit Entry Dollar Amount, 12 digits."""
_MAX_BATCH_ENTRIES: Final = MAX_BATCH_ENTRIES
_MAX_TOTAL_CENTS: Final = MAX_BATCH_TOTAL_CENTS
_MAX_TRACE_SEQUENCE: Final = 9_999_999  # the 7-digit sequence part of the Trace Number
_ROUTING_WEIGHTS: Final = (3, 7, 1, 3, 7, 1, 3, 7, 1)

_DIGITS = re.compile(r"[0-9]+")
_ACCOUNT = re.compile(r"[0-9A-Za-z-]+")
_RETURN_CODE = re.compile(r"R[0-9]{2}")
_CHANGE_CODE = re.compile(r"C(0[1-9]|1[0-3])")
# An Effective Entry Date the ACH operator leaves unset (notifications of change, some returns).
_NO_DATE: Final = frozenset({"", "000000"})


class NachaError(ValueError):
    """A value that cannot go into a NACHA file, or a file whose structure cannot be read."""

    def __init__(self, field: str, problem: str, *, line: int | None = None) -> None:
        where = f"line {line}: {field}" if line is not None else field
        super().__init__(f"{where}: {problem}")
        self.field = field
        self.line = line


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Originator:
    """Who sends the file and on whose behalf: the ODFI's and the company's identifiers."""

    immediate_destination: str
    """Routing number (9 digits) of the ACH operator or bank that receives the file."""
    immediate_origin: str
    """Ten characters assigned by the ODFI (often a company id), or a 9-digit routing number."""
    destination_name: str
    origin_name: str
    company_name: str
    company_id: str
    """Company Identification, up to 10 characters (often "1" followed by the EIN)."""
    odfi_id: str
    """The first 8 digits of the ODFI's routing number; it also starts every trace number."""
    sec_code: SecCode
    """PPD for debits authorized in writing, WEB for debits authorized over the internet."""
    entry_description: str
    """Company Entry Description, up to 10 characters, shown on the customer's statement."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DebitEntry:
    """One debit to a customer's account; ``trace_sequence`` None takes the next number."""

    trace_sequence: int | None = None
    routing_number: str
    account_number: str = field(repr=False)
    account_type: AccountType
    amount_cents: int
    individual_id: str
    individual_name: str
    recurring: bool = True
    """WEB only: Payment Type Code "R" (recurring) or, when False, "S" (single entry)."""
    prenote: bool = False
    """A prenotification (zero dollars, transaction code 28 checking or 38 savings) that
    validates the account before its first live debit (Rules 2.6)."""

    @property
    def account_last4(self) -> str:
        """The last four characters of the account number, the only part ever shown."""
        return _last4(self.account_number)


@dataclass(frozen=True, slots=True, kw_only=True)
class NachaFile:
    """A built file: its text, the trace number of each entry in order, and its totals."""

    text: str = field(repr=False)
    trace_numbers: tuple[str, ...]
    effective_on: date
    entry_count: int
    entry_hash: int
    total_debit_cents: int
    total_credit_cents: int
    block_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileHeader:
    """The File Header record (type 1), fields stripped of their padding."""

    priority_code: str
    immediate_destination: str
    immediate_origin: str
    created_on: date
    creation_time: str
    file_id_modifier: str
    record_size: str
    blocking_factor: str
    format_code: str
    destination_name: str
    origin_name: str
    reference_code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchHeader:
    """A Company/Batch Header record (type 5)."""

    service_class_code: int
    company_name: str
    company_discretionary_data: str
    company_id: str
    sec_code: str
    entry_description: str
    descriptive_date: str
    effective_on: date | None
    settlement_date: str
    originator_status_code: str
    odfi_id: str
    batch_number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Addenda:
    """An Addenda record (type 7): its type code and the whole 94-character record."""

    type_code: str
    record: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryDetail:
    """An Entry Detail record (type 6) and the addenda records that follow it."""

    transaction_code: int
    rdfi_id: str
    check_digit: str
    account_number: str = field(repr=False)
    amount_cents: int
    individual_id: str
    individual_name: str
    discretionary_data: str
    has_addenda: bool
    trace_number: str
    addenda: tuple[Addenda, ...]

    @property
    def routing_number(self) -> str:
        """The receiving DFI's 9-digit routing number."""
        return self.rdfi_id + self.check_digit

    @property
    def account_last4(self) -> str:
        """The last four characters of the account number."""
        return _last4(self.account_number)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchControl:
    """A Company/Batch Control record (type 8)."""

    service_class_code: int
    entry_addenda_count: int
    entry_hash: int
    total_debit_cents: int
    total_credit_cents: int
    company_id: str
    message_authentication_code: str
    odfi_id: str
    batch_number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """One batch: its header, its entries in file order, and its control record."""

    header: BatchHeader
    entries: tuple[EntryDetail, ...]
    control: BatchControl


@dataclass(frozen=True, slots=True, kw_only=True)
class FileControl:
    """The File Control record (type 9)."""

    batch_count: int
    block_count: int
    entry_addenda_count: int
    entry_hash: int
    total_debit_cents: int
    total_credit_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedFile:
    """A whole file as read: header, batches, control, and the number of records with filler."""

    header: FileHeader
    batches: tuple[Batch, ...]
    control: FileControl
    record_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReturnEntry:
    """A returned entry: the reason code and what identifies the original debit."""

    return_code: str
    original_trace: str
    amount_cents: int
    routing_number: str
    """The original receiving DFI (the customer's bank), with its check digit recomputed."""
    account_last4: str
    addenda_info: str
    return_trace: str
    """The return entry's own trace number (the returning bank's), unique per return."""
    date_of_death: date | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeNotice:
    """A notification of change (addenda type 98): what the bank asks to correct, masked.

    A corrected account number is kept as its last four characters only; the whole corrected
    data field is never kept."""

    change_code: str
    """C01 to C13 (C01 account number, C02 routing number, C03 both, C05 transaction code...)."""
    original_trace: str
    routing_number: str
    """The original receiving DFI, with its check digit recomputed."""
    account_last4: str
    """The last four of the account the original entry was sent to."""
    notice_trace: str
    """The notification's own trace number (the bank's)."""
    corrected_routing: str | None = None
    corrected_account_last4: str | None = None
    corrected_transaction_code: str | None = None
    corrected_text: str = ""
    """Other corrected data (C04 a name, C09 an identification number...), never an account."""
    corrected_account: str | None = field(default=None, repr=False, compare=False)
    """The whole corrected account number (C01, C03, C06, C07), for the account vault only:
    never stored in the database, logged, or shown."""

    @property
    def corrected_account_type(self) -> AccountType | None:
        """The account type a corrected transaction code names (C05, C06, C07): 2x checking,
        3x savings."""
        code = self.corrected_transaction_code
        if code is None:
            return None
        return "checking" if code.startswith("2") else "savings" if code.startswith("3") else None


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedEntry:
    """An entry of a return file that could not be read, and why (never an account number)."""

    line: int
    trace: str
    """The entry's own trace number when readable (15 digits), else empty."""
    original_trace: str
    """The original entry's trace number from its addenda when readable, else empty."""
    problem: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReturnFile:
    """A return file read entry by entry: returns, notifications of change, unreadable ones."""

    returns: tuple[ReturnEntry, ...]
    changes: tuple[ChangeNotice, ...]
    malformed: tuple[MalformedEntry, ...]


# --- routing numbers -------------------------------------------------------------------------


def routing_check_digit(first8: str) -> str:
    """The ABA check digit of the first 8 digits of a routing number (weights 3, 7, 1)."""
    if len(first8) != 8 or not _DIGITS.fullmatch(first8):
        raise NachaError("routing_number", "needs 8 digits to compute a check digit")
    total = sum(int(d) * w for d, w in zip(first8, _ROUTING_WEIGHTS[:8], strict=True))
    return str(-total % 10)


def is_valid_routing_number(routing: str) -> bool:
    """Whether ``routing`` is 9 digits whose weighted sum (3, 7, 1, ...) is a multiple of 10."""
    if len(routing) != 9 or not _DIGITS.fullmatch(routing):
        return False
    return sum(int(d) * w for d, w in zip(routing, _ROUTING_WEIGHTS, strict=True)) % 10 == 0


# --- building --------------------------------------------------------------------------------


def build_debit_file(
    originator: Originator,
    entries: Sequence[DebitEntry],
    *,
    effective_on: date,
    created_at: datetime,
    file_id_modifier: str = "A",
    first_trace_sequence: int = 1,
) -> NachaFile:
    """One file with one batch of debits; raises :class:`NachaError` naming any bad field."""
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise NachaError("created_at", "must be timezone-aware (the file shows its wall clock)")
    if not is_banking_day(effective_on):
        # The effective entry date is the day the debit is meant to settle: a banking day.
        raise NachaError("effective_on", f"{effective_on.isoformat()} is not a banking day")
    if created_at.date() > effective_on:
        # The header's creation date is the file's own wall clock: a file never takes effect
        # before the day it was created.
        raise NachaError(
            "created_at",
            f"{created_at.date().isoformat()} is after the effective entry date "
            f"{effective_on.isoformat()}",
        )
    if len(file_id_modifier) != 1 or not re.fullmatch(r"[A-Z0-9]", file_id_modifier):
        raise NachaError("file_id_modifier", "must be one character A-Z or 0-9")
    if not entries:
        raise NachaError("entries", "a batch needs at least one entry")
    if len(entries) > _MAX_BATCH_ENTRIES:
        raise NachaError("entries", f"at most {_MAX_BATCH_ENTRIES} entries fit in a batch")
    _check_trace_sequence(first_trace_sequence, "first_trace_sequence")

    destination = _immediate_destination(originator.immediate_destination)
    origin = _immediate_origin(originator.immediate_origin)
    company_id = _identifier(originator.company_id, 10, "originator.company_id", required=True)
    odfi_id = originator.odfi_id
    if len(odfi_id) != 8 or not _DIGITS.fullmatch(odfi_id):
        raise NachaError("originator.odfi_id", "must be the 8 digits of the ODFI's routing number")
    if originator.sec_code not in ("PPD", "WEB"):
        raise NachaError("originator.sec_code", "must be PPD or WEB")
    description = _identifier(
        originator.entry_description, 10, "originator.entry_description", required=True
    ).upper()

    records = [
        _file_header_record(
            destination=destination,
            origin=origin,
            created_at=created_at,
            file_id_modifier=file_id_modifier,
            destination_name=_name(originator.destination_name, 23, "originator.destination_name"),
            origin_name=_name(originator.origin_name, 23, "originator.origin_name"),
        ),
        _batch_header_record(
            company_name=_name(
                originator.company_name, 16, "originator.company_name", required=True
            ),
            company_id=company_id,
            sec_code=originator.sec_code,
            entry_description=description,
            effective_on=effective_on,
            odfi_id=odfi_id,
            batch_number=1,
        ),
    ]
    traces: list[str] = []
    entry_hash = 0
    total_cents = 0
    last_sequence = 0
    for index, entry in enumerate(entries):
        where = f"entries[{index}]"
        sequence = entry.trace_sequence
        if sequence is None:
            sequence = first_trace_sequence if index == 0 else last_sequence + 1
        _check_trace_sequence(sequence, f"{where}.trace_sequence")
        if sequence <= last_sequence:
            # Entries in a batch are in ascending trace number order (Appendix Three, Entry
            # Detail "Trace Number"); a repeat would also make two debits indistinguishable.
            raise NachaError(f"{where}.trace_sequence", f"{sequence} does not ascend")
        last_sequence = sequence
        trace = f"{odfi_id}{sequence:07d}"
        record, rdfi_id = _entry_record(entry, where, trace, originator.sec_code)
        records.append(record)
        traces.append(trace)
        entry_hash += rdfi_id
        total_cents += entry.amount_cents
    if total_cents > _MAX_TOTAL_CENTS:
        raise NachaError("entries", "the total of the amounts does not fit 12 digits")

    # Entry Hash: the sum of the 8-digit Receiving DFI Identifications, rightmost 10 digits.
    hash10 = entry_hash % 10**10
    records.append(
        _batch_control_record(
            entry_addenda_count=len(entries),
            entry_hash=hash10,
            total_debit_cents=total_cents,
            company_id=company_id,
            odfi_id=odfi_id,
            batch_number=1,
        )
    )
    # The block count covers the records written so far, the file control, and the filler.
    block_count = math.ceil((len(records) + 1) / BLOCKING_FACTOR)
    records.append(
        _file_control_record(
            batch_count=1,
            block_count=block_count,
            entry_addenda_count=len(entries),
            entry_hash=hash10,
            total_debit_cents=total_cents,
        )
    )
    records.extend([FILLER_RECORD] * (block_count * BLOCKING_FACTOR - len(records)))
    return NachaFile(
        text="\n".join(records) + "\n",
        trace_numbers=tuple(traces),
        effective_on=effective_on,
        entry_count=len(entries),
        entry_hash=hash10,
        total_debit_cents=total_cents,
        total_credit_cents=0,
        block_count=block_count,
    )


def check_entry(entry: DebitEntry, sec_code: SecCode = "PPD") -> None:
    """Raise :class:`NachaError` naming the field when a file cannot hold this entry."""
    sequence = entry.trace_sequence if entry.trace_sequence is not None else 1
    _check_trace_sequence(sequence, "entry.trace_sequence")
    _entry_record(entry, "entry", f"{0:08d}{sequence:07d}", sec_code)


def _file_header_record(
    *,
    destination: str,
    origin: str,
    created_at: datetime,
    file_id_modifier: str,
    destination_name: str,
    origin_name: str,
) -> str:
    return _record(
        "1",  # 01-01 Record Type Code
        "01",  # 02-03 Priority Code
        destination,  # 04-13 Immediate Destination: blank + 9-digit routing number
        origin,  # 14-23 Immediate Origin
        created_at.strftime("%y%m%d"),  # 24-29 File Creation Date YYMMDD
        created_at.strftime("%H%M"),  # 30-33 File Creation Time HHMM
        file_id_modifier,  # 34-34 File ID Modifier: tells apart files of the same day
        "094",  # 35-37 Record Size
        "10",  # 38-39 Blocking Factor
        "1",  # 40-40 Format Code
        _alpha(destination_name, 23),  # 41-63 Immediate Destination Name
        _alpha(origin_name, 23),  # 64-86 Immediate Origin Name
        _alpha("", 8),  # 87-94 Reference Code (optional)
    )


def _batch_header_record(
    *,
    company_name: str,
    company_id: str,
    sec_code: str,
    entry_description: str,
    effective_on: date,
    odfi_id: str,
    batch_number: int,
) -> str:
    return _record(
        "5",  # 01-01 Record Type Code
        _numeric(_SERVICE_CLASS_DEBITS, 3),  # 02-04 Service Class Code: 225 debits only
        _alpha(company_name, 16),  # 05-20 Company Name
        _alpha("", 20),  # 21-40 Company Discretionary Data (optional)
        _alpha(company_id, 10),  # 41-50 Company Identification
        sec_code,  # 51-53 Standard Entry Class Code
        _alpha(entry_description, 10),  # 54-63 Company Entry Description
        _alpha("", 6),  # 64-69 Company Descriptive Date (optional)
        effective_on.strftime("%y%m%d"),  # 70-75 Effective Entry Date YYMMDD
        _alpha("", 3),  # 76-78 Settlement Date (Julian): blank, the ACH operator fills it
        "1",  # 79-79 Originator Status Code: 1, the ODFI is bound by the Rules
        odfi_id,  # 80-87 Originating DFI Identification
        _numeric(batch_number, 7),  # 88-94 Batch Number
    )


def _entry_record(entry: DebitEntry, where: str, trace: str, sec_code: str) -> tuple[str, int]:
    routing = entry.routing_number
    if len(routing) != 9 or not _DIGITS.fullmatch(routing):
        raise NachaError(f"{where}.routing_number", "must be 9 digits")
    if not is_valid_routing_number(routing):
        raise NachaError(f"{where}.routing_number", f"{routing} fails the ABA check digit")
    codes = _PRENOTE_TRANSACTION_CODES if entry.prenote else _DEBIT_TRANSACTION_CODES
    transaction_code = codes.get(entry.account_type)
    if transaction_code is None:
        raise NachaError(f"{where}.account_type", "must be checking or savings")
    account = entry.account_number
    if not _ACCOUNT.fullmatch(account):
        raise NachaError(
            f"{where}.account_number",
            f"account ending {_last4(account)} may hold only letters, digits and hyphens",
        )
    if len(account) > 17:
        raise NachaError(
            f"{where}.account_number", f"account ending {_last4(account)} is over 17 characters"
        )
    amount = entry.amount_cents
    if entry.prenote:
        if type(amount) is not int or amount != 0:
            raise NachaError(f"{where}.amount_cents", "a prenote is for zero dollars")
    elif type(amount) is not int or not 0 < amount <= MAX_AMOUNT_CENTS:
        raise NachaError(
            f"{where}.amount_cents", f"must be whole cents from 1 to {MAX_AMOUNT_CENTS}"
        )
    # WEB debits carry the Payment Type Code in positions 77-78: R recurring, S single entry.
    discretionary = ("R" if entry.recurring else "S") if sec_code == "WEB" else ""
    record = _record(
        "6",  # 01-01 Record Type Code
        _numeric(transaction_code, 2),  # 02-03 Transaction Code: 27/37 debit, 28/38 prenote
        routing[:8],  # 04-11 Receiving DFI Identification
        routing[8],  # 12-12 Check Digit
        _alpha(account, 17),  # 13-29 DFI Account Number, left-justified
        _numeric(amount, 10),  # 30-39 Amount in cents
        _alpha(_identifier(entry.individual_id, 15, f"{where}.individual_id"), 15),  # 40-54
        _alpha(_name(entry.individual_name, 22, f"{where}.individual_name", required=True), 22),
        # ^ 55-76 Individual Name
        _alpha(discretionary, 2),  # 77-78 Discretionary Data / Payment Type Code
        "0",  # 79-79 Addenda Record Indicator: no addenda
        trace,  # 80-94 Trace Number: ODFI id (8) + sequence (7)
    )
    return record, int(routing[:8])


def _batch_control_record(
    *,
    entry_addenda_count: int,
    entry_hash: int,
    total_debit_cents: int,
    company_id: str,
    odfi_id: str,
    batch_number: int,
) -> str:
    return _record(
        "8",  # 01-01 Record Type Code
        _numeric(_SERVICE_CLASS_DEBITS, 3),  # 02-04 Service Class Code
        _numeric(entry_addenda_count, 6),  # 05-10 Entry/Addenda Count
        _numeric(entry_hash, 10),  # 11-20 Entry Hash
        _numeric(total_debit_cents, 12),  # 21-32 Total Debit Entry Dollar Amount
        _numeric(0, 12),  # 33-44 Total Credit Entry Dollar Amount
        _alpha(company_id, 10),  # 45-54 Company Identification
        _alpha("", 19),  # 55-73 Message Authentication Code (blank)
        _alpha("", 6),  # 74-79 Reserved
        odfi_id,  # 80-87 Originating DFI Identification
        _numeric(batch_number, 7),  # 88-94 Batch Number
    )


def _file_control_record(
    *,
    batch_count: int,
    block_count: int,
    entry_addenda_count: int,
    entry_hash: int,
    total_debit_cents: int,
) -> str:
    return _record(
        "9",  # 01-01 Record Type Code
        _numeric(batch_count, 6),  # 02-07 Batch Count
        _numeric(block_count, 6),  # 08-13 Block Count
        _numeric(entry_addenda_count, 8),  # 14-21 Entry/Addenda Count
        _numeric(entry_hash, 10),  # 22-31 Entry Hash
        _numeric(total_debit_cents, 12),  # 32-43 Total Debit Entry Dollar Amount in File
        _numeric(0, 12),  # 44-55 Total Credit Entry Dollar Amount in File
        _alpha("", 39),  # 56-94 Reserved
    )


def _record(*fields: str) -> str:
    record = "".join(fields)
    if len(record) != RECORD_LENGTH:  # a bug here, never bad input: inputs are checked first
        raise AssertionError(f"record type {record[:1]} has {len(record)} characters")
    return record


def _alpha(value: str, width: int) -> str:
    return value.ljust(width)[:width]


def _numeric(value: int, width: int) -> str:
    text = f"{value:0{width}d}"
    if len(text) != width:
        raise AssertionError(f"{value} does not fit {width} digits")
    return text


def _printable(value: str) -> bool:
    # Alphanumeric fields hold characters of ASCII value 0x20 and above (Appendix Three,
    # "Data Specifications"); DEL and anything non-ASCII would not survive the operator.
    return all(" " <= ch <= "~" for ch in value)


def _name(value: str, width: int, what: str, *, required: bool = False) -> str:
    folded = "".join(
        ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch)
    )
    if not _printable(folded):
        raise NachaError(what, "holds characters that do not fold to printable ASCII")
    name = " ".join(folded.split()).upper()
    if required and not name:
        raise NachaError(what, "is required")
    return name[:width]


def _identifier(value: str, width: int, what: str, *, required: bool = False) -> str:
    if not _printable(value):
        raise NachaError(what, "must be printable ASCII")
    if len(value) > width:
        raise NachaError(what, f"is over {width} characters")
    if required and not value.strip():
        raise NachaError(what, "is required")
    return value


def _immediate_destination(value: str) -> str:
    routing = value[1:] if len(value) == 10 and value[0] == " " else value
    if not is_valid_routing_number(routing):
        raise NachaError("originator.immediate_destination", "must be a 9-digit routing number")
    return " " + routing


def _immediate_origin(value: str) -> str:
    if len(value) == 9 and _DIGITS.fullmatch(value):
        return " " + value
    if len(value) == 10 and _printable(value):
        return value
    raise NachaError(
        "originator.immediate_origin", "must be 10 characters or a 9-digit routing number"
    )


def _check_trace_sequence(sequence: int, what: str) -> None:
    if type(sequence) is not int or not 0 < sequence <= _MAX_TRACE_SEQUENCE:
        raise NachaError(what, f"must be from 1 to {_MAX_TRACE_SEQUENCE}")


def _last4(account: str) -> str:
    return account.strip()[-4:] if len(account.strip()) > 4 else "****"


# --- parsing ---------------------------------------------------------------------------------


def parse_file(text: str) -> ParsedFile:
    """The records of a file as typed values; raises :class:`NachaError` if unreadable."""
    # Totals, hashes and counts are not checked here (see validate): a file with a wrong hash
    # still parses, so that it can be inspected.
    lines = _split_records(text)
    if not lines:
        raise NachaError("file", "is empty")
    for number, line in enumerate(lines, start=1):
        if len(line) != RECORD_LENGTH:
            raise NachaError("record", f"has {len(line)} characters, not 94", line=number)
    return _Reader(lines).read()


def parse_returns(text: str) -> list[ReturnEntry]:
    """The returned entries (addenda type 99) of a return file, in file order."""
    # Notifications of change (addenda type 98) are not returns and are skipped. The fields
    # read here sit at the same positions in dishonored and contested dishonored returns.
    return [
        _return_entry(entry, addenda.record)
        for batch in parse_file(text).batches
        for entry in batch.entries
        for addenda in entry.addenda
        if addenda.type_code == "99"
    ]


def read_returns(text: str) -> ReturnFile:
    """The returns (addenda type 99) and notifications of change (type 98) of a return file, in
    file order; an entry that cannot be read is reported in ``malformed`` and the rest are
    read. Raises :class:`NachaError` only for a file whose structure cannot be read."""
    lines = _split_records(text)
    if not lines:
        raise NachaError("file", "is empty")
    for number, record in enumerate(lines, start=1):
        # An entry or addenda record of the wrong length spoils that entry only.
        if len(record) != RECORD_LENGTH and record[:1] not in ("6", "7"):
            raise NachaError("record", f"has {len(record)} characters, not 94", line=number)
    reader = _Reader(lines, lenient=True)
    parsed = reader.read()
    entries = [entry for batch in parsed.batches for entry in batch.entries]
    returns: list[ReturnEntry] = []
    changes: list[ChangeNotice] = []
    malformed = list(reader.malformed)
    for entry, entry_line in zip(entries, reader.entry_lines, strict=True):
        for addenda in entry.addenda:
            try:
                if addenda.type_code == "99":
                    returns.append(_return_entry(entry, addenda.record))
                elif addenda.type_code == "98":
                    changes.append(_change_notice(entry, addenda.record))
            except NachaError as exc:
                malformed.append(_malformed(entry_line, entry.trace_number, entry.addenda, exc))
    malformed.sort(key=lambda item: item.line)
    return ReturnFile(returns=tuple(returns), changes=tuple(changes), malformed=tuple(malformed))


def _malformed(
    line: int, trace: str, addenda: Sequence[Addenda], exc: NachaError
) -> MalformedEntry:
    originals = [_cut(item.record, 7, 21) for item in addenda]
    original = next((t for t in originals if len(t) == 15 and _DIGITS.fullmatch(t)), "")
    return MalformedEntry(
        line=line,
        trace=trace if len(trace) == 15 and _DIGITS.fullmatch(trace) else "",
        original_trace=original,
        problem=str(exc),
    )


def _change_notice(entry: EntryDetail, record: str) -> ChangeNotice:
    # Addenda Record for Notifications of Change (type 7, addenda type code 98).
    code = _cut(record, 4, 6)  # 04-06 Change Code
    original_trace = _cut(record, 7, 21)  # 07-21 Original Entry Trace Number
    original_rdfi = _cut(record, 28, 35)  # 28-35 Original Receiving DFI Identification
    data = _cut(record, 36, 64).ljust(29)  # 36-64 Corrected Data
    if not _CHANGE_CODE.fullmatch(code):
        raise NachaError("change code", f"{code!r} is not C01 to C13")
    if not _DIGITS.fullmatch(original_trace) or len(original_trace) != 15:
        raise NachaError("original entry trace number", "must be 15 digits")
    if not _DIGITS.fullmatch(original_rdfi) or len(original_rdfi) != 8:
        raise NachaError("original receiving DFI identification", "must be 8 digits")
    # Where each code puts its corrected data in positions 36-64 (Appendix Five).
    routing = account = transaction = None
    text = ""
    if code in ("C01", "C06"):
        account = data[0:17]
    if code in ("C02", "C03", "C07"):
        routing = data[0:9]
    if code == "C03":
        account = data[12:29]
    if code == "C07":
        account, transaction = data[9:26], data[26:28]
    if code == "C05":
        transaction = data[0:2]
    if code == "C06":
        transaction = data[20:22]
    if code in ("C04", "C08", "C09", "C10", "C11", "C12", "C13"):
        text = " ".join(data.split())
        if not _printable(text):
            raise NachaError("corrected data", "must be printable ASCII")
    if routing is not None and not is_valid_routing_number(routing):
        raise NachaError("corrected data", f"{code}: the routing number fails the check digit")
    if account is not None and not _ACCOUNT.fullmatch(account.strip()):
        raise NachaError("corrected data", f"{code}: the account number is not readable")
    if transaction is not None and not (
        transaction.isdigit() and _transaction_side(int(transaction)) is not None
    ):
        raise NachaError("corrected data", f"{code}: {transaction!r} is not a transaction code")
    return ChangeNotice(
        change_code=code,
        original_trace=original_trace,
        routing_number=original_rdfi + routing_check_digit(original_rdfi),
        account_last4=entry.account_last4,
        notice_trace=entry.trace_number,
        corrected_routing=routing,
        corrected_account_last4=_last4(account) if account is not None else None,
        corrected_transaction_code=transaction,
        corrected_text=text,
        corrected_account=account.strip() if account is not None else None,
    )


def _return_entry(entry: EntryDetail, record: str) -> ReturnEntry:
    # Addenda Record for Return Entries (type 7, addenda type code 99).
    return_code = _cut(record, 4, 6)  # 04-06 Return Reason Code
    original_trace = _cut(record, 7, 21)  # 07-21 Original Entry Trace Number
    death = _cut(record, 22, 27)  # 22-27 Date of Death YYMMDD (R14, R15) or blank
    original_rdfi = _cut(record, 28, 35)  # 28-35 Original Receiving DFI Identification
    info = _cut(record, 36, 79)  # 36-79 Addenda Information
    # 80-94 Trace Number: the same as the return's Entry Detail record.
    if not _RETURN_CODE.fullmatch(return_code):
        raise NachaError("return reason code", f"{return_code!r} is not R followed by 2 digits")
    if not _DIGITS.fullmatch(original_rdfi) or len(original_rdfi) != 8:
        raise NachaError("original receiving DFI identification", "must be 8 digits")
    return ReturnEntry(
        return_code=return_code,
        original_trace=original_trace.strip(),
        amount_cents=entry.amount_cents,
        routing_number=original_rdfi + routing_check_digit(original_rdfi),
        account_last4=entry.account_last4,
        addenda_info=info.strip(),
        return_trace=entry.trace_number,
        date_of_death=_date(death, "date of death", None) if death.strip() else None,
    )


def _split_records(text: str) -> list[str]:
    # Records end with "\n"; "\r\n" from a bank's system is accepted alike.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _cut(record: str, start: int, end: int) -> str:
    """The field at 1-based inclusive positions ``start``..``end`` of the layout."""
    return record[start - 1 : end]


def _int(record: str, start: int, end: int, what: str, line: int | None) -> int:
    text = _cut(record, start, end)
    if not _DIGITS.fullmatch(text):
        raise NachaError(what, f"{text!r} is not numeric", line=line)
    return int(text)


def _date(text: str, what: str, line: int | None) -> date:
    # YYMMDD; the Rules give no century, and this engine has none before 2000.
    if len(text) == 6 and _DIGITS.fullmatch(text):
        try:
            return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
        except ValueError:
            pass
    raise NachaError(what, f"{text!r} is not a YYMMDD date", line=line)


class _Reader:
    """Reads records in the order the Rules require: 1, (5, (6, 7*)*, 8)*, 9, filler."""

    def __init__(self, lines: list[str], *, lenient: bool = False) -> None:
        self.lines = lines
        self.at = 0  # index of the next record
        # Lenient: an entry that cannot be read is left out and reported, not raised.
        self.lenient = lenient
        self.malformed: list[MalformedEntry] = []
        self.entry_lines: list[int] = []  # the line of each entry read, in file order

    def peek(self) -> str:
        return self.lines[self.at][0] if self.at < len(self.lines) else ""

    def expect(self, types: str, what: str) -> tuple[str, int]:
        kind = self.peek()
        if not kind or kind not in types:
            found = f"record type {kind!r}" if kind else "the end of the file"
            raise NachaError("record order", f"expected {what}, found {found}", line=self.at + 1)
        self.at += 1
        return self.lines[self.at - 1], self.at

    def read(self) -> ParsedFile:
        header = _file_header(*self.expect("1", "a file header (1)"))
        batches: list[Batch] = []
        while self.peek() == "5":
            batches.append(self.read_batch())
        control = _file_control(*self.expect("9", "a batch header (5) or file control (9)"))
        for number in range(self.at + 1, len(self.lines) + 1):
            if self.lines[number - 1] != FILLER_RECORD:
                raise NachaError(
                    "record order",
                    "only filler records of 94 '9's follow the file control",
                    line=number,
                )
        return ParsedFile(
            header=header, batches=tuple(batches), control=control, record_count=len(self.lines)
        )

    def read_entry(self, record: str, line: int, addenda: list[Addenda]) -> EntryDetail:
        for number, item in enumerate([record, *(a.record for a in addenda)], start=line):
            if len(item) != RECORD_LENGTH:
                raise NachaError("record", f"has {len(item)} characters, not 94", line=number)
        entry = _entry_detail(record, line, tuple(addenda))
        if entry.has_addenda != bool(addenda):
            raise NachaError(
                "addenda record indicator",
                f"is {int(entry.has_addenda)} but {len(addenda)} addenda follow",
                line=line,
            )
        return entry

    def read_batch(self) -> Batch:
        header = _batch_header(*self.expect("5", "a batch header (5)"))
        entries: list[EntryDetail] = []
        while self.peek() == "6":
            record, line = self.expect("6", "an entry detail (6)")
            addenda: list[Addenda] = []
            while self.peek() == "7":
                addenda_record, _ = self.expect("7", "an addenda (7)")
                addenda.append(Addenda(type_code=_cut(addenda_record, 2, 3), record=addenda_record))
            try:
                entry = self.read_entry(record, line, addenda)
            except NachaError as exc:
                if not self.lenient:
                    raise
                self.malformed.append(_malformed(line, _cut(record, 80, 94), addenda, exc))
                continue
            entries.append(entry)
            self.entry_lines.append(line)
        control = _batch_control(*self.expect("8", "an entry detail (6) or batch control (8)"))
        return Batch(header=header, entries=tuple(entries), control=control)


def _file_header(record: str, line: int) -> FileHeader:
    return FileHeader(
        priority_code=_cut(record, 2, 3),
        immediate_destination=_cut(record, 4, 13).strip(),
        immediate_origin=_cut(record, 14, 23).strip(),
        created_on=_date(_cut(record, 24, 29), "file creation date", line),
        creation_time=_cut(record, 30, 33),
        file_id_modifier=_cut(record, 34, 34),
        record_size=_cut(record, 35, 37),
        blocking_factor=_cut(record, 38, 39),
        format_code=_cut(record, 40, 40),
        destination_name=_cut(record, 41, 63).strip(),
        origin_name=_cut(record, 64, 86).strip(),
        reference_code=_cut(record, 87, 94).strip(),
    )


def _batch_header(record: str, line: int) -> BatchHeader:
    effective = _cut(record, 70, 75)
    return BatchHeader(
        service_class_code=_int(record, 2, 4, "service class code", line),
        company_name=_cut(record, 5, 20).strip(),
        company_discretionary_data=_cut(record, 21, 40).strip(),
        company_id=_cut(record, 41, 50).strip(),
        sec_code=_cut(record, 51, 53),
        entry_description=_cut(record, 54, 63).strip(),
        descriptive_date=_cut(record, 64, 69).strip(),
        effective_on=None
        if effective.strip() in _NO_DATE
        else _date(effective, "effective entry date", line),
        settlement_date=_cut(record, 76, 78).strip(),
        originator_status_code=_cut(record, 79, 79),
        odfi_id=_cut(record, 80, 87),
        batch_number=_int(record, 88, 94, "batch number", line),
    )


def _entry_detail(record: str, line: int, addenda: tuple[Addenda, ...]) -> EntryDetail:
    indicator = _cut(record, 79, 79)
    if indicator not in ("0", "1"):
        raise NachaError("addenda record indicator", f"{indicator!r} is not 0 or 1", line=line)
    return EntryDetail(
        transaction_code=_int(record, 2, 3, "transaction code", line),
        rdfi_id=_cut(record, 4, 11),
        check_digit=_cut(record, 12, 12),
        account_number=_cut(record, 13, 29).strip(),
        amount_cents=_int(record, 30, 39, "amount", line),
        individual_id=_cut(record, 40, 54).strip(),
        individual_name=_cut(record, 55, 76).strip(),
        discretionary_data=_cut(record, 77, 78).strip(),
        has_addenda=indicator == "1",
        trace_number=_cut(record, 80, 94),
        addenda=addenda,
    )


def _batch_control(record: str, line: int) -> BatchControl:
    return BatchControl(
        service_class_code=_int(record, 2, 4, "service class code", line),
        entry_addenda_count=_int(record, 5, 10, "entry/addenda count", line),
        entry_hash=_int(record, 11, 20, "entry hash", line),
        total_debit_cents=_int(record, 21, 32, "total debit amount", line),
        total_credit_cents=_int(record, 33, 44, "total credit amount", line),
        company_id=_cut(record, 45, 54).strip(),
        message_authentication_code=_cut(record, 55, 73).strip(),
        odfi_id=_cut(record, 80, 87),
        batch_number=_int(record, 88, 94, "batch number", line),
    )


def _file_control(record: str, line: int) -> FileControl:
    return FileControl(
        batch_count=_int(record, 2, 7, "batch count", line),
        block_count=_int(record, 8, 13, "block count", line),
        entry_addenda_count=_int(record, 14, 21, "entry/addenda count", line),
        entry_hash=_int(record, 22, 31, "entry hash", line),
        total_debit_cents=_int(record, 32, 43, "total debit amount", line),
        total_credit_cents=_int(record, 44, 55, "total credit amount", line),
    )


# --- validation ------------------------------------------------------------------------------


def validate(text: str) -> list[str]:
    """Every problem found in a file (record lengths, order, blocking, counts, hashes, totals)."""
    lines = _split_records(text)
    if not lines:
        return ["file: is empty"]
    problems: list[str] = []
    readable = True
    for number, line in enumerate(lines, start=1):
        if len(line) != RECORD_LENGTH:
            problems.append(f"line {number}: record has {len(line)} characters, not 94")
            readable = False
        elif not _printable(line):
            problems.append(f"line {number}: record holds characters outside printable ASCII")
    if len(lines) % BLOCKING_FACTOR:
        problems.append(f"file: {len(lines)} records is not a multiple of the blocking factor 10")
    if not readable:
        return problems  # fields cannot be read at their positions
    try:
        parsed = _Reader(lines).read()
    except NachaError as exc:
        return [*problems, str(exc)]
    return problems + _check_header(parsed.header) + _check_batches(parsed)


def _check_header(header: FileHeader) -> list[str]:
    problems: list[str] = []
    if header.priority_code != "01":
        problems.append(f"file header: priority code {header.priority_code!r} is not 01")
    if not is_valid_routing_number(header.immediate_destination):
        problems.append("file header: immediate destination is not a valid routing number")
    if (header.record_size, header.blocking_factor, header.format_code) != ("094", "10", "1"):
        problems.append("file header: record size, blocking factor, format code are not 094 10 1")
    if not re.fullmatch(r"[A-Z0-9]", header.file_id_modifier):
        problems.append(f"file header: file id modifier {header.file_id_modifier!r} is not A-Z 0-9")
    return problems


def _transaction_side(code: int) -> Literal["debit", "credit"] | None:
    # The second digit of a transaction code: 1-4 credits (e.g. 22, 21 a returned credit),
    # 5-9 debits (27, 28 prenote, 26 a returned debit) (Appendix Three, Transaction Codes).
    if not 21 <= code <= 56:
        return None
    return "credit" if 1 <= code % 10 <= 4 else "debit" if code % 10 >= 5 else None


def _check_batches(parsed: ParsedFile) -> list[str]:
    problems: list[str] = []
    file_count = file_hash = file_debit = file_credit = 0
    last_batch_number = 0
    for batch in parsed.batches:
        header, control = batch.header, batch.control
        where = f"batch {header.batch_number}"
        if header.batch_number <= last_batch_number:
            problems.append(f"{where}: batch numbers do not ascend")
        last_batch_number = header.batch_number
        if header.service_class_code not in _SERVICE_CLASSES:
            problems.append(f"{where}: service class code {header.service_class_code} is unknown")
        if not batch.entries:
            problems.append(f"{where}: has no entries")
        for name, ours, theirs in (
            ("service class code", header.service_class_code, control.service_class_code),
            ("company identification", header.company_id, control.company_id),
            ("originating DFI identification", header.odfi_id, control.odfi_id),
            ("batch number", header.batch_number, control.batch_number),
        ):
            if ours != theirs:
                problems.append(f"{where} control: {name} {theirs!r} != header's {ours!r}")
        count = entry_hash = debit = credit = 0
        last_trace = ""
        for entry in batch.entries:
            trace = entry.trace_number
            count += 1 + len(entry.addenda)
            if _DIGITS.fullmatch(entry.rdfi_id) and len(entry.rdfi_id) == 8:
                entry_hash += int(entry.rdfi_id)
            else:
                problems.append(f"{where} entry {trace}: receiving DFI id is not 8 digits")
            if not is_valid_routing_number(entry.routing_number):
                problems.append(f"{where} entry {trace}: routing number fails the check digit")
            side = _transaction_side(entry.transaction_code)
            if side == "debit":
                debit += entry.amount_cents
            elif side == "credit":
                credit += entry.amount_cents
            else:
                problems.append(
                    f"{where} entry {trace}: transaction code {entry.transaction_code} is unknown"
                )
            if (side, header.service_class_code) in (("credit", 225), ("debit", 220)):
                problems.append(
                    f"{where} entry {trace}: a {side} in a service class "
                    f"{header.service_class_code} batch"
                )
            if not _DIGITS.fullmatch(trace) or not trace.startswith(header.odfi_id):
                problems.append(
                    f"{where} entry {trace}: trace number is not the ODFI id and a sequence"
                )
            if trace <= last_trace:
                problems.append(f"{where} entry {trace}: trace numbers do not ascend")
            last_trace = trace
            problems.extend(_check_addenda(where, entry))
        entry_hash %= 10**10
        for name, stated, computed in (
            ("entry/addenda count", control.entry_addenda_count, count),
            ("entry hash", control.entry_hash, entry_hash),
            ("total debit amount", control.total_debit_cents, debit),
            ("total credit amount", control.total_credit_cents, credit),
        ):
            if stated != computed:
                problems.append(f"{where} control: {name} {stated} != computed {computed}")
        file_count += count
        file_hash += entry_hash
        file_debit += debit
        file_credit += credit

    file_control = parsed.control
    blocks = math.ceil(parsed.record_count / BLOCKING_FACTOR)
    for name, stated, computed in (
        ("batch count", file_control.batch_count, len(parsed.batches)),
        ("block count", file_control.block_count, blocks),
        ("entry/addenda count", file_control.entry_addenda_count, file_count),
        ("entry hash", file_control.entry_hash, file_hash % 10**10),
        ("total debit amount", file_control.total_debit_cents, file_debit),
        ("total credit amount", file_control.total_credit_cents, file_credit),
    ):
        if stated != computed:
            problems.append(f"file control: {name} {stated} != computed {computed}")
    return problems


def _check_addenda(where: str, entry: EntryDetail) -> list[str]:
    problems: list[str] = []
    trace = entry.trace_number
    for number, addenda in enumerate(entry.addenda, start=1):
        record = addenda.record
        if addenda.type_code == "05":
            # 84-87 Addenda Sequence Number; 88-94 Entry Detail Sequence Number.
            if _cut(record, 84, 87) != f"{number:04d}" or _cut(record, 88, 94) != trace[-7:]:
                problems.append(f"{where} entry {trace}: addenda {number} has the wrong sequence")
        elif addenda.type_code in ("98", "99"):
            # 80-94 Trace Number: the same as the Entry Detail record's.
            if _cut(record, 80, 94) != trace:
                problems.append(f"{where} entry {trace}: addenda {number} has another trace")
        elif addenda.type_code != "02":
            problems.append(
                f"{where} entry {trace}: addenda type code {addenda.type_code!r} is unknown"
            )
    return problems
