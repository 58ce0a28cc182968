-- processing_attempts --
-- Up to $3 bank debits still in flight with id above $1, through the gateways $2, with what
-- settling them needs
SELECT a.id AS attempt_id, a.idempotency_key, a.gateway, a.installment_id, a.payment_id,
       a.amount_cents, a.payment_method_id, a.created_at,
       extract(epoch FROM now() - a.created_at)::float8 AS age_s,
       (SELECT count(*) FROM charge_returns r
        JOIN charge_attempts b ON b.id = r.attempt_id
        WHERE b.installment_id = a.installment_id AND r.category = 'nsf') AS nsf_returns,
       (SELECT min(b.created_at) FROM charge_attempts b
        WHERE b.installment_id = a.installment_id) AS first_attempt_at
FROM charge_attempts a
WHERE a.status = 'processing' AND a.id > $1 AND a.gateway = ANY ($2::text[])
ORDER BY a.id
LIMIT $3;

-- attempt_by_key --
-- The attempt made under idempotency key $1, with what settling or returning it needs
SELECT a.id AS attempt_id, a.idempotency_key, a.gateway, a.installment_id, a.payment_id,
       a.amount_cents, a.payment_method_id, a.created_at, a.status,
       (SELECT count(*) FROM charge_returns r
        JOIN charge_attempts b ON b.id = r.attempt_id
        WHERE b.installment_id = a.installment_id AND r.category = 'nsf') AS nsf_returns,
       (SELECT min(b.created_at) FROM charge_attempts b
        WHERE b.installment_id = a.installment_id) AS first_attempt_at
FROM charge_attempts a
WHERE a.idempotency_key = $1;

-- settle_installments --
-- Debits $1 settled: each attempt succeeds and its installment is paid, in one statement.
-- Only attempts still processing change.
WITH settled AS (
    UPDATE charge_attempts a
    SET status = 'succeeded', resolved_at = now(), updated_at = now()
    WHERE a.id = ANY ($1::bigint[]) AND a.status = 'processing' AND a.installment_id IS NOT NULL
    RETURNING a.id, a.installment_id, a.amount_cents
)
UPDATE installments i
SET paid_cents = i.paid_cents + s.amount_cents,
    status = CASE WHEN i.paid_cents + s.amount_cents = i.amount_cents THEN 'paid' ELSE 'overdue' END,
    updated_at = now()
FROM settled s
WHERE i.id = s.installment_id
RETURNING s.id AS attempt_id, s.amount_cents;

-- settle_payment --
-- Manual payment $1's debit (attempt $2) settled: the payment succeeds and its allocations are
-- paid onto their installments
WITH settled AS (
    UPDATE charge_attempts a
    SET status = 'succeeded', resolved_at = now(), updated_at = now()
    WHERE a.id = $2 AND a.payment_id = $1 AND a.status = 'processing'
    RETURNING a.id
), payment AS (
    UPDATE payments p SET status = 'succeeded', updated_at = now()
    FROM settled WHERE p.id = $1
)
UPDATE installments i
SET paid_cents = i.paid_cents + pa.amount_cents,
    status = CASE WHEN i.paid_cents + pa.amount_cents = i.amount_cents THEN 'paid'
                  ELSE pa.prev_status END,
    next_attempt_on = CASE WHEN i.paid_cents + pa.amount_cents = i.amount_cents THEN NULL
                           ELSE coalesce(pa.prev_next_attempt_on,
                                         CASE WHEN pa.prev_status = 'scheduled' THEN i.due_on END)
                      END,
    updated_at = now()
FROM payment_allocations pa, settled
WHERE pa.payment_id = $1 AND i.id = pa.installment_id
RETURNING i.id;

-- record_return --
-- Attempt $1 was returned with code $2 (category $3): record the return once (a replay changes
-- nothing), mark the attempt returned, reverse what was counted paid, put its installment (or
-- its payment's installments) back to overdue with retry date $5, and disable the method
-- when $6. $4 = where the return came from, $7 = business date. Returns the attempt id when
-- this call applied it.
WITH attempt AS (
    SELECT a.id, a.status, a.installment_id, a.payment_id, a.amount_cents, a.payment_method_id
    FROM charge_attempts a
    WHERE a.id = $1 AND a.status IN ('processing', 'succeeded')
    FOR UPDATE
), recorded AS (
    INSERT INTO charge_returns (attempt_id, return_code, category, amount_cents, reversed_paid,
                                source, as_of)
    SELECT a.id, $2, $3, a.amount_cents, a.status = 'succeeded', $4, $7
    FROM attempt a
    ON CONFLICT (attempt_id) DO NOTHING
    RETURNING attempt_id, reversed_paid
), returned AS (
    UPDATE charge_attempts a
    SET status = 'returned', outcome_code = $2, updated_at = now(), resolved_at = now()
    FROM recorded r
    WHERE a.id = r.attempt_id
    RETURNING a.id, a.installment_id, a.payment_id, a.amount_cents, a.payment_method_id,
              r.reversed_paid
), covered AS (
    -- What the return takes back from each installment: the attempt's whole amount, or the
    -- payment's allocations.
    SELECT r.installment_id, r.amount_cents, r.reversed_paid
    FROM returned r WHERE r.installment_id IS NOT NULL
    UNION ALL
    SELECT pa.installment_id, pa.amount_cents, r.reversed_paid
    FROM returned r JOIN payment_allocations pa ON pa.payment_id = r.payment_id
), installments_back AS (
    UPDATE installments i
    SET paid_cents = i.paid_cents - CASE WHEN c.reversed_paid THEN c.amount_cents ELSE 0 END,
        status = 'overdue',
        next_attempt_on = $5,
        updated_at = now()
    FROM covered c
    WHERE i.id = c.installment_id
), payment_back AS (
    UPDATE payments p SET status = 'returned', updated_at = now()
    FROM returned r WHERE p.id = r.payment_id
), method_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = 'ach_return_' || $2, updated_at = now()
    FROM returned r
    WHERE $6 AND pm.id = r.payment_method_id AND pm.status = 'active'
)
SELECT id AS attempt_id FROM returned;

-- record_webhook_event --
-- Remember gateway $1's event $2 (type $3); returns a row only the first time
INSERT INTO webhook_events (gateway, event_id, event_type) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING event_id;

-- return_rates --
-- ACH debits sent in the last 60 days and their returns by category (NACHA watches
-- unauthorized 0.5%, administrative 3%, overall 15%)
SELECT (SELECT count(*) FROM charge_attempts a
        JOIN payment_methods pm ON pm.id = a.payment_method_id
        WHERE pm.kind = 'ach' AND a.created_at > now() - interval '60 days'
          AND a.status IN ('processing', 'succeeded', 'returned')) AS debits,
       count(*) FILTER (WHERE r.category = 'unauthorized') AS unauthorized,
       count(*) FILTER (WHERE r.category = 'administrative') AS administrative,
       count(*) AS returns
FROM charge_returns r
WHERE r.received_at > now() - interval '60 days';
