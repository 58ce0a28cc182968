"""The daemon's HTTP server against hostile clients: real sockets over loopback, a really
running server (the daemon's own ``serve_api`` and app), slow and oversized clients."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from anyio.abc import SocketStream
from structlog.testing import capture_logs

from collector.api.app import create_app
from collector.api.server import AcceptErrorLog, Listening, plan_limits, serve_api
from collector.config import Settings, load_settings
from collector.exceptions import ConfigError
from collector.gateways.base import Gateway
from collector.metrics import REGISTRY

TOKEN = "limits-test-token-0123456789"
SECRET = "whsec_test_0123456789abcdef"

Serve = Callable[..., Any]


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("collector_http_refused_total", {"reason": reason}) or 0.0


@pytest.fixture
def serving(
    database_url: str, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> Callable[..., Any]:
    """``async with serving(**settings) as port``: the daemon's server and app on a free
    port of loopback, with these settings."""

    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[int]:
        settings = Settings(
            database_url=database_url,  # type: ignore[arg-type]
            api_tokens=[TOKEN],  # type: ignore[list-item]
            stripe_webhook_secret=SECRET,  # type: ignore[arg-type]
            **overrides,
        )
        app = create_app(settings, pool, gateways)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            listening: Listening = await tg.start(
                partial(serve_api, app, settings, host="127.0.0.1", port=0, stop=stop)
            )
            try:
                yield listening.port
            finally:
                stop.set()

    return serve


CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError, BrokenPipeError)


async def read_until_closed(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        try:
            received += await stream.receive()
        except CLOSED:
            return received


async def test_headers_trickled_a_byte_at_a_time_are_cut_off_at_the_header_timeout(
    serving: Serve,
) -> None:
    before = refused("header_timeout")
    async with serving(http_header_timeout_s=0.5) as port:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        started = time.monotonic()
        closed_after = None
        with anyio.fail_after(5):
            # A slowloris: a new header byte every 50 ms keeps a plain idle timer from firing.
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                try:
                    await stream.send(bytes([byte]))
                    with anyio.move_on_after(0.05):
                        await stream.receive()  # the server never answers a trickle
                except CLOSED:
                    closed_after = time.monotonic() - started
                    break
        await stream.aclose()
    assert closed_after is not None, "the trickle was never cut off"
    assert 0.4 < closed_after < 2.0
    assert refused("header_timeout") == before + 1


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    serving: Serve,
) -> None:
    async with serving(http_header_timeout_s=0.5) as port:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        started = time.monotonic()
        with anyio.fail_after(5):
            assert await read_until_closed(stream) == b""
        assert 0.4 < time.monotonic() - started < 2.0


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(serving: Serve) -> None:
    async with serving(http_keep_alive_timeout_s=1, http_header_timeout_s=30) as port:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        with anyio.fail_after(5):
            answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 200")
        assert 0.8 < time.monotonic() - started < 3.0


async def _send_quietly(stream: SocketStream, data: bytes, chunk: int = 64 * 1024) -> int:
    """Send ``data`` until the server stops taking it; return how much was sent."""
    sent = 0
    try:
        for at in range(0, len(data), chunk):
            await stream.send(data[at : at + chunk])
            sent += len(data[at : at + chunk])
    except CLOSED:
        pass
    return sent


async def _ask(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, int]:
    """Send a request while reading the answer: the server may answer (and close) long before
    the client is done sending. Returns the answer and how much of the request was sent."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    sent = 0
    async with stream:

        async def send() -> None:
            nonlocal sent
            sent = await _send_quietly(stream, head + body)

        answer = b""
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                answer = await read_until_closed(stream)
                tg.cancel_scope.cancel()
    return answer, sent


