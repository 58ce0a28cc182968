"""Where the test suite finds its PostgreSQL: COLLECTOR_TEST_DATABASE_URL, else a
testcontainers PostgreSQL when a Docker engine answers, else the embedded server."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from collector.db.embedded import start_embedded


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_server(tmp_dir: Path) -> Iterator[str]:
    """Yield a URL of a maintenance database on a server the tests may create databases in."""
    url = os.environ.get("COLLECTOR_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    yield start_embedded(tmp_dir)
