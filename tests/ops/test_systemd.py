"""The systemd units in ops/systemd: systemd itself accepts them (when installed here), and
they say what operations rely on: the right command, the settings file, a graceful stop that
outlasts the engine's grace period, hardening, and a daily timer that catches up."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from collector.config import Settings
from collector.jobs.charging import RECORD_SHIELD_S
from tests.ops.helpers import OPS, UnitFile, one, parse_unit, run_tool, timespan_s, tool

SYSTEMD = OPS / "systemd"
UNITS = ("collector-daemon.service", "collector-run.service", "collector-run.timer")
ENV_FILE = "/etc/collector/collector.env"
GRACE_S = Settings.model_fields["shutdown_grace_s"].default


def unit(name: str) -> UnitFile:
    return parse_unit((SYSTEMD / name).read_text())


def command(u: UnitFile) -> list[str]:
    return shlex.split(one(u, "Service", "ExecStart"))


def test_the_daemon_unit_runs_collector_daemon_as_its_own_user() -> None:
    daemon = unit("collector-daemon.service")
    assert set(daemon) == {"Unit", "Service", "Install"}
    argv = command(daemon)
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "collector"
    assert argv[1:2] == ["daemon"]
    assert one(daemon, "Service", "Type") in {"exec", "simple"}
    assert one(daemon, "Service", "User") == "collector"
    assert one(daemon, "Service", "EnvironmentFile") == ENV_FILE
    assert one(daemon, "Service", "Restart") == "on-failure"
    assert one(daemon, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(daemon, "Unit", "After").split()


def test_the_run_unit_is_a_oneshot_that_writes_the_textfile() -> None:
    run = unit("collector-run.service")
    # No [Install]: the timer starts it; enabling the service itself would be a mistake.
    assert set(run) == {"Unit", "Service"}
    argv = command(run)
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "collector"
    assert argv[1:2] == ["run"]
    assert one(run, "Service", "Type") == "oneshot"
    assert one(run, "Service", "User") == "collector"
    assert one(run, "Service", "EnvironmentFile") == ENV_FILE
    env = dict(item.split("=", 1) for item in run["Service"]["Environment"])
    textfile = Path(env["COLLECTOR_METRICS_TEXTFILE"])
    # node_exporter reads only *.prom files.
    assert textfile.suffix == ".prom"
    # ProtectSystem=strict makes the file system read-only except for these.
    writable = [p.lstrip("-") for p in run["Service"]["ReadWritePaths"]]
    assert str(textfile.parent) in writable
    # node_exporter runs as another user and must read the file the pass creates.
    assert int(one(run, "Service", "UMask"), 8) & 0o004 == 0
    assert timespan_s(one(run, "Service", "TimeoutStartSec")) > 0


@pytest.mark.parametrize("name", ["collector-daemon.service", "collector-run.service"])
def test_a_stop_waits_for_the_grace_period_and_the_shielded_record(name: str) -> None:
    service = unit(name)["Service"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]
    # After the grace, answers already received are recorded under a shield: systemd must not
    # SIGKILL before both are over, with room left to close the pool and the HTTP server.
    assert timespan_s(service["TimeoutStopSec"][0]) >= GRACE_S + RECORD_SHIELD_S + 30


@pytest.mark.parametrize("name", ["collector-daemon.service", "collector-run.service"])
def test_services_are_hardened(name: str) -> None:
    service = unit(name)["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": None,  # present and empty: no capabilities at all
    }
    for key, value in expected.items():
        assert key in service, f"{name}: {key} missing"
        assert service[key] == ([] if value is None else [value]), f"{name}: {key}"


def test_the_timer_runs_the_pass_daily_at_the_daemons_time_and_catches_up() -> None:
    timer = unit("collector-run.timer")
    assert set(timer) == {"Unit", "Timer", "Install"}
    assert one(timer, "Timer", "Persistent") == "true"
    target = one(timer, "Timer", "Unit")
    assert target == "collector-run.service"
    assert (SYSTEMD / target).is_file()
    assert one(timer, "Install", "WantedBy") == "timers.target"
    # Same time and zone as the daemon's defaults: switching between them moves nothing.
    calendar = one(timer, "Timer", "OnCalendar")
    match = re.fullmatch(r"\*-\*-\* (\d\d:\d\d):00 ([\w/+-]+)", calendar)
    assert match is not None, calendar
    assert match.group(1) == Settings.model_fields["schedule_time"].default
    assert match.group(2) == Settings.model_fields["timezone"].default


def test_the_parser_keeps_repeated_keys_and_rejects_stray_lines() -> None:
    parsed = parse_unit("[Service]\nEnvironment=A=1\nEnvironment=B=2 \\\n  C=3\n")
    assert parsed["Service"]["Environment"] == ["A=1", "B=2 C=3"]
    assert parse_unit("[Service]\nEnvironment=A=1\nEnvironment=\n")["Service"]["Environment"] == []
    with pytest.raises(ValueError, match="not a key=value"):
        parse_unit("ExecStart=/bin/true\n")


SYSTEMD_ANALYZE = tool("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def _units_with_a_real_binary(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart points at an executable that exists here:
    `verify` refuses a unit whose binary is missing, and /usr/local/bin/collector is not
    installed on a test machine."""
    fake = tmp_path / "collector"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    copies = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace("/usr/local/bin/collector", str(fake))
        copy = tmp_path / name
        copy.write_text(text)
        copies.append(copy)
    return copies


