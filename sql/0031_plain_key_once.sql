-- Each idempotency key sent to a gateway, held once across all customers (sql/0022), by the
-- cheapest means each backend has.
--
-- On plain PostgreSQL a unique index on the key alone, in the table that sends it, refuses a
-- key already held in the very statement that inserts the attempt (or the prenote): the
-- lookup table idempotency_keys is no longer written there. That table cost every charge a
-- row, an index entry and a statement a batch: 8 % of the pass's CPU per charge, measured
-- side by side (README, Scaling past one database). The two tables' keys never meet: an
-- attempt's is 'collector-inst-<installment>-<n>' or 'collector-pay-<payment>', a prenote's
-- 'prenote:<gateway>:<customer>:...'.
--
-- On Citus a unique index must include the distribution column, so there the lookup table,
-- distributed by the key, keeps holding them (attempts.register_keys writes it). A plain
-- database that gets Citus later has its keys copied into the lookup table and these indexes
-- dropped before its tables are placed (collector/db/distribution.py, PLAIN_KEY_INDEXES).
--
-- The rows idempotency_keys holds already stay: nothing reads them on plain PostgreSQL, and a
-- move to Citus would copy them again.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        CREATE UNIQUE INDEX charge_attempts_key_once ON charge_attempts (idempotency_key);
        CREATE UNIQUE INDEX ach_prenotes_key_once ON ach_prenotes (idempotency_key);
    END IF;
END;
$$;
