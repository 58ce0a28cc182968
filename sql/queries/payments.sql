-- lock_lease --
-- Lock lease $1 and its customer for a manual payment: a lease's manual payments run one at a
-- time, and a customer's start one at a time across leases, so the rate limit counts each.
-- Lease first, then customer (the order every manual payment takes). NO KEY UPDATE on the
-- customer: inserts referencing it take KEY SHARE and need not wait. The reads that depend on
-- these locks come in the next statement, whose snapshot is taken after they are held.
SELECT l.id, l.customer_id, l.status
FROM leases l
JOIN customers c ON c.id = l.customer_id
WHERE l.id = $1
FOR UPDATE OF l FOR NO KEY UPDATE OF c;

-- claim_view --
-- Under the locks of lock_lease, in one round trip, what a manual payment of lease $1 needs:
-- the payment made earlier under the portal's Idempotency-Key $2 (with where it stands now:
-- its answer may have been resolved since the first reply); the lease's unpaid installments
-- due before $3, locked oldest first (the one lock order of the engine: due date, then id),
-- with what is left to take (owed - paid - in flight - cancelled) and of it the rent; customer
-- $4's payment method $5 when
-- it is theirs and active (with $5 NULL, the primary); and, when $6 is not NULL, the seconds
-- until the customer may start another manual payment ($6 in any $7 seconds: until the $6-th
-- most recent one of the window leaves it; NULL while under the limit).
WITH earlier AS (
    SELECT p.id, p.request_hash, p.response_status, p.response_body, p.status,
           p.amount_cents, p.payment_method_id, p.created_at, p.payoff,
           a.status AS attempt_status,
           a.outcome_code,
           ARRAY(SELECT pa.installment_id FROM payment_allocations pa
                 JOIN installments i ON i.id = pa.installment_id
                 WHERE pa.payment_id = p.id ORDER BY i.due_on, i.id) AS allocation_ids,
           ARRAY(SELECT pa.amount_cents FROM payment_allocations pa
                 JOIN installments i ON i.id = pa.installment_id
                 WHERE pa.payment_id = p.id ORDER BY i.due_on, i.id) AS allocation_cents
    FROM payments p
    LEFT JOIN charge_attempts a ON a.payment_id = p.id
    WHERE p.lease_id = $1 AND p.request_key = $2
), unpaid AS (
    SELECT id, due_on,
           owed_cents - paid_cents - in_flight_cents - cancelled_cents AS collectable_cents,
           -- Within an installment a payment pays the rent first, then the fee.
           greatest(amount_cents - paid_cents - in_flight_cents - cancelled_cents, 0)
               AS rent_cents,
           status
    FROM installments
    WHERE lease_id = $1 AND due_on < $3 AND paid_cents + cancelled_cents < owed_cents
      AND status IN ('scheduled', 'overdue', 'processing')
    ORDER BY due_on, id
    FOR UPDATE
), method AS (
    SELECT id, kind, gateway, token, brand, instrument_key
    FROM payment_methods
    WHERE customer_id = $4 AND status = 'active'
      AND (CASE WHEN $5::bigint IS NULL THEN is_primary ELSE id = $5::bigint END)
)
SELECT e.id AS earlier_id, e.request_hash, e.response_status, e.response_body,
       e.status AS earlier_status, e.amount_cents AS earlier_amount_cents,
       e.payment_method_id AS earlier_method_id, e.created_at AS earlier_created_at,
       e.attempt_status, e.outcome_code, e.allocation_ids, e.allocation_cents,
       e.payoff AS earlier_payoff,
       (SELECT coalesce(array_agg(u.id ORDER BY u.due_on, u.id), '{}') FROM unpaid u)
           AS unpaid_ids,
       (SELECT coalesce(array_agg(u.collectable_cents ORDER BY u.due_on, u.id), '{}')
        FROM unpaid u) AS unpaid_cents,
       (SELECT coalesce(array_agg(u.rent_cents ORDER BY u.due_on, u.id), '{}')
        FROM unpaid u) AS unpaid_rent_cents,
       (SELECT coalesce(bool_or(u.status = 'processing'), false) FROM unpaid u)
           AS any_processing,
       m.id AS method_id, m.kind, m.gateway, m.token, m.brand, m.instrument_key,
       CASE WHEN $6::integer IS NOT NULL THEN (
           SELECT extract(epoch FROM p.created_at + make_interval(secs => $7) - now())::float8
           FROM leases l
           JOIN payments p ON p.lease_id = l.id
           WHERE l.customer_id = $4 AND p.created_at > now() - make_interval(secs => $7)
           ORDER BY p.created_at DESC
           OFFSET $6 - 1
           LIMIT 1
       ) END AS wait_s
