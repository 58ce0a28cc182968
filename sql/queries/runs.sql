-- start --
-- Open the record of one pass for business date $1 on host $2, process $3
INSERT INTO collection_runs (as_of, host, pid) VALUES ($1, $2, $3) RETURNING id;

-- finish --
-- Close the record of pass $1 with its status and counts
UPDATE collection_runs
SET status = $2, finished_at = now(), due = $3, succeeded = $4, declined = $5, in_doubt = $6,
    processing = $7, failed = $8, reconciled = $9, charged_cents = $10, error = $11
WHERE id = $1;

-- take_liveness_lock --
-- Held by a live pass on its own connection; released by PostgreSQL the moment it dies
SELECT pg_advisory_lock($1::int, $2::int);

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
