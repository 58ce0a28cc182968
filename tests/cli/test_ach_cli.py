"""``collector ach export`` and ``collector ach import-returns`` as operators run them."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import anyio
import asyncpg
import pytest

from collector.ach.nacha import validate
from collector.gateways.base import GatewayContext, Processing
from collector.gateways.nacha_files import open_nacha
from tests.gateways.test_nacha_adapter import (
    ODFI,
    THANKSGIVING,
    build_return_file,
    nacha_options,
    request,
)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def _env(database_url: str, options: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = database_url
    env.update({f"COLLECTOR_NACHA_{key.upper()}": value for key, value in options.items()})
    return env


async def _collector(*args: str, env: dict[str, str]) -> Done:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "collector", *args], env=env, check=False
        )
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_a_file_that_is_not_a_return_file_exits_1_and_applies_nothing(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(database_url, nacha_options(tmp_path))
    bad = tmp_path / "returns.ach"
    bad.write_text("this is not a NACHA file\n")

    done = await _collector("ach", "import-returns", str(bad), env=env)

    assert done.returncode == 1
    assert "cannot import" in done.stderr and "nothing was applied" in done.stderr
    assert "Traceback" not in done.stderr

    missing = await _collector("ach", "import-returns", str(tmp_path / "absent.ach"), env=env)
    assert missing.returncode == 1
    assert "No such file" in missing.stderr


async def test_export_then_import_returns_through_the_command(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    options = nacha_options(tmp_path)
    env = _env(database_url, options)
    ctx = GatewayContext(name="nacha", database_url=database_url, options=options)
    async with open_nacha(ctx) as nacha:
        outcome = await nacha.charge(request("k1", on=THANKSGIVING))
    assert isinstance(outcome, Processing)

    done = await _collector("ach", "export", "--date", THANKSGIVING.isoformat(), env=env)

    assert done.returncode == 0, done.stderr
    assert "1 NACHA file(s) written" in done.stdout
    [name] = os.listdir(options["outbox"])
    path = Path(options["outbox"]) / name
    assert validate(path.read_text()) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "12345678901" not in done.stdout + done.stderr

    # A return for a trace this engine never sent: read, counted as unknown, nothing applied.
    returns = tmp_path / "returns.ach"
    returns.write_text(
        build_return_file([("26", "1", "NOBODY", 5000, "R03", ODFI + "9999999", " " * 6, "99")])
    )
    imported = await _collector(
        "ach", "import-returns", str(returns), "--date", date(2026, 11, 30).isoformat(), env=env
    )
    assert imported.returncode == 0, imported.stderr
    assert "returns applied: 0, already applied: 0, unknown: 1" in imported.stdout


@pytest.mark.ledger_left_dirty(
    "a malformed return entry is set aside and stays open for an operator"
)
async def test_a_return_file_with_changes_and_a_bad_entry_is_imported_by_the_command(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = _env(database_url, nacha_options(tmp_path))
    returns = tmp_path / "returns.ach"
    returns.write_text(
        build_return_file(
            [
                ("26", "1", "NOBODY", 5000, "R03", ODFI + "9999999", " " * 6, "99"),
                ("26", "1", "NOBODY", 5000, "RXX", ODFI + "9999998", " " * 6, "99"),
            ],
            changes=[("26", "12345678901", "JOSE ALVAREZ", 0, "C01", ODFI + "9999997", "", "98")],
            corrected=["12345678999"],
        )
    )

    done = await _collector(
        "ach", "import-returns", str(returns), "--date", date(2026, 11, 30).isoformat(), env=env
    )

    assert done.returncode == 0, done.stderr
    # The change names a trace this originator never sent: no entry, no customer to file it
    # under, so it is set aside (sql/0022), beside the malformed return.
    assert "unknown: 1, deferred: 0, changes recorded: 0, set aside: 2" in done.stdout
    assert "12345678999" not in done.stdout + done.stderr
    assert await pool.fetchval("SELECT count(*) FROM ach_notifications_of_change") == 0
    assert (
        await pool.fetchval(
            "SELECT reason FROM needs_attention WHERE subject_id = $1", ODFI + "9999997"
        )
        == "change_for_unknown_entry"
    )
