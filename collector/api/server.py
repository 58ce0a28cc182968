"""The daemon's HTTP server: uvicorn, with a bound on everything a client can hold of it
before it has authenticated.

uvicorn alone holds a connection that sends nothing, or that trickles its headers a byte at a
time (slowloris), for as long as the client likes; its httptools parser keeps a header of any
size; and every such socket costs a file descriptor, until ``accept()`` fails with EMFILE and
the database pool cannot open a connection either. Its options cover part of this:
``timeout_keep_alive`` (idle between requests) and ``backlog`` are used as they are, but
``limit_concurrency`` answers 503 only once a request's headers are in (too late for an idle
socket), ``h11_max_incomplete_event_size`` applies to the h11 parser only, and there is no
deadline for a request's headers at all. So the server runs :class:`GuardedProtocol`, uvicorn's
httptools protocol (passed as ``http=``, uvicorn's documented way to choose the protocol
class) with what is missing:

- **a header deadline**: a connection's request line and headers must be complete within
  ``COLLECTOR_HTTP_HEADER_TIMEOUT_S`` of its first moment (or of a later request's first byte),
  however slowly the bytes come; else it is closed;
- **a header size limit**: at most ``COLLECTOR_HTTP_MAX_HEADER_BYTES`` reach the parser before
  the headers end; past that, 431 and close;
- **a connection cap** below the process's open-file limit (:func:`plan_limits`): a connection
  past the cap closes the longest-idle connection (one with no request running: just connected,
  still sending its headers, or idle between requests) to make room, so idle sockets never
  starve ``/healthz`` or the API; when every connection has a request running, the new one is
  answered 503 and closed;
- **a write deadline**: a client that stops reading its response for
  ``COLLECTOR_HTTP_BODY_TIMEOUT_S`` is cut off, so the request's task ends.

Request bodies are limited in the application (``collector.api.limits``), where the route and
so the right limit are known. A failing ``accept()`` is counted and logged once per interval
(:class:`AcceptErrorLog`) instead of a traceback per attempt.

Why a subclass rather than another server: uvicorn is what the daemon runs and what its
tests and benchmarks have measured; the protocol class is its extension point, so the missing
limits cost about a hundred lines here rather than a new server to vet.
"""

from __future__ import annotations

import asyncio
import errno
import json
import resource
import socket
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import uvicorn
from anyio.abc import TaskStatus
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from collector.config import Settings
from collector.exceptions import ConfigError
from collector.logs import get_logger
from collector.metrics import HTTP_ACCEPT_ERRORS, HTTP_CONNECTIONS, HTTP_REFUSED

log = get_logger()

FD_RESERVE = 64
"""File descriptors kept for everything but HTTP connections and database connections: the
event loop's own, the gateways' pools and files, logs, imports. The database pool and one
gateway connection per charge in flight are reserved on top (:func:`plan_limits`)."""

MIN_CONNECTIONS = 8
MIN_BACKLOG = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """What the server allows each connection, and how many it holds."""

    header_timeout_s: float
    write_timeout_s: float
    keep_alive_timeout_s: int
    max_header_bytes: int
    max_connections: int
    backlog: int
    open_file_limit: int


