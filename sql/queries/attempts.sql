-- claim_due --
-- On one node (plain PostgreSQL; Citus: claim_candidates, then claim_due_routed a shard
-- group at a time): claim up to $4 collectable installments after the keyset cursor ($2, $3) for business date
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

-- claim_candidates --
-- The claim's scan on Citus: up to $4 collectable installments after the keyset cursor ($2, $3) for business date $1,
-- unlocked, with their customers: the claim's scan (a plain read; on Citus one per shard,
-- merged in (next_attempt_on, id) order). $5 = enabled gateways, $6 = installments this pass
-- set aside (passed over); a lease with a promise to pay (open or kept) is passed over until
-- the promise's resume_on (the eligibility check refuses it too). Owed - paid - in flight -
-- cancelled is what is left to take (owed: rent + late fees - waivers). claim_due locks and
-- re-checks them a shard at a time.
SELECT i.id, i.next_attempt_on, i.customer_id
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id AND l.status = 'active'
JOIN payment_methods pm
  ON pm.customer_id = i.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on IS NOT NULL
  AND i.next_attempt_on <= $1
  AND (i.next_attempt_on, i.id) > ($2::date, $3::bigint)
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
  AND pm.gateway = ANY($5::text[])
  AND i.id <> ALL ($6::bigint[])
  AND NOT EXISTS (SELECT 1 FROM promises pr
                  WHERE pr.lease_id = i.lease_id AND pr.customer_id = i.customer_id
                    AND pr.status IN ('open', 'kept') AND pr.resume_on > $1::date)
ORDER BY i.next_attempt_on, i.id
LIMIT $4;

