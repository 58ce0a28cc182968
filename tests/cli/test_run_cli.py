"""The ``collector`` command as operators run it: a real subprocess against a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import anyio
import asyncpg
import pytest

from collector.config import Settings
from collector.gateways.base import Gateway
from collector.gateways.sandbox import sandbox_charge_counts
from collector.jobs.collect import run_pass
from collector.seed import DEMO_MIX, seed_demo
from tests.factories import make_lease

TODAY = date(2026, 11, 26)


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def _collector(*args: str, env: dict[str, str]) -> Done:
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [sys.executable, "-m", "collector", *args], env=env, check=False
        )
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_run_prints_a_json_summary_and_logs_without_tokens(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await seed_demo(pool, customers=100, due_on=TODAY, installments=1)
    done = await _collector("run", "--date", TODAY.isoformat(), "--json", env=_env(database_url))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("due", "succeeded", "declined", "in_doubt", "processing", "charged_cents"):
        assert isinstance(summary[key], int)
    assert summary["due"] == 100
    assert (
        summary["succeeded"] + summary["declined"] + summary["in_doubt"] + summary["processing"]
        == 100
    )
    for _, _, _, token in DEMO_MIX:
        assert token not in done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "pass_finished" for line in lines)
    failed = [line for line in lines if line["event"] == "charge_failed"]
    assert len(failed) == summary["declined"] + summary["in_doubt"]
    assert all("token" not in line for line in failed)


async def test_dry_run_cli_changes_nothing(pool: asyncpg.Pool, database_url: str) -> None:
    await seed_demo(pool, customers=30, due_on=TODAY, installments=1)
    done = await _collector(
        "run", "--dry-run", "--json", "--date", TODAY.isoformat(), env=_env(database_url)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["due"] == 30 and report["dry_run"] is True
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM charge_attempts") == 0
        assert await conn.fetchval("SELECT count(*) FROM collection_runs") == 0


async def test_dry_run_shows_what_the_eligibility_check_would_refuse(
    pool: asyncpg.Pool, database_url: str, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    # An account whose debit came back R10 (unauthorized), then added again by the customer
    # as a new payment_methods row: the dry run says the next debit would be refused.
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token="sandbox_ach_return_R10", due_dates=[TODAY, TODAY + timedelta(days=30)]
        )
    await run_pass(pool, gateways, settings, as_of=TODAY)
    await run_pass(pool, gateways, settings, as_of=TODAY + timedelta(days=5))
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM charge_returns WHERE category = 'unauthorized'"
            )
            == 1
        )
        await conn.execute(
            "UPDATE payment_methods SET is_primary = false WHERE id = $1", lease.method_id
        )
        await conn.execute(
            "INSERT INTO payment_methods (customer_id, kind, gateway, token, last4, is_primary)"
            " VALUES ($1, 'ach', 'sandbox_ach', 'sandbox_ach_return_R10', '6789', true)",
            lease.customer_id,
        )
        attempts = await conn.fetchval("SELECT count(*) FROM charge_attempts")
    later = (TODAY + timedelta(days=30)).isoformat()
    # The test's dates are pinned: its later one may still be ahead of the machine's today.
    done = await _collector(
        "run", "--dry-run", "--json", "--date", later, "--allow-future-date", env=_env(database_url)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["refused"] == [
        {
            "reason": "authorization_revoked",
            "installments": 1,
            "amount_cents": 5_000,
            "sample_ids": [lease.installment_ids[1]],
        }
    ]
    assert "would refuse 1 (authorization_revoked" in done.stdout
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM charge_attempts") == attempts


async def test_bad_setting_fails_at_start_naming_it(database_url: str) -> None:
    done = await _collector("run", env=_env(database_url, COLLECTOR_CONCURRENCY="lots"))
    assert done.returncode == 1
    assert "COLLECTOR_CONCURRENCY" in done.stderr


async def test_bad_time_zone_fails_naming_the_setting(database_url: str) -> None:
    done = await _collector("run", env=_env(database_url, COLLECTOR_TIMEZONE="Mars/Olympus"))
    assert done.returncode == 1
    assert "COLLECTOR_TIMEZONE" in done.stderr


async def test_unreachable_database_is_a_clear_error(database_url: str) -> None:
    url = "postgresql://collector:secret-pw@127.0.0.1:1/nowhere"
    done = await _collector("run", env=_env(url))
    assert done.returncode == 1
    assert "cannot connect to the database" in done.stderr
    assert "secret-pw" not in done.stderr


async def test_bad_date_is_a_usage_error(database_url: str) -> None:
    done = await _collector("run", "--date", "26/11/2026", env=_env(database_url))
    assert done.returncode == 2
    assert "not a date" in done.stderr


@pytest.mark.slow
async def test_killed_pass_is_finished_by_the_next_run_charging_each_once(
    pool: asyncpg.Pool, database_url: str
) -> None:
    total = 10_000
    await seed_demo(pool, customers=total, due_on=TODAY, mix="ok", installments=1)
    # With 10 ms a charge and 64 in flight, every instant of the pass has claimed charges that
    # are not yet recorded, so the kill always lands mid-protocol.
    env = _env(
        database_url,
        COLLECTOR_SANDBOX_LATENCY_MS="10",
        COLLECTOR_CONCURRENCY="64",
        COLLECTOR_BATCH_SIZE="200",
    )
    proc = await anyio.open_process(
        [sys.executable, "-m", "collector", "run", "--date", TODAY.isoformat()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with proc:
        # Kill it mid-pass: once some charges are recorded, well before all are.
        deadline = time.monotonic() + 60
        async with pool.acquire() as conn:
            while True:
                done = await conn.fetchval(
                    "SELECT count(*) FROM charge_attempts WHERE status = 'succeeded'"
                )
                if done >= total // 10:
                    break
                assert proc.returncode is None, "the pass ended before it could be killed"
                assert time.monotonic() < deadline, "the pass made no progress"
        proc.send_signal(signal.SIGKILL)
        with anyio.fail_after(30):
            await proc.wait()

    async with pool.acquire() as conn:
        left = await conn.fetchval("SELECT count(*) FROM charge_attempts WHERE status = 'pending'")
        assert left > 0, "the kill did not land mid-pass; the test proves nothing"
        assert (
            await conn.fetchval("SELECT count(*) FROM installments WHERE status = 'paid'") < total
        )

    rerun = await _collector("run", "--date", TODAY.isoformat(), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["reconciled"] >= left

    async with pool.acquire() as conn:
        statuses = dict(await conn.fetch("SELECT status, count(*) FROM installments GROUP BY 1"))
        assert statuses == {"paid": total}
        attempts = dict(await conn.fetch("SELECT status, count(*) FROM charge_attempts GROUP BY 1"))
        assert attempts == {"succeeded": total}
        counts = await sandbox_charge_counts(conn)
    assert len(counts) == total
    assert set(counts.values()) == {1}


@pytest.mark.parametrize("command", [["migrate"], ["seed", "--customers", "5"]])
async def test_migrate_and_seed_commands(database_url: str, command: list[str]) -> None:
    done = await _collector(*command, env=_env(database_url))
    assert done.returncode == 0, done.stderr


async def test_run_writes_its_metrics_to_a_textfile(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await seed_demo(pool, customers=20, due_on=TODAY, installments=1)
    textfile = tmp_path / "collector.prom"
    done = await _collector(
        "run",
        "--date",
        TODAY.isoformat(),
        env=_env(database_url, COLLECTOR_METRICS_TEXTFILE=str(textfile)),
    )
    assert done.returncode == 0, done.stderr
    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text())}
    passes = {
        s.labels["status"]: s.value
        for s in families["collector_passes"].samples
        if s.name.endswith("_total")
    }
    assert passes == {"completed": 1.0, "failed": 0.0}
    charges = sum(
        s.value
        for s in families["collector_charges"].samples
        if s.name == "collector_charges_total"
    )
    assert charges == 20
    assert families["collector_last_success_timestamp_seconds"].samples[0].value > 0
    states = {s.labels["state"] for s in families["collector_installments"].samples}
    assert states == {"due_today", "overdue", "in_doubt", "pending_settlement"}


async def test_an_unreachable_pushgateway_does_not_fail_a_completed_pass(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await seed_demo(pool, customers=3, due_on=TODAY, installments=1, mix="ok")
    done = await _collector(
        "run",
        "--date",
        TODAY.isoformat(),
        env=_env(database_url, COLLECTOR_PUSHGATEWAY_URL="http://127.0.0.1:1"),
    )
    assert done.returncode == 0, done.stderr
    assert "metrics_export_failed" in done.stderr


async def test_each_runs_textfile_holds_the_business_days_totals_its_counters_cannot(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Two `collector run` processes on the same business date: the second's counters start
    at 0 (it charged nothing), while the database-derived gauges still hold the day's total."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from prometheus_client.parser import text_string_to_metric_families

    # The gauges describe the current business date (the clock's, in the lessor's zone).
    today = datetime.now(ZoneInfo("America/New_York")).date()
    await seed_demo(pool, customers=20, due_on=today, installments=1)
    textfile = tmp_path / "collector.prom"
    env = _env(database_url, COLLECTOR_METRICS_TEXTFILE=str(textfile))

    def samples() -> dict[str, list[tuple[dict[str, str], float]]]:
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(textfile.read_text()):
            for s in family.samples:
                found.setdefault(s.name, []).append((s.labels, s.value))
        return found

    def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
        return sum(value for _labels, value in found.get(name, []))

    done = await _collector("run", "--date", today.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    first = samples()
    done = await _collector("run", "--date", today.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    second = samples()
    attempts = await pool.fetchval("SELECT count(*) FROM charge_attempts WHERE as_of = $1", today)
    assert attempts > 0
    assert total(first, "collector_charges_total") == attempts
    # The second process answered nothing: its counter says 0, an increase() of it less.
    assert total(second, "collector_charges_total") == 0
    assert total(second, "collector_business_day_attempts") == attempts
    passes = {labels["status"]: value for labels, value in second["collector_business_day_passes"]}
    assert passes["completed"] == 2
