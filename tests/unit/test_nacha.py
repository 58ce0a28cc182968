from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import achkit
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.ach.nacha import (
    MAX_AMOUNT_CENTS,
    BatchControl,
    BatchHeader,
    ChangeNotice,
    DebitEntry,
    EntryDetail,
    FileControl,
    FileHeader,
    MalformedEntry,
    NachaError,
    Originator,
    ReturnEntry,
    ReturnFile,
    build_debit_file,
    check_entry,
    is_valid_routing_number,
    parse_file,
    parse_returns,
    read_returns,
    routing_check_digit,
    validate,
)
from collector.calendar import ach_effective_date

ORIGINATOR = Originator(
    immediate_destination="021000021",
    immediate_origin="1234567890",
    destination_name="First Example Bank",
    origin_name="Acme Leasing",
    company_name="Acme Leasing",
    company_id="1234567890",
    odfi_id="02100002",
    sec_code="PPD",
    entry_description="LEASE PMT",
)
ENTRIES = [
    DebitEntry(
        routing_number="091000019",
        account_number="12345678901",
        account_type="checking",
        amount_cents=12345,
        individual_id="L-1001",
        individual_name="José Álvarez",
    ),
    DebitEntry(
        routing_number="011401533",
        account_number="98765432",
        account_type="savings",
        amount_cents=99900,
        individual_id="L-1002",
        individual_name="a very long customer name exceeding",
    ),
]
EFFECTIVE_ON = date(2026, 11, 27)  # the Friday after Thanksgiving: a banking day
CREATED_AT = datetime(2026, 11, 25, 14, 5, tzinfo=ZoneInfo("America/New_York"))

# The 2-entry example, written out by hand from the NACHA record layouts (Appendix Three).
# Each record is the concatenation of its fields; the comment gives the field's positions.
EXPECTED_RECORDS = [
    # File Header
    "1"  # 01-01 record type code
    "01"  # 02-03 priority code
    " 021000021"  # 04-13 immediate destination: blank + routing number
    "1234567890"  # 14-23 immediate origin
    "261125"  # 24-29 file creation date YYMMDD
    "1405"  # 30-33 file creation time HHMM
    "A"  # 34-34 file id modifier
    "094"  # 35-37 record size
    "10"  # 38-39 blocking factor
    "1"  # 40-40 format code
    "FIRST EXAMPLE BANK     "  # 41-63 immediate destination name (23)
    "ACME LEASING           "  # 64-86 immediate origin name (23)
    "        ",  # 87-94 reference code (8)
    # Batch Header
    "5"  # 01-01 record type code
    "225"  # 02-04 service class code: debits only
    "ACME LEASING    "  # 05-20 company name (16)
    "                    "  # 21-40 company discretionary data (20)
    "1234567890"  # 41-50 company identification
    "PPD"  # 51-53 standard entry class code
    "LEASE PMT "  # 54-63 company entry description (10)
    "      "  # 64-69 company descriptive date
    "261127"  # 70-75 effective entry date YYMMDD
    "   "  # 76-78 settlement date: left to the ACH operator
    "1"  # 79-79 originator status code
    "02100002"  # 80-87 originating DFI identification
    "0000001",  # 88-94 batch number
    # Entry Detail 1
    "6"  # 01-01 record type code
    "27"  # 02-03 transaction code: checking debit
    "09100001"  # 04-11 receiving DFI identification
    "9"  # 12-12 check digit
    "12345678901      "  # 13-29 DFI account number (17)
    "0000012345"  # 30-39 amount: $123.45
    "L-1001         "  # 40-54 individual identification number (15)
    "JOSE ALVAREZ          "  # 55-76 individual name (22): accents folded
    "  "  # 77-78 discretionary data
    "0"  # 79-79 addenda record indicator
    "021000020000001",  # 80-94 trace number: ODFI id + sequence 1
    # Entry Detail 2
    "6"  # 01-01 record type code
    "37"  # 02-03 transaction code: savings debit
    "01140153"  # 04-11 receiving DFI identification
    "3"  # 12-12 check digit
    "98765432         "  # 13-29 DFI account number (17)
    "0000099900"  # 30-39 amount: $999.00
    "L-1002         "  # 40-54 individual identification number (15)
    "A VERY LONG CUSTOMER N"  # 55-76 individual name (22): cut to the width
    "  "  # 77-78 discretionary data
    "0"  # 79-79 addenda record indicator
    "021000020000002",  # 80-94 trace number
    # Batch Control
    "8"  # 01-01 record type code
    "225"  # 02-04 service class code
    "000002"  # 05-10 entry/addenda count
    "0010240154"  # 11-20 entry hash: 09100001 + 01140153
    "000000112245"  # 21-32 total debit entry dollar amount: 12345 + 99900
    "000000000000"  # 33-44 total credit entry dollar amount
    "1234567890"  # 45-54 company identification
    "                   "  # 55-73 message authentication code (19)
    "      "  # 74-79 reserved (6)
    "02100002"  # 80-87 originating DFI identification
    "0000001",  # 88-94 batch number
    # File Control
    "9"  # 01-01 record type code
    "000001"  # 02-07 batch count
    "000001"  # 08-13 block count: 10 records
    "00000002"  # 14-21 entry/addenda count
    "0010240154"  # 22-31 entry hash
    "000000112245"  # 32-43 total debit entry dollar amount in file
    "000000000000" + " " * 39,  # 44-55 total credit entry dollar amount in file  # 56-94 reserved
    # Four filler records pad the file to a multiple of 10 records.
    *["9" * 94] * 4,
]


def build(entries: list[DebitEntry] | None = None, **overrides: object) -> str:
    options: dict[str, object] = {"effective_on": EFFECTIVE_ON, "created_at": CREATED_AT}
    options.update(overrides)
    return build_debit_file(ORIGINATOR, ENTRIES if entries is None else entries, **options).text  # type: ignore[arg-type]


def replace_field(text: str, line: int, start: int, end: int, value: str) -> str:
    """The file with 1-based ``line``'s positions ``start``..``end`` replaced by ``value``."""
    lines = text.split("\n")
    record = lines[line - 1]
    assert len(value) == end - start + 1
    lines[line - 1] = record[: start - 1] + value + record[end:]
    return "\n".join(lines)


# --- the 2-entry example --------------------------------------------------------------------


def test_expected_records_follow_the_layout_widths() -> None:
    assert [len(record) for record in EXPECTED_RECORDS] == [94] * 10


