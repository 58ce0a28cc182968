"""The money journal end to end: the money-ledger issue's chains, every way out of every
state of installments, attempts and payments, and one poisoned row among healthy ones.

Driven through the engine's own entry points (run_pass, pay_now, apply_by_key,
change_primary) on a real database with the sandbox as the gateway. The sandbox stands for
the bank too: a return the bank sends late is written into the sandbox's own record of the
charge (``sandbox.charges.return_code``) and then reported by key, as a return file would.
Every test that moves money ends with a clean ``collector audit``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg
import pytest

from collector.config import Settings
from collector.db.attempts import ClaimCursor
from collector.db.audit import run_audit
from collector.db.payments import ClaimedPayment, PaymentRequest, start_payment
from collector.db.pool import Executor
from collector.db.portal import NewMethod, add_method, change_primary, read_lease
from collector.db.runs import start_run
from collector.domain import ClaimedCharge
from collector.eligibility import REINITIATIONS_EXHAUSTED
from collector.exceptions import Conflict, TryAgain, Unprocessable
from collector.gateways.base import ChargeRequest, Gateway, Outcome, Returned, Succeeded
from collector.jobs.charging import Charger
from collector.jobs.collect import run_pass
from collector.jobs.manual_pay import HELD_KEY_TRIES, PaymentAnswer, pay_now
from collector.jobs.presentment import claim, screen
from collector.jobs.settle import SettleCounts, apply_by_key
from collector.metrics import NEEDS_ATTENTION
from collector.policy import CardRetryRules
from tests.factories import (
    attempts_of,
    carried_over_attempt,
    installment,
    make_lease,
    next_payment_id,
    put_state,
)

# A Monday. ACH debits made for a banking day settle two banking days later; 2026-11-11
# (Veterans Day) is no banking day.
MON = date(2026, 11, 2)
LONG_AGO = date(2026, 10, 1)
GATEWAYS = ["sandbox_card", "sandbox_ach"]
# The rules with the two-strike stop off, for the tests of the limits it would preempt.
NO_STOP = CardRetryRules(two_strike_limit=0)


# -- Driving the engine ----------------------------------------------------------------------


def _request(
    lease_id: int,
    key: str,
    *,
    as_of: date,
    amount_cents: int | None = None,
    method_id: int | None = None,
    deadline_s: int = 60,
) -> PaymentRequest:
    body = {"amount_cents": amount_cents, "payment_method_id": method_id}
    return PaymentRequest(
        lease_id=lease_id,
        request_key=key,
        request_hash=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
        amount_cents=amount_cents,
        payment_method_id=method_id,
        as_of=as_of,
        gateways=GATEWAYS,
        deadline_s=deadline_s,
    )


async def _pay(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    lease_id: int,
    key: str,
    **kw: object,
) -> PaymentAnswer:
    """What the portal's POST /v1/leases/{id}/payments does, on business date ``as_of``."""
    return await pay_now(
        pool,
        Charger.for_settings(gateways, settings),
        _request(lease_id, key, **kw),  # type: ignore[arg-type]
        retry_days=settings.soft_retry_days,
    )


async def _days(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    first: date,
    last: date,
) -> None:
    """One pass per calendar day from ``first`` to ``last``, as cron would run them."""
    day = first
    while day <= last:
        await run_pass(pool, gateways, settings, as_of=day)
        day += timedelta(days=1)


async def _bank_returns(
    pool: asyncpg.Pool, settings: Settings, key: str, code: str, *, as_of: date
) -> SettleCounts:
    """The bank returns the debit made under ``key``: its own record says so, and the return
    file reports it by key."""
    await pool.execute(
        "UPDATE sandbox.charges SET return_code = $2 WHERE idempotency_key = $1", key, code
    )
    return await apply_by_key(
        pool,
        key,
        Returned(code=code, gateway_code=code),
        as_of=as_of,
        retry_days=settings.soft_retry_days,
        source="return_file",
    )


async def _key_of_payment(pool: asyncpg.Pool, payment_id: int) -> str:
    key: str = await pool.fetchval(
        "SELECT idempotency_key FROM charge_attempts WHERE payment_id = $1", payment_id
    )
    return key


async def _sandbox_taken_keys(pool: asyncpg.Pool) -> list[str]:
    """The keys the sandbox accepted money under. Read on their own: the sandbox's tables are
    local to the coordinator on Citus, where they cannot be joined with distributed ones."""
    return [
        r[0]
        for r in await pool.fetch(
            "SELECT idempotency_key FROM sandbox.charges"
            " WHERE status IN ('succeeded', 'processing')"
        )
    ]


async def _sandbox_kept(pool: asyncpg.Pool) -> dict[int, int]:
    """Per installment, what the sandbox accepted and kept: its accepted charges, by the
    installments the ledger presented them for, less what the ledger knows came back."""
    rows = await pool.fetch(
        "SELECT m.installment_id, sum(m.amount_cents)::bigint AS kept"
        " FROM charge_attempts a"
        " JOIN money_movements m ON m.attempt_id = a.id AND m.customer_id = a.customer_id"
        "  AND m.kind = 'presented'"
        " WHERE a.idempotency_key = ANY ($1::text[])"
        "   AND NOT EXISTS (SELECT 1 FROM charge_returns r"
        "                   WHERE r.attempt_id = a.id AND r.customer_id = a.customer_id)"
        " GROUP BY m.installment_id",
        await _sandbox_taken_keys(pool),
    )
    return {r["installment_id"]: r["kept"] for r in rows}


async def _assert_never_over_taken(pool: asyncpg.Pool) -> None:
    taken = await _sandbox_taken_keys(pool)
    known = await pool.fetch(
        "SELECT idempotency_key FROM charge_attempts WHERE idempotency_key = ANY ($1::text[])",
        taken,
    )
    strays = len(set(taken) - {r[0] for r in known})
    assert strays == 0, "the sandbox took money under a key the ledger does not know"
    amounts = {
        r["id"]: r["amount_cents"]
        for r in await pool.fetch("SELECT id, amount_cents FROM installments")
    }
    for iid, kept in (await _sandbox_kept(pool)).items():
        assert kept <= amounts[iid], f"installment {iid}: the sandbox kept {kept} of {amounts[iid]}"
    over = await pool.fetch(
        "SELECT id FROM installments WHERE paid_cents + in_flight_cents > amount_cents"
    )
    assert not over


