-- claim_due --
-- Claim up to $4 collectable installments after the keyset cursor ($2, $3) for business date
-- $1: lock them (SKIP LOCKED, so concurrent passes never see each other's rows), mark them
-- processing and record one pending attempt each with a deterministic idempotency key, all in
-- one statement. $5 = enabled gateways, $6 = run id, $7 = claim deadline in seconds.
-- Shaped for the planner: the MATERIALIZED CTE keeps the due scan on the partial index (an
-- IN (subquery ... SKIP LOCKED) form was seen to plan as a sequential scan); the UPDATE finds
-- rows by id = ANY(ARRAY(...)) on the primary key; and the attempt ids are drawn in `picked`,
-- so the result needs no join back to the inserted rows (a nested loop over two CTEs, 25 ms a
-- batch of 500).
WITH picked AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('charge_attempts', 'id')) AS attempt_id,
           i.id AS installment_id, i.lease_id, l.customer_id, i.due_on, i.next_attempt_on,
           i.amount_cents - i.paid_cents AS amount_cents,
           i.attempts + 1 AS attempt_no,
           'collector-inst-' || i.id || '-' || (i.attempts + 1) AS idempotency_key,
           CASE WHEN i.status = 'overdue' THEN 'retry' ELSE 'batch' END AS source,
           -- A debit presented again after an NSF return is a NACHA reinitiation, which must
           -- say so in its batch ("RETRY PYMT"). Asked only of retries: first attempts skip it.
           CASE WHEN i.status = 'overdue' THEN EXISTS (
               SELECT 1 FROM charge_attempts b
               JOIN charge_returns r ON r.attempt_id = b.id
               WHERE b.installment_id = i.id AND r.category = 'nsf'
           ) ELSE false END AS reinitiation,
           pm.id AS payment_method_id, pm.gateway, pm.kind, pm.token, pm.brand
    FROM installments i
    JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
    JOIN payment_methods pm
      ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
    WHERE i.status IN ('scheduled', 'overdue')
      AND i.next_attempt_on IS NOT NULL
      AND i.next_attempt_on <= $1
      AND (i.next_attempt_on, i.id) > ($2::date, $3::bigint)
      AND pm.gateway = ANY($5::text[])
    ORDER BY i.next_attempt_on, i.id
    LIMIT $4
    FOR UPDATE OF i SKIP LOCKED
), marked AS (
    UPDATE installments i
    SET status = 'processing', attempts = i.attempts + 1, next_attempt_on = NULL,
        updated_at = now()
    WHERE i.id = ANY (ARRAY(SELECT installment_id FROM picked))
), attempts AS (
    INSERT INTO charge_attempts
        (id, installment_id, payment_method_id, amount_cents, idempotency_key, source, status,
         gateway, run_id, claimed_until)
    SELECT attempt_id, installment_id, payment_method_id, amount_cents, idempotency_key,
           source, 'pending', gateway, $6, now() + make_interval(secs => $7)
    FROM picked
)
SELECT attempt_id, idempotency_key, source, installment_id, lease_id, customer_id, due_on,
       $1::date AS as_of, reinitiation,
       next_attempt_on, amount_cents, attempt_no, payment_method_id, gateway, kind, token, brand
FROM picked
ORDER BY next_attempt_on, installment_id;

