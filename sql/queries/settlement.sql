-- processing_attempts --
-- Up to $3 debits still in flight with id above $1, through the gateways $2, with what
-- settling them needs: a plain read over every shard, each join on the customer (co-located),
-- the debit's history read beside it (see attempt_by_key)
SELECT a.id AS attempt_id, a.idempotency_key, a.gateway, a.installment_id, a.payment_id,
       a.amount_cents, a.payment_method_id, a.created_at, a.customer_id,
       coalesce(i.attempts, 1) AS attempt_no,
       extract(epoch FROM now() - a.last_sent_at)::float8 AS age_s,
       coalesce(h.nsf_returns, 0) AS nsf_returns, coalesce(h.first_nsf_on, a.as_of) AS original_on,
       pm.id AS primary_method_id
FROM charge_attempts a
LEFT JOIN installments i ON i.customer_id = a.customer_id AND i.id = a.installment_id
LEFT JOIN payment_methods pm
  ON pm.customer_id = a.customer_id AND pm.is_primary AND pm.status = 'active'
LEFT JOIN LATERAL (
    -- The NSF returns of earlier presentments of the same installments to the same
    -- instrument, and the business date of the first of them (sql/0006's debit_history_v1).
    SELECT count(*) AS nsf_returns, min(s.as_of) AS first_nsf_on
    FROM (
        SELECT DISTINCT b.id, b.as_of
        FROM money_movements own
        JOIN money_movements m
          ON m.customer_id = own.customer_id AND m.installment_id = own.installment_id
         AND m.kind = 'presented'
        JOIN charge_attempts b ON b.customer_id = m.customer_id AND b.id = m.attempt_id
        WHERE own.customer_id = a.customer_id AND own.attempt_id = a.id
          AND own.kind = 'presented' AND b.instrument_key = a.instrument_key AND b.id <> a.id
    ) s
    JOIN charge_returns r
      ON r.customer_id = a.customer_id AND r.attempt_id = s.id AND r.category = 'nsf'
) h ON true
WHERE a.status = 'processing' AND a.id > $1 AND a.gateway = ANY ($2::text[])
ORDER BY a.id
LIMIT $3;

-- attempt_by_key --
-- The attempt made under idempotency key $1, with what settling or returning it needs: the
-- NSF returns of earlier presentments of the same installments to the same instrument, the
-- business date of the original entry (the first that came back NSF, else this one), and the
-- customer's active primary method now (a new one chosen while the debit was in flight is
-- used next). A plain read over every shard (a key names no customer), joined on the customer.
SELECT a.id AS attempt_id, a.idempotency_key, a.gateway, a.installment_id, a.payment_id,
       a.amount_cents, a.payment_method_id, a.created_at, a.status, a.customer_id,
       coalesce(i.attempts, 1) AS attempt_no,
       coalesce(h.nsf_returns, 0) AS nsf_returns, coalesce(h.first_nsf_on, a.as_of) AS original_on,
       pm.id AS primary_method_id
FROM charge_attempts a
LEFT JOIN installments i ON i.customer_id = a.customer_id AND i.id = a.installment_id
LEFT JOIN payment_methods pm
  ON pm.customer_id = a.customer_id AND pm.is_primary AND pm.status = 'active'
LEFT JOIN LATERAL (
    SELECT count(*) AS nsf_returns, min(s.as_of) AS first_nsf_on
    FROM (
        SELECT DISTINCT b.id, b.as_of
        FROM money_movements own
        JOIN money_movements m
          ON m.customer_id = own.customer_id AND m.installment_id = own.installment_id
         AND m.kind = 'presented'
        JOIN charge_attempts b ON b.customer_id = m.customer_id AND b.id = m.attempt_id
        WHERE own.customer_id = a.customer_id AND own.attempt_id = a.id
          AND own.kind = 'presented' AND b.instrument_key = a.instrument_key AND b.id <> a.id
    ) s
    JOIN charge_returns r
      ON r.customer_id = a.customer_id AND r.attempt_id = s.id AND r.category = 'nsf'
) h ON true
WHERE a.idempotency_key = $1;

-- settle_attempts --
-- Debits $2 of customers $1 (one shard group: collector/db/routing.py) settled: each attempt
-- still processing succeeds, and its manual payment with it, and its money is settled in the
-- journal ($3 business date, $4 source), in one call (sql/0023). Returns the attempts that
-- changed.
SELECT attempt_id, amount_cents
FROM settle_attempts_v1($1::bigint[], $2::bigint[], $3::date, $4::text);

-- decline_processing --
-- Payment $1 of customer $5, left processing by its gateway, failed with code $2 (message $3;
-- disable the method when $4): the attempt is declined, and its manual payment with it.
-- Returns the attempt id when this call changed it. Every table is filtered by the customer:
-- one shard.
WITH declined AS (
    UPDATE charge_attempts a
    SET status = 'declined', outcome_code = $2, outcome_message = $3, resolved_at = now(),
        updated_at = now()
    WHERE a.customer_id = $5 AND a.id = $1 AND a.status = 'processing'
    RETURNING a.id, a.payment_id, a.payment_method_id
), payment AS (
    UPDATE payments p SET status = 'declined', updated_at = now()
    FROM declined d WHERE p.customer_id = $5 AND p.id = d.payment_id
), method_disabled AS (
    UPDATE payment_methods pm
    SET status = 'disabled', disabled_reason = $2, updated_at = now()
    FROM declined d
    WHERE $4 AND pm.customer_id = $5 AND pm.id = d.payment_method_id AND pm.status = 'active'
)
SELECT id AS attempt_id FROM declined;

-- record_return --
-- Attempt $1 of customer $7 was returned with code $2 (category $3): record the return once (a
-- replay changes nothing), mark the attempt returned (and its manual payment), and disable
-- the method when $5. $4 = where the return came from, $6 = business date. Returns the attempt
-- id and whether the money had settled, when this call applied it; the caller applies the
-- money (money.follow: returned, or reversed after settlement). One call, every statement of
-- it on the customer's shard (sql/0023).
SELECT attempt_id, reversed_paid
FROM record_return_v1($7::bigint, $1::bigint, $2::text, $3::text, $4::text, $5::boolean,
                      $6::date);

-- record_webhook_event --
-- Remember gateway $1's event $2 (type $3); returns a row only the first time
INSERT INTO webhook_events (gateway, event_id, event_type) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING event_id;

-- return_rates --
-- ACH debits sent in the last 60 days and their returns by category (NACHA watches
-- unauthorized 0.5%, administrative 3%, overall 15%): two plain reads over every shard, each
-- one row (the methods joined on the customer, co-located)
WITH debits AS (
    SELECT count(*) AS debits
    FROM charge_attempts a
    JOIN payment_methods pm ON pm.customer_id = a.customer_id AND pm.id = a.payment_method_id
    WHERE pm.kind = 'ach' AND a.created_at > now() - interval '60 days'
      AND a.status IN ('processing', 'succeeded', 'returned')
), returns AS (
    SELECT count(*) FILTER (WHERE r.category = 'unauthorized') AS unauthorized,
           count(*) FILTER (WHERE r.category = 'administrative') AS administrative,
           count(*) AS returns
    FROM charge_returns r
    WHERE r.received_at > now() - interval '60 days'
)
SELECT d.debits, r.unauthorized, r.administrative, r.returns
FROM debits d, returns r;
