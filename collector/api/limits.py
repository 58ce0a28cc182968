"""Request bodies have a size and a deadline, enforced before any handler sees them.

The portal API takes small JSON bodies, a webhook delivery is bigger but bounded too, and
nothing may make the daemon hold an unbounded body in memory or wait for one forever:

- a ``Content-Length`` above the route's limit is answered 413 at once, before one byte of
  the body is read;
- a body without one (chunked) is counted while it streams, and refused 413 as soon as it
  passes the limit: at most the limit is ever buffered;
- a body that does not arrive within ``COLLECTOR_HTTP_BODY_TIMEOUT_S`` is answered 408.

Each refusal closes the connection (``Connection: close``): what the client still sends is
not read as a next request. The body read here is handed to the application unchanged, so
a webhook's signature is checked only on a body that passed these limits. Plain ASGI, not
Starlette's BaseHTTPMiddleware, which runs every request through an extra task (see gate.py).

The limits on connections and headers live in the HTTP server (``collector.api.server``):
they come before there is a request to answer.
"""

from __future__ import annotations

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.metrics import HTTP_REFUSED

WEBHOOK_PREFIX = "/webhooks/"


class BodyLimits:
    """Refuse request bodies above their route's size limit (413) or slower than the body
    timeout (408), before the application reads them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_webhook_body_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_webhook_body_bytes = max_webhook_body_bytes
        self.body_timeout_s = body_timeout_s

    def limit_for(self, path: str) -> int:
        """The largest body a request to ``path`` may carry."""
        if path.startswith(WEBHOOK_PREFIX):
            return self.max_webhook_body_bytes
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length, chunked = _framing(scope)
        if length is None and not chunked:
            # No body at all (a GET, a bodiless POST): nothing to limit or to wait for.
            await self.app(scope, receive, send)
            return
        if length is not None and length > limit:
            await _refuse(scope, receive, send, 413, _too_large(limit), "body_too_large")
            return
        chunks: list[bytes] = []
        total = 0
        with anyio.move_on_after(self.body_timeout_s) as waiting:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client is gone: there is no one to answer
                body: bytes = message.get("body", b"")
                total += len(body)
                if total > limit:
                    await _refuse(scope, receive, send, 413, _too_large(limit), "body_too_large")
                    return
                chunks.append(body)
                if not message.get("more_body", False):
                    break
        if waiting.cancelled_caught:
            detail = f"the request body did not arrive within {self.body_timeout_s:g} s"
            await _refuse(scope, receive, send, 408, detail, "body_timeout")
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The request's Content-Length (None without one) and whether it is chunked. The HTTP
    parser has already refused a malformed or doubled Content-Length."""
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


def _too_large(limit: int) -> str:
    return f"the request body is larger than this endpoint accepts ({limit} bytes)"


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, reason: str
) -> None:
    HTTP_REFUSED.labels(reason=reason).inc()
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then defers to the connection's (which
    reports a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
