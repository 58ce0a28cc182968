"""Card numbers, bank account numbers and gateway secrets in free text, however they are typed.

One detector for the whole engine, used where outside text comes in or goes out:

- the portal API refuses any request string that holds one (``collector.api.schemas``);
- a gateway's answer has them masked as it is built (``collector.gateways.base``), before
  anything stores or logs it; so have the details of rows set aside for an operator
  (``collector.db.attention``);
- the log pipeline masks them, and gateway secrets and tokens, in every value, formatted
  exception chains included (``collector.logs``).

How a number is found. Each character is read through NFKC (fullwidth digits, circled
numbers, superscripts), and a Unicode decimal digit of any script (Arabic-Indic, Devanagari,
...) counts as its ASCII digit. Digits make groups. Separators of any kind and number between
two groups (spaces, dots, underscores, slashes, colons, dashes, any Unicode punctuation,
symbol or space) are stripped: the groups are one number. Invisible characters (format
characters such as U+200B zero-width space, U+2060 word joiner, U+FEFF, U+00AD soft hyphen;
combining marks) count for nothing. A gap with a letter in it joins two groups of at least
:data:`MIN_LETTERED_GROUP` digits when it is at most :data:`MAX_LETTERED_GAP` characters long
(``4111a1111b1111c1111``, ``4111 x 1111``). Then, over whole groups:

- a **card number** (PAN) is 13 to 19 digits, Luhn-valid, with the prefix and length of a card
  network in :data:`CARD_NETWORKS`;
- a **bank account** is a 9-digit ABA routing number (right check digit, a Federal Reserve
  prefix) with 4 to 17 digits of account number right before or after it, at most
  :data:`MAX_BANK_GAP` characters away (``091000019:12345678901``, ``ABA 091000019 acct 1234``).

False positives, decided so (each costs a masked value in a log or a refused request, never
money; masking every number would hide what operators need):

- A 9-digit number alone is never a bank account, even when its routing check digit holds:
  one random 9-digit number in 25 passes, routing numbers are public (printed on every
  cheque), and without the account number it names nobody's money.
- A lone account number has no check digit and looks like any other number: redaction cannot
  know it. The API is stricter than redaction (:func:`looks_like_account_number`): a request
  string with 13 digits joined by separators alone, or with no letter and 12 digits or more,
  is refused, Luhn or not.
- Digits that run on, with no separator, into a longer number (a 20-digit reference) hold no
  card number for redaction: some window of such a run passes Luhn one time in ten.
- Only the card networks' prefixes and lengths count. UATP (airline cards, prefix 1) is left
  out, and so are 15-digit numbers other than American Express (34, 37): a 15-digit ACH trace
  number starts with a routing prefix.
- A value that is wholly an ISO date-time, a time, an IPv4 address (and port) or a UUID, held
  to their real ranges, is no number: a timestamp's 20 digits would pass Luhn somewhere one
  time in thirty. Only when nothing else joins it: ``41.111.111.111 11111`` is a card number;
  and the API refuses 13 digits joined by separators whatever they spell.
- Letters join only groups of 3 digits or more: a hex digest still holds a Luhn-valid run
  about once in a hundred, and is then masked in logs (the safety net errs on that side).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

REDACTED_PAN: Final = "[redacted-pan]"
REDACTED_BANK: Final = "[redacted-bank]"
REDACTED: Final = "[redacted]"

MAX_LETTERED_GAP: Final = 3
"""Most visible characters in a gap with a letter in it that still joins two digit groups."""
MIN_LETTERED_GROUP: Final = 3
"""Fewest digits on each side of a gap with a letter in it (``4111x1111``): a hex id has
shorter runs between its letters."""
MAX_BANK_GAP: Final = 16
"""Most visible characters between a routing number and its account number (" account no. ")."""
MIN_DIGITS: Final = 13
"""No card number (13+) nor routing-and-account pair (9 + 4) has fewer digits."""

# (first prefix, last prefix, lengths), from the networks' published IIN ranges: a number
# matches when its first len(prefix) digits fall in the range and its length is listed.
_LONG = tuple(range(16, 20))
CARD_NETWORKS: Final[Mapping[str, tuple[tuple[str, str, tuple[int, ...]], ...]]] = {
    "visa": (("4", "4", (13, 16, 19)),),
    "mastercard": (("51", "55", (16,)), ("2221", "2720", (16,))),
    "amex": (("34", "34", (15,)), ("37", "37", (15,))),
    "discover": (("6011", "6011", _LONG), ("644", "649", _LONG), ("65", "65", _LONG)),
    "unionpay": (("62", "62", _LONG), ("81", "81", _LONG)),
    "jcb": (("3528", "3589", _LONG),),
    "diners": tuple(
        (low, high, (14, *_LONG))
        for low, high in (("300", "305"), ("3095", "3095"), ("36", "36"), ("38", "39"))
    ),
    "mir": (("2200", "2204", _LONG),),
    "rupay": (("60", "60", (16,)), ("82", "82", (16,)), ("508", "508", (16,))),
    "maestro": tuple(
        (p, p, _LONG)
        for p in ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763")
    ),
}

# ABA routing numbers start with 00 (US government), 01-12 (Federal Reserve districts), 21-32
# (thrifts), 61-72 (electronic transactions) or 80 (traveler's cheques).
_ROUTING_PREFIXES: Final = frozenset([*range(13), *range(21, 33), *range(61, 73), 80])

# Values that are no number when they stand alone (see the module docstring).
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_TIME = (
    r"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,9})?)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?"
)
_UUID = r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
_STANDALONE: Final = re.compile(
    rf"(?:19|20|21)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?:[T ]{_TIME})?"
    rf"|{_TIME}"
    rf"|{_OCTET}(?:\.{_OCTET}){{3}}(?::\d{{1,5}})?"
    rf"|{_UUID}"
)
_STANDALONE_UUID: Final = re.compile(_UUID)

# Gateway secrets and object ids (Stripe's: secret, restricted and publishable keys, webhook
# secrets, customers, payment methods and intents, bank accounts, sources, tokens, setup
# intents, cards), the sandbox's tokens, passwords in URLs and Authorization header values.
# A card object id needs a digit: Stripe's decline codes (card_declined) are not secrets.
_TOKENS: Final = re.compile(
    r"\b(?P<prefix>(?:sk|rk|pk)_(?:live|test)|whsec|cus|pm|pi|ba|src|tok|btok|seti"
    r"|card(?=_[A-Za-z]*[0-9]))_[A-Za-z0-9_]+"
    r"|\bsandbox_(?:card|ach)_[A-Za-z0-9_]+"
)
_URL_PASSWORD: Final = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_AUTHORIZATION: Final = re.compile(r"(\b(?i:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+")

Kind = Literal["pan", "bank"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A card number or routing-and-account pair found in a text: ``text[start:end]``."""

    kind: Kind
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Group:
    """A run of digits, ``text[start:end]``, and the gap before it: how many visible
    characters, and whether a letter is among them."""

    digits: str
    start: int
    end: int
    gap: int
    letters: bool


