"""The NACHA file gateway against a real database: accepting debits, exporting files, returns."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from collector.ach.nacha import parse_file, validate
from collector.calendar import ach_settles_on
from collector.config import Settings
from collector.db.ach_entries import keys_by_trace
from collector.domain import MethodKind
from collector.exceptions import GatewayConfigError
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    GatewayContext,
    Processing,
    Succeeded,
)
from collector.gateways.nacha_files import AccountVault, NachaConfig, NachaGateway, open_nacha
from collector.jobs.ach_files import (
    claim_files,
    export_after_pass,
    export_files,
    import_returns,
    render_file,
)
from collector.jobs.collect import run_pass
from tests.factories import installment, make_lease
from tests.unit.test_nacha import assemble_file, cor_batch, return_batch

ODFI = "02100002"
THANKSGIVING = date(2026, 11, 26)
FRIDAY = date(2026, 11, 27)
WEDNESDAY = date(2026, 11, 25)
MONDAY = date(2026, 11, 23)
NEXT_MONDAY = date(2026, 11, 30)
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # 15:00 in New York, the lessor's zone
NEXT_MONDAY_NOW = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)

ACCOUNTS = {
    "tok_alvarez": {
        "routing_number": "091000019",
        "account_number": "12345678901",
        "account_type": "checking",
        "name": "José Álvarez",
    },
    "tok_roe": {
        "routing_number": "011401533",
        "account_number": "55554444",
        "account_type": "savings",
        "name": "Mary Roe",
    },
    "tok_doe": {
        "routing_number": "021000021",
        "account_number": "777123",
        "account_type": "checking",
        "name": "John Doe",
    },
    "tok_kept": {
        "routing_number": "021000021",
        "account_number": "31415926",
        "account_type": "checking",
        "name": "Kept Payer",
    },
    "tok_bad_routing": {
        "routing_number": "091000018",
        "account_number": "99998888777",
        "account_type": "checking",
        "name": "Bad Routing",
    },
}


def write_vault(path: Path, accounts: object = ACCOUNTS, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(accounts))
    path.chmod(mode)
    return path


def nacha_options(tmp_path: Path) -> dict[str, str]:
    outbox = tmp_path / "outbox"
    outbox.mkdir(exist_ok=True)
    return {
        "vault_file": str(write_vault(tmp_path / "vault.json")),
        "outbox": str(outbox),
        "immediate_destination": "021000021",
        "immediate_origin": "1234567890",
        "destination_name": "First Example Bank",
        "origin_name": "Acme Leasing",
        "company_name": "Acme Leasing",
        "company_id": "1234567890",
        "odfi_id": ODFI,
        "timezone": "America/New_York",
    }


@pytest.fixture
async def nacha(database_url: str, tmp_path: Path) -> AsyncIterator[NachaGateway]:
    ctx = GatewayContext(name="nacha", database_url=database_url, options=nacha_options(tmp_path))
    async with open_nacha(ctx) as gateway:
        yield gateway


def outbox_of(gateway: NachaGateway) -> Path:
    assert gateway.config.outbox is not None
    return gateway.config.outbox


def request(
    key: str, token: str = "tok_alvarez", *, on: date = WEDNESDAY, reinitiation: bool = False
) -> ChargeRequest:
    metadata = {"lease_id": "1001"}
    if reinitiation:
        # What the engine sets on a debit presented again after an R01/R09 return.
        metadata["ach_reinitiation"] = "true"
    return ChargeRequest(
        customer_id=1,
        idempotency_key=key,
        amount_cents=12_345,
        token=token,
        method_kind=MethodKind.ACH,
        metadata=metadata,
        effective_on=on,
    )


def company_entry_description(text: str) -> str:
    """Positions 54-63 of the file's (only) batch header record, as written."""
    [header] = [record for record in text.splitlines() if record.startswith("5")]
    return header[53:63]


async def export(
    pool: asyncpg.Pool,
    gateway: NachaGateway,
    as_of: date,
    *,
    now: datetime = NOW,
    vault: AccountVault | None = None,
) -> list[Path]:
    return await export_files(
        pool, gateway.config, vault or gateway.vault, outbox_of(gateway), as_of=as_of, now=now
    )


def file_header(text: str) -> str:
    """The File Header record of a file."""
    return text.splitlines()[0]


# --- accepting debits ------------------------------------------------------------------------


