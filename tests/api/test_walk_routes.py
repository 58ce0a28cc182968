"""The daemon builds FastAPI's per-route matching state before its first request
(collector.api.app.walk_routes), so that the portal's first customers do not pay for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import fastapi.routing
import httpx
import pytest

from collector.api.app import create_app, walk_routes
from collector.config import Settings
from collector.gateways.base import Gateway
from collector.metrics import API_RESPONSES
from tests.api.conftest import API_TOKEN, NOW

_CONTEXT = getattr(fastapi.routing, "_EffectiveRouteContext", None)


def _answers_counted() -> float:
    return sum(
        sample.value
        for metric in API_RESPONSES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the routes FastAPI builds a matching context for, as it builds them."""
    if _CONTEXT is None or not hasattr(_CONTEXT, "from_api_route"):
        pytest.skip("this FastAPI builds no route context lazily: nothing to walk")
    built: list[str] = []
    original = _CONTEXT.from_api_route

    def counting(*args: Any, **kwargs: Any) -> Any:
        context = original(*args, **kwargs)
        built.append(kwargs.get("original_route", args[0] if args else None).path)
        return context

    monkeypatch.setattr(_CONTEXT, "from_api_route", counting)
    return built


async def _first_requests(app: Any) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/v1/leases/1")).status_code == 404


async def test_after_the_walk_the_first_requests_build_nothing(
    api_settings: Settings,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    builds: list[str],
) -> None:
    unwalked = create_app(api_settings, pool, gateways, clock=lambda: NOW)
    await _first_requests(unwalked)
    # The control: without the walk, the first requests build the routes they pass.
    assert builds

    walked = create_app(api_settings, pool, gateways, clock=lambda: NOW)
    await walk_routes(walked)
    assert "/leases/{lease_id}/payments" in builds  # the paths within their routers
    builds.clear()
    await _first_requests(walked)
    assert builds == []


async def test_the_walk_answers_nobody_and_touches_nothing(
    api_settings: Settings, gateways: Mapping[str, Gateway]
) -> None:
    # No pool at all: a walk that reached a handler or the database would fail here.
    app = create_app(api_settings, None, gateways, clock=lambda: NOW)  # type: ignore[arg-type]
    counted = _answers_counted()
    await walk_routes(app)
    await walk_routes(app)
    assert _answers_counted() == counted
