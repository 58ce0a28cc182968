"""Each setting is checked at load for what it will be used for: a value that would break a
pass later stops the command at start, with one line naming the setting."""

from __future__ import annotations

import pytest

from collector.config import load_settings
from collector.exceptions import ConfigError


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("COLLECTOR_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("env", "named", "says"),
    [
        # Gateways: at least one, each registered, none twice.
        ({"COLLECTOR_GATEWAYS": ""}, "COLLECTOR_GATEWAYS", "at least one gateway"),
        ({"COLLECTOR_GATEWAYS": " , "}, "COLLECTOR_GATEWAYS", "at least one gateway"),
        ({"COLLECTOR_GATEWAYS": "sandbox_crad"}, "COLLECTOR_GATEWAYS", "'sandbox_crad'"),
        ({"COLLECTOR_GATEWAYS": "nacha,nacha"}, "COLLECTOR_GATEWAYS", "listed twice"),
        # Rate limits: positive, finite, numbers, and only for gateways that are enabled.
        ({"COLLECTOR_RATE_LIMITS": '{"sandbox_card": 0}'}, "COLLECTOR_RATE_LIMITS", "sandbox_card"),
        ({"COLLECTOR_RATE_LIMITS": '{"sandbox_card": -2}'}, "COLLECTOR_RATE_LIMITS", "greater"),
        ({"COLLECTOR_RATE_LIMITS": '{"sandbox_card": NaN}'}, "COLLECTOR_RATE_LIMITS", "finite"),
        (
            {"COLLECTOR_RATE_LIMITS": '{"sandbox_card": Infinity}'},
            "COLLECTOR_RATE_LIMITS",
            "finite",
        ),
        ({"COLLECTOR_RATE_LIMITS": '{"sandbox_card": "x"}'}, "COLLECTOR_RATE_LIMITS", "number"),
        ({"COLLECTOR_RATE_LIMITS": "[5]"}, "COLLECTOR_RATE_LIMITS", "dictionary"),
        (
            {"COLLECTOR_RATE_LIMITS": '{"sandbox_crad": 5}'},
            "COLLECTOR_RATE_LIMITS",
            "'sandbox_crad' is not an enabled gateway",
        ),
        (
            {"COLLECTOR_GATEWAYS": "sandbox_card", "COLLECTOR_RATE_LIMITS": '{"sandbox_ach": 5}'},
            "COLLECTOR_RATE_LIMITS",
            "not an enabled gateway",
        ),
        # Sizes and time limits a pass could not run with.
        ({"COLLECTOR_POOL_SIZE": "2"}, "COLLECTOR_POOL_SIZE", "needs at least 3"),
        (
            {"COLLECTOR_CLAIMERS": "4", "COLLECTOR_POOL_SIZE": "5"},
            "COLLECTOR_POOL_SIZE",
            "needs at least 6",
        ),
        ({"COLLECTOR_CLAIM_DEADLINE_S": "20"}, "COLLECTOR_CLAIM_DEADLINE_S", "GATEWAY_TIMEOUT"),
        ({"COLLECTOR_CONCURRENCY": "0"}, "COLLECTOR_CONCURRENCY", "greater"),
        ({"COLLECTOR_BATCH_SIZE": "1000000"}, "COLLECTOR_BATCH_SIZE", "less"),
        ({"COLLECTOR_GATEWAY_TIMEOUT_S": "nan"}, "COLLECTOR_GATEWAY_TIMEOUT_S", ""),
        ({"COLLECTOR_RETRY_INTERVAL_S": "0"}, "COLLECTOR_RETRY_INTERVAL_S", "greater"),
        ({"COLLECTOR_SHUTDOWN_GRACE_S": "-1"}, "COLLECTOR_SHUTDOWN_GRACE_S", "greater"),
        # Retries: days from 1 to 60 each, so no retry date leaves the calendar.
        ({"COLLECTOR_SOFT_RETRY_DAYS": "3,0"}, "COLLECTOR_SOFT_RETRY_DAYS", "from 1 to 60"),
        ({"COLLECTOR_SOFT_RETRY_DAYS": "3,999999999"}, "COLLECTOR_SOFT_RETRY_DAYS", "1 to 60"),
        ({"COLLECTOR_SOFT_RETRY_DAYS": "3,x"}, "COLLECTOR_SOFT_RETRY_DAYS", "list of days"),
        ({"COLLECTOR_SOFT_RETRY_DAYS": ",".join("1" * 11)}, "COLLECTOR_SOFT_RETRY_DAYS", "10"),
        # Clock and zone.
        ({"COLLECTOR_SCHEDULE_TIME": "6am"}, "COLLECTOR_SCHEDULE_TIME", "HH:MM"),
        ({"COLLECTOR_SCHEDULE_TIME": "24:00"}, "COLLECTOR_SCHEDULE_TIME", "HH:MM"),
        ({"COLLECTOR_SCHEDULE_TIME": "06:00+02:00"}, "COLLECTOR_SCHEDULE_TIME", "HH:MM"),
        ({"COLLECTOR_TIMEZONE": ""}, "COLLECTOR_TIMEZONE", "unknown time zone"),
        ({"COLLECTOR_TIMEZONE": "../../etc/passwd"}, "COLLECTOR_TIMEZONE", "unknown"),
        # URLs, without repeating them (a password).
        ({"COLLECTOR_DATABASE_URL": "mysql://u:pw@h/d"}, "COLLECTOR_DATABASE_URL", "postgresql"),
        ({"COLLECTOR_DATABASE_URL": "postgresql://u:pw@[::1/d"}, "COLLECTOR_DATABASE_URL", "URL"),
        (
            {"COLLECTOR_DATABASE_URL": "postgresql://u:pw@h:port/d"},
            "COLLECTOR_DATABASE_URL",
            "not a port number",
        ),
        (
            {"COLLECTOR_DATABASE_URL": "postgresql://u:pw@h1:5432,h2:70000/d"},
            "COLLECTOR_DATABASE_URL",
            "'70000'",
        ),
        (
            {"COLLECTOR_SANDBOX_DATABASE_URL": "postgresql://u:pw@h:0/d"},
            "COLLECTOR_SANDBOX_DATABASE_URL",
            "port",
        ),
        ({"COLLECTOR_STRIPE_BASE_URL": "api.stripe.com"}, "COLLECTOR_STRIPE_BASE_URL", "http"),
        ({"COLLECTOR_STRIPE_BASE_URL": "https://"}, "COLLECTOR_STRIPE_BASE_URL", "no host"),
        ({"COLLECTOR_PUSHGATEWAY_URL": "ftp://pg:9091"}, "COLLECTOR_PUSHGATEWAY_URL", "http"),
        ({"COLLECTOR_PUSHGATEWAY_URL": "pg:99999"}, "COLLECTOR_PUSHGATEWAY_URL", "port"),
        # Paths: an empty one would mean the working directory.
        ({"COLLECTOR_DATA_DIR": ""}, "COLLECTOR_DATA_DIR", "empty"),
        ({"COLLECTOR_METRICS_TEXTFILE": " "}, "COLLECTOR_METRICS_TEXTFILE", "empty"),
        ({"COLLECTOR_METRICS_TEXTFILE": "/tmp/c.txt"}, "COLLECTOR_METRICS_TEXTFILE", ".prom"),
        ({"COLLECTOR_NACHA_OUTBOX": ""}, "COLLECTOR_NACHA_OUTBOX", "empty"),
        ({"COLLECTOR_API_HOST": " "}, "COLLECTOR_API_HOST", "empty"),
        ({"COLLECTOR_API_PORT": "65536"}, "COLLECTOR_API_PORT", "less"),
    ],
)
def test_a_setting_that_would_break_a_pass_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str, says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{named}: " in message
    assert says in message
    assert ":pw@" not in message and "pw@" not in message


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"COLLECTOR_RATE_LIMITS": '{"sandbox_card": 0.5}'}, "rate"),
        ({"COLLECTOR_RATE_LIMITS": '{"sandbox_card": 0.01, "sandbox_ach": 250}'}, "rate"),
        ({"COLLECTOR_SOFT_RETRY_DAYS": ""}, "no retries"),
        ({"COLLECTOR_SOFT_RETRY_DAYS": "1,60"}, "retries"),
        ({"COLLECTOR_CLAIMERS": "4", "COLLECTOR_POOL_SIZE": "6"}, "pool"),
        ({"COLLECTOR_DATABASE_URL": "postgresql://u:pw@h1:5432,h2:5433/d"}, "hosts"),
        ({"COLLECTOR_DATABASE_URL": "postgresql:///d?host=/run/postgresql"}, "socket"),
        ({"COLLECTOR_DATABASE_URL": "postgres://[::1]:5432/d"}, "ipv6"),
        ({"COLLECTOR_PUSHGATEWAY_URL": "pushgateway:9091"}, "host:port"),
        ({"COLLECTOR_SCHEDULE_TIME": "23:59:30"}, "seconds"),
        ({"COLLECTOR_GATEWAYS": "nacha"}, "one gateway"),
    ],
)
def test_values_in_bounds_are_taken(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], check: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    if "COLLECTOR_RATE_LIMITS" in env:
        assert all(rate > 0 for rate in settings.rate_limits.values())
        assert set(settings.rate_limits) <= set(settings.gateways)


def test_every_problem_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_CONCURRENCY", "0")
    monkeypatch.setenv("COLLECTOR_GATEWAYS", "")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "COLLECTOR_CONCURRENCY: " in message and "COLLECTOR_GATEWAYS: " in message
    assert "\n" not in message
