"""The portal's front door, as plain ASGI (Starlette's BaseHTTPMiddleware runs each request
through an extra task and memory streams: two of them cost manual pay ~50 ms at p99).

- A /v1 call without an accepted bearer token is answered 401 before anything reads its body
  or validates a parameter: an unauthenticated caller learns nothing, not even which inputs
  would have been refused. (The routes' ``require_token`` dependency stays, and documents the
  scheme in the OpenAPI document.)
- Every answer is counted by status code (``collector_api_responses_total``; manual pay's
  also in ``collector_manual_pay_requests_total``), here, outermost: an error no handler
  caught is answered here, in JSON like every other answer (503 when the database cannot be
  reached, else 500), logged with its cause chain, and counted. Starlette's own last-resort
  handler, outside every middleware, answered it in plain text, uncounted.
- Once the daemon is stopping (:class:`Drain`), every request but /healthz and /metrics is
  answered 503 ``shutting_down`` before it reaches a handler, so nothing is taken after the
  signal: the listener closes at the server's next tick, and a request that arrives in that
  tick, or on a connection kept alive, would otherwise still be served.
"""

from __future__ import annotations

import re

import asyncpg
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.api.auth import authorized
from collector.failures import cause_of, describe_failure
from collector.logs import get_logger
from collector.metrics import API_RESPONSES, MANUAL_PAY_REQUESTS

log = get_logger()

# What a request fails of when the database is away: no session to be had, or one lost.
_DATABASE_AWAY = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.InterfaceError,
)

_MANUAL_PAY_PATH = re.compile(r"/v1/leases/[^/]+/payments")
# What a stopping daemon still answers: the process is up, and its counters can be read.
_ANSWERED_WHILE_STOPPING = frozenset({"/healthz", "/metrics"})


class Drain:
    """Whether the daemon has begun to stop (set once, at its signal)."""

    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True


class PortalGate:
    """Refuse work once stopping; authenticate /v1 first; count every answer."""

    def __init__(self, app: ASGIApp, *, tokens: list[bytes], drain: Drain) -> None:
        self.app = app
        self.tokens = tokens
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.drain.started and path not in _ANSWERED_WHILE_STOPPING:
            response = JSONResponse(
                {"detail": "the daemon is stopping; try again shortly", "code": "shutting_down"},
                status_code=503,
                headers={"Retry-After": "5", "Connection": "close"},
            )
            API_RESPONSES.labels(code="503").inc()
            await response(scope, receive, send)
            return
        if path.startswith("/v1/") and not authorized(_authorization(scope), self.tokens):
            headers = {"WWW-Authenticate": "Bearer"}
            if _has_body(scope):
                # The body is never read: closing the connection spares reading and discarding
                # it as the start of a next request, however large it is.
                headers["Connection"] = "close"
            response = JSONResponse(
                {"detail": "missing or invalid bearer token"}, status_code=401, headers=headers
            )
            API_RESPONSES.labels(code="401").inc()
            await response(scope, receive, send)
            return
        manual_pay = scope["method"] == "POST" and _MANUAL_PAY_PATH.fullmatch(path) is not None
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                code = str(message["status"])
                API_RESPONSES.labels(code=code).inc()
                if manual_pay:
                    MANUAL_PAY_REQUESTS.labels(code=code).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception as exc:
            away = isinstance(cause_of(exc), _DATABASE_AWAY)
            log.exception(
                "api_request_failed",
                method=scope["method"],
                path=path,
                error=describe_failure(exc),
            )
            if started:
                raise  # the answer has begun: nothing left to do but cut the connection
            response = JSONResponse(
                {
                    "detail": "the database cannot be reached" if away else "internal error",
                    "code": "database_unavailable" if away else "internal_error",
                },
                status_code=503 if away else 500,
                headers={"Retry-After": "5"} if away else None,
            )
            await response(scope, receive, counting_send)


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
