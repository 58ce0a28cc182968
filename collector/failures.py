"""Any failure as one line: what the command prints before it exits non-zero, and what a failed
pass keeps in its ``collection_runs`` row.

A pass runs in anyio task groups, so what reaches the top is often an ``ExceptionGroup`` of one
real error (the database went away under a claim loop) and the cancellations it caused in the
other tasks; a traceback of that says nothing to an operator. :func:`describe_failure` finds
the error that caused it, says what kind of failure it is, and scrubs the line of anything
that looks like a secret (a URL's password, a token, a card number).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anyio
import asyncpg

from collector.exceptions import CollectorError
from collector.logs import scrub

__all__ = ["cause_of", "describe_failure", "is_interrupt"]

# What a lost database looks like from asyncpg: the server ended the session (57P01
# admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now), the connection failed or
# closed under a query (class 08), or the socket did.
_CONNECTION_LOST = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def cause_of(exc: BaseException) -> BaseException:
    """The error behind ``exc``: itself, or for an exception group the leaf that explains the
    others: an engine error first (its message was written to be read); then a lost database
    connection anywhere in a leaf's chain (it makes every sibling fail in its own way); then
    any leaf but the cancellations and closed streams a failed task leaves its siblings."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, CollectorError):
            return leaf
    for leaf in leaves:
        for link in _chain(leaf):
            if isinstance(link, _CONNECTION_LOST):
                return link
    # asyncio's CancelledError is anyio's cancellation on the one backend asyncpg runs on
    # (there is no event loop to ask: the CLI calls this once anyio.run has returned).
    knock_on = (asyncio.CancelledError, anyio.BrokenResourceError, anyio.ClosedResourceError)
    real = [leaf for leaf in leaves if not isinstance(leaf, knock_on)]
    return (real or leaves)[0]


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is, or holds, a Ctrl-C."""
    return any(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(exc))


def _one(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the message holds
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_failure(exc: BaseException) -> str:
    """One line saying why ``exc`` ended the work, without secrets.

    An engine error is its own message followed by the causes it does not already repeat; a
    lost database says so; anything else is named as unexpected (a bug to report).
    """
    error = cause_of(exc)
    if isinstance(error, CollectorError):
        line = " ".join(str(error).split())
        cause, seen = error.__cause__, {id(error)}
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            cause = cause_of(cause)  # a group: the error inside it that explains it
            if " ".join(str(cause).split()) not in line:
                line += f" (caused by {_one(cause)})"
            cause = cause.__cause__
    elif isinstance(error, SystemExit):
        line = f"a library ended the command (exit status {error.code}): its log line says why"
    elif isinstance(error, _CONNECTION_LOST):
        line = f"lost the database connection: {_one(error)}"
    elif isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        line = f"the database refused the work: {_one(error)}"
    else:
        line = f"unexpected {_one(error)} (a bug: run again with --traceback and report it)"
    return scrub(line)