-- claim_due_routed --
-- claim_due on Citus (collector/db/routing.py one_node): claim candidate installments $2 of customers $3 (one shard's) for business date $1: lock
-- them (SKIP LOCKED, so concurrent passes never see each other's rows), re-check under the
-- lock what claim_candidates saw, and record one pending attempt each for what is left to
-- take under a deterministic idempotency key. $4 = enabled gateways, $5 = run id, $6 = claim
-- deadline in seconds. The caller presents the money (money.present, its own statement: a
-- function that touches distributed tables must not run inside a routed one) in the same
-- transaction, which marks the installments processing: this statement writes no money
-- state. Every distributed table carries the customers (single-shard on Citus); the
-- attempt ids come from the column's default (no nextval here: it would stop routing).
-- The MATERIALIZED CTE keeps the lookups on the primary key.
WITH picked AS MATERIALIZED (
    SELECT i.id AS installment_id, i.lease_id, i.customer_id, i.due_on, i.next_attempt_on,
           i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS amount_cents,
           i.attempts + 1 AS attempt_no,
           'collector-inst-' || i.id || '-' || (i.attempts + 1) AS idempotency_key,
           CASE WHEN i.status = 'overdue' THEN 'retry' ELSE 'batch' END AS source,
           pm.id AS payment_method_id, pm.gateway, pm.kind, pm.token, pm.brand,
           pm.instrument_key
    FROM installments i
    JOIN leases l
      ON l.id = i.lease_id AND l.customer_id = i.customer_id
     AND l.customer_id = ANY ($3::bigint[]) AND l.status = 'active'
    JOIN payment_methods pm
      ON pm.customer_id = i.customer_id AND pm.customer_id = ANY ($3::bigint[])
     AND pm.is_primary AND pm.status = 'active'
    WHERE i.id = ANY ($2::bigint[]) AND i.customer_id = ANY ($3::bigint[])
      AND i.status IN ('scheduled', 'overdue')
      AND i.next_attempt_on IS NOT NULL
      AND i.next_attempt_on <= $1
      AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
      AND pm.gateway = ANY($4::text[])
      AND NOT EXISTS (SELECT 1 FROM promises pr
                      WHERE pr.lease_id = i.lease_id AND pr.customer_id = i.customer_id
                        AND pr.customer_id = ANY ($3::bigint[])
                        AND pr.status IN ('open', 'kept') AND pr.resume_on > $1::date)
    FOR UPDATE OF i SKIP LOCKED
), attempts AS (
    INSERT INTO charge_attempts
        (installment_id, payment_method_id, amount_cents, idempotency_key, source, status,
         gateway, run_id, claimed_until, customer_id, instrument_key, as_of, effective_on,
         last_sent_at)
    SELECT installment_id, payment_method_id, amount_cents, idempotency_key,
           source, 'pending', gateway, $5, now() + make_interval(secs => $6), customer_id,
           instrument_key, $1, $1, now()
    FROM picked
    RETURNING id, installment_id, customer_id
)
SELECT a.id AS attempt_id, p.idempotency_key, p.source, p.installment_id, p.lease_id,
       p.customer_id, p.due_on, $1::date AS as_of, $1::date AS effective_on,
       false AS reinitiation, p.next_attempt_on, p.amount_cents, p.attempt_no,
       p.payment_method_id, p.gateway, p.kind, p.token, p.brand, p.instrument_key
FROM attempts a
JOIN picked p ON p.installment_id = a.installment_id AND p.customer_id = a.customer_id
ORDER BY p.next_attempt_on, p.installment_id;

-- register_keys --
-- On Citus (plain PostgreSQL: the unique index on the key alone, sql/0031): new attempts'
-- keys $1 of customers $2 will be sent to gateways: each once across all customers
-- (sql/0022). Returns the keys it registered: one already held is not, and the
-- caller refuses the whole batch (attempts.register_keys), which the claim answers by
-- claiming one row at a time and setting aside the one refused. (Not left to the unique
-- violation: on Citus this INSERT ... SELECT goes through the coordinator, and a worker's
-- violation arrives there as an internal error, without its SQLSTATE.)
INSERT INTO idempotency_keys (idempotency_key, customer_id)
SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key;

-- register_key_again --
-- On Citus (plain PostgreSQL: sql/0031): key $1 of customer $2, derived the same way on
-- every try (a prenote's), will be sent: held once; a retry after a crash registers nothing
-- new
INSERT INTO idempotency_keys (idempotency_key, customer_id)
VALUES ($1, $2)
ON CONFLICT (idempotency_key) DO NOTHING;

-- next_candidate --
-- On one node (Citus: claim_candidates, then lock_candidate): the installment claim_due ($1 date, after ($2, $3), gateways $4, passing over $5) would take
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

-- lock_candidate --
-- next_candidate on Citus, after claim_candidates: lock installment $1 of customer $2 (one shard), if no one else holds it: the row
-- claim_candidates found first, to set aside when its claim is refused
SELECT i.id, i.next_attempt_on, i.customer_id
FROM installments i
WHERE i.id = $1 AND i.customer_id = $2
FOR UPDATE SKIP LOCKED;

-- record_outcomes --
-- On one node (Citus: record_outcomes_routed): store many gateway answers in one statement: each attempt's outcome, after a hard decline
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

-- record_outcomes_routed --
-- record_outcomes on Citus: store many gateway answers of customers $8 (one shard's on Citus) in one statement: each
-- attempt's outcome, and after a hard decline its payment method disabled (method_disabled:
-- by this statement; the caller writes its outbox event). Only attempts
-- still pending or in doubt change, so a late duplicate answer (a reconciler and a slow
-- worker answering the same key) is recorded once. Returns the attempts that changed; the
-- caller applies their money (money.follow) in the same transaction, its own statement (a
-- function that touches distributed tables must not run inside a routed one).
WITH o AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                $7::text[])
      AS o(attempt_id, attempt_status, gateway_ref, code, message, disable_method,
           network_advice)
), changed AS (
    UPDATE charge_attempts a
    SET status = o.attempt_status,
        gateway_ref = coalesce(o.gateway_ref, a.gateway_ref),
        outcome_code = o.code,
        outcome_message = o.message,
        network_advice = coalesce(o.network_advice, a.network_advice),
        updated_at = now(),
        -- now() stays outside the CASEs (Citus refuses non-immutable functions inside CASE
        -- or COALESCE of a distributed statement): now() + NULL is NULL.
        resolved_at = now() + CASE WHEN o.attempt_status = 'in_doubt' THEN NULL::interval
                                   ELSE interval '0' END,
        -- An in-doubt attempt is due for a lookup at once; a resolved one is nobody's claim.
        claimed_until = now() + CASE WHEN o.attempt_status = 'in_doubt' THEN interval '0' END
    FROM o
    -- The primary key, not the partial index of unresolved attempts: that index holds a dead
    -- entry for every attempt resolved since the last VACUUM, thousands during a large pass.
    WHERE a.id = ANY ($1::bigint[]) AND a.customer_id = ANY ($8::bigint[])
      AND a.id = o.attempt_id
      AND a.status IN ('pending', 'in_doubt')
    RETURNING a.id, a.customer_id, a.payment_method_id
), methods_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = o.code, updated_at = now()
    FROM changed c
    JOIN o ON o.attempt_id = c.id
    WHERE pm.id = c.payment_method_id AND pm.customer_id = c.customer_id
      AND pm.customer_id = ANY ($8::bigint[])
      AND o.disable_method AND pm.status = 'active'
    RETURNING pm.id
)
SELECT c.id AS attempt_id, c.customer_id, c.payment_method_id,
       c.payment_method_id IN (SELECT d.id FROM methods_disabled d) AS method_disabled
