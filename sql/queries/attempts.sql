-- claim_due --
-- Claim up to $4 collectable installments after the keyset cursor ($2, $3) for business date
-- $1: lock them (SKIP LOCKED, so concurrent passes never see each other's rows) and record one
-- pending attempt each for what is left to take (owed - paid - in flight - cancelled; owed:
-- rent + late fees - waivers) under a deterministic idempotency key. $5 = enabled gateways,
-- $6 = run id, $7 = claim deadline in seconds, $8 = installments this pass set aside (passed
-- over); a lease with a promise to pay (open or kept) is passed over until the promise's
-- resume_on. The caller presents the money (money.present) in the same transaction, which
-- marks the installments processing: this statement writes no money state.
-- Shaped for the planner: the MATERIALIZED CTE keeps the due scan on the partial index (an
-- IN (subquery ... SKIP LOCKED) form was seen to plan as a sequential scan), and the attempt
-- ids are drawn in `picked`, so the result needs no join back to the inserted rows (a nested
-- loop over two CTEs, 25 ms a batch of 500).
WITH picked AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('charge_attempts', 'id')) AS attempt_id,
           i.id AS installment_id, i.lease_id, l.customer_id, i.due_on, i.next_attempt_on,
           i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS amount_cents,
           i.attempts + 1 AS attempt_no,
           'collector-inst-' || i.id || '-' || (i.attempts + 1) AS idempotency_key,
           CASE WHEN i.status = 'overdue' THEN 'retry' ELSE 'batch' END AS source,
           pm.id AS payment_method_id, pm.gateway, pm.kind, pm.token, pm.brand,
           pm.instrument_key
    FROM installments i
    JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
    JOIN payment_methods pm
      ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
    WHERE i.status IN ('scheduled', 'overdue')
      AND i.next_attempt_on IS NOT NULL
      AND i.next_attempt_on <= $1
      AND (i.next_attempt_on, i.id) > ($2::date, $3::bigint)
      AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
      AND pm.gateway = ANY($5::text[])
      AND i.id <> ALL ($8::bigint[])
      -- A promise to pay pauses the lease's automatic collection until its resume_on, kept
      -- early or not (passed over, no attempt: the eligibility check refuses it too).
      AND NOT EXISTS (SELECT 1 FROM promises pr
                      WHERE pr.lease_id = i.lease_id AND pr.status IN ('open', 'kept')
                        AND pr.resume_on > $1::date)
    ORDER BY i.next_attempt_on, i.id
    LIMIT $4
    FOR UPDATE OF i SKIP LOCKED
), attempts AS (
    INSERT INTO charge_attempts
        (id, installment_id, payment_method_id, amount_cents, idempotency_key, source, status,
         gateway, run_id, claimed_until, customer_id, instrument_key, as_of, effective_on,
         last_sent_at)
    SELECT attempt_id, installment_id, payment_method_id, amount_cents, idempotency_key,
           source, 'pending', gateway, $6, now() + make_interval(secs => $7), customer_id,
           instrument_key, $1, $1, now()
    FROM picked
), presented AS (
    -- The money is reserved in the journal by the one function that applies it (which marks
    -- the installments processing), in this statement.
    SELECT money_present_v1(
               array_agg(attempt_id), array_agg(installment_id), array_agg(amount_cents),
               array_agg(customer_id), array_agg(NULL::bigint), $1,
               array_agg(source)) AS rows_added
    FROM picked
)
SELECT attempt_id, idempotency_key, source, installment_id, lease_id, customer_id, due_on,
       $1::date AS as_of, $1::date AS effective_on, false AS reinitiation,
       next_attempt_on, amount_cents, attempt_no, payment_method_id, gateway, kind, token, brand,
       instrument_key
FROM picked, presented
ORDER BY next_attempt_on, installment_id;

-- register_keys --
-- New attempts' keys $1 of customers $2 will be sent to gateways: each once across all
-- customers (sql/0022). A key already held refuses the whole batch (a unique violation),
-- which the claim answers by claiming one row at a time and setting aside the one refused.
INSERT INTO idempotency_keys (idempotency_key, customer_id)
SELECT * FROM unnest($1::text[], $2::bigint[]);

