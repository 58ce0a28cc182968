from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from collector.domain import MethodKind
from collector.exceptions import CollectorError, GatewayConfigError
from collector.gateways.base import Declined, DeclineKind, Processing, Returned, Succeeded
from collector.gateways.stripe import (
    StripeAchGateway,
    StripeCardGateway,
    open_stripe_ach,
    open_stripe_card,
)
from collector.gateways.stripe_webhooks import (
    PaymentIntentSource,
    StripeEvent,
    WebhookPayloadError,
    WebhookSignatureError,
    dispute_of,
    dispute_return,
    parse_event,
    settlement_of,
)
from tests.gateways.fake_stripe import (
    FakeStripe,
    dispute,
    event_payload,
    serve_fake_stripe,
    sign,
)
from tests.gateways.test_stripe import charge_request, context

SECRET = "whsec_test_0123456789abcdef"


def intent(
    status: str,
    *,
    key: str | None = "att-7",
    types: tuple[str, ...] = ("us_bank_account",),
    error_code: str | None = None,
) -> dict[str, Any]:
    return {
        "id": "pi_evt1",
        "object": "payment_intent",
        "amount": 30_000,
        "currency": "usd",
        "status": status,
        "created": 1_770_000_000,
        "metadata": {} if key is None else {"collector_attempt_key": key},
        "payment_method_types": list(types),
        "last_payment_error": None
        if error_code is None
        else {"type": "card_error", "code": error_code, "message": "Returned by the bank."},
        "cancellation_reason": None,
    }


def verified(event_type: str, obj: dict[str, Any]) -> StripeEvent:
    payload = event_payload(event_type, obj)
    return parse_event(payload, sign(payload, SECRET), SECRET)


def test_a_validly_signed_event_parses() -> None:
    payload = event_payload("payment_intent.succeeded", intent("succeeded"), event_id="evt_42")

    event = parse_event(payload, sign(payload, SECRET), SECRET)

    assert (event.id, event.type) == ("evt_42", "payment_intent.succeeded")
    assert event.data.object["id"] == "pi_evt1"


def test_any_of_several_signatures_may_match_while_a_secret_rolls() -> None:
    payload = event_payload("payment_intent.succeeded", intent("succeeded"))
    old = sign(payload, "whsec_old_secret")
    new = sign(payload, SECRET)
    header = f"{new},v1={old.split('v1=')[1]}"

    assert parse_event(payload, header, SECRET).type == "payment_intent.succeeded"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda p: sign(p, "whsec_someone_else"), id="other-secret"),
        pytest.param(lambda p: sign(p + b" ", SECRET), id="other-body"),
        pytest.param(lambda p: "", id="missing"),
        pytest.param(lambda p: "t=notanumber,v1=abc", id="garbled"),
        pytest.param(lambda p: sign(p, SECRET).replace("v1=", "v0="), id="other-scheme"),
    ],
)
def test_a_bad_or_missing_signature_raises(header: Any) -> None:
    payload = event_payload("payment_intent.succeeded", intent("succeeded"))

    with pytest.raises(WebhookSignatureError):
        parse_event(payload, header(payload), SECRET)


def test_a_stale_timestamp_raises_even_with_a_good_signature() -> None:
    payload = event_payload("payment_intent.succeeded", intent("succeeded"))
    header = sign(payload, SECRET, timestamp=int(time.time()) - 301)

    with pytest.raises(WebhookSignatureError, match="tolerance"):
        parse_event(payload, header, SECRET, tolerance_s=300)
    assert parse_event(payload, header, SECRET, tolerance_s=600).type


def test_signature_errors_are_collector_errors_and_never_echo_the_secret() -> None:
    payload = event_payload("payment_intent.succeeded", intent("succeeded"))
    with pytest.raises(CollectorError) as raised:
        parse_event(payload, sign(payload, "whsec_other"), SECRET)
    assert SECRET not in str(raised.value)


def test_an_empty_secret_is_a_configuration_error() -> None:
    payload = event_payload("payment_intent.succeeded", intent("succeeded"))
    with pytest.raises(GatewayConfigError):
        parse_event(payload, sign(payload, SECRET), "  ")


def test_a_signed_body_that_is_not_an_event_raises() -> None:
    payload = b'{"hello": "world"}'
    with pytest.raises(WebhookPayloadError):
        parse_event(payload, sign(payload, SECRET), SECRET)


def test_succeeded_and_processing_events_settle_the_attempt() -> None:
    assert settlement_of(verified("payment_intent.succeeded", intent("succeeded"))) == (
        "att-7",
        Succeeded(gateway_ref="pi_evt1"),
    )
    assert settlement_of(verified("payment_intent.processing", intent("processing"))) == (
        "att-7",
        Processing(gateway_ref="pi_evt1"),
    )


def test_a_failed_bank_debit_is_returned_with_its_nacha_code() -> None:
    failed = intent("requires_payment_method", error_code="insufficient_funds")

    assert settlement_of(verified("payment_intent.payment_failed", failed)) == (
        "att-7",
        Returned(
            code="R01",
            message="Returned by the bank.",
            gateway_ref="pi_evt1",
            gateway_code="insufficient_funds",
        ),
    )


