-- Every statement names the lease's customer (resolved first, collector/db/portal.py
-- LeaseOwners) on every distributed table it reads or writes: on Citus each routes to the
-- customer's shard, where its row locks are taken.

-- lock_lease --
-- Lock lease $1 of customer $2 ($2 NULL: whoever's it is; plain PostgreSQL only, see
-- collector/db/payments.py), and the customer, for a manual payment: a lease's manual payments run one at a
-- time, and a customer's start one at a time across leases, so the rate limit counts each.
-- Lease first, then customer (the order every manual payment takes). NO KEY UPDATE on the
-- customer: inserts referencing it take KEY SHARE and need not wait. The reads that depend on
-- these locks come in the next statement, whose snapshot is taken after they are held.
SELECT l.id, l.customer_id, l.status
FROM leases l
JOIN customers c ON c.id = l.customer_id
-- With $2 given, its value is folded into the plan (Citus plans a statement it cannot route
-- without its parameters with them), so it routes to the customer's shard.
WHERE l.id = $1 AND ($2::bigint IS NULL OR (l.customer_id = $2 AND c.id = $2))
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
                 JOIN installments i
                     ON i.id = pa.installment_id AND i.customer_id = pa.customer_id
                 WHERE pa.customer_id = $4 AND i.customer_id = $4 AND pa.payment_id = p.id
                 ORDER BY i.due_on, i.id) AS allocation_ids,
           ARRAY(SELECT pa.amount_cents FROM payment_allocations pa
                 JOIN installments i
                     ON i.id = pa.installment_id AND i.customer_id = pa.customer_id
                 WHERE pa.customer_id = $4 AND i.customer_id = $4 AND pa.payment_id = p.id
                 ORDER BY i.due_on, i.id) AS allocation_cents
    FROM payments p
    LEFT JOIN charge_attempts a
        ON a.payment_id = p.id AND a.customer_id = p.customer_id AND a.customer_id = $4
    WHERE p.customer_id = $4 AND p.lease_id = $1 AND p.request_key = $2
), unpaid AS (
    SELECT id, due_on,
           owed_cents - paid_cents - in_flight_cents - cancelled_cents AS collectable_cents,
           -- Within an installment a payment pays the rent first, then the fee.
           greatest(amount_cents - paid_cents - in_flight_cents - cancelled_cents, 0)
               AS rent_cents,
           status
    FROM installments
    WHERE customer_id = $4 AND lease_id = $1 AND due_on < $3
      AND paid_cents + cancelled_cents < owed_cents
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
           FROM payments p
           WHERE p.customer_id = $4 AND p.created_at > now() - make_interval(secs => $7)
           ORDER BY p.created_at DESC
           OFFSET $6 - 1
           LIMIT 1
       ) END AS wait_s
FROM (SELECT) AS one
LEFT JOIN earlier e ON true
LEFT JOIN method m ON true;

-- insert_payment --
-- Record a pending manual payment, its allocations to installments and its pending charge
-- attempt (key derived from the payment id, deadline $9 seconds away), in one call
-- (payment_insert_v1, sql/0023_route_portal.sql; each of its statements names customer $2).
-- Allocations come as parallel arrays ($10 ids, $11 amounts); their money is presented in
-- the journal (money_present_v1), which marks what it covers as in flight. $12: a payoff.
SELECT payment_id, created_at, attempt_id, idempotency_key
FROM payment_insert_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::bigint[], $11::bigint[], $12);

-- record_outcome --
-- Store the answer to manual payment $1's attempt $2: $3 attempt status, $4 payment status,
-- $5 gateway ref, $6 code, $7 message, $8 disable the method, $9/$10 the first answer,
-- replayed for a repeat of the Idempotency-Key (NULL: keep the one stored, as when
-- reconciliation resolves an attempt the portal was already answered about), $11 network
-- advice, $12-$14 what it does to the money (journal kind, business date, source), $15 the
-- payment's customer. Only an attempt still pending or in doubt changes; returns nothing
-- otherwise. One call (payment_record_outcome_v1, sql/0023_route_portal.sql).
SELECT id
FROM payment_record_outcome_v1($15, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                               $14);

-- refuse --
-- Manual payment $1 (customer $4) was refused by the eligibility check before any charge:
-- answer $2/$3
UPDATE payments
SET status = 'refused', response_status = $2, response_body = $3, updated_at = now()
WHERE customer_id = $4 AND id = $1;

-- allocations --
-- How manual payment $1 (customer $2) was allocated, oldest installment first
SELECT pa.installment_id, pa.amount_cents
FROM payment_allocations pa
JOIN installments i ON i.id = pa.installment_id AND i.customer_id = pa.customer_id
WHERE pa.customer_id = $2 AND i.customer_id = $2 AND pa.payment_id = $1
ORDER BY i.due_on, i.id;

-- save_response --
-- Keep the answer given for manual payment $1 (customer $4), replayed for a repeat of its
-- Idempotency-Key
UPDATE payments SET response_status = $2, response_body = $3, updated_at = now()
WHERE customer_id = $4 AND id = $1 AND response_status IS NULL;

-- lock_open_installments --
-- For a payoff of lease $1 of customer $2 (under lock_lease's locks): lock every installment of the lease
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
    WHERE customer_id = $2 AND lease_id = $1 AND status NOT IN ('paid', 'cancelled')
    ORDER BY due_on, id
    FOR UPDATE
)
SELECT coalesce(array_agg(o.id ORDER BY o.due_on, o.id), '{}') AS ids,
       coalesce(array_agg(o.collectable_cents ORDER BY o.due_on, o.id), '{}') AS cents,
       coalesce(array_agg(o.rent_cents ORDER BY o.due_on, o.id), '{}') AS rent_cents,
       coalesce(bool_or(o.in_flight_cents > 0), false) AS any_in_flight
FROM open o;

-- payoff_quote --
-- What it takes to own the goods of lease $1 (customer $4) on business date $2, holding at
-- most $3 days (lease_payoff_v2, the one computation of a payoff, late fees included); no
-- row when the customer has no such lease
SELECT q.lease_id, q.rule, q.amount_cents, q.components, q.remaining_rent_cents,
       q.rent_paid_cents, q.in_flight_cents, q.payable, q.window_ends_on, q.next_due_on,
       q.valid_until, q.late_fees_cents
FROM lease_payoff_v2($4, $1, $2, $3) q;

-- cancel_remaining --
-- Payoff payment $1 (attempt $2) of lease $3 of customer $6: cancel what is left of each
-- installment after its own money was presented, on business date $4, source $5
-- (money_cancel_v2)
SELECT money_cancel_v2($6, $1, $2, $3, $4, $5);