async def _assert_clean(pool: asyncpg.Pool, card_rules: CardRetryRules | None = None) -> None:
    report = await run_audit(pool, **({"card_rules": card_rules} if card_rules else {}))
    assert report.clean, [v.message for found in report.violations.values() for v in found]


async def _money(pool: asyncpg.Pool, iid: int) -> tuple[str, int, int, date | None]:
    row = await installment(pool, iid)  # type: ignore[arg-type]
    return row["status"], row["paid_cents"], row["in_flight_cents"], row["next_attempt_on"]


async def _overdue(pool: asyncpg.Pool, token: str, *, amount_cents: int = 10_000, retry_on: date):  # type: ignore[no-untyped-def]
    """A lease whose one installment is overdue: attempted once, declined, retry planned."""
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=[LONG_AGO], amount_cents=amount_cents)
        await put_state(
            conn, lease.installment_ids[0], status="overdue", attempts=1, next_attempt_on=retry_on
        )
        # The customer chose notice only outside 0 to the amount (Regulation E 1005.10(d)(2)):
        # a retry of what a partial payment left goes without the 10-day notice these tests
        # are not about (tests/notices/test_debit_notices.py is).
        await conn.execute(
            "UPDATE leases SET notice_range_min_cents = 0, notice_range_max_cents = $2"
            " WHERE id = $1",
            lease.lease_id,
            amount_cents,
        )
    return lease


async def _add_method(
    pool: asyncpg.Pool, customer_id: int, token: str, *, primary: bool, today: date
) -> int:
    kind = "ach" if token.startswith("sandbox_ach") else "card"
    method = await add_method(
        pool,
        customer_id,
        NewMethod(kind=kind, gateway=f"sandbox_{kind}", token=token, last4="0000"),
        make_primary=primary,
        today=today,
    )
    return method.id


class _Recording:
    """A gateway that keeps every charge request sent to the one it wraps."""

    def __init__(self, inner: Gateway) -> None:
        self.name = inner.name
        self.inner = inner
        self.requests: list[ChargeRequest] = []

    async def charge(self, request: ChargeRequest) -> Outcome:
        self.requests.append(request)
        return await self.inner.charge(request)

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        return await self.inner.lookup(idempotency_key)

    async def settlement(self, idempotency_key: str, *, as_of: date) -> object:
        return await self.inner.settlement(idempotency_key, as_of=as_of)  # type: ignore[attr-defined]


# -- The chains ----------------------------------------------------------------------


async def test_a_late_return_of_a_partial_payment_leaves_exactly_it_overdue(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _overdue(pool, "sandbox_ach_ok", retry_on=MON + timedelta(days=7))
    iid = lease.installment_ids[0]
    # 40.00 of the 100.00 by manual ACH on Monday; it settles Wednesday.
    answer = await _pay(
        pool, gateways, settings, lease.lease_id, "part", as_of=MON, amount_cents=4_000
    )
    assert (answer.status_code, answer.body["status"]) == (201, "processing")
    manual_key = await _key_of_payment(pool, answer.body["payment_id"])
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    assert (await _money(pool, iid))[:3] == ("overdue", 4_000, 0)
    # The batch debits the remaining 60.00 on its retry date.
    retry_on = MON + timedelta(days=7)
    await run_pass(pool, gateways, settings, as_of=retry_on)
    assert (await _money(pool, iid))[:3] == ("pending_settlement", 4_000, 6_000)
    # The next day the 40.00 comes back R01, late: it had been counted paid.
    returned = await _bank_returns(
        pool, settings, manual_key, "R01", as_of=retry_on + timedelta(days=1)
    )
    assert returned.returned == 1
    status, paid, in_flight, _ = await _money(pool, iid)
    assert (status, paid, in_flight) == ("overdue", 0, 6_000)
    row = await installment(pool, iid)  # type: ignore[arg-type]
    assert row["amount_cents"] - row["paid_cents"] - row["in_flight_cents"] == 4_000
    await _assert_never_over_taken(pool)
    # The portal can take 40.00 and no more.
    with pytest.raises(Unprocessable, match="more than the overdue amount 4000"):
        await _pay(
            pool,
            gateways,
            settings,
            lease.lease_id,
            "too-much",
            as_of=retry_on + timedelta(days=1),
            amount_cents=4_001,
        )
    # Later passes keep working: the 60.00 settles; the 40.00 is reinitiated for 40.00.
    await _days(
        pool, gateways, settings, retry_on + timedelta(days=1), retry_on + timedelta(days=21)
    )
    await _assert_never_over_taken(pool)
    async with pool.acquire() as conn:
        attempts = await attempts_of(conn, iid)
    assert [(a["source"], a["amount_cents"], a["status"]) for a in attempts][1:] == [
        ("retry", 6_000, "succeeded"),
        ("retry", 4_000, "succeeded"),
    ]
    assert attempts[-1]["reinitiation"] is True
    assert (await _money(pool, iid))[:3] == ("paid", 10_000, 0)
    taken = await pool.fetchval(
        "SELECT sum(amount_cents) FROM sandbox.charges WHERE status IN ('succeeded', 'processing')"
        " AND return_code IS NULL"
    )
    assert taken == 10_000
    await _assert_clean(pool)


async def test_the_portal_shows_money_in_flight_as_pending_not_overdue(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _overdue(pool, "sandbox_ach_ok", retry_on=MON + timedelta(days=7))
    answer = await _pay(
        pool, gateways, settings, lease.lease_id, "part", as_of=MON, amount_cents=4_000
    )
    manual_key = await _key_of_payment(pool, answer.body["payment_id"])
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    retry_on = MON + timedelta(days=7)
    await run_pass(pool, gateways, settings, as_of=retry_on)
    await _bank_returns(pool, settings, manual_key, "R01", as_of=retry_on + timedelta(days=1))
    await _assert_clean(pool)
    # What the pay endpoint would take (40.00) is what the portal shows overdue; the 60.00
    # debit not yet settled is pending (DESIGN.md, "What a pass collects").
    view = await read_lease(pool, lease.lease_id, today=retry_on + timedelta(days=1))
    assert (view.overdue_cents, view.pending_cents) == (4_000, 6_000)


async def _three_nsf_returns(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
):  # type: ignore[no-untyped-def]
    """A debit returned R01, reinitiated twice, each time returned R01: nothing planned."""
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[MON])
    iid = lease.installment_ids[0]
    day = MON
    for presentment in (1, 2, 3):
        assert (await run_pass(pool, gateways, settings, as_of=day)).counts.processing == 1
        day += timedelta(days=7)
        assert (await run_pass(pool, gateways, settings, as_of=day)).counts.returned == 1
        status, _, _, plan = await _money(pool, iid)
        assert status == "overdue"
        if presentment < 3:
            assert plan is not None
            day = plan
    assert (await _money(pool, iid))[3] is None
    return lease, day


# NACHA's own cap, tested with the two-strike stop (which comes first) off.
@pytest.mark.audit_rules(NO_STOP)
@pytest.mark.parametrize("back_to_account", ["toggle", "same_token_new_row"])
async def test_changing_methods_and_back_does_not_present_an_nsf_debit_a_fourth_time(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, back_to_account: str
) -> None:
    settings = settings.model_copy(update={"two_strike_limit": 0})
    lease, day = await _three_nsf_returns(pool, gateways, settings)
    iid = lease.installment_ids[0]
    await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=True, today=day)
    assert (await _money(pool, iid))[3] == day  # the new card reopened it
    if back_to_account == "toggle":
        await change_primary(pool, lease.customer_id, lease.method_id, today=day)  # type: ignore[arg-type]
    else:
        await _add_method(
            pool, lease.customer_id, "sandbox_ach_return_R01", primary=True, today=day
        )
    ach = _Recording(gateways["sandbox_ach"])
    gws = {**gateways, "sandbox_ach": ach}
    result = await run_pass(pool, gws, settings, as_of=day)  # type: ignore[arg-type]
    assert (result.counts.refused, ach.requests) == (1, [])
    async with pool.acquire() as conn:
        last = (await attempts_of(conn, iid))[-1]
    assert (last["status"], last["outcome_code"]) == ("refused", REINITIATIONS_EXHAUSTED)
    assert (await _money(pool, iid))[0] == "overdue"
    assert (await pool.fetchval("SELECT count(*) FROM sandbox.charges")) == 3
    # A different bank account is a first debit there: no "RETRY PYMT" label.
    await _add_method(pool, lease.customer_id, "sandbox_ach_ok", primary=True, today=day)
    await run_pass(pool, gws, settings, as_of=day)  # type: ignore[arg-type]
    [sent] = ach.requests
    assert "ach_reinitiation" not in sent.metadata
    async with pool.acquire() as conn:
        last = (await attempts_of(conn, iid))[-1]
    assert (last["status"], last["reinitiation"]) == ("processing", False)
    await _days(pool, gws, settings, day + timedelta(days=1), day + timedelta(days=5))  # type: ignore[arg-type]
    assert (await _money(pool, iid))[:2] == ("paid", 5_000)
    await _assert_never_over_taken(pool)
    await _assert_clean(pool, NO_STOP)


