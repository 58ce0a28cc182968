"""Deliver the outbox's events to the configured endpoints as signed webhooks (issue 10).

At least once: a delivery is claimed for a while (``claimed_until``), sent, and recorded; a
deliverer that dies in between (SIGKILL) leaves the claim to expire, and the next round sends
it again. Receivers dedupe by the event id (``Collector-Event-Id``).

In order per lease: only the oldest pending delivery of an ordering key (a lease, or a
customer for events of no lease) is ever claimed, so an event is sent only once every earlier
event of its lease was delivered or dead-lettered.

A failed delivery (any answer but a 2xx, a network error, a timeout) is tried again after an
exponential backoff with jitter (:func:`backoff_s`); after ``COLLECTOR_WEBHOOK_MAX_ATTEMPTS``
it is dead-lettered (``collector events redeliver`` sends it again). Each endpoint has a
circuit breaker (:class:`CircuitBreaker`): after ``COLLECTOR_WEBHOOK_BREAKER_FAILURES``
failures in a row its deliveries wait ``COLLECTOR_WEBHOOK_BREAKER_COOLDOWN_S``, then one
probe decides. The breaker lives in the process (a daemon's, or one ``collector deliver``).

``collector deliver`` runs :meth:`Deliverer.deliver_once` (cron); the daemon runs
:func:`deliver_forever`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
import httpx

from collector import __version__
from collector.config import Settings, WebhookEndpoint
from collector.db import outbox
from collector.db.outbox import ClaimedDelivery, EventType
from collector.failures import describe_failure
from collector.logs import get_logger
from collector.metrics import (
    DELIVERY_RESULTS,
    EVENT_DELIVERIES,
    EVENTS_OLDEST_UNDELIVERED,
    EVENTS_PENDING,
    WEBHOOK_CIRCUIT_OPEN,
)
from collector.webhook_signing import SIGNATURE_HEADER, sign

log = get_logger()

# Events that ask the customer to act carry a link to pay in the portal.
LINKED_TYPES = frozenset({EventType.PAYMENT_FAILED, EventType.ACH_RETURNED})
# How long recording an answer may take (shielded: a stopping deliverer still records what
# it was told, or the event is sent again, which at-least-once allows).
RECORD_TIMEOUT_S = 10


def claim_seconds(timeout_s: float) -> float:
    """How long a claimed delivery is held: past its send's timeout and its recording, so
    that nobody else sends it meanwhile; then it is anyone's again."""
    return 2 * timeout_s + 5


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, ...): ``base_s`` doubled each time,
    at most ``max_s``, half of it fixed and half random ("equal jitter"), so that many
    deliveries failed at once do not come back at once."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class CircuitBreaker:
    """Closed: deliveries go. ``failures`` failures in a row open it for ``cooldown_s``; then
    half-open: one delivery probes, and its success closes it, its failure opens it again."""

    def __init__(
        self, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        """True while deliveries are held back (open, cooldown not over)."""
        return self._opened_at is not None and self._clock() - self._opened_at < self._cooldown_s

    def allowance(self, batch: int) -> int:
        """How many deliveries may be tried now: none while open, one probe when half-open."""
        if self._opened_at is None:
            return batch
        return 0 if self.is_open else 1

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failed(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            # A failed probe, or the threshold reached: (re)open for a whole cooldown.
            self._opened_at = self._clock()


@dataclass(slots=True)
class DeliveryCounts:
    """What one round of delivery did, and what still waits."""

    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    circuits_open: list[str] = field(default_factory=list)
    pending: int = 0
    oldest_age_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Answer:
    delivery: ClaimedDelivery
    http_status: int | None = None
    error: str | None = None  # None: delivered
    timeout: bool = False
    refused: bool = False  # never sent: the body failed the number check


def envelope(delivery: ClaimedDelivery, *, link_template: str) -> dict[str, Any]:
    """What is sent for an event: its id, type, dates, customer and lease, and its body as
    ``data`` (with the portal link, rendered now, for events that ask the customer to act)."""
    data = dict(delivery.body)
    if delivery.type in LINKED_TYPES and delivery.lease_id is not None:
        data["portal_url"] = link_template.format(
            lease_id=delivery.lease_id,
            customer_id=delivery.customer_id,
            event_id=delivery.event_id,
        )
    return {
        "id": delivery.event_id,
        "type": delivery.type,
        "created_at": delivery.created_at.isoformat(),
        "business_date": delivery.as_of.isoformat(),
        "customer_id": delivery.customer_id,
        "lease_id": delivery.lease_id,
        "data": data,
    }


class Deliverer:
    """Delivers the outbox to every configured endpoint; keeps each endpoint's breaker."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        client: httpx.AsyncClient,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._endpoints: Sequence[WebhookEndpoint] = settings.webhook_endpoints
        self.breakers = {
            e.name: CircuitBreaker(
                failures=settings.webhook_breaker_failures,
                cooldown_s=settings.webhook_breaker_cooldown_s,
                clock=monotonic,
            )
            for e in self._endpoints
        }
        for e in self._endpoints:
            WEBHOOK_CIRCUIT_OPEN.labels(endpoint=e.name).set(0)
            for result in DELIVERY_RESULTS:
                EVENT_DELIVERIES.labels(endpoint=e.name, result=result)

    async def deliver_once(self) -> DeliveryCounts:
        """Fan out new events, then deliver everything due now, endpoint by endpoint, until
        nothing due is left (or an endpoint's circuit opens); refresh the gauges."""
        counts = DeliveryCounts()
        names = [e.name for e in self._endpoints]
        batch = self._settings.webhook_batch_size
        while await outbox.dispatch(self._pool, names, limit=batch) == batch:
            pass
        for endpoint in self._endpoints:
            await self._deliver_endpoint(endpoint, counts)
            open_now = self.breakers[endpoint.name].is_open
            WEBHOOK_CIRCUIT_OPEN.labels(endpoint=endpoint.name).set(1 if open_now else 0)
            if open_now:
                counts.circuits_open.append(endpoint.name)
        for waiting in await outbox.backlog(self._pool, names):
            EVENTS_PENDING.labels(endpoint=waiting.endpoint).set(waiting.pending)
            EVENTS_OLDEST_UNDELIVERED.labels(endpoint=waiting.endpoint).set(waiting.oldest_age_s)
            counts.pending = max(counts.pending, waiting.pending)
            counts.oldest_age_s = max(counts.oldest_age_s, waiting.oldest_age_s)
        return counts

    async def _deliver_endpoint(self, endpoint: WebhookEndpoint, counts: DeliveryCounts) -> None:
        breaker = self.breakers[endpoint.name]
        limiter = anyio.CapacityLimiter(self._settings.webhook_concurrency)
        while (allowed := breaker.allowance(self._settings.webhook_batch_size)) > 0:
            claimed = await outbox.claim(
                self._pool,
                endpoint.name,
                limit=allowed,
                claim_s=claim_seconds(self._settings.webhook_timeout_s),
            )
            if not claimed:
                return
            answers: list[_Answer] = []
            async with anyio.create_task_group() as tg:
                for delivery in claimed:
                    tg.start_soon(self._send_into, answers, limiter, endpoint, delivery)
            with anyio.fail_after(RECORD_TIMEOUT_S, shield=True):
                await self._record(endpoint, answers, counts)

    async def _send_into(
        self,
        answers: list[_Answer],
        limiter: anyio.CapacityLimiter,
        endpoint: WebhookEndpoint,
        delivery: ClaimedDelivery,
    ) -> None:
        async with limiter:
            answers.append(await self._send(endpoint, delivery))

    async def _send(self, endpoint: WebhookEndpoint, delivery: ClaimedDelivery) -> _Answer:
        payload = envelope(delivery, link_template=self._settings.portal_link_template)
        try:
            outbox.check_body(payload)
        except outbox.SensitiveBody as exc:
            return _Answer(delivery=delivery, error=f"refused: {exc}", refused=True)
        body = outbox.canonical_json(payload)
        secrets = [s.get_secret_value() for s in endpoint.secrets]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"collector/{__version__}",
            "Collector-Event-Id": str(delivery.event_id),
            "Collector-Event-Type": delivery.type,
            SIGNATURE_HEADER: sign(body, secrets, timestamp=int(self._wall_clock())),
        }
        try:
            # The whole exchange is bounded, not each read: a receiver that trickles its
            # answer byte by byte would otherwise hold the delivery for ever.
            with anyio.fail_after(self._settings.webhook_timeout_s):
                response = await self._client.post(endpoint.url, content=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return _Answer(delivery=delivery, error="timeout", timeout=True)
        except (httpx.HTTPError, OSError) as exc:
            # The exception's type only: httpx's messages can repeat the URL, which may
            # carry credentials.
            return _Answer(delivery=delivery, error=type(exc).__name__)
        if 200 <= response.status_code < 300:
            return _Answer(delivery=delivery, http_status=response.status_code)
        return _Answer(
            delivery=delivery,
            http_status=response.status_code,
            error=f"HTTP {response.status_code}",
        )

    async def _record(
        self, endpoint: WebhookEndpoint, answers: Sequence[_Answer], counts: DeliveryCounts
    ) -> None:
        breaker = self.breakers[endpoint.name]
        delivered = [(a.delivery, a.http_status or 200) for a in answers if a.error is None]
        await outbox.mark_delivered(self._pool, endpoint.name, delivered)
        for _ in delivered:
            breaker.succeeded()
        EVENT_DELIVERIES.labels(endpoint=endpoint.name, result="delivered").inc(len(delivered))
        counts.delivered += len(delivered)
        for answer in answers:
            if answer.error is None:
                continue
            attempt = answer.delivery.attempts + 1
            dead = answer.refused or attempt >= self._settings.webhook_max_attempts
            retry_in_s = backoff_s(
                attempt,
                base_s=self._settings.webhook_backoff_base_s,
                max_s=self._settings.webhook_backoff_max_s,
                rng=self._rng,
            )
            await outbox.mark_failed(
                self._pool,
                endpoint.name,
                answer.delivery,
                http_status=answer.http_status,
                error=answer.error,
                retry_in_s=retry_in_s,
                dead=dead,
            )
            if not answer.refused:
                breaker.failed()
            result = "dead_lettered" if dead else ("timeout" if answer.timeout else "failed")
            EVENT_DELIVERIES.labels(endpoint=endpoint.name, result=result).inc()
            if dead:
                counts.dead_lettered += 1
            else:
                counts.failed += 1
            log.warning(
                "event_delivery_failed",
                event_id=answer.delivery.event_id,
                event_type=answer.delivery.type,
                lease_id=answer.delivery.lease_id,
                endpoint=endpoint.name,
                http_status=answer.http_status,
                error=answer.error,
                attempt=attempt,
                dead_lettered=dead,
                retry_in_s=None if dead else round(retry_in_s, 1),
            )


def open_client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client deliveries go through: no redirects followed (a 3xx is a failure),
    the settings' timeout, a few connections per endpoint."""
    return httpx.AsyncClient(
        timeout=settings.webhook_timeout_s,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=settings.webhook_concurrency * 4),
    )


async def deliver_forever(pool: asyncpg.Pool, settings: Settings, *, stop: anyio.Event) -> None:
    """The daemon's delivery loop: a round, then ``COLLECTOR_WEBHOOK_POLL_INTERVAL_S`` of
    rest, until ``stop``; a failed round (the database away) is logged and the next retries."""
    async with open_client(settings) as client:
        deliverer = Deliverer(pool, settings, client=client)
        while not stop.is_set():
            try:
                await deliverer.deliver_once()
            except Exception as exc:
                log.exception("delivery_round_failed", error=describe_failure(exc))
            with anyio.move_on_after(settings.webhook_poll_interval_s):
                await stop.wait()
