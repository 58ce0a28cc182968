from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta

import anyio
import pytest
import stripe

from collector.domain import MethodKind
from collector.exceptions import GatewayConfigError, GatewayError
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    Gateway,
    GatewayContext,
    InDoubt,
    Processing,
    Returned,
    SettlementSource,
    Succeeded,
)
from collector.gateways.stripe import (
    ATTEMPT_KEY,
    UNMAPPED_RETURN_CODE,
    StripeAchGateway,
    StripeCardGateway,
    open_stripe_ach,
    open_stripe_card,
    parse_token,
    search_query,
)
from tests.gateways.fake_stripe import API_KEY, FakeStripe, serve_fake_stripe

pytestmark = [
    pytest.mark.anyio,
    # The SDK's HTTPXClient hands httpx the encoded form as `data=`, which httpx deprecates.
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

WAIT_S = 10
AS_OF = date(2026, 3, 2)


def context(fake: FakeStripe, name: str = "stripe_card", **options: str) -> GatewayContext:
    return GatewayContext(
        name=name,
        database_url="postgresql://unused",
        options={
            "api_key": API_KEY,
            "base_url": fake.base_url,
            "max_network_retries": "0",
            "timeout_s": "2",
            **options,
        },
    )


def charge_request(
    key: str, method: str, *, amount_cents: int = 12_500, kind: MethodKind = MethodKind.CARD
) -> ChargeRequest:
    return ChargeRequest(
        customer_id=1,
        idempotency_key=key,
        amount_cents=amount_cents,
        token=f"cus_fake42:{method}",
        method_kind=kind,
        description="Lease 7 installment 3",
        metadata={"collector_attempt_key": key, "lease_id": "7", "installment_id": "3"},
    )


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[FakeStripe]:
    async with serve_fake_stripe() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeStripe) -> FakeStripe:
    """The module's fake Stripe, emptied for this test."""
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


@asynccontextmanager
async def direct_card(fake: FakeStripe, **kwargs: float) -> AsyncIterator[StripeCardGateway]:
    """A card gateway built by hand around an SDK client, as the factory does."""
    http_client = stripe.HTTPXClient(timeout=2)
    client = stripe.StripeClient(
        API_KEY,
        http_client=http_client,
        base_addresses={"api": fake.base_url},
        max_network_retries=0,
    )
    try:
        yield StripeCardGateway("stripe_card", client, **kwargs)  # type: ignore[arg-type]
    finally:
        await http_client.close_async()


# -- charges ----------------------------------------------------------------------------------


async def test_adapters_meet_the_gateway_protocols(
    card: StripeCardGateway, ach: StripeAchGateway
) -> None:
    assert isinstance(card, Gateway)
    assert isinstance(ach, Gateway)
    assert isinstance(ach, SettlementSource)
    assert isinstance(card, SettlementSource)
    assert (card.name, ach.name) == ("stripe_card", "stripe_ach")


