"""A small fake of the Stripe API, served over real HTTP so the official SDK talks to it as it
would to api.stripe.com: form-encoded bodies, the Idempotency-Key header, Stripe-shaped JSON
errors (so the SDK raises its own CardError, RateLimitError, ...).

Only what the adapters call: ``POST /v1/payment_intents``, ``GET /v1/payment_intents/search``
(the one query form the adapters send), ``GET /v1/payment_intents/{id}`` and
``GET /v1/charges/{id}``. Each confirmation makes a Charge, as Stripe's does: succeeded, or
pending with its (pending) balance transaction, or failed with none; a bank debit that fails
after processing keeps its balance transaction and gains a ``failure_balance_transaction``
(the reversal). The payment method id picks the behaviour, as Stripe's test payment methods
do:

| payment method | answer |
|---|---|
| ``pm_card_ok`` | 200, succeeded |
| ``pm_card_insufficient_funds`` | 402 card_declined / insufficient_funds (soft) |
| ``pm_card_stolen`` | 402 card_declined / stolen_card (hard) |
| ``pm_card_expired`` | 402 expired_card, no decline_code |
| ``pm_card_auth_required`` | 402 authentication_required |
| ``pm_card_unknown_decline`` | 402 card_declined / a code no table knows |
| ``pm_card_do_not_try_again`` | 402 generic_decline with network advice (do_not_try_again, 03) |
| ``pm_card_requires_action`` | 200, requires_action |
| ``pm_card_missing`` | 400 resource_missing on payment_method |
| ``pm_rate_limited_once`` | 429 (Retry-After: 0) for the first request of a key, then 200 |
| ``pm_rate_limited`` | 429 without Retry-After, always |
| ``pm_rate_limited_long`` | 429 with Retry-After: 60, always |
| ``pm_slow`` | records a succeeded intent, then holds the answer until released |
| ``pm_5xx`` | 500 api_error, nothing recorded |
| ``pm_card_processing`` | 200, processing; :meth:`FakeStripe.settle`, :meth:`FakeStripe.decline` or :meth:`FakeStripe.cancel` end it |
| ``pm_ach_ok`` | 200, processing; :meth:`FakeStripe.settle` / :meth:`FakeStripe.fail` move it on |
| ``pm_ach_blocked`` | 402 bank_account_unusable |

Idempotency as Stripe documents it: the first answer under a key (errors included, 429 and
in-flight conflicts excluded) is stored and replayed; the same key with other parameters is a
400 idempotency_error; a key whose first request is still running is a 409.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "sk_test_fake_0123456789"
READY_TIMEOUT_S = 5

_SEARCH = re.compile(r"metadata\['collector_attempt_key'\]:'((?:[^'\\]|\\.)*)'")

_DECLINES: dict[str, dict[str, str]] = {
    "pm_card_insufficient_funds": {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    },
    "pm_card_stolen": {
        "code": "card_declined",
        "decline_code": "stolen_card",
        "message": "Your card was declined.",
    },
    "pm_card_expired": {"code": "expired_card", "message": "Your card has expired."},
    "pm_card_auth_required": {
        "code": "authentication_required",
        "decline_code": "authentication_required",
        "message": "Your card was declined. This transaction requires authentication.",
    },
    "pm_card_unknown_decline": {
        "code": "card_declined",
        "decline_code": "brand_new_decline_code",
        "message": "Your card was declined.",
    },
    "pm_card_do_not_try_again": {
        "code": "card_declined",
        "decline_code": "generic_decline",
        "advice_code": "do_not_try_again",
        "network_advice_code": "03",
        "network_decline_code": "05",
        "message": "Your card was declined.",
    },
    "pm_ach_blocked": {
        "code": "bank_account_unusable",
        "message": "The bank account provided cannot be used for payments.",
    },
}


def _form(body: bytes) -> dict[str, Any]:
    """The SDK's form encoding (``metadata[k]=v``, ``list[0]=v``) back into nested values."""
    out: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body.decode(), keep_blank_values=True):
        head, _, rest = raw_key.partition("[")
        if not rest:
            out[head] = value
            continue
        sub = rest.rstrip("]")
        if sub.isdigit():
            out.setdefault(head, []).append(value)
        else:
            out.setdefault(head, {})[sub] = value
    return out


