"""Card and bank numbers in what gateways answer never reach the database or the logs, and
neither do gateway tokens quoted by a chained exception: through real passes, on a real
database, with the gateway faked at its boundary (an adapter answering as an issuer would, or
the official Stripe SDK talking to the fake Stripe server)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg
import pytest

from collector.config import Settings
from collector.db.attention import open_attention
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    GatewayContext,
    Outcome,
    Processing,
    Returned,
    Settlement,
)
from collector.gateways.stripe import StripeCardGateway, open_stripe_card
from collector.jobs.collect import run_pass
from collector.jobs.settle import apply_by_key, settle
from tests.factories import attempts_of, make_lease
from tests.gateways.fake_stripe import API_KEY, FakeStripe, serve_fake_stripe
from tests.json_logs import captured_json_logs

pytestmark = [
    # The SDK's HTTPXClient hands httpx the encoded form as `data=`, which httpx deprecates.
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

TODAY = date(2026, 11, 26)
PAN = "4111-1111-1111-1111"
ISSUER_MESSAGE = f"Card {PAN} declined by issuer; refer to routing 091000019 account 12345678901"
MASKED_MESSAGE = "Card [redacted-pan] declined by issuer; refer to routing [redacted-bank]"
LEAKS = ("4111", "1111-1111", "12345678901")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    with captured_json_logs() as out:
        yield out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@dataclass
class TalkativeIssuer:
    """A card gateway whose issuer quotes the card and bank numbers back in its answers: a
    decline at once, or a payment left processing that is declined later."""

    name: str = "talkative_card"
    processing: bool = False
    keys: list[str] = field(default_factory=list)

    async def charge(self, request: ChargeRequest) -> Outcome:
        self.keys.append(request.idempotency_key)
        if self.processing:
            return Processing(gateway_ref=f"ref-{request.idempotency_key}")
        return Declined(kind=DeclineKind.HARD, code="card_declined", message=ISSUER_MESSAGE)

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        return None

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        return Declined(
            kind=DeclineKind.SOFT,
            code=f"declined_{PAN}",
            message=ISSUER_MESSAGE,
            gateway_ref=f"ref-{idempotency_key}",
        )


async def lease_on(pool: asyncpg.Pool, gateway: str, token: str) -> int:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
        await conn.execute(
            "UPDATE payment_methods SET gateway = $2, token = $3 WHERE id = $1",
            lease.method_id,
            gateway,
            token,
        )
    return lease.installment_ids[0]


async def test_a_decline_quoting_card_and_bank_numbers_is_stored_and_logged_masked(
    pool: asyncpg.Pool, settings: Settings, json_logs: io.StringIO
) -> None:
    issuer = TalkativeIssuer()
    installment_id = await lease_on(pool, issuer.name, "tok_talkative")

    result = await run_pass(pool, {issuer.name: issuer}, settings, as_of=TODAY)

    assert (result.counts.due, result.counts.declined) == (1, 1)
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, installment_id)
        rows = await conn.fetch("SELECT * FROM charge_attempts")
    stored = json.dumps([dict(row) for row in rows], default=str)
    assert attempt["outcome_message"] == MASKED_MESSAGE
    assert not any(leak in stored for leak in LEAKS)
    logged = json_logs.getvalue()
    assert "charge_failed" in logged
    assert not any(leak in logged for leak in LEAKS)


async def test_a_later_decline_quoting_a_card_number_is_stored_masked(
    pool: asyncpg.Pool, settings: Settings, json_logs: io.StringIO
) -> None:
    issuer = TalkativeIssuer(processing=True)
    installment_id = await lease_on(pool, issuer.name, "tok_talkative")
    await run_pass(pool, {issuer.name: issuer}, settings, as_of=TODAY)

    counts = await settle(
        pool,
        {issuer.name: issuer},
        as_of=TODAY,
        retry_days=settings.soft_retry_days,
        batch_size=10,
        concurrency=2,
    )

    assert counts.declined == 1
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, installment_id)
    assert attempt["status"] == "declined"
    assert attempt["outcome_message"] == MASKED_MESSAGE
    assert attempt["outcome_code"] == "declined_[redacted-pan]"
    assert not any(leak in json_logs.getvalue() for leak in LEAKS)


@pytest.mark.ledger_left_dirty("the fact for no attempt is set aside for an operator, on purpose")
async def test_a_fact_set_aside_for_an_operator_keeps_no_number(
    pool: asyncpg.Pool, settings: Settings, json_logs: io.StringIO
) -> None:
    # A return file or webhook naming a key the ledger never made: the key is kept for the
    # operator, masked if it is a card number.
    await apply_by_key(
        pool,
        f"key {PAN}",
        Returned(code="R01", message=ISSUER_MESSAGE),
        as_of=TODAY,
        retry_days=settings.soft_retry_days,
        source="return_file",
    )

    [row] = await open_attention(pool)
    assert (row.subject, row.reason) == ("settlement", "unknown_attempt")
    assert row.subject_id == "key [redacted-pan]"
    assert not any(leak in json.dumps(row.detail) for leak in LEAKS)
    assert not any(leak in json_logs.getvalue() for leak in LEAKS)
    assert "set_aside" in json_logs.getvalue()


# -- A chained exception from the Stripe SDK ----------------------------------------------------


@pytest.fixture
async def stripe_card(
    database_url: str,
) -> AsyncIterator[tuple[FakeStripe, StripeCardGateway]]:
    async with serve_fake_stripe() as fake:
        context = GatewayContext(
            name="stripe_card",
            database_url=database_url,
            options={"api_key": API_KEY, "base_url": fake.base_url, "max_network_retries": "0"},
        )
        async with open_stripe_card(context) as gateway:
            yield fake, gateway


async def test_tokens_quoted_by_a_chained_stripe_error_never_reach_the_json_log(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe_card: tuple[FakeStripe, StripeCardGateway],
    json_logs: io.StringIO,
) -> None:
    # Stripe refuses the request itself (400, not a decline) and quotes the payment method:
    # the adapter raises GatewayError from the SDK's InvalidRequestError, and the engine logs
    # the whole chain, traceback and all, before leaving the attempt in doubt.
    fake, gateway = stripe_card
    token = "cus_Leaky42Customer:pm_leaky4242secret"
    installment_id = await lease_on(pool, "stripe_card", token)

    result = await run_pass(pool, {"stripe_card": gateway}, settings, as_of=TODAY)

    assert result.counts.in_doubt == 1
    assert fake.requests_per_key  # the request did go out, through the SDK and httpx
    [error] = [line for line in lines(json_logs) if line["event"] == "gateway_adapter_error"]
    assert "InvalidRequestError" in error["exception"]
    assert "direct cause" in error["exception"]
    assert "pm_[redacted]" in error["exception"]
    logged = json_logs.getvalue()
    assert "pm_leaky4242secret" not in logged and "Leaky42Customer" not in logged
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, installment_id)
    assert attempt["status"] == "in_doubt"
    assert "leaky" not in json.dumps(dict(attempt), default=str)
