"""Every log line is one JSON object, the libraries' tracebacks too (uvicorn's "Exception in
ASGI application", asyncpg's pool), with secrets masked; and the redactor masks what it must
hide (a PAN with Luhn, a token), not every long number: a NACHA trace number stays."""

from __future__ import annotations

import io
import json
import logging

import pytest

from collector.logs import configure_logging, get_logger


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    yield out
    configure_logging(json=True)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # each line alone is JSON


def test_library_tracebacks_are_json_lines_with_their_causes_masked(stream: io.StringIO) -> None:
    try:
        try:
            raise ConnectionRefusedError("connect to 10.0.0.5:5432 refused")
        except OSError as exc:
            raise RuntimeError("card 4111 1111 1111 1111 in a message") from exc
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application\n")
    logging.getLogger("asyncpg.pool").warning("connection lost; retrying in %s s", 1)
    uvicorn_line, asyncpg_line = _lines(stream)
    assert uvicorn_line["event"].startswith("Exception in ASGI application")
    assert uvicorn_line["level"] == "error"
    traceback_text = str(uvicorn_line["exception"])
    assert "ConnectionRefusedError" in traceback_text and "RuntimeError" in traceback_text
    assert "4111 1111 1111 1111" not in traceback_text and "[redacted-pan]" in traceback_text
    assert asyncpg_line["event"] == "connection lost; retrying in 1 s"
    assert asyncpg_line["logger"] == "asyncpg.pool"


def test_a_nacha_trace_number_is_logged_as_it_is_and_a_card_number_is_not(
    stream: io.StringIO,
) -> None:
    get_logger().warning(
        "debit_returned",
        trace_number="021000021234567",
        gateway_ref="091000010000123",
        trace=21000021234567,
        note="returned 021000021234567 R01; card 4242424242424242",
        token="cus_123:pm_456",
    )
    [line] = _lines(stream)
    assert line["trace_number"] == "021000021234567"
    assert line["gateway_ref"] == "091000010000123"
    assert line["trace"] == 21000021234567
    assert line["note"] == "returned 021000021234567 R01; card [redacted-pan]"
    assert line["token"] == "[redacted]"


def test_uvicorn_configured_its_own_handlers_and_its_lines_are_still_json() -> None:
    # Anything in the process that builds a uvicorn.Config with its default log_config gives
    # uvicorn's loggers plain-text handlers of their own; configure_logging takes them back.
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    logging.config.dictConfig(LOGGING_CONFIG)
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        [line] = _lines(out)
        assert line["event"] == "Exception in ASGI application" and "boom" in str(line["exception"])
    finally:
        configure_logging(json=True)
