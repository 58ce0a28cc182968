"""Random interleavings of everything that moves money, checked after every step.

Each example is a list of steps run against a database of its own (cloned from the
migrated template, like every test's): batch passes on advancing business dates, manual
payments (whole and partial, card and ACH), returns early and late of each category
reported by key as a return file would, changes of primary method, lost answers (the
sandbox's timeout tokens) and passes that die after their claim (re-sent by the next
pass's reconciliation). After every step the ledger's audit is clean and no installment
kept more money at the sandbox than its amount, net of what came back.

Deterministic (``derandomize``); ``-m slow`` runs a longer variant (longer interleavings;
``COLLECTOR_LEDGER_EXAMPLES`` sets how many).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collector.config import Settings
from collector.db.attempts import ClaimCursor
from collector.db.audit import run_audit
from collector.db.embedded import database_url_of
from collector.db.payments import PaymentRequest
from collector.db.pool import open_pool
from collector.db.portal import change_primary
from collector.db.runs import start_run
from collector.exceptions import Conflict, Unprocessable
from collector.gateways.base import ChargeRequest, Gateway, Returned
from collector.gateways.registry import open_gateways
from collector.jobs.charging import Charger
from collector.jobs.collect import run_pass
from collector.jobs.manual_pay import pay_now
from collector.jobs.presentment import claim
from collector.jobs.settle import apply_by_key
from tests.conftest import gateway_context

START = date(2026, 11, 2)  # a Monday
GATEWAYS = ["sandbox_card", "sandbox_ach"]
TOKENS = (
    "sandbox_card_ok",
    "sandbox_card_insufficient_funds",
    "sandbox_card_stolen",
    "sandbox_card_timeout_taken",
    "sandbox_card_timeout_not_taken",
    "sandbox_ach_ok",
    "sandbox_ach_return_R01",
    "sandbox_ach_return_R02",
    "sandbox_ach_return_R10",
)
RETURN_CODES = ("R01", "R02", "R10")
LEASES = 2
_dbs = itertools.count()


# -- Steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    days: int  # business dates advance by this much first


@dataclass(frozen=True)
class Pay:
    lease: int
    partial: bool
    token: int | None  # a method of the customer's other than the primary; None: the primary


@dataclass(frozen=True)
class Return:
    pick: int  # which of the debits the bank still holds
    code: str
    late: bool  # only debits already settled; else only those still in flight


@dataclass(frozen=True)
class ChangePrimary:
    lease: int
    token: int


@dataclass(frozen=True)
class DeadPass:
    reached_gateway: bool  # the dead pass sent its charges before it died


Step = Pass | Pay | Return | ChangePrimary | DeadPass

steps = st.one_of(
    st.builds(Pass, days=st.integers(0, 4)),
    st.builds(
        Pay,
        lease=st.integers(0, LEASES - 1),
        partial=st.booleans(),
        token=st.none() | st.integers(0, len(TOKENS) - 1),
    ),
    st.builds(
        Return, pick=st.integers(0, 7), code=st.sampled_from(RETURN_CODES), late=st.booleans()
    ),
    st.builds(
        ChangePrimary, lease=st.integers(0, LEASES - 1), token=st.integers(0, len(TOKENS) - 1)
    ),
    st.builds(DeadPass, reached_gateway=st.booleans()),
)


# -- One example's world ---------------------------------------------------------------------


@dataclass
class World:
    pool: asyncpg.Pool
    gateways: Mapping[str, Gateway]
    settings: Settings
    leases: list[tuple[int, int]]  # (customer id, lease id)
    methods: list[list[int]]  # per lease: a method id per token of TOKENS
    today: date = START
    keys: itertools.count[int] = field(default_factory=itertools.count)


@asynccontextmanager
async def _world(
    server_url: str, template: str, primaries: tuple[int, ...]
) -> AsyncIterator[World]:
    name = f"collector_prop_{os.getpid()}_{next(_dbs)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    url = database_url_of(server_url, name)
    config = Settings(
        database_url=url,  # type: ignore[arg-type]
        batch_size=50,
        concurrency=4,
        sandbox_latency_ms=0,
        gateway_timeout_s=5,
    )
    try:
        async with (
            open_pool(url, size=6) as pool,
            open_gateways(config.gateways, gateway_context(url)) as gateways,
        ):
            world = World(pool, gateways, config, [], [])
            await _seed(world, primaries)
            yield world
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _seed(world: World, primaries: tuple[int, ...]) -> None:
    """Customers with a method per sandbox token (``primaries``: which is primary), each
    with one lease of two installments: one overdue already, never attempted (a missed cron
    day), one due a few days on."""
    async with world.pool.acquire() as conn:
        for n in range(LEASES):
            customer = await conn.fetchval(
                "INSERT INTO customers (email, name) VALUES ($1, $2) RETURNING id",
                f"p{n}@example.com",
                f"Prop {n}",
            )
            ids = []
            for k, token in enumerate(TOKENS):
                kind = "ach" if token.startswith("sandbox_ach") else "card"
                ids.append(
                    await conn.fetchval(
                        "INSERT INTO payment_methods (customer_id, kind, gateway, token, last4,"
                        " is_primary) VALUES ($1, $2, $3, $4, '0000', $5) RETURNING id",
                        customer,
                        kind,
                        f"sandbox_{kind}",
                        token,
                        k == primaries[n],
                    )
                )
            lease = await conn.fetchval(
                "INSERT INTO leases (customer_id, store, agreement_ref, status, order_details)"
                " VALUES ($1, 'Prop Store', $2, 'active', '{}') RETURNING id",
                customer,
                f"AGR-P-{n}",
            )
            for seq, (due_on, cents) in enumerate(
                [(START - timedelta(days=3), 10_000), (START + timedelta(days=4), 7_500)], start=1
            ):
                await conn.execute(
                    "INSERT INTO installments"
                    " (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)"
                    " VALUES ($1, $2, $3, $4, $4, $5)",
                    lease,
                    customer,
                    seq,
                    due_on,
                    cents,
                )
            world.leases.append((customer, lease))
            world.methods.append(ids)


async def _run(world: World, step: Step) -> None:
    pool, settings_ = world.pool, world.settings
    match step:
        case Pass(days=days):
            # One pass per business date on the way, as cron would run them.
            for _ in range(max(days, 1)):
                world.today += timedelta(days=1 if days else 0)
                await run_pass(pool, world.gateways, settings_, as_of=world.today)
        case Pay(lease=n, partial=partial, token=token):
            key = f"pay-{next(world.keys)}"
            amount = 1_500 if partial else None
            method = None if token is None else world.methods[n][token]
            request = PaymentRequest(
                lease_id=world.leases[n][1],
                request_key=key,
                request_hash=hashlib.sha256(f"{amount}:{method}".encode()).hexdigest(),
                amount_cents=amount,
                payment_method_id=method,
                as_of=world.today,
                gateways=GATEWAYS,
                deadline_s=60,
            )
            # Refused for nothing overdue, too much, a disabled method, the batch holding it.
            with suppress(Unprocessable, Conflict):
                await pay_now(
                    pool,
                    Charger.for_settings(world.gateways, settings_),
                    request,
                    retry_days=settings_.soft_retry_days,
                )
        case Return(pick=pick, code=code, late=late):
            debits = await pool.fetch(
                "SELECT a.idempotency_key FROM charge_attempts a"
                " JOIN sandbox.charges c ON c.idempotency_key = a.idempotency_key"
                " WHERE a.gateway = 'sandbox_ach' AND a.status = $1 ORDER BY a.id",
                "succeeded" if late else "processing",
            )
            if not debits:
                return
            key = debits[pick % len(debits)][0]
            # The bank's record says it came back; its return file reports it by key.
            await pool.execute(
                "UPDATE sandbox.charges SET return_code = $2 WHERE idempotency_key = $1",
                key,
                code,
            )
            await apply_by_key(
                pool,
                key,
                Returned(code=code, gateway_code=code),
                as_of=world.today,
                retry_days=settings_.soft_retry_days,
                source="return_file",
            )
        case ChangePrimary(lease=n, token=token):
            with suppress(Unprocessable):  # a disabled method cannot be chosen
                await change_primary(
                    pool, world.leases[n][0], world.methods[n][token], today=world.today
                )
        case DeadPass(reached_gateway=reached):
            run_id = await start_run(pool, as_of=world.today, host="gone", pid=1)
            claimed, _ = await claim(
                pool,
                as_of=world.today,
                cursor=ClaimCursor(),
                limit=100,
                gateways=GATEWAYS,
                run_id=run_id,
                deadline_s=600,
            )
            if reached:
                for c in claimed:
                    await world.gateways[c.gateway].charge(
                        ChargeRequest(
                            customer_id=c.customer_id,
                            idempotency_key=c.idempotency_key,
                            amount_cents=c.amount_cents,
                            token=c.token,
                            method_kind=c.method_kind,
                            metadata={"installment_id": str(c.installment_id)},
                            effective_on=c.as_of,
                        )
                    )


async def _check(world: World, done: list[Step]) -> None:
    report = await run_audit(world.pool)
    assert report.clean, (done, [v.message for found in report.violations.values() for v in found])
    kept = await world.pool.fetch(
        "SELECT i.id, i.amount_cents, coalesce(sum(m.amount_cents), 0)::bigint AS kept"
        " FROM installments i"
        " LEFT JOIN money_movements m ON m.installment_id = i.id AND m.kind = 'presented'"
        "  AND EXISTS (SELECT 1 FROM charge_attempts a JOIN sandbox.charges c"
        "              ON c.idempotency_key = a.idempotency_key"
        "              WHERE a.id = m.attempt_id AND c.status IN ('succeeded', 'processing')"
        "                AND NOT EXISTS (SELECT 1 FROM charge_returns r"
        "                                WHERE r.attempt_id = a.id))"
        " GROUP BY i.id, i.amount_cents"
    )
    for row in kept:
        assert row["kept"] <= row["amount_cents"], (done, dict(row))
    strays = await world.pool.fetchval(
        "SELECT count(*) FROM sandbox.charges c WHERE NOT EXISTS"
        " (SELECT 1 FROM charge_attempts a WHERE a.idempotency_key = c.idempotency_key)"
    )
    assert strays == 0, (done, "the sandbox holds a charge the ledger never made")


async def _play(
    server_url: str, template: str, primaries: tuple[int, ...], plan: list[Step]
) -> None:
    async with _world(server_url, template, primaries) as world:
        done: list[Step] = []
        for step in plan:
            await _run(world, step)
            done.append(step)
            await _check(world, done)
        # Let everything in flight end: a week of passes settles or returns every debit.
        for _ in range(3):
            await _run(world, Pass(days=3))
            await _check(world, done)
        # What the example reached, for --hypothesis-show-statistics.
        for row in await world.pool.fetch(
            "SELECT DISTINCT source || ':' || status FROM charge_attempts"
            " UNION SELECT DISTINCT 'return:' || return_code || ':' || reversed_paid"
            " FROM charge_returns"
            " UNION SELECT DISTINCT 'installment:' || status FROM installments"
        ):
            event(row[0])


_primaries = st.tuples(*[st.integers(0, len(TOKENS) - 1)] * LEASES)
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=_SUPPRESS,
    database=None,
)
@given(primaries=_primaries, plan=st.lists(steps, min_size=4, max_size=12))
async def test_no_interleaving_takes_too_much_or_breaks_the_ledger(
    server_url: str, template_name: str, primaries: tuple[int, ...], plan: list[Step]
) -> None:
    await _play(server_url, template_name, primaries, plan)


# CI runs the suite whole, slow tests included, so the long variant's default is a short form;
# COLLECTOR_LEDGER_EXAMPLES=200 uv run pytest -m slow tests/jobs/test_ledger_properties.py
# is the stress run (80 examples took 136 s on a 2-core machine).
LONG_EXAMPLES = int(os.environ.get("COLLECTOR_LEDGER_EXAMPLES", "20"))


@pytest.mark.slow
@settings(
    max_examples=LONG_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=_SUPPRESS,
    database=None,
)
@given(primaries=_primaries, plan=st.lists(steps, min_size=8, max_size=30))
async def test_no_long_interleaving_takes_too_much_or_breaks_the_ledger(
    server_url: str, template_name: str, primaries: tuple[int, ...], plan: list[Step]
) -> None:
    await _play(server_url, template_name, primaries, plan)
