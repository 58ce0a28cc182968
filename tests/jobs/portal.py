"""The portal API on a test's database, its clock on a business date the test sets: for tests
that drive whole passes over several business dates and call the portal in between."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from collector.api.app import create_app
from collector.config import Settings
from collector.gateways.base import Gateway

START = date(2026, 11, 26)
API_TOKEN = "test-token-0123456789abcdef"


class Portal:
    """An HTTP client of the portal, and the business date its clock reads (noon there)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.today = START

    def clock(self) -> datetime:
        noon = datetime.combine(self.today, time(12), tzinfo=ZoneInfo("America/New_York"))
        return noon.astimezone(UTC)


@pytest.fixture
async def portal(
    settings: Settings, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> AsyncIterator[Portal]:
    api_settings = settings.model_copy(update={"api_tokens": [SecretStr(API_TOKEN)]})
    holder: list[Portal] = []
    app = create_app(api_settings, pool, gateways, clock=lambda: holder[0].clock())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        holder.append(Portal(http))
        yield holder[0]