_DIGIT, _INVISIBLE, _LETTER, _OTHER = range(4)


@lru_cache(maxsize=4096)
def _classify(ch: str) -> tuple[int, str]:
    """What one character counts as: digits (with their ASCII value), invisible, a letter,
    or anything else."""
    if "0" <= ch <= "9":
        return _DIGIT, ch
    if ch.isascii():
        return (_LETTER, "") if ch.isalpha() else (_OTHER, "")
    digits = "".join(
        str(unicodedata.decimal(c)) for c in unicodedata.normalize("NFKC", ch) if c.isdecimal()
    )
    if digits:
        return _DIGIT, digits
    category = unicodedata.category(ch)
    if category in ("Cf", "Mn", "Me"):
        return _INVISIBLE, ""
    return (_LETTER, "") if category[0] == "L" else (_OTHER, "")


_ASCII_DIGITS: Final = b"0123456789"
_ASCII_RUN: Final = re.compile(r"[0-9]+")
_ASCII_LETTER: Final = re.compile(r"[A-Za-z]")


def _few_digits(text: str) -> bool:
    """True when ``text`` surely holds fewer than MIN_DIGITS digits (text that is not ASCII
    is always scanned: one character may stand for two digits)."""
    if not text.isascii():
        return False
    return len(text) - len(text.encode("ascii").translate(None, _ASCII_DIGITS)) < MIN_DIGITS


