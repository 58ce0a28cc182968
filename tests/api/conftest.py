from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from collector.api.app import create_app
from collector.config import Settings
from collector.gateways.base import Gateway

API_TOKEN = "test-token-0123456789abcdef"
OLD_TOKEN = "rotated-token-0123456789abcdef"
# The portal's clock in these tests: 2026-11-26 at noon in New York.
NOW = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)


@pytest.fixture
def api_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,  # type: ignore[arg-type]
        api_tokens=[API_TOKEN, OLD_TOKEN],  # type: ignore[list-item]
        sandbox_latency_ms=0,
    )


@pytest.fixture
async def client(
    api_settings: Settings, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the portal API, authenticated, on a real database and the sandbox."""
    app = create_app(api_settings, pool, gateways, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        yield http
