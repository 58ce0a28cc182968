-- The dry run's reads (collector/db/preview.py). Every join and correlated subquery names
-- the customer beside the lease (a lease, its installments, methods and promises are one
-- customer's), so on Citus each is a plain multi-shard read that each shard answers for
-- its own customers.

-- due_by_gateway --
-- What a pass for business date $1 would charge, by gateway and method kind, with the enabled
-- gateways $2, and of it the late fees already assessed: not the leases a promise to pay
-- pauses, nor those the pass would charge off first (more than $3 days past due; 0: no
-- charge-off). Reads only: nothing is locked or written. (The fees the pass would assess
-- first: fees.due.)
SELECT pm.gateway, pm.kind, count(*) AS installments,
       sum(i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents)::bigint
           AS amount_cents,
       -- Of it, late fees (within an installment the rent is taken first, then the fee).
       sum(least(i.fee_cents - i.fee_waived_cents,
                 i.owed_cents - i.paid_cents - i.in_flight_cents
                 - i.cancelled_cents))::bigint AS fee_cents
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id AND l.status = 'active'
JOIN payment_methods pm
  ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on IS NOT NULL
  AND i.next_attempt_on <= $1
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
  AND pm.gateway = ANY($2::text[])
  AND NOT EXISTS (SELECT 1 FROM promises pr
                  WHERE pr.lease_id = i.lease_id AND pr.customer_id = i.customer_id
                    AND pr.status IN ('open', 'kept')
                    AND pr.resume_on > $1::date)
  AND NOT ($3::integer > 0 AND EXISTS (
      SELECT 1 FROM installments o
      WHERE o.lease_id = i.lease_id AND o.customer_id = i.customer_id
        AND o.status IN ('scheduled', 'overdue')
        AND o.due_on < $1::date - $3::integer
        AND o.owed_cents - o.paid_cents - o.in_flight_cents - o.cancelled_cents > 0))
GROUP BY pm.gateway, pm.kind
ORDER BY pm.gateway, pm.kind;

-- skipped --
-- Installments due by $1 that a pass would pass over, by reason, with a few ids to look at.
-- $2 = enabled gateways, $3 = the charge-off age in days (0: none): 'charge_off', the pass
-- charges the lease off before its claim; 'promise_open', a promise pauses the lease.
-- Reads only.
SELECT s.reason, count(*) AS installments, sum(s.amount_cents)::bigint AS amount_cents,
       (array_agg(s.id ORDER BY s.id))[1:10] AS sample_ids
FROM (
    SELECT i.id,
           i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS amount_cents,
           CASE
               WHEN l.status <> 'active' THEN 'lease_' || l.status
               WHEN $3::integer > 0 AND EXISTS (
                   SELECT 1 FROM installments o
                   WHERE o.lease_id = l.id AND o.customer_id = l.customer_id
                     AND o.status IN ('scheduled', 'overdue')
                     AND o.due_on < $1::date - $3::integer
                     AND o.owed_cents - o.paid_cents - o.in_flight_cents - o.cancelled_cents > 0)
                   THEN 'charge_off'
               WHEN i.status = 'overdue' AND i.next_attempt_on IS NULL THEN 'no_automatic_retry'
               WHEN i.next_attempt_on > $1 THEN NULL
               WHEN pr.resume_on > $1 THEN 'promise_open'
               WHEN pm.id IS NULL THEN 'no_primary_method'
               WHEN pm.status <> 'active' THEN 'primary_method_disabled'
               WHEN NOT pm.gateway = ANY($2::text[]) THEN 'gateway_not_enabled'
           END AS reason
    FROM installments i
    JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id
    LEFT JOIN payment_methods pm ON pm.customer_id = l.customer_id AND pm.is_primary
    LEFT JOIN LATERAL (
        SELECT max(o.resume_on) AS resume_on FROM promises o
        WHERE o.lease_id = l.id AND o.customer_id = l.customer_id
          AND o.status IN ('open', 'kept')
    ) pr ON true
    WHERE i.due_on <= $1 AND i.status IN ('scheduled', 'overdue')
) s
WHERE s.reason IS NOT NULL
GROUP BY s.reason
ORDER BY s.reason;

-- unresolved_attempts --
-- Attempts that reconciliation would look up at the start of a pass, by status
SELECT status, count(*) AS attempts, sum(amount_cents)::bigint AS amount_cents
FROM charge_attempts
WHERE status IN ('pending', 'in_doubt')
GROUP BY status
ORDER BY status;

-- due_rows --
-- The installments a pass for business date $1 would claim first, after the keyset cursor
-- ($2, $3), through gateways $4, at most $5, with what the eligibility check reads, leaving
-- out the leases the pass would charge off first (more than $6 days past due; 0: none).
-- Reads only; the same filter as attempts.claim_due.
SELECT i.id AS installment_id, i.next_attempt_on, i.lease_id, l.customer_id, i.due_on,
       i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS amount_cents,
       CASE WHEN i.status = 'overdue' THEN 'retry' ELSE 'batch' END AS source,
       pm.id AS payment_method_id, pm.gateway, pm.kind, pm.brand, pm.instrument_key
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id AND l.status = 'active'
JOIN payment_methods pm
  ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on IS NOT NULL
  AND i.next_attempt_on <= $1
  AND (i.next_attempt_on, i.id) > ($2::date, $3::bigint)
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
  AND pm.gateway = ANY($4::text[])
  AND NOT EXISTS (SELECT 1 FROM promises pr
                  WHERE pr.lease_id = i.lease_id AND pr.customer_id = i.customer_id
                    AND pr.status IN ('open', 'kept')
                    AND pr.resume_on > $1::date)
  AND NOT ($6::integer > 0 AND EXISTS (
      SELECT 1 FROM installments o
      WHERE o.lease_id = i.lease_id AND o.customer_id = i.customer_id
        AND o.status IN ('scheduled', 'overdue')
        AND o.due_on < $1::date - $6::integer
        AND o.owed_cents - o.paid_cents - o.in_flight_cents - o.cancelled_cents > 0))
ORDER BY i.next_attempt_on, i.id
LIMIT $5;

-- charge_offs --
-- The active leases a pass for business date $1 would charge off before its claim (the
-- filter of money_charge_off_v1: an installment with money left to take more than $2 days
-- past due; $2 = 0: none), with their days past due and the cents it would write off
SELECT l.id AS lease_id, l.customer_id,
       ($1::date - min(i.due_on) FILTER (
           WHERE i.due_on < $1::date AND i.status IN ('scheduled', 'overdue')))::integer
           AS days_past_due,
       sum(i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents)::bigint
           AS amount_cents
FROM leases l
JOIN installments i ON i.lease_id = l.id AND i.customer_id = l.customer_id
WHERE $2::integer > 0 AND l.status = 'active'
  AND i.status <> 'cancelled'
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
  AND EXISTS (
      SELECT 1 FROM installments o
      WHERE o.lease_id = l.id AND o.customer_id = l.customer_id
        AND o.status IN ('scheduled', 'overdue')
        AND o.due_on < $1::date - $2::integer
        AND o.owed_cents - o.paid_cents - o.in_flight_cents - o.cancelled_cents > 0)
GROUP BY l.id, l.customer_id
ORDER BY l.id;
