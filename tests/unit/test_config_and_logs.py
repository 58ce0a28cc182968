from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from collector.config import load_settings
from collector.db.pool import describe
from collector.exceptions import ConfigError, GatewayError
from collector.logs import REDACTED, StdlibHandler, configure_logging, redact_secrets, scrub
from tests.json_logs import captured_json_logs


def test_defaults_are_finite_and_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COLLECTOR_CONCURRENCY", "COLLECTOR_DATABASE_URL", "COLLECTOR_GATEWAYS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url is None
    assert 0 < settings.concurrency <= 10_000
    assert settings.gateways == ["sandbox_card", "sandbox_ach"]
    assert settings.soft_retry_days == [3, 5, 7]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COLLECTOR_CONCURRENCY", "0"),
        ("COLLECTOR_CONCURRENCY", "many"),
        ("COLLECTOR_BATCH_SIZE", "-5"),
        ("COLLECTOR_TIMEZONE", "Nowhere/City"),
        ("COLLECTOR_DATABASE_URL", "mysql://x@y/z"),
        ("COLLECTOR_RATE_LIMITS", '{"sandbox_card": -1}'),
        ("COLLECTOR_RATE_LIMITS", "not json"),
        ("COLLECTOR_SOFT_RETRY_DAYS", "3,0"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_lists_and_maps_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_GATEWAYS", "sandbox_card, stripe_card")
    monkeypatch.setenv("COLLECTOR_RATE_LIMITS", '{"stripe_card": 25}')
    monkeypatch.setenv("COLLECTOR_SOFT_RETRY_DAYS", "2,4")
    settings = load_settings()
    assert settings.gateways == ["sandbox_card", "stripe_card"]
    assert settings.rate_limits == {"stripe_card": 25.0}
    assert settings.soft_retry_days == [2, 4]


def test_database_url_is_secret_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_DATABASE_URL", "postgresql://u:hunter2@db/x")
    assert "hunter2" not in repr(load_settings())


def test_redaction_masks_secret_keys_and_secret_looking_values() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "token": "sandbox_card_ok",
            "gateway_token": "pm_123",
            "api_key": "sk_live_abc",
            "idempotency_key": "collector-inst-1-1",
            "note": "card 4242 4242 4242 4242 and sk_test_abcdef and postgresql://u:pw@h/db",
        },
    )
    assert event["token"] == event["gateway_token"] == event["api_key"] == REDACTED
    assert event["idempotency_key"] == "collector-inst-1-1"
    assert "4242 4242" not in event["note"]
    assert "sk_test_abcdef" not in event["note"]
    assert ":pw@" not in event["note"]


def test_scrub_leaves_ordinary_numbers_alone() -> None:
    assert scrub("installment 12345 of lease 678") == "installment 12345 of lease 678"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    with captured_json_logs() as out:
        yield out


def test_configured_logger_writes_json_without_secrets(json_logs: io.StringIO) -> None:
    structlog.get_logger().info("charge_failed", token="sandbox_card_stolen", amount_cents=5)

    line = json.loads(json_logs.getvalue())
    assert line["event"] == "charge_failed" and line["token"] == REDACTED
    assert line["amount_cents"] == 5
    assert line["timestamp"].endswith("Z")  # stamped after redaction, whole


@pytest.mark.parametrize(
    "number",
    [
        "4111.1111.1111.1111",
        "4111_1111_1111_1111",
        "4111\u200b1111\u200b1111\u200b1111",
        "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
        "4111a1111b1111c1111",
        "091000019:12345678901",
    ],
)
def test_redaction_masks_numbers_however_typed_and_however_deep(number: str) -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "note": f"card {number} declined",
            "nested": {"items": [number, ("ok", number)], number: "a key"},
            "as_int": 4111111111111111,
        },
    )

    text = json.dumps(event)
    assert "1111" not in text and "12345678901" not in text
    assert event["note"].startswith("card [redacted-")
    assert event["as_int"] == "[redacted-pan]"


def _raise_chain() -> None:
    """Raise what an adapter raises: our error, caused by the SDK's, which quotes tokens."""
    token = "cus_Leaky42:pm_leaky42"  # noqa: F841  (a local a traceback may show)
    card = "4242 4242 4242 4242"  # noqa: F841
    try:
        try:
            raise ConnectionError("peer reset while sending pm_leaky42 for card 4242424242424242")
        except ConnectionError as exc:
            raise ValueError("Request req_1: No such customer: 'cus_Leaky42'") from exc
    except ValueError as exc:
        raise GatewayError("Stripe refused to create the PaymentIntent") from exc


LEAKS = ("Leaky42", "leaky42", "4242")


def test_an_exception_chain_is_formatted_then_masked_cause_by_cause() -> None:
    try:
        _raise_chain()
    except GatewayError:
        # exc_info left for the processor itself: it formats before masking.
        event = redact_secrets(None, "error", {"event": "gateway_adapter_error", "exc_info": True})

    exception = event["exception"]
    assert "The above exception was the direct cause" in exception
    assert "No such customer: 'cus_[redacted]'" in exception
    assert "pm_[redacted]" in exception and "[redacted-pan]" in exception
    assert not any(leak in exception for leak in LEAKS)


def test_an_exception_given_as_a_value_is_masked_with_its_causes() -> None:
    try:
        _raise_chain()
    except GatewayError as exc:
        event = redact_secrets(None, "error", {"event": "x", "error": exc, "other": object()})

    assert event["error"].startswith("GatewayError: Stripe refused")
    assert "cus_[redacted]" in event["error"] and "ConnectionError" in event["error"]
    assert not any(leak in event["error"] for leak in LEAKS)
    assert isinstance(event["other"], str)


def test_traceback_locals_are_masked() -> None:
    render = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=True)
    )
    try:
        _raise_chain()
    except GatewayError:
        event: Any = render(None, "error", {"event": "x", "exc_info": True})
    assert "Leaky42" in json.dumps(event, default=str)  # the locals are there to be masked

    masked = json.dumps(redact_secrets(None, "error", event), default=str)

    assert not any(leak in masked for leak in LEAKS)


def test_standard_library_records_are_rendered_and_masked(json_logs: io.StringIO) -> None:
    # As asyncio logs a task's exception (and uvicorn, which the daemon leaves unconfigured).
    try:
        _raise_chain()
    except GatewayError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    logging.getLogger("httpx").info("HTTP Request: GET /v1/payment_methods/pm_leaky42")  # below

    [line] = [json.loads(text) for text in json_logs.getvalue().splitlines()]
    assert (line["event"], line["logger"], line["level"]) == (
        "Task exception was never retrieved",
        "asyncio",
        "error",
    )
    assert "GatewayError" in line["exception"]
    assert not any(leak in json_logs.getvalue() for leak in LEAKS)


def test_configuring_again_replaces_the_standard_library_handler(json_logs: io.StringIO) -> None:
    configure_logging(json=True, stream=json_logs)

    ours = [h for h in logging.getLogger().handlers if isinstance(h, StdlibHandler)]
    assert len(ours) == 1


def test_a_cause_the_cli_prints_masks_what_it_quotes() -> None:
    exc = ValueError("No such customer: 'cus_Leaky42' for 4242 4242 4242 4242\nsecond line")

    assert describe(exc) == "ValueError: No such customer: 'cus_[redacted]' for [redacted-pan]"
