"""Distribute the schema on Citus, when the database has the ``citus`` extension.

Plain PostgreSQL is the default and needs nothing from this module. On a Citus coordinator,
``collector migrate`` applies the migrations as usual (they create plain tables) and then
calls :func:`distribute`, which turns each table into what this map says it is:

* **by customer**: one customer's rows on one shard, every table co-located with
  ``customers`` (distributed by its ``id``), so a statement about one customer's money routes
  to one shard and a foreign key between two of them is checked there (sql/0022);
* **by value**: the lookup tables that keep a value unique across customers, each
  distributed by that value (an email hashes to the shard that checks it);
* **reference**: small tables every node holds a copy of (the operators' queue, the runs, the
  NACHA files, webhook ids, the aging totals), joinable with anything.

What the map does not name stays a local table of the coordinator: the migrations' own
ledger, and the sandbox gateway's schema (a stand-in for another company's system).

It is idempotent: a table already distributed is left alone, so every ``collector migrate``
runs it and a table a later migration adds is distributed by the next run. A table that
migrations create but this map forgets fails loudly (``unplaced_tables``), never silently
local.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collector.db.pool import Executor

Placement = Literal["customer", "value", "reference"]


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    placement: Placement
    column: str | None = None  # the distribution column (None for a reference table)


# In the order Citus needs: a table after every table its foreign keys reference.
TABLES: tuple[Table, ...] = (
    Table("collection_runs", "reference"),
    Table("ach_files", "reference"),
    Table("webhook_events", "reference"),
    Table("delinquency_totals", "reference"),
    Table("needs_attention", "reference"),
    Table("customers", "customer", "id"),
    Table("customer_emails", "value", "email"),
    Table("lease_agreement_refs", "value", "agreement_ref"),
    Table("idempotency_keys", "value", "idempotency_key"),
    Table("payment_methods", "customer", "customer_id"),
    Table("leases", "customer", "customer_id"),
    Table("installments", "customer", "customer_id"),
    Table("payments", "customer", "customer_id"),
    Table("payment_allocations", "customer", "customer_id"),
    Table("charge_attempts", "customer", "customer_id"),
    Table("charge_returns", "customer", "customer_id"),
    Table("money_movements", "customer", "customer_id"),
    Table("ach_entries", "customer", "customer_id"),
    Table("ach_notifications_of_change", "customer", "customer_id"),
    Table("ach_prenotes", "customer", "customer_id"),
    Table("method_authorizations", "customer", "customer_id"),
    Table("payment_method_changes", "customer", "customer_id"),
    Table("promises", "customer", "customer_id"),
    Table("outbox_events", "customer", "customer_id"),
    Table("event_deliveries", "customer", "customer_id"),
    Table("debit_notices", "customer", "customer_id"),
    Table("delinquency_snapshots", "customer", "customer_id"),
)

# Tables of the public schema that stay local to the coordinator, on purpose.
LOCAL_TABLES = frozenset({"schema_migrations"})

# Plain PostgreSQL holds each idempotency key once by a unique index on the key alone in the
# table that sends it (sql/0031); Citus refuses a unique index without the distribution
# column, and holds them in the lookup table idempotency_keys instead (attempts.
# register_keys). A plain database that gets Citus: its keys are copied into the lookup table
# and these indexes dropped, before its tables are placed (_hold_plain_keys).
PLAIN_KEY_INDEXES = {
    "charge_attempts": "charge_attempts_key_once",
    "ach_prenotes": "ach_prenotes_key_once",
}

_PLAIN_INDEXES_LEFT = """
SELECT c.relname::text AS name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'i' AND c.relname = ANY ($1::text[])
"""

# Every key either table sent while the indexes held them, into the lookup table (a key held
# there already, as 0022 copied them, is left as it is).
_HOLD_KEYS = """
INSERT INTO idempotency_keys (idempotency_key, customer_id)
SELECT idempotency_key, customer_id FROM charge_attempts
UNION ALL
SELECT idempotency_key, customer_id FROM ach_prenotes
ON CONFLICT (idempotency_key) DO NOTHING
"""

_HAS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"

_PLACED = """
SELECT logicalrelid::regclass::text AS name
FROM pg_dist_partition
"""

# Identifiers from the catalog, quoted by it (format %I): DDL takes no parameters.
_FOREIGN_KEYS = """
SELECT format('%I', c.conrelid::regclass::text) AS table_name, format('%I', c.conname) AS conname,
       pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
WHERE c.contype = 'f'
  AND (c.conrelid::regclass::text = ANY ($1::text[])
       OR c.confrelid::regclass::text = ANY ($1::text[]))
