"""The daemon's start when the database is not there yet: wait for it, and say why meanwhile.

A daemon that could not reach the database at start used to exit 1; systemd restarted it
every 5 s and gave up for good after five tries (``StartLimitBurst``), about two minutes: a
database restarted for an upgrade, or a host that boots before its database, left no daemon
at all. Now the daemon keeps trying with backoff (1 s, doubling, at most
:data:`MAX_BACKOFF_S`), logs each failure (``database_unavailable``), and serves meanwhile
``/healthz`` (200: the process is up), ``/readyz`` (503 with the reason, for the load
balancer and the operator) and ``/metrics``; the portal API answers 503 until it is ready.
SIGTERM while waiting ends the daemon at once, exit 0. A failed migration is not retried: it
is a bug or a schema to fix, not a database still booting.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from collector.api.server import serve_api
from collector.config import Settings
from collector.exceptions import DatabaseError, MigrationError
from collector.logs import get_logger
from collector.metrics import REGISTRY

log = get_logger()

MAX_BACKOFF_S = 30.0
"""Longest wait between two tries to reach the database at start."""


class StartingApp:
    """What the daemon answers while it waits for the database."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response: Response
        if scope["path"] == "/healthz":
            response = JSONResponse({"status": "ok"})
        elif scope["path"] == "/metrics":
            response = Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
        else:
            response = JSONResponse(
                {
                    "status": "unavailable",
                    "detail": f"starting: waiting for the database ({self.reason})",
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )
        await response(scope, receive, send)


async def wait_for_database(
    ready: Callable[[], Awaitable[None]],
    settings: Settings,
    *,
    host: str,
    port: int,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> bool:
    """Call ``ready()`` (connect and migrate) until it does not raise DatabaseError, serving
    the probes meanwhile; return False when SIGTERM or SIGINT came first."""
    try:
        await ready()
        return True
    except MigrationError:
        raise
    except DatabaseError as exc:
        reason = str(exc)
    app = StartingApp(reason)
    stop_serving = anyio.Event()
    stopped = anyio.Event()
    ok = False

    async def nap(seconds: float) -> None:
        if sleep is not None:
            await sleep(seconds)
            return
        with anyio.move_on_after(seconds):
            await stopped.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(partial(serve_api, app, settings, host=host, port=port, stop=stop_serving))
        listening = anyio.CancelScope()
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def on_signal() -> None:
                with listening:
                    async for signum in signals:
                        log.info("daemon_stopping", signal=signal.Signals(signum).name)
                        stopped.set()
                        return

            tg.start_soon(on_signal)
            delay = 1.0
            while not stopped.is_set():
                log.warning("database_unavailable", error=app.reason, retry_in_s=delay)
                await nap(delay)
                if stopped.is_set():
                    break
                try:
                    await ready()
                except MigrationError:
                    raise
                except DatabaseError as exc:
                    app.reason = str(exc)
                    delay = min(delay * 2, MAX_BACKOFF_S)
                    continue
                ok = True
                log.info("database_available")
                break
            listening.cancel()
            # The placeholder closes gracefully; the real server binds the port next.
            stop_serving.set()
    return ok