def test_two_entry_file_matches_the_hand_checked_records_byte_for_byte() -> None:
    nacha = build_debit_file(ORIGINATOR, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert nacha.text == "\n".join(EXPECTED_RECORDS) + "\n"
    assert nacha.trace_numbers == ("021000020000001", "021000020000002")
    assert (nacha.entry_count, nacha.entry_hash, nacha.block_count) == (2, 10240154, 1)
    assert (nacha.total_debit_cents, nacha.total_credit_cents) == (112245, 0)


def test_every_record_is_94_characters_and_the_file_is_blocked_by_10() -> None:
    records = build().split("\n")
    assert records[-1] == ""  # the file ends with a newline
    assert all(len(record) == 94 for record in records[:-1])
    assert len(records[:-1]) % 10 == 0


def test_generated_file_passes_our_validator_and_achkit() -> None:
    text = build()
    assert validate(text) == []
    assert achkit.validate(text) == {"ok": True, "errors": []}


def test_generated_file_round_trips_through_parse_file() -> None:
    parsed = parse_file(build())
    assert parsed.header.immediate_destination == "021000021"
    assert parsed.header.created_on == date(2026, 11, 25)
    (batch,) = parsed.batches
    assert batch.header.effective_on == EFFECTIVE_ON
    assert (batch.header.sec_code, batch.header.entry_description) == ("PPD", "LEASE PMT")
    assert [e.routing_number for e in batch.entries] == ["091000019", "011401533"]
    assert [e.account_number for e in batch.entries] == ["12345678901", "98765432"]
    assert [e.transaction_code for e in batch.entries] == [27, 37]
    assert [e.amount_cents for e in batch.entries] == [12345, 99900]
    assert [e.individual_name for e in batch.entries] == ["JOSE ALVAREZ", "A VERY LONG CUSTOMER N"]
    assert batch.control.entry_hash == 10240154
    assert parsed.control.total_debit_cents == 112245
    assert parsed.record_count == 10


def test_achkit_reads_the_same_fields() -> None:
    theirs = achkit.parse(build())
    (batch,) = theirs["batches"]
    assert batch["effective_date"] == "261127" and batch["service_class"] == 225
    assert [e["amount_cents"] for e in batch["entries"]] == [12345, 99900]
    assert [e["trace_number"] for e in batch["entries"]] == ["021000020000001", "021000020000002"]


def test_web_entries_carry_the_payment_type_code() -> None:
    web = dataclasses.replace(ORIGINATOR, sec_code="WEB")
    single = dataclasses.replace(ENTRIES[1], recurring=False)
    text = build_debit_file(
        web, [ENTRIES[0], single], effective_on=EFFECTIVE_ON, created_at=CREATED_AT
    ).text
    entries = parse_file(text).batches[0].entries
    assert [e.discretionary_data for e in entries] == ["R", "S"]
    assert parse_file(text).batches[0].header.sec_code == "WEB"
    assert validate(text) == []


def test_explicit_trace_sequences_are_kept_and_the_rest_follow_them() -> None:
    entries = [
        dataclasses.replace(ENTRIES[0], trace_sequence=41),
        ENTRIES[1],
        dataclasses.replace(ENTRIES[0], trace_sequence=100),
    ]
    nacha = build_debit_file(ORIGINATOR, entries, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert nacha.trace_numbers == ("021000020000041", "021000020000042", "021000020000100")
    following = build_debit_file(
        ORIGINATOR,
        ENTRIES,
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
        first_trace_sequence=501,
        file_id_modifier="B",
    )
    assert following.trace_numbers == ("021000020000501", "021000020000502")
    assert following.text[33] == "B"


def test_a_file_of_nine_entries_needs_two_blocks() -> None:
    # 1 + 1 + 9 + 1 + 1 = 13 records: two blocks of 10, seven filler records.
    nacha = build_debit_file(
        ORIGINATOR, [ENTRIES[0]] * 9, effective_on=EFFECTIVE_ON, created_at=CREATED_AT
    )
    records = nacha.text.split("\n")[:-1]
    assert nacha.block_count == 2 and len(records) == 20
    assert records[13:] == ["9" * 94] * 7
    assert validate(nacha.text) == []


# --- refused input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_cents": 0}, "entries[1].amount_cents"),
        ({"amount_cents": -5}, "entries[1].amount_cents"),
        ({"amount_cents": MAX_AMOUNT_CENTS + 1}, "entries[1].amount_cents"),
        ({"amount_cents": 12.5}, "entries[1].amount_cents"),
        ({"amount_cents": True}, "entries[1].amount_cents"),
        ({"routing_number": "091000018"}, "entries[1].routing_number"),
        ({"routing_number": "09100001"}, "entries[1].routing_number"),
        ({"individual_name": "李小龍"}, "entries[1].individual_name"),
        ({"individual_name": "Line\nbreak"}, "entries[1].individual_name"),
        ({"individual_name": "   "}, "entries[1].individual_name"),
        ({"individual_id": "L-1002-0000000001"}, "entries[1].individual_id"),
        ({"individual_id": "Lé"}, "entries[1].individual_id"),
        ({"account_type": "brokerage"}, "entries[1].account_type"),
        ({"trace_sequence": 0}, "entries[1].trace_sequence"),
        ({"trace_sequence": 10_000_000}, "entries[1].trace_sequence"),
        ({"trace_sequence": 1}, "entries[1].trace_sequence"),  # repeats the first entry's
    ],
)
def test_bad_entries_are_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    bad = dataclasses.replace(ENTRIES[1], **change)  # type: ignore[arg-type]
    with pytest.raises(NachaError) as caught:
        build([ENTRIES[0], bad])
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"immediate_destination": "021000022"}, "originator.immediate_destination"),
        ({"immediate_origin": "12345"}, "originator.immediate_origin"),
        ({"company_id": "12345678901"}, "originator.company_id"),
        ({"company_id": ""}, "originator.company_id"),
        ({"odfi_id": "021000021"}, "originator.odfi_id"),
        ({"sec_code": "CCD"}, "originator.sec_code"),
        ({"entry_description": "LEASE PAYMENT"}, "originator.entry_description"),
        ({"company_name": ""}, "originator.company_name"),
    ],
)
def test_bad_originators_are_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    bad = dataclasses.replace(ORIGINATOR, **change)  # type: ignore[arg-type]
    with pytest.raises(NachaError) as caught:
        build_debit_file(bad, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert caught.value.field == field


def test_effective_date_must_be_a_banking_day() -> None:
    with pytest.raises(NachaError, match="2026-11-26 is not a banking day") as caught:
        build(effective_on=date(2026, 11, 26))  # Thanksgiving
    assert caught.value.field == "effective_on"
    with pytest.raises(NachaError, match="not a banking day"):
        build(effective_on=date(2026, 11, 28))  # Saturday


def test_file_level_arguments_are_checked() -> None:
    with pytest.raises(NachaError, match="created_at"):
        build(created_at=datetime(2026, 11, 25, 14, 5))
    with pytest.raises(NachaError, match="file_id_modifier"):
        build(file_id_modifier="a")
    with pytest.raises(NachaError, match="first_trace_sequence"):
        build(first_trace_sequence=0)
    with pytest.raises(NachaError, match="entries: a batch needs at least one entry"):
        build([])


def test_a_file_is_never_created_after_its_effective_entry_date() -> None:
    # The creation date is the file's own wall clock (here New York's).
    with pytest.raises(NachaError, match="2026-11-30 is after the effective entry date") as caught:
        build(created_at=datetime(2026, 11, 30, 9, 0, tzinfo=ZoneInfo("America/New_York")))
    assert caught.value.field == "created_at"
    same_day = build_debit_file(
        ORIGINATOR,
        ENTRIES,
        effective_on=EFFECTIVE_ON,
        created_at=datetime(2026, 11, 27, 23, 59, tzinfo=ZoneInfo("America/New_York")),
    )
    assert validate(same_day.text) == []


def test_check_entry_refuses_what_a_file_cannot_hold() -> None:
    check_entry(ENTRIES[0])
    check_entry(ENTRIES[1], "WEB")
    for change, field in (
        ({"amount_cents": MAX_AMOUNT_CENTS + 1}, "entry.amount_cents"),
        ({"individual_name": "李小龍"}, "entry.individual_name"),
        ({"routing_number": "091000018"}, "entry.routing_number"),
        ({"account_number": "1234 5678 9012"}, "entry.account_number"),
    ):
        with pytest.raises(NachaError) as caught:
            check_entry(dataclasses.replace(ENTRIES[0], **change))  # type: ignore[arg-type]
        assert caught.value.field == field
        assert "1234 5678 9012" not in str(caught.value)


def test_account_numbers_never_appear_whole_in_errors_or_reprs() -> None:
    secret = "998877665544332211"  # 18 characters: one too many
    bad = dataclasses.replace(ENTRIES[1], account_number=secret)
    with pytest.raises(NachaError) as caught:
        build([bad])
    assert secret not in str(caught.value) and "2211" in str(caught.value)
    with pytest.raises(NachaError) as caught:
        build([dataclasses.replace(ENTRIES[1], account_number="1234 5678")])
    assert "1234 5678" not in str(caught.value)
    assert "12345678901" not in repr(ENTRIES[0])
    assert ENTRIES[0].account_last4 == "8901"
    nacha = build_debit_file(ORIGINATOR, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert "12345678901" not in repr(nacha)
    assert "12345678901" not in repr(parse_file(nacha.text))


def test_routing_check_digit() -> None:
    assert routing_check_digit("09100001") == "9"
    assert routing_check_digit("02100002") == "1"
    assert is_valid_routing_number("011401533")
    assert not is_valid_routing_number("011401534")
    assert not is_valid_routing_number("01140153")
    assert not is_valid_routing_number("01140153x")


# --- validate() ------------------------------------------------------------------------------


def test_validate_catches_a_corrupted_record_length() -> None:
    lines = build().split("\n")
    lines[2] = lines[2][:-1]  # the first entry loses its last character
    problems = validate("\n".join(lines))
    assert problems == ["line 3: record has 93 characters, not 94"]
    assert not achkit.validate("\n".join(lines))["ok"]  # the independent check agrees


def test_validate_catches_a_wrong_entry_hash() -> None:
    text = replace_field(build(), 5, 11, 20, "0010240155")  # batch control entry hash
    assert validate(text) == ["batch 1 control: entry hash 10240155 != computed 10240154"]


def test_validate_catches_a_wrong_total() -> None:
    text = replace_field(build(), 3, 30, 39, "0000012346")  # the first entry's amount, +1 cent
    assert validate(text) == [
        "batch 1 control: total debit amount 112245 != computed 112246",
        "file control: total debit amount 112245 != computed 112246",
    ]


def test_validate_catches_counts_blocking_and_file_control_errors() -> None:
    text = replace_field(build(), 6, 14, 21, "00000003")  # file entry/addenda count
    assert validate(text) == ["file control: entry/addenda count 3 != computed 2"]
    short = "\n".join(build().split("\n")[:9]) + "\n"  # one filler record dropped
    assert validate(short) == ["file: 9 records is not a multiple of the blocking factor 10"]
    text = replace_field(build(), 6, 8, 13, "000002")
    assert validate(text) == ["file control: block count 2 != computed 1"]


def test_validate_catches_records_out_of_order() -> None:
    lines = build().split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # an entry before its batch header
    assert validate("\n".join(lines)) == [
        "line 2: record order: expected a batch header (5) or file control (9), "
        "found record type '6'"
    ]
    lines = build().split("\n")
    lines[2], lines[3] = lines[3], lines[2]  # trace numbers no longer ascend
    assert validate("\n".join(lines)) == [
        "batch 1 entry 021000020000001: trace numbers do not ascend"
    ]
    # A file control straight after the header is a file of no batches; then nothing but filler.
    with pytest.raises(NachaError, match="line 3: record order: only filler records"):
        parse_file("\n".join([lines[0], lines[5], *lines[2:5]]))


def test_validate_catches_a_bad_check_digit_and_a_foreign_trace() -> None:
    text = replace_field(build(), 3, 12, 12, "8")
    assert validate(text) == ["batch 1 entry 021000020000001: routing number fails the check digit"]
    text = replace_field(build(), 4, 80, 87, "09100001")
    assert validate(text) == [
        "batch 1 entry 091000010000002: trace number is not the ODFI id and a sequence"
    ]


def test_validate_accepts_crlf_and_reports_an_empty_file() -> None:
    assert validate(build().replace("\n", "\r\n")) == []
    assert validate("") == ["file: is empty"]


# --- returns ---------------------------------------------------------------------------------


def return_batch(
    *,
    batch_number: int,
    rdfi: str,
    items: list[tuple[str, str, str, int, str, str, str, str]],
) -> list[str]:
    """A batch of returned debits sent by the RDFI ``rdfi`` (8 digits) to our ODFI.

    Each item is (transaction code, account, name, amount, reason, original trace,
    date of death YYMMDD or blanks, addenda type): the entry copies the original entry's
    account, amount, name and ids; its own trace number is the RDFI's.
    """
    header = (
        "5"  # 01-01 record type code
        "225"  # 02-04 service class code
        "ACME LEASING    "  # 05-20 company name, copied from the original
        + " "
        * 20  # 21-40 company discretionary data
        + "1234567890"  # 41-50 company identification
        "PPD"  # 51-53 standard entry class code
        "LEASE PMT "  # 54-63 company entry description
        "      "  # 64-69 company descriptive date
        "261201"  # 70-75 effective entry date
        "335"  # 76-78 settlement date (Julian), set by the operator
        "1"  # 79-79 originator status code
        + rdfi  # 80-87 originating DFI: the RDFI that returns the entries
        + f"{batch_number:07d}"  # 88-94 batch number
    )
    records = [header]
    entry_hash = total = 0
    for number, (code, account, name, amount, reason, original, death, kind) in enumerate(
        items, start=1
    ):
        trace = f"{rdfi}{number:07d}"
        records.append(
            "6"  # 01-01 record type code
            + code  # 02-03 transaction code: 26/36 return of a checking/savings debit
            + "02100002"  # 04-11 receiving DFI: our ODFI, to whom the return goes
            + "1"  # 12-12 check digit
            + account.ljust(17)  # 13-29 DFI account number, as in the original
            + f"{amount:010d}"  # 30-39 amount
            + "L-1001".ljust(15)  # 40-54 individual identification number
            + name.ljust(22)  # 55-76 individual name
            + "  "  # 77-78 discretionary data
            + "1"  # 79-79 addenda record indicator
            + trace  # 80-94 trace number
        )
        if kind == "99":
            records.append(
                "7"  # 01-01 record type code
                "99"  # 02-03 addenda type code: return
                + reason  # 04-06 return reason code
                + original  # 07-21 original entry trace number
                + death  # 22-27 date of death
                + original[:8].replace("02100002", "09100001")  # 28-35 original RDFI id
                + "ACCOUNT HOLDER NOTIFIED".ljust(44)  # 36-79 addenda information
                + trace  # 80-94 trace number
            )
        else:  # a notification of change (addenda type 98): not a return
            records.append(
                "7"  # 01-01 record type code
                "98"  # 02-03 addenda type code: notification of change
                + reason  # 04-06 change code
                + original  # 07-21 original entry trace number
                + " " * 6  # 22-27 reserved
                + "09100001"  # 28-35 original RDFI id
                + "12345678999".ljust(29)  # 36-64 corrected data
                + " " * 15  # 65-79 reserved
                + trace  # 80-94 trace number
            )
        entry_hash += 2100002
        total += amount
    records.append(
        "8"  # 01-01 record type code
        "225"  # 02-04 service class code
        + f"{2 * len(items):06d}"  # 05-10 entry/addenda count: one addenda each
        + f"{entry_hash:010d}"  # 11-20 entry hash
        + f"{total:012d}"  # 21-32 total debit: return codes 26/36 are on the debit side
        + "0" * 12  # 33-44 total credit
        + "1234567890"  # 45-54 company identification
        + " " * 25  # 55-79 message authentication code and reserved
        + rdfi  # 80-87 originating DFI identification
        + f"{batch_number:07d}"  # 88-94 batch number
    )
    return records


def return_file() -> str:
    first = return_batch(
        batch_number=1,
        rdfi="09100001",
        items=[
            ("26", "12345678901", "JOSE ALVAREZ", 12345, "R01", "021000020000001", " " * 6, "99"),
            ("36", "55554444", "MARY ROE", 5000, "R02", "021000020000007", " " * 6, "99"),
        ],
    )
    second = return_batch(
        batch_number=2,
        rdfi="01140153",
        items=[
            ("26", "777", "JOHN DOE", 99900, "R10", "021000020000002", " " * 6, "99"),
            ("26", "31415926", "ANN LEE", 4200, "R15", "021000020000003", "261120", "99"),
            ("26", "12345678901", "JOSE ALVAREZ", 0, "C01", "021000020000009", "", "98"),
        ],
    )
    records = [
        "101 021000021 0910000192612020700A094101ACME LEASING           "
        "FEDERAL RESERVE        " + " " * 8,
        *first,
        *second,
    ]
    entries = 5
    records.append(
        "9"  # 01-01 record type code
        "000002"  # 02-07 batch count
        "000002"  # 08-13 block count
        + f"{2 * entries:08d}"  # 14-21 entry/addenda count
        + f"{entries * 2100002:010d}"  # 22-31 entry hash
        + f"{12345 + 5000 + 99900 + 4200:012d}"  # 32-43 total debit
        + "0" * 12  # 44-55 total credit
        + " " * 39  # 56-94 reserved
    )
    records += ["9" * 94] * (20 - len(records))
    assert all(len(record) == 94 for record in records)
    return "\n".join(records) + "\n"


RETURN_FILE_HEADER = (
    "101 021000021 0910000192612020700A094101ACME LEASING           "
    "FEDERAL RESERVE        " + " " * 8
)


def cor_batch(
    *,
    batch_number: int,
    items: list[tuple[str, str, str, int, str, str, str, str]],
    corrected: Sequence[str] = (),
) -> list[str]:
    """A COR batch of notifications of change: SEC code COR, effective entry date 000000; the
    corrected data (positions 36-64) of the n-th item is ``corrected[n]`` when given."""
    records = return_batch(batch_number=batch_number, rdfi="09100001", items=items)
    header = records[0]
    records[0] = header[:50] + "COR" + "NOTIFCTN  " + header[63:69] + "000000" + header[75:]
    for number, data in enumerate(corrected):
        at = 2 + 2 * number  # the addenda of the n-th entry
        records[at] = records[at][:35] + data.ljust(29) + records[at][64:]
    return records


def assemble_file(batches: list[list[str]]) -> str:
    """A file of these batches, with its header, a file control totalled from the batch
    controls, and the filler."""
    records = [RETURN_FILE_HEADER, *(record for batch in batches for record in batch)]
    controls = [batch[-1] for batch in batches]
    count = sum(int(c[4:10]) for c in controls)
    entry_hash = sum(int(c[10:20]) for c in controls) % 10**10
    debit = sum(int(c[20:32]) for c in controls)
    credit = sum(int(c[32:44]) for c in controls)
    blocks = (len(records) + 1 + 9) // 10
    records.append(
        f"9{len(batches):06d}{blocks:06d}{count:08d}{entry_hash:010d}{debit:012d}{credit:012d}"
        + " " * 39
    )
    records += ["9" * 94] * (-len(records) % 10)
    assert all(len(record) == 94 for record in records)
    return "\n".join(records) + "\n"


def test_return_file_is_a_valid_file() -> None:
    assert validate(return_file()) == []


def test_return_file_parses_into_return_entries() -> None:
    assert parse_returns(return_file()) == [
        ReturnEntry(
            return_code="R01",
            original_trace="021000020000001",
            amount_cents=12345,
            routing_number="091000019",
            account_last4="8901",
            addenda_info="ACCOUNT HOLDER NOTIFIED",
            return_trace="091000010000001",
            date_of_death=None,
        ),
        ReturnEntry(
            return_code="R02",
            original_trace="021000020000007",
            amount_cents=5000,
            routing_number="091000019",
            account_last4="4444",
            addenda_info="ACCOUNT HOLDER NOTIFIED",
            return_trace="091000010000002",
            date_of_death=None,
        ),
        ReturnEntry(
            return_code="R10",
            original_trace="021000020000002",
            amount_cents=99900,
            routing_number="091000019",
            account_last4="****",  # too short to show any of it
            addenda_info="ACCOUNT HOLDER NOTIFIED",
            return_trace="011401530000001",
            date_of_death=None,
        ),
        ReturnEntry(
            return_code="R15",
            original_trace="021000020000003",
            amount_cents=4200,
            routing_number="091000019",
            account_last4="5926",
            addenda_info="ACCOUNT HOLDER NOTIFIED",
            return_trace="011401530000002",
            date_of_death=date(2026, 11, 20),
        ),
    ]  # the notification of change (C01) is not a return


def test_a_malformed_return_reason_is_refused() -> None:
    text = return_file().replace("99R01", "99X01")
    with pytest.raises(NachaError, match="return reason code"):
        parse_returns(text)


def test_read_returns_reads_returns_and_masked_notifications_of_change() -> None:
    changes = cor_batch(
        batch_number=3,
        items=[
            ("26", "12345678901", "JOSE ALVAREZ", 0, "C01", "021000020000004", "", "98"),
            ("26", "12345678901", "JOSE ALVAREZ", 0, "C02", "021000020000005", "", "98"),
        ],
        # C01: the corrected account number; C02: the corrected routing number.
        corrected=["12345678999", "091000019"],
    )
    text = assemble_file([return_file().splitlines()[1:7], changes])
    assert validate(text) == []
    [_, cor] = parse_file(text).batches
    assert (cor.header.sec_code, cor.header.effective_on) == ("COR", None)

    read = read_returns(text)

    assert read.returns == tuple(parse_returns(return_file()))[:2]
    assert read.malformed == ()
    assert read.changes == (
        ChangeNotice(
            change_code="C01",
            original_trace="021000020000004",
            routing_number="091000019",
            account_last4="8901",
            notice_trace="091000010000001",
            corrected_account_last4="8999",
        ),
        ChangeNotice(
            change_code="C02",
            original_trace="021000020000005",
            routing_number="091000019",
            account_last4="8901",
            notice_trace="091000010000002",
            corrected_routing="091000019",
        ),
    )
    # The corrected account number is read only as far as its last four.
    assert "12345678999" not in repr(read)


def test_read_returns_sets_a_malformed_entry_apart_and_reads_the_rest() -> None:
    text = return_file().replace("99R01", "99X01")
    lines = text.splitlines()
    lines[8] = lines[8][:-1]  # the R10 entry record of batch 2 loses a character
    text = "\n".join(lines) + "\n"

    read = read_returns(text)

    assert [entry.return_code for entry in read.returns] == ["R02", "R15"]
    assert [(m.line, m.trace, m.original_trace) for m in read.malformed] == [
        (3, "091000010000001", "021000020000001"),
        (9, "", "021000020000002"),
    ]
    assert "return reason code" in read.malformed[0].problem
    assert "93 characters" in read.malformed[1].problem
    assert all("12345678901" not in m.problem for m in read.malformed)
    # A file whose structure is broken is still refused whole.
    with pytest.raises(NachaError, match="record order"):
        read_returns("\n".join(lines[1:]) + "\n")


@pytest.mark.parametrize(
    ("code", "corrected", "problem"),
    [
        ("C14", "12345", "change code"),
        ("C02", "091000018", "check digit"),
        ("C05", "99", "transaction code"),
    ],
)
def test_unreadable_notifications_of_change_are_malformed(
    code: str, corrected: str, problem: str
) -> None:
    changes = cor_batch(
        batch_number=1,
        items=[("26", "1234", "JOSE ALVAREZ", 0, code, "021000020000004", "", "98")],
        corrected=[corrected],
    )
    read = read_returns(assemble_file([changes]))
    assert read.changes == ()
    [bad] = read.malformed
    assert problem in bad.problem and bad.original_trace == "021000020000004"


# --- properties ------------------------------------------------------------------------------


def check_digit(first8: str) -> str:
    # Independent of the module: weights 3, 7, 1 repeating, the total a multiple of 10.
    return str(
        (10 - sum(int(d) * w for d, w in zip(first8, (3, 7, 1, 3, 7, 1, 3, 7), strict=True)) % 10)
        % 10
    )


printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
debit_entries = st.builds(
    DebitEntry,
    routing_number=st.from_regex(r"[0-9]{8}", fullmatch=True).map(lambda d: d + check_digit(d)),
    account_number=st.from_regex(r"[0-9A-Za-z-]{1,17}", fullmatch=True),
    account_type=st.sampled_from(["checking", "savings"]),
    amount_cents=st.integers(min_value=1, max_value=MAX_AMOUNT_CENTS),
    individual_id=st.text(printable, max_size=15),
    individual_name=st.text(printable, min_size=1, max_size=30).filter(str.strip),
    recurring=st.booleans(),
)
creation_times = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=60, deadline=timedelta(seconds=2))
@given(
    entries=st.lists(debit_entries, min_size=1, max_size=25),
    days_ahead=st.integers(min_value=0, max_value=30),
    created_at=creation_times,
    first=st.integers(min_value=1, max_value=9_000_000),
    sec_code=st.sampled_from(["PPD", "WEB"]),
)
def test_any_valid_entries_build_a_valid_file_that_round_trips(
    entries: list[DebitEntry],
    days_ahead: int,
    created_at: datetime,
    first: int,
    sec_code: str,
) -> None:
    # A file takes effect on a banking day, never before the day it is created.
    effective_on = ach_effective_date(created_at.date() + timedelta(days=days_ahead))
    originator = dataclasses.replace(ORIGINATOR, sec_code=sec_code)  # type: ignore[arg-type]
    nacha = build_debit_file(
        originator,
        entries,
        effective_on=effective_on,
        created_at=created_at,
        first_trace_sequence=first,
    )
    assert validate(nacha.text) == []
    assert achkit.validate(nacha.text)["ok"]
    records = nacha.text.split("\n")[:-1]
    assert all(len(r) == 94 for r in records) and len(records) % 10 == 0

    parsed = parse_file(nacha.text)
    (batch,) = parsed.batches
    assert batch.header.effective_on == effective_on
    assert [e.trace_number for e in batch.entries] == list(nacha.trace_numbers)
    assert nacha.trace_numbers[0] == f"02100002{first:07d}"
    assert [e.amount_cents for e in batch.entries] == [e.amount_cents for e in entries]
    assert [e.routing_number for e in batch.entries] == [e.routing_number for e in entries]
    assert [e.account_number for e in batch.entries] == [e.account_number for e in entries]
    assert [e.individual_id for e in batch.entries] == [e.individual_id.strip() for e in entries]
    assert [e.individual_name for e in batch.entries] == [
        " ".join(e.individual_name.split()).upper()[:22].strip() for e in entries
    ]
    assert batch.control.total_debit_cents == sum(e.amount_cents for e in entries)
    assert parsed.control.entry_hash == sum(int(e.routing_number[:8]) for e in entries) % 10**10


def test_unreadable_fields_are_reported_with_their_line() -> None:
    text = replace_field(build(), 2, 70, 75, "261131")  # November 31st
    with pytest.raises(NachaError, match="line 2: effective entry date: '261131'"):
        parse_file(text)
    assert validate(text) == ["line 2: effective entry date: '261131' is not a YYMMDD date"]
    text = replace_field(build(), 3, 30, 39, "00000123 5")
    assert validate(text) == ["line 3: amount: '00000123 5' is not numeric"]


# --- building: limits and widths ---------------------------------------------------------------

HIGH_ROUTING = "999999992"  # the largest 8-digit DFI id, with its check digit


def entry(**change: object) -> DebitEntry:
    return dataclasses.replace(ENTRIES[0], **change)  # type: ignore[arg-type]


def refusal(entries: Sequence[DebitEntry] | None = None, **overrides: object) -> NachaError:
    with pytest.raises(NachaError) as caught:
        build(entries, **overrides)  # type: ignore[arg-type]
    return caught.value


def test_the_entry_hash_keeps_the_rightmost_10_digits_of_the_routing_sum() -> None:
    # 101 DFI ids of 99999999 add up to 10,099,999,899: eleven digits, the first one dropped.
    nacha = build_debit_file(
        ORIGINATOR,
        [entry(routing_number=HIGH_ROUTING, amount_cents=1)] * 101,
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
    )
    assert nacha.entry_hash == 99_999_899
    records = nacha.text.split("\n")
    assert records[103][10:20] == "0099999899"  # batch control entry hash
    assert records[104][21:31] == "0099999899"  # file control entry hash
    assert validate(nacha.text) == []


def test_validate_keeps_the_rightmost_10_digits_of_the_files_hash() -> None:
    # Two batches of 61 DFI ids of 99999999: 6,099,999,939 each, 12,199,999,878 together.
    lines = build([entry(routing_number=HIGH_ROUTING, amount_cents=1)] * 61).split("\n")
    first = lines[1:64]
    second = [record[:87] + "0000002" if record[0] in "58" else record for record in lines[1:64]]
    text = assemble_file([first, second])
    assert validate(text) == []
    assert parse_file(text).control.entry_hash == 2_199_999_878
    assert [batch.control.entry_hash for batch in parse_file(text).batches] == [6_099_999_939] * 2


@pytest.mark.parametrize(("count", "blocks", "fillers"), [(6, 1, 0), (7, 2, 9), (16, 2, 0)])
def test_a_file_is_blocked_by_exactly_10_records(count: int, blocks: int, fillers: int) -> None:
    # 1 header + 1 batch header + entries + 1 batch control + 1 file control, then filler.
    nacha = build_debit_file(
        ORIGINATOR, [ENTRIES[0]] * count, effective_on=EFFECTIVE_ON, created_at=CREATED_AT
    )
    records = nacha.text.split("\n")[:-1]
    assert nacha.block_count == blocks and len(records) == 10 * blocks
    assert records.count("9" * 94) == fillers
    assert records[count + 3][7:13] == f"{blocks:06d}"  # File Control block count
    assert validate(nacha.text) == []


def test_the_largest_amount_and_batch_total_fit() -> None:
    nacha = build_debit_file(
        ORIGINATOR,
        [entry(amount_cents=MAX_AMOUNT_CENTS)] * 100,
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
    )
    assert nacha.total_debit_cents == 999_999_999_900 and nacha.total_credit_cents == 0
    records = nacha.text.split("\n")
    assert records[2][29:39] == "9999999999"
    assert records[102][20:32] == "999999999900"
    assert validate(nacha.text) == []
    assert build([entry(amount_cents=1)]).split("\n")[2][29:39] == "0000000001"


def test_a_batch_whose_total_passes_12_digits_is_refused() -> None:
    error = refusal([entry(amount_cents=MAX_AMOUNT_CENTS)] * 101)
    assert str(error) == "entries: the total of the amounts does not fit 12 digits"
    # 999,999,999,999 cents, the largest 12-digit total, still fits; one cent more does not.
    largest = [entry(amount_cents=MAX_AMOUNT_CENTS)] * 100 + [entry(amount_cents=99)]
    nacha = build_debit_file(ORIGINATOR, largest, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert nacha.total_debit_cents == 999_999_999_999
    assert refusal([*largest[:-1], entry(amount_cents=100)]).field == "entries"


def test_an_amount_error_names_the_range() -> None:
    assert str(refusal([entry(amount_cents=0)])) == (
        "entries[0].amount_cents: must be whole cents from 1 to 9999999999"
    )


@settings(max_examples=50)
@given(amount=st.integers(min_value=-(10**11), max_value=10**11))
def test_an_amount_fits_exactly_when_it_is_1_to_10_digits_of_cents(amount: int) -> None:
    fits = 1 <= amount <= 99_999_999_99
    try:
        check_entry(entry(amount_cents=amount))
    except NachaError as error:
        assert not fits and error.field == "entry.amount_cents"
    else:
        assert fits


class _Many(Sequence[DebitEntry]):
    """``size`` entries in name only: the first is ``first``, reading any other fails."""

    def __init__(self, size: int, first: DebitEntry) -> None:
        self.size, self.first = size, first

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> DebitEntry:  # type: ignore[override]
        if index == 0:
            return self.first
        raise IndexError(index)


def test_a_batch_holds_at_most_999999_entries() -> None:
    bad = entry(amount_cents=0)
    # 999,999 are allowed: the entries are read (and the first is refused for its amount).
    assert refusal(_Many(999_999, bad)).field == "entries[0].amount_cents"
    error = refusal(_Many(1_000_000, bad))
    assert str(error) == "entries: at most 999999 entries fit in a batch"


def test_the_largest_trace_sequence_fits_and_the_next_does_not() -> None:
    nacha = build_debit_file(
        ORIGINATOR,
        [entry(trace_sequence=9_999_999)],
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
    )
    assert nacha.trace_numbers == ("021000029999999",)
    error = refusal([entry(trace_sequence=9_999_999), ENTRIES[1]])
    assert str(error) == "entries[1].trace_sequence: must be from 1 to 9999999"
    last = build_debit_file(
        ORIGINATOR,
        ENTRIES,
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
        first_trace_sequence=9_999_998,
    )
    assert last.trace_numbers == ("021000029999998", "021000029999999")
    assert str(refusal(first_trace_sequence=10_000_000)) == (
        "first_trace_sequence: must be from 1 to 9999999"
    )
    assert refusal([entry(trace_sequence=True)]).field == "entries[0].trace_sequence"  # type: ignore[arg-type]


def test_trace_sequences_that_do_not_ascend_are_refused_naming_the_sequence() -> None:
    error = refusal([entry(trace_sequence=5), entry(trace_sequence=4)])
    assert str(error) == "entries[1].trace_sequence: 4 does not ascend"
    assert str(refusal([entry(trace_sequence=5), entry(trace_sequence=5)])) == (
        "entries[1].trace_sequence: 5 does not ascend"
    )
    nacha = build_debit_file(
        ORIGINATOR,
        [entry(trace_sequence=5), entry(trace_sequence=6)],
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
    )
    assert nacha.trace_numbers == ("021000020000005", "021000020000006")


def test_the_entry_description_holds_10_characters_upper_cased() -> None:
    ten = dataclasses.replace(ORIGINATOR, entry_description="lease pmt2")
    text = build_debit_file(ten, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT).text
    assert text.split("\n")[1][53:63] == "LEASE PMT2"
    eleven = dataclasses.replace(ORIGINATOR, entry_description="LEASE PMT22")
    with pytest.raises(NachaError) as caught:
        build_debit_file(eleven, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert str(caught.value) == "originator.entry_description: is over 10 characters"
    blank = dataclasses.replace(ORIGINATOR, entry_description="   ")
    with pytest.raises(NachaError) as caught:
        build_debit_file(blank, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert str(caught.value) == "originator.entry_description: is required"


def test_the_individual_id_holds_15_characters_and_may_be_blank() -> None:
    text = build([entry(individual_id="L-1001-00000001")])
    assert text.split("\n")[2][39:54] == "L-1001-00000001"
    assert build([entry(individual_id="")]).split("\n")[2][39:54] == " " * 15
    error = refusal([entry(individual_id="L-1001-000000001")])
    assert str(error) == "entries[0].individual_id: is over 15 characters"
    error = refusal([entry(individual_id="L\x7f")])
    assert str(error) == "entries[0].individual_id: must be printable ASCII"


@settings(max_examples=40)
@given(
    width=st.sampled_from([("individual_id", 15), ("account_number", 17)]),
    length=st.integers(min_value=1, max_value=25),
)
def test_an_identifier_fits_exactly_up_to_its_fields_width(
    width: tuple[str, int], length: int
) -> None:
    name, limit = width
    try:
        check_entry(entry(**{name: "7" * length}))
    except NachaError as error:
        assert length > limit and error.field == f"entry.{name}"
    else:
        assert length <= limit


def test_names_are_folded_collapsed_upper_cased_and_cut_to_their_width() -> None:
    originator = dataclasses.replace(
        ORIGINATOR,
        destination_name="Banco  Ñandú de   Crédito Agrícola",
        origin_name="ácme  leasing corporation of america",
        company_name="Acme Leasing Corporation",
    )
    text = build_debit_file(
        originator,
        [entry(individual_name="  Zoë   Saldaña-Nazario de la Peña  ")],
        effective_on=EFFECTIVE_ON,
        created_at=CREATED_AT,
    ).text
    header, batch, first = text.split("\n")[:3]
    assert header[40:63] == "BANCO NANDU DE CREDITO "
    assert header[63:86] == "ACME LEASING CORPORATIO"
    assert batch[4:20] == "ACME LEASING COR"
    assert first[54:76] == "ZOE SALDANA-NAZARIO DE"
    short = build([entry(individual_name="ann")]).split("\n")[2]
    assert short[54:76] == "ANN" + " " * 19


def test_names_that_do_not_fold_to_ascii_or_are_blank_are_refused() -> None:
    error = refusal([entry(individual_name="李小龍")])
    assert str(error) == (
        "entries[0].individual_name: holds characters that do not fold to printable ASCII"
    )
    assert str(refusal([entry(individual_name="   ")])) == "entries[0].individual_name: is required"
    # Optional names may be blank: the field is filled with spaces.
    blank = dataclasses.replace(ORIGINATOR, destination_name="", origin_name="")
    text = build_debit_file(blank, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT).text
    assert text.split("\n")[0][40:86] == " " * 46
    with pytest.raises(NachaError) as caught:
        build_debit_file(
            dataclasses.replace(ORIGINATOR, company_name="   "),
            ENTRIES,
            effective_on=EFFECTIVE_ON,
            created_at=CREATED_AT,
        )
    assert str(caught.value) == "originator.company_name: is required"


@pytest.mark.parametrize("field", ["destination_name", "origin_name", "company_name"])
def test_an_originator_name_that_does_not_fold_to_ascii_is_refused_by_its_name(field: str) -> None:
    bad = dataclasses.replace(ORIGINATOR, **{field: "Banco 李"})  # type: ignore[arg-type]
    with pytest.raises(NachaError) as caught:
        build_debit_file(bad, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert str(caught.value) == (
        f"originator.{field}: holds characters that do not fold to printable ASCII"
    )


def test_the_account_number_holds_17_letters_digits_and_hyphens() -> None:
    text = build([entry(account_number="AB-12345678901234")])
    assert text.split("\n")[2][12:29] == "AB-12345678901234"
    error = refusal([entry(account_number="AB-123456789012345")])
    assert str(error) == "entries[0].account_number: account ending 2345 is over 17 characters"
    error = refusal([entry(account_number="1234_5678")])
    assert str(error) == (
        "entries[0].account_number: account ending 5678 may hold only letters, digits and hyphens"
    )


@pytest.mark.parametrize(
    ("account", "shown"),
    [("12345", "2345"), ("1234", "****"), ("1", "****"), ("  98765 ", "8765"), ("    ", "****")],
)
def test_only_the_last_four_of_an_account_longer_than_four_are_shown(
    account: str, shown: str
) -> None:
    assert entry(account_number=account).account_last4 == shown


def test_a_short_account_number_is_masked_whole_in_errors() -> None:
    error = refusal([entry(account_number="12_4")])
    assert str(error) == (
        "entries[0].account_number: account ending **** may hold only letters, digits and hyphens"
    )


def test_a_routing_number_error_says_which_rule_it_breaks() -> None:
    assert str(refusal([entry(routing_number="0910000190")])) == (
        "entries[0].routing_number: must be 9 digits"
    )
    assert str(refusal([entry(routing_number="09100001x")])) == (
        "entries[0].routing_number: must be 9 digits"
    )
    assert str(refusal([entry(routing_number="091000018")])) == (
        "entries[0].routing_number: 091000018 fails the ABA check digit"
    )
    assert str(refusal([entry(account_type="money_market")])) == (  # type: ignore[arg-type]
        "entries[0].account_type: must be checking or savings"
    )


def test_a_ppd_entry_carries_no_payment_type_code() -> None:
    text = build([entry(recurring=False)])
    assert text.split("\n")[2][76:78] == "  "


def test_the_originator_fields_are_checked_with_their_messages() -> None:
    def problem(**change: object) -> str:
        bad = dataclasses.replace(ORIGINATOR, **change)  # type: ignore[arg-type]
        with pytest.raises(NachaError) as caught:
            build_debit_file(bad, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
        return str(caught.value)

    assert problem(immediate_destination="021000022") == (
        "originator.immediate_destination: must be a 9-digit routing number"
    )
    assert problem(immediate_destination="x021000021") == (
        "originator.immediate_destination: must be a 9-digit routing number"
    )
    assert problem(immediate_origin="12345678A") == (
        "originator.immediate_origin: must be 10 characters or a 9-digit routing number"
    )
    assert problem(immediate_origin="123456789\x00") == (
        "originator.immediate_origin: must be 10 characters or a 9-digit routing number"
    )
    assert problem(odfi_id="0210000A") == (
        "originator.odfi_id: must be the 8 digits of the ODFI's routing number"
    )
    assert problem(odfi_id="0210000") == (
        "originator.odfi_id: must be the 8 digits of the ODFI's routing number"
    )
    assert problem(sec_code="CCD") == "originator.sec_code: must be PPD or WEB"
    assert problem(company_id="12345678901") == "originator.company_id: is over 10 characters"
    assert problem(company_id=" ") == "originator.company_id: is required"


def test_a_destination_and_origin_are_written_as_the_layout_wants() -> None:
    # A destination given with its leading blank, and an origin of 9 digits (a routing number).
    originator = dataclasses.replace(
        ORIGINATOR, immediate_destination=" 021000021", immediate_origin="091000019"
    )
    text = build_debit_file(originator, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert text.text[3:23] == " 021000021 091000019"
    assert validate(text.text) == []


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


def test_file_level_arguments_are_refused_with_their_messages() -> None:
    assert str(refusal(created_at=datetime(2026, 11, 25, 14, 5))) == (
        "created_at: must be timezone-aware (the file shows its wall clock)"
    )
    assert refusal(created_at=datetime(2026, 11, 25, 14, 5, tzinfo=_NoOffset())).field == (
        "created_at"
    )
    for modifier in ("", "AB", "a", "-"):
        assert str(refusal(file_id_modifier=modifier)) == (
            "file_id_modifier: must be one character A-Z or 0-9"
        )
    for modifier in ("Z", "0", "9"):
        assert build(file_id_modifier=modifier)[33] == modifier
    assert str(refusal(first_trace_sequence=0)) == "first_trace_sequence: must be from 1 to 9999999"
    assert str(refusal(created_at=datetime(2026, 11, 28, tzinfo=UTC))) == (
        "created_at: 2026-11-28 is after the effective entry date 2026-11-27"
    )
    assert str(refusal(effective_on=date(2026, 11, 26))) == (
        "effective_on: 2026-11-26 is not a banking day"
    )


def test_the_built_file_reports_what_it_holds() -> None:
    nacha = build_debit_file(ORIGINATOR, ENTRIES, effective_on=EFFECTIVE_ON, created_at=CREATED_AT)
    assert nacha.effective_on == EFFECTIVE_ON and nacha.entry_count == 2
    assert "text" not in repr(nacha)


def test_check_entry_numbers_an_entry_without_a_sequence_as_the_first() -> None:
    check_entry(entry(trace_sequence=None))
    check_entry(entry(trace_sequence=9_999_999))
    with pytest.raises(NachaError) as caught:
        check_entry(entry(trace_sequence=0))
    assert str(caught.value) == "entry.trace_sequence: must be from 1 to 9999999"
    with pytest.raises(NachaError) as caught:
        check_entry(entry(account_number="1234 5678 9012"), "WEB")
    assert caught.value.field == "entry.account_number"


def test_the_routing_check_digit_needs_exactly_8_digits() -> None:
    for bad in ("0910000", "091000019", "0910000x"):
        with pytest.raises(NachaError) as caught:
            routing_check_digit(bad)
        assert str(caught.value) == "routing_number: needs 8 digits to compute a check digit"
    assert routing_check_digit("00000000") == "0"
    assert routing_check_digit("99999999") == "2"
    assert not is_valid_routing_number("0211401533")
    assert not is_valid_routing_number("")


@settings(max_examples=30)
@given(st.integers(min_value=0, max_value=99_999_999).map(lambda n: f"{n:08d}"))
def test_exactly_one_check_digit_makes_a_valid_routing_number(first8: str) -> None:
    digit = routing_check_digit(first8)
    assert digit == check_digit(first8)
    assert [d for d in "0123456789" if is_valid_routing_number(first8 + d)] == [digit]


def test_a_nacha_error_names_its_field_and_line() -> None:
    error = NachaError("amount", "'x' is not numeric", line=7)
    assert (error.field, error.line, str(error)) == (
        "amount",
        7,
        "line 7: amount: 'x' is not numeric",
    )
    plain = NachaError("file", "is empty")
    assert (plain.field, plain.line, str(plain)) == ("file", None, "file: is empty")
    assert isinstance(plain, ValueError)


# --- validate(): every problem, with its sentence ---------------------------------------------


def with_fields(*changes: tuple[int, int, int, str]) -> str:
    """The 2-entry file with each (line, start, end, value) written over."""
    text = build()
    for line, start, end, value in changes:
        text = replace_field(text, line, start, end, value)
    return text


def test_validate_reports_a_record_outside_printable_ascii() -> None:
    assert validate(with_fields((3, 55, 55, "é"))) == [
        "line 3: record holds characters outside printable ASCII"
    ]
    assert validate(with_fields((4, 60, 60, "\x7f"))) == [
        "line 4: record holds characters outside printable ASCII"
    ]


def test_validate_reports_every_unreadable_record_and_reads_no_further() -> None:
    lines = build().split("\n")
    lines[2] = lines[2][:-1]
    lines[4] = lines[4] + "9"
    lines[3] = lines[3][:50] + "é" + lines[3][51:]
    assert validate("\n".join(lines)) == [
        "line 3: record has 93 characters, not 94",
        "line 4: record holds characters outside printable ASCII",
        "line 5: record has 95 characters, not 94",
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ((1, 2, 3, "02"), "file header: priority code '02' is not 01"),
        (
            (1, 4, 13, " 021000022"),
            "file header: immediate destination is not a valid routing number",
        ),
        (
            (1, 35, 37, "095"),
            "file header: record size, blocking factor, format code are not 094 10 1",
        ),
        (
            (1, 38, 39, "20"),
            "file header: record size, blocking factor, format code are not 094 10 1",
        ),
        (
            (1, 40, 40, "2"),
            "file header: record size, blocking factor, format code are not 094 10 1",
        ),
        ((1, 34, 34, "a"), "file header: file id modifier 'a' is not A-Z 0-9"),
        ((1, 34, 34, "-"), "file header: file id modifier '-' is not A-Z 0-9"),
    ],
)
def test_validate_reports_a_bad_file_header(
    change: tuple[int, int, int, str], problem: str
) -> None:
    assert validate(with_fields(change)) == [problem]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ((5, 2, 4, "200"), "batch 1 control: service class code 200 != header's 225"),
        (
            (5, 45, 54, "1234567891"),
            "batch 1 control: company identification '1234567891' != header's '1234567890'",
        ),
        (
            (5, 80, 87, "02100003"),
            "batch 1 control: originating DFI identification '02100003' != header's '02100002'",
        ),
        ((5, 88, 94, "0000002"), "batch 1 control: batch number 2 != header's 1"),
        ((5, 5, 10, "000003"), "batch 1 control: entry/addenda count 3 != computed 2"),
        ((5, 33, 44, "000000000001"), "batch 1 control: total credit amount 1 != computed 0"),
        ((6, 2, 7, "000002"), "file control: batch count 2 != computed 1"),
        ((6, 22, 31, "0010240155"), "file control: entry hash 10240155 != computed 10240154"),
        ((6, 44, 55, "000000000001"), "file control: total credit amount 1 != computed 0"),
    ],
)
def test_validate_reports_a_control_that_disagrees(
    change: tuple[int, int, int, str], problem: str
) -> None:
    assert validate(with_fields(change)) == [problem]


def test_validate_reports_an_unknown_service_class_and_accepts_the_three_known() -> None:
    unknown = with_fields((2, 2, 4, "230"), (5, 2, 4, "230"))
    assert validate(unknown) == ["batch 1: service class code 230 is unknown"]
    assert validate(with_fields((2, 2, 4, "200"), (5, 2, 4, "200"))) == []  # mixed
    assert validate(with_fields((2, 2, 4, "220"), (5, 2, 4, "220"))) == [  # credits only
        "batch 1 entry 021000020000001: a debit in a service class 220 batch",
        "batch 1 entry 021000020000002: a debit in a service class 220 batch",
    ]


def test_validate_reports_a_credit_in_a_debit_batch() -> None:
    assert validate(with_fields((3, 2, 3, "22"))) == [
        "batch 1 entry 021000020000001: a credit in a service class 225 batch",
        "batch 1 control: total debit amount 112245 != computed 99900",
        "batch 1 control: total credit amount 0 != computed 12345",
        "file control: total debit amount 112245 != computed 99900",
        "file control: total credit amount 0 != computed 12345",
    ]


def test_validate_adds_up_every_credit_of_every_batch() -> None:
    # Two mixed batches (200) whose first entry is a credit (22): 123.45 credited, 999.00
    # debited in each, and the file's totals twice that.
    lines = with_fields((2, 2, 4, "200"), (5, 2, 4, "200"), (3, 2, 3, "22")).split("\n")
    lines[4] = lines[4][:20] + f"{99900:012d}{12345:012d}" + lines[4][44:]
    text = assemble_file([batch_of(lines, 1), batch_of(lines, 2)])
    assert validate(text) == []
    assert parse_file(text).control.total_credit_cents == 24690
    both = with_fields((2, 2, 4, "200"), (5, 2, 4, "200"), (3, 2, 3, "22"), (4, 2, 3, "32"))
    assert validate(both) == [
        "batch 1 control: total debit amount 112245 != computed 0",
        "batch 1 control: total credit amount 0 != computed 112245",
        "file control: total debit amount 112245 != computed 0",
        "file control: total credit amount 0 != computed 112245",
    ]


def test_validate_reports_an_unknown_transaction_code() -> None:
    assert validate(with_fields((3, 2, 3, "20"))) == [
        "batch 1 entry 021000020000001: transaction code 20 is unknown",
        "batch 1 control: total debit amount 112245 != computed 99900",
        "file control: total debit amount 112245 != computed 99900",
    ]


@pytest.mark.parametrize(
    ("code", "side"),
    [
        ("20", None),
        ("21", "credit"),
        ("24", "credit"),
        ("25", "debit"),
        ("29", "debit"),
        ("30", None),
        ("31", "credit"),
        ("50", None),
        ("55", "debit"),
        ("56", "debit"),
        ("57", None),
        ("11", None),
    ],
)
def test_a_transaction_codes_second_digit_tells_a_credit_from_a_debit(
    code: str, side: str | None
) -> None:
    # In a mixed batch (200) either side is allowed: the totals say which one it counted on.
    problems = validate(with_fields((2, 2, 4, "200"), (5, 2, 4, "200"), (3, 2, 3, code)))
    counted = (
        "debit"
        if problems == []
        else "credit"
        if "batch 1 control: total credit amount 0 != computed 12345" in problems
        else None
    )
    assert counted == side
    assert any("is unknown" in p for p in problems) == (side is None)


def test_validate_reports_a_dfi_id_that_is_not_8_digits() -> None:
    assert validate(with_fields((3, 4, 11, "0910000A"))) == [
        "batch 1 entry 021000020000001: receiving DFI id is not 8 digits",
        "batch 1 entry 021000020000001: routing number fails the check digit",
        "batch 1 control: entry hash 10240154 != computed 1140153",
        "file control: entry hash 10240154 != computed 1140153",
    ]


def test_validate_reports_repeated_and_unreadable_trace_numbers() -> None:
    assert validate(with_fields((4, 80, 94, "021000020000001"))) == [
        "batch 1 entry 021000020000001: trace numbers do not ascend"
    ]
    assert validate(with_fields((3, 80, 94, "02100002000000A"))) == [
        "batch 1 entry 02100002000000A: trace number is not the ODFI id and a sequence",
        "batch 1 entry 021000020000002: trace numbers do not ascend",
    ]


def batch_of(lines: list[str], number: int) -> list[str]:
    """The 2-entry file's batch (header, entries, control) renumbered ``number``."""
    return [record[:87] + f"{number:07d}" if record[0] in "58" else record for record in lines[1:5]]


@pytest.mark.parametrize(
    ("numbers", "problems"),
    [
        ((1, 2), []),
        ((1, 1), ["batch 1: batch numbers do not ascend"]),
        ((2, 1), ["batch 1: batch numbers do not ascend"]),
        ((0, 1), ["batch 0: batch numbers do not ascend"]),
    ],
)
def test_validate_reports_batch_numbers_that_do_not_ascend(
    numbers: tuple[int, int], problems: list[str]
) -> None:
    lines = build().split("\n")
    text = assemble_file([batch_of(lines, n) for n in numbers])
    assert validate(text) == problems


def test_validate_reports_a_batch_without_entries() -> None:
    lines = build().split("\n")
    control = lines[4][:4] + "0" * 40 + lines[4][44:]
    assert validate(assemble_file([[lines[1], control]])) == ["batch 1: has no entries"]


def with_addenda(*addenda: str, indicator: str = "1") -> str:
    """The 2-entry file with these addenda records after its first entry."""
    _, header, first, second, control, *_ = build().split("\n")
    first = first[:78] + indicator + first[79:]
    control = control[:4] + f"{2 + len(addenda):06d}" + control[10:]
    return assemble_file([[header, first, *addenda, second, control]])


FIRST_TRACE = "021000020000001"


def payment_addenda(sequence: str = "0001", entry_sequence: str = "0000001") -> str:
    # 01 record type, 02-03 type 05, 04-83 payment related information, 84-87 addenda
    # sequence number, 88-94 entry detail sequence number.
    return "705" + "INVOICE 1001".ljust(80) + sequence + entry_sequence


def return_addenda(trace: str = FIRST_TRACE, kind: str = "99") -> str:
    return "7" + kind + "R01" + FIRST_TRACE + " " * 6 + "09100001" + " " * 44 + trace


@pytest.mark.parametrize(
    ("addenda", "problems"),
    [
        ([payment_addenda()], []),
        ([payment_addenda(), payment_addenda("0002")], []),
        (
            [payment_addenda("0002")],
            ["batch 1 entry 021000020000001: addenda 1 has the wrong sequence"],
        ),
        (
            [payment_addenda(entry_sequence="0000002")],
            ["batch 1 entry 021000020000001: addenda 1 has the wrong sequence"],
        ),
        (
            [payment_addenda(), payment_addenda()],
            ["batch 1 entry 021000020000001: addenda 2 has the wrong sequence"],
        ),
        ([return_addenda()], []),
        ([return_addenda(kind="98")], []),
        (
            [return_addenda("021000020000009")],
            ["batch 1 entry 021000020000001: addenda 1 has another trace"],
        ),
        (
            [return_addenda("021000020000009", kind="98")],
            ["batch 1 entry 021000020000001: addenda 1 has another trace"],
        ),
        (["702" + " " * 91], []),
        (["703" + " " * 91], ["batch 1 entry 021000020000001: addenda type code '03' is unknown"]),
    ],
)
def test_validate_checks_each_addenda_by_its_type(addenda: list[str], problems: list[str]) -> None:
    assert validate(with_addenda(*addenda)) == problems


# --- parsing: every field at its place, every unreadable one named -----------------------------


def test_every_field_of_a_built_file_is_read_back_from_its_place() -> None:
    parsed = parse_file(build())
    assert parsed.header == FileHeader(
        priority_code="01",
        immediate_destination="021000021",
        immediate_origin="1234567890",
        created_on=date(2026, 11, 25),
        creation_time="1405",
        file_id_modifier="A",
        record_size="094",
        blocking_factor="10",
        format_code="1",
        destination_name="FIRST EXAMPLE BANK",
        origin_name="ACME LEASING",
        reference_code="",
    )
    (batch,) = parsed.batches
    assert batch.header == BatchHeader(
        service_class_code=225,
        company_name="ACME LEASING",
        company_discretionary_data="",
        company_id="1234567890",
        sec_code="PPD",
        entry_description="LEASE PMT",
        descriptive_date="",
        effective_on=EFFECTIVE_ON,
        settlement_date="",
        originator_status_code="1",
        odfi_id="02100002",
        batch_number=1,
    )
    assert batch.entries[0] == EntryDetail(
        transaction_code=27,
        rdfi_id="09100001",
        check_digit="9",
        account_number="12345678901",
        amount_cents=12345,
        individual_id="L-1001",
        individual_name="JOSE ALVAREZ",
        discretionary_data="",
        has_addenda=False,
        trace_number="021000020000001",
        addenda=(),
    )
    assert batch.entries[0].account_last4 == "8901"
    assert batch.control == BatchControl(
        service_class_code=225,
        entry_addenda_count=2,
        entry_hash=10240154,
        total_debit_cents=112245,
        total_credit_cents=0,
        company_id="1234567890",
        message_authentication_code="",
        odfi_id="02100002",
        batch_number=1,
    )
    assert parsed.control == FileControl(
        batch_count=1,
        block_count=1,
        entry_addenda_count=2,
        entry_hash=10240154,
        total_debit_cents=112245,
        total_credit_cents=0,
    )


def test_the_fields_a_return_file_fills_are_read() -> None:
    parsed = parse_file(return_file())
    first, second = parsed.batches
    assert (first.header.settlement_date, first.header.effective_on) == ("335", date(2026, 12, 1))
    assert first.header.odfi_id == "09100001" and second.header.batch_number == 2
    entry = first.entries[0]
    assert (entry.transaction_code, entry.has_addenda, entry.routing_number) == (
        26,
        True,
        "021000021",
    )
    assert [a.type_code for a in entry.addenda] == ["99"]
    assert entry.addenda[0].record == return_file().split("\n")[3]
    discretionary = replace_field(return_file(), 3, 77, 78, "AB")
    assert parse_file(discretionary).batches[0].entries[0].discretionary_data == "AB"
    extra = replace_field(return_file(), 1, 87, 94, "REF00001")
    assert parse_file(extra).header.reference_code == "REF00001"
    coded = replace_field(return_file(), 2, 21, 40, "DISCRETIONARY DATA  ")
    assert parse_file(coded).batches[0].header.company_discretionary_data == "DISCRETIONARY DATA"
    dated = replace_field(return_file(), 2, 64, 69, "DEC 26")
    assert parse_file(dated).batches[0].header.descriptive_date == "DEC 26"
    mac = replace_field(return_file(), 7, 55, 73, "MAC0123456789ABCDEF")
    assert parse_file(mac).batches[0].control.message_authentication_code == "MAC0123456789ABCDEF"


def test_fields_filled_to_their_width_are_read_without_their_neighbours() -> None:
    packed = with_fields(
        (1, 41, 63, "DESTINATION NAME OF 23C"),
        (1, 64, 86, "ORIGIN NAME FULL TO 23C"),
        (1, 87, 94, "REF00001"),
        (2, 5, 20, "COMPANY NAME 16C"),
        (2, 21, 40, "DISCRETIONARY DATA20"),
        (2, 54, 63, "DESCRIPT10"),
        (2, 64, 69, "DEC 26"),
        (2, 76, 78, "335"),
        (3, 13, 29, "ACCOUNT0123456789"),
        (3, 40, 54, "INDIVIDUALID015"),
        (3, 55, 76, "INDIVIDUAL NAME 22CHAR"),
        (3, 77, 78, "AB"),
        (5, 55, 73, "MAC0123456789ABCDEF"),
        (5, 74, 79, "RSRVD1"),
    )
    parsed = parse_file(packed)
    header = parsed.header
    assert (header.destination_name, header.origin_name, header.reference_code) == (
        "DESTINATION NAME OF 23C",
        "ORIGIN NAME FULL TO 23C",
        "REF00001",
    )
    (batch,) = parsed.batches
    assert (
        batch.header.company_name,
        batch.header.company_discretionary_data,
        batch.header.company_id,
        batch.header.entry_description,
        batch.header.descriptive_date,
        batch.header.settlement_date,
    ) == ("COMPANY NAME 16C", "DISCRETIONARY DATA20", "1234567890", "DESCRIPT10", "DEC 26", "335")
    first = batch.entries[0]
    assert (
        first.account_number,
        first.individual_id,
        first.individual_name,
        first.discretionary_data,
    ) == ("ACCOUNT0123456789", "INDIVIDUALID015", "INDIVIDUAL NAME 22CHAR", "AB")
    assert (batch.control.company_id, batch.control.message_authentication_code) == (
        "1234567890",
        "MAC0123456789ABCDEF",
    )


NUMERIC_FIELDS = [
    (2, 2, 4, "service class code"),
    (2, 88, 94, "batch number"),
    (3, 2, 3, "transaction code"),
    (3, 30, 39, "amount"),
    (5, 2, 4, "service class code"),
    (5, 5, 10, "entry/addenda count"),
    (5, 11, 20, "entry hash"),
    (5, 21, 32, "total debit amount"),
    (5, 33, 44, "total credit amount"),
    (5, 88, 94, "batch number"),
    (6, 2, 7, "batch count"),
    (6, 8, 13, "block count"),
    (6, 14, 21, "entry/addenda count"),
    (6, 22, 31, "entry hash"),
    (6, 32, 43, "total debit amount"),
    (6, 44, 55, "total credit amount"),
]


@pytest.mark.parametrize(("line", "start", "end", "name"), NUMERIC_FIELDS)
def test_a_numeric_field_that_is_not_digits_is_named_with_its_line(
    line: int, start: int, end: int, name: str
) -> None:
    value = "1" * (end - start) + "X"
    text = with_fields((line, start, end, value))
    with pytest.raises(NachaError) as caught:
        parse_file(text)
    assert str(caught.value) == f"line {line}: {name}: {value!r} is not numeric"
    assert (caught.value.field, caught.value.line) == (name, line)
    assert validate(text) == [f"line {line}: {name}: {value!r} is not numeric"]


@pytest.mark.parametrize(
    ("text", "read"),
    [("261231", date(2026, 12, 31)), ("000101", date(2000, 1, 1)), ("991231", date(2099, 12, 31))],
)
def test_a_six_digit_date_is_read_in_this_century(text: str, read: date) -> None:
    assert parse_file(with_fields((1, 24, 29, text))).header.created_on == read


@pytest.mark.parametrize("text", ["261131", "261301", "2611 5", "26113A", "261100"])
def test_an_unreadable_date_is_named_with_its_line(text: str) -> None:
    with pytest.raises(NachaError) as caught:
        parse_file(with_fields((1, 24, 29, text)))
    assert str(caught.value) == f"line 1: file creation date: {text!r} is not a YYMMDD date"


@pytest.mark.parametrize("unset", ["000000", "      "])
def test_an_effective_entry_date_left_unset_is_read_as_none(unset: str) -> None:
    assert parse_file(with_fields((2, 70, 75, unset))).batches[0].header.effective_on is None


def test_an_addenda_indicator_other_than_0_or_1_is_refused() -> None:
    with pytest.raises(NachaError) as caught:
        parse_file(with_fields((3, 79, 79, "2")))
    assert str(caught.value) == "line 3: addenda record indicator: '2' is not 0 or 1"


def test_an_addenda_indicator_must_match_the_addenda_that_follow() -> None:
    with pytest.raises(NachaError) as caught:
        parse_file(with_fields((3, 79, 79, "1")))
    assert str(caught.value) == "line 3: addenda record indicator: is 1 but 0 addenda follow"
    with pytest.raises(NachaError) as caught:
        parse_file(with_addenda(payment_addenda(), payment_addenda("0002"), indicator="0"))
    assert str(caught.value) == "line 3: addenda record indicator: is 0 but 2 addenda follow"
    (batch,) = parse_file(with_addenda(payment_addenda())).batches
    assert [a.type_code for a in batch.entries[0].addenda] == ["05"]
    assert batch.entries[0].has_addenda and not batch.entries[1].has_addenda


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        (
            1,
            "line 2: record order: expected a batch header (5) or file control (9), found the end of the file",
        ),
        (
            2,
            "line 3: record order: expected an entry detail (6) or batch control (8), found the end of the file",
        ),
        (
            4,
            "line 5: record order: expected an entry detail (6) or batch control (8), found the end of the file",
        ),
        (
            5,
            "line 6: record order: expected a batch header (5) or file control (9), found the end of the file",
        ),
    ],
)
def test_a_truncated_file_raises_a_nacha_error_naming_where_it_ends(
    kept: int, expected: str
) -> None:
    text = "\n".join(build().split("\n")[:kept]) + "\n"
    for read in (parse_file, read_returns):
        with pytest.raises(NachaError) as caught:
            read(text)  # type: ignore[operator]
        assert str(caught.value) == expected
    assert validate(text)[-1] == expected


def test_a_file_must_start_with_its_header_and_hold_94_character_records() -> None:
    lines = build().split("\n")
    with pytest.raises(NachaError) as caught:
        parse_file("\n".join(lines[1:]))
    assert str(caught.value) == (
        "line 1: record order: expected a file header (1), found record type '5'"
    )
    for read in (parse_file, read_returns):
        with pytest.raises(NachaError) as caught:
            read("\n")  # type: ignore[operator]
        assert str(caught.value) == "line 1: record: has 0 characters, not 94"
        with pytest.raises(NachaError) as caught:
            read("")  # type: ignore[operator]
        assert str(caught.value) == "file: is empty"
    short = "\n".join([lines[0], lines[1][:-1], *lines[2:]])
    with pytest.raises(NachaError) as caught:
        parse_file(short)
    assert str(caught.value) == "line 2: record: has 93 characters, not 94"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (1, "line 1: record order: expected a file header (1), found record type 'X'"),
        (
            2,
            "line 2: record order: expected a batch header (5) or file control (9), found record type 'X'",
        ),
        (
            3,
            "line 3: record order: expected an entry detail (6) or batch control (8), found record type 'X'",
        ),
        (
            5,
            "line 5: record order: expected an entry detail (6) or batch control (8), found record type 'X'",
        ),
        (
            6,
            "line 6: record order: expected a batch header (5) or file control (9), found record type 'X'",
        ),
    ],
)
def test_a_record_of_an_unknown_type_is_refused_where_it_stands(line: int, expected: str) -> None:
    text = with_fields((line, 1, 1, "X"))
    with pytest.raises(NachaError) as caught:
        parse_file(text)
    assert str(caught.value) == expected