-- record_outcomes --
-- Store many gateway answers in one statement: each attempt's outcome, its installment's new
-- state and, after a hard decline, its payment method disabled. Only attempts still pending or
-- in doubt change, so a late duplicate answer (a reconciler and a slow worker answering the
-- same key) is recorded once. Returns the attempts that changed.
WITH o AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::date[], $9::boolean[])
      AS o(attempt_id, attempt_status, gateway_ref, code, message, installment_status,
           paid_cents, next_attempt_on, disable_method)
), changed AS (
    UPDATE charge_attempts a
    SET status = o.attempt_status,
        gateway_ref = coalesce(o.gateway_ref, a.gateway_ref),
        outcome_code = o.code,
        outcome_message = o.message,
        updated_at = now(),
        resolved_at = CASE WHEN o.attempt_status = 'in_doubt' THEN NULL ELSE now() END,
        -- An in-doubt attempt is due for a lookup at once; a resolved one is nobody's claim.
        claimed_until = CASE WHEN o.attempt_status = 'in_doubt' THEN now() END
    FROM o
    -- The primary key, not the partial index of unresolved attempts: that index holds a dead
    -- entry for every attempt resolved since the last VACUUM, thousands during a large pass.
    WHERE a.id = ANY ($1::bigint[]) AND a.id = o.attempt_id
      AND a.status IN ('pending', 'in_doubt')
    RETURNING a.id, a.installment_id, a.payment_method_id
), installments_changed AS (
    UPDATE installments i
    SET status = o.installment_status,
        paid_cents = i.paid_cents + o.paid_cents,
        next_attempt_on = o.next_attempt_on,
        updated_at = now()
    FROM changed c
    JOIN o ON o.attempt_id = c.id
    WHERE i.id = c.installment_id
), methods_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = o.code, updated_at = now()
    FROM changed c
    JOIN o ON o.attempt_id = c.id
    WHERE pm.id = c.payment_method_id AND o.disable_method AND pm.status = 'active'
)
SELECT c.id AS attempt_id FROM changed c;

-- claim_unresolved --
-- Take over, for run $3, up to $4 attempts with id above $1 that need reconciliation: pending
-- ones whose pass is gone (its liveness lock is free) or whose claim deadline passed (the
-- backstop, and the only test for manual payments, which belong to no pass), and in-doubt ones
-- due for a lookup. $2 = enabled gateways, $5 = claim deadline in seconds, $6 = the liveness
-- lock namespace: a live pass holds pg_advisory_lock($6, run_id).
WITH live_runs AS (
    SELECT l.objid::bigint AS run_id
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $6::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), picked AS MATERIALIZED (
    SELECT a.id
    FROM charge_attempts a
    WHERE a.status IN ('pending', 'in_doubt')
      AND a.id > $1
      AND a.gateway = ANY($2::text[])
      AND (a.claimed_until IS NULL
           OR a.claimed_until < now()
           OR (a.run_id IS NOT NULL AND a.run_id NOT IN (SELECT run_id FROM live_runs)))
    ORDER BY a.id
    LIMIT $4
    FOR UPDATE OF a SKIP LOCKED
), details AS (
    SELECT p.id, pm.kind, pm.token, pm.brand, pm.customer_id,
           coalesce(i.lease_id, pay.lease_id) AS lease_id, i.due_on,
           coalesce(i.attempts, 1) AS attempt_no
    FROM picked p
    JOIN charge_attempts a ON a.id = p.id
    JOIN payment_methods pm ON pm.id = a.payment_method_id
    LEFT JOIN installments i ON i.id = a.installment_id
    LEFT JOIN payments pay ON pay.id = a.payment_id
)
UPDATE charge_attempts a
SET run_id = $3, claimed_until = now() + make_interval(secs => $5), updated_at = now()
FROM details d
WHERE a.id = d.id
RETURNING a.id AS attempt_id, a.status, a.idempotency_key, a.source, a.amount_cents,
          extract(epoch FROM now() - a.created_at)::float8 AS age_s,
          a.installment_id, a.payment_id, d.lease_id, d.due_on, d.attempt_no,
          a.payment_method_id, a.gateway, d.kind, d.token, d.brand, d.customer_id;

-- card_declines_30d --
-- Declined attempts of each payment method in $1 over the last 30 days (the networks' caps)
SELECT payment_method_id, count(*) AS declines
FROM charge_attempts
WHERE payment_method_id = ANY ($1::bigint[])
  AND status = 'declined'
  AND created_at > now() - interval '30 days'
GROUP BY payment_method_id;
