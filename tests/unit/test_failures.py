"""Any failure as one line without secrets: exception groups unwrapped to their cause."""

from __future__ import annotations

import asyncio

import anyio
import asyncpg

from collector.exceptions import DatabaseError
from collector.failures import cause_of, describe_failure, is_interrupt


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def test_a_group_of_cancellations_and_one_lost_connection_is_the_lost_connection() -> None:
    lost = asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator")
    group = BaseExceptionGroup(
        "unhandled errors in a TaskGroup",
        [asyncio.CancelledError(), ExceptionGroup("inner", [lost]), anyio.BrokenResourceError()],
    )
    assert cause_of(group) is lost
    line = describe_failure(group)
    assert line == (
        "lost the database connection: AdminShutdownError: terminating connection due to"
        " administrator"
    )


def test_the_lost_connection_behind_a_knock_on_error_explains_the_group() -> None:
    # What a task sees after its connection was dropped under it: asyncpg's own confusion,
    # with the lost connection in its context.
    knock_on = asyncpg.InterfaceError("connection has been released back to the pool")
    knock_on.__context__ = ConnectionResetError(104, "Connection reset by peer")
    group = ExceptionGroup("pass", [anyio.BrokenResourceError(), knock_on])
    assert describe_failure(group).startswith("lost the database connection: ConnectionReset")


def test_an_engine_error_keeps_its_message_and_adds_what_it_does_not_say() -> None:
    error = _caused(
        DatabaseError("lost the database connection mid-pass"),
        ExceptionGroup("pass", [asyncpg.exceptions.AdminShutdownError("terminated")]),
    )
    assert describe_failure(error) == (
        "lost the database connection mid-pass (caused by AdminShutdownError: terminated)"
    )
    said = _caused(
        DatabaseError("cannot connect to the database: OSError: refused"), OSError("refused")
    )
    assert describe_failure(said) == "cannot connect to the database: OSError: refused"


def test_the_line_is_one_line_and_holds_no_secret() -> None:
    error = ValueError("bad\nvalue for postgresql://collector:hunter2@db/x and 4242424242424242")
    line = describe_failure(ExceptionGroup("g", [error]))
    assert "\n" not in line
    assert "hunter2" not in line and "4242424242424242" not in line
    assert line.startswith("unexpected ValueError: bad value for")


def test_a_group_holding_ctrl_c_is_an_interrupt() -> None:
    assert is_interrupt(BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError()]))
    assert not is_interrupt(ExceptionGroup("g", [ValueError()]))