# -- Ways out: installments ------------------------------------------------------------------


async def test_a_scheduled_installment_is_collected_on_its_due_date_and_not_before(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[MON])
    iid = lease.installment_ids[0]
    await run_pass(pool, gateways, settings, as_of=MON - timedelta(days=1))
    assert await _money(pool, iid) == ("scheduled", 0, 0, MON)
    await run_pass(pool, gateways, settings, as_of=MON)
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_clean(pool)


async def test_a_processing_installment_waits_for_its_answer_then_moves_on(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[MON - timedelta(days=3)])
    iid = lease.installment_ids[0]
    # A pass claims it and dies before it charges (its liveness lock is never held).
    dead_run = await start_run(pool, as_of=MON, host="gone", pid=1)
    [claimed], _ = await claim(
        pool,
        as_of=MON,
        cursor=ClaimCursor(),
        limit=10,
        gateways=GATEWAYS,
        run_id=dead_run,
        deadline_s=600,
    )
    assert (await _money(pool, iid))[:3] == ("processing", 0, 5_000)
    # Manual pay does not take it meanwhile, and a pass reconciling it finishes it by key.
    with pytest.raises(Conflict):
        await _pay(pool, gateways, settings, lease.lease_id, "meanwhile", as_of=MON)
    result = await run_pass(pool, gateways, settings, as_of=MON)
    assert (result.counts.reconciled, result.counts.due) == (1, 0)
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, iid)
    assert (attempt["idempotency_key"], attempt["status"]) == (claimed.idempotency_key, "succeeded")
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_clean(pool)


@pytest.mark.parametrize(
    ("token", "status", "paid"),
    [("sandbox_ach_ok", "paid", 5_000), ("sandbox_ach_return_R01", "overdue", 0)],
)
async def test_a_pending_settlement_installment_is_paid_or_overdue_when_its_debit_ends(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    token: str,
    status: str,
    paid: int,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=[MON])
    iid = lease.installment_ids[0]
    await run_pass(pool, gateways, settings, as_of=MON)
    assert await _money(pool, iid) == ("pending_settlement", 0, 5_000, None)
    # Neither paid nor overdue meanwhile: nothing is collectable, by the batch or the portal.
    with pytest.raises(Unprocessable, match="nothing is overdue"):
        await _pay(
            pool, gateways, settings, lease.lease_id, "meanwhile", as_of=MON + timedelta(days=1)
        )
    await _days(pool, gateways, settings, MON + timedelta(days=1), MON + timedelta(days=2))
    got = await _money(pool, iid)
    assert got[:3] == (status, paid, 0)
    # An NSF return plans a reinitiation.
    assert (got[3] is not None) == (status == "overdue")
    await _assert_clean(pool)


