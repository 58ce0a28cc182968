"""Every failure at start ends in one line on stderr and a non-zero exit, never a traceback
nor a password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.commands import collector, env_for

NOWHERE = "postgresql://collector:secret-pw@127.0.0.1:1/nowhere"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (NOWHERE, "cannot connect to the database"),
        ("postgresql://collector:secret-pw@nowhere.invalid/db", "cannot connect"),
        ("postgresql://collector:secret-pw@127.0.0.1/db?sslmode=bogus", "sslmode"),
        ("postgresql://collector:secret-pw@127.0.0.1:99999/db", "COLLECTOR_DATABASE_URL"),
        ("postgresql://collector:secret-pw@[::1/db", "COLLECTOR_DATABASE_URL"),
        ("postgresql://collector:secret-pw@host:port/db", "COLLECTOR_DATABASE_URL"),
    ],
)
async def test_a_bad_database_url_is_one_line_without_its_password(url: str, says: str) -> None:
    done = await collector("run", env=env_for(url))
    assert done.returncode == 1, done.stderr
    line = done.one_error_line()
    assert says in line
    assert "secret-pw" not in done.stderr


@pytest.mark.parametrize("under", ["a-file", "proc"])
async def test_an_unusable_data_directory_is_one_line_naming_it(tmp_path: Path, under: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = blocker / "data" if under == "a-file" else Path("/proc/collector-data")
    env = env_for("", COLLECTOR_DATA_DIR=str(data_dir))
    del env["COLLECTOR_DATABASE_URL"]
    done = await collector("migrate", env=env)
    assert done.returncode == 1, done.stderr
    line = done.one_error_line()
    assert "COLLECTOR_DATA_DIR" in line and str(data_dir) in line


async def test_the_audit_that_cannot_run_is_one_line_and_exit_2() -> None:
    done = await collector("audit", "--json", env=env_for(NOWHERE))
    assert done.returncode == 2, done.stderr
    assert "cannot connect" in done.one_error_line()
    assert json.dumps("secret-pw") not in done.stderr
