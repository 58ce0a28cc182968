"""Running ``python -m collector`` as operators do, and reading what it said."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import anyio

ZONE = "America/New_York"


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a child ``collector``: no COLLECTOR_ setting but the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = database_url
    env["COLLECTOR_TIMEZONE"] = ZONE
    env.update(extra)
    return env


def local_today() -> date:
    """Today where the child computes it: in ``ZONE``."""
    return datetime.now(ZoneInfo(ZONE)).date()


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def messages(self) -> list[str]:
        """What stderr says besides the JSON log lines: for a failure, one line."""
        return [line for line in self.stderr.splitlines() if line and not _is_json(line)]

    @property
    def events(self) -> list[dict[str, object]]:
        """The JSON log lines on stderr."""
        return [json.loads(line) for line in self.stderr.splitlines() if _is_json(line)]

    def one_error_line(self) -> str:
        """The failure's one line; asserts there is exactly one, beside the JSON log lines (a
        traceback printed would be more lines)."""
        assert len(self.messages) == 1, self.stderr
        [line] = self.messages
        assert line.startswith("collector: error: "), line
        return line


def _is_json(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


async def collector(*args: str, env: dict[str, str], timeout_s: float = 120) -> Done:
    """Run ``python -m collector ARGS`` to its end."""
    with anyio.fail_after(timeout_s):
        done = await anyio.run_process(
            [sys.executable, "-m", "collector", *args], env=env, check=False
        )
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())
