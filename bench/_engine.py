"""Run ``collector run --json`` as K child processes on one database and measure them.

The pass's window is the union of the children's ``collection_runs`` rows (first
``started_at`` to last ``finished_at``, the database's clock, which is this machine's): it
leaves out each process's start-up, migrations check and exit, as ``duration_s`` does. While
the children run, a sampler reads every 50 ms their CPU time, the server's CPU time and the
WAL position, so what the pass used is interpolated at its window's ends; statements are the
server log's lines stamped inside the window. Commits are counted over the children's whole
lives (``pg_stat_database`` counters reach the view only as backends flush them), a few dozen
more than the pass's own.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import psutil

from bench._measure import Server, Snapshot, Usage, lsn_of

SAMPLE_S = 0.05


def engine_env(url: str, *, gateway: str, latency_ms: float, **settings: object) -> dict[str, str]:
    """The environment of a ``collector run`` child: this one without any COLLECTOR_ variable,
    then the database, the gateways (``memory`` or ``sandbox``), their latency and any other
    settings given as keyword arguments (``concurrency=64`` -> COLLECTOR_CONCURRENCY)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = url
    env["COLLECTOR_GATEWAYS"] = f"{gateway}_card,{gateway}_ach"
    env["COLLECTOR_SANDBOX_LATENCY_MS"] = f"{latency_ms:g}"
    for name, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"COLLECTOR_{name.upper()}"] = str(value)
    return env


@dataclass(slots=True)
class _Sample:
    at: float
    client_cpu_s: float
    server_cpu_s: float
    wal_lsn: int


@dataclass(slots=True)
class EngineRun:
    """What K ``collector run`` children did, and what the pass cost."""

    workers: int
    summaries: list[dict[str, Any]]
    pass_s: float  # the union of the run rows' windows
    wall_s: float  # first child started to last exited
    peak_rss_mb: float  # the largest of the children's
    client_cpu_s: float  # the children's CPU within the pass window
    server_cpu_s: float  # the server's CPU within the pass window
    wal_bytes: int  # within the pass window
    usage: Usage  # over the children's lives (commits, rows written)
    statements: Counter[str] = field(default_factory=Counter)  # within the pass window
    # name -> (count, server ms), over the children's lives; only with durations=True
    durations: dict[str, tuple[int, float]] = field(default_factory=dict)
    memory_gateway_charges: int | None = None  # what memory gateways said they took
    memory_gateway_repeats: int = 0
    memory_gateway_record_mb: float = 0.0  # the largest child's record, all its gateways

    @property
    def charged(self) -> int:
        return sum(int(s["succeeded"]) + int(s["processing"]) for s in self.summaries)

    @property
    def due(self) -> int:
        return sum(int(s["due"]) for s in self.summaries)

    @property
    def per_s(self) -> float:
        return self.charged / self.pass_s if self.pass_s > 0 else 0.0


class EngineFailed(RuntimeError):
    pass


def _interpolate(samples: list[_Sample], at: float) -> _Sample:
    times = [s.at for s in samples]
    i = bisect.bisect_left(times, at)
    if i <= 0:
        return samples[0]
    if i >= len(samples):
        return samples[-1]
    a, b = samples[i - 1], samples[i]
    f = (at - a.at) / (b.at - a.at) if b.at > a.at else 0.0
    return _Sample(
        at=at,
        client_cpu_s=a.client_cpu_s + f * (b.client_cpu_s - a.client_cpu_s),
        server_cpu_s=a.server_cpu_s + f * (b.server_cpu_s - a.server_cpu_s),
        wal_lsn=round(a.wal_lsn + f * (b.wal_lsn - a.wal_lsn)),
    )


