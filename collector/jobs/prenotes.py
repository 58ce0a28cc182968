"""NACHA account validation: send prenotes, apply their returns, apply notifications of change.

A WEB debit's first live entry to a new bank account is preceded by a prenote (NACHA Rules
2.5.17.4 account validation; Appendix Three, transaction codes 28 and 38): a zero-dollar entry
in a NACHA file at least ``prenote_wait_days`` (3) banking days earlier. The eligibility check
(:mod:`collector.eligibility`) holds the live debit until then. Here:

- :func:`send_prenotes`: every pass (and a change of primary method) accepts a prenote for each
  primary bank account that needs one (a NACHA gateway with SEC code WEB and prenotes on; not
  validated by the adapter; never debited live; debits coming). The next export files it.
- :func:`apply_prenote_return`: a prenote returned R02/R03/R04 (or R16, R20, or an
  unauthorized code) disables every method of that account, for good (the account is closed for
  later adds too: the eligibility check refuses it by its instrument key); any other code is
  set aside for an operator, and the next pass sends a new prenote (at most ``MAX_PRENOTES``).
- :func:`apply_change`: a notification of change (C01-C07, and C04's name) corrects the vault
  entry (so the next entry carries the corrected data) and the method's display fields, with an
  audit line (``payment_method_changes``) per method.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Final

import asyncpg

from collector.ach.nacha import ChangeNotice, is_valid_routing_number
from collector.db import prenotes
from collector.db.attempts import register_key_again
from collector.db.attention import set_aside
from collector.db.pool import Executor
from collector.gateways.base import Gateway
from collector.gateways.nacha_files import AccountVault, NachaGateway
from collector.logs import get_logger
from collector.policy import PRENOTE_CLOSING_RETURNS

log = get_logger()

# needs_attention reasons (subject "ach_entry").
PRENOTE_NOT_SENT: Final = "prenote_not_sent"
PRENOTE_RETURNED: Final = "prenote_returned"
CHANGE_NOT_APPLIED: Final = "change_not_applied"
_SUBJECT: Final = "ach_entry"


def prenote_key(gateway: str, customer_id: int, instrument_key: str, number: int) -> str:
    """The entry key of a customer's ``number``-th prenote of an account: the same on every
    try, so a pass that died between accepting it and recording it records that same entry
    next time. It names the customer: two customers who share an account each prenote it
    under their own authorization, and a key is sent under one customer only (sql/0022)."""
    return f"prenote:{gateway}:{customer_id}:{instrument_key}:{number}"


async def send_prenotes(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    *,
    as_of: date,
    customer_id: int | None = None,
) -> int:
    """Accept a prenote for every primary bank account that needs one (of one customer, or
    all) on business date ``as_of``; the number accepted."""
    sent = 0
    for name, gateway in gateways.items():
        if not isinstance(gateway, NachaGateway) or not gateway.requires_prenotes:
            continue
        for candidate in await prenotes.candidates(pool, gateway=name, customer_id=customer_id):
            key = prenote_key(
                name, candidate.customer_id, candidate.instrument_key, candidate.returned + 1
            )
            await register_key_again(pool, key, candidate.customer_id)
            trace = await gateway.prenote(
                key, candidate.token, customer_id=candidate.customer_id, on=as_of
            )
            if trace is None:
                # The vault has no usable account for the token: the live debit will be
                # declined for the same reason; an operator sees it once.
                await set_aside(
                    pool,
                    subject=_SUBJECT,
                    subject_id=key,
                    customer_id=candidate.customer_id,
                    reason=PRENOTE_NOT_SENT,
                    detail={"payment_method_id": candidate.payment_method_id},
                )
                continue
            if await prenotes.record(
                pool, candidate, gateway=name, idempotency_key=key, as_of=as_of
            ):
                sent += 1
                log.info(
                    "ach_prenote_accepted",
                    payment_method_id=candidate.payment_method_id,
                    customer_id=candidate.customer_id,
                    trace=trace,
                    as_of=as_of.isoformat(),
                )
    return sent


async def apply_prenote_return(
    pool: asyncpg.Pool,
    prenote: prenotes.Prenote,
    *,
    idempotency_key: str,
    code: str,
    trace: str,
    as_of: date,
) -> bool:
    """Apply the return of a prenote, once; False when it was applied before."""
    async with pool.acquire() as conn, conn.transaction():
        if not await prenotes.mark_returned(
            conn, prenote.id, customer_id=prenote.customer_id, code=code, as_of=as_of
        ):
            return False
        if code in PRENOTE_CLOSING_RETURNS:
            # Before any live debit: every method of the account, whatever row names it. The
            # outbox trigger reports each as method.disabled, in this transaction.
            for row in await prenotes.disable_account(
                conn,
                customer_id=prenote.customer_id,
                instrument_key=prenote.instrument_key,
                reason=code,
            ):
                await prenotes.record_change(
                    conn,
                    customer_id=prenote.customer_id,
                    method_id=row["id"],
                    source="prenote_return",
                    code=code,
                    original_trace=trace,
                    changed={"status": ["active", "disabled"]},
                    received_on=as_of,
                )
        else:
            await prenotes.record_change(
                conn,
                customer_id=prenote.customer_id,
                method_id=prenote.payment_method_id,
                source="prenote_return",
                code=code,
                original_trace=trace,
                changed={"validation": ["pending", "returned"]},
                received_on=as_of,
            )
            await set_aside(
                conn,
                subject=_SUBJECT,
                subject_id=idempotency_key,
                customer_id=prenote.customer_id,
                reason=PRENOTE_RETURNED,
                detail={
                    "return_code": code,
                    "trace": trace,
                    "payment_method_id": prenote.payment_method_id,
                },
            )
    log.warning(
        "ach_prenote_returned",
        payment_method_id=prenote.payment_method_id,
        customer_id=prenote.customer_id,
        return_code=code,
        closes_account=code in PRENOTE_CLOSING_RETURNS,
    )
    return True


def _corrections(change: ChangeNotice) -> dict[str, Any]:
    """What the vault entry takes from a notification of change (None: nothing to correct)."""
    fixes: dict[str, Any] = {}
    if change.corrected_routing is not None and is_valid_routing_number(change.corrected_routing):
        fixes["routing_number"] = change.corrected_routing
    if change.corrected_account:
        fixes["account_number"] = change.corrected_account
    if change.corrected_account_type is not None:
        fixes["account_type"] = change.corrected_account_type
    if change.change_code == "C04" and change.corrected_text:
        fixes["name"] = change.corrected_text
    return fixes


async def apply_change(
    db: Executor,
    vault: AccountVault | None,
    *,
    idempotency_key: str,
    change: ChangeNotice,
    as_of: date,
) -> int:
    """Correct the vault entry and the display fields of the methods the changed entry was sent
    for, with an audit line per method; the number of methods changed now (0: none, or
    applied before)."""
    method = await prenotes.method_of_entry(db, idempotency_key)
    if method is None:
        return 0
    if await prenotes.change_applied(
        db, method.id, code=change.change_code, original_trace=change.original_trace
    ):
        # Applied by an earlier import: the vault is not touched again, so an old file
        # imported after a newer correction cannot bring the old data back.
        return 0
    fixes = _corrections(change)

    async def not_applied(problem: str) -> int:
        """Set the change aside for an operator, with why it could not be applied."""
        await set_aside(
            db,
            subject=_SUBJECT,
            subject_id=idempotency_key,
            customer_id=method.customer_id,
            reason=CHANGE_NOT_APPLIED,
            detail={"change_code": change.change_code, "problem": problem},
        )
        return 0

    changed: dict[str, Any] = {}
    if "routing_number" in fixes:
        changed["routing_number"] = change.corrected_routing
    if "account_type" in fixes:
        changed["account_type"] = fixes["account_type"]
    if "name" in fixes:
        changed["name"] = True  # the name itself stays in the vault
    if fixes and vault is not None:
        account = await vault.correct(
            method.token,
            routing_number=fixes.get("routing_number"),
            account_number=fixes.get("account_number"),
            account_type=fixes.get("account_type"),
            name=fixes.get("name"),
        )
        if account is None:
            return await not_applied("token not in the vault")
    elif fixes:
        # No vault at hand (an import without the NACHA settings): recorded, not applied.
        return await not_applied("no account vault configured")
    last4 = change.corrected_account_last4
    done = 0
    for row in await prenotes.methods_of_token(
        db, customer_id=method.customer_id, gateway=method.gateway, token=method.token
    ):
        fields = dict(changed)
        if last4 is not None and last4.isdigit() and len(last4) == 4 and row["last4"] != last4:
            fields["last4"] = [row["last4"], last4]
        recorded = await prenotes.record_change(
            db,
            customer_id=method.customer_id,
            method_id=row["id"],
            source="notification_of_change",
            code=change.change_code,
            original_trace=change.original_trace,
            changed=fields,
            received_on=as_of,
        )
        if not recorded:
            continue
        if "last4" in fields:
            await prenotes.set_last4(
                db,
                row["id"],
                last4,  # type: ignore[arg-type]
                customer_id=method.customer_id,
            )
        done += 1
        log.warning(
            "payment_method_corrected",
            payment_method_id=row["id"],
            customer_id=method.customer_id,
            change_code=change.change_code,
            fields=sorted(fields),
        )
    return done
