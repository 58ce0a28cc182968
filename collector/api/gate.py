"""The portal's front door, as plain ASGI (Starlette's BaseHTTPMiddleware runs each request
through an extra task and memory streams: two of them cost manual pay ~50 ms at p99).

- A /v1 call without an accepted bearer token is answered 401 before anything reads its body
  or validates a parameter: an unauthenticated caller learns nothing, not even which inputs
  would have been refused. (The routes' ``require_token`` dependency stays, and documents the
  scheme in the OpenAPI document.)
- Every manual-pay answer is counted by status code.
"""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.api.auth import authorized
from collector.metrics import MANUAL_PAY_REQUESTS

_MANUAL_PAY_PATH = re.compile(r"/v1/leases/[^/]+/payments")


class PortalGate:
    """Authenticate /v1 first; count manual-pay answers."""

    def __init__(self, app: ASGIApp, *, tokens: list[bytes]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/v1/") and not authorized(_authorization(scope), self.tokens):
            headers = {"WWW-Authenticate": "Bearer"}
            if _has_body(scope):
                # The body is never read: closing the connection spares reading and discarding
                # it as the start of a next request, however large it is.
                headers["Connection"] = "close"
            response = JSONResponse(
                {"detail": "missing or invalid bearer token"}, status_code=401, headers=headers
            )
            await response(scope, receive, send)
            return
        if scope["method"] == "POST" and _MANUAL_PAY_PATH.fullmatch(path):

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MANUAL_PAY_REQUESTS.labels(code=str(message["status"])).inc()
                await send(message)

            await self.app(scope, receive, counting_send)
            return
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return True
    return False