async def run_engine(
    server: Server,
    url: str,
    database: str,
    env: dict[str, str],
    *,
    as_of: date,
    workers: int = 1,
    count_statements: bool = True,
    durations: bool = False,
) -> EngineRun:
    """Start ``workers`` ``collector run --json --date as_of`` children at once on ``url``,
    wait for all of them, and measure the pass (see the module's docstring)."""
    if count_statements:
        await server.log_statements(database)
    if durations:
        await server.log_durations(database)
    before: Snapshot = await server.snapshot(database)
    command = [sys.executable, "-m", "collector", "run", "--json", "--date", as_of.isoformat()]
    samples: list[_Sample] = []
    cpu_of: dict[int, float] = {}
    rusage: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        outputs = [(Path(tmp) / f"{n}.out", Path(tmp) / f"{n}.err") for n in range(workers)]
        started = time.monotonic()
        procs: list[subprocess.Popen[bytes]] = []
        for out_path, err_path in outputs:
            with out_path.open("wb") as out, err_path.open("wb") as err:
                # Popen returns once the child is forked; nothing here waits on it.
                procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))  # noqa: ASYNC220
        watched = {p.pid: psutil.Process(p.pid) for p in procs}
        admin = await asyncpg.connect(server.url)
        try:
            while len(rusage) < len(procs):
                for pid, proc in watched.items():
                    if pid in rusage:
                        continue
                    try:
                        t = proc.cpu_times()
                        cpu_of[pid] = t.user + t.system
                    except psutil.NoSuchProcess:
                        pass
                    # WNOHANG: never blocks; wait4 gives this child's own peak RSS.
                    done_pid, status, child_usage = os.wait4(pid, os.WNOHANG)  # noqa: ASYNC222
                    if done_pid:
                        rusage[pid] = (status, child_usage)
                        cpu_of[pid] = child_usage.ru_utime + child_usage.ru_stime
                lsn = lsn_of(await admin.fetchval("SELECT pg_current_wal_lsn()::text"))
                samples.append(
                    _Sample(
                        at=time.time(),
                        client_cpu_s=sum(cpu_of.values()),
                        server_cpu_s=server.server_cpu_s(),
                        wal_lsn=lsn,
                    )
                )
                await anyio.sleep(SAMPLE_S)
        finally:
            for p in procs:
                if p.pid not in rusage and p.poll() is None:
                    p.kill()
            await admin.close()
        wall_s = time.monotonic() - started
        summaries = []
        memory_charges: int | None = None
        memory_repeats = 0
        record_mb = 0.0
        for proc, (out_path, err_path) in zip(procs, outputs, strict=True):
            status, _ = rusage[proc.pid]
            stderr = err_path.read_text(errors="replace")
            if os.waitstatus_to_exitcode(status) != 0:
                raise EngineFailed(f"collector run exited {status}:\n{stderr[-3000:]}")
            summaries.append(json.loads(out_path.read_text().strip().splitlines()[-1]))
            child_record_mb = 0.0
            for line in stderr.splitlines():
                if "memory_gateway_closed" not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                memory_charges = (memory_charges or 0) + int(event["charges"])
                memory_repeats += int(event["repeats"])
                child_record_mb += int(event.get("record_bytes", 0)) / 2**20
            record_mb = max(record_mb, child_record_mb)
    after = await server.snapshot(database)
    usage = Server.usage(before, after)
    conn = await asyncpg.connect(url)
    try:
        window = await conn.fetchrow(
            "SELECT extract(epoch FROM min(started_at))::float8 AS start,"
            " extract(epoch FROM max(finished_at))::float8 AS end"
            " FROM collection_runs WHERE id = ANY ($1::bigint[])",
            [int(s["run_id"]) for s in summaries],
        )
    finally:
        await conn.close()
    assert window is not None
    start, end = window["start"], window["end"]
    first, last = _interpolate(samples, start), _interpolate(samples, end)
    peak_kib = max(u.ru_maxrss for _, u in rusage.values())
    return EngineRun(
        workers=workers,
        summaries=summaries,
        pass_s=end - start,
        wall_s=wall_s,
        # ru_maxrss is in KiB on Linux: each child's own peak, not this process's.
        peak_rss_mb=peak_kib / 1024,
        client_cpu_s=last.client_cpu_s - first.client_cpu_s,
        server_cpu_s=last.server_cpu_s - first.server_cpu_s,
        wal_bytes=last.wal_lsn - first.wal_lsn,
        usage=usage,
        statements=server.count_statements(usage, (start, end)) if count_statements else Counter(),
        durations=server.statement_durations(usage) if durations else {},
        memory_gateway_charges=memory_charges,
        memory_gateway_repeats=memory_repeats,
        memory_gateway_record_mb=record_mb,
    )
