"""Late fees through the API: a lease's fees, waiving one (a journal row with its reason),
and setting the lease's jurisdiction (whose rule the pass applies). No SQL here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from collector.api.deps import LeaseOwnersDep, PoolDep, TodayDep
from collector.api.errors import LeaseId, PathId, error_responses
from collector.api.schemas import FeeWaived, FeeWaiver, LateFee, LeaseFees, LeaseState, Problem
from collector.db import fees
from collector.exceptions import Conflict, NotFound, Unprocessable
from collector.fees.rules import valid_state
from collector.logs import get_logger
from collector.metrics import LATE_FEES_WAIVED_CENTS

router = APIRouter(tags=["fees"])
log = get_logger()

FeeId = Annotated[PathId, Path(description="The late fee's id (the schedule's fee_id).")]
WAIVE_SOURCE = "api"


@router.get(
    "/leases/{lease_id}/fees",
    summary="A lease's late fees, with their waivers",
    responses=error_responses(not_found="No such lease.", unprocessable="Invalid lease id."),
)
async def list_fees(lease_id: LeaseId, pool: PoolDep, owners: LeaseOwnersDep) -> LeaseFees:
    """Every late fee of the lease, oldest installment first."""
    # One statement once the lease's customer is known (a lease never changes customer).
    customer_id = await owners.customer_of(pool, lease_id)
    if customer_id is None:
        raise NotFound("no such lease")
    found = await fees.lease_fees(pool, customer_id, lease_id)
    return LeaseFees(
        lease_id=lease_id,
        fees=[LateFee.model_validate(f, from_attributes=True) for f in found],
    )


@router.post(
    "/leases/{lease_id}/fees/{fee_id}/waive",
    summary="Waive a late fee",
    responses={
        **error_responses(
            not_found="No such lease, or no such fee on it.",
            unprocessable="Invalid ids, or a reason missing or blank.",
            body=True,
        ),
        409: {"model": Problem, "description": "Already waived, or already (partly) paid"},
    },
)
async def waive_fee(
    lease_id: LeaseId,
    fee_id: FeeId,
    body: Annotated[FeeWaiver, Body()],
    pool: PoolDep,
    today: TodayDep,
    owners: LeaseOwnersDep,
) -> FeeWaived:
    """Waive the whole fee: a 'fee_waived' journal row with the reason; what the installment
    owes drops by the fee. Once only; a fee paid (or in flight) in part is refunded instead."""
    customer_id = await owners.customer_of(pool, lease_id)
    if customer_id is None:
        raise NotFound(f"no late fee {fee_id} on lease {lease_id}")
    async with pool.acquire() as conn, conn.transaction():
        done = await fees.waive(
            conn,
            customer_id=customer_id,
            lease_id=lease_id,
            fee_id=fee_id,
            as_of=today,
            source=WAIVE_SOURCE,
            reason=body.reason.strip(),
        )
    if done.outcome == "not_found":
        raise NotFound(f"no late fee {fee_id} on lease {lease_id}")
    if done.outcome == "already_waived":
        raise Conflict(f"late fee {fee_id} is already waived")
    if done.outcome == "fee_paid":
        raise Conflict(f"late fee {fee_id} is already paid (or being paid), in part or whole")
    assert done.waiver_id is not None and done.installment_id is not None
    assert done.amount_cents is not None
    LATE_FEES_WAIVED_CENTS.inc(done.amount_cents)
    log.info(
        "late_fee_waived",
        lease_id=lease_id,
        installment_id=done.installment_id,
        amount_cents=done.amount_cents,
    )
    return FeeWaived(
        fee_id=fee_id,
        waiver_id=done.waiver_id,
        lease_id=lease_id,
        installment_id=done.installment_id,
        amount_cents=done.amount_cents,
        reason=body.reason.strip(),
    )


@router.put(
    "/leases/{lease_id}/state",
    summary="Set a lease's jurisdiction (its late-fee rule)",
    responses=error_responses(
        not_found="No such lease.",
        unprocessable="Not a two-letter US state or territory code.",
        body=True,
    ),
)
async def set_state(
    lease_id: LeaseId, body: Annotated[LeaseState, Body()], pool: PoolDep, owners: LeaseOwnersDep
) -> LeaseState:
    """Set the state whose late-fee rule applies to the lease's fees from now on."""
    if body.state is not None and not valid_state(body.state):
        raise Unprocessable(f"state {body.state!r} is not a two-letter US state or territory code")
    customer_id = await owners.customer_of(pool, lease_id)
    if customer_id is None or not await fees.set_lease_state(
        pool, customer_id, lease_id, body.state
    ):
        raise NotFound("no such lease")
    return body
