"""The signature of the engine's outgoing webhooks, and its check for receivers.

Each delivery carries ``Collector-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``: one
``v1`` per secret of the endpoint (two while a receiver rotates its secret), each the
HMAC-SHA256, under that secret, of the timestamp, a dot and the body's exact bytes. A
receiver recomputes it with its secret, compares in constant time, and refuses a timestamp
too far from its clock (a replayed old delivery). Pure functions: the README's verification
example is this module's :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "Collector-Signature"
SCHEME = "v1"
# How far a receiver should let a timestamp be from its clock, by default.
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: Sequence[str], *, timestamp: int) -> str:
    """The ``Collector-Signature`` header's value for ``body``, under every secret."""
    parts = [f"t={timestamp}"]
    parts += [f"{SCHEME}={signature(secret, timestamp, body)}" for secret in secrets]
    return ",".join(parts)


def verify(
    body: bytes,
    header: str,
    secrets: Sequence[str],
    *,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``header`` signs ``body`` under one of ``secrets`` with a timestamp within
    ``tolerance_s`` of ``now``."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME:
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance_s:
        return False
    expected = [signature(secret, timestamp, body) for secret in secrets]
    # Every pair is compared, in constant time each: no early exit tells which one matched.
    matches = [hmac.compare_digest(e, c) for e in expected for c in candidates]
    return any(matches)
