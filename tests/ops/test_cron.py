"""ops/cron/collector.crontab: an /etc/cron.d line that cron will accept, running one pass a
day as the collector user, with the same settings and textfile as the systemd timer."""

from __future__ import annotations

import re
import shlex
import subprocess
from datetime import datetime, timedelta

from croniter import croniter

from collector.config import Settings
from tests.ops.helpers import OPS, parse_unit

CRONTAB = OPS / "cron" / "collector.crontab"
_ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def job_lines() -> list[str]:
    lines = [line.strip() for line in CRONTAB.read_text().splitlines()]
    return [
        line for line in lines if line and not line.startswith("#") and not _ENV_LINE.match(line)
    ]


def job() -> tuple[list[str], str, str]:
    """(the five time fields, the user, the command) of the only job line."""
    (line,) = job_lines()
    *fields, user, command = line.split(None, 6)
    return fields, user, command


def pass_script() -> list[str]:
    """The words of the script the command hands to /bin/sh -c."""
    _fields, _user, command = job()
    words = shlex.split(command)
    assert words[:2] == ["/bin/sh", "-c"], command
    return shlex.split(words[2])


def test_the_file_has_one_job_with_five_valid_time_fields_and_a_user() -> None:
    fields, user, _command = job()
    assert len(fields) == 5
    assert croniter.is_valid(" ".join(fields))
    assert user == "collector"


def test_croniter_would_refuse_a_broken_line() -> None:
    # The check above can fail: an hour of 24, or six time fields, is not a valid expression.
    assert not croniter.is_valid("0 24 * * *")
    assert not croniter.is_valid("0 6 * * * collector")


def test_the_job_runs_daily_at_the_daemons_time() -> None:
    fields, _user, _command = job()
    schedule = croniter(" ".join(fields), datetime(2026, 3, 7, 12, 0))
    runs = [schedule.get_next(datetime) for _ in range(3)]
    hour, minute = map(int, Settings.model_fields["schedule_time"].default.split(":"))
    assert all((run.hour, run.minute) == (hour, minute) for run in runs)
    assert runs[1] - runs[0] == runs[2] - runs[1] == timedelta(days=1)


def test_the_command_runs_one_pass_with_the_units_settings_and_textfile() -> None:
    _fields, _user, command = job()
    assert "%" not in command, "cron turns % into a newline"
    script = pass_script()
    exec_at = script.index("exec")
    run_unit = parse_unit((OPS / "systemd" / "collector-run.service").read_text())
    # At the unit's niceness: the portal's requests come before the pass on a shared host.
    assert script[exec_at + 1 : exec_at + 4] == ["nice", "-n", run_unit["Service"]["Nice"][0]]
    binary, subcommand = script[exec_at + 4 : exec_at + 6]
    assert binary.startswith("/") and binary.endswith("/collector")
    assert subcommand == "run"
    env_file = run_unit["Service"]["EnvironmentFile"][0]
    assert f". {env_file}" in " ".join(script)
    textfile = dict(item.split("=", 1) for item in run_unit["Service"]["Environment"])
    setting = "COLLECTOR_METRICS_TEXTFILE=" + textfile["COLLECTOR_METRICS_TEXTFILE"]
    # Exported (set -a is on from the start) and after the settings file, so it wins.
    assert script[:2] == ["set", "-a"]
    assert "+a" not in script[: script.index(setting)]
    assert script.index(env_file) < script.index(setting) < exec_at


def test_the_shell_script_parses() -> None:
    _fields, _user, command = job()
    script = shlex.split(command)[2]
    subprocess.run(["/bin/sh", "-n", "-c", script], check=True, capture_output=True)
