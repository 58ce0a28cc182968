from __future__ import annotations

import io
import json

import pytest
import structlog

from collector.config import load_settings
from collector.exceptions import ConfigError
from collector.logs import REDACTED, configure_logging, redact_secrets, scrub


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


def test_configured_logger_writes_json_without_secrets() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        structlog.get_logger().info("charge_failed", token="sandbox_card_stolen", amount_cents=5)
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line["event"] == "charge_failed" and line["token"] == REDACTED
    assert line["amount_cents"] == 5
