"""The connection pool: one per process, opened at the entry point and passed down."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from collector.exceptions import DatabaseError
from collector.sensitive import redact

Pool = asyncpg.Pool
Connection = asyncpg.Connection
Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
"""Anything a repository can run a query on: the pool (one connection per call) or a
connection a loop holds for many calls (no acquire/reset round trips between them)."""

APPLICATION_NAME = "collector"

# What asyncpg raises when it cannot open a session: the server refused it (PostgresError),
# the socket failed (OSError) or took too long, or the URL itself is wrong (ValueError and
# ClientConfigurationError, an InterfaceError, from its DSN parser: a port that is no number,
# an unknown sslmode).
CANNOT_CONNECT = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError)


class SessionConnection(asyncpg.Connection):
    """A connection of the engine's pool, which knows whether it holds a session-level
    advisory lock (a pass's liveness lock) that must not outlive its user."""

    __slots__ = ("_holds_session_lock", "_on_citus")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_session_lock = False
        self._on_citus: bool | None = None

    def reached_citus(self, on_citus: bool) -> None:
        """Note whether the database is a Citus one (asked once, when the pool opens it)."""
        self._on_citus = on_citus

    @property
    def on_citus(self) -> bool | None:
        """Whether the database is a Citus one; None when not asked yet."""
        return self._on_citus

    def took_session_lock(self) -> None:
        self._holds_session_lock = True

    @property
    def holds_session_lock(self) -> bool:
        return self._holds_session_lock

    def released_session_locks(self) -> None:
        self._holds_session_lock = False


def took_session_lock(conn: Connection | PoolConnectionProxy) -> None:
    """Note that ``conn`` now holds a session-level advisory lock, so that the pool frees it
    when the connection comes back, whatever its user managed to release."""
    # A connection of open_pool's is a SessionConnection (its proxy forwards the call); any
    # other (a pool with asyncpg's own reset, a connection of its own) needs no note.
    note = getattr(conn, "took_session_lock", None)
    if note is not None:
        note()


# What the pool runs on a connection that comes back holding a session lock. asyncpg's own
# reset (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) is one more round trip on every
# release: three per manual payment. The engine leaves no other session state behind (no
# session SET, cursor WITH HOLD, LISTEN or temporary table; asyncpg still rolls back an open
# transaction and drops listeners itself), so the others come back as they are.
_UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"


async def _reset_connection(conn: asyncpg.Connection) -> None:
    if isinstance(conn, SessionConnection) and conn.holds_session_lock:
        await conn.execute(_UNLOCK_ALL)
        conn.released_session_locks()


# asyncpg asks the server for an array type's codec at its first use on each connection: one
# introspection query (about 5 ms of the server's) for each statement that brings a new one,
# two or three in a connection's first manual payment. Asked here at once, in one query, for
# the array types the engine's statements bind and return (text[] is built in).
_ARRAY_TYPES = (
    "SELECT $1::bigint[], $2::integer[], $3::boolean[], $4::date[], $5::timestamptz[], $6::jsonb[]"
)


async def learn_array_types(conn: asyncpg.Connection) -> None:
    """Have ``conn`` learn the codecs of the array types the engine uses, in one round trip
    of introspection (a pool's ``init``; after any custom codec of an element type)."""
    await conn.prepare(_ARRAY_TYPES)


async def init_connection(conn: asyncpg.Connection) -> None:
    """The pool's ``init``: the jsonb codec, the array types, whether this is Citus."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await learn_array_types(conn)
    if isinstance(conn, SessionConnection):
        # Asked once per connection: statements that take row locks are split by shard on
        # Citus (collector/db/routing.py).
        conn.reached_citus(bool(await conn.fetchval(_HAS_CITUS)))


_HAS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"


@asynccontextmanager
async def open_pool(
    url: str,
    *,
    size: int = 10,
    keep_open: bool = False,
    statement_timeout_s: float | None = None,
    lock_timeout_s: float | None = None,
) -> AsyncIterator[asyncpg.Pool]:
    """A pool of ``size`` connections; raise DatabaseError when the server cannot be reached.

    ``keep_open`` (the daemon): open all ``size`` connections now and keep them, idle or
    not. A session opened on demand costs its first user the connection, the type codecs'
    introspection and a first prepare of every statement, about 20 ms on an idle machine:
    the portal's first requests after a start (or after five idle minutes, when asyncpg
    closes a connection above the floor) paid it at once, 100 to 300 ms at p99 during a
    pass. Otherwise (a pass, a command) connections open as they are needed.

    ``statement_timeout_s`` and ``lock_timeout_s`` (COLLECTOR_STATEMENT_TIMEOUT_S,
    COLLECTOR_LOCK_TIMEOUT_S) bound every statement of the pool's sessions: a statement
    blocked behind someone's lock fails with that reason instead of hanging the pass.
    """
    # plan_cache_mode stays PostgreSQL's own (auto): the batch statements whose plan depends
    # on their values are planned per call by fetch_planned (not by a session setting, which
    # re-planned every foreign-key check too).
    server_settings = {"application_name": APPLICATION_NAME}
    if statement_timeout_s is not None:
        server_settings["statement_timeout"] = f"{round(statement_timeout_s * 1000)}ms"
    if lock_timeout_s is not None:
        server_settings["lock_timeout"] = f"{round(lock_timeout_s * 1000)}ms"
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=size if keep_open else 1,
            max_size=size,
            init=init_connection,
            reset=_reset_connection,
            connection_class=SessionConnection,
            server_settings=server_settings,
            timeout=10,
        )
    except CANNOT_CONNECT as exc:
        raise DatabaseError(f"cannot connect to the database: {describe(exc)}") from exc
    # Asked now, once: a repository handed the pool (not a connection) asks routing whether
    # this is Citus, and must not need a second connection for it while the caller may hold
    # one in a transaction (a pool-exhaustion deadlock under load).
    _POOLS_ON_CITUS[id(pool)] = bool(await pool.fetchval(_HAS_CITUS))
    try:
        yield pool
    finally:
        _POOLS_ON_CITUS.pop(id(pool), None)
        await pool.close()


# Whether each open pool of open_pool's reaches Citus, by the pool's id while it is open
# (asyncpg's Pool takes no attributes and no weak references).
_POOLS_ON_CITUS: dict[int, bool] = {}


def pool_on_citus(pool: asyncpg.Pool) -> bool | None:
    """Whether ``pool`` (one of open_pool's, open) reaches Citus; None for another pool."""
    return _POOLS_ON_CITUS.get(id(pool))


FEW_ROWS = 8
"""Rows up to which :func:`fetch_planned` runs the session's cached statement."""


async def fetch_planned(
    db: Executor, query: str, *args: object, rows: int | None = None
) -> list[asyncpg.Record]:
    """Run a batch statement with a plan made for these values.

    The pass's batch statements (the claim, the recorder's, the eligibility history) are
    shaped by their values: a generic plan of the claim, cached after five runs, took 89 ms a
    batch of 1,000 where a plan made for the call's values takes 11 ms. Prepared anew, a
    statement's first execution is planned for its values; one more round trip a batch.
    The session keeps plan_cache_mode at auto: set to force_custom_plan, it re-planned the
    foreign-key checks of every row such a statement inserts, which was most of the claim's
    time (5.8 s against 10.8 s for claiming 20,000).

    ``rows``: how many rows the call is for, when the caller knows. A call for at most
    FEW_ROWS (a manual payment's) runs as the session's cached statement instead, in one
    round trip (a second one was an eighth of a manual payment's): PostgreSQL keeps planning
    it for its values as long as the generic plan, costed for arrays of a hundred, looks
    dearer than those plans, and a batch never runs on that statement (its own prepare makes
    a statement of its own), so no batch inherits its plan."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await fetch_planned(conn, query, *args, rows=rows)
    if rows is not None and rows <= FEW_ROWS:
        return await db.fetch(query, *args)
    statement = await db.prepare(query)
    return await statement.fetch(*args)


async def execute_counted(db: Executor, query: str, *args: object) -> int:
    """Run a statement that writes a set of rows the caller only counts; how many it wrote.

    Counted from the command's status ("INSERT 0 12"), not with RETURNING: asyncpg decodes
    every row a statement returns into a list before it hands back anything, even from
    execute(), so a RETURNING over a data-sized set costs memory in proportion to it."""
    status = await db.execute(query, *args)
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else 0


@asynccontextmanager
async def transaction(db: Executor) -> AsyncIterator[Connection | PoolConnectionProxy]:
    """A transaction on ``db``: on one of the pool's connections, or on the caller's
    connection (a savepoint when it is in a transaction already)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection outside the pool (migrations, liveness locks)."""
    try:
        conn = await asyncpg.connect(
            url, server_settings={"application_name": APPLICATION_NAME}, timeout=10
        )
    except CANNOT_CONNECT as exc:
        raise DatabaseError(f"cannot connect to the database: {describe(exc)}") from exc
    try:
        yield conn
    finally:
        await conn.close()


def describe(exc: BaseException) -> str:
    """A one-line reason, without the URL (it may carry a password), and with any card
    number, secret or gateway token it quotes masked: the CLI prints it as a cause."""
    return redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
