"""A ``collector run`` that fails, at start or at its last step, leaves a textfile that says so
(and a run row closed with its reason): never a textfile of zeros, never the last good run's."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from collector.seed import seed_demo
from tests.cli.commands import collector, env_for

TODAY = date(2026, 11, 26)


def _values(textfile: Path, name: str) -> dict[str, float]:
    """Samples of ``name`` in the textfile, by their status (or '' when unlabelled)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(textfile.read_text()):
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels.get("status", "")] = sample.value
    return found


async def test_a_run_whose_gateway_will_not_open_is_a_failed_pass_in_the_textfile(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    textfile = tmp_path / "collector.prom"
    env = env_for(
        database_url,
        COLLECTOR_METRICS_TEXTFILE=str(textfile),
        COLLECTOR_GATEWAYS="stripe_card",  # no COLLECTOR_STRIPE_API_KEY: it refuses to open
    )
    done = await collector("run", "--date", TODAY.isoformat(), env=env)
    assert done.returncode == 1
    assert "COLLECTOR_STRIPE_API_KEY" in done.one_error_line()
    assert _values(textfile, "collector_passes_total") == {"completed": 0.0, "failed": 1.0}
    [row] = await pool.fetch("SELECT status, error FROM collection_runs")
    assert row["status"] == "failed" and "COLLECTOR_STRIPE_API_KEY" in row["error"]
    assert any(e.get("event") == "pass_failed" and e.get("step") == "start" for e in done.events)


async def test_a_run_refused_for_its_settings_still_replaces_the_textfile(
    database_url: str, tmp_path: Path
) -> None:
    textfile = tmp_path / "collector.prom"
    textfile.write_text('collector_passes_total{status="completed"} 1.0\n')  # the last good run
    env = env_for(
        database_url, COLLECTOR_METRICS_TEXTFILE=str(textfile), COLLECTOR_GATEWAYS="no_such_gw"
    )
    done = await collector("run", env=env)
    assert done.returncode == 1
    assert _values(textfile, "collector_passes_total") == {"completed": 0.0, "failed": 1.0}


async def test_a_run_that_cannot_write_its_textfile_fails_and_its_row_says_why(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await seed_demo(pool, customers=2, due_on=TODAY, installments=1, mix="ok")
    readonly = tmp_path / "textfile_collector"
    readonly.mkdir()
    readonly.chmod(0o500)
    if os.access(readonly, os.W_OK):  # root ignores the mode: nothing to test here
        readonly.chmod(0o700)
        readonly = tmp_path / "missing" / "dir"
    env = env_for(database_url, COLLECTOR_METRICS_TEXTFILE=str(readonly / "collector.prom"))
    done = await collector("run", "--date", TODAY.isoformat(), env=env)
    assert done.returncode == 1
    assert "metrics export failed" in done.one_error_line()
    [row] = await pool.fetch("SELECT status, error FROM collection_runs")
    assert row["status"] == "failed" and row["error"].startswith("metrics export failed")
    # The charges themselves were made and recorded.
    assert (
        await pool.fetchval("SELECT count(*) FROM charge_attempts WHERE status = 'succeeded'") == 2
    )


async def test_a_completed_run_leaves_no_pass_running_in_its_textfile(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await seed_demo(pool, customers=2, due_on=TODAY, installments=1, mix="ok")
    textfile = tmp_path / "collector.prom"
    env = env_for(database_url, COLLECTOR_METRICS_TEXTFILE=str(textfile))
    done = await collector("run", "--date", TODAY.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    assert _values(textfile, "collector_pass_running_since_timestamp_seconds") == {"": 0.0}
    assert _values(textfile, "collector_passes_total") == {"completed": 1.0, "failed": 0.0}
    assert _values(textfile, "collector_next_pass_due_by_timestamp_seconds")[""] > 0
    events = [e["event"] for e in done.events]
    assert "pass_started" in events
