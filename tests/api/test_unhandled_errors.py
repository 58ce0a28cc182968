"""An error no handler catches is answered in JSON, counted and logged with its causes, by the
outermost middleware: Starlette's own last resort answered plain text, uncounted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import httpx
from structlog.testing import capture_logs

from collector.api.app import create_app
from collector.config import Settings
from collector.db.pool import open_pool
from collector.gateways.base import Gateway
from collector.metrics import REGISTRY
from tests.api.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": "unhandled-1"}


def _count(name: str, code: str) -> float:
    return REGISTRY.get_sample_value(name, {"code": code}) or 0.0


async def test_manual_pay_with_the_database_gone_is_a_counted_json_503(
    api_settings: Settings, database_url: str, gateways: Mapping[str, Gateway]
) -> None:
    async with open_pool(database_url, size=1) as pool:
        await pool.close()  # the database cannot be reached from here any more
        app = create_app(api_settings, pool, gateways)
        before = (
            _count("collector_api_responses_total", "503"),
            _count("collector_manual_pay_requests_total", "503"),
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://portal.test"
        ) as http:
            with capture_logs() as logs:
                answer = await http.post("/v1/leases/1/payments", json={}, headers=AUTH)
    assert answer.status_code == 503
    assert answer.json() == {
        "detail": "the database cannot be reached",
        "code": "database_unavailable",
    }
    assert (
        _count("collector_api_responses_total", "503"),
        _count("collector_manual_pay_requests_total", "503"),
    ) == (before[0] + 1, before[1] + 1)
    [line] = [e for e in logs if e["event"] == "api_request_failed"]
    assert line["path"] == "/v1/leases/1/payments" and "InterfaceError" in line["error"]


async def test_a_bug_in_a_handler_is_a_counted_json_500(
    api_settings: Settings, pool: object, gateways: Mapping[str, Gateway]
) -> None:
    def broken_clock() -> datetime:
        raise ZeroDivisionError("a bug")

    app = create_app(api_settings, pool, gateways, clock=broken_clock)  # type: ignore[arg-type]
    before = _count("collector_api_responses_total", "500")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://portal.test"
    ) as http:
        with capture_logs() as logs:
            answer = await http.get("/v1/leases/1", headers=AUTH)
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error", "code": "internal_error"}
    assert _count("collector_api_responses_total", "500") == before + 1
    assert any(e["event"] == "api_request_failed" for e in logs)
