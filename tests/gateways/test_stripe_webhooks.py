from __future__ import annotations

import time
from typing import Any

import pytest

from collector.exceptions import CollectorError, GatewayConfigError
from collector.gateways.base import Processing, Returned, Succeeded
from collector.gateways.stripe_webhooks import (
    StripeEvent,
    WebhookPayloadError,
    WebhookSignatureError,
    parse_event,
    settlement_of,
)
from tests.gateways.fake_stripe import event_payload, sign

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


def test_a_failed_card_payment_is_not_a_settlement() -> None:
    failed = intent("requires_payment_method", types=("card",), error_code="card_declined")

    assert settlement_of(verified("payment_intent.payment_failed", failed)) is None


@pytest.mark.parametrize(
    "event_type", ["charge.failed", "customer.created", "payment_intent.created", "invoice.paid"]
)
def test_events_the_engine_does_not_act_on_settle_nothing(event_type: str) -> None:
    assert settlement_of(verified(event_type, intent("succeeded"))) is None


def test_payment_intents_the_engine_did_not_create_settle_nothing() -> None:
    assert (
        settlement_of(verified("payment_intent.succeeded", intent("succeeded", key=None))) is None
    )