async def test_an_8_mb_header_is_refused_with_431_and_not_read(serving: Serve) -> None:
    before = refused("header_too_large")
    async with serving() as port:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024)
        answer, sent = await _ask(port, head + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b'"detail"' in answer
        assert sent < len(head), "the server read the whole 8 MB header"
        # The server is fine afterwards, and headers of a normal size pass.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get("/healthz", headers={"X-Fine": "b" * 8000})
            assert response.status_code == 200
    assert refused("header_too_large") == before + 1


async def test_a_webhook_body_over_its_limit_is_413_by_content_length_before_any_signature(
    serving: Serve, pool: asyncpg.Pool
) -> None:
    before = refused("body_too_large")
    async with serving(http_max_webhook_body_bytes=64 * 1024) as port:
        body = b"{" + b" " * (50 * 1024 * 1024)
        head = (
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Stripe-Signature: t=1,v1=00\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        answer, sent = await _ask(port, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/json" in answer
    assert sent < len(body) // 2, "the server read the whole body before answering"
    assert refused("body_too_large") == before + 1
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_chunked_body_is_refused_413_once_it_passes_the_limit(serving: Serve) -> None:
    async with serving(http_max_body_bytes=16 * 1024) as port:
        chunk = b"%x\r\n%s\r\n" % (4096, b"7" * 4096)
        head = (
            b"POST /v1/leases/1/payments HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nIdempotency-Key: k1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer, sent = await _ask(port, head, chunk * 16_000)  # 64 MB if it were all read
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < len(chunk) * 8_000


async def test_a_body_that_does_not_arrive_in_time_is_408(serving: Serve) -> None:
    before = refused("body_timeout")
    async with serving(http_body_timeout_s=0.5) as port:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(
                b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            started = time.monotonic()
            with anyio.fail_after(5):
                answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.4 < time.monotonic() - started < 2.5
    assert refused("body_timeout") == before + 1


async def test_idle_sockets_past_the_cap_do_not_starve_healthz_or_the_api(
    serving: Serve,
) -> None:
    evicted = refused("evicted_idle")
    async with (
        serving(http_max_connections=8, http_header_timeout_s=60) as port,
        AsyncExitStack() as idle,
    ):
        for _ in range(50):
            await idle.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))
        with anyio.fail_after(5):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/healthz")).status_code == 200
                response = await http.get(
                    "/v1/customers/1/leases", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                assert response.status_code == 404  # served: there is no customer 1
    assert refused("evicted_idle") >= evicted + 42


async def test_a_connection_past_the_cap_is_503_when_every_connection_is_busy(
    serving: Serve,
) -> None:
    before = refused("over_capacity")
    async with (
        serving(http_max_connections=8, http_body_timeout_s=30) as port,
        AsyncExitStack() as busy,
    ):
        for _ in range(8):
            # Headers in, body pending: a request is running on each of them.
            stream = await busy.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))
            await stream.send(
                b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
            )
        # The server runs in this process: once every task waits, each of the 8 requests is
        # running, waiting for its body.
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the server is at its connection limit")
    assert refused("over_capacity") == before + 1


def test_the_connection_cap_and_backlog_stay_below_the_open_file_limit() -> None:
    settings = Settings(http_max_connections=5000, http_backlog=1024, pool_size=10, concurrency=64)
    small = plan_limits(settings, open_files=256)
    assert small.max_connections + 2 * small.backlog + 10 + 64 <= 256
    assert small.max_connections >= 8
    large = plan_limits(settings, open_files=1 << 20)
    assert (large.max_connections, large.backlog) == (5000, 1024)


def test_accept_failures_are_counted_and_logged_once_per_interval() -> None:
    now = [0.0]
    passed_on: list[dict[str, Any]] = []
    handler = AcceptErrorLog(
        interval_s=60,
        previous=lambda _loop, context: passed_on.append(context),
        clock=lambda: now[0],
    )
    emfile = OSError(errno.EMFILE, "Too many open files")
    before = REGISTRY.get_sample_value("collector_http_accept_errors_total", {"errno": "EMFILE"})
    loop: Any = None
    with capture_logs() as logs:
        for second in range(120):  # asyncio retries a failed accept every second
            now[0] = float(second)
            handler(
                loop,
                {
                    "message": "socket.accept() out of system resource",
                    "exception": emfile,
                    "socket": object(),
                },
            )
        handler(loop, {"message": "something else", "exception": ValueError("x")})
    accept_logs = [entry for entry in logs if entry["event"] == "http_accept_failed"]
    assert [entry["not_logged_since_last"] for entry in accept_logs] == [0, 59]
    assert all("exc_info" not in entry for entry in accept_logs)
    after = REGISTRY.get_sample_value("collector_http_accept_errors_total", {"errno": "EMFILE"})
    assert after == (before or 0) + 120
    assert [c["message"] for c in passed_on] == ["something else"]


# The daemon, under a soft and hard limit of 256 open files.
LOW_FILE_LIMIT_DAEMON = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256));"
    " from collector.cli import main; sys.exit(main(sys.argv[1:]))"
)


