"""The gateway boundary: one Protocol and one outcome taxonomy.

A gateway's answer is a value, never an exception. ``Declined`` is what the bank said; an
exception raised by ``charge`` means the adapter could not tell, and the engine treats it as
``InDoubt`` (the charge may or may not have been taken), never as a decline.

The outcome types are the one door every gateway's text comes in by, whatever the adapter,
webhook or return file: each masks card and bank numbers (and secrets, in free text) in its
text fields as it is built (:mod:`collector.sensitive`), so nothing stored or logged after it
holds one. A gateway reference is left as it is: the engine finds the charge by it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

from collector.domain import MethodKind
from collector.sensitive import redact, redact_numbers


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """What the engine asks a gateway to collect; the key makes a re-send harmless."""

    idempotency_key: str
    # Whose money: a gateway that files its own records in the engine's database (the NACHA
    # files) files them under the customer, the schema's distribution key (sql/0022).
    customer_id: int
    amount_cents: int
    currency: str = "usd"  # every charge the engine makes is in US dollars
    token: str = field(repr=False)
    method_kind: MethodKind
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # The business date the charge is made for: a bank debit's effective entry date follows
    # from it (ACH adapters move it to a banking day); card adapters may ignore it.
    effective_on: date | None = None


class DeclineKind(StrEnum):
    SOFT = "soft"  # retry later: insufficient funds, try again
    HARD = "hard"  # never retry this method: stolen, closed, invalid, revoked


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded:
    """The money is taken."""

    gateway_ref: str
    code: str = "approved"


@dataclass(frozen=True, slots=True, kw_only=True)
class Processing:
    """Submitted and accepted, not settled yet (ACH): settles or returns days later."""

    gateway_ref: str
    code: str = "processing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Declined:
    """The issuer or bank said no; ``code`` is the gateway's own code, kept verbatim."""

    kind: DeclineKind
    code: str
    message: str = ""
    gateway_ref: str | None = None
    # The card network's advice, verbatim where the gateway passes it on: Mastercard merchant
    # advice codes ("03", "21", ...) or Stripe's advice_code ("do_not_try_again", ...).
    network_advice: str | None = None

    def __post_init__(self) -> None:
        _mask(self, "code", "network_advice")
        _mask(self, "message", free_text=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class InDoubt:
    """No answer (timeout, 5xx, lost connection): the charge may have been taken."""

    reason: str

    def __post_init__(self) -> None:
        _mask(self, "reason", free_text=True)


Outcome = Succeeded | Processing | Declined | InDoubt


def _mask(outcome: object, *fields: str, free_text: bool = False) -> None:
    """Mask card and bank numbers in the outcome's text ``fields`` (and, in ``free_text``,
    secrets and tokens too), before anything can store or log them."""
    mask = redact if free_text else redact_numbers
    for name in fields:
        value = getattr(outcome, name)
        if value:
            # Frozen: set once, while the outcome is being built.
            object.__setattr__(outcome, name, mask(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Returned:
    """A bank debit that was accepted, then came back; ``code`` is the NACHA return reason
    code (R01, R02, R10, ...), translated from the gateway's own code where it has one."""

    code: str
    message: str = ""
    gateway_ref: str | None = None
    gateway_code: str | None = None

    def __post_init__(self) -> None:
        _mask(self, "code", "gateway_code")
        _mask(self, "message", free_text=True)


Settlement = Succeeded | Processing | Returned | Declined
"""Where a debit in flight stands: settled, still in flight, returned (a bank debit that came
back), or declined (a card payment the gateway left processing that then failed)."""


@runtime_checkable
class Gateway(Protocol):
    """A payment gateway adapter. Both methods are safe to call again with the same key."""

    name: str

    async def charge(self, request: ChargeRequest) -> Outcome:
        """Charge once per idempotency key; a repeat key returns the first answer."""
        ...

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        """Find the charge made under this key; None when the gateway has none."""
        ...


@runtime_checkable
class SettlementSource(Protocol):
    """A gateway whose debits settle days later (ACH): it can say where one stands."""

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Where the debit made under this key stands on business date ``as_of``; None when
        the gateway has no such debit."""
        ...


@runtime_checkable
class Fingerprinting(Protocol):
    """A gateway that can name the card or bank account behind a token: the same card or
    account, tokenized again (a method removed and added back), gets the same fingerprint.
    The engine keys the card networks' caps and NACHA's reinitiation count by it."""

    async def fingerprint(self, token: str) -> str | None:
        """The gateway's fingerprint of the card or account behind ``token``; None when it
        has none. Raise GatewayError when the gateway cannot be asked."""
        ...


@runtime_checkable
class ValidatesAccounts(Protocol):
    """A gateway that can say a bank account behind a token is validated already (the NACHA
    vault's ``validated`` mark, Stripe's verified us_bank_account), so its first WEB debit
    needs no prenote."""

    async def account_validated(self, token: str) -> bool:
        """Whether the account behind ``token`` is validated. Raise GatewayError when the
        gateway cannot be asked."""
        ...


def lookup_lag(gateway: object) -> timedelta:
    """How long after a charge the gateway's lookup may still miss it (a search index that
    lags): a gateway declares it as ``lookup_lag``; none means lookups are immediate."""
    lag = getattr(gateway, "lookup_lag", None)
    return lag if isinstance(lag, timedelta) else timedelta(0)


def settlement_poll_after(gateway: object) -> timedelta:
    """How old a debit must be before the settlement job asks the gateway about it (a gateway
    whose webhooks report settlements declares ``settlement_poll_after``); none: every pass."""
    after = getattr(gateway, "settlement_poll_after", None)
    return after if isinstance(after, timedelta) else timedelta(0)


def method_kinds(gateway: object) -> frozenset[MethodKind] | None:
    """The kinds of payment method a gateway charges (a gateway declares ``method_kinds``); None
    when it does not say (a third-party adapter that predates the attribute): then the engine
    cannot tell a card from a bank account behind its tokens and trusts the method's kind."""
    kinds = getattr(gateway, "method_kinds", None)
    if isinstance(kinds, frozenset) and all(isinstance(kind, MethodKind) for kind in kinds):
        return kinds
    return None


def key_retention(gateway: object) -> timedelta | None:
    """How long the gateway remembers an idempotency key (``key_retention``); None: always."""
    kept = getattr(gateway, "key_retention", None)
    return kept if isinstance(kept, timedelta) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayContext:
    """What an adapter factory may use to build itself."""

    name: str
    database_url: str
    latency_ms: float = 0.0
    options: dict[str, str] = field(default_factory=dict)


GatewayFactory = Callable[[GatewayContext], AbstractAsyncContextManager[Gateway]]
"""An adapter's entry point: an async context manager yielding a ready gateway."""