async def test_a_paid_installment_is_final_until_a_late_return_reopens_it(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_ok", due_dates=[MON])
    iid = lease.installment_ids[0]
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    # Paid is final for the engine: later passes and the portal leave it alone.
    await _days(pool, gateways, settings, MON + timedelta(days=3), MON + timedelta(days=4))
    with pytest.raises(Unprocessable, match="nothing is overdue"):
        await _pay(pool, gateways, settings, lease.lease_id, "paid", as_of=MON + timedelta(days=4))
    assert await pool.fetchval("SELECT count(*) FROM sandbox.charges") == 1
    # Weeks later the bank returns it as unauthorized: overdue again, the account disabled,
    # nothing automatic planned; a new method reopens it.
    key = (await attempts_of(pool, iid))[0]["idempotency_key"]  # type: ignore[arg-type]
    later = MON + timedelta(days=30)
    await _bank_returns(pool, settings, key, "R10", as_of=later)
    assert await _money(pool, iid) == ("overdue", 0, 0, None)
    await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=True, today=later)
    await run_pass(pool, gateways, settings, as_of=later)
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_never_over_taken(pool)
    await _assert_clean(pool)


@pytest.mark.parametrize("way_out", ["retry", "manual_pay", "new_method"])
async def test_an_overdue_installment_leaves_by_its_retry_manual_pay_or_a_new_method(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, way_out: str
) -> None:
    token = "sandbox_card_stolen" if way_out == "new_method" else "sandbox_card_insufficient_funds"
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=[MON])
    iid = lease.installment_ids[0]
    await run_pass(pool, gateways, settings, as_of=MON)
    status, _, _, plan = await _money(pool, iid)
    assert status == "overdue"
    if way_out == "new_method":
        # A hard decline: the card is disabled and nothing is planned until a new method.
        assert plan is None
        await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=10))
        assert (await _money(pool, iid))[0] == "overdue"
        await _add_method(
            pool, lease.customer_id, "sandbox_card_ok", primary=True, today=MON + timedelta(days=10)
        )
        await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=10))
    elif way_out == "retry":
        assert plan == MON + timedelta(days=settings.soft_retry_days[0])
        # The customer's new card is the primary one when the retry comes.
        await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=True, today=MON)
        await run_pass(pool, gateways, settings, as_of=plan - timedelta(days=1))
        assert (await _money(pool, iid))[0] == "overdue"
        await run_pass(pool, gateways, settings, as_of=plan)
    else:
        card = await _add_method(
            pool, lease.customer_id, "sandbox_card_ok", primary=False, today=MON
        )
        answer = await _pay(
            pool,
            gateways,
            settings,
            lease.lease_id,
            "now",
            as_of=MON + timedelta(days=1),
            method_id=card,
        )
        assert answer.status_code == 201
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_never_over_taken(pool)
    await _assert_clean(pool)


async def test_a_cancelled_installment_is_final_and_never_collected(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[MON - timedelta(days=7)])
        await put_state(conn, lease.installment_ids[0], status="cancelled")
        # Nothing in the engine cancels yet (a payoff will, through the journal); derive it as
        # the one writer would, so its next collection date goes too.
        await conn.execute(
            "SELECT installments_derive_v1(ARRAY[$1::bigint])", lease.installment_ids[0]
        )
    await _days(pool, gateways, settings, MON, MON + timedelta(days=1))
    with pytest.raises(Unprocessable, match="nothing is overdue"):
        await _pay(pool, gateways, settings, lease.lease_id, "cancelled", as_of=MON)
    assert (await _money(pool, lease.installment_ids[0]))[:3] == ("cancelled", 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM charge_attempts") == 0
    await _assert_clean(pool)


# -- Ways out: attempts ----------------------------------------------------------------------


@pytest.mark.parametrize("reached_gateway", [False, True])
async def test_a_pending_attempt_of_a_dead_pass_is_finished_under_its_own_key(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, reached_gateway: bool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[MON])
    dead_run = await start_run(pool, as_of=MON, host="gone", pid=1)
    [claimed], _ = await claim(
        pool,
        as_of=MON,
        cursor=ClaimCursor(),
        limit=10,
        gateways=GATEWAYS,
        run_id=dead_run,
        deadline_s=600,
    )
    if reached_gateway:
        await gateways[claimed.gateway].charge(_charge_request(claimed))
    await run_pass(pool, gateways, settings, as_of=MON)
    [attempt] = await attempts_of(pool, lease.installment_ids[0])  # type: ignore[arg-type]
    assert (attempt["idempotency_key"], attempt["status"]) == (claimed.idempotency_key, "succeeded")
    assert await pool.fetchval("SELECT count(*) FROM sandbox.charges") == 1
    await _assert_clean(pool)


def _charge_request(claimed: ClaimedCharge) -> ChargeRequest:
    return ChargeRequest(
        customer_id=claimed.customer_id,
        idempotency_key=claimed.idempotency_key,
        amount_cents=claimed.amount_cents,
        token=claimed.token,
        method_kind=claimed.method_kind,
        metadata={"installment_id": str(claimed.installment_id)}
        if claimed.installment_id
        else {"payment_id": str(claimed.payment_id)},
        effective_on=claimed.as_of,
    )


@pytest.mark.parametrize(
    ("token", "resolved"),
    [("sandbox_card_timeout_taken", "succeeded"), ("sandbox_card_timeout_not_taken", "failed")],
)
async def test_an_in_doubt_attempt_is_resolved_by_lookup_and_a_failed_one_retried_anew(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    token: str,
    resolved: str,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=token, due_dates=[MON])
    iid = lease.installment_ids[0]
    assert (await run_pass(pool, gateways, settings, as_of=MON)).counts.in_doubt == 1
    assert (await _money(pool, iid))[:3] == ("processing", 0, 5_000)
    # Passing days do not make it failed; the next pass asks the gateway.
    await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=1))
    [attempt] = await attempts_of(pool, iid)  # type: ignore[arg-type]
    assert attempt["status"] == resolved
    if resolved == "succeeded":
        assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    else:
        # Not taken: overdue with a retry, which is a new attempt under a new key.
        status, _, _, plan = await _money(pool, iid)
        assert status == "overdue" and plan is not None
        await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=True, today=plan)
        await run_pass(pool, gateways, settings, as_of=plan)
        keys = [a["idempotency_key"] for a in await attempts_of(pool, iid)]  # type: ignore[arg-type]
        assert keys == [f"collector-inst-{iid}-1", f"collector-inst-{iid}-2"]
        assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_never_over_taken(pool)
    await _assert_clean(pool)


