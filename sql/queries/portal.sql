-- The customer portal's reads and its payment-method changes. A lease's overdue and pending
-- amounts and its next due installment come from lease_balances_v1 (sql/0023_route_portal.sql),
-- where they are defined once; "today" is the business date.
-- Every statement names the customer on every distributed table it reads or writes (on Citus
-- it routes to the customer's shard); a request that names a lease resolves its customer
-- first (lease_customer).

-- customer_exists --
-- Whether customer $1 exists
SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1);

-- lease_customer --
-- The customer of lease $1; no row when there is no such lease
-- A plain read by id: on Citus it asks every shard (a lease id is not the distribution key),
-- once per lease and process (collector/db/portal.py keeps the answer: a lease never changes
-- customer).
SELECT customer_id FROM leases WHERE id = $1;

-- customer_leases --
-- One line per lease of customer $1 with its overdue amount and next due installment on date $2
SELECT id, agreement_ref, store, status, overdue_cents, next_due_on, next_due_cents
FROM portal_leases_v1($1, NULL, $2);

-- lease_detail --
-- Lease $2 of customer $1 with its amounts on date $3 and the customer's primary method
-- (display fields only), and its days past due: those of its oldest installment with money
-- neither paid nor in flight due before $3 (0: none; the definition of
-- sql/queries/delinquency.sql); no row when the customer has no such lease
SELECT id, customer_id, agreement_ref, store, status, order_details, state, overdue_cents,
       pending_cents, next_due_on, next_due_cents, fees_owed_cents, days_past_due, method_id,
       method_kind, method_gateway, method_brand, method_bank_name, method_last4, method_status
FROM portal_leases_v1($1, $2, $3);

-- lease_schedule --
-- Every installment of lease $1 (customer $4) in seq order, with the status the portal shows on date $2, its
-- rent and late fee (net of a waiver) and what of each is paid, and its fee's id (to waive it)
-- An unsettled bank debit is 'pending', never paid; an unpaid one past its due date is 'overdue'
-- even before the pass that will try to collect it (a missed cron day) has run.
-- An overdue installment with no automatic attempt planned says why (collection_stopped: the
-- reason on its latest plan line, e.g. two_strike_stop, card_retry_cap); one the eligibility
-- check held back until a later date (its latest plan line's reason one of $3, e.g.
-- prenote_pending, debit_notice_required) says why and until when (collection_held,
-- held_until). One a promise to pay (open, or kept before its date) holds back says so
-- (collection_paused: promise_open) and when collection resumes.
SELECT i.id AS installment_id, i.seq, i.due_on, i.amount_cents, i.paid_cents,
       -- Within an installment a payment pays the rent first, then the fee.
       least(i.paid_cents, i.amount_cents) AS rent_paid_cents,
       i.fee_cents - i.fee_waived_cents AS fee_cents,
       i.paid_cents - least(i.paid_cents, i.amount_cents) AS fee_paid_cents,
       i.fee_waived_cents, fee.id AS fee_id, i.owed_cents,
       CASE
           WHEN i.status = 'pending_settlement' THEN 'pending'
           WHEN i.status IN ('scheduled', 'overdue') AND i.due_on < $2
                AND i.paid_cents + i.cancelled_cents < i.owed_cents THEN 'overdue'
           ELSE i.status
       END AS status,
       CASE WHEN i.status = 'overdue' AND i.next_attempt_on IS NULL THEN plan.reason END
           AS collection_stopped,
       CASE WHEN i.next_attempt_on IS NOT NULL AND plan.reason = ANY ($3::text[])
            THEN plan.reason END AS collection_held,
       CASE WHEN i.next_attempt_on IS NOT NULL AND plan.reason = ANY ($3::text[])
            THEN i.next_attempt_on END AS held_until,
       CASE WHEN pr.resume_on > $2 THEN 'promise_open' END AS collection_paused,
       CASE WHEN pr.resume_on > $2 THEN pr.resume_on END AS collection_resumes_on
FROM installments i
LEFT JOIN LATERAL (
    SELECT max(o.resume_on) AS resume_on FROM promises o
    WHERE o.customer_id = $4 AND o.lease_id = i.lease_id AND o.status IN ('open', 'kept')
) pr ON i.status IN ('scheduled', 'overdue') AND i.next_attempt_on IS NOT NULL
    AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
LEFT JOIN LATERAL (
    SELECT m.reason FROM money_movements m
    WHERE m.customer_id = $4 AND m.installment_id = i.id AND m.sets_plan
    ORDER BY m.id DESC LIMIT 1
) plan ON i.status IN ('scheduled', 'overdue')
LEFT JOIN money_movements fee
    ON fee.customer_id = $4 AND fee.installment_id = i.id AND fee.kind = 'fee_assessed'
