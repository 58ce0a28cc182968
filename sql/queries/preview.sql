-- due_by_gateway --
-- What a pass for business date $1 would charge, by gateway and method kind, with the enabled
-- gateways $2, and of it the late fees already assessed. Reads only: nothing is locked or
-- written. (The fees the pass would assess first: fees.due.)
SELECT pm.gateway, pm.kind, count(*) AS installments,
       sum(i.owed_cents - i.paid_cents - i.in_flight_cents)::bigint AS amount_cents,
       -- Of it, late fees (within an installment the rent is taken first, then the fee).
       sum(least(i.fee_cents - i.fee_waived_cents,
                 i.owed_cents - i.paid_cents - i.in_flight_cents))::bigint AS fee_cents
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
JOIN payment_methods pm
  ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on IS NOT NULL
  AND i.next_attempt_on <= $1
  AND i.owed_cents - i.paid_cents - i.in_flight_cents > 0
  AND pm.gateway = ANY($2::text[])
GROUP BY pm.gateway, pm.kind
ORDER BY pm.gateway, pm.kind;

-- skipped --
-- Installments due by $1 that a pass would pass over, by reason, with a few ids to look at.
-- $2 = enabled gateways. Reads only.
SELECT s.reason, count(*) AS installments, sum(s.amount_cents)::bigint AS amount_cents,
       (array_agg(s.id ORDER BY s.id))[1:10] AS sample_ids
FROM (
    SELECT i.id, i.owed_cents - i.paid_cents - i.in_flight_cents AS amount_cents,
           CASE
               WHEN l.status <> 'active' THEN 'lease_' || l.status
               WHEN i.status = 'overdue' AND i.next_attempt_on IS NULL THEN 'no_automatic_retry'
               WHEN i.next_attempt_on > $1 THEN NULL
               WHEN pm.id IS NULL THEN 'no_primary_method'
               WHEN pm.status <> 'active' THEN 'primary_method_disabled'
               WHEN NOT pm.gateway = ANY($2::text[]) THEN 'gateway_not_enabled'
           END AS reason
    FROM installments i
    JOIN leases l ON l.id = i.lease_id
    LEFT JOIN payment_methods pm ON pm.customer_id = l.customer_id AND pm.is_primary
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
-- ($2, $3), through gateways $4, at most $5, with what the eligibility check reads. Reads
-- only; the same filter as attempts.claim_due.
SELECT i.id AS installment_id, i.next_attempt_on, i.lease_id, l.customer_id, i.due_on,
       i.owed_cents - i.paid_cents - i.in_flight_cents AS amount_cents,
       CASE WHEN i.status = 'overdue' THEN 'retry' ELSE 'batch' END AS source,
       pm.id AS payment_method_id, pm.gateway, pm.kind, pm.brand, pm.instrument_key
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
JOIN payment_methods pm
  ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on IS NOT NULL
  AND i.next_attempt_on <= $1
  AND (i.next_attempt_on, i.id) > ($2::date, $3::bigint)
  AND i.owed_cents - i.paid_cents - i.in_flight_cents > 0
  AND pm.gateway = ANY($4::text[])
ORDER BY i.next_attempt_on, i.id
LIMIT $5;
