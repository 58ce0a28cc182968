"""Payoff quotes: what a customer must pay today to own a lease's goods. The amount is
computed in one place, ``lease_payoff_v2`` (sql/0017_payoff_early_purchase.sql, with the
lease's late fees since sql/0021_late_fees.sql, with its customer since
sql/0023_route_portal.sql); this module
reads it (sql/queries/payments.sql, ``payoff_quote``) for the quote endpoint and for the
payoff payment's claim."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from collector.db.pool import Executor
from collector.db.portal import LeaseOwners, owner_of
from collector.db.queries import QUERIES
from collector.exceptions import NotFound


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoffComponent:
    """One part of a payoff amount, in signed cents (a discount or credit is negative)."""

    kind: str
    cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoffQuote:
    """A lease's payoff on a business date: the amount, what makes it, until when it holds."""

    lease_id: int
    as_of: date
    rule: str
    amount_cents: int
    components: tuple[PayoffComponent, ...]
    remaining_rent_cents: int
    rent_paid_cents: int
    in_flight_cents: int
    payable: bool
    window_ends_on: date | None
    next_due_on: date | None
    valid_until: date
    late_fees_cents: int = 0  # of the amount, the lease's unpaid late fees


async def read_payoff(
    db: Executor,
    lease_id: int,
    *,
    as_of: date,
    quote_days: int,
    owners: LeaseOwners | None = None,
    customer_id: int | None = None,
) -> PayoffQuote:
    """The payoff quote of lease ``lease_id`` on ``as_of``; raises NotFound for no such lease.
    ``customer_id``: the lease's customer when known, else found through ``owners`` (or read)."""
    if customer_id is None:
        customer_id = await owner_of(db, lease_id, owners)
    row = None
    if customer_id is not None:
        row = await db.fetchrow(
            QUERIES["payments.payoff_quote"], lease_id, as_of, quote_days, customer_id
        )
    if row is None:
        raise NotFound(f"lease {lease_id} does not exist")
    components = tuple(
        PayoffComponent(kind=p["kind"], cents=int(p["cents"])) for p in row["components"]
    )
    # The one computation's own promise, held here too: its parts add up to its amount.
    assert sum(c.cents for c in components) == row["amount_cents"], components
    return PayoffQuote(
        lease_id=row["lease_id"],
        as_of=as_of,
        rule=row["rule"],
        amount_cents=row["amount_cents"],
        components=components,
        remaining_rent_cents=row["remaining_rent_cents"],
        rent_paid_cents=row["rent_paid_cents"],
        in_flight_cents=row["in_flight_cents"],
        payable=row["payable"],
        window_ends_on=row["window_ends_on"],
        next_due_on=row["next_due_on"],
        valid_until=row["valid_until"],
        late_fees_cents=row["late_fees_cents"],
    )