FROM changed c;

-- live_runs --
-- The passes alive now, with the database's clock: run ids whose liveness lock (namespace $1,
-- pg_advisory_lock($1, run_id)) is held in this database. Its own statement, on the node the
-- engine is connected to (where every pass's session lock is): pg_locks inside a routed
-- statement would be read on a worker, where every live pass looks dead (Citus).
SELECT coalesce(array_agg(l.objid::bigint ORDER BY l.objid), '{}'::bigint[]) AS run_ids,
       now() AS now
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $1::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

-- unresolved_candidates --
-- Up to $3 attempts with id above $1 that need reconciliation, unlocked, with their
-- customers (a plain read, on Citus one per shard): pending ones whose pass is gone (its run
-- is not among the live ones $4) or whose claim deadline passed (the backstop, and the only
-- test for manual payments, which belong to no pass), and in-doubt ones due for a lookup.
-- $2 = enabled gateways. claim_unresolved locks and re-checks them a shard at a time.
SELECT a.id, a.customer_id
FROM charge_attempts a
WHERE a.status IN ('pending', 'in_doubt')
  AND a.id > $1
  AND a.gateway = ANY($2::text[])
  AND (a.claimed_until IS NULL
       OR a.claimed_until < now()
       OR (a.run_id IS NOT NULL AND a.run_id <> ALL ($4::bigint[])))
ORDER BY a.id
LIMIT $3;

-- claim_unresolved --
-- Take over, for run $3, the candidate attempts $1 of customers $2 (one shard's) that still
-- need reconciliation (the test of unresolved_candidates again, under the row lock; $4 = the
-- live runs, $5 = claim deadline in seconds, $6 = the database's clock when the live runs
-- were read). Every distributed table carries the customers (single-shard on Citus); no
-- now() in RETURNING (Citus refuses it there): ages count from $6.
WITH picked AS MATERIALIZED (
    SELECT a.id, a.customer_id
    FROM charge_attempts a
    WHERE a.id = ANY ($1::bigint[]) AND a.customer_id = ANY ($2::bigint[])
      AND a.status IN ('pending', 'in_doubt')
      AND (a.claimed_until IS NULL
           OR a.claimed_until < now()
           OR (a.run_id IS NOT NULL AND a.run_id <> ALL ($4::bigint[])))
    ORDER BY a.id
    FOR UPDATE OF a SKIP LOCKED
), details AS (
    SELECT p.id, pm.kind, pm.token, pm.brand, pm.customer_id,
           coalesce(i.lease_id, pay.lease_id) AS lease_id, i.due_on,
           coalesce(i.attempts, 1) AS attempt_no,
           j.installment_ids AS allocation_ids, j.amounts AS allocation_cents
    FROM picked p
    JOIN charge_attempts a
      ON a.id = p.id AND a.customer_id = p.customer_id AND a.customer_id = ANY ($2::bigint[])
    JOIN payment_methods pm
      ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
     AND pm.customer_id = ANY ($2::bigint[])
    LEFT JOIN installments i
      ON i.id = a.installment_id AND i.customer_id = a.customer_id
     AND i.customer_id = ANY ($2::bigint[])
    LEFT JOIN payments pay
      ON pay.id = a.payment_id AND pay.customer_id = a.customer_id
     AND pay.customer_id = ANY ($2::bigint[])
    LEFT JOIN LATERAL (
        SELECT array_agg(m.installment_id ORDER BY m.id) AS installment_ids,
               array_agg(m.amount_cents ORDER BY m.id) AS amounts
        FROM money_movements m
        WHERE m.attempt_id = p.id AND m.customer_id = p.customer_id
          AND m.customer_id = ANY ($2::bigint[]) AND m.kind = 'presented'
    ) j ON true
)
UPDATE charge_attempts a
SET run_id = $3, claimed_until = $6::timestamptz + make_interval(secs => $5),
    updated_at = $6::timestamptz
FROM details d
WHERE a.id = d.id AND a.customer_id = d.customer_id AND a.customer_id = ANY ($2::bigint[])
RETURNING a.id AS attempt_id, a.status, a.idempotency_key, a.source, a.amount_cents,
          -- Time-dependent guards (key retention, search lag) count from the last send.
          extract(epoch FROM $6::timestamptz - a.last_sent_at)::float8 AS age_s,
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