def open_file_limit() -> int:
    """The process's soft limit on open files (RLIMIT_NOFILE)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def plan_limits(settings: Settings, *, open_files: int) -> HttpLimits:
    """The server's limits under an open-file limit of ``open_files``: the configured
    connection cap and backlog, each lowered so that every descriptor the HTTP side can hold
    fits beside the database pool, the gateways' connections and :data:`FD_RESERVE`.

    asyncio accepts up to ``backlog`` sockets in one turn of the loop before any protocol
    runs, and a second burst can come before the first one's evictions are closed: the HTTP
    side holds at most the cap plus two backlogs at once.
    """
    room = open_files - (settings.pool_size + settings.concurrency + FD_RESERVE)
    backlog = max(MIN_BACKLOG, min(settings.http_backlog, room // 4))
    connections = max(MIN_CONNECTIONS, min(settings.http_max_connections, room - 2 * backlog))
    return HttpLimits(
        header_timeout_s=settings.http_header_timeout_s,
        write_timeout_s=settings.http_body_timeout_s,
        keep_alive_timeout_s=settings.http_keep_alive_timeout_s,
        max_header_bytes=settings.http_max_header_bytes,
        max_connections=connections,
        backlog=backlog,
        open_file_limit=open_files,
    )


class ConnectionGuard:
    """The connections one server holds, and which to give up for a new one."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.live: set[GuardedProtocol] = set()

    def admit(self, connection: GuardedProtocol) -> bool:
        """Take ``connection`` on, closing the longest-idle one when at the cap; False when
        every connection held has a request running (the new one must be refused)."""
        if len(self.live) >= self.limits.max_connections:
            idle = [c for c in self.live if c.idle_since is not None]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c.idle_since or 0.0)
            self.leave(oldest)
            oldest.close_for("evicted_idle")
        self.live.add(connection)
        HTTP_CONNECTIONS.set(len(self.live))
        return True

    def leave(self, connection: GuardedProtocol) -> None:
        """Forget a connection that is closed or closing."""
        self.live.discard(connection)
        HTTP_CONNECTIONS.set(len(self.live))


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and size limit, a write deadline,
    and a place under its server's connection cap (see the module docstring)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_since: float | None = None  # loop time; None while a request runs
        self._in_head = True  # the next bytes belong to a request line or headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = self.loop.time()
        if not self.guard.admit(self):
            self._refuse(503, "the server is at its connection limit; try again", "over_capacity")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.leave(self)
        self._cancel_timers()
        super().connection_lost(exc)

    def close_for(self, reason: str) -> None:
        """Close this connection because of a limit, counted under ``reason``."""
        if self._closed:
            return
        HTTP_REFUSED.labels(reason=reason).inc()
        self._closed = True
        self._cancel_timers()
        self.transport.close()

    # -- reading ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        # While headers are being read, the parser gets at most what is left of the header
        # budget; a slice that ends the headers lets the rest through as the body (and the
        # next request's head, after on_message_complete, gets a new budget). A pipelined
        # head that shares a read with the previous body is bounded by the read size only.
        while data and self._in_head and not self.transport.is_closing():
            if self._head_timer is None:
                self._arm_head_timer()
            room = self.guard.limits.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(431, "the request's headers are too large", "header_too_large")
                return
            head, data = data[:room], data[room:]
            self._head_bytes += len(head)
            super().data_received(head)
        if data and not self.transport.is_closing():
            super().data_received(data)

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn logs two warnings for every request that asks to upgrade (the daemon serves
        # no WebSocket): any client could fill the log with them. The request is served as
        # an ordinary one, which is all there is to say.
        return

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        self.idle_since = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:
            self.idle_since = self.loop.time()

    # -- writing ------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.guard.limits.write_timeout_s, self._write_timed_out
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # -- limits -------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.guard.limits.header_timeout_s, self._head_timed_out
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self.close_for("header_timeout")

    def _write_timed_out(self) -> None:
        self._write_timer = None
        HTTP_REFUSED.labels(reason="write_timeout").inc()
        self._closed = True
        # abort: the unsent response is dropped, and the request's task sees a disconnect.
        self.transport.abort()

    def _refuse(self, status: int, detail: str, reason: str) -> None:
        """Answer ``status`` without a request (none was read) and close."""
        if self.idle_since is None:
            # A request is being answered on this connection: an answer written now would
            # land inside its response. Close instead.
            self.close_for(reason)
            return
        body = json.dumps({"detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.close_for(reason)


def guarded_protocol(limits: HttpLimits) -> type[GuardedProtocol]:
    """A protocol class for one server, whose connections share one guard."""

    class ServerProtocol(GuardedProtocol):
        guard = ConnectionGuard(limits)

    return ServerProtocol


# -- accept() failures ------------------------------------------------------------------------

_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorLog:
    """The event loop's exception handler while the server runs: an ``accept()`` that failed
    for want of a resource (asyncio retries it after a second by itself) is counted in
    ``collector_http_accept_errors_total`` and logged once per interval, with how many were
    not logged, never with a traceback; anything else goes to the handler in place before."""

    def __init__(
        self,
        *,
        interval_s: float,
        previous: ExceptionHandler | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.previous = previous
        self.clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        # asyncio's accept loop reports these with the listening socket in the context.
        if not (isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS and "socket" in context):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        name = errno.errorcode.get(exc.errno or 0, "unknown")
        HTTP_ACCEPT_ERRORS.labels(errno=name).inc()
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.interval_s:
            self._unlogged += 1
            return
        log.error(
            "http_accept_failed",
            errno=name,
            error=exc.strerror,
            not_logged_since_last=self._unlogged,
            hint="raise the open-file limit or lower COLLECTOR_HTTP_MAX_CONNECTIONS",
        )
        self._logged_at = now
        self._unlogged = 0


@contextmanager
def _accept_errors_logged(interval_s: float) -> Generator[None, None, None]:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrorLog(interval_s=interval_s, previous=previous))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


# -- the server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Listening:
    """Where the server listens, and the limits it applies."""

    host: str
    port: int
    limits: HttpLimits


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the daemon owns SIGTERM and SIGINT), telling
    when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


async def serve_api(
    app: Any,
    settings: Settings,
    *,
    host: str,
    port: int,
    stop: anyio.Event,
    task_status: TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (0: any free port) under the configured limits until
    ``stop`` is set, then close gracefully; report :class:`Listening` once it accepts. Raise
    ConfigError when the address cannot be bound."""
    limits = plan_limits(settings, open_files=open_file_limit())
    sock = _listen(host, port, limits.backlog)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        # The daemon serves no WebSocket: an upgrade request is an ordinary HTTP request.
        ws="none",
        backlog=limits.backlog,
        timeout_keep_alive=limits.keep_alive_timeout_s,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        lifespan="off",
        access_log=False,
        log_config=None,
    )
    server = _Server(config)
    with _accept_errors_logged(settings.http_accept_error_log_interval_s):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await server.listening.wait()
            task_status.started(
                Listening(host=host, port=int(sock.getsockname()[1]), limits=limits)
            )
            await stop.wait()
            server.should_exit = True