ORDER BY c.conrelid::regclass::text, c.conname
"""

_PUBLIC_TABLES = """
SELECT c.relname::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
  -- A node that holds shards (the coordinator holds reference tables' copies) lists them
  -- when citus.override_table_visibility is off, as the README advises.
  AND NOT relation_is_a_known_shard(c.oid)
"""


async def has_citus(db: Executor) -> bool:
    """Whether this database is a Citus one (the extension is created in it)."""
    return bool(await db.fetchval(_HAS_CITUS))


async def unplaced_tables(db: Executor) -> list[str]:
    """Tables of the public schema that this map neither places nor keeps local (Citus
    only: it asks Citus which tables are shards)."""
    known = {t.name for t in TABLES} | LOCAL_TABLES
    return sorted(row[0] for row in await db.fetch(_PUBLIC_TABLES) if row[0] not in known)


async def distribute(db: Executor) -> list[str]:
    """Place every table of the map not placed yet; return the tables placed now. A no-op
    (and an empty list) on plain PostgreSQL. Run it in a transaction: its foreign keys are
    dropped and restated, all or nothing."""
    if not await has_citus(db):
        return []
    unplaced = await unplaced_tables(db)
    if unplaced:
        raise LookupError(
            "collector/db/distribution.py does not say where these tables go on Citus: "
            + ", ".join(unplaced)
        )
    placed = {row["name"] for row in await db.fetch(_PLACED)}
    todo = [t for t in TABLES if t.name not in placed]
    if not todo:
        await adjust_for_citus(db)
        return []
    # Citus places a table only when every foreign key it is part of already points at a
    # placed table, and a local table that references a table being placed is pulled along;
    # so the foreign keys of the tables placed now are dropped, and restated once every table
    # is placed (the same definitions: co-located or to reference tables, sql/0022).
    # In one transaction (the caller's) with foreign keys to reference tables, Citus must run
    # every step over one connection per node.
    await db.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
    await _hold_plain_keys(db)
    names = [t.name for t in todo]
    keys = await db.fetch(_FOREIGN_KEYS, names)
    for key in keys:
        await db.execute(f"ALTER TABLE {key['table_name']} DROP CONSTRAINT {key['conname']}")
    # The journal's and the methods' row triggers run on each shard: each touches only rows
    # of the same customer (its co-located shards) or nothing at all, which is what makes a
    # trigger on a distributed table safe; Citus asks for the setting to allow one at all.
    await db.execute("SET LOCAL citus.enable_unsafe_triggers = on")
    done = []
    for table in todo:
        if table.placement == "reference":
            await db.execute("SELECT create_reference_table($1::regclass)", table.name)
        elif table.placement == "customer":
            await db.execute(
                "SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)",
                table.name,
                table.column,
                "default" if table.name == "customers" else "customers",
            )
        else:
            await db.execute(
                "SELECT create_distributed_table($1::regclass, $2, colocate_with => 'none')",
                table.name,
                table.column,
            )
        done.append(table.name)
    for key in keys:
        await db.execute(
            f"ALTER TABLE {key['table_name']} ADD CONSTRAINT {key['conname']} {key['definition']}"
        )
    await adjust_for_citus(db)
    return done


async def _hold_plain_keys(db: Executor) -> None:
    """Before a plain database's tables are placed: the keys its unique indexes held go into
    the lookup table, and the indexes go (Citus would refuse to place their tables)."""
    left = [
        row["name"] for row in await db.fetch(_PLAIN_INDEXES_LEFT, list(PLAIN_KEY_INDEXES.values()))
    ]
    if not left:
        return
    await db.execute(_HOLD_KEYS)
    for name in sorted(left):
        # The names are this module's constants, read back from the catalog: DDL takes no
        # parameters.
        await db.execute(f'DROP INDEX "{name}"')


# What differs on Citus from the schema the migrations make, restated on every placement run
# (idempotent), so a database that gets Citus after its migrations gets it too:
# - the v2 money functions plan each call for its values: a generic plan of their statements
#   cannot be pruned to one shard ("cannot push down this subquery");
# - the journal's deferred outbox trigger is dropped: a row trigger runs on the shard, where
#   a statement over another distributed table is a nested distributed query; every path that
#   writes the journal on Citus writes its events itself (outbox_money_events_v2, sql/0023).
_CITUS_ADJUSTMENTS = (
    "ALTER FUNCTION money_apply_v2(bigint[], bigint[]) SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_follow_v2(bigint[], text[], boolean[], date[], text[], date, text,"
    " bigint[]) SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_replan_v2(bigint[], bigint[], date, date, text, text)"
    " SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION outbox_money_events_v2(bigint[], bigint[])"
    " SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_present_v2(bigint[], bigint[], bigint[], bigint[], bigint[], date,"
    " text[], bigint[]) SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_payoff_end_v1(bigint[], bigint[])"
    " SET plan_cache_mode = force_custom_plan",
    # The v1 forms read their rows' customers, a multi-shard read, then call v2 (sql/0028).
    "ALTER FUNCTION money_apply_v1(bigint[]) SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_present_v1(bigint[], bigint[], bigint[], bigint[], bigint[], date,"
    " text[]) SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_follow_v1(bigint[], text[], boolean[], date[], text[], date, text)"
    " SET plan_cache_mode = force_custom_plan",
    "ALTER FUNCTION money_replan_v1(bigint[], date, date, text, text)"
    " SET plan_cache_mode = force_custom_plan",
    "DROP TRIGGER IF EXISTS money_movements_outbox ON money_movements",
)


async def adjust_for_citus(db: Executor) -> None:
    """Make the Citus-only adjustments (see _CITUS_ADJUSTMENTS), in the caller's
    transaction; the caller knows it is on Citus."""
    # Trigger DDL on a distributed table needs it, even a DROP ... IF EXISTS.
    await db.execute("SET LOCAL citus.enable_unsafe_triggers = on")
    for statement in _CITUS_ADJUSTMENTS:
        await db.execute(statement)