async def test_a_succeeded_debit_moves_only_by_a_late_return(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_ok", due_dates=[MON])
    iid = lease.installment_ids[0]
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    [attempt] = await attempts_of(pool, iid)  # type: ignore[arg-type]
    assert attempt["status"] == "succeeded"
    # A settlement reported again (a webhook's retry) changes nothing.
    again = await apply_by_key(
        pool,
        attempt["idempotency_key"],
        Succeeded(gateway_ref="again"),
        as_of=MON + timedelta(days=3),
        retry_days=settings.soft_retry_days,
        source="webhook",
    )
    assert again.settled == 0
    returned = await _bank_returns(
        pool, settings, attempt["idempotency_key"], "R01", as_of=MON + timedelta(days=9)
    )
    assert returned.returned == 1
    [attempt] = await attempts_of(pool, iid)  # type: ignore[arg-type]
    status, paid, _, plan = await _money(pool, iid)
    assert (attempt["status"], status, paid) == ("returned", "overdue", 0)
    assert plan is not None  # a reinitiation
    await _assert_clean(pool)


# Every retry of the policy, so the two-strike stop (which would end them first) is off.
@pytest.mark.audit_rules(NO_STOP)
async def test_a_declined_attempt_is_final_and_its_retry_is_a_new_attempt(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    settings = settings.model_copy(update={"two_strike_limit": 0})
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[MON])
    iid = lease.installment_ids[0]
    for day in range(0, 17):
        await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=day))
    attempts = await attempts_of(pool, iid)  # type: ignore[arg-type]
    # One attempt per retry date, each declined for good, then nothing planned.
    assert [a["status"] for a in attempts] == ["declined"] * (1 + len(settings.soft_retry_days))
    assert len({a["idempotency_key"] for a in attempts}) == len(attempts)
    assert await _money(pool, iid) == ("overdue", 0, 0, None)
    # A new method is the way out.
    await _add_method(
        pool, lease.customer_id, "sandbox_card_ok", primary=True, today=MON + timedelta(days=17)
    )
    await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=17))
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_clean(pool, NO_STOP)


async def _revoked_account(pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings):  # type: ignore[no-untyped-def]
    """A lease whose bank account returned a debit as unauthorized (R10): disabled."""
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_return_R10", due_dates=[MON])
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    assert await _money(pool, lease.installment_ids[0]) == ("overdue", 0, 0, None)
    return lease


async def test_a_refused_attempt_is_final_and_a_new_primary_method_reopens_its_installment(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _revoked_account(pool, gateways, settings)
    iid = lease.installment_ids[0]
    day = MON + timedelta(days=5)
    # The customer enters the same account again: a new row, the same account.
    await _add_method(pool, lease.customer_id, "sandbox_ach_return_R10", primary=True, today=day)
    result = await run_pass(pool, gateways, settings, as_of=day)
    assert result.counts.refused == 1
    last = (await attempts_of(pool, iid))[-1]  # type: ignore[arg-type]
    assert (last["status"], last["outcome_code"]) == ("refused", "authorization_revoked")
    assert await _money(pool, iid) == ("overdue", 0, 0, None)
    assert await pool.fetchval("SELECT count(*) FROM sandbox.charges") == 1
    # A card is another instrument: it reopens the installment and is charged.
    await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=True, today=day)
    await run_pass(pool, gateways, settings, as_of=day)
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_clean(pool)


@pytest.mark.parametrize(("code", "plan"), [("R01", True), ("R02", False), ("R10", False)])
async def test_a_returned_attempt_is_final_and_its_installment_overdue_again(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, code: str, plan: bool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=f"sandbox_ach_return_{code}", due_dates=[MON])
    iid = lease.installment_ids[0]
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    [attempt] = await attempts_of(pool, iid)  # type: ignore[arg-type]
    assert attempt["status"] == "returned"
    # The return file reporting it again changes nothing.
    again = await _bank_returns(
        pool, settings, attempt["idempotency_key"], code, as_of=MON + timedelta(days=3)
    )
    assert again.returned == 0
    status, _, _, planned = await _money(pool, iid)
    method = await pool.fetchval(
        "SELECT status FROM payment_methods WHERE id = $1", lease.method_id
    )
    assert (status, planned is not None, method) == (
        "overdue",
        plan,
        "active" if plan else "disabled",
    )
    if plan:
        # The reinitiation is a new attempt, labelled so, for the identical amount.
        await run_pass(pool, gateways, settings, as_of=planned)
        last = (await attempts_of(pool, iid))[-1]  # type: ignore[arg-type]
        assert (last["reinitiation"], last["amount_cents"], last["status"]) == (
            True,
            5_000,
            "processing",
        )
    await _assert_clean(pool)


@pytest.mark.parametrize("code", ["R01", "R02"])
async def test_a_new_primary_method_chosen_while_a_debit_is_in_flight_is_used_when_it_returns(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, code: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=f"sandbox_ach_return_{code}", due_dates=[MON])
    iid = lease.installment_ids[0]
    await run_pass(pool, gateways, settings, as_of=MON)
    card = await _add_method(
        pool, lease.customer_id, "sandbox_card_ok", primary=True, today=MON + timedelta(days=1)
    )
    assert (await _money(pool, iid))[0] == "pending_settlement"  # not reopened meanwhile
    await _days(pool, gateways, settings, MON + timedelta(days=1), MON + timedelta(days=12))
    attempts = await attempts_of(pool, iid)  # type: ignore[arg-type]
    assert [(a["payment_method_id"], a["status"]) for a in attempts] == [
        (lease.method_id, "returned"),
        (card, "succeeded"),
    ]
    assert attempts[1]["reinitiation"] is False
    assert await _money(pool, iid) == ("paid", 5_000, 0, None)
    await _assert_clean(pool)


# -- Ways out: payments ----------------------------------------------------------------------