async def test_card_ok_succeeds_off_session_with_the_key_in_metadata(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-1", "pm_card_ok"))

    assert isinstance(outcome, Succeeded)
    intent = fake.intents[outcome.gateway_ref]
    assert intent["amount"] == 12_500
    assert intent["currency"] == "usd"
    assert intent["customer"] == "cus_fake42"
    assert intent["payment_method"] == "pm_card_ok"
    assert intent["payment_method_types"] == ["card"]
    assert intent["description"] == "Lease 7 installment 3"
    assert intent["metadata"] == {
        ATTEMPT_KEY: "att-1",
        "lease_id": "7",
        "installment_id": "3",
    }
    assert fake.created_per_key == {"att-1": 1}


@pytest.mark.parametrize(
    ("method", "kind", "code"),
    [
        ("pm_card_insufficient_funds", DeclineKind.SOFT, "insufficient_funds"),
        ("pm_card_stolen", DeclineKind.HARD, "stolen_card"),
        ("pm_card_expired", DeclineKind.HARD, "expired_card"),
        ("pm_card_auth_required", DeclineKind.HARD, "authentication_required"),
        ("pm_card_unknown_decline", DeclineKind.SOFT, "brand_new_decline_code"),
    ],
)
async def test_card_declines_are_values_with_their_kind_and_stripe_code(
    card: StripeCardGateway, fake: FakeStripe, method: str, kind: DeclineKind, code: str
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-d", method))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (kind, code)
    assert outcome.gateway_ref in fake.intents
    assert outcome.message


async def test_network_advice_is_kept_on_the_decline(
    card: StripeCardGateway,
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-adv", "pm_card_do_not_try_again"))

    assert isinstance(outcome, Declined)
    assert outcome.code == "generic_decline"
    assert outcome.network_advice == "do_not_try_again"
    assert outcome.message == (
        "advice_code=do_not_try_again; network_advice_code=03; network_decline_code=05; "
        "Your card was declined."
    )


async def test_an_intent_left_waiting_for_the_customer_is_authentication_required(
    card: StripeCardGateway,
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-3ds", "pm_card_requires_action"))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "authentication_required")


@pytest.mark.parametrize(
    "token", ["pm_card_ok", "cus_1", "cus_1:pm_2:extra", "cus_1 :pm_2", "", "tok_visa:pm_x"]
)
async def test_a_malformed_token_is_declined_hard_without_calling_stripe(
    card: StripeCardGateway, fake: FakeStripe, token: str
) -> None:
    request = ChargeRequest(
        customer_id=1,
        idempotency_key="att-tok",
        amount_cents=100,
        token=token,
        method_kind=MethodKind.CARD,
    )

    outcome = await card.charge(request)

    assert outcome == Declined(
        kind=DeclineKind.HARD,
        code="invalid_token",
        message="A Stripe payment method token must read 'cus_...:pm_...'.",
    )
    assert not fake.requests_per_key


def test_tokens_name_the_customer_and_the_payment_method() -> None:
    assert parse_token("cus_Abc123:pm_1Xyz") == ("cus_Abc123", "pm_1Xyz")
    assert parse_token("cus_Abc123:pm_card_visa") == ("cus_Abc123", "pm_card_visa")
    assert parse_token("pm_1Xyz:cus_Abc123") is None


async def test_a_payment_method_stripe_no_longer_has_is_declined_hard(
    card: StripeCardGateway,
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-gone", "pm_card_missing"))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "resource_missing")


async def test_same_key_twice_makes_one_payment_intent(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        first = await card.charge(charge_request("att-twice", "pm_card_ok"))
        again = await card.charge(charge_request("att-twice", "pm_card_ok"))
        declined = await card.charge(charge_request("att-twice-d", "pm_card_stolen"))
        declined_again = await card.charge(charge_request("att-twice-d", "pm_card_stolen"))

    assert isinstance(first, Succeeded)
    assert again == first
    assert declined_again == declined
    assert fake.requests_per_key == {"att-twice": 2, "att-twice-d": 2}
    assert fake.created_per_key == {"att-twice": 1, "att-twice-d": 1}


async def test_same_key_with_other_parameters_is_in_doubt_not_a_new_charge(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        await card.charge(charge_request("att-mismatch", "pm_card_ok"))
        outcome = await card.charge(
            charge_request("att-mismatch", "pm_card_ok", amount_cents=99_999)
        )

    assert outcome == InDoubt(reason="idempotency_conflict")
    assert fake.created_per_key == {"att-mismatch": 1}


# -- rate limits, timeouts, server errors ----------------------------------------------------


async def test_rate_limited_once_is_retried_and_succeeds(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-429", "pm_rate_limited_once"))

    assert isinstance(outcome, Succeeded)
    assert fake.requests_per_key == {"att-429": 2}
    assert fake.created_per_key == {"att-429": 1}


async def test_rate_limited_throughout_backs_off_a_bounded_number_of_times_then_is_in_doubt(
    fake: FakeStripe,
) -> None:
    async with direct_card(fake, max_rate_retries=3, rate_backoff_base_s=0.01) as card:
        with anyio.fail_after(WAIT_S):
            outcome = await card.charge(charge_request("att-429s", "pm_rate_limited"))

    assert outcome == InDoubt(reason="rate_limited")
    assert fake.requests_per_key == {"att-429s": 4}
    assert not fake.created_per_key


async def test_a_retry_after_beyond_the_budget_is_not_waited_for(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    started = time.monotonic()
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-429l", "pm_rate_limited_long"))

    assert outcome == InDoubt(reason="rate_limited")
    assert fake.requests_per_key == {"att-429l": 1}
    assert time.monotonic() - started < 1


async def test_timeout_is_in_doubt_and_lookup_finds_the_charge(fake: FakeStripe) -> None:
    async with open_stripe_card(context(fake, timeout_s="0.3")) as card:
        with anyio.fail_after(WAIT_S):
            outcome = await card.charge(charge_request("att-slow", "pm_slow"))
            found = await card.lookup("att-slow")

    assert outcome == InDoubt(reason="timeout")
    (intent_id,) = fake.intents
    assert found == Succeeded(gateway_ref=intent_id)
    assert fake.created_per_key == {"att-slow": 1}


async def test_sdk_resend_while_the_first_request_runs_is_in_doubt_and_charges_once(
    fake: FakeStripe,
) -> None:
    options = {"timeout_s": "0.3", "max_network_retries": "1"}
    async with open_stripe_card(context(fake, **options)) as card:
        with anyio.fail_after(WAIT_S):
            outcome = await card.charge(charge_request("att-409", "pm_slow"))
            found = await card.lookup("att-409")

    # The SDK re-sent under the same key; Stripe answers 409 while the first is in flight.
    assert outcome == InDoubt(reason="idempotency_in_progress")
    assert isinstance(found, Succeeded)
    assert fake.requests_per_key == {"att-409": 2}
    assert fake.created_per_key == {"att-409": 1}


async def test_server_error_is_in_doubt(card: StripeCardGateway, fake: FakeStripe) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("att-500", "pm_5xx"))
        found = await card.lookup("att-500")

    assert outcome == InDoubt(reason="server_error")
    assert found is None
    assert not fake.created_per_key


async def test_unreachable_stripe_is_in_doubt(fake: FakeStripe) -> None:
    # Nothing listens on port 1 of this host: the connection is refused at once.
    ctx = context(fake, base_url="http://127.0.0.1:1")
    async with open_stripe_card(ctx) as card:
        with anyio.fail_after(WAIT_S):
            outcome = await card.charge(charge_request("att-down", "pm_card_ok"))
            found = await card.lookup("att-down")

    assert outcome == InDoubt(reason="connection_error")
    assert found == InDoubt(reason="connection_error")


async def test_a_wrong_api_key_is_a_gateway_error_not_an_outcome(fake: FakeStripe) -> None:
    ctx = context(fake, api_key="sk_test_wrong")
    async with open_stripe_card(ctx) as card:
        with anyio.fail_after(WAIT_S), pytest.raises(GatewayError) as raised:
            await card.charge(charge_request("att-key", "pm_card_ok"))

    assert "AuthenticationError" in str(raised.value)
    assert "sk_test_wrong" not in str(raised.value)
    assert not fake.created_per_key


# -- lookup ------------------------------------------------------------------------------------


async def test_lookup_answers_what_the_charge_answered(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        charged = await card.charge(charge_request("att-l1", "pm_card_ok"))
        declined = await card.charge(charge_request("att-l2", "pm_card_insufficient_funds"))
        assert await card.lookup("att-l1") == charged
        assert await card.lookup("att-l2") == declined
        assert await card.lookup("att-never") is None


async def test_lookup_escapes_quotes_in_the_key(card: StripeCardGateway) -> None:
    key = "it's-a \\ key"
    assert search_query(key) == "metadata['collector_attempt_key']:'it\\'s-a \\\\ key'"
    with anyio.fail_after(WAIT_S):
        charged = await card.charge(charge_request(key, "pm_card_ok"))
        assert await card.lookup(key) == charged


async def test_lookup_cannot_see_a_charge_until_search_catches_up(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    fake.search_lagging = True
    with anyio.fail_after(WAIT_S):
        charged = await card.charge(charge_request("att-lag", "pm_card_ok"))
        # Stripe's search is eventually consistent: None here does not mean "not taken".
        assert await card.lookup("att-lag") is None
        fake.catch_up_search()
        assert await card.lookup("att-lag") == charged
    assert card.lookup_lag.total_seconds() >= 60


# -- ACH ---------------------------------------------------------------------------------------


async def test_ach_debit_is_processing_then_settles(
    ach: StripeAchGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await ach.charge(charge_request("ach-1", "pm_ach_ok", kind=MethodKind.ACH))
        assert isinstance(outcome, Processing)
        assert fake.intents[outcome.gateway_ref]["payment_method_types"] == ["us_bank_account"]
        assert await ach.settlement("ach-1", as_of=AS_OF) == Processing(
            gateway_ref=outcome.gateway_ref
        )
        fake.settle(outcome.gateway_ref)
        assert await ach.settlement("ach-1", as_of=AS_OF) == Succeeded(
            gateway_ref=outcome.gateway_ref
        )


@pytest.mark.parametrize(
    ("stripe_code", "nacha_code"),
    [
        ("insufficient_funds", "R01"),
        ("account_closed", "R02"),
        ("no_account", "R03"),
        ("invalid_account_number", "R04"),
        ("debit_not_authorized", "R10"),
        ("bank_account_restricted", "R20"),
        ("a_code_stripe_adds_later", UNMAPPED_RETURN_CODE),
    ],
)
async def test_ach_failure_after_processing_is_returned_with_its_nacha_code(
    ach: StripeAchGateway, fake: FakeStripe, stripe_code: str, nacha_code: str
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await ach.charge(charge_request("ach-r", "pm_ach_ok", kind=MethodKind.ACH))
        assert isinstance(outcome, Processing)
        fake.fail(outcome.gateway_ref, stripe_code)
        settled = await ach.settlement("ach-r", as_of=AS_OF)

    assert settled == Returned(
        code=nacha_code,
        message="The debit was returned.",
        gateway_ref=outcome.gateway_ref,
        gateway_code=stripe_code,
    )


async def test_ach_debit_refused_at_submission_is_declined_hard(ach: StripeAchGateway) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await ach.charge(charge_request("ach-b", "pm_ach_blocked", kind=MethodKind.ACH))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "bank_account_unusable")


async def test_ach_settlement_of_an_unknown_key_is_none(ach: StripeAchGateway) -> None:
    with anyio.fail_after(WAIT_S):
        assert await ach.settlement("ach-never", as_of=AS_OF) is None


async def test_lookup_of_a_debit_returned_after_processing_is_processing_and_settles_returned(
    ach: StripeAchGateway, fake: FakeStripe
) -> None:
    # The charge's answer was lost (in doubt); by the time the lookup runs the bank returned
    # the debit. Both this and a refusal leave requires_payment_method with the error.
    with anyio.fail_after(WAIT_S):
        sent = await ach.charge(charge_request("ach-lost", "pm_ach_ok", kind=MethodKind.ACH))
        assert isinstance(sent, Processing)
        fake.fail(sent.gateway_ref, "insufficient_funds")
        found = await ach.lookup("ach-lost")
        settled = await ach.settlement("ach-lost", as_of=AS_OF)

    assert found == Processing(gateway_ref=sent.gateway_ref)
    assert settled == Returned(
        code="R01",
        message="The debit was returned.",
        gateway_ref=sent.gateway_ref,
        gateway_code="insufficient_funds",
    )
    assert fake.retrieved[fake.intents[sent.gateway_ref]["latest_charge"]] == 1


async def test_lookup_of_a_debit_refused_at_submission_stays_declined(
    ach: StripeAchGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        refused = await ach.charge(
            charge_request("ach-refused", "pm_ach_blocked", kind=MethodKind.ACH)
        )
        found = await ach.lookup("ach-refused")

    assert isinstance(refused, Declined)
    assert found == refused
    assert (refused.kind, refused.code) == (DeclineKind.HARD, "bank_account_unusable")


async def test_lookup_of_a_debit_stripe_cannot_read_the_charge_of_is_in_doubt(
    ach: StripeAchGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        sent = await ach.charge(charge_request("ach-500", "pm_ach_ok", kind=MethodKind.ACH))
        assert isinstance(sent, Processing)
        fake.fail(sent.gateway_ref, "account_closed")
        fake.failing_reads = True
        found = await ach.lookup("ach-500")

    # Never a decline for want of an answer: a return counted as a refusal loses its R code.
    assert found == InDoubt(reason="server_error")


# -- cards left processing ---------------------------------------------------------------------


async def test_a_card_left_processing_is_processing_until_it_succeeds(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("card-p", "pm_card_processing"))
        assert isinstance(outcome, Processing)
        assert await card.settlement("card-p", as_of=AS_OF) == outcome
        fake.settle(outcome.gateway_ref)
        settled = await card.settlement("card-p", as_of=AS_OF)

    assert settled == Succeeded(gateway_ref=outcome.gateway_ref)


@pytest.mark.parametrize(
    ("decline_code", "advice", "kind"),
    [
        ("insufficient_funds", None, DeclineKind.SOFT),
        ("stolen_card", None, DeclineKind.HARD),
        ("generic_decline", "do_not_try_again", DeclineKind.SOFT),
    ],
)
async def test_a_card_left_processing_that_fails_is_declined_as_the_charge_would_be(
    card: StripeCardGateway,
    fake: FakeStripe,
    decline_code: str,
    advice: str | None,
    kind: DeclineKind,
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("card-pd", "pm_card_processing"))
        assert isinstance(outcome, Processing)
        fake.decline(outcome.gateway_ref, decline_code, advice_code=advice)
        settled = await card.settlement("card-pd", as_of=AS_OF)
        found = await card.lookup("card-pd")

    assert isinstance(settled, Declined)
    assert (settled.kind, settled.code, settled.network_advice) == (kind, decline_code, advice)
    assert settled.gateway_ref == outcome.gateway_ref
    assert found == settled


async def test_a_card_left_processing_then_canceled_is_declined_hard(
    card: StripeCardGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        outcome = await card.charge(charge_request("card-pc", "pm_card_processing"))
        assert isinstance(outcome, Processing)
        fake.cancel(outcome.gateway_ref)
        settled = await card.settlement("card-pc", as_of=AS_OF)

    assert settled == Declined(
        kind=DeclineKind.HARD, code="canceled", message="automatic", gateway_ref=outcome.gateway_ref
    )


async def test_card_settlement_of_an_unknown_key_is_none(card: StripeCardGateway) -> None:
    with anyio.fail_after(WAIT_S):
        assert await card.settlement("card-never", as_of=AS_OF) is None


async def test_cards_are_polled_within_minutes_whatever_the_ach_setting(fake: FakeStripe) -> None:
    # The CLI passes the ACH poll age (settlement_poll_after_s) to both adapters.
    async with (
        open_stripe_card(context(fake, settlement_poll_after_s="86400")) as card,
        open_stripe_ach(context(fake, "stripe_ach", settlement_poll_after_s="3600")) as ach,
        open_stripe_card(context(fake, card_settlement_poll_after_s="60")) as tuned,
    ):
        assert card.settlement_poll_after == timedelta(minutes=10)
        assert ach.settlement_poll_after == timedelta(hours=1)
        assert tuned.settlement_poll_after == timedelta(minutes=1)


async def test_a_payment_intent_is_read_by_id_and_none_when_stripe_has_none(
    ach: StripeAchGateway, fake: FakeStripe
) -> None:
    with anyio.fail_after(WAIT_S):
        sent = await ach.charge(charge_request("ach-id", "pm_ach_ok", kind=MethodKind.ACH))
        assert isinstance(sent, Processing)
        intent = await ach.payment_intent(sent.gateway_ref)
        missing = await ach.payment_intent("pi_nobody")
        fake.failing_reads = True
        with pytest.raises(GatewayError):
            await ach.payment_intent(sent.gateway_ref)

    assert intent is not None
    assert (intent.id, intent.metadata[ATTEMPT_KEY], intent.is_bank_debit) == (
        sent.gateway_ref,
        "ach-id",
        True,
    )
    assert missing is None


# -- configuration -----------------------------------------------------------------------------


async def test_a_missing_api_key_names_the_setting(fake: FakeStripe) -> None:
    ctx = GatewayContext(name="stripe_card", database_url="", options={"base_url": fake.base_url})
    with pytest.raises(GatewayConfigError, match="COLLECTOR_STRIPE_API_KEY"):
        async with open_stripe_card(ctx):
            pytest.fail("a gateway without an API key must not open")


@pytest.mark.parametrize(
    "options",
    [
        {"max_rate_retries": "many"},
        {"max_network_retries": "-1"},
        {"timeout_s": "0"},
        {"base_url": "api.stripe.com"},
    ],
)
async def test_bad_options_are_config_errors(fake: FakeStripe, options: dict[str, str]) -> None:
    with pytest.raises(GatewayConfigError) as raised:
        async with open_stripe_ach(context(fake, "stripe_ach", **options)):
            pytest.fail("a misconfigured gateway must not open")
    assert API_KEY not in str(raised.value)


async def test_the_same_card_attached_twice_has_one_fingerprint(
    card: StripeCardGateway, ach: StripeAchGateway
) -> None:
    first = await card.fingerprint("cus_fake42:pm_card_visa_same_1")
    again = await card.fingerprint("cus_fake42:pm_card_visa_same_2")
    other = await card.fingerprint("cus_fake42:pm_card_mastercard")
    assert first is not None and first == again and first.startswith("stripe:card:")
    assert other not in (None, first)
    bank = await ach.fingerprint("cus_fake42:pm_bank_same_1")
    assert bank is not None and bank.startswith("stripe:us_bank_account:")


async def test_a_token_stripe_does_not_know_has_no_fingerprint(card: StripeCardGateway) -> None:
    assert await card.fingerprint("cus_fake42:pm_card_missing") is None
    assert await card.fingerprint("not-a-stripe-token") is None


async def test_a_verified_bank_account_needs_no_prenote_unless_stripe_blocked_it(
    card: StripeCardGateway, ach: StripeAchGateway
) -> None:
    assert await ach.account_validated("cus_fake42:pm_bank_verified") is True
    assert await ach.account_validated("cus_fake42:pm_bank_blocked") is False
    assert await ach.account_validated("cus_fake42:pm_card_missing") is False
    assert await ach.account_validated("cus_fake42:pm_card_visa") is False  # no bank account
    assert await ach.account_validated("not-a-stripe-token") is False
