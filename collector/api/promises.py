"""Promises to pay: ``POST`` and ``GET /v1/leases/{lease_id}/promises``."""

from __future__ import annotations

from fastapi import APIRouter

from collector.api.deps import LeaseOwnersDep, PoolDep, SettingsDep, TodayDep
from collector.api.errors import LeaseId, error_responses
from collector.api.schemas import NewPromise, Problem, PromiseView
from collector.db import promises

router = APIRouter(tags=["promises"])


@router.post(
    "/leases/{lease_id}/promises",
    status_code=201,
    summary="Promise to pay an overdue amount by a date",
    responses={
        **error_responses(
            not_found="No such lease.",
            unprocessable="A date in the past, today or too far ahead, an amount above the"
            " overdue amount, nothing overdue, or a lease that is not active.",
            body=True,
        ),
        409: {"model": Problem, "description": "The lease already has an open promise."},
    },
)
async def make_promise(
    lease_id: LeaseId,
    body: NewPromise,
    pool: PoolDep,
    settings: SettingsDep,
    today: TodayDep,
    owners: LeaseOwnersDep,
) -> PromiseView:
    """Record the promise: automatic collection of the lease pauses until its date (and on
    it, when ``auto_collect`` asks the engine to collect the promised amount then)."""
    made = await promises.make_promise(
        pool,
        promises.NewPromise(
            lease_id=lease_id,
            amount_cents=body.amount_cents,
            promised_on=body.promised_on,
            auto_collect=body.auto_collect,
            today=today,
            max_days=settings.promise_max_days,
            customer_id=await owners.customer_of(pool, lease_id),
        ),
    )
    return PromiseView.model_validate(made, from_attributes=True)


@router.get(
    "/leases/{lease_id}/promises",
    summary="A lease's promises to pay, newest first",
    responses=error_responses(not_found="No such lease.", unprocessable="Invalid lease id."),
)
async def list_promises(
    lease_id: LeaseId, pool: PoolDep, owners: LeaseOwnersDep
) -> list[PromiseView]:
    """Every promise of the lease with its status and the money counted toward it."""
    found = await promises.lease_promises(pool, lease_id, owners=owners)
    return [PromiseView.model_validate(p, from_attributes=True) for p in found]
