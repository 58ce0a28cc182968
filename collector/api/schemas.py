"""The portal API's request and response bodies. Money is integer cents; dates are ISO dates."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from collector.sensitive import looks_like_account_number

Cents = Annotated[int, Field(ge=0, le=10**12)]
Id = Annotated[int, Field(gt=0, le=2**63 - 1)]

ACCOUNT_NUMBER_REFUSED = "card_or_account_number"
"""The error type (and the answer's ``code``) of a request string holding a card or bank
account number."""


def refuse_account_numbers(value: object, where: str = "the body") -> None:
    """Raise a validation error when any string in ``value`` (through dicts, their keys too,
    and lists) looks like a card or bank account number; the error says where, never what."""
    if isinstance(value, str):
        if looks_like_account_number(value):
            raise PydanticCustomError(
                ACCOUNT_NUMBER_REFUSED,
                "{field} looks like a card or bank account number, which this API never"
                " takes (a payment method is registered by its gateway's token)",
                {"field": where},
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_account_numbers(key, "a field name")
            # The key is known harmless now: the error may name it.
            name = key if isinstance(key, str) else "a field"
            refuse_account_numbers(item, name if where == "the body" else f"{where}.{name}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            refuse_account_numbers(item, f"{where}[{n}]")


class StrictBody(BaseModel):
    """Every request body: unknown fields refused, and no coercion (strict): JSON ``true`` is
    not 1 cent, ``"2500"`` and ``2500.0`` are not integers, ``1`` is not a boolean. No string
    may hold a card or bank account number, whatever the field (checked on the raw input,
    before any other rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_account_numbers(cls, data: Any) -> Any:
        refuse_account_numbers(data)
        return data


class Problem(BaseModel):
    """Every error answer: a sentence for people, and a code for programs."""

    detail: str
    code: str | None = None


class MethodDisplay(BaseModel):
    """What the portal may show of a payment method: never the token."""

    id: int
    kind: Literal["card", "ach"]
    gateway: str
    brand: str | None
    bank_name: str | None
    last4: str | None
    status: Literal["active", "disabled"]
    is_primary: bool
    exp_month: int | None = Field(default=None, description="A card's expiry month (display).")
    exp_year: int | None = Field(default=None, description="A card's expiry year (display).")


class LeaseLine(BaseModel):
    id: int
    agreement_ref: str
    store: str
    status: Literal["active", "paid_off", "closed", "charged_off"]
    overdue_cents: Cents
    next_due_on: date | None
    next_due_cents: Cents | None


class LeaseDetail(BaseModel):
    id: int
    customer_id: int
    agreement_ref: str
    store: str
    status: Literal["active", "paid_off", "closed", "charged_off"]
    order_details: dict[str, Any]
    overdue_cents: Cents
    pending_cents: Cents = Field(description="Sent as bank debits, not settled yet.")
    next_due_on: date | None
    next_due_cents: Cents | None
    primary_payment_method: MethodDisplay | None
    days_past_due: int = Field(
        default=0,
        description="Days since the due date of the oldest installment with money neither"
        " paid nor in flight (a bank debit awaiting settlement is not past due); 0: none.",
    )
    delinquency_bucket: str = Field(
        default="current",
        description="current, 1-30, 31-60, 61-90 or 90+ (the configured edges).",
    )
    state: str | None = Field(
        default=None,
        description="The lease's jurisdiction (two-letter US code) whose late-fee rule applies.",
    )
    fees_owed_cents: Cents = Field(
        default=0, description="Late fees not paid yet (net of waivers), included in overdue."
    )


ScheduleStatus = Literal["scheduled", "processing", "pending", "paid", "overdue", "cancelled"]


class ScheduleLine(BaseModel):
    installment_id: int
    seq: int
    due_on: date
    amount_cents: Cents
    paid_cents: Cents
    status: ScheduleStatus = Field(
        description="'pending': a bank debit was sent and has not settled; it is not paid yet."
    )
    collection_stopped: str | None = Field(
        default=None,
        description="Why no automatic attempt is planned for this overdue installment, e.g."
        " 'two_strike_stop' (two automatic attempts on the method failed in a row: choose it"
        " again as the primary method, or another one, to authorize a new attempt).",
    )
    collection_held: str | None = Field(
        default=None,
        description="Why the planned automatic attempt waits, e.g. 'prenote_pending' (the bank"
        " account's NACHA prenote is not 3 banking days old yet) or 'debit_notice_required'.",
    )
    held_until: date | None = Field(
        default=None, description="The day the held attempt is planned for."
    )
    collection_paused: str | None = Field(
        default=None,
        description="Why automatic collection of this installment waits: 'promise_open' (an"
        " promise to pay, open or kept before its date, pauses the lease's automatic"
        " collection).",
    )
    collection_resumes_on: date | None = Field(
        default=None, description="When automatic collection may resume (with collection_paused)."
    )
    rent_paid_cents: Cents = Field(default=0, description="Of the rent, what is paid.")
    fee_cents: Cents = Field(default=0, description="The late fee, net of its waiver.")
    fee_paid_cents: Cents = Field(default=0, description="Of the late fee, what is paid.")
    fee_waived_cents: Cents = Field(default=0, description="Of the late fee, what was waived.")
    fee_id: int | None = Field(default=None, description="The late fee's id (to waive it).")
    owed_cents: Cents = Field(default=0, description="Rent + late fee - waiver.")


class Schedule(BaseModel):
    lease_id: int
    installments: list[ScheduleLine]


class NewPaymentMethod(StrictBody):
    kind: Literal["card", "ach"]
    gateway: Annotated[str, Field(min_length=1, max_length=64)]
    token: Annotated[
        str,
        Field(
            min_length=1,
            max_length=255,
            description="The gateway's token for the method; never a card or account number.",
        ),
    ]
    brand: Annotated[str, Field(max_length=64)] | None = None
    bank_name: Annotated[str, Field(max_length=128)] | None = None
    last4: Annotated[str, Field(pattern=r"^[0-9]{4}$")] | None = None
    # A card's expiry as printed on it, for display and expiry notices only; both or neither.
    exp_month: Annotated[int, Field(ge=1, le=12)] | None = None
    exp_year: Annotated[int, Field(ge=2000, le=2099)] | None = None
    make_primary: bool = False


class PrimaryChange(StrictBody):
    payment_method_id: Id


class PrimaryChanged(BaseModel):
    customer_id: int
    primary_payment_method: MethodDisplay
    next_due_on: date | None
    warning: str | None = Field(
        default=None,
        description="Set when the next due date is too close: that charge may use the old method.",
    )


class ManualPayment(StrictBody):
    amount_cents: Annotated[int, Field(gt=0, le=10**12)] | None = Field(
        default=None, description="Default: the whole overdue amount."
    )
    payment_method_id: Id | None = Field(default=None, description="Default: the primary method.")
    payoff: bool = Field(
        default=False,
        description="Pay the lease off: exactly today's payoff quote (GET"
        " /v1/leases/{id}/payoff); amount_cents may be left out, and when given must be it.",
    )


class Allocation(BaseModel):
    installment_id: int
    amount_cents: Cents


class PaymentResult(BaseModel):
    payment_id: int
    lease_id: int
    payment_method_id: int
    amount_cents: Cents
    status: Literal["succeeded", "processing", "in_doubt"]
    allocations: list[Allocation]
    created_at: datetime
    payoff: bool = Field(default=False, description="A payoff of the lease.")


class PayoffComponentLine(BaseModel):
    kind: str = Field(
        description="cash_price, rent_paid, early_purchase_fee, past_due_rent,"
        " rent_not_yet_due, early_purchase_discount, late_fees (the lease's unpaid late"
        " fees), capped_at_remaining_rent (at most the remaining rent + late fees)"
    )
    cents: int = Field(description="Signed: a credit or discount is negative.")


class PayoffQuote(BaseModel):
    lease_id: int
    as_of: date = Field(description="The business date of the quote (the lessor's zone).")
    amount_cents: Cents = Field(description="What owning the goods costs today.")
    rule: Literal["within_window", "after_window", "no_terms"]
    components: list[PayoffComponentLine] = Field(description="They add up to amount_cents.")
    valid_until: date = Field(description="The last business date the quote holds.")
    remaining_rent_cents: Cents = Field(
        description="The rent left to pay (paying the lease out costs this + late_fees_cents)."
    )
    rent_paid_cents: Cents = Field(description="Settled rent; money in flight is not counted.")
    pending_cents: Cents = Field(description="Money in flight, counted neither paid nor owed.")
    payable: bool = Field(
        description="False while money is in flight (pay once it settles) or nothing is left."
    )
    window_ends_on: date | None = Field(description="The early-purchase window's last day.")
    next_due_on: date | None
    late_fees_cents: Cents = Field(
        default=0, description="The lease's unpaid late fees, included in amount_cents."
    )


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(value: object) -> object:
    """A JSON date is a string YYYY-MM-DD, nothing else: strict mode would refuse even that
    (it wants a date object), lax mode would also take a number of seconds since 1970."""
    if not isinstance(value, str) or _ISO_DATE.fullmatch(value) is None:
        raise ValueError("must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value} is not a date") from exc


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class NewPromise(StrictBody):
    """A promise to pay ``amount_cents`` of what is overdue by ``promised_on``."""

    amount_cents: Annotated[int, Field(gt=0, le=10**12)] = Field(
        description="What the customer promises to pay, in cents: at most the overdue amount."
    )
    promised_on: IsoDate = Field(
        description="The date it will be paid by (ISO, YYYY-MM-DD): after today, at most"
        " COLLECTOR_PROMISE_MAX_DAYS ahead."
    )
    auto_collect: bool = Field(
        default=False,
        description="Collect it automatically on that date from the primary method.",
    )


PromiseStatus = Literal["open", "kept", "broken", "cancelled"]


class PromiseView(BaseModel):
    """A promise to pay and the money counted toward it."""

    id: int
    lease_id: int
    amount_cents: Cents
    made_on: date
    promised_on: date
    auto_collect: bool
    resume_on: date = Field(
        description="Automatic collection of the lease is paused before this date while the"
        " promise is open (the promised date; the day after when it is collected"
        " automatically on that date)."
    )
    status: PromiseStatus = Field(
        description="open; kept (the settled money reached the amount by the date); broken"
        " (the date passed short of it); cancelled (the lease was charged off or closed)."
    )
    paid_cents: Cents = Field(
        description="Settled money counted toward it: presented since it was made, by its date."
    )
    pending_cents: Cents = Field(
        description="Money counted toward it that is still in flight (a bank debit awaiting"
        " settlement): it keeps the promise open until it settles or comes back."
    )
    resolved_on: date | None
    payment_id: int | None = Field(
        description="The payment the engine made for it on its date (auto_collect)."
    )
    created_at: datetime


class FeeWaiver(StrictBody):
    reason: Annotated[
        str,
        Field(
            min_length=1,
            max_length=500,
            # Not blank, and no control characters (PostgreSQL's text cannot hold NUL: a 500,
            # not a clear 422).
            pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
            description="Why the fee is waived (kept in the journal with the waiver).",
        ),
    ]


class FeeWaived(BaseModel):
    fee_id: int
    waiver_id: int
    lease_id: int
    installment_id: int
    amount_cents: Cents
    reason: str


class LateFee(BaseModel):
    fee_id: int
    installment_id: int
    seq: int
    amount_cents: Cents
    assessed_on: date
    rule: str = Field(description="The rule applied: 'late_fee:' and the state, or 'default'.")
    waiver_id: int | None
    waived_on: date | None
    waiver_reason: str | None


class LeaseFees(BaseModel):
    lease_id: int
    fees: list[LateFee]


class LeaseState(StrictBody):
    state: Annotated[
        str | None,
        Field(description="Two-letter US state or territory code (e.g. CA); null: unknown."),
    ]
