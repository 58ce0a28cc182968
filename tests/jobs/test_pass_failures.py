"""Every failure of a pass is counted and leaves its run row closed with a reason, whatever the
step; and the counters count each attempt's first answer once."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs

from collector.config import Settings
from collector.db.payments import PaymentRequest
from collector.db.pool import open_pool
from collector.gateways.base import ChargeRequest, Gateway, InDoubt, Succeeded
from collector.jobs.charging import Charger
from collector.jobs.collect import run_pass
from collector.jobs.gauges import refresh_gauges
from collector.jobs.manual_pay import pay_now
from collector.metrics import REGISTRY
from tests.factories import make_lease

TODAY = date(2026, 11, 26)


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _failed() -> float:
    return _sample("collector_passes_total", status="failed")


async def test_a_pass_whose_file_export_fails_is_a_failed_pass_with_its_reason(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY])
    before = (_failed(), _sample("collector_passes_total", status="completed"))

    async def export() -> None:
        raise OSError(30, "Read-only file system", "/var/spool/collector/ach-outbox")

    with capture_logs() as logs, pytest.raises(OSError):
        await run_pass(pool, gateways, settings, as_of=TODAY, finish=[export])
    row = await pool.fetchrow("SELECT status, error FROM collection_runs")
    assert row["status"] == "failed"
    assert "Read-only file system" in row["error"]
    assert (_failed(), _sample("collector_passes_total", status="completed")) == (
        before[0] + 1,
        before[1],
    )
    [failed] = [e for e in logs if e["event"] == "pass_failed"]
    assert failed["step"] == "export" and "Read-only" in failed["error"]
    assert _sample("collector_pass_running_since_timestamp_seconds") == 0


async def test_a_pass_that_fails_before_its_run_row_is_counted_and_logged(
    database_url: str, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    before = _failed()
    async with open_pool(database_url, size=2) as broken:
        await broken.close()  # the database is unreachable from this pool
        with capture_logs() as logs, pytest.raises(asyncpg.InterfaceError):
            await run_pass(broken, gateways, settings, as_of=TODAY)
    assert _failed() == before + 1
    [failed] = [e for e in logs if e["event"] == "pass_failed"]
    assert failed["step"] == "start" and failed["as_of"] == TODAY.isoformat()


async def test_a_pass_says_it_started_and_leaves_the_gauges_true_for_today(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY])
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    await refresh_gauges(pool, settings, now=now)
    # Nothing asked for yet today: no ratio at all, not a ratio of 0 (a false ticket).
    assert math.isnan(_sample("collector_due_today_collected_ratio"))
    # No pass ever completed: today's is due by today's deadline (10:00 New York).
    assert (
        _sample("collector_next_pass_due_by_timestamp_seconds")
        == datetime(2026, 11, 26, 15, 0, tzinfo=UTC).timestamp()
    )
    with capture_logs() as logs:
        await run_pass(pool, gateways, settings, as_of=TODAY, clock=lambda: now)
    events = [e["event"] for e in logs]
    assert events.index("pass_started") < events.index("pass_finished")
    assert _sample("collector_due_today_collected_ratio") == 1.0
    assert _sample("collector_due_today_cents", part="collected") == 5_000
    assert _sample("collector_pass_running_since_timestamp_seconds") == 0
    # Now tomorrow's pass is the one due, by tomorrow's 10:00.
    assert (
        _sample("collector_next_pass_due_by_timestamp_seconds")
        == datetime(2026, 11, 27, 15, 0, tzinfo=UTC).timestamp()
    )
    assert _sample("collector_last_pass_started_timestamp_seconds") > 0
    # After midnight the gauges describe the new business date.
    await refresh_gauges(pool, settings, now=now + timedelta(days=1))
    assert math.isnan(_sample("collector_due_today_collected_ratio"))
    assert _sample("collector_due_today_cents", part="due") == 0


class _InDoubtThenFound:
    """Every charge times out; the lookup finds nothing at first (a lagging search), then the
    charge it did take."""

    def __init__(self) -> None:
        self.name = "sandbox_card"
        self.lookup_lag = timedelta(hours=1)
        self.found = False

    async def charge(self, request: ChargeRequest) -> InDoubt:
        return InDoubt(reason="timeout")

    async def lookup(self, idempotency_key: str) -> Succeeded | None:
        return Succeeded(gateway_ref="ch_found") if self.found else None


async def test_an_attempt_in_doubt_is_counted_once_and_its_resolution_apart(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[TODAY])
    gateway = _InDoubtThenFound()
    gws = {"sandbox_card": gateway}
    labels = {"gateway": "sandbox_card", "method_kind": "card"}
    in_doubt = _sample("collector_charges_total", outcome="in_doubt", **labels)
    succeeded = _sample("collector_charges_total", outcome="succeeded", **labels)
    resolved = _sample("collector_in_doubt_resolved_total", outcome="succeeded", **labels)
    await run_pass(pool, gws, settings, as_of=TODAY)  # type: ignore[arg-type]
    await run_pass(pool, gws, settings, as_of=TODAY)  # type: ignore[arg-type]  (still unknown)
    assert _sample("collector_charges_total", outcome="in_doubt", **labels) == in_doubt + 1
    gateway.found = True
    await run_pass(pool, gws, settings, as_of=TODAY)  # type: ignore[arg-type]
    assert _sample("collector_charges_total", outcome="in_doubt", **labels) == in_doubt + 1
    assert _sample("collector_charges_total", outcome="succeeded", **labels) == succeeded
    assert _sample("collector_in_doubt_resolved_total", outcome="succeeded", **labels) == (
        resolved + 1
    )


async def test_a_manual_payment_in_doubt_is_counted_once_and_its_resolution_apart(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY - timedelta(days=3)])
    gateway = _InDoubtThenFound()
    gws = {"sandbox_card": gateway}
    labels = {"gateway": "sandbox_card", "method_kind": "card"}
    in_doubt = _sample("collector_charges_total", outcome="in_doubt", **labels)
    succeeded = _sample("collector_charges_total", outcome="succeeded", **labels)
    resolved = _sample("collector_in_doubt_resolved_total", outcome="succeeded", **labels)
    answer = await pay_now(
        pool,
        Charger.for_settings(gws, settings),  # type: ignore[arg-type]
        PaymentRequest(
            lease_id=lease.lease_id,
            request_key="portal-1",
            request_hash="h",
            amount_cents=None,
            payment_method_id=None,
            as_of=TODAY,
            gateways=["sandbox_card"],
            deadline_s=60,
        ),
        retry_days=settings.soft_retry_days,
    )
    assert answer.status_code == 202
    gateway.found = True
    # The in-doubt attempt is due for a lookup at once: reconciliation resolves it.
    await run_pass(pool, gws, settings, as_of=TODAY)  # type: ignore[arg-type]
    assert await pool.fetchval("SELECT status FROM payments") == "succeeded"
    assert _sample("collector_charges_total", outcome="in_doubt", **labels) == in_doubt + 1
    assert _sample("collector_charges_total", outcome="succeeded", **labels) == succeeded
    assert _sample("collector_in_doubt_resolved_total", outcome="succeeded", **labels) == (
        resolved + 1
    )


async def test_a_failed_charge_line_holds_everything_needed_to_act_on_it(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[TODAY])
    with capture_logs() as logs:
        await run_pass(pool, gateways, settings, as_of=TODAY)
    [line] = [e for e in logs if e["event"] == "charge_failed"]
    assert line["idempotency_key"].startswith("collector-inst-")
    assert line["attempt_no"] == 1 and line["source"] == "batch"
    assert line["method_kind"] == "card" and line["payment_method_id"] > 0
    assert line["lease_id"] == lease.lease_id and line["customer_id"] > 0
    assert line["decline_code"] == "insufficient_funds" and line["outcome"] == "declined"
    assert {"decline_message", "network_advice", "next_attempt_on"} <= set(line)


async def test_while_a_pass_runs_its_gauges_say_so_and_when_the_days_pass_is_due(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    # What a run's textfile holds when written at the start: if the pass then hangs or is
    # killed, CollectorPassRunningTooLong and CollectorDailyPassMissing read these values.
    seen: dict[str, float] = {}

    async def started(_run_id: int) -> None:
        seen["running_since"] = _sample("collector_pass_running_since_timestamp_seconds")
        seen["due_by"] = _sample("collector_next_pass_due_by_timestamp_seconds")

    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    await run_pass(pool, gateways, settings, as_of=TODAY, on_started=started, clock=lambda: now)
    started_at = await pool.fetchval("SELECT started_at FROM collection_runs")
    assert seen["running_since"] == started_at.timestamp()
    assert seen["due_by"] == datetime(2026, 11, 26, 15, 0, tzinfo=UTC).timestamp()
    assert _sample("collector_pass_running_since_timestamp_seconds") == 0