def _groups(text: str) -> list[_Group]:
    """The digit groups of ``text``, in order, each with the gap before it."""
    if text.isascii():
        # Every character is visible and one wide: the same, at the speed of re.
        groups, after = [], 0
        for run in _ASCII_RUN.finditer(text):
            between = text[after : run.start()]
            letters = bool(_ASCII_LETTER.search(between))
            groups.append(_Group(run.group(), run.start(), run.end(), len(between), letters))
            after = run.end()
        return groups
    groups = []
    digits: list[str] = []
    start = end = gap = 0
    letters = False
    for i, ch in enumerate(text):
        kind, value = _classify(ch)
        if kind == _DIGIT:
            if not digits:
                start = i
            digits.append(value)
            end = i + 1
            continue
        if digits:
            groups.append(_Group("".join(digits), start, end, gap, letters))
            digits, gap, letters = [], 0, False
        if kind != _INVISIBLE:
            gap += 1
            letters = letters or kind == _LETTER
    if digits:
        groups.append(_Group("".join(digits), start, end, gap, letters))
    return groups


def _joined(before: _Group, group: _Group, *, letters_join: bool) -> bool:
    """Whether ``group`` continues the number ``before`` is part of."""
    if not group.letters:
        return True  # separators alone, however many: stripped
    return (
        letters_join
        and group.gap <= MAX_LETTERED_GAP
        and min(len(before.digits), len(group.digits)) >= MIN_LETTERED_GROUP
    )


def _chains(groups: Sequence[_Group], *, letters_join: bool) -> list[int]:
    """The chain number of each group: consecutive groups joined as :func:`_joined` says."""
    chain, ids = -1, []
    for n, group in enumerate(groups):
        chain += 0 if n and _joined(groups[n - 1], group, letters_join=letters_join) else 1
        ids.append(chain)
    return ids


def _standalone(
    text: str, groups: Sequence[_Group], chains: list[int], values: re.Pattern[str] = _STANDALONE
) -> set[int]:
    """The chains that lie wholly inside one of the ``values`` found in ``text``: a date-time,
    a time, an IP address, a UUID."""
    spans = [m.span() for m in values.finditer(text)]
    if not spans:
        return set()
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for group, chain in zip(groups, chains, strict=True):
        first.setdefault(chain, group.start)
        last[chain] = group.end
    return {
        chain
        for chain, start in first.items()
        if any(low <= start and last[chain] <= high for low, high in spans)
    }


def luhn_valid(digits: str) -> bool:
    """True when the ASCII digit string passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_network(digits: str) -> str | None:
    """The card network whose prefix and length ``digits`` has, None for none."""
    for network, ranges in CARD_NETWORKS.items():
        for low, high, lengths in ranges:
            if len(digits) in lengths and low <= digits[: len(low)] <= high:
                return network
    return None


def is_card_number(digits: str) -> bool:
    """True for a Luhn-valid ASCII digit string of a card network's prefix and length."""
    return card_network(digits) is not None and luhn_valid(digits)


def is_routing_number(digits: str) -> bool:
    """True for 9 ASCII digits with a Federal Reserve prefix and a right ABA check digit."""
    if len(digits) != 9 or not digits.isdigit() or digits == "000000000":
        return False
    if int(digits[:2]) not in _ROUTING_PREFIXES:
        return False
    weights = (3, 7, 1) * 3
    return sum(w * (ord(c) - 48) for w, c in zip(weights, digits, strict=True)) % 10 == 0


def _cards(groups: Sequence[_Group], chains: list[int], skip: set[int]) -> Iterator[Finding]:
    """Runs of whole groups of one chain that are card numbers."""
    for i, first in enumerate(groups):
        if chains[i] in skip:
            continue
        digits = ""
        for j in range(i, len(groups)):
            if chains[j] != chains[i]:
                break
            digits += groups[j].digits
            if len(digits) > 19:
                break
            if len(digits) >= 13 and is_card_number(digits):
                yield Finding("pan", first.start, groups[j].end)


def _accounts(groups: Sequence[_Group], chains: list[int], skip: set[int]) -> Iterator[Finding]:
    """Routing numbers (whole groups of one chain) with an account number next to them: in
    the same chain, or in the chain right before or after, MAX_BANK_GAP characters away. The
    account is looked for after the routing number first, the usual order: a card number
    before it is then no account."""
    for i, first in enumerate(groups):
        if chains[i] in skip:
            continue
        digits, j = "", i
        while j < len(groups) and chains[j] == chains[i] and len(digits) < 9:
            digits += groups[j].digits
            j += 1
        if not is_routing_number(digits):
            continue
        if j < len(groups) and (chains[j] == chains[i] or groups[j].gap <= MAX_BANK_GAP):
            end = _account(groups, chains, range(j, len(groups)), skip)
            if end is not None:
                yield Finding("bank", first.start, end.end)
                continue
        if i > 0 and (chains[i - 1] == chains[i] or first.gap <= MAX_BANK_GAP):
            begin = _account(groups, chains, range(i - 1, -1, -1), skip)
            if begin is not None:
                yield Finding("bank", begin.start, groups[j - 1].end)