FROM (SELECT) AS one
LEFT JOIN earlier e ON true
LEFT JOIN method m ON true;

-- insert_payment --
-- Record a pending manual payment, its allocations to installments and its pending charge
-- attempt (key derived from the payment id, deadline $9 seconds away), in one statement.
-- Allocations come as parallel arrays ($10 ids, $11 amounts); their money is presented in
-- the journal (money_present_v1), which marks what it covers as in flight. $12: a payoff.
WITH payment AS (
    INSERT INTO payments
        (lease_id, customer_id, payment_method_id, amount_cents, request_key, request_hash,
         as_of, payoff)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $12)
    RETURNING id, created_at
), allocation AS (
    SELECT a.installment_id, a.amount_cents, i.status AS prev_status,
           i.next_attempt_on AS prev_next_attempt_on
    FROM unnest($10::bigint[], $11::bigint[]) AS a(installment_id, amount_cents)
    JOIN installments i ON i.id = a.installment_id
), allocated AS (
    INSERT INTO payment_allocations
        (payment_id, installment_id, customer_id, amount_cents, prev_status,
         prev_next_attempt_on)
    SELECT p.id, a.installment_id, $2, a.amount_cents, a.prev_status, a.prev_next_attempt_on
    FROM payment p, allocation a
), attempt AS (
    INSERT INTO charge_attempts
        (payment_id, payment_method_id, amount_cents, idempotency_key, source, status, gateway,
         claimed_until, customer_id, instrument_key, as_of, effective_on, last_sent_at)
    SELECT p.id, $3, $4, 'collector-pay-' || p.id, 'manual', 'pending', $8,
           now() + make_interval(secs => $9), $2, pm.instrument_key, $7, $7, now()
    FROM payment p
    JOIN payment_methods pm ON pm.id = $3
    RETURNING id, idempotency_key
), presented AS (
    -- Each allocation's money reserved in the journal, in this statement.
    SELECT money_present_v1(
               array_agg(t.id), array_agg(a.installment_id), array_agg(a.amount_cents),
               array_agg($2::bigint), array_agg(p.id), $7, array_agg('manual'::text))
               AS rows_added
    FROM payment p, attempt t, unnest($10::bigint[], $11::bigint[]) AS a(installment_id, amount_cents)
)
SELECT p.id AS payment_id, p.created_at, t.id AS attempt_id, t.idempotency_key
FROM payment p, attempt t, presented;

