"""The portal's read side: a customer's leases, one lease in full, and its schedule."""

from __future__ import annotations

from fastapi import APIRouter

from collector.aging import bucket_of
from collector.api.deps import LeaseOwnersDep, PoolDep, SettingsDep, TodayDep
from collector.api.errors import CustomerId, LeaseId, error_responses
from collector.api.schemas import (
    LeaseDetail,
    LeaseLine,
    PayoffComponentLine,
    PayoffQuote,
    Schedule,
    ScheduleLine,
)
from collector.db import portal
from collector.db.payoff import read_payoff

router = APIRouter(tags=["leases"])


@router.get(
    "/customers/{customer_id}/leases",
    summary="A customer's leases, one line each",
    responses=error_responses(not_found="No such customer.", unprocessable="Invalid customer id."),
)
async def list_leases(customer_id: CustomerId, pool: PoolDep, today: TodayDep) -> list[LeaseLine]:
    """The customer's leases with their overdue amount and next due installment."""
    leases = await portal.read_customer_leases(pool, customer_id, today=today)
    return [LeaseLine.model_validate(lease, from_attributes=True) for lease in leases]


@router.get(
    "/leases/{lease_id}",
    summary="One lease: status, order, amounts, primary payment method",
    responses=error_responses(not_found="No such lease.", unprocessable="Invalid lease id."),
)
async def get_lease(
    lease_id: LeaseId,
    pool: PoolDep,
    today: TodayDep,
    settings: SettingsDep,
    owners: LeaseOwnersDep,
) -> LeaseDetail:
    """The lease with its overdue, pending and next due amounts, the primary method, and how
    far past due it is."""
    lease = await portal.read_lease(pool, lease_id, today=today, owners=owners)
    detail = LeaseDetail.model_validate(lease, from_attributes=True)
    detail.delinquency_bucket = bucket_of(lease.days_past_due, settings.delinquency_bucket_days)
    return detail


@router.get(
    "/leases/{lease_id}/schedule",
    summary="Every installment of a lease, in order",
    responses=error_responses(not_found="No such lease.", unprocessable="Invalid lease id."),
)
async def get_schedule(
    lease_id: LeaseId, pool: PoolDep, today: TodayDep, owners: LeaseOwnersDep
) -> Schedule:
    """The lease's installments; an unsettled bank debit shows as 'pending', never as paid."""
    items = await portal.read_schedule(pool, lease_id, today=today, owners=owners)
    return Schedule(
        lease_id=lease_id,
        installments=[ScheduleLine.model_validate(item, from_attributes=True) for item in items],
    )


@router.get(
    "/leases/{lease_id}/payoff",
    summary="What owning the goods costs today, what makes it, and until when it holds",
    responses=error_responses(not_found="No such lease.", unprocessable="Invalid lease id."),
)
async def get_payoff(
    lease_id: LeaseId,
    pool: PoolDep,
    today: TodayDep,
    settings: SettingsDep,
    owners: LeaseOwnersDep,
) -> PayoffQuote:
    """The lease's payoff quote on today's business date (lease_payoff_v2: the one
    computation, which a payment with ``payoff`` pays)."""
    quote = await read_payoff(
        pool, lease_id, as_of=today, quote_days=settings.payoff_quote_days, owners=owners
    )
    return PayoffQuote(
        lease_id=quote.lease_id,
        as_of=quote.as_of,
        amount_cents=quote.amount_cents,
        rule=quote.rule,
        components=[PayoffComponentLine(kind=c.kind, cents=c.cents) for c in quote.components],
        valid_until=quote.valid_until,
        remaining_rent_cents=quote.remaining_rent_cents,
        rent_paid_cents=quote.rent_paid_cents,
        pending_cents=quote.in_flight_cents,
        payable=quote.payable,
        window_ends_on=quote.window_ends_on,
        next_due_on=quote.next_due_on,
        late_fees_cents=quote.late_fees_cents,
    )
