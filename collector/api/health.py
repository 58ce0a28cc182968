"""Probes and metrics: no authentication (they reveal no customer data)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.api.deps import PoolDep
from collector.db.migrate import pending_migrations
from collector.db.pool import describe
from collector.metrics import REGISTRY

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and the schema is current",
    responses={503: {"description": "Not ready"}},
)
async def readyz(pool: PoolDep) -> JSONResponse:
    try:
        async with pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
    except Exception as exc:
        # Why, in one line: the cause named and its message (the URL and secrets masked).
        return JSONResponse(
            {"status": "unavailable", "detail": f"database: {describe(exc)}"}, status_code=503
        )
    if pending:
        return JSONResponse(
            {"status": "unavailable", "detail": f"{len(pending)} migration(s) pending"},
            status_code=503,
        )
    return JSONResponse({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
