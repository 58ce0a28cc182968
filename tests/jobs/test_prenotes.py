"""NACHA account validation through whole passes over several business dates, against a real
database and the NACHA file gateway (SEC code WEB): prenotes, their wait, their returns, and
notifications of change that change what the next file holds."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import anyio
import asyncpg
import pytest

from collector.ach.nacha import parse_file, validate
from collector.config import Settings
from collector.db import portal as portal_db
from collector.db.audit import run_audit
from collector.eligibility import PRENOTE_PENDING
from collector.gateways.base import Gateway, GatewayContext
from collector.gateways.nacha_files import AccountVault, NachaGateway, open_nacha
from collector.jobs.ach_files import export_files, import_returns
from collector.jobs.collect import run_pass
from collector.jobs.presentment import would_refuse
from tests.factories import installment, make_lease
from tests.gateways.test_nacha_adapter import (
    ODFI,
    build_return_file,
    nacha_options,
    write_vault,
)
from tests.jobs.portal import Portal

MON = date(2026, 11, 30)
TUE = date(2026, 12, 1)
WED = date(2026, 12, 2)
THU = date(2026, 12, 3)
FRI = date(2026, 12, 4)
NEXT_MON = date(2026, 12, 7)
NEXT_WED = date(2026, 12, 9)

ACCOUNTS = {
    "tok_new": {
        "routing_number": "091000019",
        "account_number": "12345678901",
        "account_type": "checking",
        "name": "Nora New",
    },
    "tok_verified": {
        "routing_number": "011401533",
        "account_number": "55554444",
        "account_type": "checking",
        "name": "Vera Verified",
        "validated": True,
    },
}


def at(day: date) -> datetime:
    """15:00 in New York on ``day``: when the day's pass and export run."""
    return datetime(day.year, day.month, day.day, 20, 0, tzinfo=UTC)


@pytest.fixture
async def web(database_url: str, tmp_path: Path) -> AsyncIterator[NachaGateway]:
    options = nacha_options(tmp_path) | {"sec_code": "WEB"}
    write_vault(Path(options["vault_file"]), ACCOUNTS)
    ctx = GatewayContext(name="nacha", database_url=database_url, options=options)
    async with open_nacha(ctx) as gateway:
        yield gateway


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,  # type: ignore[arg-type]
        gateways=["nacha"],
        nacha_sec_code="WEB",
        batch_size=50,
        gateway_timeout_s=5,
    )


async def add_method(
    pool: asyncpg.Pool, gateway: NachaGateway, customer_id: int, token: str, *, today: date
) -> int:
    """Add the method the way the portal does: the adapter's fingerprint and validation."""
    method = await portal_db.add_method(
        pool,
        customer_id,
        portal_db.NewMethod(
            kind="ach",
            gateway="nacha",
            token=token,
            last4="0000",
            fingerprint=await gateway.fingerprint(token),
            account_validated=await gateway.account_validated(token),
        ),
        make_primary=True,
        today=today,
    )
    return method.id


async def day(
    pool: asyncpg.Pool, gateway: NachaGateway, settings: Settings, on: date
) -> tuple[int, int, list[Path]]:
    """One business day: a pass, then the export; (processing, refused, files written)."""
    result = await run_pass(pool, {"nacha": gateway}, settings, as_of=on)
    assert gateway.config.outbox is not None
    files = await export_files(
        pool, gateway.config, gateway.vault, gateway.config.outbox, as_of=on, now=at(on)
    )
    return result.counts.processing, result.counts.refused, files


def entries_of(path: Path) -> list[tuple[int, str, str, int]]:
    """(transaction code, routing, account, amount) of each entry of a file."""
    text = path.read_text()
    assert validate(text) == []
    return [
        (e.transaction_code, e.routing_number, e.account_number, e.amount_cents)
        for batch in parse_file(text).batches
        for e in batch.entries
    ]


async def assert_audit_clean(pool: asyncpg.Pool) -> None:
    report = await run_audit(pool)
    assert report.clean, [v.message for found in report.violations.values() for v in found]


async def new_lease(pool: asyncpg.Pool, due: date) -> tuple[int, int]:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[due], with_method=False)
    return lease.customer_id, lease.installment_ids[0]


