-- installment_states --
-- Count and unpaid cents of the installments in each state the dashboards watch on business
-- date $1: due today (not yet collected), overdue (due before today, unpaid, not in flight),
-- pending settlement (ACH sent, not settled). Overdue counts what is left to take (amount -
-- paid - in flight): money in flight is not overdue as well.
SELECT s.state, count(*) AS installments, sum(s.unpaid_cents)::bigint AS cents
FROM (
    SELECT CASE
               WHEN i.status = 'pending_settlement' THEN 'pending_settlement'
               WHEN i.due_on < $1 AND i.status IN ('scheduled', 'overdue') THEN 'overdue'
               WHEN i.due_on = $1 AND i.status IN ('scheduled', 'overdue', 'processing')
                   THEN 'due_today'
           END AS state,
           CASE WHEN i.status <> 'pending_settlement' AND i.due_on < $1
                     AND i.status IN ('scheduled', 'overdue')
                THEN i.owed_cents - i.paid_cents - i.in_flight_cents
                ELSE i.owed_cents - i.paid_cents END AS unpaid_cents
    FROM installments i
    WHERE i.due_on <= $1
      AND i.status IN ('scheduled', 'overdue', 'processing', 'pending_settlement')
) s
WHERE s.state IS NOT NULL
GROUP BY s.state;

-- in_doubt --
-- Attempts whose outcome is unknown: how many, how much, and when the oldest was made (a
-- time, not an age: the rules compute the age, so it grows between refreshes too)
SELECT count(*) AS attempts, coalesce(sum(amount_cents), 0)::bigint AS cents,
       min(created_at) AS oldest_at
FROM charge_attempts
WHERE status = 'in_doubt';

-- due_today_collected --
-- Cents due on business date $1, cents of it collected (settled) so far, and cents in flight
-- (bank debits not settled yet, charges waiting for their answer)
SELECT coalesce(sum(owed_cents), 0)::bigint AS due_cents,
       coalesce(sum(paid_cents), 0)::bigint AS paid_cents,
       coalesce(sum(in_flight_cents), 0)::bigint AS in_flight_cents
FROM installments
WHERE due_on = $1 AND status <> 'cancelled';

-- last_success --
-- When the last collection pass completed
SELECT max(finished_at) FROM collection_runs WHERE status = 'completed';

-- runs --
-- The passes' times over every host: the last start and end (any outcome), the latest
-- business date a pass completed for, and the start of the oldest pass still running
SELECT max(started_at) AS last_started_at, max(finished_at) AS last_finished_at,
       max(as_of) FILTER (WHERE status = 'completed') AS last_completed_as_of,
       min(started_at) FILTER (WHERE status = 'running') AS running_since
FROM collection_runs;

-- ach_unfiled --
-- Bank debits requested for $1 (the next banking day) or earlier that are in no file written
-- to the outbox: how many, and when the oldest was accepted
SELECT count(*) AS entries, min(e.created_at) AS oldest_at
FROM ach_entries e
LEFT JOIN ach_files f ON f.file_name = e.file_name
WHERE (e.file_name IS NULL OR f.written_at IS NULL)
  AND coalesce(e.requested_on, e.effective_on) <= $1;