async def test_with_a_low_file_limit_300_idle_sockets_leave_the_daemon_serving_and_quiet(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_DATABASE_URL=database_url, COLLECTOR_API_TOKENS=TOKEN)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await anyio.open_process(
            [
                sys.executable,
                "-c",
                LOW_FILE_LIMIT_DAEMON,
                "daemon",
                "--no-schedule",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    async with proc, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            with anyio.fail_after(30):
                while True:
                    assert proc.returncode is None, log_path.read_text()
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)  # polling a port that is not open yet
            async with AsyncExitStack() as idle:
                with anyio.fail_after(30):
                    for _ in range(300):
                        await idle.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))
                started = time.monotonic()
                with anyio.fail_after(10):
                    assert (await http.get("/healthz")).status_code == 200
                    ready = await http.get("/readyz")
                    assert ready.status_code == 200, ready.text
                    leases = await http.get(
                        "/v1/customers/1/leases", headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                    assert leases.status_code == 404
                assert time.monotonic() - started < 5
        finally:
            proc.terminate()
            with anyio.fail_after(20):
                await proc.wait()
    log = log_path.read_text()
    assert "Too many open files" not in log
    assert "Traceback" not in log
    assert len(log) < 20_000


async def test_an_unauthenticated_body_is_answered_401_and_its_connection_closed_unread(
    serving: Serve,
) -> None:
    async with serving() as port:
        body = b"{" + b" " * (50 * 1024 * 1024)
        head = (
            b"POST /v1/leases/1/payments HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        answer, sent = await _ask(port, head, body)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert sent < len(body) // 2


async def test_upgrade_requests_are_ordinary_requests_and_log_nothing(
    serving: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    caplog.set_level(logging.WARNING, logger="uvicorn")
    async with serving() as port:
        for _ in range(3):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(upgrade)
                answer = b""
                with anyio.fail_after(5):
                    while not answer.endswith(b'{"status":"ok"}'):
                        answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COLLECTOR_HTTP_HEADER_TIMEOUT_S", "0"),
        ("COLLECTOR_HTTP_BODY_TIMEOUT_S", "-1"),
        ("COLLECTOR_HTTP_KEEP_ALIVE_TIMEOUT_S", "0"),
        ("COLLECTOR_HTTP_MAX_HEADER_BYTES", "100"),
        ("COLLECTOR_HTTP_MAX_BODY_BYTES", "huge"),
        ("COLLECTOR_HTTP_MAX_WEBHOOK_BODY_BYTES", str(64 * 1024 * 1024)),
        ("COLLECTOR_HTTP_MAX_CONNECTIONS", "1"),
        ("COLLECTOR_HTTP_BACKLOG", "0"),
        ("COLLECTOR_HTTP_ACCEPT_ERROR_LOG_INTERVAL_S", "0"),
        ("COLLECTOR_MANUAL_PAY_MAX_ATTEMPTS", "0"),
        ("COLLECTOR_MANUAL_PAY_WINDOW_S", "0"),
    ],
)
def test_a_bad_limit_is_named_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