@pytest.mark.parametrize("line", [7, 9, 10])
def test_every_record_after_the_file_control_must_be_filler(line: int) -> None:
    text = with_fields((line, 94, 94, "8"))
    with pytest.raises(NachaError) as caught:
        parse_file(text)
    assert str(caught.value) == (
        f"line {line}: record order: only filler records of 94 '9's follow the file control"
    )


def test_the_immediate_destination_is_read_from_position_4() -> None:
    header = parse_file(with_fields((1, 4, 13, "1021000021"))).header
    assert header.immediate_destination == "1021000021"


def test_a_file_without_its_last_newline_reads_the_same() -> None:
    text = build()
    assert parse_file(text.rstrip("\n")) == parse_file(text)
    assert validate(text.rstrip("\n")) == []
    assert len(parse_file(text.replace("\n", "\r\n")).batches[0].entries) == 2


# --- returns: every malformed input -----------------------------------------------------------


def single_return(addenda: str, *, indicator: str = "1") -> str:
    """A return file of one entry (the first of return_file()) with this addenda record."""
    lines = return_file().split("\n")
    entry = lines[2][:78] + indicator + lines[2][79:]
    control = lines[6][:4] + "000002" + "0002100002" + "000000012345" + lines[6][32:]
    return assemble_file([[lines[1], entry, addenda, control]])


