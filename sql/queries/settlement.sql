-- processing_attempts --
-- Up to $3 debits still in flight with id above $1, through the gateways $2, with what
-- settling them needs
SELECT a.id AS attempt_id, a.idempotency_key, a.gateway, a.installment_id, a.payment_id,
       a.amount_cents, a.payment_method_id, a.created_at, a.customer_id, a.attempt_no,
       extract(epoch FROM now() - a.last_sent_at)::float8 AS age_s,
       h.nsf_returns, h.original_on, h.primary_method_id
FROM (
    SELECT a.*, coalesce(i.attempts, 1) AS attempt_no
    FROM charge_attempts a
    LEFT JOIN installments i ON i.id = a.installment_id
    WHERE a.status = 'processing' AND a.id > $1 AND a.gateway = ANY ($2::text[])
    ORDER BY a.id
    LIMIT $3
) a
CROSS JOIN LATERAL debit_history_v1(a.id) h
ORDER BY a.id;

-- attempt_by_key --
-- The attempt made under idempotency key $1, with what settling or returning it needs
SELECT a.id AS attempt_id, a.idempotency_key, a.gateway, a.installment_id, a.payment_id,
       a.amount_cents, a.payment_method_id, a.created_at, a.status, a.customer_id,
       coalesce(i.attempts, 1) AS attempt_no,
       h.nsf_returns, h.original_on, h.primary_method_id
FROM charge_attempts a
LEFT JOIN installments i ON i.id = a.installment_id
CROSS JOIN LATERAL debit_history_v1(a.id) h
WHERE a.idempotency_key = $1;

-- settle_attempts --
-- Debits $1 settled: each attempt still processing succeeds, and its manual payment with it,
-- and its money is settled in the journal (money_follow_v1; $2 business date, $3 source), in
-- one statement. Returns the attempts that changed.
WITH settled AS (
    UPDATE charge_attempts a
    SET status = 'succeeded', resolved_at = now(), updated_at = now()
    WHERE a.id = ANY ($1::bigint[]) AND a.status = 'processing'
    RETURNING a.id, a.payment_id, a.amount_cents
), payments_done AS (
    UPDATE payments p SET status = 'succeeded', updated_at = now()
    FROM settled s WHERE p.id = s.payment_id
), followed AS (
    SELECT money_follow_v1(array_agg(s.id), array_agg('settled'::text), array_agg(false),
                           array_agg(NULL::date), array_agg(NULL::text), $2, $3) AS rows_added
    FROM settled s
)
SELECT s.id AS attempt_id, s.amount_cents FROM settled s, followed;

-- decline_processing --
-- Payment $1, left processing by its gateway, failed with code $2 (message $3; disable the
-- method when $4): the attempt is declined, and its manual payment with it. Returns the
-- attempt id when this call changed it.
WITH declined AS (
    UPDATE charge_attempts a
    SET status = 'declined', outcome_code = $2, outcome_message = $3, resolved_at = now(),
        updated_at = now()
    WHERE a.id = $1 AND a.status = 'processing'
    RETURNING a.id, a.payment_id, a.payment_method_id
), payment AS (
    UPDATE payments p SET status = 'declined', updated_at = now()
    FROM declined d WHERE p.id = d.payment_id
), method_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = $2, updated_at = now()
    FROM declined d
    WHERE $4 AND pm.id = d.payment_method_id AND pm.status = 'active'
)
SELECT id AS attempt_id FROM declined;

-- record_return --
-- Attempt $1 was returned with code $2 (category $3): record the return once (a replay changes
-- nothing), mark the attempt returned (and its manual payment), and disable the method when
-- $5. $4 = where the return came from, $6 = business date. Returns the attempt id and whether
-- the money had settled, when this call applied it; the caller applies the money
-- (money.follow: returned, or reversed after settlement).
WITH attempt AS (
    SELECT a.id, a.customer_id, a.status, a.installment_id, a.payment_id, a.amount_cents,
           a.payment_method_id
    FROM charge_attempts a
    WHERE a.id = $1 AND a.status IN ('processing', 'succeeded')
    FOR UPDATE
), recorded AS (
    INSERT INTO charge_returns (attempt_id, customer_id, return_code, category, amount_cents,
                                reversed_paid, source, as_of)
    SELECT a.id, a.customer_id, $2, $3, a.amount_cents, a.status = 'succeeded', $4, $6
    FROM attempt a
    ON CONFLICT (attempt_id, customer_id) DO NOTHING
    RETURNING attempt_id, reversed_paid
), returned AS (
    UPDATE charge_attempts a
    SET status = 'returned', outcome_code = $2, updated_at = now(), resolved_at = now()
    FROM recorded r
    WHERE a.id = r.attempt_id
    RETURNING a.id, a.payment_id, a.payment_method_id, r.reversed_paid
), payment_back AS (
    UPDATE payments p SET status = 'returned', updated_at = now()
    FROM returned r WHERE p.id = r.payment_id
), method_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = 'ach_return_' || $2, updated_at = now()
    FROM returned r
    WHERE $5 AND pm.id = r.payment_method_id AND pm.status = 'active'
)
SELECT id AS attempt_id, reversed_paid FROM returned;

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
