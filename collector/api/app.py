"""The ASGI application: ``create_app(settings, pool, gateways)`` takes its dependencies as
arguments (tests drive it through httpx's ASGITransport, which runs no lifespan)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import Message, Scope

from collector import __version__
from collector.api import fees, health, leases, payment_methods, payments, promises, webhooks
from collector.api.auth import require_token
from collector.api.errors import invalid_request
from collector.api.gate import Drain, PortalGate
from collector.api.limits import BodyLimits
from collector.config import Settings
from collector.db.portal import LeaseOwners
from collector.exceptions import (
    Conflict,
    NotFound,
    RateLimited,
    RetryLater,
    TryAgain,
    Unprocessable,
)
from collector.gateways.base import Gateway
from collector.jobs.charging import Charger


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    *,
    clock: Callable[[], datetime] = _utcnow,
    charger: Charger | None = None,
) -> FastAPI:
    """The portal API, ready to serve; ``charger`` is shared with the daemon's passes."""
    app = FastAPI(
        title="collector portal API",
        version=__version__,
        description="Balances, schedules, payment methods and manual payments of leases.",
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.gateways = gateways
    app.state.clock = clock
    # Every statement about a lease names its customer (Citus routes by it): read once a lease.
    app.state.lease_owners = LeaseOwners()
    app.state.api_tokens = [t.get_secret_value().encode() for t in settings.api_tokens]
    app.state.charger = charger or Charger.for_settings(gateways, settings)

    # Added first, so it runs inside the gate: an unauthenticated /v1 call is refused before
    # its body is read at all; everything else has its body limited before a handler runs.
    app.add_middleware(
        BodyLimits,
        max_body_bytes=settings.http_max_body_bytes,
        max_webhook_body_bytes=settings.http_max_webhook_body_bytes,
        body_timeout_s=settings.http_body_timeout_s,
    )
    # The daemon starts the drain at its signal: from then on nothing new is taken.
    app.state.drain = Drain()
    app.add_middleware(PortalGate, tokens=app.state.api_tokens, drain=app.state.drain)

    app.include_router(health.router)
    app.include_router(webhooks.router)
    secured = [Depends(require_token)]
    app.include_router(leases.router, prefix="/v1", dependencies=secured)
    app.include_router(payment_methods.router, prefix="/v1", dependencies=secured)
    app.include_router(payments.router, prefix="/v1", dependencies=secured)
    app.include_router(promises.router, prefix="/v1", dependencies=secured)
    app.include_router(fees.router, prefix="/v1", dependencies=secured)

    app.add_exception_handler(RequestValidationError, invalid_request)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        return _retry_later(exc, code="rate_limited", status_code=429)

    @app.exception_handler(TryAgain)
    async def _try_again(_: Request, exc: TryAgain) -> JSONResponse:
        return _retry_later(exc, code="try_again", status_code=503)

    @app.exception_handler(Unprocessable)
    async def _unprocessable(_: Request, exc: Unprocessable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


# A path no route takes (no route has a NUL in it), so the walk reaches every route.
_NO_ROUTE = "/\x00no-route"


async def walk_routes(app: FastAPI) -> None:
    """Build every route's matching state now, before the first request.

    FastAPI (0.165) builds a route's matching context the first time a request is matched
    past it, about 4 ms a route: the portal's first requests paid 50 ms for it between
    them. A request whose path no route takes walks them all; sent to the router itself (no
    middleware: it is not counted as an answer), it changes nothing. What it answers (404)
    is discarded.
    """

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def discard(_: Message) -> None:
        return None

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": _NO_ROUTE,
        "raw_path": _NO_ROUTE.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
        "state": {},
    }
    await app.router(scope, receive, discard)


def _retry_later(exc: RetryLater, *, code: str, status_code: int) -> JSONResponse:
    """The answer to a request refused for now, with nothing done: when to come back."""
    return JSONResponse(
        {"detail": str(exc), "code": code},
        status_code=status_code,
        headers={"Retry-After": str(exc.retry_after_s)},
    )