def r_addenda(
    *, code: str = "R01", death: str = " " * 6, rdfi: str = "09100001", info: str = "NOTE"
) -> str:
    return "799" + code + FIRST_TRACE + death + rdfi + info.ljust(44) + "091000010000001"


def test_a_return_reads_its_fields_from_their_places() -> None:
    [returned] = parse_returns(single_return(r_addenda(code="R03", info="  NO ACCOUNT  ")))
    assert returned == ReturnEntry(
        return_code="R03",
        original_trace=FIRST_TRACE,
        amount_cents=12345,
        routing_number="091000019",
        account_last4="8901",
        addenda_info="NO ACCOUNT",
        return_trace="091000010000001",
        date_of_death=None,
    )
    [dead] = parse_returns(single_return(r_addenda(code="R15", death="261031")))
    assert dead.date_of_death == date(2026, 10, 31)


@pytest.mark.parametrize(
    ("addenda", "problem"),
    [
        (r_addenda(code="R1X"), "return reason code: 'R1X' is not R followed by 2 digits"),
        (r_addenda(code="X01"), "return reason code: 'X01' is not R followed by 2 digits"),
        (r_addenda(rdfi="0910000A"), "original receiving DFI identification: must be 8 digits"),
        (r_addenda(rdfi="0910000 "), "original receiving DFI identification: must be 8 digits"),
        (r_addenda(death="261131"), "date of death: '261131' is not a YYMMDD date"),
    ],
)
def test_an_unreadable_return_is_refused_by_parse_returns_and_set_apart_by_read_returns(
    addenda: str, problem: str
) -> None:
    text = single_return(addenda)
    with pytest.raises(NachaError) as caught:
        parse_returns(text)
    assert str(caught.value) == problem
    read = read_returns(text)
    assert read.returns == () and read.changes == ()
    assert read.malformed == (
        MalformedEntry(
            line=3, trace="091000010000001", original_trace=FIRST_TRACE, problem=problem
        ),
    )