@needs_systemd
def test_systemd_analyze_verifies_the_units_without_a_warning(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    copies = _units_with_a_real_binary(tmp_path)
    result = run_tool([SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, copies)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on an unknown key or a bad value ("…, ignoring"): any line naming one of
    # our units is a mistake.
    ours = [line for line in result.stderr.splitlines() if any(n in line for n in UNITS)]
    assert ours == []


@needs_systemd
def test_systemd_analyze_verify_would_catch_a_misspelt_key(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    copies = _units_with_a_real_binary(tmp_path)
    daemon = copies[0]
    daemon.write_text(daemon.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = run_tool([SYSTEMD_ANALYZE, "verify", "--man=no", str(daemon)], cwd=tmp_path)
    assert "Unknown key" in result.stderr


@needs_systemd
def test_systemd_analyze_reads_the_timers_calendar_as_a_daily_time() -> None:
    assert SYSTEMD_ANALYZE is not None
    calendar = one(unit("collector-run.timer"), "Timer", "OnCalendar")
    result = run_tool([SYSTEMD_ANALYZE, "calendar", "--iterations=2", calendar])
    assert result.returncode == 0, result.stderr
    assert f"Normalized form: {calendar}" in result.stdout
    assert result.stdout.count("Next elapse") + result.stdout.count("Iter. #2") == 2


@needs_systemd
def test_the_services_exposure_stays_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    services = [p for p in _units_with_a_real_binary(tmp_path) if p.suffix == ".service"]
    # --threshold is on systemd's 0-100 scale; 20 is an exposure of 2.0 ("OK" ends at 3.9).
    result = run_tool(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20", *map(str, services)],
        cwd=tmp_path,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250")
    assert result.returncode == 0, result.stdout[-2000:]


def _example_paths() -> dict[str, Path]:
    """The paths the settings example gives for what the engine writes."""
    from tests.ops.test_env_example import EXAMPLE, assignments

    values = {k: v for k, (_on, v) in assignments(EXAMPLE.read_text()).items() if v}
    return {
        "outbox": Path(values["COLLECTOR_NACHA_OUTBOX"]),
        "textfile": Path(values["COLLECTOR_METRICS_TEXTFILE"]).parent,
    }


def _writable(service: dict[str, list[str]]) -> list[Path]:
    paths = [Path(p.lstrip("-")) for p in service.get("ReadWritePaths", [])]
    paths += [Path("/var/lib") / d for d in service.get("StateDirectory", [])]
    return paths


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


@pytest.mark.parametrize(
    ("name", "writes"),
    [
        # The daemon's passes export NACHA files; the run's too, and it writes the textfile.
        ("collector-daemon.service", ("outbox",)),
        ("collector-run.service", ("outbox", "textfile")),
    ],
)
def test_every_path_the_engine_writes_is_writable_under_protect_system_strict(
    name: str, writes: tuple[str, ...]
) -> None:
    service = unit(name)["Service"]
    assert one(unit(name), "Service", "ProtectSystem") == "strict"
    writable = _writable(service)
    paths = _example_paths()
    for what in writes:
        assert _under(paths[what], writable), f"{name}: {what} {paths[what]} is read-only"
    # The embedded server's home, when used, is the state directory (the working directory).
    assert Path(one(unit(name), "Service", "WorkingDirectory")) in writable


def test_the_writable_check_catches_a_missing_outbox() -> None:
    service = {"ReadWritePaths": ["-/var/lib/node_exporter/textfile_collector"]}
    assert not _under(_example_paths()["outbox"], _writable(service))
