"""structlog set-up, done once at the edge (``cli.main``), and the redaction safety net.

Code never logs tokens, card or account numbers, API keys or Authorization headers;
``redact_secrets`` is the net under that rule, not the rule.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SECRET_KEYS = frozenset(
    {
        "token",
        "gateway_token",
        "api_key",
        "secret",
        "password",
        "authorization",
        "database_url",
        "card_number",
        "account_number",
        "cvv",
        "cvc",
    }
)
REDACTED = "[redacted]"

# A run of 13-19 digits (optionally split by spaces or dashes) looks like a card number;
# gateway secret keys look like sk_live_..., whsec_...; URLs may carry a password.
_PAN = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_SECRET_KEY = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+")
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]+@")
_SANDBOX_TOKEN = re.compile(r"\bsandbox_(?:card|ach)_[A-Za-z0-9_]+")


def scrub(text: str) -> str:
    """Mask anything in free text that looks like a card number, secret key or password."""
    text = _PAN.sub(REDACTED, text)
    text = _SECRET_KEY.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", text)
    return _SANDBOX_TOKEN.sub(REDACTED, text)


def _is_secret_name(key: str) -> bool:
    if key in SECRET_KEYS:
        return True
    # Idempotency keys are references, not secrets: operators need them to trace a charge.
    return key.endswith(("_token", "_secret", "_key")) and key != "idempotency_key"


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank secret-named keys and scrub every string value."""
    for key, value in list(event_dict.items()):
        if _is_secret_name(key.lower()):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def configure_logging(
    *, json: bool = True, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send structlog events as JSON lines (or readable lines) to ``stream`` (stderr)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> Any:
    """A structlog logger; configuration comes from the entry point."""
    return structlog.get_logger(**initial)