async def test_charge_accepts_the_debit_with_a_trace_number(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    outcome = await nacha.charge(request("k1"))

    assert isinstance(outcome, Processing)
    assert outcome.gateway_ref.startswith(ODFI) and len(outcome.gateway_ref) == 15
    assert await nacha.lookup("k1") == outcome
    assert await nacha.lookup("never") is None
    # The database holds the token, never the account number.
    row = await pool.fetchrow("SELECT * FROM ach_entries WHERE idempotency_key = 'k1'")
    assert row is not None and row["token"] == "tok_alvarez"
    assert "12345678901" not in repr(dict(row))


async def test_the_same_key_twice_is_one_entry_and_one_answer(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    first = await nacha.charge(request("k1"))
    again = await nacha.charge(request("k1"))

    assert first == again
    assert await pool.fetchval("SELECT count(*) FROM ach_entries") == 1


async def test_an_unknown_token_is_declined_hard(nacha: NachaGateway, pool: asyncpg.Pool) -> None:
    outcome = await nacha.charge(request("k1", token="tok_nobody"))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "unknown_account")
    assert await pool.fetchval("SELECT count(*) FROM ach_entries") == 0


async def test_an_account_the_file_cannot_hold_is_declined_hard_and_masked(
    nacha: NachaGateway,
) -> None:
    outcome = await nacha.charge(request("k1", token="tok_bad_routing"))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "invalid_account")
    assert "routing_number" in outcome.message
    assert "99998888777" not in outcome.message