def _account(
    groups: Sequence[_Group], chains: list[int], order: range, skip: set[int]
) -> _Group | None:
    """The farthest group, walking ``order`` within one chain (not one of ``skip``), that ends
    (or, walking back, begins) an account number of 4 to 17 digits; None when there is none."""
    chain = chains[order[0]]
    if chain in skip:
        return None
    count, farthest = 0, None
    for k in order:
        if chains[k] != chain:
            break
        count += len(groups[k].digits)
        if count > 17:
            break
        if count >= 4:
            farthest = groups[k]
    return farthest


def find_numbers(text: str) -> list[Finding]:
    """Every card number and routing-and-account pair in ``text``, in order, overlaps merged."""
    if _few_digits(text):
        return []
    groups = _groups(text)
    chains = _chains(groups, letters_join=True)
    skip = _standalone(text, groups, chains)
    return _merged([*_cards(groups, chains, skip), *_accounts(groups, chains, skip)])


def _merged(found: list[Finding]) -> list[Finding]:
    merged: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -f.end)):
        if merged and f.start < merged[-1].end:
            last = merged[-1]
            kind: Kind = "pan" if "pan" in (last.kind, f.kind) else "bank"
            merged[-1] = Finding(kind, last.start, max(last.end, f.end))
        else:
            merged.append(f)
    return merged


def holds_number(text: str) -> bool:
    """True when ``text`` holds a card number or a routing-and-account pair."""
    return bool(find_numbers(text))


def looks_like_account_number(text: str) -> bool:
    """The API's test of a string a client sent, stricter than redaction's: a card number or
    routing-and-account pair; 13 digits or more joined by separators alone (however many, no
    letter between: a date or an address of that many digits included, a UUID not); or no
    letter at all and 12 digits or more.

    Why digits alone are enough to refuse, Luhn or not: bank account numbers carry no check
    digit at all; a mistyped or partial card number is still cardholder data; and a
    format-preserving "token" that looks like a PAN cannot be told from one by us or by anyone
    reading the database later. Storing a real number would bring the database into PCI DSS
    scope (and under NACHA's rule that stored account numbers be unreadable), while a false
    alarm only asks the integration for the gateway's opaque token."""
    if holds_number(text):
        return True
    groups = _groups(text)
    chains = _chains(groups, letters_join=False)
    # A gateway's token may well be a UUID: its dashes join up to 20 digits.
    uuid = _standalone(text, groups, chains, _STANDALONE_UUID)
    counts: dict[int, int] = {}
    for group, chain in zip(groups, chains, strict=True):
        if chain not in uuid:
            counts[chain] = counts.get(chain, 0) + len(group.digits)
    if any(count >= MIN_DIGITS for count in counts.values()):
        return True
    return sum(counts.values()) >= 12 and not any(_classify(ch)[0] == _LETTER for ch in text)


def redact_numbers(text: str) -> str:
    """``text`` with every card number and routing-and-account pair replaced by
    ``[redacted-pan]`` or ``[redacted-bank]``; the rest is kept as it was."""
    found = find_numbers(text)
    if not found:
        return text
    parts: list[str] = []
    at = 0
    for f in found:
        parts += [text[at : f.start], REDACTED_PAN if f.kind == "pan" else REDACTED_BANK]
        at = f.end
    parts.append(text[at:])
    return "".join(parts)


def _mask_token(match: re.Match[str]) -> str:
    prefix = match["prefix"]
    return f"{prefix}_{REDACTED}" if prefix else REDACTED


def redact(text: str) -> str:
    """``text`` with card and bank numbers, gateway secrets and tokens (``sk_live_…``,
    ``cus_…``, ``pm_…``, the sandbox's), URL passwords and Authorization values masked."""
    text = redact_numbers(text)
    # Each pattern needs its marker: most values skip the regular expressions.
    if "_" in text:
        text = _TOKENS.sub(_mask_token, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
        text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    return text


def redact_value(value: Any) -> Any:
    """``value`` with :func:`redact` applied to every string in it, through mappings (keys
    too), lists, tuples and sets; an integer that is a card number becomes a string."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return REDACTED_PAN if abs(value) >= 10**12 and holds_number(str(value)) else value
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value
