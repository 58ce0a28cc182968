"""Value types shared by every layer. Money is always integer cents; dates are the lessor's
local business dates; statuses mirror the CHECK constraints of the schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class InstallmentStatus(StrEnum):
    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    PENDING_SETTLEMENT = "pending_settlement"
    PAID = "paid"
    OVERDUE = "overdue"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"
    PROCESSING = "processing"
    RETURNED = "returned"
    IN_DOUBT = "in_doubt"
    REFUSED = "refused"  # the eligibility check refused it: nothing was sent


class RunStatus(StrEnum):
    """A pass's ``collection_runs.status``."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # the pass recorded its own failure, with its reason
    ABANDONED = "abandoned"  # a later pass found it running without its liveness lock


class MovementKind(StrEnum):
    """The kinds of money journal rows (the CHECK of money_movements.kind)."""

    PRESENTED = "presented"
    ACCEPTED = "accepted"  # the gateway took the debit; it settles or comes back later
    RELEASED = "released"
    SETTLED = "settled"
    RETURNED = "returned"
    REVERSED = "reversed"
    REPLANNED = "replanned"


def ending_of(status: AttemptStatus) -> MovementKind | None:
    """What an attempt reaching ``status`` does to the money it presented: settled, released,
    accepted (in flight, answered: processing), or nothing yet (pending, in doubt)."""
    if status is AttemptStatus.SUCCEEDED:
        return MovementKind.SETTLED
    if status is AttemptStatus.PROCESSING:
        return MovementKind.ACCEPTED
    if status in (AttemptStatus.DECLINED, AttemptStatus.FAILED, AttemptStatus.REFUSED):
        return MovementKind.RELEASED
    return None


class AttemptSource(StrEnum):
    BATCH = "batch"
    RETRY = "retry"
    MANUAL = "manual"


class MethodKind(StrEnum):
    CARD = "card"
    ACH = "ach"


class LeaseStatus(StrEnum):
    ACTIVE = "active"
    PAID_OFF = "paid_off"
    CLOSED = "closed"
    CHARGED_OFF = "charged_off"


class MethodStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedCharge:
    """One installment claimed by a pass, with its pending attempt already on record."""

    attempt_id: int
    installment_id: int | None  # None for a manual payment's attempt
    lease_id: int
    customer_id: int
    payment_method_id: int
    gateway: str
    method_kind: MethodKind
    token: str
    amount_cents: int
    idempotency_key: str
    attempt_no: int
    due_on: date | None
    source: AttemptSource
    payment_id: int | None = None  # set for a manual payment's attempt
    brand: str | None = None  # card brand, for the networks' retry caps
    as_of: date | None = None  # the business date the charge is made for
    reinitiation: bool = False  # a bank debit presented again after an NSF return
    # The business date the request carries (a bank debit's effective date follows from it),
    # fixed at the first send: a re-send under the same key repeats it.
    effective_on: date | None = None
    # The card or bank account, whatever payment_methods row names it (eligibility history).
    instrument_key: str = ""
    # The money this attempt presents: (installment id, cents) for each installment it serves.
    allocations: tuple[tuple[int, int], ...] = ()

    @property
    def presents(self) -> tuple[tuple[int, int], ...]:
        """(installment id, cents) of the money this attempt presents."""
        if self.allocations:
            return self.allocations
        assert self.installment_id is not None
        return ((self.installment_id, self.amount_cents),)

    def __repr__(self) -> str:
        # The token never appears in a repr, so it cannot leak through a log or traceback.
        return (
            f"ClaimedCharge(attempt_id={self.attempt_id}, installment_id={self.installment_id},"
            f" payment_id={self.payment_id}, gateway={self.gateway!r},"
            f" amount_cents={self.amount_cents})"
        )


def format_cents(amount_cents: int) -> str:
    """Render integer cents as dollars for people: 123456 -> '$1,234.56'."""
    sign = "-" if amount_cents < 0 else ""
    dollars, cents = divmod(abs(amount_cents), 100)
    return f"{sign}${dollars:,}.{cents:02d}"


@dataclass(slots=True, kw_only=True)
class PassCounts:
    """What one pass did: counts of attempts by result, and money taken."""

    due: int = 0
    succeeded: int = 0
    declined: int = 0
    in_doubt: int = 0
    processing: int = 0
    failed: int = 0
    reconciled: int = 0
    charged_cents: int = 0
    processing_cents: int = 0
    refused: int = 0  # presentments the eligibility check refused (nothing sent)
    settled: int = 0  # ACH debits of earlier passes that settled
    returned: int = 0  # ACH debits of earlier passes that came back


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedAttempt:
    """What the ledger holds of an attempt that a gateway's event names: what the event must
    match before it may change anything."""

    attempt_id: int
    gateway: str
    gateway_ref: str | None
    amount_cents: int
    method_kind: MethodKind