async def test_a_debit_due_on_thanksgiving_takes_effect_the_next_banking_day(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    await nacha.charge(request("k1", on=THANKSGIVING))

    assert await pool.fetchval("SELECT effective_on FROM ach_entries") == FRIDAY


# --- the vault -------------------------------------------------------------------------------


async def test_a_missing_vault_refuses_to_start(database_url: str, tmp_path: Path) -> None:
    options = nacha_options(tmp_path) | {"vault_file": str(tmp_path / "absent.json")}
    with pytest.raises(GatewayConfigError, match=r"COLLECTOR_NACHA_VAULT_FILE.*no such file"):
        async with open_nacha(
            GatewayContext(name="nacha", database_url=database_url, options=options)
        ):
            pass


async def test_a_vault_others_can_read_refuses_to_start_and_says_why(
    database_url: str, tmp_path: Path
) -> None:
    options = nacha_options(tmp_path)
    os.chmod(options["vault_file"], 0o644)
    with pytest.raises(GatewayConfigError) as caught:
        async with open_nacha(
            GatewayContext(name="nacha", database_url=database_url, options=options)
        ):
            pass
    message = str(caught.value)
    assert "COLLECTOR_NACHA_VAULT_FILE" in message
    assert "0644" in message and "chmod 600" in message
    assert "12345678901" not in message


def test_a_vault_that_is_not_a_token_map_is_refused(tmp_path: Path) -> None:
    path = write_vault(tmp_path / "vault.json", {"tok": {"account_number": "12345678901"}})
    with pytest.raises(GatewayConfigError, match="tok") as caught:
        AccountVault(path)
    assert "12345678901" not in str(caught.value)
    path.write_text("{not json 12345678901")
    with pytest.raises(GatewayConfigError, match="not valid JSON") as caught:
        AccountVault(path)
    assert "12345678901" not in str(caught.value)


def test_a_bad_originator_setting_is_named(tmp_path: Path) -> None:
    options = nacha_options(tmp_path) | {"odfi_id": "0210"}
    with pytest.raises(GatewayConfigError, match="COLLECTOR_NACHA_ODFI_ID"):
        NachaConfig.from_options(options)
    options = nacha_options(tmp_path) | {"sec_code": "CCD"}
    with pytest.raises(GatewayConfigError, match="COLLECTOR_NACHA_SEC_CODE"):
        NachaConfig.from_options(options)


@pytest.mark.parametrize("description", ["RETRY PYMT", "retry pymt", " Retry Pymt ", "RETRY  PYMT"])
def test_the_reinitiation_description_cannot_be_configured(
    tmp_path: Path, description: str
) -> None:
    # NACHA Rules 2.12.4: "RETRY PYMT" marks reinitiations, and nothing else may use it.
    options = nacha_options(tmp_path) | {"entry_description": description}
    with pytest.raises(GatewayConfigError, match=r"COLLECTOR_NACHA_ENTRY_DESCRIPTION.*RETRY PYMT"):
        NachaConfig.from_options(options)


async def test_reinitiation_description_refused_at_open(database_url: str, tmp_path: Path) -> None:
    options = nacha_options(tmp_path) | {"entry_description": "retry pymt"}
    with pytest.raises(GatewayConfigError, match="COLLECTOR_NACHA_ENTRY_DESCRIPTION"):
        async with open_nacha(
            GatewayContext(name="nacha", database_url=database_url, options=options)
        ):
            pass


# --- export ----------------------------------------------------------------------------------


async def test_export_writes_one_valid_private_file_effective_the_next_banking_day_once(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    # Written on Wednesday: the next banking day is Friday (Thanksgiving between), so Wednesday's
    # debits and Thanksgiving's go out effective Friday, never on a day already past.
    refs = {}
    for key, token, on in (
        ("w1", "tok_alvarez", WEDNESDAY),
        ("w2", "tok_roe", WEDNESDAY),
        ("f1", "tok_doe", THANKSGIVING),
    ):
        outcome = await nacha.charge(request(key, token, on=on))
        assert isinstance(outcome, Processing)
        refs[key] = outcome.gateway_ref
    # Not due at the bank yet: requested after the next banking day.
    await nacha.charge(request("later", "tok_doe", on=date(2026, 12, 1)))

    [path] = await export(pool, nacha, WEDNESDAY)

    assert path.name.startswith("collector-20261127-20261125")
    text = path.read_text()
    assert validate(text) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [batch] = parse_file(text).batches
    assert batch.header.effective_on == FRIDAY
    assert [e.trace_number for e in batch.entries] == sorted(refs.values())
    rows = await pool.fetch(
        "SELECT idempotency_key, requested_on, effective_on FROM ach_entries ORDER BY 1"
    )
    assert [tuple(row) for row in rows] == [
        ("f1", FRIDAY, FRIDAY),
        ("later", date(2026, 12, 1), date(2026, 12, 1)),
        ("w1", WEDNESDAY, FRIDAY),
        ("w2", WEDNESDAY, FRIDAY),
    ]
    assert sorted(p.name for p in outbox_of(nacha).iterdir()) == [path.name]
    assert await export(pool, nacha, WEDNESDAY) == []
    assert await pool.fetchval("SELECT count(*) FROM ach_entries WHERE file_name IS NULL") == 1


async def test_a_file_written_days_late_takes_effect_after_it_and_settles_from_then(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    # Accepted for Monday; the export only runs on Wednesday (a missed day).
    outcome = await nacha.charge(request("k1", on=MONDAY))
    assert isinstance(outcome, Processing)
    assert isinstance(await nacha.settlement("k1", as_of=date(2026, 12, 31)), Processing)

    [path] = await export(pool, nacha, WEDNESDAY)

    [batch] = parse_file(path.read_text()).batches
    assert batch.header.effective_on == FRIDAY  # not Monday: that day was past
    # Settlement follows the date actually filed: 2 banking days after Friday.
    assert ach_settles_on(FRIDAY) == NEXT_MONDAY + timedelta(days=1)
    assert isinstance(await nacha.settlement("k1", as_of=NEXT_MONDAY), Processing)
    assert await nacha.settlement("k1", as_of=NEXT_MONDAY + timedelta(days=1)) == Succeeded(
        gateway_ref=outcome.gateway_ref, code="settled"
    )


async def test_the_file_header_shows_the_lessors_local_time_never_after_its_entries(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    await nacha.charge(request("k1", on=WEDNESDAY))
    await nacha.charge(request("k2", "tok_roe", on=date(2026, 12, 2)))
    # 03:30 UTC on Thanksgiving is 22:30 on Wednesday in New York: the file is Wednesday's.
    late = datetime(2026, 11, 26, 3, 30, tzinfo=UTC)

    [path] = await export(pool, nacha, WEDNESDAY, now=late)

    text = path.read_text()
    assert validate(text) == []
    header = parse_file(text).header
    assert (header.created_on, header.creation_time) == (WEDNESDAY, "2230")
    assert parse_file(text).batches[0].header.effective_on == FRIDAY
    # Requested for a later day than the next banking day: it keeps its own date.
    [later] = await export(
        pool, nacha, date(2026, 12, 1), now=datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    )
    parsed = parse_file(later.read_text())
    assert (parsed.header.created_on, parsed.header.creation_time) == (date(2026, 12, 1), "0900")
    assert parsed.batches[0].header.effective_on == date(2026, 12, 2)


async def test_an_export_that_died_after_its_claim_is_finished_once_by_the_next(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    await nacha.charge(request("w1", "tok_alvarez"))
    await nacha.charge(request("w2", "tok_roe"))
    # The claim commits, then the process dies before writing anything.
    [claimed] = await claim_files(pool, nacha.config, nacha.vault, as_of=WEDNESDAY, now=NOW)
    expected = await render_file(pool, nacha.config, nacha.vault, claimed)
    # A debit accepted after the claim goes in a file of its own, never in the claimed one.
    await nacha.charge(request("w3", "tok_doe"))

    written = await export(pool, nacha, WEDNESDAY)

    assert written[0].name == claimed.file_name
    assert written[0].read_text() == expected
    assert len(written) == 2
    traces = [e.trace_number for p in written for e in parse_file(p.read_text()).batches[0].entries]
    assert len(traces) == len(set(traces)) == 3
    assert sorted(p.name for p in outbox_of(nacha).iterdir()) == sorted(p.name for p in written)
    assert await export(pool, nacha, WEDNESDAY) == []


async def test_a_file_renamed_before_the_crash_is_not_written_again(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    await nacha.charge(request("w1"))
    [claimed] = await claim_files(pool, nacha.config, nacha.vault, as_of=WEDNESDAY, now=NOW)
    path = outbox_of(nacha) / claimed.file_name
    path.write_text(await render_file(pool, nacha.config, nacha.vault, claimed))
    os.chmod(path, 0o600)
    before = path.stat().st_mtime_ns

    assert await export(pool, nacha, WEDNESDAY) == [path]
    assert path.stat().st_mtime_ns == before
    assert await pool.fetchval("SELECT count(*) FROM ach_files WHERE written_at IS NULL") == 0


# --- reinitiations --------------------------------------------------------------------------


async def test_a_reinitiation_is_stored_under_retry_pymt_and_a_repeated_key_keeps_the_first(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    await nacha.charge(request("first", "tok_alvarez"))
    await nacha.charge(request("again", "tok_roe", reinitiation=True))
    # A repeated key keeps the row stored first, whatever the metadata says now.
    await nacha.charge(request("first", "tok_alvarez", reinitiation=True))
    await nacha.charge(request("again", "tok_roe"))

    rows = await pool.fetch("SELECT idempotency_key, entry_description FROM ach_entries ORDER BY 1")
    assert [tuple(row) for row in rows] == [("again", "RETRY PYMT"), ("first", "LEASE PMT")]


@pytest.mark.parametrize("flag", ["True", "1", "yes", "", "true "])
async def test_only_the_engines_exact_reinitiation_mark_gets_retry_pymt(
    nacha: NachaGateway, pool: asyncpg.Pool, flag: str
) -> None:
    # A reinitiation for one account; then the customer's first debit from a newly chosen
    # account, whatever else its metadata carries, goes out under the configured description.
    await nacha.charge(request("retry", "tok_roe", reinitiation=True))
    new_account = replace(
        request("new_account", "tok_doe"), metadata={"lease_id": "1001", "ach_reinitiation": flag}
    )
    await nacha.charge(new_account)

    rows = await pool.fetch("SELECT idempotency_key, entry_description FROM ach_entries ORDER BY 1")
    assert [tuple(row) for row in rows] == [("new_account", "LEASE PMT"), ("retry", "RETRY PYMT")]


async def test_a_reinitiation_goes_out_in_its_own_file_under_retry_pymt(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    first = await nacha.charge(request("w1", "tok_alvarez"))
    retry = await nacha.charge(request("w2", "tok_roe", reinitiation=True))
    assert isinstance(first, Processing) and isinstance(retry, Processing)

    written = await export(pool, nacha, WEDNESDAY)

    assert len(written) == 2
    by_description = {}
    for path in written:
        text = path.read_text()
        assert validate(text) == []
        [batch] = parse_file(text).batches
        assert batch.header.effective_on == FRIDAY
        assert batch.header.entry_description == company_entry_description(text).strip()
        by_description[company_entry_description(text)] = [e.trace_number for e in batch.entries]
    # Positions 54-63, padded to 10: a reinitiation never shares a batch with a first try.
    assert by_description == {
        "RETRY PYMT": [retry.gateway_ref],
        "LEASE PMT ": [first.gateway_ref],
    }
    rows = await pool.fetch("SELECT file_name, entry_description FROM ach_files")
    assert {row["entry_description"] for row in rows} == {"LEASE PMT", "RETRY PYMT"}
    assert {row["file_name"] for row in rows} == {path.name for path in written}
    assert await export(pool, nacha, WEDNESDAY) == []


async def test_a_claimed_file_renders_with_its_stored_description_after_a_crash(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    await nacha.charge(request("w1", "tok_alvarez"))
    await nacha.charge(request("w2", "tok_roe", reinitiation=True))
    claimed = await claim_files(pool, nacha.config, nacha.vault, as_of=WEDNESDAY, now=NOW)
    assert len(claimed) == 2
    expected = {
        file.file_name: await render_file(pool, nacha.config, nacha.vault, file) for file in claimed
    }
    # The process dies; it restarts with another configured description. The claimed files
    # come out byte for byte as first rendered: the description is read from ach_files.
    restarted = replace(
        nacha.config, originator=replace(nacha.config.originator, entry_description="RENT")
    )
    again = await export_files(
        pool, restarted, nacha.vault, outbox_of(nacha), as_of=WEDNESDAY, now=NOW
    )

    assert {path.name: path.read_text() for path in again} == expected
    assert sorted(company_entry_description(text) for text in expected.values()) == [
        "LEASE PMT ",
        "RETRY PYMT",
    ]


# --- settlement ------------------------------------------------------------------------------


async def test_a_debit_settles_two_banking_days_after_its_effective_date_once_filed(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    outcome = await nacha.charge(request("k1", on=THANKSGIVING))
    assert isinstance(outcome, Processing)
    settles_on = ach_settles_on(FRIDAY)
    assert settles_on == date(2026, 12, 1)
    # Not filed: in flight, however late.
    assert isinstance(await nacha.settlement("k1", as_of=settles_on), Processing)

    await export(pool, nacha, WEDNESDAY)

    assert await nacha.settlement("k1", as_of=date(2026, 11, 30)) == Processing(
        gateway_ref=outcome.gateway_ref
    )
    assert await nacha.settlement("k1", as_of=settles_on) == Succeeded(
        gateway_ref=outcome.gateway_ref, code="settled"
    )
    assert await nacha.settlement("never", as_of=settles_on) is None


# --- end to end ------------------------------------------------------------------------------


Item = tuple[str, str, str, int, str, str, str, str]


def build_return_file(
    items: list[Item], *, changes: Sequence[Item] = (), corrected: Sequence[str] = ()
) -> str:
    """A return file from the bank with one batch of the given returns (test_nacha's layout)
    and, when given, a COR batch of notifications of change with their corrected data."""
    batches = [return_batch(batch_number=1, rdfi="09100001", items=items)] if items else []
    if changes:
        batches.append(
            cor_batch(batch_number=len(batches) + 1, items=list(changes), corrected=corrected)
        )
    return assemble_file(batches)


async def add_nacha_method(
    conn: asyncpg.pool.PoolConnectionProxy, customer_id: int, token: str
) -> int:
    method_id: int = await conn.fetchval(
        "INSERT INTO payment_methods (customer_id, kind, gateway, token, last4, is_primary)"
        " VALUES ($1, 'ach', 'nacha', $2, '4444', true) RETURNING id",
        customer_id,
        token,
    )
    return method_id


@pytest.mark.ledger_left_dirty("entries set aside stay open for an operator (the audit lists them)")
async def test_a_pass_an_export_and_a_return_file_end_to_end(
    nacha: NachaGateway, pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        gateways=["nacha"],
        batch_size=50,
        concurrency=8,
        gateway_timeout_s=5,
    )
    leases = {}
    methods = {}
    async with pool.acquire() as conn:
        for token in ("tok_alvarez", "tok_roe", "tok_doe", "tok_kept"):
            lease = await make_lease(conn, due_dates=[THANKSGIVING], with_method=False)
            leases[token] = lease
            methods[token] = await add_nacha_method(conn, lease.customer_id, token)

    result = await run_pass(pool, {"nacha": nacha}, settings, as_of=THANKSGIVING)
    assert result.counts.processing == 4
    [path] = await export(pool, nacha, THANKSGIVING)
    [batch] = parse_file(path.read_text()).batches
    assert batch.header.effective_on == FRIDAY
    traces = {
        token: await pool.fetchval(
            "SELECT gateway_ref FROM charge_attempts WHERE installment_id = $1",
            leases[token].installment_ids[0],
        )
        for token in leases
    }
    assert sorted(traces.values()) == [entry.trace_number for entry in batch.entries]

    text = build_return_file(
        [
            (
                "26",
                "12345678901",
                "JOSE ALVAREZ",
                5000,
                "R01",
                traces["tok_alvarez"],
                " " * 6,
                "99",
            ),
            ("36", "55554444", "MARY ROE", 5000, "R10", traces["tok_roe"], " " * 6, "99"),
            ("26", "777123", "JOHN DOE", 5000, "R02", traces["tok_doe"], " " * 6, "99"),
            ("26", "1", "NOBODY", 5000, "R03", ODFI + "9999999", " " * 6, "99"),
            # Unreadable (no such reason code): set aside, the rest of the file applied.
            ("26", "1", "NOBODY", 5000, "X01", ODFI + "9999998", " " * 6, "99"),
        ],
        # The same file asks to correct tok_kept's account: recorded, nothing returned.
        changes=[("26", "31415926", "KEPT PAYER", 0, "C01", traces["tok_kept"], "", "98")],
        corrected=["31415927"],
    )
    assert validate(text) == []
    returned_on = date(2026, 11, 30)
    first = await import_returns(pool, text, as_of=returned_on, retry_days=settings.soft_retry_days)
    assert (first.applied, first.already_applied, first.unknown) == (3, 0, 1)
    assert (first.changes, first.set_aside) == (1, 1)
    notice = await pool.fetchrow("SELECT * FROM ach_notifications_of_change")
    assert notice is not None
    assert (notice["change_code"], notice["corrected_account_last4"]) == ("C01", "5927")
    assert notice["customer_id"] == leases["tok_kept"].customer_id

    async with pool.acquire() as conn:
        nsf = await installment(conn, leases["tok_alvarez"].installment_ids[0])
        unauthorized = await installment(conn, leases["tok_roe"].installment_ids[0])
        closed = await installment(conn, leases["tok_doe"].installment_ids[0])
        untouched = await installment(conn, leases["tok_kept"].installment_ids[0])
        assert nsf["status"] == "overdue" and nsf["next_attempt_on"] is not None
        assert nsf["next_attempt_on"] > returned_on
        assert unauthorized["status"] == "overdue" and unauthorized["next_attempt_on"] is None
        assert closed["status"] == "overdue" and closed["next_attempt_on"] is None
        assert untouched["status"] == "pending_settlement"
        statuses = {
            token: await conn.fetchval(
                "SELECT status FROM payment_methods WHERE id = $1", methods[token]
            )
            for token in methods
        }
        assert statuses == {
            "tok_alvarez": "active",
            "tok_roe": "disabled",
            "tok_doe": "disabled",
            "tok_kept": "active",
        }
        categories = dict(
            await conn.fetch("SELECT return_code, category FROM charge_returns ORDER BY 1")
        )
        assert categories == {"R01": "nsf", "R02": "administrative", "R10": "unauthorized"}

    again = await import_returns(pool, text, as_of=returned_on, retry_days=settings.soft_retry_days)
    assert (again.applied, again.already_applied, again.unknown) == (0, 3, 1)
    assert (again.changes, again.changes_already) == (0, 1)


async def test_a_pass_leaves_its_debits_filed_in_the_outbox(
    nacha: NachaGateway, pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(database_url=database_url, gateways=["nacha"])  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[THANKSGIVING], with_method=False)
        await add_nacha_method(conn, lease.customer_id, "tok_roe")
    await run_pass(pool, {"nacha": nacha}, settings, as_of=THANKSGIVING)
    [path] = await export_after_pass(pool, {"nacha": nacha}, as_of=THANKSGIVING, now=NOW)
    assert path.parent == outbox_of(nacha)
    assert validate(path.read_text()) == []
    # Already filed: the next pass's export writes nothing.
    assert await export_after_pass(pool, {"nacha": nacha}, as_of=THANKSGIVING, now=NOW) == []


# --- one row never stops the file ------------------------------------------------------------


async def open_attention_rows(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT subject_id, reason FROM needs_attention"
        " WHERE subject = 'ach_entry' AND resolved_at IS NULL ORDER BY subject_id"
    )
    return [(row["subject_id"], row["reason"]) for row in rows]


@pytest.mark.ledger_left_dirty("entries set aside stay open for an operator (the audit lists them)")
async def test_poisoned_entries_are_set_aside_and_the_healthy_ones_filed_and_settled(
    nacha: NachaGateway, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    refs = {}
    for key, token in (
        ("healthy1", "tok_alvarez"),
        ("no_token", "tok_roe"),
        ("bad_name", "tok_doe"),
        ("too_large", "tok_kept"),
        ("healthy2", "tok_alvarez"),
    ):
        outcome = await nacha.charge(request(key, token))
        assert isinstance(outcome, Processing)
        refs[key] = outcome.gateway_ref
    # What a file cannot hold arrives after acceptance: the operator removed an account from
    # the vault, a name that does not fold to ASCII, an amount over the field's 10 digits.
    await pool.execute(
        "UPDATE ach_entries SET individual_name = '李小龍' WHERE idempotency_key = 'bad_name'"
    )
    await pool.execute(
        "UPDATE ach_entries SET amount_cents = 10000000000 WHERE idempotency_key = 'too_large'"
    )
    without_roe = {token: a for token, a in ACCOUNTS.items() if token != "tok_roe"}
    vault = AccountVault(write_vault(tmp_path / "vault.json", without_roe))

    [path] = await export(pool, nacha, WEDNESDAY, vault=vault)

    text = path.read_text()
    assert validate(text) == []
    [batch] = parse_file(text).batches
    assert [e.trace_number for e in batch.entries] == sorted([refs["healthy1"], refs["healthy2"]])
    assert await open_attention_rows(pool) == [
        ("bad_name", "unrenderable_entry"),
        ("no_token", "vault_token_missing"),
        ("too_large", "unrenderable_entry"),
    ]
    details = await pool.fetchval("SELECT string_agg(detail::text, ' ') FROM needs_attention")
    assert "55554444" not in details and "777123" not in details and "31415926" not in details
    # The healthy debits settle on time; the ones set aside stay unfiled, in flight.
    settles_on = ach_settles_on(FRIDAY)
    assert isinstance(await nacha.settlement("healthy1", as_of=settles_on), Succeeded)
    assert isinstance(await nacha.settlement("healthy2", as_of=settles_on), Succeeded)
    assert isinstance(await nacha.settlement("no_token", as_of=settles_on), Processing)
    unfiled = await pool.fetch(
        "SELECT idempotency_key FROM ach_entries WHERE file_name IS NULL ORDER BY 1"
    )
    assert [row[0] for row in unfiled] == ["bad_name", "no_token", "too_large"]

    # The operator puts the account back: the next export files it (effective after that
    # day), and sets nothing aside twice.
    fixed = AccountVault(write_vault(tmp_path / "vault.json"))
    [again] = await export(pool, nacha, NEXT_MONDAY, now=NEXT_MONDAY_NOW, vault=fixed)
    [batch] = parse_file(again.read_text()).batches
    assert batch.header.effective_on == date(2026, 12, 1)
    assert [e.trace_number for e in batch.entries] == [refs["no_token"]]
    assert await pool.fetchval("SELECT count(*) FROM needs_attention") == 3


@pytest.mark.ledger_left_dirty("entries set aside stay open for an operator (the audit lists them)")
async def test_an_entry_the_vault_lost_after_the_claim_is_taken_out_of_the_unwritten_file(
    nacha: NachaGateway, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    healthy = await nacha.charge(request("healthy", "tok_alvarez"))
    await nacha.charge(request("lost", "tok_roe"))
    # The claim commits with both; the process dies; the account is gone when it restarts.
    [claimed] = await claim_files(pool, nacha.config, nacha.vault, as_of=WEDNESDAY, now=NOW)
    assert claimed.entry_count == 2
    without_roe = {token: a for token, a in ACCOUNTS.items() if token != "tok_roe"}
    vault = AccountVault(write_vault(tmp_path / "vault.json", without_roe))

    [path] = await export(pool, nacha, WEDNESDAY, vault=vault)

    assert path.name == claimed.file_name
    assert isinstance(healthy, Processing)
    [batch] = parse_file(path.read_text()).batches
    assert [e.trace_number for e in batch.entries] == [healthy.gateway_ref]
    row = await pool.fetchrow("SELECT entry_count, total_cents FROM ach_files")
    assert row is not None and tuple(row) == (1, 12_345)
    assert await open_attention_rows(pool) == [("lost", "vault_token_missing")]
    assert await pool.fetchval(
        "SELECT file_name IS NULL AND effective_on = requested_on FROM ach_entries"
        " WHERE idempotency_key = 'lost'"
    )


# --- counters never stop origination ---------------------------------------------------------


async def test_the_trace_sequence_rolls_over_without_reusing_a_live_trace(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    old = await nacha.charge(request("old", "tok_doe"))
    assert isinstance(old, Processing) and old.gateway_ref == ODFI + "0000001"
    await pool.execute("SELECT setval('ach_trace_seq', 9999998)")

    last = await nacha.charge(request("last", "tok_alvarez"))
    wrapped = await nacha.charge(request("wrapped", "tok_roe"))

    assert isinstance(last, Processing) and isinstance(wrapped, Processing)
    assert last.gateway_ref == ODFI + "9999999"
    # Past the maximum the sequence starts again at 1, held by an unfiled debit: skipped.
    assert wrapped.gateway_ref == ODFI + "0000002"
    [path] = await export(pool, nacha, WEDNESDAY)
    text = path.read_text()
    assert validate(text) == []
    assert [e.trace_number for e in parse_file(text).batches[0].entries] == [
        ODFI + "0000001",
        ODFI + "0000002",
        ODFI + "9999999",
    ]

    # Long after "old" was filed (180 days and more), its trace may be given again; a return
    # naming it is matched to the most recent debit of that trace.
    await pool.execute(
        "UPDATE ach_entries SET effective_on = effective_on - 200 WHERE idempotency_key = 'old'"
    )
    await pool.execute("SELECT setval('ach_trace_seq', 9999999)")
    reused = await nacha.charge(request("reused", "tok_doe"))
    assert isinstance(reused, Processing) and reused.gateway_ref == old.gateway_ref
    assert await keys_by_trace(pool, [(old.gateway_ref, 12_345)]) == {old.gateway_ref: "old"}
    await export(pool, nacha, NEXT_MONDAY, now=NEXT_MONDAY_NOW)
    assert await keys_by_trace(pool, [(old.gateway_ref, 12_345)]) == {old.gateway_ref: "reused"}


async def test_file_id_modifiers_spill_to_the_next_day_instead_of_failing(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    # 35 of the day's 36 modifiers are taken by files already created on Wednesday.
    await pool.executemany(
        "INSERT INTO ach_files (file_name, gateway, sec_code, entry_description, effective_on,"
        " exported_on, file_id_modifier, created_at, created_local, written_at)"
        " VALUES ($1, 'nacha', 'PPD', 'LEASE PMT', $2, $2, $3, $4, $5, $4)",
        [
            (f"earlier-{m}.ach", FRIDAY, m, NOW, NOW.replace(tzinfo=None) - timedelta(hours=5))
            for m in "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345678"
        ],
    )
    first = await nacha.charge(request("first", "tok_alvarez"))
    retry = await nacha.charge(request("retry", "tok_roe", reinitiation=True))
    assert isinstance(first, Processing) and isinstance(retry, Processing)

    [path] = await export(pool, nacha, WEDNESDAY)

    header = parse_file(path.read_text()).header
    assert header.file_id_modifier == "9"
    assert company_entry_description(path.read_text()) == "LEASE PMT "
    assert await pool.fetchval(
        "SELECT file_name IS NULL FROM ach_entries WHERE idempotency_key = 'retry'"
    )
    # The next day has all its modifiers: the reinitiation goes out then, effective after it.
    [spilled] = await export(pool, nacha, NEXT_MONDAY, now=NEXT_MONDAY_NOW)
    text = spilled.read_text()
    assert validate(text) == []
    parsed = parse_file(text)
    assert (parsed.header.created_on, parsed.header.file_id_modifier) == (NEXT_MONDAY, "A")
    assert parsed.batches[0].header.effective_on == date(2026, 12, 1)
    assert company_entry_description(text) == "RETRY PYMT"
    assert [e.trace_number for e in parsed.batches[0].entries] == [retry.gateway_ref]


# --- return files with notifications of change ------------------------------------------------


@pytest.mark.ledger_left_dirty("entries set aside stay open for an operator (the audit lists them)")
async def test_a_return_file_with_notifications_of_change_is_imported_not_refused(
    nacha: NachaGateway, pool: asyncpg.Pool
) -> None:
    outcome = await nacha.charge(request("k1"))
    assert isinstance(outcome, Processing)
    await export(pool, nacha, WEDNESDAY)
    trace = outcome.gateway_ref
    text = build_return_file(
        [
            # A malformed return (no such reason code) is set aside; the rest goes in.
            ("26", "1", "NOBODY", 5000, "X03", ODFI + "9999998", " " * 6, "99"),
            ("26", "1", "NOBODY", 5000, "R03", ODFI + "9999999", " " * 6, "99"),
        ],
        changes=[
            ("26", "12345678901", "JOSE ALVAREZ", 0, "C01", trace, "", "98"),
            ("26", "12345678901", "JOSE ALVAREZ", 0, "C03", trace, "", "98"),
        ],
        # C03: routing number (1-9), then the account number (13-29).
        corrected=["12345678999", "091000019   12345678999"],
    )
    assert validate(text) == []
    returned_on = date(2026, 11, 30)

    first = await import_returns(pool, text, as_of=returned_on, retry_days=[3])

    assert (first.unknown, first.changes, first.set_aside) == (1, 2, 1)
    rows = await pool.fetch("SELECT * FROM ach_notifications_of_change ORDER BY change_code")
    assert [
        (
            r["idempotency_key"],
            r["original_trace"],
            r["change_code"],
            r["corrected_routing"],
            r["corrected_account_last4"],
        )
        for r in rows
    ] == [
        ("k1", trace, "C01", None, "8999"),
        ("k1", trace, "C03", "091000019", "8999"),
    ]
    # The corrected account number is never stored whole.
    assert "12345678999" not in repr([dict(r) for r in rows])
    assert await open_attention_rows(pool) == [(ODFI + "9999998", "malformed_return_entry")]

    again = await import_returns(pool, text, as_of=returned_on, retry_days=[3])
    assert (again.changes, again.changes_already, again.set_aside) == (0, 2, 1)
    assert await pool.fetchval("SELECT count(*) FROM ach_notifications_of_change") == 2
    assert await pool.fetchval("SELECT count(*) FROM needs_attention") == 1
