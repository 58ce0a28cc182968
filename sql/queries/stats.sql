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
                THEN i.amount_cents - i.paid_cents - i.in_flight_cents
                ELSE i.amount_cents - i.paid_cents END AS unpaid_cents
    FROM installments i
    WHERE i.due_on <= $1
      AND i.status IN ('scheduled', 'overdue', 'processing', 'pending_settlement')
) s
WHERE s.state IS NOT NULL
GROUP BY s.state;

-- in_doubt --
-- Attempts whose outcome is unknown: how many, how much, and the age of the oldest in seconds
SELECT count(*) AS attempts, coalesce(sum(amount_cents), 0)::bigint AS cents,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
FROM charge_attempts
WHERE status = 'in_doubt';

-- due_today_collected --
-- Cents due on business date $1 and cents of it collected so far
SELECT coalesce(sum(amount_cents), 0)::bigint AS due_cents,
       coalesce(sum(paid_cents), 0)::bigint AS paid_cents
FROM installments
WHERE due_on = $1 AND status <> 'cancelled';

-- last_success --
-- When the last collection pass completed
SELECT max(finished_at) FROM collection_runs WHERE status = 'completed';
