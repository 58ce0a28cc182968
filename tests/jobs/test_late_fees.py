"""Late fees within state caps through whole passes over several business dates: assessed by
the pass once past each state's grace days (one per installment, never above its cap, never
on a charged-off lease), collected with the overdue amount by retries and manual pay in the
allocation order, waived through the API, shown by the dry run, the schedule and the portal,
held to Regulation E's notice of a varying debit, and checked by the audit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector.config import Settings, load_settings
from collector.db.audit import run_audit
from collector.db.payments import allocate_in_order
from collector.exceptions import ConfigError
from collector.fees.rules import load_rules, parse_rules
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.metrics import REGISTRY
from collector.seed import seed_demo
from tests.cli.commands import Done, env_for
from tests.cli.commands import collector as run_cli
from tests.factories import installment, make_lease
from tests.jobs.portal import Portal

TODAY = date(2026, 11, 26)
BROKE = "sandbox_card_insufficient_funds"


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def _state(conn: asyncpg.pool.PoolConnectionProxy, lease_id: int, state: str | None) -> None:
    await conn.execute("UPDATE leases SET state = $2 WHERE id = $1", lease_id, state)


async def dry_run(database_url: str, day: date) -> tuple[Done, dict[str, Any]]:
    """``collector run --dry-run --json`` for ``day`` with late fees on: the finished process
    and the preview it printed last."""
    done = await run_cli(
        "run",
        "--dry-run",
        "--json",
        "--date",
        day.isoformat(),
        "--allow-future-date",
        env=env_for(database_url, COLLECTOR_LATE_FEES="true"),
    )
    assert done.returncode == 0, done.stderr
    preview: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return done, preview


async def _fees(conn: asyncpg.pool.PoolConnectionProxy) -> dict[int, list[tuple[object, ...]]]:
    rows = await conn.fetch(
        "SELECT installment_id, kind, amount_cents, as_of, reason FROM money_movements"
        " WHERE kind IN ('fee_assessed', 'fee_waived') ORDER BY id"
    )
    found: dict[int, list[tuple[object, ...]]] = {}
    for r in rows:
        found.setdefault(r["installment_id"], []).append(
            (r["kind"], r["amount_cents"], r["as_of"], r["reason"])
        )
    return found


@pytest.fixture
def fee_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"late_fees": True})


async def test_passes_assess_each_states_fee_once_past_its_grace_and_within_its_cap(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    fee_settings: Settings,
    database_url: str,
) -> None:
    async with pool.acquire() as conn:
        ca = await make_lease(conn, token=BROKE, due_dates=[TODAY])  # 5 % of $50 = $2.50
        ca_small = await make_lease(conn, token=BROKE, due_dates=[TODAY], amount_cents=1_000)
        wv = await make_lease(conn, token=BROKE, due_dates=[TODAY], amount_cents=50_000)
        tx = await make_lease(conn, token=BROKE, due_dates=[TODAY], amount_cents=2_000)
        nowhere = await make_lease(conn, token=BROKE, due_dates=[TODAY], amount_cents=2_000)
        paid = await make_lease(conn, due_dates=[TODAY])
        gone = await make_lease(conn, token=BROKE, due_dates=[TODAY - timedelta(days=130)])
        for lease, state in (
            (ca, "CA"),
            (ca_small, "CA"),
            (wv, "WV"),
            (tx, "TX"),
            (paid, "CA"),
            (gone, "CA"),
        ):
            await _state(conn, lease.lease_id, state)
    assessed_before = _counter("collector_late_fees_assessed_cents_total")

    for n in range(13):
        day = TODAY + timedelta(days=n)
        if n == 0:
            # The lease 130 days past due is charged off before the fees: the dry run
            # neither counts a fee on it.
            done, preview = await dry_run(database_url, day)
            assert [c["lease_id"] for c in preview["charge_offs"]] == [gone.lease_id]
            assert preview["fees_to_assess"] == []
        if n == 6:
            # The dry run of day 6 shows the fee the pass would assess first (WV: 5 days of
            # grace), and nothing is written by it.
            done, preview = await dry_run(database_url, day)
            assert preview["fees_to_assess"] == [{"rule": "WV", "fees": 1, "cents": 1_500}]
            assert "would first assess 1 late fee(s) (WV), $15.00" in done.stdout
            async with pool.acquire() as conn:
                assert await _fees(conn) == {}
        await run_pass(pool, gateways, fee_settings, as_of=day)
        if n == 8:
            # A second pass of the same date assesses nothing more.
            await run_pass(pool, gateways, fee_settings, as_of=day)

    async with pool.acquire() as conn:
        fees = await _fees(conn)
        # More than the grace days past due: CA 7 (on day 8), WV 5 (day 6), default 10 (day
        # 11). CA's $2 minimum lifts 5 % of $10; WV's $15 cap holds 5 % of $500; TX has no rule.
        assert fees == {
            ca.installment_ids[0]: [("fee_assessed", 250, TODAY + timedelta(8), "late_fee:CA")],
            ca_small.installment_ids[0]: [
                ("fee_assessed", 200, TODAY + timedelta(8), "late_fee:CA")
            ],
            wv.installment_ids[0]: [("fee_assessed", 1_500, TODAY + timedelta(6), "late_fee:WV")],
            tx.installment_ids[0]: [
                ("fee_assessed", 100, TODAY + timedelta(11), "late_fee:default")
            ],
            nowhere.installment_ids[0]: [
                ("fee_assessed", 100, TODAY + timedelta(11), "late_fee:default")
            ],
        }
        # Paid on time, or charged off before any fee was due: never a fee.
        assert paid.installment_ids[0] not in fees and gone.installment_ids[0] not in fees
        row = await installment(conn, wv.installment_ids[0])
        assert (row["amount_cents"], row["fee_cents"], row["owed_cents"]) == (50_000, 1_500, 51_500)
        assert row["status"] == "overdue"
    assert _counter("collector_late_fees_assessed_cents_total") - assessed_before == 2_150
    assert (await run_audit(pool, fee_table=fee_settings.fee_table)).clean

    done = await run_cli("audit", "--json", env=env_for(database_url))
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_fee_is_collected_with_the_overdue_amount_after_a_timely_notice_and_waived(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    fee_settings: Settings,
    portal: Portal,
) -> None:
    async with pool.acquire() as conn:
        # Retried automatically: the fee changes the debit's amount (Regulation E).
        retried = await make_lease(conn, token=BROKE, due_dates=[TODAY])
        # Paid by hand, part then the rest: rent first, then the fee.
        by_hand = await make_lease(conn, token=BROKE, due_dates=[TODAY, TODAY + timedelta(days=30)])
        # Waived before it is paid.
        waived = await make_lease(conn, token=BROKE, due_dates=[TODAY])
        for lease in (retried, by_hand, waived):
            await _state(conn, lease.lease_id, "CA")
    waived_before = _counter("collector_late_fees_waived_cents_total")

    for n in range(9):  # CA's fee on day 8
        portal.today = TODAY + timedelta(days=n)
        await run_pass(pool, gateways, fee_settings, as_of=portal.today)
    fee_day = TODAY + timedelta(days=8)
    async with pool.acquire() as conn:
        notice = await conn.fetchrow(
            "SELECT * FROM debit_notices WHERE installment_id = $1 AND amount_cents = 5250",
            retried.installment_ids[0],
        )
        # The debit of rent + fee differs from the last one: its notice went out the day the
        # fee was assessed, and the debit is held back until it is 10 days old.
        assert notice is not None and notice["varying"] and notice["notified_on"] == fee_day
        refused = await conn.fetch(
            "SELECT amount_cents, as_of, outcome_code FROM charge_attempts"
            " WHERE installment_id = $1 AND status = 'refused'",
            retried.installment_ids[0],
        )
        assert [tuple(r) for r in refused] == [(5_250, fee_day, "debit_notice_required")]
        assert (await installment(conn, retried.installment_ids[0]))["next_attempt_on"] == (
            fee_day + timedelta(days=10)
        )

    # The schedule and the lease show the fee; the fee list gives its id.
    schedule = (await portal.http.get(f"/v1/leases/{by_hand.lease_id}/schedule")).json()
    first = schedule["installments"][0]
    assert (first["amount_cents"], first["fee_cents"], first["owed_cents"]) == (5_000, 250, 5_250)
    assert (first["rent_paid_cents"], first["fee_paid_cents"]) == (0, 0)
    lease = (await portal.http.get(f"/v1/leases/{by_hand.lease_id}")).json()
    assert (lease["overdue_cents"], lease["fees_owed_cents"], lease["state"]) == (5_250, 250, "CA")

    # Manual pay (with a card that works) of $51.00 of $52.50: the rent, then $1.00 of the
    # fee; then the rest.
    card = await portal.http.post(
        f"/v1/customers/{by_hand.customer_id}/payment-methods",
        json={"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok"},
    )
    assert card.status_code == 201, card.text
    card_id = card.json()["id"]
    paid = await portal.http.post(
        f"/v1/leases/{by_hand.lease_id}/payments",
        headers={"Idempotency-Key": "fee-part-1"},
        json={"amount_cents": 5_100, "payment_method_id": card_id},
    )
    assert paid.status_code == 201, paid.text
    first = (await portal.http.get(f"/v1/leases/{by_hand.lease_id}/schedule")).json()[
        "installments"
    ][0]
    assert (first["rent_paid_cents"], first["fee_paid_cents"], first["status"]) == (
        5_000,
        100,
        "overdue",
    )
    # Partly paid: it cannot be waived any more (a refund would be owed, not a waiver).
    fee_id = first["fee_id"]
    busy = await portal.http.post(
        f"/v1/leases/{by_hand.lease_id}/fees/{fee_id}/waive", json={"reason": "goodwill"}
    )
    assert busy.status_code == 409, busy.text
    rest = await portal.http.post(
        f"/v1/leases/{by_hand.lease_id}/payments",
        headers={"Idempotency-Key": "fee-part-2"},
        json={"payment_method_id": card_id},
    )
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount_cents"] == 150
    first = (await portal.http.get(f"/v1/leases/{by_hand.lease_id}/schedule")).json()[
        "installments"
    ][0]
    assert (first["rent_paid_cents"], first["fee_paid_cents"], first["status"]) == (
        5_000,
        250,
        "paid",
    )

    # Waiving: bad input changes nothing; a wrong fee is 404; the waiver is a journal row;
    # twice is 409.
    fees = (await portal.http.get(f"/v1/leases/{waived.lease_id}/fees")).json()["fees"]
    [fee] = fees
    url = f"/v1/leases/{waived.lease_id}/fees/{fee['fee_id']}/waive"
    for bad in (
        {},
        {"reason": ""},
        {"reason": "   "},
        {"reason": "x", "extra": 1},
        {"reason": 5},
        {"reason": "nul \u0000 inside"},
    ):
        assert (await portal.http.post(url, json=bad)).status_code == 422, bad
    wrong = await portal.http.post(
        f"/v1/leases/{retried.lease_id}/fees/{fee['fee_id']}/waive", json={"reason": "x"}
    )
    assert wrong.status_code == 404
    async with pool.acquire() as conn:
        assert (await installment(conn, waived.installment_ids[0]))["fee_waived_cents"] == 0
    ok = await portal.http.post(url, json={"reason": "first late payment in two years"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["amount_cents"] == 250
    again = await portal.http.post(url, json={"reason": "again"})
    assert again.status_code == 409
    async with pool.acquire() as conn:
        row = await installment(conn, waived.installment_ids[0])
        assert (row["fee_cents"], row["fee_waived_cents"], row["owed_cents"]) == (250, 250, 5_000)
        assert (await _fees(conn))[waived.installment_ids[0]][-1] == (
            "fee_waived",
            250,
            portal.today,
            "first late payment in two years",
        )
    assert _counter("collector_late_fees_waived_cents_total") - waived_before == 250

    # The retried lease's customer gets a working card; the notice's 10 days pass, and the
    # debit of rent + fee goes out then, not before.
    added = await portal.http.post(
        f"/v1/customers/{retried.customer_id}/payment-methods",
        json={
            "kind": "card",
            "gateway": "sandbox_card",
            "token": "sandbox_card_ok",
            "last4": "4242",
            "make_primary": True,
        },
    )
    assert added.status_code == 201, added.text
    for n in range(9, 19):
        portal.today = TODAY + timedelta(days=n)
        await run_pass(pool, gateways, fee_settings, as_of=portal.today)
    async with pool.acquire() as conn:
        row = await installment(conn, retried.installment_ids[0])
        assert (row["status"], row["paid_cents"]) == ("paid", 5_250)
        sent = await conn.fetch(
            "SELECT amount_cents, as_of FROM charge_attempts WHERE installment_id = $1"
            " AND status = 'succeeded'",
            retried.installment_ids[0],
        )
        assert [tuple(r) for r in sent] == [(5_250, fee_day + timedelta(days=10))]
    assert (await run_audit(pool, fee_table=fee_settings.fee_table)).clean


async def test_late_fees_are_off_unless_turned_on(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=BROKE, due_dates=[TODAY - timedelta(days=40)])
    await run_pass(pool, gateways, settings, as_of=TODAY)
    async with pool.acquire() as conn:
        assert await _fees(conn) == {}
        assert (await installment(conn, lease.installment_ids[0]))["fee_cents"] == 0


@pytest.mark.ledger_left_dirty
async def test_the_audit_finds_a_fee_above_its_cap_and_a_waiver_of_another_amount(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=BROKE, due_dates=[TODAY - timedelta(days=20)])
        await _state(conn, lease.lease_id, "CA")
        iid = lease.installment_ids[0]
        # Written as no code of the engine would: $9 on a CA installment (cap $5), within
        # grace, and a waiver of $1 of it.
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, kind, amount_cents, as_of,"
            " source, reason) VALUES ($1, $2, 'fee_assessed', 900, $3, 'test', 'late_fee:CA'),"
            " ($1, $2, 'fee_waived', 100, $4, 'test', 'x')",
            lease.customer_id,
            iid,
            TODAY - timedelta(days=18),
            TODAY,
        )
        await conn.execute("SELECT installments_derive_v1(ARRAY[$1::bigint])", iid)
    report = await run_audit(pool, fee_table=load_rules())
    [violation] = report.violations["late_fees"]
    assert "above the cap of 500" in violation.message
    assert "within 7 grace days" in violation.message
    assert "a waiver of 100 cents for a fee of 900" in violation.message
    assert report.counts["late_fees"] == 1


def test_the_shipped_rules_are_valid_and_cite_their_statutes() -> None:
    table = load_rules()
    assert {"CA", "CT", "WV", "NY"} <= set(table.states)
    for rule in (table.default, *table.states.values()):
        assert rule.min_cents <= rule.cap_cents and rule.statute.strip()
    assert table.rule_for("TX") is table.default and table.rule_for(None) is table.default
    assert table.states["CA"].fee_cents(5_000) == 250
    assert table.states["CA"].fee_cents(1_000) == 200
    assert table.states["WV"].fee_cents(50_000) == 1_500


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[states.CA]\ngrace_days = 7", r"expects a \[default\] rule"),
        (
            "[default]\ngrace_days = 1\npercent_bp = 500\ncap_cents = 100\nmin_cents = 200\n"
            'statute = "x"\nverified = false',
            "above cap_cents",
        ),
        (
            "[default]\ngrace_days = 1\npercent_bp = 5.0\ncap_cents = 100\nmin_cents = 0\n"
            'statute = "x"\nverified = false',
            "a whole number",
        ),
        (
            "[default]\ngrace_days = 1\npercent_bp = 500\ncap_cents = 100\nmin_cents = 0\n"
            'statute = "x"\nverified = false\n[states.XX]\ngrace_days = 1',
            "not a US state",
        ),
    ],
)
def test_a_bad_rule_table_is_refused_naming_the_entry(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_rules(text)


def test_allocation_orders() -> None:
    # (installment, unpaid, of it rent): two installments of $50 rent + $2.50 fee.
    lines = [(1, 5_250, 5_000), (2, 5_250, 5_000)]
    assert allocate_in_order(lines, 6_000, "installment") == [(1, 5_250), (2, 750)]
    assert allocate_in_order(lines, 6_000, "rent_first") == [(1, 5_000), (2, 1_000)]
    assert allocate_in_order(lines, 10_100, "rent_first") == [(1, 5_100), (2, 5_000)]
    assert allocate_in_order(lines, 6_000, "newest_first") == [(1, 750), (2, 5_250)]


async def test_a_fee_on_a_debit_returned_nsf_is_never_reinitiated_with_it(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], fee_settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[TODAY])
        await _state(conn, lease.lease_id, "CA")
    for n in range(40):
        await run_pass(pool, gateways, fee_settings, as_of=TODAY + timedelta(days=n))
    async with pool.acquire() as conn:
        iid = lease.installment_ids[0]
        assert (await installment(conn, iid))["fee_cents"] == 250
        attempts = await conn.fetch(
            "SELECT amount_cents, status, outcome_code FROM charge_attempts"
            " WHERE installment_id = $1 ORDER BY id",
            iid,
        )
    # NACHA: a reinitiation carries the identical amount. Rent + fee is never sent; the
    # refusal says why.
    sent = [a for a in attempts if a["status"] != "refused"]
    assert sent and all(a["amount_cents"] == 5_000 for a in sent)
    refused = {a["outcome_code"] for a in attempts if a["status"] == "refused"}
    assert "reinitiation_amount_differs" in refused


def test_a_bad_rules_file_stops_the_engine_at_start_naming_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text("[default]\ngrace_days = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"COLLECTOR_LATE_FEE_RULES_FILE: rules\.toml: default"):
        load_settings(late_fee_rules_file=bad)
    with pytest.raises(ConfigError, match="COLLECTOR_LATE_FEE_RULES_FILE: cannot read"):
        load_settings(late_fee_rules_file=tmp_path / "missing.toml")


async def test_a_leases_state_is_set_through_the_api_and_the_seed_validated(
    pool: asyncpg.Pool, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    url = f"/v1/leases/{lease.lease_id}/state"
    for bad in ({"state": "ZZ"}, {"state": "ca"}, {"state": "CAL"}, {"state": 5}, {}):
        assert (await portal.http.put(url, json=bad)).status_code == 422, bad
    assert (await portal.http.get(f"/v1/leases/{lease.lease_id}")).json()["state"] is None
    done = await portal.http.put(url, json={"state": "WV"})
    assert done.status_code == 200 and done.json() == {"state": "WV"}
    assert (await portal.http.get(f"/v1/leases/{lease.lease_id}")).json()["state"] == "WV"
    missing = await portal.http.put("/v1/leases/999999/state", json={"state": "WV"})
    assert missing.status_code == 404

    await seed_demo(pool, customers=5, due_on=TODAY, installments=1)
    await seed_demo(pool, customers=2, due_on=TODAY, installments=1, state="CT")
    async with pool.acquire() as conn:
        states = [r["state"] for r in await conn.fetch("SELECT state FROM leases ORDER BY id")]
    assert states[1:] == ["CA", "NY", "CT", "WV", "TX", "CT", "CT"]
    with pytest.raises(ValueError, match="not a two-letter US state"):
        await seed_demo(pool, customers=1, due_on=TODAY, state="XX")


async def test_collector_seed_takes_a_state_and_refuses_an_unknown_one(
    pool: asyncpg.Pool, database_url: str
) -> None:
    refused = await run_cli("seed", "--customers", "1", "--state", "XX", env=env_for(database_url))
    assert refused.returncode == 2 and "not a two-letter US state" in refused.stderr
    done = await run_cli("seed", "--customers", "2", "--state", "NY", env=env_for(database_url))
    assert done.returncode == 0, done.stderr
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(DISTINCT state) FROM leases") == ["NY"]
