"""The charger's own deadline: a gateway call that never answers is in doubt, never a decline,
and a cancellation from outside (a stop) is not mistaken for the deadline."""

from __future__ import annotations

from datetime import date

import anyio
import pytest

from collector.domain import AttemptSource, ClaimedCharge, MethodKind
from collector.gateways.base import ChargeRequest, InDoubt, Outcome, Succeeded
from collector.jobs.charging import Charger


class HangingGateway:
    """A gateway adapter whose calls wait until released: the boundary, not the engine."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.entered = anyio.Event()
        self.calls = 0

    async def charge(self, request: ChargeRequest) -> Outcome:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return Succeeded(gateway_ref="ref-1")

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        self.entered.set()
        await self.release.wait()
        return None


def _claimed() -> ClaimedCharge:
    return ClaimedCharge(
        attempt_id=1,
        installment_id=1,
        lease_id=1,
        customer_id=1,
        payment_method_id=1,
        gateway="hanging",
        method_kind=MethodKind.CARD,
        token="tok_sandbox_ok",
        amount_cents=1000,
        idempotency_key="collector-inst-1-1",
        attempt_no=1,
        due_on=date(2026, 11, 26),
        source=AttemptSource.BATCH,
        as_of=date(2026, 11, 26),
    )


async def test_a_charge_that_never_answers_is_in_doubt_at_the_deadline() -> None:
    gateway = HangingGateway()
    charger = Charger({"hanging": gateway}, timeout_s=0.05, rate_limits={})
    with anyio.fail_after(5):
        outcome = await charger.charge(_claimed())
    assert outcome == InDoubt(reason="timeout")
    assert gateway.calls == 1


async def test_a_lookup_that_never_answers_is_in_doubt_at_the_deadline() -> None:
    charger = Charger({"hanging": HangingGateway()}, timeout_s=0.05, rate_limits={})
    with anyio.fail_after(5):
        outcome = await charger.lookup(_claimed())
    assert outcome == InDoubt(reason="lookup_timeout")


async def test_an_answer_before_the_deadline_is_the_answer() -> None:
    gateway = HangingGateway()
    gateway.release.set()
    charger = Charger({"hanging": gateway}, timeout_s=5, rate_limits={})
    assert await charger.charge(_claimed()) == Succeeded(gateway_ref="ref-1")


async def test_a_cancellation_from_outside_is_not_taken_for_the_deadline() -> None:
    gateway = HangingGateway()
    charger = Charger({"hanging": gateway}, timeout_s=60, rate_limits={})
    answers: list[Outcome] = []

    async def charge() -> None:
        answers.append(await charger.charge(_claimed()))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(charge)
            await gateway.entered.wait()
            tg.cancel_scope.cancel()
    # Cancelled, not answered: no InDoubt was made up for a call the caller gave up on.
    assert answers == []


@pytest.mark.parametrize("timeout_s", [0.01, 0.05])
async def test_the_deadline_holds_whatever_its_length(timeout_s: float) -> None:
    charger = Charger({"hanging": HangingGateway()}, timeout_s=timeout_s, rate_limits={})
    started = anyio.current_time()
    with anyio.fail_after(5):
        assert await charger.charge(_claimed()) == InDoubt(reason="timeout")
    assert anyio.current_time() - started >= timeout_s