async def test_a_new_account_is_prenoted_and_its_first_debit_waits_three_banking_days(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    customer_id, installment_id = await new_lease(pool, WED)
    # Made primary on Tuesday: its prenote goes out at once, in Tuesday's file (effective
    # Wednesday), so the debit due Wednesday waits until Monday (3 banking days later).
    await add_method(pool, web, customer_id, "tok_new", today=TUE)
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 0  # no pass, no gateways
    processing, refused, [prenote_file] = await day(pool, web, settings, TUE)
    assert (processing, refused) == (0, 0)
    assert entries_of(prenote_file) == [(28, "091000019", "12345678901", 0)]
    [batch] = parse_file(prenote_file.read_text()).batches
    assert batch.header.effective_on == WED and batch.header.sec_code == "WEB"

    # Due Wednesday: held with its reason and the day it may go, shown by the dry run first.
    [held] = await would_refuse(
        pool, as_of=WED, gateways=["nacha"], batch_size=50, card_rules=settings.card_rules
    )
    assert (held.reason, held.sample_ids) == (PRENOTE_PENDING, [installment_id])
    assert await day(pool, web, settings, WED) == (0, 1, [])
    async with pool.acquire() as conn:
        row = await installment(conn, installment_id)
    assert row["next_attempt_on"] == NEXT_MON
    refusal = await pool.fetchrow(
        "SELECT status, outcome_code FROM charge_attempts WHERE installment_id = $1",
        installment_id,
    )
    assert tuple(refusal) == ("refused", PRENOTE_PENDING)
    lease_id = await pool.fetchval(
        "SELECT lease_id FROM installments WHERE id = $1", installment_id
    )
    async with pool.acquire() as conn:
        [line] = await portal_db.lease_schedule(conn, lease_id, today=WED)
    # Attempted and not paid on its due date: overdue, with why it waits and until when.
    assert (line.status, line.collection_held, line.held_until) == (
        "overdue",
        PRENOTE_PENDING,
        NEXT_MON,
    )
    plan = await pool.fetchval(
        "SELECT reason FROM money_movements WHERE installment_id = $1 AND sets_plan"
        " ORDER BY id DESC LIMIT 1",
        installment_id,
    )
    assert plan == PRENOTE_PENDING
    # Thursday and Friday: nothing planned; no second prenote either.
    assert await day(pool, web, settings, THU) == (0, 0, [])
    assert await day(pool, web, settings, FRI) == (0, 0, [])
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 1

    # Monday: 3 banking days after the prenote's effective date: debited live.
    processing, refused, [debit_file] = await day(pool, web, settings, NEXT_MON)
    assert (processing, refused) == (1, 0)
    assert entries_of(debit_file) == [(27, "091000019", "12345678901", 5_000)]
    assert parse_file(debit_file.read_text()).batches[0].header.effective_on == date(2026, 12, 8)
    # Settled two banking days after its effective date; no more prenotes for that account.
    await day(pool, web, settings, date(2026, 12, 10))
    async with pool.acquire() as conn:
        row = await installment(conn, installment_id)
    assert (row["status"], row["paid_cents"]) == ("paid", 5_000)
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 1
    await assert_audit_clean(pool)


async def test_the_same_account_added_again_is_not_prenoted_again(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    customer_id, _ = await new_lease(pool, NEXT_MON)
    first = await add_method(pool, web, customer_id, "tok_new", today=MON)
    await day(pool, web, settings, MON)
    # Removed and added again under another row (the same fingerprint): the open prenote is
    # that account's, so no second one; the debit still waits for it.
    await pool.execute("UPDATE payment_methods SET status = 'disabled' WHERE id = $1", first)
    await add_method(pool, web, customer_id, "tok_new", today=TUE)
    await day(pool, web, settings, TUE)
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 1
    assert await pool.fetchval("SELECT count(*) FROM ach_entries WHERE prenote") == 1
    processing, refused, [debit_file] = await day(pool, web, settings, NEXT_MON)
    assert (processing, refused) == (1, 0)
    assert [code for code, *_ in entries_of(debit_file)] == [27]
    await assert_audit_clean(pool)


async def test_an_account_the_adapter_validated_is_debited_without_a_prenote(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    customer_id, _ = await new_lease(pool, WED)
    await add_method(pool, web, customer_id, "tok_verified", today=TUE)
    assert await pool.fetchval("SELECT bool_and(account_validated) FROM payment_methods")
    assert await day(pool, web, settings, TUE) == (0, 0, [])
    processing, refused, [debit_file] = await day(pool, web, settings, WED)
    assert (processing, refused) == (1, 0)
    assert entries_of(debit_file) == [(27, "011401533", "55554444", 5_000)]
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 0
    await assert_audit_clean(pool)


async def test_a_prenote_returned_r03_disables_the_method_and_no_debit_is_ever_presented(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    customer_id, installment_id = await new_lease(pool, WED)
    method_id = await add_method(pool, web, customer_id, "tok_new", today=MON)
    _, _, [prenote_file] = await day(pool, web, settings, MON)
    [(trace, _)] = [
        (e.trace_number, e) for b in parse_file(prenote_file.read_text()).batches for e in b.entries
    ]
    returns = build_return_file([("26", "12345678901", "NORA NEW", 0, "R03", trace, " " * 6, "99")])
    result = await import_returns(pool, returns, as_of=TUE, retry_days=settings.soft_retry_days)
    assert (result.applied, result.unknown, result.set_aside) == (1, 0, 0)
    again = await import_returns(pool, returns, as_of=TUE, retry_days=settings.soft_retry_days)
    assert (again.applied, again.already_applied) == (0, 1)

    method = await pool.fetchrow("SELECT status, disabled_reason FROM payment_methods")
    assert tuple(method) == ("disabled", "R03")
    [event] = await pool.fetch(
        "SELECT type, body FROM outbox_events WHERE type = 'method.disabled'"
    )
    assert event["body"]["method"]["id"] == method_id and event["body"]["reason"] == "R03"
    [change] = await pool.fetch("SELECT source, code, changed FROM payment_method_changes")
    assert (change["source"], change["code"]) == ("prenote_return", "R03")
    assert change["changed"] == {"status": ["active", "disabled"]}

    for on in (WED, THU, FRI, NEXT_MON, NEXT_WED):
        processing, _, files = await day(pool, web, settings, on)
        assert processing == 0 and files == []
    assert await pool.fetchval("SELECT count(*) FROM ach_entries WHERE NOT prenote") == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM charge_attempts WHERE status NOT IN ('refused', 'declined')"
        )
        == 0
    )
    async with pool.acquire() as conn:
        row = await installment(conn, installment_id)
    # Never claimed: its customer has no active method left (a new one reopens it).
    assert (row["status"], row["attempts"], row["paid_cents"]) == ("scheduled", 0, 0)
    # Added again (another row, the same account): disabled at once, never prenoted again.
    again_id = await add_method(pool, web, customer_id, "tok_new", today=NEXT_WED)
    assert await pool.fetchval("SELECT status FROM payment_methods WHERE id = $1", again_id) == (
        "disabled"
    )
    await day(pool, web, settings, date(2026, 12, 10))
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 1
    await assert_audit_clean(pool)


@pytest.mark.ledger_left_dirty("returned prenotes stay open for an operator (the audit lists them)")
async def test_a_prenote_returned_for_another_reason_is_sent_again_once(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    customer_id, _ = await new_lease(pool, date(2026, 12, 21))
    await add_method(pool, web, customer_id, "tok_new", today=MON)
    traces = []
    # Sent Monday, returned R13 (an RDFI problem) Tuesday; sent again Wednesday, returned
    # Thursday.
    for sent_on, returned_on in ((MON, TUE), (WED, THU)):
        _, _, [prenote_file] = await day(pool, web, settings, sent_on)
        [trace] = [
            e.trace_number for b in parse_file(prenote_file.read_text()).batches for e in b.entries
        ]
        traces.append(trace)
        returns = build_return_file(
            [("26", "12345678901", "NORA NEW", 0, "R13", trace, " " * 6, "99")]
        )
        await import_returns(pool, returns, as_of=returned_on, retry_days=settings.soft_retry_days)
    assert len(set(traces)) == 2
    # Two returned: no third prenote; the method stays active, an operator is told.
    assert await day(pool, web, settings, FRI) == (0, 0, [])
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 2
    assert await pool.fetchval("SELECT status FROM payment_methods") == "active"
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM needs_attention WHERE reason = 'prenote_returned'"
        )
        == 2
    )


async def test_notifications_of_change_correct_the_vault_and_the_next_file(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    customer_id, _ = await new_lease(pool, NEXT_MON)
    method_id = await add_method(pool, web, customer_id, "tok_new", today=MON)
    await pool.execute("UPDATE payment_methods SET last4 = '8901' WHERE id = $1", method_id)
    _, _, [prenote_file] = await day(pool, web, settings, MON)
    [trace] = [
        e.trace_number for b in parse_file(prenote_file.read_text()).batches for e in b.entries
    ]
    # The bank accepts the prenote and asks for a corrected account number (C01) and for the
    # savings transaction code (C05: 37).
    text = build_return_file(
        [],
        changes=[
            ("26", "12345678901", "NORA NEW", 0, "C01", trace, "", "98"),
            ("26", "12345678901", "NORA NEW", 0, "C05", trace, "", "98"),
        ],
        corrected=["98765432109", "37"],
    )
    vault = web.vault
    result = await import_returns(
        pool, text, as_of=TUE, retry_days=settings.soft_retry_days, vault=vault
    )
    assert (result.changes, result.set_aside) == (2, 0)
    assert await pool.fetchval("SELECT last4 FROM payment_methods WHERE id = $1", method_id) == (
        "2109"
    )
    changes = await pool.fetch("SELECT code, changed FROM payment_method_changes ORDER BY code")
    assert [(c["code"], c["changed"]) for c in changes] == [
        ("C01", {"last4": ["8901", "2109"]}),
        ("C05", {"account_type": "savings"}),
    ]
    # The vault file holds the corrected account, still private; nothing else shows it.
    assert stat.S_IMODE(vault.path.stat().st_mode) == 0o600
    stored = json.loads(vault.path.read_text())["tok_new"]
    assert (stored["account_number"], stored["account_type"]) == ("98765432109", "savings")
    assert "98765432109" not in repr([dict(c) for c in changes])
    again = await import_returns(
        pool, text, as_of=TUE, retry_days=settings.soft_retry_days, vault=vault
    )
    assert (again.changes, again.changes_already) == (0, 2)
    assert await pool.fetchval("SELECT count(*) FROM payment_method_changes") == 2
    # The account is corrected once more (by hand, or a later notice); the old file imported
    # again does not bring the older number back.
    await vault.correct("tok_new", account_number="98765432110")
    await import_returns(pool, text, as_of=TUE, retry_days=settings.soft_retry_days, vault=vault)
    assert json.loads(vault.path.read_text())["tok_new"]["account_number"] == "98765432110"
    await vault.correct("tok_new", account_number="98765432109")

    # The next file carries the corrected account as a savings debit (37).
    processing, refused, [debit_file] = await day(pool, web, settings, NEXT_MON)
    assert (processing, refused) == (1, 0)
    assert entries_of(debit_file) == [(37, "091000019", "98765432109", 5_000)]
    # A reopened vault reads the same corrections.
    reopened = await AccountVault.open(vault.path)
    account = reopened.get("tok_new")
    assert account is not None and account.account_type == "savings"
    await assert_audit_clean(pool)


async def test_prenotes_are_off_for_ppd_and_when_disabled(
    web: NachaGateway, pool: asyncpg.Pool, database_url: str
) -> None:
    off = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        gateways=["nacha"],
        nacha_sec_code="WEB",
        prenotes=False,
    )
    assert off.card_rules.prenote_gateways == frozenset()
    ppd = Settings(database_url=database_url, gateways=["nacha"])  # type: ignore[arg-type]
    assert ppd.card_rules.prenote_gateways == frozenset()


# A reader built by hand on the reference Go library, moov-io/ach (README, "Account validation
# (prenotes)"; not in this repository): an independent check that the files read cleanly.
ACHCHECK = os.environ.get("COLLECTOR_ACHCHECK", "")


@pytest.mark.skipif(
    not (ACHCHECK and os.access(ACHCHECK, os.X_OK)),
    reason="COLLECTOR_ACHCHECK names no moov-io/ach checker binary (README: Account validation)",
)
async def test_moov_ach_reads_the_prenote_files_and_a_cor_return_file_cleanly(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    customer_id, _ = await new_lease(pool, WED)
    await add_method(pool, web, customer_id, "tok_new", today=TUE)
    other, _ = await new_lease(pool, WED)
    await add_method(pool, web, other, "tok_verified", today=TUE)
    _, _, [prenote_file] = await day(pool, web, settings, TUE)
    _, _, [debit_file] = await day(pool, web, settings, WED)
    _, _, [held_debit_file] = await day(pool, web, settings, NEXT_MON)
    [trace] = [
        e.trace_number for b in parse_file(prenote_file.read_text()).batches for e in b.entries
    ]
    returns = tmp_path / "returns.ach"
    returns.write_text(
        build_return_file(
            [("26", "55554444", "VERA VERIFIED", 5_000, "R01", ODFI + "0000002", " " * 6, "99")],
            changes=[
                ("26", "12345678901", "NORA NEW", 0, "C01", trace, "", "98"),
                ("26", "12345678901", "NORA NEW", 0, "C05", trace, "", "98"),
            ],
            corrected=["98765432109", "37"],
        )
    )
    paths = [prenote_file, debit_file, held_debit_file, returns]
    done = await anyio.run_process([ACHCHECK, *map(str, paths)], check=False)
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, lines
    assert [line.split(": ", 1)[1] for line in lines] == [
        "OK batches=1 entries=1 prenotes=1 changes=0 returns=0",
        "OK batches=1 entries=1 prenotes=0 changes=0 returns=0",
        "OK batches=1 entries=1 prenotes=0 changes=0 returns=0",
        "OK batches=2 entries=3 prenotes=0 changes=2 returns=1",
    ]


@pytest.mark.ledger_left_dirty("the test makes the audit find a debit sent before its prenote")
async def test_the_audit_finds_a_live_debit_sent_before_its_prenote_was_old_enough(
    web: NachaGateway, pool: asyncpg.Pool, settings: Settings, database_url: str
) -> None:
    customer_id, _ = await new_lease(pool, WED)
    await add_method(pool, web, customer_id, "tok_new", today=MON)
    await day(pool, web, settings, MON)  # the prenote, effective Tuesday
    # Prenotes switched off meanwhile: the eligibility check no longer holds the debit.
    off = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        gateways=["nacha"],
        nacha_sec_code="WEB",
        prenotes=False,
    )
    assert (await day(pool, web, off, WED))[0] == 1
    report = await run_audit(pool)
    [violation] = report.violations["prenote_before_live"]
    assert "before it validated it" in violation.message
    assert report.counts["prenote_before_live"] == 1


@pytest.fixture
def gateways(web: NachaGateway) -> dict[str, Gateway]:
    return {"nacha": web}


async def test_the_portal_sends_the_prenote_when_an_account_becomes_primary(
    web: NachaGateway, pool: asyncpg.Pool, portal: Portal
) -> None:
    portal.today = TUE
    customer_id, _ = await new_lease(pool, WED)
    other, _ = await new_lease(pool, WED)
    added = await portal.http.post(
        f"/v1/customers/{customer_id}/payment-methods",
        json={"kind": "ach", "gateway": "nacha", "token": "tok_new", "make_primary": True},
    )
    assert added.status_code == 201, added.text
    # At once, not at the next pass: the prenote is accepted for today's file.
    [row] = await pool.fetch("SELECT payment_method_id, requested_on FROM ach_prenotes")
    assert (row["payment_method_id"], row["requested_on"]) == (added.json()["id"], TUE)
    # An account the vault marks validated: recorded so, no prenote.
    verified = await portal.http.post(
        f"/v1/customers/{other}/payment-methods",
        json={"kind": "ach", "gateway": "nacha", "token": "tok_verified", "make_primary": True},
    )
    assert verified.status_code == 201, verified.text
    assert await pool.fetchval(
        "SELECT account_validated FROM payment_methods WHERE id = $1", verified.json()["id"]
    )
    assert await pool.fetchval("SELECT count(*) FROM ach_prenotes") == 1


def test_an_accounts_fingerprint_is_the_same_under_any_token_and_keyed_when_configured(
    tmp_path: Path,
) -> None:
    accounts = {"a": ACCOUNTS["tok_new"], "b": ACCOUNTS["tok_new"], "c": ACCOUNTS["tok_verified"]}
    vault = AccountVault(write_vault(tmp_path / "v.json", accounts))
    a, b, c = (vault.get(token) for token in "abc")
    assert a is not None and b is not None and c is not None
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    keyed = a.fingerprint(b"k" * 32)
    assert keyed == b.fingerprint(b"k" * 32) != a.fingerprint()
    assert keyed != a.fingerprint(b"j" * 32)
    for name in (a.fingerprint(), keyed):
        assert "12345678901" not in name and name.startswith("nacha:")