-- register_key_again --
-- Key $1 of customer $2, derived the same way on every try (a prenote's), will be sent: held
-- once; a retry after a crash registers nothing new
INSERT INTO idempotency_keys (idempotency_key, customer_id)
VALUES ($1, $2)
ON CONFLICT (idempotency_key) DO NOTHING;

-- next_candidate --
-- The installment claim_due ($1 date, after ($2, $3), gateways $4, passing over $5) would take
-- first, locked, with its customer: the row to set aside when its claim is refused
SELECT i.id, i.next_attempt_on, l.customer_id
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
JOIN payment_methods pm
  ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on IS NOT NULL
  AND i.next_attempt_on <= $1
  AND (i.next_attempt_on, i.id) > ($2::date, $3::bigint)
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
  AND pm.gateway = ANY($4::text[])
  AND i.id <> ALL ($5::bigint[])
  AND NOT EXISTS (SELECT 1 FROM promises pr
                  WHERE pr.lease_id = i.lease_id AND pr.status IN ('open', 'kept')
                    AND pr.resume_on > $1::date)
ORDER BY i.next_attempt_on, i.id
LIMIT 1
FOR UPDATE OF i SKIP LOCKED;

-- record_outcomes --
-- Store many gateway answers in one statement: each attempt's outcome, after a hard decline
-- its payment method disabled, and what the answer does to its money (money_follow_v1:
-- $8 the journal kind, NULL for none yet; $9 whether it sets the plan, $10 the plan's date;
-- $11 business date, $12 source). Only attempts still pending or in doubt change, so
-- a late duplicate answer (a reconciler and a slow worker answering the same key) is
-- recorded once. Returns the attempts that changed.
WITH o AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                $7::text[], $8::text[], $9::boolean[], $10::date[])
      AS o(attempt_id, attempt_status, gateway_ref, code, message, disable_method,
           network_advice, money_kind, sets_plan, retry_on)
), changed AS (
    UPDATE charge_attempts a
    SET status = o.attempt_status,
        gateway_ref = coalesce(o.gateway_ref, a.gateway_ref),
        outcome_code = o.code,
        outcome_message = o.message,
        network_advice = coalesce(o.network_advice, a.network_advice),
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
), methods_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = o.code, updated_at = now()
    FROM changed c
    JOIN o ON o.attempt_id = c.id
    WHERE pm.id = c.payment_method_id AND o.disable_method AND pm.status = 'active'
), followed AS (
    SELECT money_follow_v1(array_agg(o.attempt_id), array_agg(o.money_kind),
                           array_agg(o.sets_plan), array_agg(o.retry_on), array_agg(o.code),
                           $11, $12) AS rows_added
    FROM changed c
    JOIN o ON o.attempt_id = c.id
    WHERE o.money_kind IS NOT NULL
)
SELECT c.id AS attempt_id FROM changed c, followed;

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
           coalesce(i.attempts, 1) AS attempt_no,
           j.installment_ids AS allocation_ids, j.amounts AS allocation_cents
    FROM picked p
    JOIN charge_attempts a ON a.id = p.id
    JOIN payment_methods pm ON pm.id = a.payment_method_id
    LEFT JOIN installments i ON i.id = a.installment_id
    LEFT JOIN payments pay ON pay.id = a.payment_id
    LEFT JOIN LATERAL (
        SELECT array_agg(m.installment_id ORDER BY m.id) AS installment_ids,
               array_agg(m.amount_cents ORDER BY m.id) AS amounts
        FROM money_movements m
        WHERE m.attempt_id = p.id AND m.kind = 'presented'
    ) j ON true
)
UPDATE charge_attempts a
SET run_id = $3, claimed_until = now() + make_interval(secs => $5), updated_at = now()
FROM details d
WHERE a.id = d.id
RETURNING a.id AS attempt_id, a.status, a.idempotency_key, a.source, a.amount_cents,
          -- Time-dependent guards (key retention, search lag) count from the last send.
          extract(epoch FROM now() - a.last_sent_at)::float8 AS age_s,
          a.as_of, a.effective_on, a.reinitiation, a.instrument_key,
          a.installment_id, a.payment_id, d.lease_id, d.due_on, d.attempt_no,
          a.payment_method_id, a.gateway, d.kind, d.token, d.brand, d.customer_id,
          d.allocation_ids, d.allocation_cents;

-- touch_sent --
-- Attempt $1 is being sent again under its key now
UPDATE charge_attempts SET last_sent_at = now(), updated_at = now() WHERE id = $1;

-- card_declines_30d --
-- Declined attempts on each card instrument in $1 with business dates in the 30 days before
-- $2 (the networks' caps count per card, not per payment_methods row)
SELECT instrument_key, count(*) AS declines
FROM charge_attempts
WHERE instrument_key = ANY ($1::text[])
  AND status = 'declined'
  AND as_of > $2::date - 30
GROUP BY instrument_key;
