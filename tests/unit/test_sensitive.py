"""The one detector of card and bank numbers: what it finds, what it leaves, how it masks."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.sensitive import (
    REDACTED_BANK,
    REDACTED_PAN,
    card_network,
    find_numbers,
    holds_number,
    is_card_number,
    is_routing_number,
    looks_like_account_number,
    luhn_valid,
    redact,
    redact_numbers,
    redact_value,
)

VISA = "4111111111111111"
ROUTING = "091000019"  # the Federal Reserve Bank of Minneapolis: a real, public routing number
ACCOUNT = "12345678901"


def grouped(digits: str, separator: str, size: int = 4) -> str:
    return separator.join(digits[i : i + size] for i in range(0, len(digits), size))


def in_script(digits: str, zero: str) -> str:
    """``digits`` written with the decimal digits of the script whose zero is ``zero``."""
    return "".join(chr(ord(zero) + int(d)) for d in digits)


def luhn_reference(digits: str) -> bool:
    """Luhn as ISO/IEC 7812-1 states it, written apart from the code under test."""
    doubled = [int(d) * (2 if i % 2 else 1) for i, d in enumerate(reversed(digits))]
    return sum(d - 9 if d > 9 else d for d in doubled) % 10 == 0


# -- Card numbers -------------------------------------------------------------------------------

TEST_CARDS = [
    ("4242424242424242", "visa"),
    ("4222222222222", "visa"),  # 13 digits
    ("4000000000000000006", "visa"),  # 19 digits
    ("5555555555554444", "mastercard"),
    ("2223003122003222", "mastercard"),  # the 2-series
    ("378282246310005", "amex"),
    ("6011111111111117", "discover"),
    ("3056930009020004", "diners"),
    ("36227206271667", "diners"),  # 14 digits
    ("3566002020360505", "jcb"),
    ("6205500000000000004", "unionpay"),  # 19 digits
    ("6759649826438453", "maestro"),
    ("2200000000000004", "mir"),
]


@pytest.mark.parametrize(("digits", "network"), TEST_CARDS)
def test_networks_test_cards_are_card_numbers(digits: str, network: str) -> None:
    assert card_network(digits) == network
    assert luhn_valid(digits) and luhn_reference(digits)
    assert is_card_number(digits)
    assert find_numbers(f"card {digits} declined")[0].kind == "pan"


@pytest.mark.parametrize(
    "digits",
    [
        "4242424242424241",  # Luhn fails
        "4111111111111112",
        "0000000000000000",  # no network starts with 0
        "1234567812345670",  # Luhn-valid, prefix 1 (UATP, left out)
        "9111111111111111",
        "411111111111116",  # a Visa prefix, but 15 digits
        "5555555555555",  # a Mastercard prefix, 13 digits
    ],
)
def test_numbers_without_luhn_or_a_networks_shape_are_not_card_numbers(digits: str) -> None:
    assert not is_card_number(digits)
    assert not holds_number(digits)


SEPARATORS = [
    ".", "_", "-", " ", "/", ":", "+", "|", ",", "~", "*", "#", "=", "'", '"', "\\",
    "\t", "\n", "\r\n", "  ", " - ", "--", "...", " / ",
    "\u00a0",  # no-break space
    "\u2009",  # thin space
    "\u202f",  # narrow no-break space
    "\u3000",  # ideographic space
    "\u2014",  # em dash
    "\u2212",  # minus sign
    "\uff0d",  # fullwidth hyphen-minus
    "\u00b7",  # middle dot
    "\u2022",  # bullet
    "\u200b",  # zero-width space
    "\u2060",  # word joiner
    "\ufeff",  # zero-width no-break space (BOM)
    "\u00ad",  # soft hyphen
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u200e",  # left-to-right mark
    "\u034f",  # combining grapheme joiner
    "\u200b\u200b\u2060",
    " \u200b-\u2060 ",
]  # fmt: skip


@pytest.mark.parametrize("separator", SEPARATORS, ids=lambda s: s.encode("unicode_escape").decode())
def test_a_card_number_is_found_whatever_separates_its_groups(separator: str) -> None:
    text = f"card {grouped(VISA, separator)} was declined"

    assert [f.kind for f in find_numbers(text)] == ["pan"]
    assert redact_numbers(text) == f"card {REDACTED_PAN} was declined"


@pytest.mark.parametrize(
    "text",
    [
        "4111a1111b1111c1111",  # letters between groups
        "4111x1111x1111x1111",
        "4111 x 1111 x 1111 x 1111",
        "4111ab1111cd1111ef1111",
        "4111abc1111abc1111abc1111",
        "4111-a-1111-b-1111-c-1111",
        "3782a822463b10005",  # Amex, 4-6-5
        "tok4111111111111111end",
        "tok_4111111111111111",
        "x4111 1111 1111 1111x",
        '{"pan": "4111-1111-1111-1111"}',
        "card=4111111111111111;exp=12/29",
        "4111  1111\t1111\n1111",  # mixed separators
        "4111.1111_1111-1111",
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",  # one digit at a time
        "4.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1",
        "41.111.111.111 11111",  # an address-like start does not hide what follows
        "2026-11-26T12:00:00Z 4111 1111 1111 1111",  # nor does a timestamp before it
    ],
)
def test_a_card_number_is_found_with_letters_or_oddities_between_groups(text: str) -> None:
    assert [f.kind for f in find_numbers(text)] == ["pan"]
    assert "1111" not in redact_numbers(text)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (in_script(VISA, "\uff10"), "fullwidth"),
        (in_script(VISA, "\u0660"), "Arabic-Indic"),
        (in_script(VISA, "\u06f0"), "extended Arabic-Indic"),
        (in_script(VISA, "\u0966"), "Devanagari"),
        (in_script(VISA, "\u09e6"), "Bengali"),
        (in_script(VISA, "\u0e50"), "Thai"),
        (in_script(VISA, "\U0001d7ce"), "mathematical bold"),
        ("4111" + in_script("1111", "\uff10") + "1111" + in_script("1111", "\u0660"), "mixed"),
        (grouped(in_script(VISA, "\uff10"), "\u3000"), "fullwidth, ideographic spaces"),
        (grouped(in_script(VISA, "\u0660"), "\u066c"), "Arabic, Arabic thousands separator"),
        ("\u2463\u2460\u2460\u2460" + "1" * 12, "circled digits"),
        ("\u2074\u00b9\u00b9\u00b9" + "1" * 12, "superscripts"),
        ("\u32b6\u246a\u246a\u246a\u246a\u246a\u246a\u246a", "circled two-digit numbers"),
    ],
)
def test_a_card_number_is_found_in_any_script_of_digits(text: str, name: str) -> None:
    found = find_numbers(f"n {text} x")

    assert [f.kind for f in found] == ["pan"], name
    assert redact_numbers(f"n {text} x") == f"n {REDACTED_PAN} x"


def test_redaction_keeps_the_text_around_every_number() -> None:
    text = "first 4242 4242 4242 4242, then 5555-5555-5555-4444; account 091000019:1234 end"

    assert redact_numbers(text) == (
        f"first {REDACTED_PAN}, then {REDACTED_PAN}; account {REDACTED_BANK} end"
    )


# -- Bank accounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "routing", ["091000019", "021000021", "011000015", "026009593", "121000248", "322271627"]
)
def test_real_routing_numbers_pass_the_check_digit(routing: str) -> None:
    assert is_routing_number(routing)


@pytest.mark.parametrize(
    "routing", ["091000018", "000000000", "123456789", "990000001", "09100001"]
)
def test_a_wrong_check_digit_or_prefix_is_no_routing_number(routing: str) -> None:
    assert not is_routing_number(routing)


@pytest.mark.parametrize(
    "text",
    [
        f"{ROUTING}:{ACCOUNT}",
        f"{ROUTING}-{ACCOUNT}",
        f"{ROUTING}.{ACCOUNT}",
        f"{ROUTING}_{ACCOUNT}",
        f"{ROUTING}/{ACCOUNT}",
        f"{ROUTING} {ACCOUNT}",
        f"{ROUTING}\u200b{ACCOUNT}",
        f"{ROUTING}\u2060{ACCOUNT}",
        f"{ROUTING}a{ACCOUNT}",
        f"{ACCOUNT}:{ROUTING}",  # account first
        f"{ROUTING}:1234",  # the shortest account
        f"{ROUTING}:12345678901234567",  # the longest
        f"{ROUTING}:1234-5678-901",
        f"ABA {ROUTING} acct {ACCOUNT}",
        f"routing {ROUTING} account {ACCOUNT}",
        f"routing no. {ROUTING}, account no. {ACCOUNT}",
        in_script(ROUTING, "\uff10") + ":" + in_script(ACCOUNT, "\uff10"),
        in_script(ROUTING, "\u0660") + "\u200b" + in_script(ACCOUNT, "\u0660"),
        "021000021 000123456789",
    ],
)
def test_a_routing_and_account_pair_is_found_in_any_separator_form(text: str) -> None:
    found = find_numbers(f"debit {text} returned")
    redacted = redact_numbers(f"debit {text} returned")

    assert [f.kind for f in found] == ["bank"]
    assert redacted.startswith("debit ") and redacted.endswith(f"{REDACTED_BANK} returned")
    assert not any(is_digit(ch) for ch in redacted)


@pytest.mark.parametrize(
    "text",
    [
        ROUTING,  # a routing number alone is public and names no account
        f"routing {ROUTING}",
        f"{ROUTING}:123",  # 3 digits: no account
        f"091000018:{ACCOUNT}",  # wrong check digit
        f"{ROUTING} is the bank of the customer whose account is {ACCOUNT}",  # too far apart
        f"{ROUTING}{ACCOUNT}",  # one run of 20 digits (the API refuses it, see below)
    ],
)
def test_a_routing_number_without_an_account_next_to_it_is_left(text: str) -> None:
    assert find_numbers(text) == []


# -- What is left alone -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "installment 12345 of lease 678",
        "attempt 1234567 installment 7654321 lease 99999 amount 1250000",
        "2026-11-26",
        "2026-11-26T12:00:00.123456+00:00",
        "2026-11-26 23:59:59Z",
        "12:00:00.123456",
        "10.0.0.1:5432",
        "192.168.100.200:65535",
        "9b2e7f3c-1d4a-4c8e-9f6b-2a7d5e3c1b0f",
        "pm_1MqLiJLkdIwHu7ixUEgbFdYF",
        "cus_NffrFeUfNV2Hib:pm_1MqLiJLkdIwHu7ixUEgbFdYF",
        "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "sandbox_card_insufficient_funds",
        "collector-inst-123-4",
        "091000010000123",  # a NACHA trace number
        "$1,234,567.89",
        "+1 (555) 123-4567",
        "4111 1111 1111",  # 12 digits
        "12345678901234567890123",  # a long reference: no window of it is taken
        "version 1.2.3",
        "",
    ],
)
def test_ordinary_text_and_references_are_left_alone(text: str) -> None:
    assert find_numbers(text) == []
    assert redact_numbers(text) == text


# -- The API's stricter test --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "4111.1111.1111.1111",
        "4111_1111_1111_1111",
        "4111\u200b1111\u200b1111\u200b1111",
        "4111a1111b1111c1111",
        f"{ROUTING}:{ACCOUNT}",
        f"{ROUTING}{ACCOUNT}",
        "4242424242424241",  # fails Luhn: a mistyped card number is cardholder data still
        "000123456789",  # 12 digits and nothing else: a bank account number
        "0001-2345-6789",
        "\uff10\uff10\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
        "acct_9876543210987",
        "ref 1234 5678 9012 3456 7",
        "Visa 4111111111111111",
        "Chase, routing 091000019 account 12345678",
        "2026-11-26T12:00:00.123456+00:00",  # 16 digits joined by separators: whatever it is
    ],
)
def test_the_api_refuses_anything_that_looks_like_a_number(value: str) -> None:
    assert looks_like_account_number(value)


@pytest.mark.parametrize(
    "value",
    [
        "sandbox_card_ok",
        "cus_NffrFeUfNV2Hib:pm_1MqLiJLkdIwHu7ixUEgbFdYF",
        "tok_visa",
        "Visa",
        "Mastercard",
        "Chase",
        "Bank of America, N.A.",
        "First National Bank 1234",
        "9b2e7f3c-1d4a-4c8e-9f6b-2a7d5e3c1b0f",
        "12345678-1234-1234-1234-123456789abc",  # a UUID, though its dashes join 20 digits
        "cus_12345678901x",
        "ref 1234-5678-9012 x",
        "12345678901",
        "My card (ending 4242)",
    ],
)
def test_the_api_takes_tokens_and_names(value: str) -> None:
    assert not looks_like_account_number(value)


# -- Secrets and tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("key sk_live_51Habc123", "key sk_live_[redacted]"),
        ("rk_test_abc", "rk_test_[redacted]"),
        ("pk_live_abc", "pk_live_[redacted]"),
        ("whsec_abc123", "whsec_[redacted]"),
        ("No such customer: 'cus_fake42'", "No such customer: 'cus_[redacted]'"),
        ("cus_NffrFeUfNV2Hib:pm_1MqLiJLkdIwHu7ixUEgbFdYF", "cus_[redacted]:pm_[redacted]"),
        ("pi_3MtwBw", "pi_[redacted]"),
        ("ba_1Mq", "ba_[redacted]"),
        ("src_1Mq", "src_[redacted]"),
        ("tok_visa", "tok_[redacted]"),
        ("btok_1Mq", "btok_[redacted]"),
        ("seti_1Mq", "seti_[redacted]"),
        ("card_1MvoiELkdIwHu7ix", "card_[redacted]"),
        ("sandbox_ach_return_R01", "[redacted]"),
        ("postgresql://app:hunter2@db/x", "postgresql://app:[redacted]@db/x"),
        ("https://u:p%40ss@example.com/", "https://u:[redacted]@example.com/"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer [redacted]"),
        ("authorization: basic dXNlcjpwYXNz", "authorization: basic [redacted]"),
    ],
)
def test_secrets_and_gateway_tokens_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    ["card_declined", "insufficient_funds", "charge_failed", "http://host:8080/x", "pass_finished"],
)
def test_codes_and_event_names_are_not_tokens(text: str) -> None:
    assert redact(text) == text


def test_nested_values_are_masked_throughout() -> None:
    value = {
        "note": "card 4242 4242 4242 4242",
        "ids": [1, 4111111111111111, ("cus_x", "fine")],
        "4111 1111 1111 1111": None,
    }

    assert redact_value(value) == {
        "note": f"card {REDACTED_PAN}",
        "ids": [1, REDACTED_PAN, ("cus_[redacted]", "fine")],
        REDACTED_PAN: None,
    }


# -- Properties ---------------------------------------------------------------------------------

# (prefix, length) of each network's numbers, as a generator of card numbers.
SHAPES = [
    ("4", 13), ("4", 16), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
    ("34", 15), ("37", 15), ("6011", 16), ("65", 19), ("62", 17), ("3528", 16), ("36", 14),
    ("300", 16), ("2200", 18), ("6759", 16),
]  # fmt: skip


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from(SHAPES))
    body = prefix + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=length - len(prefix) - 1,
                      max_size=length - len(prefix) - 1))
    )  # fmt: skip
    number = next(body + d for d in "0123456789" if luhn_reference(body + d))
    assert is_card_number(number)
    return number


def _no_digit_in(ch: str) -> bool:
    return unicodedata.category(ch)[0] != "N" and not any(
        unicodedata.category(c)[0] == "N" for c in unicodedata.normalize("NFKC", ch)
    )


# Every character that is neither a digit nor a letter nor stands for either (any punctuation,
# symbol, space, control, format character or combining mark of Unicode).
NON_ALPHANUMERIC = st.characters(
    exclude_categories=("Nd", "Nl", "No", "Lu", "Ll", "Lt", "Lm", "Lo", "Cs")
).filter(
    lambda ch: (
        _no_digit_in(ch)
        and not any(unicodedata.category(c)[0] == "L" for c in unicodedata.normalize("NFKC", ch))
    )
)
NON_DIGIT = st.characters(exclude_categories=("Nd", "Nl", "No", "Cs")).filter(_no_digit_in)
LETTERS = st.characters(categories=("Lu", "Ll", "Lo")).filter(_no_digit_in)


def is_digit(ch: str) -> bool:
    return any(c.isdecimal() for c in unicodedata.normalize("NFKC", ch))


def interleave(number: str, gaps: list[str]) -> str:
    return "".join(d + g for d, g in zip(number, [*gaps, ""], strict=True))


@settings(max_examples=400, deadline=None)
@given(
    number=card_numbers(),
    data=st.data(),
    before=st.text(NON_DIGIT, max_size=8),
    after=st.text(NON_DIGIT, max_size=8),
)
def test_any_card_number_with_any_non_alphanumerics_between_its_digits_is_found(
    number: str, data: st.DataObject, before: str, after: str
) -> None:
    gaps = data.draw(
        st.lists(st.text(NON_ALPHANUMERIC, max_size=4), min_size=len(number) - 1,
                 max_size=len(number) - 1)
    )  # fmt: skip
    text = f"{before} {interleave(number, gaps)} {after}"

    assert holds_number(text)
    assert looks_like_account_number(text)
    # Nothing of the number is left: the text around it had no digit to begin with.
    assert not any(is_digit(ch) for ch in redact_numbers(text))


@settings(max_examples=300, deadline=None)
@given(number=card_numbers(), data=st.data())
def test_any_card_number_with_letters_between_its_groups_is_found(
    number: str, data: st.DataObject
) -> None:
    # Groups of 3 digits or more, as numbers are written, with 1-3 letters or separators between.
    cuts: list[int] = []
    for cut in sorted(data.draw(st.sets(st.integers(3, len(number) - 3), max_size=5))):
        if cut - (cuts[-1] if cuts else 0) >= 3:
            cuts.append(cut)
    groups = [number[a:b] for a, b in zip([0, *cuts], [*cuts, len(number)], strict=True)]
    gap = st.text(st.one_of(LETTERS, NON_ALPHANUMERIC), min_size=1, max_size=3)
    text = groups[0] + "".join(data.draw(gap) + group for group in groups[1:])

    assert holds_number(text), text
    assert looks_like_account_number(text)


@settings(max_examples=200, deadline=None)
@given(
    routing_body=st.text("0123456789", min_size=6, max_size=6),
    prefix=st.sampled_from(["01", "02", "09", "12", "21", "26", "32", "61", "72", "80"]),
    account=st.text("0123456789", min_size=4, max_size=17),
    gap=st.text(NON_ALPHANUMERIC, min_size=1, max_size=4),
    account_first=st.booleans(),
)
def test_any_routing_and_account_pair_is_found(
    routing_body: str, prefix: str, account: str, gap: str, account_first: bool
) -> None:
    body = prefix + routing_body
    routing = next(body + d for d in "0123456789" if is_routing_number(body + d))
    pair = f"{account}{gap}{routing}" if account_first else f"{routing}{gap}{account}"

    assert holds_number(f"debit {pair} returned")
    assert not any(is_digit(ch) for ch in redact_numbers(f"debit {pair} returned"))
