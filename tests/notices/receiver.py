"""A real HTTP receiver on loopback for the webhook tests: it answers as its script says
(2xx, an error status, never, or late) and keeps every request it read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass(frozen=True)
class Reply:
    """What to answer: ``status``; ``hang``: never (until the receiver closes); ``delay_s``:
    answer that late (a slow receiver)."""

    status: int = 200
    hang: bool = False
    delay_s: float = 0.0


OK = Reply()


@dataclass
class Receiver:
    port: int
    script: Callable[[Request], Reply] = lambda _: OK
    requests: list[Request] = field(default_factory=list)
    # Set at each request read: a test waits on it instead of sleeping.
    arrived: anyio.Event = field(default_factory=anyio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def wait_for(self, n: int, *, timeout_s: float = 30) -> None:
        """Until ``n`` requests have arrived."""
        with anyio.fail_after(timeout_s):
            while len(self.requests) < n:
                self.arrived = anyio.Event()
                if len(self.requests) >= n:
                    return
                await self.arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(path=path, headers=headers, body=body)
                self.requests.append(request)
                self.arrived.set()
                reply = self.script(request)
                if reply.hang:
                    await self._closing.wait()
                    return
                if reply.delay_s:
                    # A slow receiver is the behaviour under test, not a wait for a race.
                    await asyncio.sleep(reply.delay_s)
                text = b"ok"
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(text)}\r\n"
                    "Content-Type: text/plain\r\n\r\n".encode()
                    + text
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def receiver(script: Callable[[Request], Reply] | None = None) -> AsyncIterator[Receiver]:
    """A receiver listening on a free loopback port for as long as the block runs."""
    holder: list[Receiver] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await holder[0]._serve(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rec = Receiver(port=port)
    if script is not None:
        rec.script = script
    holder.append(rec)
    try:
        yield rec
    finally:
        rec._closing.set()
        server.close()
        await server.wait_closed()