def _error(status: int, **error: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"error": error}, {}


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeStripe:
    """The fake's state: its PaymentIntents, the answers stored per idempotency key, and counters
    the tests assert on."""

    base_url: str = ""
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrieved: Counter[str] = field(default_factory=Counter)
    created_per_key: Counter[str] = field(default_factory=Counter)
    requests_per_key: Counter[str] = field(default_factory=Counter)
    search_lagging: bool = False
    failing_reads: bool = False  # GET of a PaymentIntent or Charge answers 500
    _searchable: set[str] = field(default_factory=set)
    _stored: dict[str, _Stored] = field(default_factory=dict)
    _in_flight: set[str] = field(default_factory=set)
    _release: anyio.Event = field(default_factory=anyio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _generation: int = 0

    # -- test hooks ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything, as a new Stripe account would; held answers are let go first."""
        self.release_slow()
        self.intents.clear()
        self.charges.clear()
        self.retrieved.clear()
        self.created_per_key.clear()
        self.requests_per_key.clear()
        self.search_lagging = False
        self.failing_reads = False
        self._searchable.clear()
        self._stored.clear()
        self._in_flight.clear()
        self._release = anyio.Event()
        self._generation += 1

    def settle(self, intent_id: str) -> None:
        """The payment left processing succeeds (a debit settles): processing → succeeded."""
        intent = self.intents[intent_id]
        assert intent["status"] == "processing"
        intent["status"] = "succeeded"
        self.charges[intent["latest_charge"]]["status"] = "succeeded"

    def fail(self, intent_id: str, code: str, message: str = "The debit was returned.") -> None:
        """The bank debit comes back: processing → requires_payment_method with the failure,
        and its charge fails with the pending credit reversed."""
        intent = self.intents[intent_id]
        assert intent["status"] == "processing"
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {
            "type": "card_error",
            "code": code,
            "message": message,
            "payment_method": {"id": intent["payment_method"], "type": "us_bank_account"},
        }
        charge = self.charges[intent["latest_charge"]]
        charge.update(
            status="failed",
            failure_code=code,
            failure_message=message,
            failure_balance_transaction=f"txn_fail{next(self._ids):06d}",
        )

    def decline(self, intent_id: str, decline_code: str, *, advice_code: str | None = None) -> None:
        """The card payment left processing is declined by the issuer."""
        intent = self.intents[intent_id]
        assert intent["status"] == "processing"
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": decline_code,
            "advice_code": advice_code,
            "message": "Your card was declined.",
        }
        charge = self.charges[intent["latest_charge"]]
        charge.update(status="failed", failure_code="card_declined", balance_transaction=None)

    def cancel(self, intent_id: str, reason: str = "automatic") -> None:
        """Stripe cancels the payment left processing."""
        intent = self.intents[intent_id]
        assert intent["status"] == "processing"
        intent.update(status="canceled", cancellation_reason=reason)

    def catch_up_search(self) -> None:
        """Make every PaymentIntent searchable, as Stripe's index eventually does."""
        self._searchable.update(self.intents)

    def release_slow(self) -> None:
        """Let every held ``pm_slow`` answer go."""
        self._release.set()

    # -- the API ---------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    async def create_intent(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": "Invalid API Key."}},
                status_code=401,
            )
        params = _form(await request.body())
        key = request.headers.get("idempotency-key")
        if not key:
            return _json(*_error(400, type="invalid_request_error", message="no key sent"))
        self.requests_per_key[key] += 1
        fingerprint = json.dumps(params, sort_keys=True)
        stored = self._stored.get(key)
        if key in self._in_flight:
            return _json(
                *_error(
                    409,
                    type="invalid_request_error",
                    code="idempotency_key_in_use",
                    message="There is currently another in-progress request using this "
                    "Idempotent Key (that probably means you submitted twice, and the other "
                    "request is still going through).",
                )
            )
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return _json(
                    *_error(
                        400,
                        type="idempotency_error",
                        message="Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                )
            return _json(
                stored.status, stored.body, {**stored.headers, "Idempotent-Replayed": "true"}
            )
        problem = _invalid(params)
        if problem is not None:
            return _json(*_error(400, type="invalid_request_error", message=problem))
        method = params["payment_method"]
        if method == "pm_rate_limited_once" and self.requests_per_key[key] == 1:
            return _rate_limited("0")
        if method == "pm_rate_limited":
            return _rate_limited(None)
        if method == "pm_rate_limited_long":
            return _rate_limited("60")
        if method == "pm_slow":
            generation = self._generation
            self._in_flight.add(key)
            try:
                intent = self._record(key, params, "succeeded")
                await self._release.wait()
            finally:
                self._in_flight.discard(key)
            if generation != self._generation:
                return _json(200, intent, {})  # answered after a reset: keep no trace
            return self._store(key, fingerprint, 200, intent, {})
        status, body, headers = self._answer(key, params, method)
        return self._store(key, fingerprint, status, body, headers)

    def _answer(
        self, key: str, params: dict[str, Any], method: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method in ("pm_card_ok", "pm_rate_limited_once"):
            return 200, self._record(key, params, "succeeded"), {}
        if method in ("pm_ach_ok", "pm_card_processing"):
            return 200, self._record(key, params, "processing"), {}
        if method == "pm_card_requires_action":
            return 200, self._record(key, params, "requires_action"), {}
        if method == "pm_5xx":
            return _error(500, type="api_error", message="Something went wrong on Stripe's end.")
        if method == "pm_card_missing":
            return _error(
                400,
                type="invalid_request_error",
                code="resource_missing",
                param="payment_method",
                message=f"No such PaymentMethod: '{method}'",
            )
        decline = _DECLINES.get(method)
        if decline is None:
            return _error(
                400, type="invalid_request_error", message=f"unknown test method {method}"
            )
        error = {"type": "card_error", **decline}
        intent = self._record(key, params, "requires_payment_method", last_payment_error=error)
        return _error(402, **error, payment_intent=intent, doc_url="https://stripe.com/docs")

    def _record(
        self,
        key: str,
        params: dict[str, Any],
        status: str,
        *,
        last_payment_error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        intent_id = f"pi_fake{next(self._ids):06d}"
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(params["amount"]),
            "currency": params["currency"],
            "customer": params["customer"],
            "payment_method": params["payment_method"],
            "payment_method_types": params.get("allowed_payment_method_types", ["card"]),
            "status": status,
            "created": int(time.time()),
            "metadata": params.get("metadata", {}),
            "description": params.get("description"),
            "last_payment_error": last_payment_error,
            "cancellation_reason": None,
            "latest_charge": self._charge_for(intent_id, params, status, last_payment_error),
            "livemode": False,
        }
        self.intents[intent_id] = intent
        self.created_per_key[key] += 1
        if not self.search_lagging:
            self._searchable.add(intent_id)
        return intent

    def _charge_for(
        self,
        intent_id: str,
        params: dict[str, Any],
        status: str,
        last_payment_error: dict[str, Any] | None,
    ) -> str | None:
        if status == "requires_action":
            return None  # waits for the customer: no charge attempted yet
        charge_id = f"ch_fake{next(self._ids):06d}"
        taken = status in ("succeeded", "processing")
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": int(params["amount"]),
            "payment_intent": intent_id,
            "status": {"succeeded": "succeeded", "processing": "pending"}.get(status, "failed"),
            # Money accepted (settled or pending) is on the balance; a refused one never is.
            "balance_transaction": f"txn_fake{next(self._ids):06d}" if taken else None,
            "failure_balance_transaction": None,
            "failure_code": None if last_payment_error is None else last_payment_error["code"],
            "disputed": False,
        }
        return charge_id

    def _store(
        self, key: str, fingerprint: str, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> Response:
        self._stored[key] = _Stored(fingerprint, status, body, headers)
        return _json(status, body, headers)

    async def search_intents(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        match = _SEARCH.fullmatch(request.query_params.get("query", ""))
        if match is None:
            return _json(*_error(400, type="invalid_request_error", message="unsupported query"))
        wanted = re.sub(r"\\(.)", r"\1", match.group(1))
        found = [
            intent
            for intent_id, intent in self.intents.items()
            if intent_id in self._searchable
            and intent["metadata"].get("collector_attempt_key") == wanted
        ]
        limit = int(request.query_params.get("limit", "10"))
        return JSONResponse(
            {
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": len(found) > limit,
                "next_page": None,
                "data": found[:limit],
            }
        )

    async def retrieve_intent(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        intent_id = request.path_params["intent_id"]
        self.retrieved[intent_id] += 1
        if self.failing_reads:
            return _json(*_error(500, type="api_error", message="Something went wrong."))
        intent = self.intents.get(intent_id)
        if intent is None:
            return _json(
                *_error(404, type="invalid_request_error", code="resource_missing", param="intent")
            )
        return JSONResponse(intent)

    async def retrieve_charge(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        charge_id = request.path_params["charge_id"]
        self.retrieved[charge_id] += 1
        if self.failing_reads:
            return _json(*_error(500, type="api_error", message="Something went wrong."))
        charge = self.charges.get(charge_id)
        if charge is None:
            return _json(
                *_error(404, type="invalid_request_error", code="resource_missing", param="id")
            )
        return JSONResponse(charge)

    async def retrieve_payment_method(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        method_id = request.path_params["method_id"]
        if method_id == "pm_card_missing":
            return _json(
                *_error(404, type="invalid_request_error", code="resource_missing", param="id")
            )
        # The fingerprint names the number, not the PaymentMethod: methods of one card share
        # it (tests name such methods pm_..._same_<n>).
        number = re.sub(r"_same_\d+$", "", method_id)
        kind = "us_bank_account" if "bank" in method_id or "ach" in method_id else "card"
        details: dict[str, object] = {"fingerprint": f"fp_{number}"}
        if kind == "us_bank_account" and "blocked" in method_id:
            # Stripe blocks a bank account it learned is closed or was disputed as unauthorized.
            details["status_details"] = {"blocked": {"network_code": "R02", "reason": "closed"}}
        return JSONResponse(
            {"id": method_id, "object": "payment_method", "type": kind, kind: details}
        )

    async def health(self, request: Request) -> Response:
        return Response("ok")

    def app(self) -> Starlette:
        """The ASGI app serving this state."""
        return Starlette(
            routes=[
                Route("/v1/payment_intents", self.create_intent, methods=["POST"]),
                Route("/v1/payment_intents/search", self.search_intents, methods=["GET"]),
                Route("/v1/payment_intents/{intent_id}", self.retrieve_intent, methods=["GET"]),
                Route("/v1/charges/{charge_id}", self.retrieve_charge, methods=["GET"]),
                Route(
                    "/v1/payment_methods/{method_id}",
                    self.retrieve_payment_method,
                    methods=["GET"],
                ),
                Route("/health", self.health, methods=["GET"]),
            ]
        )


def _invalid(params: dict[str, Any]) -> str | None:
    # What the adapters must always send; a missing field is an adapter bug the tests catch.
    for name in ("amount", "currency", "customer", "payment_method"):
        if not params.get(name):
            return f"missing {name}"
    if params.get("confirm") != "true" or params.get("off_session") != "true":
        return "the fake only takes confirmed off-session intents"
    if "collector_attempt_key" not in params.get("metadata", {}):
        return "metadata lacks collector_attempt_key"
    if not params.get("allowed_payment_method_types"):
        return "missing allowed_payment_method_types"
    return None


def _rate_limited(retry_after: str | None) -> Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return _json(
        429,
        {
            "error": {
                "type": "invalid_request_error",
                "code": "rate_limit",
                "message": "Too many requests.",
            }
        },
        headers,
    )


def _json(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


@asynccontextmanager
async def serve_fake_stripe() -> AsyncIterator[FakeStripe]:
    """Serve a fresh FakeStripe on 127.0.0.1 at an ephemeral port, in this event loop."""
    fake = FakeStripe()
    # Bound and listening before uvicorn starts: a client connecting early waits in the backlog
    # instead of being refused, and the port is known without racing for it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    host, port = sock.getsockname()
    fake.base_url = f"http://{host}:{port}"
    config = uvicorn.Config(
        fake.app(),
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            # Ready when it answers: the request waits in the backlog until uvicorn accepts.
            with anyio.fail_after(READY_TIMEOUT_S):
                async with httpx.AsyncClient() as client:
                    (await client.get(f"{fake.base_url}/health")).raise_for_status()
            try:
                yield fake
            finally:
                fake.release_slow()
                server.should_exit = True
    finally:
        sock.close()


def dispute(
    intent: dict[str, Any],
    *,
    reason: str = "debit_not_authorized",
    method_type: str | None = None,
    dispute_id: str = "dp_fake1",
) -> dict[str, Any]:
    """A Dispute of this PaymentIntent's charge, as ``charge.dispute.created`` carries it: ids
    of the charge and the PaymentIntent, not their metadata. ``payment_method_details`` is
    set only for the types Stripe gives details for (card, klarna, paypal, amazon_pay)."""
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": intent["amount"],
        "currency": intent["currency"],
        "charge": intent["latest_charge"],
        "payment_intent": intent["id"],
        "reason": reason,
        # ACH disputes cannot be contested: Stripe withdraws the funds and closes them lost.
        "status": "lost" if method_type is None else "needs_response",
        "created": int(time.time()),
        "livemode": False,
        "is_charge_refundable": False,
        "metadata": {},
        "payment_method_details": None if method_type is None else {"type": method_type},
    }


def event_payload(event_type: str, intent: dict[str, Any], *, event_id: str = "evt_fake1") -> bytes:
    """A webhook body as Stripe sends it: a snapshot event around one object (a PaymentIntent
    or a Dispute)."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "type": event_type,
            "data": {"object": intent},
        }
    ).encode()


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header by Stripe's documented scheme: ``t=<unix time>`` and
    ``v1=`` the hex HMAC-SHA256, keyed by the endpoint secret, of ``"<t>.<payload>"``."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"