def test_read_returns_sets_apart_an_entry_whose_records_are_too_short() -> None:
    addenda = r_addenda()
    lines = single_return(addenda).split("\n")
    lines[3] = lines[3][:-1]
    read = read_returns("\n".join(lines))
    assert read.returns == ()
    assert [(m.line, m.trace, m.problem) for m in read.malformed] == [
        # The entry's line and trace, the addenda's problem.
        (3, "091000010000001", "line 4: record: has 93 characters, not 94")
    ]
    # An entry record one character too long still shows its trace (positions 80-94).
    lines = single_return(addenda).split("\n")
    lines[2] = lines[2] + "7"
    [malformed] = read_returns("\n".join(lines)).malformed
    assert (malformed.trace, malformed.original_trace) == ("091000010000001", FIRST_TRACE)
    assert malformed.problem == "line 3: record: has 95 characters, not 94"
    # The entry's own trace number is unreadable when its record is cut short.
    lines = single_return(addenda).split("\n")
    lines[2] = lines[2][:85]
    [malformed] = read_returns("\n".join(lines)).malformed
    assert (malformed.line, malformed.trace, malformed.original_trace) == (3, "", FIRST_TRACE)
    assert malformed.problem == "line 3: record: has 85 characters, not 94"
    # Other records cut short break the structure: the file is refused whole.
    lines = single_return(addenda).split("\n")
    lines[1] = lines[1][:-1]
    with pytest.raises(NachaError) as caught:
        read_returns("\n".join(lines))
    assert str(caught.value) == "line 2: record: has 93 characters, not 94"


