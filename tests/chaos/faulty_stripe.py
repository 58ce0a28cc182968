"""The fake Stripe API (tests/gateways/fake_stripe.py) behind an HTTP server of our own that
injects faults where a network and a payment processor's edge put them.

The fake itself honours Idempotency-Key as Stripe documents it (the first answer under a key
is stored and replayed; the same key with other parameters is refused). In front of it, a
small HTTP/1.1 server (one task per connection, keep-alive) decides for each request what goes
wrong, as a function of the seed and of what the request is about (its idempotency key or
read, and how many times it was asked before), so a seed replays the same faults whatever
order the requests arrive in:

| fault | where | what the client sees | was the charge taken? |
|---|---|---|---|
| ``edge_503`` | before Stripe | 503 api_error (in bursts) | no, nothing stored |
| ``rate_429`` | before Stripe | 429 rate_limit (in bursts) | no, nothing stored |
| ``reset_before`` | before Stripe | connection reset (RST) | no |
| ``taken_500`` | after Stripe answered | 500 api_error instead of the answer | yes (a replay answers) |
| ``taken_reset`` | after Stripe answered | connection reset | yes |
| ``taken_timeout`` | after Stripe answered | no answer until the client gives up | yes |
| ``late_answer`` | before Stripe | the request is processed only after the client's timeout, and answered then | yes, after the client gave up |

Bursts of ``edge_503`` or ``rate_429`` meet runs of consecutive installments (sent together,
so a burst in time). Reads (search, retrieve) get ``edge_503``, ``rate_429``, ``reset_before``
and ``late_answer`` (the answer after the client's timeout); and some PaymentIntents are late
to show in search until the index catches up, as Stripe's may be for up to an hour.
:meth:`heal` stops every fault, waits for the requests still held, and lets search catch up.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from tests.chaos.helpers import GatewayCharge
from tests.gateways.fake_stripe import FakeStripe

CREATE_FAULTS = (
    "edge_503",
    "rate_429",
    "reset_before",
    "taken_500",
    "taken_reset",
    "taken_timeout",
    "late_answer",
)
READ_FAULTS = ("edge_503", "rate_429", "reset_before", "late_answer")
BURST_FAULTS = ("edge_503", "rate_429")
BURST_SPAN = 6
_KEY = re.compile(r"collector-inst-(\d+)-\d+")
MAX_HEAD = 64 * 1024


class _Reset(Exception):
    """The connection is to be reset now."""


class FaultyStripe:
    """A FakeStripe served with injected faults; ``base_url`` is what the SDK is pointed at."""

    def __init__(self, seed: int, *, client_timeout_s: float) -> None:
        self.fake = FakeStripe()
        self.seed = seed
        self.client_timeout_s = client_timeout_s
        self.faulting = True
        self.fault_rate = 0.3  # of requests that get a fault while faulting
        self.burst_rate = 0.15  # of runs of BURST_SPAN installments met by a burst
        self.lag_rate = 0.25  # of PaymentIntents late to show in search
        self._seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.base_url = ""
        self._app = self.fake.app()
        self._busy = 0
        self._idle = anyio.Event()
        self._idle.set()

    # -- the test's levers ----------------------------------------------------------------

    async def heal(self, timeout_s: float = 30) -> None:
        """Stop injecting faults; wait until no request is held; let search catch up."""
        self.faulting = False
        with anyio.fail_after(timeout_s):
            await self._idle.wait()
        self.fake.search_lagging = False
        self.fake.catch_up_search()

    def record(self) -> list[GatewayCharge]:
        """Every PaymentIntent the fake holds, as the gateway's own record."""
        out = []
        for intent in self.fake.intents.values():
            types = intent["payment_method_types"]
            out.append(
                GatewayCharge(
                    key=intent["metadata"]["collector_attempt_key"],
                    gateway="stripe_ach" if "us_bank_account" in types else "stripe_card",
                    amount_cents=intent["amount"],
                    accepted=intent["status"] in ("succeeded", "processing"),
                    ref=intent["id"],
                )
            )
        return out

    def keys_taken(self) -> set[str]:
        """Attempt keys under which the fake holds a PaymentIntent."""
        return {i["metadata"]["collector_attempt_key"] for i in self.fake.intents.values()}

    # -- choosing faults ------------------------------------------------------------------

    def _draw(self, kind: str, subject: str) -> str | None:
        """The fault for this request, a function of the seed and of what is asked (the n-th
        request about one key), never of the order requests happen to arrive in."""
        if not self.faulting:
            return None
        self._seen[subject] += 1
        n = self._seen[subject]
        rng = random.Random(f"{self.seed}/{subject}/{n}")
        installment = _installment_of(subject)
        if kind == "create" and n == 1 and installment is not None:
            # The first installments meet one fault each, so a short run has them all.
            if 1 <= installment <= len(CREATE_FAULTS):
                order = random.Random(f"{self.seed}/order").sample(
                    CREATE_FAULTS, len(CREATE_FAULTS)
                )
                return order[installment - 1]
            # Bursts: installments are claimed and sent in id order, so a run of
            # consecutive ids all refused is a burst in time.
            bucket = random.Random(f"{self.seed}/burst/{installment // BURST_SPAN}")
            if bucket.random() < self.burst_rate:
                fault = bucket.choice(BURST_FAULTS)
                self.injected[f"burst_of_{fault}"] += installment % BURST_SPAN == 0
                return fault
        if rng.random() >= self.fault_rate:
            return None
        return rng.choice(CREATE_FAULTS if kind == "create" else READ_FAULTS)

    def _lags(self, key: str) -> bool:
        """Whether the PaymentIntent made under this key is late to show in search."""
        return random.Random(f"{self.seed}/lag/{key}").random() < self.lag_rate

    # -- the HTTP server ------------------------------------------------------------------

    async def _handle(self, stream: SocketStream) -> None:
        buffer = b""
        try:
            async with stream:
                while True:
                    request, buffer = await _read_request(stream, buffer)
                    if request is None:
                        return
                    await self._serve_one(stream, *request)
        except (_Reset, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return

    async def _serve_one(
        self,
        stream: SocketStream,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        kind = "create" if method == "POST" else "read"
        self.requests[kind] += 1
        subject = _subject(method, target, headers)
        fault = self._draw(kind, subject)
        if fault is not None:
            self.injected[f"{kind}:{fault}"] += 1
        self._busy += 1
        self._idle = anyio.Event() if self._busy == 1 else self._idle
        try:
            if fault == "reset_before":
                await _reset(stream)
            if fault == "edge_503":
                await _send(stream, 503, _error("api_error", "The service is unavailable."))
                return
            if fault == "rate_429":
                await _send(
                    stream, 429, _error("invalid_request_error", "Too many requests.", "rate_limit")
                )
                return
            if fault == "late_answer":
                # Processed (and so, for a create, charged) only once the client gave up.
                await anyio.sleep(self.client_timeout_s * 1.5)
            status, response_headers, response_body = await self._call_app(
                method, target, headers, body
            )
            key = dict(headers).get("idempotency-key")
            if kind == "create" and key and self.faulting and self._lags(key):
                # Made, but Stripe's search will not show it until the index catches up.
                for intent_id, intent in self.fake.intents.items():
                    if intent["metadata"].get("collector_attempt_key") == key:
                        self.fake._searchable.discard(intent_id)
                self.injected["search_lag"] += 1
            if fault == "taken_500":
                await _send(stream, 500, _error("api_error", "Something went wrong."))
                return
            if fault == "taken_reset":
                await _reset(stream)
            if fault == "taken_timeout":
                # Hold the answer until the client hangs up (or well past its timeout).
                with anyio.move_on_after(self.client_timeout_s * 3):
                    try:
                        while await stream.receive():
                            pass
                    except anyio.EndOfStream:
                        pass
                await _reset(stream)
            await _send(stream, status, response_body, response_headers)
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def _call_app(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urlsplit(target)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }
        done = anyio.Event()
        sent = False
        status = 500
        out_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers.extend(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self._app(scope, receive, send)
        finally:
            done.set()
        kept = [(k, v) for k, v in out_headers if k.lower() not in ("content-length", "connection")]
        return status, kept, b"".join(chunks)


def _subject(method: str, target: str, headers: list[tuple[str, str]]) -> str:
    """What a request is about: the key it charges under, or the read it makes."""
    if method == "POST":
        return "create:" + dict(headers).get("idempotency-key", "")
    parts = urlsplit(target)
    return f"read:{parts.path}?{parts.query}"


def _installment_of(subject: str) -> int | None:
    match = _KEY.search(subject)
    return int(match.group(1)) if match else None


def _error(kind: str, message: str, code: str | None = None) -> bytes:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    return json.dumps({"error": error}).encode()


async def _reset(stream: SocketStream) -> None:
    # SO_LINGER with a zero timeout: closing sends RST instead of FIN, as a connection
    # dropped by a load balancer looks to the client.
    sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    raise _Reset


async def _send(
    stream: SocketStream,
    status: int,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    headers = headers or [("content-type", "application/json")]
    reason = HTTPStatus(status).phrase
    head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    head.append(f"content-length: {len(body)}")
    await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


async def _read_request(
    stream: SocketStream, buffer: bytes
) -> tuple[tuple[str, str, list[tuple[str, str]], bytes] | None, bytes]:
    """One request off the connection (None when the client closed it), and what follows."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise _Reset
        try:
            buffer += await stream.receive()
        except anyio.EndOfStream:
            return None, b""
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    length = int(dict(headers).get("content-length", "0"))
    while len(buffer) < length:
        try:
            buffer += await stream.receive()
        except anyio.EndOfStream:
            return None, b""
    return (method, target, headers, buffer[:length]), buffer[length:]


@asynccontextmanager
async def serve_faulty_stripe(seed: int, *, client_timeout_s: float) -> AsyncIterator[FaultyStripe]:
    """A FaultyStripe listening on 127.0.0.1 at an ephemeral port, in this event loop."""
    faulty = FaultyStripe(seed, client_timeout_s=client_timeout_s)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    faulty.base_url = f"http://127.0.0.1:{port}"
    tg: TaskGroup
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, faulty._handle)
        try:
            yield faulty
        finally:
            tg.cancel_scope.cancel()