async def _two_overdue(pool: asyncpg.Pool, token: str):  # type: ignore[no-untyped-def]
    """A lease with two installments of 50.00 overdue, their next automatic attempt weeks
    away: only manual pay collects them in these tests."""
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token=token, due_dates=[LONG_AGO, LONG_AGO + timedelta(days=14)]
        )
        for iid in lease.installment_ids:
            await put_state(
                conn, iid, status="overdue", attempts=1, next_attempt_on=MON + timedelta(days=30)
            )
    return lease


async def _payment_status(pool: asyncpg.Pool, payment_id: int) -> tuple[str, str]:
    row = await pool.fetchrow(
        "SELECT p.status, a.status AS attempt FROM payments p"
        " JOIN charge_attempts a ON a.payment_id = p.id AND a.customer_id = p.customer_id"
        " WHERE p.id = $1",
        payment_id,
    )
    return row["status"], row["attempt"]


@pytest.mark.parametrize("reached_gateway", [False, True])
async def test_a_payment_whose_request_died_after_its_claim_replays_its_final_answer(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, reached_gateway: bool
) -> None:
    lease = await _two_overdue(pool, "sandbox_card_ok")
    request = _request(lease.lease_id, "died", as_of=MON)

    async def present_it(db: Executor, charge: ClaimedCharge) -> tuple[ClaimedCharge, str | None]:
        [sent], _ = await screen(db, [charge], as_of=MON)
        return sent, None

    # The claim commits; the process dies before (or just after) the gateway call, and no
    # answer is ever stored.
    claimed = await start_payment(pool, request, present=present_it)
    assert isinstance(claimed, ClaimedPayment)
    if reached_gateway:
        await gateways["sandbox_card"].charge(_charge_request(claimed.charge))
    payment_id = claimed.payment_id
    assert (
        await pool.fetchval("SELECT response_status FROM payments WHERE id = $1", payment_id)
        is None
    )
    # A retry of the request while its claim holds: still being processed.
    with pytest.raises(Conflict):
        await _pay(pool, gateways, settings, lease.lease_id, "died", as_of=MON)
    # Its claim runs out; the next pass's reconciliation resolves it by key.
    await pool.execute("UPDATE charge_attempts SET claimed_until = now() - interval '1 second'")
    assert (await run_pass(pool, gateways, settings, as_of=MON)).counts.reconciled == 1
    assert await _payment_status(pool, payment_id) == ("succeeded", "succeeded")
    replay = await _pay(pool, gateways, settings, lease.lease_id, "died", as_of=MON)
    assert (replay.status_code, replay.body["status"], replay.body["payment_id"]) == (
        201,
        "succeeded",
        payment_id,
    )
    assert await pool.fetchval("SELECT count(*) FROM sandbox.charges") == 1
    for iid in lease.installment_ids:
        assert (await _money(pool, iid))[:2] == ("paid", 5_000)
    await _assert_clean(pool)


@pytest.mark.parametrize(
    ("token", "final", "replayed"),
    [
        ("sandbox_card_timeout_taken", "succeeded", 201),
        ("sandbox_card_timeout_not_taken", "failed", 402),
    ],
)
async def test_an_in_doubt_payment_is_resolved_and_its_key_then_replays_the_final_answer(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    token: str,
    final: str,
    replayed: int,
) -> None:
    lease = await _two_overdue(pool, token)
    first = await _pay(pool, gateways, settings, lease.lease_id, "lost", as_of=MON)
    assert (first.status_code, first.body["status"]) == (202, "in_doubt")
    again = await _pay(pool, gateways, settings, lease.lease_id, "lost", as_of=MON)
    assert again.status_code == 202  # not known yet, and not charged again
    await run_pass(pool, gateways, settings, as_of=MON)
    assert await _payment_status(pool, first.body["payment_id"]) == (final, final)
    replay = await _pay(pool, gateways, settings, lease.lease_id, "lost", as_of=MON)
    assert replay.status_code == replayed
    if final == "succeeded":
        assert replay.body["status"] == "succeeded"
    else:
        # Failed (not taken) is final for the payment; the installments are owed again and a
        # new payment (a new key) may take them.
        assert [(await _money(pool, iid))[0] for iid in lease.installment_ids] == ["overdue"] * 2
        card = await _add_method(
            pool, lease.customer_id, "sandbox_card_ok", primary=False, today=MON
        )
        other = await _pay(
            pool, gateways, settings, lease.lease_id, "again", as_of=MON, method_id=card
        )
        assert other.status_code == 201
    for iid in lease.installment_ids:
        assert (await _money(pool, iid))[:2] == ("paid", 5_000)
    await _assert_never_over_taken(pool)
    await _assert_clean(pool)


@pytest.mark.parametrize(
    ("token", "final"), [("sandbox_ach_ok", "succeeded"), ("sandbox_ach_return_R01", "returned")]
)
async def test_a_processing_payment_settles_or_is_returned(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, token: str, final: str
) -> None:
    lease = await _two_overdue(pool, token)
    first = await _pay(pool, gateways, settings, lease.lease_id, "debit", as_of=MON)
    assert (first.status_code, first.body["status"]) == (201, "processing")
    assert [(await _money(pool, iid))[0] for iid in lease.installment_ids] == [
        "pending_settlement"
    ] * 2
    await _days(pool, gateways, settings, MON, MON + timedelta(days=2))
    assert await _payment_status(pool, first.body["payment_id"]) == (final, final)
    states = [(await _money(pool, iid))[:3] for iid in lease.installment_ids]
    if final == "succeeded":
        assert states == [("paid", 5_000, 0)] * 2
    else:
        # Returned is final for the payment: the installments are overdue again, and the
        # customer can pay them another way.
        assert states == [("overdue", 0, 0)] * 2
        card = await _add_method(
            pool, lease.customer_id, "sandbox_card_ok", primary=True, today=MON + timedelta(days=2)
        )
        other = await _pay(
            pool,
            gateways,
            settings,
            lease.lease_id,
            "card",
            as_of=MON + timedelta(days=2),
            method_id=card,
        )
        assert other.status_code == 201
    # The key replays the first answer; nothing is charged again.
    replay = await _pay(
        pool, gateways, settings, lease.lease_id, "debit", as_of=MON + timedelta(days=3)
    )
    assert (replay.status_code, replay.body) == (first.status_code, first.body)
    await _assert_never_over_taken(pool)
    await _assert_clean(pool)