def test_an_entry_read_apart_keeps_only_a_15_digit_trace() -> None:
    text = replace_field(single_return(r_addenda(code="R1X")), 3, 80, 94, "09100001000000X")
    [malformed] = read_returns(text).malformed
    assert (malformed.trace, malformed.original_trace) == ("", FIRST_TRACE)
    text = single_return(r_addenda(code="R1X")[:6] + "0210000200000X1" + r_addenda()[21:])
    [malformed] = read_returns(text).malformed
    assert (malformed.trace, malformed.original_trace) == ("091000010000001", "")


def test_malformed_entries_are_listed_in_file_order() -> None:
    lines = return_file().split("\n")
    lines[3] = lines[3].replace("99R01", "99X01")  # line 4: its entry is on line 3
    lines[8] = lines[8][:-1]  # line 9: an entry record cut short
    lines[11] = lines[11].replace("99R15", "99R1X")  # line 12: its entry is on line 11
    read = read_returns("\n".join(lines))
    assert [m.line for m in read.malformed] == [3, 9, 11]
    assert [r.return_code for r in read.returns] == ["R02"]


def noc(code: str, corrected: str, *, original: str = "021000020000004") -> ReturnFile:
    changes = cor_batch(
        batch_number=1,
        items=[("26", "12345678901", "JOSE ALVAREZ", 0, code, original, "", "98")],
        corrected=[corrected],
    )
    return read_returns(assemble_file([changes]))