-- record_outcome --
-- Store the answer to manual payment $1's attempt $2: $3 attempt status, $4 payment status,
-- $5 gateway ref, $6 code, $7 message, $8 disable the method, $9/$10 the first answer,
-- replayed for a repeat of the Idempotency-Key (NULL: keep the one stored, as when
-- reconciliation resolves an attempt the portal was already answered about), $11 network
-- advice, $12-$14 what it does to the money (journal kind, business date, source). Only an
-- attempt still pending or in doubt changes; returns nothing otherwise.
WITH changed AS (
    UPDATE charge_attempts a
    SET status = $3,
        gateway_ref = coalesce($5, a.gateway_ref),
        outcome_code = $6,
        outcome_message = $7,
        network_advice = coalesce($11, a.network_advice),
        updated_at = now(),
        resolved_at = CASE WHEN $3 = 'in_doubt' THEN NULL ELSE now() END,
        claimed_until = CASE WHEN $3 = 'in_doubt' THEN now() END
    WHERE a.id = $2 AND a.payment_id = $1 AND a.status IN ('pending', 'in_doubt')
    RETURNING a.id, a.payment_method_id
), payment AS (
    UPDATE payments p
    SET status = $4, updated_at = now(),
        response_status = coalesce($9, p.response_status),
        response_body = coalesce($10, p.response_body)
    FROM changed
    WHERE p.id = $1
    RETURNING p.id
), method_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = $6, updated_at = now()
    FROM changed c
    WHERE $8 AND pm.id = c.payment_method_id AND pm.status = 'active'
), followed AS (
    -- What the answer does to the money ($12 the journal kind, NULL for none yet), applied
    -- in this statement; a manual payment's ending sets no plan.
    SELECT money_follow_v1(array_agg(c.id), array_agg($12::text), array_agg(false),
                           array_agg(NULL::date), array_agg($6::text), $13, $14) AS rows_added
    FROM changed c
    WHERE $12::text IS NOT NULL
)
SELECT id FROM changed, followed;

-- refuse --
-- Manual payment $1 was refused by the eligibility check before any charge: answer $2/$3
UPDATE payments
SET status = 'refused', response_status = $2, response_body = $3, updated_at = now()
WHERE id = $1;

-- allocations --
-- How manual payment $1 was allocated, oldest installment first
SELECT pa.installment_id, pa.amount_cents
FROM payment_allocations pa
JOIN installments i ON i.id = pa.installment_id
WHERE pa.payment_id = $1
ORDER BY i.due_on, i.id;

-- save_response --
-- Keep the answer given for manual payment $1, replayed for a repeat of its Idempotency-Key
UPDATE payments SET response_status = $2, response_body = $3, updated_at = now()
WHERE id = $1 AND response_status IS NULL;

-- lock_open_installments --
-- For a payoff of lease $1 (under lock_lease's locks): lock every installment of the lease
-- with money not yet paid, oldest first (the one lock order: due date, then id), with what is
-- left to take of each (owed - paid - in flight - cancelled; owed: rent + late fees -
-- waivers) and of it the rent, and whether any money of the lease is in flight
WITH open AS (
    SELECT id, due_on, owed_cents - paid_cents - in_flight_cents - cancelled_cents
               AS collectable_cents,
           -- Within an installment a payment pays the rent first, then the fee.
           greatest(amount_cents - paid_cents - in_flight_cents - cancelled_cents, 0)
               AS rent_cents,
           in_flight_cents
    FROM installments
    WHERE lease_id = $1 AND status NOT IN ('paid', 'cancelled')
    ORDER BY due_on, id
    FOR UPDATE
)
SELECT coalesce(array_agg(o.id ORDER BY o.due_on, o.id), '{}') AS ids,
       coalesce(array_agg(o.collectable_cents ORDER BY o.due_on, o.id), '{}') AS cents,
       coalesce(array_agg(o.rent_cents ORDER BY o.due_on, o.id), '{}') AS rent_cents,
       coalesce(bool_or(o.in_flight_cents > 0), false) AS any_in_flight
FROM open o;

-- payoff_quote --
-- What it takes to own the goods of lease $1 on business date $2, holding at most $3 days
-- (lease_payoff_v1, the one computation of a payoff, late fees included); no row when there
-- is no such lease
SELECT q.lease_id, q.rule, q.amount_cents, q.components, q.remaining_rent_cents,
       q.rent_paid_cents, q.in_flight_cents, q.payable, q.window_ends_on, q.next_due_on,
       q.valid_until, q.late_fees_cents
FROM lease_payoff_v1($1, $2, $3) q;

-- cancel_remaining --
-- Payoff payment $1 (attempt $2) of lease $3: cancel what is left of each installment after
-- its own money was presented, on business date $4, source $5 (money_cancel_v1)
SELECT money_cancel_v1($1, $2, $3, $4, $5);

