"""structlog set-up, done once at the edge (``cli.main``), and the redaction safety net.

Code never logs tokens, card or account numbers, API keys or Authorization headers;
``redact_secrets`` is the net under that rule, not the rule. It runs on every event, the
standard library's too (uvicorn's, asyncio's: ``configure_logging`` sends them through the
same pipeline), after exceptions are formatted: a chained exception from the Stripe SDK or
httpx quoting a ``cus_…:pm_…`` token is masked in the traceback text like anywhere else.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from collector.sensitive import REDACTED, redact, redact_value

__all__ = [
    "REDACTED",
    "StdlibHandler",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "scrub",
]

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


def scrub(text: str) -> str:
    """Mask anything in free text that looks like a card or bank number, a secret or token."""
    return redact(text)


def _is_secret_name(key: str) -> bool:
    if key in SECRET_KEYS:
        return True
    # Idempotency keys are references, not secrets: operators need them to trace a charge.
    return key.endswith(("_token", "_secret", "_key")) and key != "idempotency_key"


def _describe(exc: BaseException) -> str:
    """An exception given as a value, with the chain of its causes."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def _redacted(value: Any) -> Any:
    """``value`` as the renderer will write it, with secrets masked throughout."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            (redact(k) if isinstance(k, str) else k): (
                REDACTED if isinstance(k, str) and _is_secret_name(k.lower()) else _redacted(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [_redacted(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, BaseException):
        return redact(_describe(value))
    if value is None or isinstance(value, bool | int | float):
        return redact_value(value)  # an integer may be a card number
    # What the renderer would write (its repr()), masked like any other text.
    return redact(repr(value))


def redact_secrets(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: format any exception still attached, blank secret-named keys,
    and mask card and bank numbers, secrets and tokens in every other value, nested ones and
    exception chains included."""
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    for key, value in list(event_dict.items()):
        if _is_secret_name(key.lower()):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redacted(value)
    return event_dict


class StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the standard library's records (uvicorn's, asyncio's, the SDKs') through the
    same renderer and redaction as structlog's events; with no stream given, to whatever
    ``sys.stderr`` is at the time, as logging's own last-resort handler does."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    *, json: bool = True, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send structlog events as JSON lines (or readable lines) to ``stream`` (stderr), and the
    standard library's warnings and errors the same way."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    # The timestamp is ours and holds no secret: stamped after redaction, never scanned.
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redact_secrets,
            stamp,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Without a handler, logging prints WARNING and above (uvicorn's "Exception in ASGI
    # application" tracebacks among them) as they are: they go through redaction instead.
    handler = StdlibHandler(stream)
    handler.setLevel(max(level, logging.WARNING))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                stamp,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # A library that set up its own handlers (uvicorn does, when anything in the process built
    # a uvicorn.Config with its default log_config) would print its tracebacks as plain text
    # beside our JSON: its records go through the one handler above instead.
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for own in list(library.handlers):
            library.removeHandler(own)
        library.propagate = True
        library.disabled = False


_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncpg")


def get_logger(**initial: Any) -> Any:
    """A structlog logger; configuration comes from the entry point."""
    return structlog.get_logger(**initial)
