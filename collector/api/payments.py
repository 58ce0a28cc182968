"""Manual pay: ``POST /v1/leases/{lease_id}/payments``."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from collector.api.deps import GatewaysDep, LeaseOwnersDep, PoolDep, SettingsDep, TodayDep
from collector.api.errors import LeaseId, error_responses
from collector.api.schemas import ManualPayment, PaymentResult, Problem, refuse_account_numbers
from collector.db.payments import PaymentRequest, RateLimit
from collector.gateways.base import method_kinds
from collector.jobs.charging import Charger
from collector.jobs.manual_pay import pay_now

router = APIRouter(tags=["payments"])

# How long a manual payment's claim lasts before reconciliation may take it over: the gateway
# timeout plus time to record the answer.
_CLAIM_MARGIN_S = 60


def _no_account_number(key: str) -> str:
    # The key is stored and shown to operators: it must not be a card number in disguise.
    refuse_account_numbers(key, "Idempotency-Key")
    return key


def request_hash(body: ManualPayment) -> str:
    """A digest of what was asked, to tell a replay from a reuse of the key for another ask."""
    asked = body.model_dump()
    if not asked["payoff"]:
        # A payment that is no payoff hashes as it did before the field existed, so a repeat
        # of a key first used before it still replays.
        del asked["payoff"]
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "/leases/{lease_id}/payments",
    status_code=201,
    response_model=PaymentResult,
    summary="Pay an overdue amount now",
    responses={
        **error_responses(
            not_found="No such lease.",
            unprocessable="Nothing overdue, bad amount or method, key reused with another body.",
            body=True,
        ),
        202: {"model": PaymentResult, "description": "Sent; the gateway's answer is not known yet"},
        402: {"model": Problem, "description": "Declined; `code` is the gateway's reason"},
        409: {
            "model": Problem,
            "description": "A payment for these installments is in progress; for a payoff,"
            " money of the lease is in flight or amount_cents is not today's quote",
        },
        429: {
            "model": Problem,
            "description": "The customer started too many payments just now; see Retry-After",
        },
        503: {
            "model": Problem,
            "description": "Nothing was charged and the payment could not be started now"
            " (`code` try_again); try again after Retry-After",
        },
    },
)
async def manual_pay(
    request: Request,
    lease_id: LeaseId,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Unique per payment the customer means to make; a retry reuses it.",
        ),
        AfterValidator(_no_account_number),
    ],
    pool: PoolDep,
    settings: SettingsDep,
    today: TodayDep,
    gateways: GatewaysDep,
    owners: LeaseOwnersDep,
    body: Annotated[ManualPayment | None, Body()] = None,
) -> JSONResponse:
    """Charge the overdue amount (or part of it), in the allocation order (by default the
    oldest installment's rent, then its fee, then the next), exactly once per Idempotency-Key;
    with ``payoff``, exactly the lease's payoff quote (late fees included), which pays it off."""
    body = body or ManualPayment()
    charger: Charger = request.app.state.charger
    answer = await pay_now(
        pool,
        charger,
        PaymentRequest(
            lease_id=lease_id,
            request_key=idempotency_key,
            request_hash=request_hash(body),
            amount_cents=body.amount_cents,
            payment_method_id=body.payment_method_id,
            as_of=today,
            gateways=list(gateways),
            gateway_kinds={name: method_kinds(gateway) for name, gateway in gateways.items()},
            deadline_s=int(settings.gateway_timeout_s) + _CLAIM_MARGIN_S,
            rate_limit=RateLimit(
                max_attempts=settings.manual_pay_max_attempts,
                window_s=settings.manual_pay_window_s,
            ),
            payoff=body.payoff,
            payoff_quote_days=settings.payoff_quote_days,
            allocation_order=settings.allocation_order,
            # Known when the portal read the lease before (else read on Citus only).
            customer_id=owners.known(lease_id),
        ),
        retry_days=settings.soft_retry_days,
        card_rules=settings.card_rules,
    )
    return JSONResponse(answer.body, status_code=answer.status_code)