def test_a_failed_card_payment_is_declined_as_the_charge_would_decline_it() -> None:
    # Applied only to an attempt still processing (a card Stripe left processing); for one
    # declined at once the charge already answered the same.
    failed = intent("requires_payment_method", types=("card",))
    failed["last_payment_error"] = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "stolen_card",
        "message": "Your card was declined.",
    }

    assert settlement_of(verified("payment_intent.payment_failed", failed)) == (
        "att-7",
        Declined(
            kind=DeclineKind.HARD,
            code="stolen_card",
            message="Your card was declined.",
            gateway_ref="pi_evt1",
        ),
    )


@pytest.mark.parametrize(
    "event_type",
    [
        "charge.failed",
        "customer.created",
        "payment_intent.created",
        "invoice.paid",
        "charge.dispute.created",  # disputes are read by dispute_of, never as a settlement
    ],
)
def test_events_the_engine_does_not_act_on_settle_nothing(event_type: str) -> None:
    assert settlement_of(verified(event_type, intent("succeeded"))) is None


def test_payment_intents_the_engine_did_not_create_settle_nothing() -> None:
    assert (
        settlement_of(verified("payment_intent.succeeded", intent("succeeded", key=None))) is None
    )


# -- disputes ----------------------------------------------------------------------------------

WAIT_S = 10


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[FakeStripe]:
    async with serve_fake_stripe() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeStripe) -> FakeStripe:
    served.reset()
    return served


@pytest.fixture
async def card(fake: FakeStripe) -> AsyncIterator[StripeCardGateway]:
    async with open_stripe_card(context(fake)) as gateway:
        yield gateway


@pytest.fixture
async def ach(fake: FakeStripe) -> AsyncIterator[StripeAchGateway]:
    async with open_stripe_ach(context(fake, "stripe_ach")) as gateway:
        yield gateway


def test_a_dispute_created_event_opens_a_dispute_and_other_dispute_events_do_not() -> None:
    obj = dispute({"id": "pi_1", "amount": 100, "currency": "usd", "latest_charge": "ch_1"})

    opened = dispute_of(verified("charge.dispute.created", obj))
    assert opened is not None
    assert (opened.id, opened.payment_intent_id, opened.charge, opened.reason) == (
        "dp_fake1",
        "pi_1",
        "ch_1",
        "debit_not_authorized",
    )
    assert not opened.is_card
    for later in ("charge.dispute.funds_withdrawn", "charge.dispute.closed"):
        assert dispute_of(verified(later, obj)) is None


def test_a_dispute_event_without_a_dispute_raises() -> None:
    with pytest.raises(WebhookPayloadError):
        dispute_of(verified("charge.dispute.created", {"object": "dispute"}))


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
@pytest.mark.parametrize("reason", ["debit_not_authorized", "unrecognized", "insufficient_funds"])
async def test_an_ach_dispute_is_an_unauthorized_return_of_the_attempt_keyed_in_stripe(
    ach: StripeAchGateway, fake: FakeStripe, reason: str
) -> None:
    assert isinstance(ach, PaymentIntentSource)
    with anyio.fail_after(WAIT_S):
        sent = await ach.charge(charge_request("ach-dp", "pm_ach_ok", kind=MethodKind.ACH))
        assert isinstance(sent, Processing)
        fake.settle(sent.gateway_ref)
        opened = dispute_of(
            verified(
                "charge.dispute.created", dispute(fake.intents[sent.gateway_ref], reason=reason)
            )
        )
        assert opened is not None
        found = await dispute_return(opened, ach)

    assert found == (
        "ach-dp",
        Returned(
            code="R10",
            message=f"Stripe dispute dp_fake1 ({reason})",
            gateway_ref=sent.gateway_ref,
            gateway_code=reason,
        ),
    )


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_a_card_dispute_is_not_a_return(card: StripeCardGateway, fake: FakeStripe) -> None:
    with anyio.fail_after(WAIT_S):
        taken = await card.charge(charge_request("card-dp", "pm_card_ok"))
        assert isinstance(taken, Succeeded)
        obj = fake.intents[taken.gateway_ref]
        named = dispute_of(
            verified(
                "charge.dispute.created", dispute(obj, reason="fraudulent", method_type="card")
            )
        )
        unnamed = dispute_of(verified("charge.dispute.created", dispute(obj, reason="fraudulent")))
        assert named is not None and unnamed is not None
        assert await dispute_return(named, card) is None
        assert not fake.retrieved  # Stripe said "card": not even asked
        # Without payment method details the PaymentIntent tells: a card, so no return.
        assert await dispute_return(unnamed, card) is None
        assert fake.retrieved == {taken.gateway_ref: 1}


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_a_dispute_of_a_payment_the_engine_did_not_make_is_not_a_return(
    ach: StripeAchGateway, fake: FakeStripe
) -> None:
    stranger = {"id": "pi_elsewhere", "amount": 100, "currency": "usd", "latest_charge": "ch_x"}
    opened = dispute_of(verified("charge.dispute.created", dispute(stranger)))
    assert opened is not None
    with anyio.fail_after(WAIT_S):
        assert await dispute_return(opened, ach) is None
