from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import achkit
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.ach.nacha import (
    MAX_AMOUNT_CENTS,
    ChangeNotice,
    DebitEntry,
    NachaError,
    Originator,
    ReturnEntry,
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
