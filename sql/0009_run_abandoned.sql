-- A run whose process died before it could close its row (SIGKILL, a lost database) stayed
-- 'running' for good. Its liveness lock tells: PostgreSQL frees a session's advisory locks the
-- moment the session ends, so a 'running' row whose lock is free is a dead pass. The next pass
-- closes such rows as 'abandoned' (runs.abandon_dead), a status of their own: 'failed' is what
-- a pass records of itself, with its reason; 'abandoned' is what another pass found.

ALTER TABLE collection_runs DROP CONSTRAINT collection_runs_status_check;
ALTER TABLE collection_runs ADD CONSTRAINT collection_runs_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'abandoned'));
