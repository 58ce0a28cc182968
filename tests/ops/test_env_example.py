"""ops/systemd/collector.env.example: it names every setting, each with a comment, and its
active lines mean the same to systemd (EnvironmentFile=) and to sh (the cron line sources it),
and form a valid configuration."""

from __future__ import annotations

import re
import subprocess

import pytest

from collector.config import Settings, load_settings
from tests.ops.helpers import OPS

EXAMPLE = OPS / "systemd" / "collector.env.example"
_ASSIGNMENT = re.compile(r"^(#\s*)?(COLLECTOR_[A-Z0-9_]+)=(.*)$")


def assignments(text: str) -> dict[str, tuple[bool, str]]:
    """Variable → (active, raw value), for both KEY=value and commented-out # KEY=value."""
    found: dict[str, tuple[bool, str]] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            assert match.group(2) not in found, f"{match.group(2)} appears twice"
            found[match.group(2)] = (match.group(1) is None, match.group(3))
    return found


def systemd_value(raw: str) -> str:
    """A value as systemd's EnvironmentFile= reads the forms this file allows: bare, or in
    single quotes (kept literally)."""
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    assert not any(c in raw for c in "'\"\\ #$`"), f"quote this value: {raw!r}"
    return raw


def test_every_setting_is_in_the_example_and_nothing_else() -> None:
    documented = set(assignments(EXAMPLE.read_text()))
    settings = {f"COLLECTOR_{name.upper()}" for name in Settings.model_fields}
    assert sorted(settings - documented) == [], "settings missing from the example"
    assert sorted(documented - settings) == [], "variables no setting reads"


def test_every_variable_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if not _ASSIGNMENT.match(line):
            continue
        above = number - 1
        while above >= 0 and _ASSIGNMENT.match(lines[above]):
            above -= 1  # a block of related variables shares one comment
        assert above >= 0 and lines[above].startswith("# "), f"no comment above {line!r}"


def test_active_lines_read_the_same_in_sh_as_in_systemd() -> None:
    active = {k: systemd_value(v) for k, (on, v) in assignments(EXAMPLE.read_text()).items() if on}
    script = f"set -a && . {EXAMPLE} && exec env -0"
    out = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    from_sh = dict(item.split("=", 1) for item in out.split("\0") if item.startswith("COLLECTOR_"))
    assert from_sh == active


def test_commented_values_keep_the_quoting_rule() -> None:
    for name, (_active, raw) in assignments(EXAMPLE.read_text()).items():
        if raw:
            systemd_value(raw)  # raises on a value sh and systemd would read differently
        else:
            # Tokens are generated per host; the late-fee table is read at start, so an
            # example path would be a file the example's check cannot find (unset: the table
            # shipped with the engine).
            assert name in ("COLLECTOR_API_TOKENS", "COLLECTOR_LATE_FEE_RULES_FILE"), (
                f"{name} has no example value"
            )


def test_the_active_settings_are_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (active, raw) in assignments(EXAMPLE.read_text()).items():
        if active:
            monkeypatch.setenv(name, systemd_value(raw))
    settings = load_settings()
    assert settings.database_url is not None


def test_the_commented_examples_are_valid_too(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (_active, raw) in assignments(EXAMPLE.read_text()).items():
        if raw:
            monkeypatch.setenv(name, systemd_value(raw))
    settings = load_settings()
    assert settings.rate_limits  # the JSON example survived the quoting


def test_the_example_holds_no_secret() -> None:
    text = EXAMPLE.read_text()
    for _active, raw in assignments(text).values():
        password = re.search(r"://[^:/@]+:([^@]+)@", raw)
        assert password is None or password.group(1) == "CHANGE_ME", raw
    assert not assignments(text)["COLLECTOR_API_TOKENS"][1], "tokens are generated per host"


def test_the_example_schedules_like_the_timer() -> None:
    values = {k: v for k, (on, v) in assignments(EXAMPLE.read_text()).items() if on}
    timer = (OPS / "systemd" / "collector-run.timer").read_text()
    calendar = next(line for line in timer.splitlines() if line.startswith("OnCalendar="))
    time_of_day, zone = calendar.split()[-2:]
    assert values["COLLECTOR_TIMEZONE"] == zone
    assert values["COLLECTOR_SCHEDULE_TIME"] + ":00" == time_of_day
