"""The late-fee rule table (``late_fee_rules.toml`` beside this module, or the lessor's own
file): loaded, validated, and turned into the arrays the pass's one statement reads. Pure
apart from reading the file; the fee arithmetic here is the SQL's (``late_fees_due_v1`` in
``sql/0021_late_fees.sql``), kept for the audit's messages and the tests."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from collector.exceptions import ConfigError

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "late_fee_rules.toml"

# The jurisdictions a lease may name: the 50 states, DC and the inhabited territories.
_CODES = """
AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ
NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR GU VI AS MP
"""
US_STATES = frozenset(_CODES.split())

# Bounds of a sane rule: a fee above $100 or 25 % of an installment, or a grace of more than
# a year, is a typo in the table, not a statute.
_MAX_CAP_CENTS = 10_000
_MAX_BP = 2_500
_MAX_GRACE_DAYS = 365
_FIELDS = {"grace_days", "percent_bp", "cap_cents", "min_cents", "statute", "verified"}


@dataclass(frozen=True, slots=True, kw_only=True)
class LateFeeRule:
    """One jurisdiction's late fee: the lesser of ``percent_bp`` of the rent and
    ``cap_cents``, at least ``min_cents``, once more than ``grace_days`` past due."""

    state: str | None  # None: the default rule
    grace_days: int
    percent_bp: int
    cap_cents: int
    min_cents: int
    statute: str
    verified: bool

    def fee_cents(self, rent_cents: int) -> int:
        """The fee on an installment of ``rent_cents`` (integer cents, rounded down)."""
        return min(self.cap_cents, max(self.min_cents, rent_cents * self.percent_bp // 10_000))


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeTable:
    """The rules by state and the default for every other lease."""

    default: LateFeeRule
    states: dict[str, LateFeeRule]

    def rule_for(self, state: str | None) -> LateFeeRule:
        """The rule of a lease in ``state`` (the default when it has none or is not listed)."""
        return self.states.get(state, self.default) if state else self.default

    def sql_args(self) -> tuple[object, ...]:
        """The table as the parallel arrays and default values ``late_fees_due_v1`` takes."""
        rules = [self.states[s] for s in sorted(self.states)]
        return (
            [r.state for r in rules],
            [r.grace_days for r in rules],
            [r.percent_bp for r in rules],
            [r.cap_cents for r in rules],
            [r.min_cents for r in rules],
            self.default.grace_days,
            self.default.percent_bp,
            self.default.cap_cents,
            self.default.min_cents,
        )


def _rule(where: str, state: str | None, raw: object) -> LateFeeRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a rule is a table of {', '.join(sorted(_FIELDS))}")
    if set(raw) != _FIELDS:
        missing, extra = sorted(_FIELDS - set(raw)), sorted(set(raw) - _FIELDS)
        raise ConfigError(f"{where}: missing {missing or 'nothing'}, unknown {extra or 'none'}")
    ints = {}
    for name in ("grace_days", "percent_bp", "cap_cents", "min_cents"):
        value = raw[name]
        # Integers only: a float in a money table is a mistake (bool is an int in Python).
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}.{name}: a whole number >= 0, not {value!r}")
        ints[name] = value
    if not isinstance(raw["statute"], str) or not raw["statute"].strip():
        raise ConfigError(f"{where}.statute: name the statute (or say why there is none)")
    if not isinstance(raw["verified"], bool):
        raise ConfigError(f"{where}.verified: true or false")
    rule = LateFeeRule(state=state, statute=raw["statute"], verified=raw["verified"], **ints)
    if rule.cap_cents == 0 or rule.cap_cents > _MAX_CAP_CENTS:
        raise ConfigError(f"{where}.cap_cents: between 1 and {_MAX_CAP_CENTS}")
    if rule.percent_bp > _MAX_BP:
        raise ConfigError(f"{where}.percent_bp: at most {_MAX_BP} (25 %)")
    if rule.min_cents > rule.cap_cents:
        # The cap is a statute's ceiling: a minimum above it would charge more than the law.
        raise ConfigError(f"{where}.min_cents: {rule.min_cents} is above cap_cents")
    if rule.grace_days > _MAX_GRACE_DAYS:
        raise ConfigError(f"{where}.grace_days: at most {_MAX_GRACE_DAYS}")
    return rule


def parse_rules(text: str, *, source: str = "late fee rules") -> FeeTable:
    """Parse and validate a rule table; raise ConfigError naming the bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc
    if set(data) - {"default", "states"} or "default" not in data:
        raise ConfigError(f"{source}: expects a [default] rule and [states.XX] rules only")
    states_raw = data.get("states", {})
    if not isinstance(states_raw, dict):
        raise ConfigError(f"{source}: [states] is a table of two-letter codes")
    states = {}
    for code, raw in states_raw.items():
        if code not in US_STATES:
            raise ConfigError(f"{source}: states.{code}: not a US state or territory code")
        states[code] = _rule(f"{source}: states.{code}", code, raw)
    return FeeTable(default=_rule(f"{source}: default", None, data["default"]), states=states)


@functools.lru_cache(maxsize=8)
def load_rules(path: Path | None = None) -> FeeTable:
    """The rule table of ``path`` (None: the one shipped); raise ConfigError if invalid."""
    where = path or DEFAULT_RULES_FILE
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"COLLECTOR_LATE_FEE_RULES_FILE: cannot read {where}") from exc
    return parse_rules(text, source=str(where.name))


def valid_state(code: str) -> bool:
    """Is ``code`` a jurisdiction a lease may name (two capital letters, a US code)?"""
    return code in US_STATES
