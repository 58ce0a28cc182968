-- installment_states --
-- Count and unpaid cents of the installments in each state the dashboards watch on business
-- date $1: due today (not yet collected), overdue (due before today, unpaid, not in flight),
-- pending settlement (ACH sent, not settled). Overdue counts what is left to take (owed -
-- paid - in flight - cancelled): money in flight is not overdue as well.
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
                THEN i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents
                -- What a payoff forgave is no one's to pay (sql/0017).
                ELSE i.owed_cents - i.paid_cents - i.cancelled_cents END AS unpaid_cents
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
SELECT coalesce(sum(owed_cents - cancelled_cents), 0)::bigint AS due_cents,
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
-- to the outbox: how many, and when the oldest was accepted. A debit set aside (an open
-- needs_attention row of the entry, e.g. one the NACHA file cannot render, or of its attempt)
-- is not counted: it will not be filed until an operator acts, and the set-aside rows have
-- their own alert (CollectorRowsSetAside).
SELECT count(*) AS entries, min(e.created_at) AS oldest_at
FROM ach_entries e
LEFT JOIN ach_files f ON f.file_name = e.file_name
WHERE (e.file_name IS NULL OR f.written_at IS NULL)
  AND coalesce(e.requested_on, e.effective_on) <= $1
  AND NOT EXISTS (
      SELECT 1 FROM needs_attention n
      WHERE n.resolved_at IS NULL AND n.subject = 'ach_entry'
        AND n.subject_id = e.idempotency_key)
  AND NOT EXISTS (
      SELECT 1 FROM charge_attempts a
      JOIN needs_attention n
        ON n.resolved_at IS NULL AND n.subject = 'attempt' AND n.subject_id = a.id::text
      -- The entry's customer is its attempt's: the same shard on Citus (R1).
      WHERE a.idempotency_key = e.idempotency_key AND a.customer_id = e.customer_id);

-- business_day_attempts --
-- The attempts made on business date $1, by gateway, method kind and status as it stands now:
-- each attempt counted once, under its latest outcome (an in-doubt attempt resolved later
-- moves from in_doubt to its answer), with its cents. BRIN charge_attempts_as_of_brin.
-- Every join carries the customer (R1): on Citus each shard counts its own.
SELECT a.gateway, pm.kind AS method_kind, a.status AS outcome,
       count(*) AS attempts, sum(a.amount_cents)::bigint AS cents
FROM charge_attempts a
JOIN payment_methods pm ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
WHERE a.as_of = $1
GROUP BY a.gateway, pm.kind, a.status;

-- business_day_refused --
-- The attempts of business date $1 the eligibility check refused, by reason
SELECT outcome_code AS reason, count(*) AS attempts
FROM charge_attempts
WHERE as_of = $1 AND status = 'refused'
GROUP BY outcome_code;

-- business_day_passes --
-- The passes for business date $1, by status, and the wall seconds of those that ended
SELECT status, count(*) AS passes,
       coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 AS seconds
FROM collection_runs
WHERE as_of = $1
GROUP BY status;

-- business_day_ach --
-- Bank debits (ACH methods) whose money settled, or came back (returned while in flight, or
-- reversed after it settled), on business date $1, from the journal: by gateway, debits and
-- cents. BRIN money_movements_as_of_brin.
SELECT a.gateway,
       CASE WHEN m.kind = 'settled' THEN 'settled' ELSE 'returned' END AS result,
       count(DISTINCT m.attempt_id) AS debits, sum(m.amount_cents)::bigint AS cents
FROM money_movements m
JOIN charge_attempts a ON a.id = m.attempt_id AND a.customer_id = m.customer_id
JOIN payment_methods pm ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
WHERE m.as_of = $1 AND m.kind IN ('settled', 'returned', 'reversed') AND pm.kind = 'ach'
GROUP BY 1, 2;

-- business_day_charged_off --
-- Leases charged off on business date $1 and the cents written off, from the journal
SELECT count(DISTINCT i.lease_id) AS leases, coalesce(sum(m.amount_cents), 0)::bigint AS cents
FROM money_movements m
JOIN installments i ON i.id = m.installment_id AND i.customer_id = m.customer_id
WHERE m.as_of = $1 AND m.kind = 'charged_off';

-- business_day_late_fees --
-- Late fees assessed and waived on business date $1 (how many, their cents), from the journal
SELECT count(*) FILTER (WHERE m.kind = 'fee_assessed') AS assessed,
       coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'fee_assessed'), 0)::bigint
           AS assessed_cents,
       count(*) FILTER (WHERE m.kind = 'fee_waived') AS waived,
       coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'fee_waived'), 0)::bigint
           AS waived_cents
FROM money_movements m
WHERE m.as_of = $1 AND m.kind IN ('fee_assessed', 'fee_waived');

-- business_day_set_aside --
-- Rows set aside for an operator from $1 to $2 (the business date's midnights in the
-- lessor's zone), open or resolved since, by subject and reason
SELECT subject, reason, count(*) AS set_aside
FROM needs_attention
WHERE created_at >= $1 AND created_at < $2
GROUP BY subject, reason;
