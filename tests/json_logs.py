"""The engine's JSON log lines, configured as its entry points configure them, for a test."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from collector.logs import StdlibHandler, configure_logging


@contextmanager
def captured_json_logs() -> Iterator[io.StringIO]:
    """Configure logging into a buffer (structlog's and the standard library's), and undo it."""
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, StdlibHandler)]:
            root.removeHandler(handler)
