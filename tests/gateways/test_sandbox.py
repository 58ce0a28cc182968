from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from collector.db.embedded import database_url_of
from collector.domain import MethodKind
from collector.exceptions import GatewayError
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    Gateway,
    GatewayContext,
    InDoubt,
    Outcome,
    Processing,
    Succeeded,
)
from collector.gateways.sandbox import (
    SandboxGateway,
    gateway_ref_of,
    open_sandbox_ach,
    open_sandbox_card,
    sandbox_charge_counts,
)

# Marked here, not only by conftest's late hook: anyio's collection_finish otherwise replaces
# the parametrize ids of parametrized tests with its own backend parameter.
pytestmark = pytest.mark.anyio

WAIT_S = 5


def card_request(
    key: str, token: str, *, amount_cents: int = 12_500, installment_id: int | None = None
) -> ChargeRequest:
    metadata = {} if installment_id is None else {"installment_id": str(installment_id)}
    return ChargeRequest(
        customer_id=1,
        idempotency_key=key,
        amount_cents=amount_cents,
        token=token,
        method_kind=MethodKind.CARD,
        metadata=metadata,
    )


def ach_request(key: str, token: str, *, installment_id: int | None = None) -> ChargeRequest:
    metadata = {} if installment_id is None else {"installment_id": str(installment_id)}
    return ChargeRequest(
        customer_id=1,
        idempotency_key=key,
        amount_cents=30_000,
        token=token,
        method_kind=MethodKind.ACH,
        metadata=metadata,
    )


def card_context(database_url: str, *, latency_ms: float = 0.0) -> GatewayContext:
    return GatewayContext(name="sandbox_card", database_url=database_url, latency_ms=latency_ms)


@pytest.fixture
async def card(database_url: str) -> AsyncIterator[SandboxGateway]:
    async with open_sandbox_card(card_context(database_url)) as gateway:
        yield gateway


