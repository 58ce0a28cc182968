"""What a benchmark reads off the database server around a measurement.

The embedded server has no ``pg_stat_statements`` (its build ships no contrib modules), so:

- **commits** and **rows written**: ``pg_stat_database`` of the measured database
  (``xact_commit``, ``tup_inserted + tup_updated + tup_deleted``), read once every backend of
  that database has exited (a backend's counters reach the view by the time it leaves
  ``pg_stat_activity``);
- **WAL bytes**: the difference of ``pg_current_wal_lsn()``, server-wide (nothing else runs on
  the benchmarks' server), and full-page images from ``pg_stat_wal``;
- **SQL statements**: the server's own log. :func:`log_statements` sets ``log_statement =
  'all'`` (parameters not logged) on the measured database only, and :func:`count_statements`
  counts the ``statement:`` and ``execute ...:`` lines the measurement added to the log: every
  statement a client had executed, one per simple-protocol query string or extended-protocol
  execute (a round trip each), ``BEGIN`` and ``COMMIT`` included, the engine's named queries
  named;
- **server CPU**: the postmaster's own and its children's CPU time (live children, and the
  exited backends it reaped), from ``/proc`` through psutil.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg
import psutil

from collector.db.queries import load_queries

_LSN = re.compile(r"^([0-9A-F]+)/([0-9A-F]+)$")
_STATEMENT = re.compile(r"\] LOG:  (?:statement|execute [^:]*): (.*)$")
# With log_min_duration_statement = 0: "duration: 1.234 ms  execute <unnamed>: <text>"; the
# parse/bind steps of the extended protocol log their own lines, which are left out.
_DURATION = re.compile(r"\] LOG:  duration: ([0-9.]+) ms  (?:statement|execute [^:]*): (.*)$")
# The log's line prefix is the server's default, '%m [%p] ': milliseconds, in UTC here.
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC ")
_TRANSACTION = re.compile(r"^(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|START)\b", re.IGNORECASE)

SNAPSHOT = """
SELECT d.xact_commit, d.xact_rollback, d.tup_inserted, d.tup_updated, d.tup_deleted,
       d.tup_returned, d.tup_fetched, pg_current_wal_lsn()::text AS lsn,
       w.wal_records, w.wal_fpi
