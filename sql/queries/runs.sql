-- start --
-- Open the record of one pass for business date $1 on host $2, process $3
INSERT INTO collection_runs (as_of, host, pid) VALUES ($1, $2, $3) RETURNING id;

-- open --
-- Open the record of one pass for business date $1 on host $2, process $3, and take its
-- liveness lock ($4 = the lock namespace) in the same statement: the row is seen by others
-- only once it commits, by when its lock is held, so no pass ever finds it running unlocked
WITH run AS (
    INSERT INTO collection_runs (as_of, host, pid) VALUES ($1, $2, $3) RETURNING id
)
SELECT id, pg_advisory_lock($4::int, id::int)::text AS locked FROM run;

-- abandon_dead --
-- Close as abandoned every run still 'running' whose liveness lock ($1 = its namespace) is
-- free: PostgreSQL frees it when the session ends, so its process died (SIGKILL) or lost the
-- database before it could close its row. Returns what it closed
UPDATE collection_runs r
SET status = 'abandoned', finished_at = now(),
    error = 'abandoned: the pass ended without closing its run (process killed, or the'
            ' database lost); found by a later pass'
WHERE r.status = 'running'
  AND NOT EXISTS (
      SELECT 1 FROM pg_locks l
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $1::oid
        AND l.objid::bigint = r.id
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
RETURNING r.id, r.host, r.pid, r.started_at;

-- finish --
-- Close the record of pass $1 with its status and counts
UPDATE collection_runs
SET status = $2, finished_at = now(), due = $3, succeeded = $4, declined = $5, in_doubt = $6,
    processing = $7, failed = $8, reconciled = $9, charged_cents = $10, error = $11
WHERE id = $1;

-- take_liveness_lock --
-- Held by a live pass on its own connection; released by PostgreSQL the moment it dies
SELECT pg_advisory_lock($1::int, $2::int);

-- holds_liveness_lock --
-- Whether this session still holds the liveness lock ($1 = namespace, $2 = run id): a pass
-- asks when it fails, to tell a lost database session from any other failure
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND classid = $1::oid AND objid = $2::oid AND objsubid = 2
);

-- release_liveness_lock --
-- Let go of a finished pass's liveness lock
SELECT pg_advisory_unlock($1::int, $2::int);

-- never_analyzed --
-- Which of the engine's busiest tables the planner has no statistics for (never analyzed,
-- by hand or by autovacuum): a bulk-loaded book makes the claim plan catastrophically
SELECT relname FROM pg_stat_user_tables
WHERE relname IN ('customers', 'payment_methods', 'leases', 'installments', 'charge_attempts')
  AND schemaname = current_schema()
  AND last_analyze IS NULL AND last_autoanalyze IS NULL;

-- analyze --
-- Give the planner statistics for the tables the claim reads
ANALYZE customers, payment_methods, leases, installments, charge_attempts;

-- failed_start --
-- Record a pass for business date $1 on host $2, process $3 that failed before it could
-- begin (its gateways would not open), closed at once as failed with error $4
INSERT INTO collection_runs (as_of, host, pid, status, finished_at, error)
VALUES ($1, $2, $3, 'failed', now(), $4)
RETURNING id;

-- mark_failed --
-- A completed pass $1 whose last step, outside the pass (its metrics export), failed: failed,
-- with that reason $2, so that it no longer counts as the day's completed pass
UPDATE collection_runs SET status = 'failed', error = $2 WHERE id = $1;