WHERE i.customer_id = $4 AND i.lease_id = $1
ORDER BY i.seq;

-- customer_methods --
-- The payment methods of customer $1 (display fields, never the token), primary first
SELECT id, kind, gateway, brand, bank_name, last4, status, is_primary, exp_month, exp_year
FROM payment_methods
WHERE customer_id = $1
ORDER BY is_primary DESC, id;

-- lock_customer --
-- Lock customer $1 for a change of payment methods; no row when the customer does not exist
-- Two changes of the same customer's primary method queue here, even for a customer without any
-- method yet (whose method rows give nothing to lock). NO KEY UPDATE, not UPDATE: inserts that
-- reference the customer (leases, payments) take KEY SHARE and need not wait.
SELECT id FROM customers WHERE id = $1 FOR NO KEY UPDATE;

-- lock_customer_methods --
-- Lock every payment method of customer $1 in id order and return their display fields
-- One order everywhere, so two lockers cannot deadlock. NO KEY UPDATE conflicts with itself, so
-- primary changes still serialize, but not with the KEY SHARE lock that inserting a charge
-- attempt or a payment referencing a method takes: a pass claiming work is never held up.
SELECT id, kind, gateway, brand, bank_name, last4, status, is_primary, exp_month, exp_year
FROM payment_methods
WHERE customer_id = $1
ORDER BY id
FOR NO KEY UPDATE;

-- insert_method --
-- Register a gateway token for customer $1, not primary, with the gateway's fingerprint $8 of
-- the card or account (NULL: none; the token names it) and a card's expiry $9/$10 (display
-- only); returns its display fields
INSERT INTO payment_methods
    (customer_id, kind, gateway, token, brand, bank_name, last4, fingerprint, exp_month,
     exp_year)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id, kind, gateway, brand, bank_name, last4, status, is_primary, exp_month, exp_year;

-- clear_primary --
-- Customer $1 has no primary method any more
-- Runs before set_primary: the partial unique index payment_methods_one_primary (one primary
-- per customer) is not deferrable and is checked row by row, so the old one must go first.
UPDATE payment_methods
SET is_primary = false, updated_at = now()
WHERE customer_id = $1 AND is_primary;

-- set_primary --
-- Make active method $2 of customer $1 the primary one; returns its id, or no row
UPDATE payment_methods
SET is_primary = true, updated_at = now()
WHERE id = $2 AND customer_id = $1 AND status = 'active'
RETURNING id;

-- authorize --
-- Record that customer $1 authorized method $2 ($3: 'added' or 'primary') now: the
-- two-strike stop counts a lease's failures on the method's card or account since the latest
-- authorization (history, never overwritten; `collector audit` reads it)
INSERT INTO method_authorizations (customer_id, payment_method_id, instrument_key, source)
SELECT customer_id, id, instrument_key, $3
FROM payment_methods
WHERE id = $2 AND customer_id = $1
RETURNING id;

-- waiting_for_authorization --
-- Customer $1's overdue installments on active leases whose automatic collection the
-- two-strike stop ended (their latest plan line's reason): choosing the same method again
-- authorizes it again, and they deserve a try
SELECT i.id
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id
CROSS JOIN LATERAL (
    SELECT m.reason FROM money_movements m
    WHERE m.customer_id = $1 AND m.installment_id = i.id AND m.sets_plan
    ORDER BY m.id DESC LIMIT 1
) plan
WHERE i.customer_id = $1 AND l.customer_id = $1 AND l.status = 'active'
  AND i.status = 'overdue' AND i.next_attempt_on IS NULL
  AND plan.reason = 'two_strike_stop'
ORDER BY i.due_on, i.id;

-- waiting_for_method --
-- Customer $1's overdue installments on active leases with no automatic attempt planned (a
-- hard decline, exhausted retries, a refused presentment): a new method deserves a try
SELECT i.id
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id
WHERE i.customer_id = $1 AND l.customer_id = $1 AND l.status = 'active'
  AND i.status = 'overdue' AND i.next_attempt_on IS NULL
ORDER BY i.due_on, i.id;

-- customer_next_due --
-- The earliest due date on or after $2 of a scheduled installment of customer $1's active leases
SELECT min(i.due_on)
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id
WHERE i.customer_id = $1 AND l.customer_id = $1 AND l.status = 'active'
  AND i.status = 'scheduled' AND i.due_on >= $2;