async def test_a_succeeded_payment_is_final_and_its_key_replays_it(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _two_overdue(pool, "sandbox_card_ok")
    first = await _pay(
        pool, gateways, settings, lease.lease_id, "card", as_of=MON, amount_cents=7_000
    )
    assert (first.status_code, first.body["status"]) == (201, "succeeded")
    replay = await _pay(
        pool, gateways, settings, lease.lease_id, "card", as_of=MON, amount_cents=7_000
    )
    assert (replay.status_code, replay.body) == (201, first.body)
    assert [(await _money(pool, iid))[:2] for iid in lease.installment_ids] == [
        ("paid", 5_000),
        ("overdue", 2_000),
    ]
    # What is left is 30.00, and only that may be taken.
    with pytest.raises(Unprocessable, match="more than the overdue amount 3000"):
        await _pay(pool, gateways, settings, lease.lease_id, "more", as_of=MON, amount_cents=3_001)
    await _assert_clean(pool)


async def test_a_declined_payment_is_final_and_another_key_and_method_may_pay(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _two_overdue(pool, "sandbox_card_insufficient_funds")
    first = await _pay(pool, gateways, settings, lease.lease_id, "nsf", as_of=MON)
    assert (first.status_code, first.body["code"]) == (402, "insufficient_funds")
    replay = await _pay(pool, gateways, settings, lease.lease_id, "nsf", as_of=MON)
    assert (replay.status_code, replay.body) == (402, first.body)
    card = await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=False, today=MON)
    other = await _pay(pool, gateways, settings, lease.lease_id, "ok", as_of=MON, method_id=card)
    assert other.status_code == 201
    # The declined answer may not name its payment: it is the lease's first.
    declined = first.body.get("payment_id") or await pool.fetchval(
        "SELECT min(id) FROM payments WHERE lease_id = $1", lease.lease_id
    )
    assert await _payment_status(pool, declined) == ("declined", "declined")
    await _assert_clean(pool)


async def test_a_refused_payment_is_final_and_another_method_may_pay(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _revoked_account(pool, gateways, settings)
    day = MON + timedelta(days=5)
    same = await _add_method(
        pool, lease.customer_id, "sandbox_ach_return_R10", primary=False, today=day
    )
    first = await _pay(
        pool, gateways, settings, lease.lease_id, "revoked", as_of=day, method_id=same
    )
    assert (first.status_code, first.body["code"]) == (422, "authorization_revoked")
    replay = await _pay(
        pool, gateways, settings, lease.lease_id, "revoked", as_of=day, method_id=same
    )
    assert (replay.status_code, replay.body) == (422, first.body)
    assert await pool.fetchval("SELECT count(*) FROM sandbox.charges") == 1
    card = await _add_method(pool, lease.customer_id, "sandbox_card_ok", primary=False, today=day)
    other = await _pay(pool, gateways, settings, lease.lease_id, "card", as_of=day, method_id=card)
    assert other.status_code == 201
    assert await _money(pool, lease.installment_ids[0]) == ("paid", 5_000, 0, None)
    await _assert_clean(pool)


async def test_a_returned_debit_covering_two_installments_is_reinitiated_whole_or_not_at_all(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    lease = await _two_overdue(pool, "sandbox_ach_return_R01")
    first = await _pay(pool, gateways, settings, lease.lease_id, "debit", as_of=MON)
    assert first.body["amount_cents"] == 10_000
    ach = _Recording(gateways["sandbox_ach"])
    gws = {**gateways, "sandbox_ach": ach}
    await _days(pool, gws, settings, MON, MON + timedelta(days=2))  # type: ignore[arg-type]
    assert await _payment_status(pool, first.body["payment_id"]) == ("returned", "returned")
    plan = (await _money(pool, lease.installment_ids[0]))[3]
    assert plan is not None
    # NACHA 2.12.4.3: a reinitiation is for the identical amount of the returned entry. The
    # batch's debit of one installment (50.00) is not a reinitiation of the 100.00 entry.
    result = await run_pass(pool, gws, settings, as_of=plan)  # type: ignore[arg-type]
    assert (result.counts.refused, ach.requests) == (2, [])
    reasons = await pool.fetch(
        "SELECT outcome_code FROM charge_attempts WHERE status = 'refused' ORDER BY id"
    )
    assert [r[0] for r in reasons] == ["reinitiation_amount_differs"] * 2
    assert [(await _money(pool, iid))[:3] for iid in lease.installment_ids] == [
        ("overdue", 0, 0)
    ] * 2
    # The customer's 100.00 on the same account again is the reinitiation, labelled so.
    again = await pay_now(
        pool,
        Charger(gws, timeout_s=5, rate_limits={}),  # type: ignore[arg-type]
        _request(lease.lease_id, "again", as_of=plan),
        retry_days=settings.soft_retry_days,
    )
    assert again.status_code == 201
    [sent] = ach.requests
    assert (sent.amount_cents, sent.metadata.get("ach_reinitiation")) == (10_000, "true")
    await _assert_never_over_taken(pool)
    await _assert_clean(pool)


# -- Failure isolation -----------------------------------------------------------------------


def _attention_count(subject: str, reason: str) -> float:
    return NEEDS_ATTENTION.labels(subject=subject, reason=reason)._value.get()


async def _open_attention(pool: asyncpg.Pool) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT subject, subject_id, reason FROM needs_attention WHERE resolved_at IS NULL"
        " ORDER BY id"
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def _assert_clean_but_set_aside(pool: asyncpg.Pool, expected: int) -> None:
    """The audit lists exactly the rows set aside; once an operator resolves them, clean."""
    report = await run_audit(pool)
    dirty = {check: n for check, n in report.counts.items() if n}
    assert dirty == {"open_needs_attention": expected}, [
        v.message for found in report.violations.values() for v in found
    ]
    await pool.execute("UPDATE needs_attention SET resolved_at = now() WHERE resolved_at IS NULL")
    await _assert_clean(pool)


async def test_a_settlement_fact_for_an_unknown_key_is_set_aside_and_the_file_goes_on(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        leases = [await make_lease(conn, token="sandbox_ach_ok", due_dates=[MON]) for _ in range(3)]
    await run_pass(pool, gateways, settings, as_of=MON)
    keys = [
        (await attempts_of(pool, lease.installment_ids[0]))[0]["idempotency_key"]
        for lease in leases
    ]  # type: ignore[arg-type]
    before = _attention_count("settlement", "unknown_attempt")
    # A return file: a fact for a key this ledger never made, between two healthy ones.
    applied = []
    for key in [keys[0], "collector-inst-999999-1", keys[1]]:
        fact = Succeeded(gateway_ref="file") if key != keys[1] else Returned(code="R01")
        if key == keys[1]:
            applied.append(
                await _bank_returns(pool, settings, key, "R01", as_of=MON + timedelta(days=2))
            )
        else:
            applied.append(
                await apply_by_key(
                    pool,
                    key,
                    fact,
                    as_of=MON + timedelta(days=2),
                    retry_days=settings.soft_retry_days,
                    source="return_file",
                )
            )
    assert [(c.settled, c.returned) for c in applied] == [(1, 0), (0, 0), (0, 1)]
    assert _attention_count("settlement", "unknown_attempt") == before + 1
    assert await _open_attention(pool) == [
        ("settlement", "collector-inst-999999-1", "unknown_attempt")
    ]
    # The pass on the settlement date settles the third on time.
    await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=2))
    assert [(await _money(pool, lease.installment_ids[0]))[0] for lease in leases] == [
        "paid",
        "overdue",
        "paid",
    ]
    await _assert_clean_but_set_aside(pool, 1)


async def _colliding_attempt(pool: asyncpg.Pool, key: str) -> None:
    async with pool.acquire() as conn:
        await carried_over_attempt(conn, key, as_of=LONG_AGO)


async def test_a_row_whose_claim_violates_a_constraint_is_set_aside_and_the_pass_goes_on(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        healthy = [await make_lease(conn, due_dates=[MON]) for _ in range(2)]
        poisoned = await make_lease(conn, due_dates=[MON])
        healthy.append(await make_lease(conn, due_dates=[MON]))
    bad = poisoned.installment_ids[0]
    await _colliding_attempt(pool, f"collector-inst-{bad}-1")
    await _assert_clean(pool)
    before = _attention_count("installment", "claim_refused_by_database")
    result = await run_pass(pool, gateways, settings, as_of=MON)
    assert result.counts.succeeded == 3
    for lease in healthy:
        assert (await _money(pool, lease.installment_ids[0]))[:2] == ("paid", 5_000)
    assert await _open_attention(pool) == [("installment", str(bad), "claim_refused_by_database")]
    assert _attention_count("installment", "claim_refused_by_database") == before + 1
    # Taken out of the collectable set: nothing was sent for it, nothing is planned.
    assert await _money(pool, bad) == ("overdue", 0, 0, None)
    # Later passes go on too, and do not set it aside again and again.
    await run_pass(pool, gateways, settings, as_of=MON + timedelta(days=1))
    assert len(await _open_attention(pool)) == 1
    await _assert_never_over_taken(pool)
    await _assert_clean_but_set_aside(pool, 1)


async def _next_payment_id(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await next_payment_id(conn)


async def test_a_manual_payment_under_a_key_another_customer_holds_is_never_sent(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    # The payment's key is derived from its id (collector-pay-<id>): a carried-over attempt
    # of another customer holding the next one must stop that claim before the gateway
    # hears of it (on plain PostgreSQL the attempts' unique index on the key, sql/0031; on
    # Citus the lookup table). The way out is automatic: the held key is set aside and the
    # payment goes on under the next id's key.
    lease = await _overdue(pool, "sandbox_card_ok", retry_on=MON + timedelta(days=3))
    next_id = await _next_payment_id(pool)
    held = f"collector-pay-{next_id}"
    await _colliding_attempt(pool, held)
    before = _attention_count("attempt", "manual_pay_key_held")
    answer = await _pay(pool, gateways, settings, lease.lease_id, "portal-1", as_of=MON)
    assert answer.status_code == 201
    assert answer.body["payment_id"] > next_id
    assert (await _money(pool, lease.installment_ids[0]))[:2] == ("paid", 10_000)
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1
    sent = await pool.fetch("SELECT idempotency_key FROM sandbox.charges")
    assert held not in [r["idempotency_key"] for r in sent]
    assert f"collector-pay-{answer.body['payment_id']}" in [r["idempotency_key"] for r in sent]
    assert await _open_attention(pool) == [("attempt", held, "manual_pay_key_held")]
    assert _attention_count("attempt", "manual_pay_key_held") == before + 1
    # A repeat of the request replays the payment made.
    again = await _pay(pool, gateways, settings, lease.lease_id, "portal-1", as_of=MON)
    assert (again.status_code, again.body) == (201, answer.body)
    await _assert_clean_but_set_aside(pool, 1)


async def test_a_manual_payment_that_meets_held_keys_on_every_try_charges_nothing(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    # Keys held for the next HELD_KEY_TRIES ids (a restored database whose payment sequence
    # went back): the portal is told to try again, nothing recorded or sent; the next
    # request, past them, is collected once.
    lease = await _overdue(pool, "sandbox_card_ok", retry_on=MON + timedelta(days=3))
    next_id = await _next_payment_id(pool)
    held = [f"collector-pay-{next_id + n}" for n in range(HELD_KEY_TRIES)]
    for key in held:
        await _colliding_attempt(pool, key)
    with pytest.raises(TryAgain) as refused:
        await _pay(pool, gateways, settings, lease.lease_id, "portal-1", as_of=MON)
    assert refused.value.retry_after_s > 0
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM sandbox.charges WHERE idempotency_key = ANY ($1)", held
        )
        == 0
    )
    assert (await _money(pool, lease.installment_ids[0]))[:3] == ("overdue", 0, 0)
    assert sorted(await _open_attention(pool)) == sorted(
        ("attempt", key, "manual_pay_key_held") for key in held
    )
    answer = await _pay(pool, gateways, settings, lease.lease_id, "portal-1", as_of=MON)
    assert answer.status_code == 201
    assert (await _money(pool, lease.installment_ids[0]))[:2] == ("paid", 10_000)
    await _assert_clean_but_set_aside(pool, HELD_KEY_TRIES)