FROM pg_stat_database d, pg_stat_wal w
WHERE d.datname = $1
"""


def lsn_of(text: str) -> int:
    """A WAL position ('16/B374D848') as a byte offset."""
    match = _LSN.match(text)
    assert match is not None, text
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


@dataclass(frozen=True, slots=True)
class Snapshot:
    commits: int
    rollbacks: int
    rows_written: int
    rows_read: int
    wal_lsn: int
    wal_records: int
    wal_fpi: int
    server_cpu_s: float
    log_offset: int


@dataclass(frozen=True, slots=True)
class Usage:
    """What the server did between two snapshots."""

    commits: int
    rows_written: int
    rows_read: int
    wal_bytes: int
    wal_records: int
    wal_fpi: int
    server_cpu_s: float
    log_from: int
    log_to: int

    def per(self, charges: int) -> dict[str, float]:
        n = max(charges, 1)
        return {
            "commits": self.commits / n,
            "rows_written": self.rows_written / n,
            "wal_bytes": self.wal_bytes / n,
            "server_cpu_us": self.server_cpu_s * 1e6 / n,
        }


class Server:
    """The benchmarks' embedded server: its admin URL, its data directory, its log."""

    def __init__(self, url: str, pgdata: Path) -> None:
        self.url = url
        self.pgdata = pgdata
        self.log_path = pgdata / "log"
        self._postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))

    def server_cpu_s(self) -> float:
        """CPU seconds the server has used: the postmaster, its live children, and the
        children it reaped (backends that exited)."""
        times = self._postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self._postmaster.children():
            try:
                t = child.cpu_times()
            except psutil.NoSuchProcess:
                # It exited between the listing and the read: its time is in children_* of
                # the next snapshot (a few ms at most are lost or double counted).
                continue
            total += t.user + t.system
        return float(total)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    async def wait_idle(self, database: str, timeout_s: float = 10.0) -> None:
        """Wait until no backend is connected to ``database`` (so its counters are in)."""
        conn = await asyncpg.connect(self.url)
        try:
            with anyio.move_on_after(timeout_s):
                # Polling the server: nothing here could set an Event.
                while await conn.fetchval(  # noqa: ASYNC110
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
                ):
                    await anyio.sleep(0.02)
        finally:
            await conn.close()

    async def snapshot(self, database: str) -> Snapshot:
        """The counters now (after waiting for ``database``'s backends to leave)."""
        await self.wait_idle(database)
        conn = await asyncpg.connect(self.url)
        try:
            row = await conn.fetchrow(SNAPSHOT, database)
        finally:
            await conn.close()
        assert row is not None, f"no database {database}"
        return Snapshot(
            commits=row["xact_commit"],
            rollbacks=row["xact_rollback"],
            rows_written=row["tup_inserted"] + row["tup_updated"] + row["tup_deleted"],
            rows_read=row["tup_returned"] + row["tup_fetched"],
            wal_lsn=lsn_of(row["lsn"]),
            wal_records=row["wal_records"],
            wal_fpi=row["wal_fpi"],
            server_cpu_s=self.server_cpu_s(),
            log_offset=self.log_size(),
        )

    @staticmethod
    def usage(before: Snapshot, after: Snapshot) -> Usage:
        return Usage(
            commits=after.commits - before.commits,
            rows_written=after.rows_written - before.rows_written,
            rows_read=after.rows_read - before.rows_read,
            wal_bytes=after.wal_lsn - before.wal_lsn,
            wal_records=after.wal_records - before.wal_records,
            wal_fpi=after.wal_fpi - before.wal_fpi,
            server_cpu_s=after.server_cpu_s - before.server_cpu_s,
            log_from=before.log_offset,
            log_to=after.log_offset,
        )

    async def log_statements(self, database: str) -> None:
        """Log every statement executed in ``database`` (new sessions), without parameters."""
        await self._log_on(database, "log_statement = 'all'")

    async def log_durations(self, database: str) -> None:
        """Log every statement executed in ``database`` (new sessions) with its duration."""
        await self._log_on(database, "log_min_duration_statement = 0")

    async def _log_on(self, database: str, setting: str) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            # The name and the setting are the benchmarks' own constants, never input.
            await conn.execute(f'ALTER DATABASE "{database}" SET {setting}')
            await conn.execute(f'ALTER DATABASE "{database}" SET log_parameter_max_length = 0')
        finally:
            await conn.close()

    def statement_durations(self, usage: Usage) -> dict[str, tuple[int, float]]:
        """Per statement name (as :meth:`count_statements` names them): how many ran between
        two snapshots and their total server-side milliseconds, most time first."""
        names = _query_names()
        found: dict[str, tuple[int, float]] = {}
        with self.log_path.open("rb") as log:
            log.seek(usage.log_from)
            text = log.read(max(0, usage.log_to - usage.log_from)).decode("utf-8", "replace")
        lines = text.splitlines()
        for n, line in enumerate(lines):
            match = _DURATION.search(line)
            if match is None:
                continue
            name = _name(match.group(2), lines, n, names)
            count, total = found.get(name, (0, 0.0))
            found[name] = (count + 1, total + float(match.group(1)))
        return dict(sorted(found.items(), key=lambda item: -item[1][1]))

    def count_statements(
        self, usage: Usage, window: tuple[float, float] | None = None
    ) -> Counter[str]:
        """The statements logged between two snapshots (and stamped within ``window``, epoch
        seconds, when given), by name (the engine's named queries) or by their first line."""
        return self.statements_logged(usage.log_from, usage.log_to, window)

    def statements_logged(
        self, log_from: int, log_to: int, window: tuple[float, float] | None = None
    ) -> Counter[str]:
        """As :meth:`count_statements`, between two offsets of the log (:meth:`log_size`)."""
        names = _query_names()
        found: Counter[str] = Counter()
        with self.log_path.open("rb") as log:
            log.seek(log_from)
            text = log.read(max(0, log_to - log_from)).decode("utf-8", "replace")
        lines = text.splitlines()
        for n, line in enumerate(lines):
            match = _STATEMENT.search(line)
            if match is None:
                continue
            if window is not None:
                stamp = _STAMP.match(line)
                if stamp is None:
                    continue
                at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S.%f")
                if not window[0] <= at.replace(tzinfo=UTC).timestamp() <= window[1]:
                    continue
            found[_name(match.group(1), lines, n, names)] += 1
        return found


def _name(first: str, lines: list[str], n: int, names: dict[str, str]) -> str:
    """A logged statement's name: the named query whose first line it is, else its first
    words (a statement's text runs on over the log lines that follow, unprefixed)."""
    head = first.strip()
    if not head and n + 1 < len(lines):
        # A statement that starts with a newline is logged with its text on the next line.
        head = lines[n + 1].strip()
        n += 1
    if head in names:
        return names[head]
    words = head
    for following in lines[n + 1 : n + 6]:
        if len(words) >= 48 or _STAMP.match(following):
            break
        words = f"{words} {following.strip()}".strip()
    return " ".join(words.split())[:72]


def split_statements(found: Counter[str]) -> tuple[int, int]:
    """(all statements, of which transaction control: BEGIN, COMMIT, ...)."""
    control = sum(n for head, n in found.items() if _TRANSACTION.match(head))
    return sum(found.values()), control


def _query_names() -> dict[str, str]:
    """First line of each named query -> its name (the first line is its description)."""
    names: dict[str, str] = {}
    for name, text in load_queries().items():
        first = text.splitlines()[0].strip() if text else ""
        names.setdefault(first, name)
    return names