NOTICE = ChangeNotice(
    change_code="C01",
    original_trace="021000020000004",
    routing_number="091000019",
    account_last4="8901",
    notice_trace="091000010000001",
)


@pytest.mark.parametrize(
    ("code", "corrected", "fields"),
    [
        ("C01", "12345678999", {"corrected_account_last4": "8999"}),
        ("C02", "011401533", {"corrected_routing": "011401533"}),
        (
            "C03",
            "011401533" + "   " + "55556666",
            {"corrected_routing": "011401533", "corrected_account_last4": "6666"},
        ),
        ("C05", "37", {"corrected_transaction_code": "37"}),
        (
            "C06",
            "55556666".ljust(20) + "32",
            {"corrected_account_last4": "6666", "corrected_transaction_code": "32"},
        ),
        (
            "C07",
            "011401533" + "55556666".ljust(17) + "37",
            {
                "corrected_routing": "011401533",
                "corrected_account_last4": "6666",
                "corrected_transaction_code": "37",
            },
        ),
        ("C04", "ROE  MARY", {"corrected_text": "ROE MARY"}),
        ("C09", "L-2002", {"corrected_text": "L-2002"}),
        ("C08", "RECEIVER ID 77", {"corrected_text": "RECEIVER ID 77"}),
        ("C10", "ACME LEASING INC", {"corrected_text": "ACME LEASING INC"}),
        ("C11", "1234567890 ACME", {"corrected_text": "1234567890 ACME"}),
        ("C12", "ACME 1234567890", {"corrected_text": "ACME 1234567890"}),
        ("C13", "ADDENDA FORMAT", {"corrected_text": "ADDENDA FORMAT"}),
    ],
)
def test_each_change_code_reads_its_corrected_data_from_its_place(
    code: str, corrected: str, fields: dict[str, str]
) -> None:
    read = noc(code, corrected)
    assert read.malformed == ()
    assert read.changes == (dataclasses.replace(NOTICE, change_code=code, **fields),)  # type: ignore[arg-type]
    assert "55556666" not in repr(read) and "12345678999" not in repr(read)


