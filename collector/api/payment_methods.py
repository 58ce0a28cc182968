"""Payment methods in the portal: list them, register a gateway token, change the primary one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

import anyio
import asyncpg
from fastapi import APIRouter, Request, status

from collector.api.deps import PoolDep, SettingsDep, TodayDep
from collector.api.errors import CustomerId, error_responses
from collector.api.schemas import MethodDisplay, NewPaymentMethod, PrimaryChange, PrimaryChanged
from collector.db import portal
from collector.exceptions import GatewayError, Unprocessable
from collector.gateways.base import Fingerprinting, ValidatesAccounts, method_kinds
from collector.jobs.prenotes import send_prenotes
from collector.logs import get_logger
from collector.policy import primary_change_warning

log = get_logger()

router = APIRouter(tags=["payment methods"])

# Control characters never belong in a token or a display name, and PostgreSQL's text type
# cannot store NUL at all (it would surface as a 500, not a clear 422).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    # (A lone surrogate never gets here: pydantic refuses it while parsing the body.)
    if _CONTROL.search(value):
        raise Unprocessable(f"{name} must not contain control characters")


def _check_new_method(
    body: NewPaymentMethod, gateways: list[str], opened: Mapping[str, object]
) -> None:
    # A card or account number in any field was refused with the body (schemas.StrictBody).
    if body.gateway not in gateways:
        raise Unprocessable(f"unknown gateway; known gateways: {', '.join(sorted(gateways))}")
    kinds = method_kinds(opened.get(body.gateway))
    if kinds is not None and body.kind not in kinds:
        # A card token under a bank gateway (or the reverse) would be charged under the other
        # kind's rules, or not at all: never stored.
        charged = " or ".join(sorted(kinds))
        raise Unprocessable(
            f"gateway {body.gateway} charges {charged} methods, not {body.kind}; send the kind"
            " of the method the token is for"
        )
    if (body.exp_month is None) != (body.exp_year is None):
        raise Unprocessable("exp_month and exp_year go together: give both or neither")
    if body.exp_month is not None and body.kind != "card":
        raise Unprocessable("only a card has an expiry (exp_month, exp_year)")
    _check_text("token", body.token)
    _check_text("brand", body.brand)
    _check_text("bank_name", body.bank_name)


# How long adding a method waits for the gateway to name the card or account behind a token.
_FINGERPRINT_TIMEOUT_S = 5


async def _fingerprint(gateway: object, token: str) -> str | None:
    """The gateway's fingerprint of the token's card or account, where it gives one. The rules
    count a card's or account's history by it, so a method removed and added again keeps its
    history; when the gateway cannot say, the token names it (the method is still added)."""
    if not isinstance(gateway, Fingerprinting):
        return None
    try:
        with anyio.fail_after(_FINGERPRINT_TIMEOUT_S):
            return await gateway.fingerprint(token)
    except (GatewayError, TimeoutError) as exc:
        log.warning("fingerprint_unavailable", error=type(exc).__name__)
        return None


async def _account_validated(gateway: object, token: str) -> bool:
    """Whether the adapter says the bank account behind the token is validated already
    (ValidatesAccounts); False when it cannot say, so a prenote validates it."""
    if not isinstance(gateway, ValidatesAccounts):
        return False
    try:
        with anyio.fail_after(_FINGERPRINT_TIMEOUT_S):
            return await gateway.account_validated(token)
    except (GatewayError, TimeoutError) as exc:
        log.warning("account_validation_unavailable", error=type(exc).__name__)
        return False


async def _send_prenotes(
    request: Request, pool: asyncpg.Pool, customer_id: int, today: date
) -> None:
    """A new primary bank account gets its prenote now, not at the next pass; a failure here
    is left to that pass."""
    try:
        await send_prenotes(pool, request.app.state.gateways, as_of=today, customer_id=customer_id)
    except (GatewayError, asyncpg.PostgresError, OSError) as exc:
        log.warning("prenote_deferred_to_the_pass", error=type(exc).__name__)


def _display(method: portal.MethodView) -> MethodDisplay:
    return MethodDisplay.model_validate(method, from_attributes=True)


@router.get(
    "/customers/{customer_id}/payment-methods",
    summary="A customer's payment methods (display fields only)",
    responses=error_responses(not_found="No such customer.", unprocessable="Invalid customer id."),
)
async def list_methods(customer_id: CustomerId, pool: PoolDep) -> list[MethodDisplay]:
    """The customer's payment methods, primary first, without their tokens."""
    methods = await portal.read_customer_methods(pool, customer_id)
    return [_display(method) for method in methods]


@router.post(
    "/customers/{customer_id}/payment-methods",
    summary="Register a gateway token as a payment method",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        not_found="No such customer.",
        unprocessable="Invalid body, a token that looks like a card or account number, an"
        " unknown gateway, or a kind of method the gateway does not charge. Nothing is stored.",
        body=True,
    ),
)
async def add_method(
    request: Request,
    customer_id: CustomerId,
    body: NewPaymentMethod,
    pool: PoolDep,
    settings: SettingsDep,
    today: TodayDep,
) -> MethodDisplay:
    """Store the customer's new method (primary if asked); the token is never sent back."""
    _check_new_method(body, settings.gateways, request.app.state.gateways)
    new = portal.NewMethod(
        kind=body.kind,
        gateway=body.gateway,
        token=body.token,
        brand=body.brand,
        bank_name=body.bank_name,
        last4=body.last4,
        exp_month=body.exp_month,
        exp_year=body.exp_year,
        fingerprint=await _fingerprint(request.app.state.gateways.get(body.gateway), body.token),
        account_validated=body.kind == "ach"
        and await _account_validated(request.app.state.gateways.get(body.gateway), body.token),
    )
    method = await portal.add_method(
        pool,
        customer_id,
        new,
        make_primary=body.make_primary,
        today=today,
        notice_days=settings.primary_change_notice_days,
    )
    if body.make_primary and body.kind == "ach":
        await _send_prenotes(request, pool, customer_id, today)
    return _display(method)


@router.put(
    "/customers/{customer_id}/primary-payment-method",
    summary="Change the customer's primary payment method",
    responses=error_responses(
        not_found="No such customer.",
        unprocessable="Invalid body, or a method that is not an active method of this customer.",
        body=True,
    ),
)
async def change_primary(
    request: Request,
    customer_id: CustomerId,
    body: PrimaryChange,
    pool: PoolDep,
    settings: SettingsDep,
    today: TodayDep,
) -> PrimaryChanged:
    """Make an active method of the customer the primary one; overdue installments that waited
    for a new method get an attempt today."""
    change = await portal.change_primary(
        pool,
        customer_id,
        body.payment_method_id,
        today=today,
        notice_days=settings.primary_change_notice_days,
    )
    if change.method.kind == "ach":
        await _send_prenotes(request, pool, customer_id, today)
    return PrimaryChanged(
        customer_id=change.customer_id,
        primary_payment_method=_display(change.method),
        next_due_on=change.next_due_on,
        # Also when the method was already primary: a repeated request gets the same answer.
        warning=primary_change_warning(
            change.next_due_on, today=today, notice_days=settings.primary_change_notice_days
        ),
    )