@pytest.fixture
async def ach(database_url: str) -> AsyncIterator[SandboxGateway]:
    ctx = GatewayContext(name="sandbox_ach", database_url=database_url)
    async with open_sandbox_ach(ctx) as gateway:
        yield gateway


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def stored(conn: asyncpg.Connection, key: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM sandbox.charges WHERE idempotency_key = $1", key)


async def test_sandbox_gateways_satisfy_the_protocol(
    card: SandboxGateway, ach: SandboxGateway
) -> None:
    assert isinstance(card, Gateway)
    assert isinstance(ach, Gateway)
    assert (card.name, ach.name) == ("sandbox_card", "sandbox_ach")


async def test_ok_card_succeeds_and_lookup_finds_it(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    outcome = await card.charge(card_request("k-ok", "sandbox_card_ok", installment_id=7))

    assert outcome == Succeeded(gateway_ref=gateway_ref_of("k-ok"))
    assert await card.lookup("k-ok") == outcome
    [row] = await stored(conn, "k-ok")
    assert (row["status"], row["installment_id"], row["amount_cents"]) == ("succeeded", 7, 12_500)


async def test_ok_ach_is_processing_and_lookup_finds_it(
    ach: SandboxGateway, conn: asyncpg.Connection
) -> None:
    outcome = await ach.charge(ach_request("k-ach", "sandbox_ach_ok"))

    assert outcome == Processing(gateway_ref=gateway_ref_of("k-ach"))
    assert await ach.lookup("k-ach") == outcome
    [row] = await stored(conn, "k-ach")
    assert row["status"] == "processing"
    assert row["return_code"] is None
    assert row["created_at"] is not None  # when it was submitted, for settlement


@pytest.mark.parametrize(
    ("token", "kind", "code"),
    [
        ("sandbox_card_insufficient_funds", DeclineKind.SOFT, "insufficient_funds"),
        ("sandbox_card_do_not_honor", DeclineKind.SOFT, "do_not_honor"),
        ("sandbox_card_stolen", DeclineKind.HARD, "stolen_card"),
        ("sandbox_card_expired", DeclineKind.HARD, "expired_card"),
    ],
)
async def test_declining_card_tokens_are_declined_and_remembered(
    card: SandboxGateway, token: str, kind: DeclineKind, code: str
) -> None:
    outcome = await card.charge(card_request("k-decline", token))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (kind, code)
    assert await card.lookup("k-decline") == outcome


async def test_timeout_taken_answers_in_doubt_but_the_charge_is_taken(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    request = card_request("k-lost", "sandbox_card_timeout_taken", installment_id=3)

    assert await card.charge(request) == InDoubt(reason="timeout")
    taken = Succeeded(gateway_ref=gateway_ref_of("k-lost"))
    assert await card.lookup("k-lost") == taken
    # A retry with the same key is answered from the record, as at a real gateway.
    assert await card.charge(request) == taken
    assert len(await stored(conn, "k-lost")) == 1
    assert await sandbox_charge_counts(conn) == {3: 1}


async def test_timeout_not_taken_answers_in_doubt_and_records_nothing(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    outcome = await card.charge(card_request("k-gone", "sandbox_card_timeout_not_taken"))

    assert outcome == InDoubt(reason="timeout")
    assert await card.lookup("k-gone") is None
    assert await stored(conn, "k-gone") == []
    assert card.writer.flushes == 0


async def test_ach_return_token_is_processing_and_keeps_the_return_code(
    ach: SandboxGateway, conn: asyncpg.Connection
) -> None:
    outcome = await ach.charge(ach_request("k-r01", "sandbox_ach_return_R01"))
    other = await ach.charge(ach_request("k-r10", "sandbox_ach_return_R10"))

    assert outcome == Processing(gateway_ref=gateway_ref_of("k-r01"))
    assert isinstance(other, Processing)
    assert await ach.lookup("k-r01") == outcome
    [row] = await stored(conn, "k-r01")
    assert row["return_code"] == "R01"
    [row] = await stored(conn, "k-r10")
    assert row["return_code"] == "R10"


@pytest.mark.parametrize(
    "token", ["tok_live_4242", "", "sandbox_card_OK", "sandbox_ach_return_R1", "sandbox_ach_ok"]
)
async def test_unknown_token_is_declined_hard_by_the_card_gateway(
    card: SandboxGateway, conn: asyncpg.Connection, token: str
) -> None:
    outcome = await card.charge(card_request("k-unknown", token))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "sandbox_unknown_token")
    assert outcome.message
    assert await card.lookup("k-unknown") == outcome
    # The sandbox may keep a token, but never repeats it back in its answer.
    if token:
        assert token not in outcome.message


@pytest.mark.parametrize(
    "token", ["sandbox_card_ok", "sandbox_ach_return_X01", "sandbox_ach_return_R011", "nope"]
)
async def test_unknown_token_is_declined_hard_by_the_ach_gateway(
    ach: SandboxGateway, token: str
) -> None:
    outcome = await ach.charge(ach_request("k-unknown", token))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "sandbox_unknown_token")
    assert await ach.lookup("k-unknown") == outcome


async def test_non_positive_amount_is_declined_without_being_taken(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    outcome = await card.charge(card_request("k-zero", "sandbox_card_ok", amount_cents=0))

    assert isinstance(outcome, Declined)
    assert (outcome.kind, outcome.code) == (DeclineKind.HARD, "invalid_amount")
    assert await stored(conn, "k-zero") == []


async def test_repeated_key_returns_the_first_answer_and_stores_one_row(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    first = await card.charge(card_request("k-same", "sandbox_card_ok", amount_cents=100))
    again = await card.charge(card_request("k-same", "sandbox_card_stolen", amount_cents=999))

    assert again == first == Succeeded(gateway_ref=gateway_ref_of("k-same"))
    [row] = await stored(conn, "k-same")
    assert row["amount_cents"] == 100


async def test_repeated_key_within_one_flush_keeps_the_first_queued(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    answers: dict[int, Outcome] = {}

    async def charge(index: int, request: ChargeRequest) -> None:
        answers[index] = await card.charge(request)

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(charge, 0, card_request("k-other", "sandbox_card_ok"))
            tg.start_soon(charge, 1, card_request("k-dup", "sandbox_card_stolen"))
            tg.start_soon(charge, 2, card_request("k-dup", "sandbox_card_ok"))

    assert card.writer.flushes == 1
    assert isinstance(answers[0], Succeeded)
    assert answers[1] == answers[2]
    assert isinstance(answers[1], Declined)
    assert answers[1].code == "stolen_card"
    assert len(await stored(conn, "k-dup")) == 1


async def test_concurrent_charges_share_few_writes(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    answers: dict[str, Outcome] = {}

    async def charge(key: str, installment_id: int) -> None:
        request = card_request(key, "sandbox_card_ok", installment_id=installment_id)
        answers[key] = await card.charge(request)

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(charge, f"k-{n}", n)

    assert answers == {
        f"k-{n}": Succeeded(gateway_ref=gateway_ref_of(f"k-{n}")) for n in range(200)
    }
    assert card.writer.flushes <= 5
    assert await conn.fetchval("SELECT count(*) FROM sandbox.charges") == 200
    assert await sandbox_charge_counts(conn) == dict.fromkeys(range(200), 1)


async def test_charges_survive_a_new_adapter_instance(database_url: str) -> None:
    async with open_sandbox_card(card_context(database_url)) as card:
        first = await card.charge(card_request("k-durable", "sandbox_card_insufficient_funds"))

    async with open_sandbox_card(card_context(database_url)) as card:
        assert await card.lookup("k-durable") == first
        assert await card.charge(card_request("k-durable", "sandbox_card_ok")) == first


async def test_lookup_only_sees_its_own_gateway(card: SandboxGateway, ach: SandboxGateway) -> None:
    await card.charge(card_request("k-card", "sandbox_card_ok"))

    assert await ach.lookup("k-card") is None
    assert await card.lookup("never-sent") is None


async def test_simulated_latency_still_answers(database_url: str) -> None:
    async with open_sandbox_card(card_context(database_url, latency_ms=1)) as card:
        with anyio.fail_after(WAIT_S):
            outcome = await card.charge(card_request("k-slow", "sandbox_card_ok"))
            assert await card.lookup("k-slow") == outcome
    assert isinstance(outcome, Succeeded)


async def test_both_sandboxes_open_at_once_on_a_fresh_database(database_url: str) -> None:
    gateways: list[SandboxGateway] = []

    async def open_and_charge(ach: bool) -> None:
        if ach:
            ctx = GatewayContext(name="sandbox_ach", database_url=database_url)
            async with open_sandbox_ach(ctx) as gateway:
                await gateway.charge(ach_request("k-a", "sandbox_ach_ok", installment_id=1))
                gateways.append(gateway)
        else:
            async with open_sandbox_card(card_context(database_url)) as gateway:
                await gateway.charge(card_request("k-c", "sandbox_card_ok", installment_id=2))
                gateways.append(gateway)

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_and_charge, True)
            tg.start_soon(open_and_charge, False)

    assert len(gateways) == 2
    connection = await asyncpg.connect(database_url)
    try:
        assert await sandbox_charge_counts(connection) == {1: 1, 2: 1}
    finally:
        await connection.close()


async def test_charge_counts_are_empty_before_any_sandbox_opened(
    conn: asyncpg.Connection,
) -> None:
    assert await sandbox_charge_counts(conn) == {}


async def test_charge_counts_ignore_declines(
    card: SandboxGateway, ach: SandboxGateway, conn: asyncpg.Connection
) -> None:
    await card.charge(card_request("k-1", "sandbox_card_ok", installment_id=1))
    await card.charge(card_request("k-1b", "sandbox_card_ok", installment_id=1))
    await card.charge(card_request("k-2", "sandbox_card_stolen", installment_id=2))
    await ach.charge(ach_request("k-3", "sandbox_ach_return_R01", installment_id=3))
    await card.charge(card_request("k-4", "sandbox_card_ok"))

    assert await sandbox_charge_counts(conn) == {1: 2, 3: 1}


async def test_a_failed_flush_fails_every_caller_waiting_on_it(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    # A real failure: the table is gone, so every group write is refused by the server.
    await conn.execute("DROP TABLE sandbox.charges")
    failures: list[GatewayError] = []

    async def charge(n: int) -> None:
        try:
            await card.charge(card_request(f"k-{n}", "sandbox_card_ok"))
        except GatewayError as exc:
            failures.append(exc)

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(charge, n)

    assert len(failures) == 50
    assert all(isinstance(exc.__cause__, asyncpg.UndefinedTableError) for exc in failures)
    # Most callers were woken by a flush another task ran, not by their own.
    assert card.writer.flushes <= 5


async def test_two_sandboxes_racing_on_the_same_keys_agree_on_each_answer(
    database_url: str, conn: asyncpg.Connection
) -> None:
    # Two adapters stand for two processes: separate pools, the same keys, opposite orders,
    # different tokens. Each key must be taken once and both must report that one answer.
    keys = [f"k-{n}" for n in range(300)]
    answers: dict[str, list[Outcome]] = {key: [] for key in keys}

    async def charge(card: SandboxGateway, key: str, token: str) -> None:
        answers[key].append(await card.charge(card_request(key, token)))

    with anyio.fail_after(WAIT_S):
        async with (
            open_sandbox_card(card_context(database_url)) as one,
            open_sandbox_card(card_context(database_url)) as two,
            anyio.create_task_group() as tg,
        ):
            for key in keys:
                tg.start_soon(charge, one, key, "sandbox_card_ok")
            for key in reversed(keys):
                tg.start_soon(charge, two, key, "sandbox_card_stolen")

    for key, (first, second) in answers.items():
        assert first == second, key
    assert await conn.fetchval("SELECT count(*) FROM sandbox.charges") == len(keys)


async def test_a_cancelled_flusher_still_answers_everyone_in_its_batch(
    card: SandboxGateway, conn: asyncpg.Connection
) -> None:
    answers: dict[str, Outcome] = {}
    flusher = anyio.CancelScope()

    async def charge(key: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            answers[key] = await card.charge(card_request(key, "sandbox_card_ok"))

    with anyio.fail_after(WAIT_S):
        # Hold the table so the group write is in flight, then cancel the caller running it.
        lock = conn.transaction()
        await lock.start()
        await conn.execute("LOCK TABLE sandbox.charges IN EXCLUSIVE MODE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(charge, "k-flusher", flusher)
            for n in range(10):
                tg.start_soon(charge, f"k-{n}")
            await anyio.wait_all_tasks_blocked()
            flusher.cancel()
            await anyio.wait_all_tasks_blocked()
            await lock.rollback()

    assert flusher.cancel_called
    others = {key: outcome for key, outcome in answers.items() if key != "k-flusher"}
    assert others == {f"k-{n}": Succeeded(gateway_ref=gateway_ref_of(f"k-{n}")) for n in range(10)}
    assert card.writer.flushes == 1
    # The write it ran was shielded: its own charge was taken too, as a lookup will find.
    assert len(await stored(conn, "k-flusher")) == 1


async def test_an_unreachable_database_is_a_gateway_error_without_the_url(
    database_url: str,
) -> None:
    missing = database_url_of(database_url, "no_such_database")

    with pytest.raises(GatewayError) as raised:
        async with open_sandbox_card(card_context(missing)):
            pytest.fail("the gateway must not open")

    assert "sandbox_card" in str(raised.value)
    assert missing not in str(raised.value)