@pytest.mark.parametrize(
    ("code", "corrected", "original", "problem"),
    [
        ("C00", "1", "021000020000004", "change code: 'C00' is not C01 to C13"),
        ("C14", "1", "021000020000004", "change code: 'C14' is not C01 to C13"),
        ("C1", "1", "021000020000004", "change code: 'C1 ' is not C01 to C13"),
        ("C01", "1", "02100002000000X", "original entry trace number: must be 15 digits"),
        (
            "C01",
            "12_34",
            "021000020000004",
            "corrected data: C01: the account number is not readable",
        ),
        (
            "C03",
            "011401533   " + "5555 6666",
            "021000020000004",
            "corrected data: C03: the account number is not readable",
        ),
        (
            "C07",
            "011401534" + "5555".ljust(17) + "37",
            "021000020000004",
            "corrected data: C07: the routing number fails the check digit",
        ),
        ("C05", "2X", "021000020000004", "corrected data: C05: '2X' is not a transaction code"),
        (
            "C06",
            "5555".ljust(20) + "20",
            "021000020000004",
            "corrected data: C06: '20' is not a transaction code",
        ),
        ("C04", "ROE\x7fMARY", "021000020000004", "corrected data: must be printable ASCII"),
    ],
)
def test_an_unreadable_notification_of_change_is_set_apart_with_its_problem(
    code: str, corrected: str, original: str, problem: str
) -> None:
    read = noc(code.ljust(3), corrected, original=original)
    assert read.changes == ()
    [malformed] = read.malformed
    assert malformed.problem == problem and malformed.line == 3


@pytest.mark.parametrize(
    ("code", "corrected"),
    [
        ("C01", "54321"),
        ("C03", "011401533" + "   " + "54321"),
        ("C06", "54321".ljust(20) + "37"),
        ("C07", "011401533" + "54321".ljust(17) + "37"),
    ],
)
def test_a_corrected_account_is_read_from_its_first_position(code: str, corrected: str) -> None:
    # Five characters: one lost at either end would leave four, masked whole.
    [notice] = noc(code, corrected).changes
    assert notice.corrected_account_last4 == "4321"


def test_a_corrected_account_ends_at_its_17th_position() -> None:
    # C01's account is positions 36-52; what follows it is not part of it.
    [notice] = noc("C01", "ABCDEFGHIJKLM1234" + "X").changes
    assert notice.corrected_account_last4 == "1234"
    [notice] = noc("C06", "ABCDEFGHIJKLM1234" + "XYZ" + "37").changes
    assert notice.corrected_account_last4 == "1234"


def test_a_notification_of_change_needs_an_8_digit_original_dfi() -> None:
    changes = cor_batch(
        batch_number=1,
        items=[("26", "1234", "JOSE ALVAREZ", 0, "C01", "021000020000004", "", "98")],
        corrected=["12345678999"],
    )
    changes[2] = changes[2][:27] + "0910000A" + changes[2][35:]
    [malformed] = read_returns(assemble_file([changes])).malformed
    assert malformed.problem == "original receiving DFI identification: must be 8 digits"


def test_parse_returns_skips_notifications_of_change_and_other_addenda() -> None:
    text = single_return(return_addenda(kind="98").replace(FIRST_TRACE, "091000010000001", 1))
    assert parse_returns(text) == []
    assert parse_returns(single_return(r_addenda())) != []


# --- the guards behind every record ---------------------------------------------------------


def test_a_value_too_wide_for_its_field_is_a_bug_never_cut() -> None:
    from collector.ach import nacha

    with pytest.raises(AssertionError, match=r"^123 does not fit 2 digits$"):
        nacha._numeric(123, 2)
    assert nacha._numeric(7, 3) == "007"
    with pytest.raises(AssertionError, match=r"^record type 6 has 93 characters$"):
        nacha._record("6", "x" * 92)
    assert nacha._record("1", "x" * 93) == "1" + "x" * 93


def test_alphanumeric_fields_hold_the_printable_ascii_range_from_space_to_tilde() -> None:
    check_entry(entry(individual_id=" !~", individual_name="~ A ~"))
    for outside in ("\x1f", "\x7f", "\u00a0"):
        with pytest.raises(NachaError) as caught:
            check_entry(entry(individual_id=outside))
        assert caught.value.field == "entry.individual_id"
