"""``collector audit`` as operators run it: a real subprocess against a real database."""

from __future__ import annotations

import json
import os
import sys

import anyio
import asyncpg
import pytest

from collector.db.audit import CHECKS
from tests.test_audit import Book, book

pytestmark = pytest.mark.ledger_left_dirty("the exit code for violations needs a corrupted ledger")


__all__ = ["book"]  # the fixture, shared with the checks' tests


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = database_url
    return env


async def _audit_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "collector", "audit", *args], env=env, check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_command_exits_0_clean_1_with_violations_and_prints_json(
    pool: asyncpg.Pool, database_url: str, book: Book
) -> None:
    code, out, err = await _audit_cli("--json", env=_env(database_url))
    assert code == 0, err
    assert out.splitlines()[0] == f"audit: clean ({len(CHECKS)} checks)"
    data = json.loads(out.strip().splitlines()[-1])
    assert data["clean"] is True and data["total"] == 0 and set(data["checks"]) == set(CHECKS)

    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE charge_attempts SET gateway_ref = NULL WHERE id = $1", book.paid_attempt
        )
    code, out, err = await _audit_cli("--json", env=_env(database_url))
    assert code == 1, err
    assert out.splitlines()[0] == f"audit: 1 violation(s) in 1 of {len(CHECKS)} checks"
    assert "succeeded_without_reference: 1" in out
    data = json.loads(out.strip().splitlines()[-1])
    assert data["clean"] is False and data["total"] == 1
    [v] = data["checks"]["succeeded_without_reference"]["violations"]
    assert v["attempt_ids"] == [book.paid_attempt] and v["installment_ids"] == [book.paid]
    assert "sandbox_card_ok" not in out  # the method's token never shows

    code, out, _ = await _audit_cli(env=_env(database_url))
    assert code == 1 and not out.strip().splitlines()[-1].startswith("{")


async def test_the_command_exits_2_when_the_database_cannot_be_reached() -> None:
    env = _env("postgresql://nobody@127.0.0.1:9/none")
    code, out, err = await _audit_cli(env=env)
    assert code == 2
    assert "cannot connect to the database" in err and "Traceback" not in err
    assert out == ""
