-- Exactly one charge per installment's money: the sandbox gateway's own record
-- (sandbox.charges, a local table) against the engine's ledger (charge_attempts, pulled to
-- the coordinator whole: a check, not an engine statement). Every line must be 0.
--   psql -X -h 127.0.0.1 -p 9700 -U postgres hcore -f bench/citus/exactly_once.sql
WITH a AS MATERIALIZED (
    SELECT idempotency_key, amount_cents, status FROM charge_attempts
), c AS MATERIALIZED (
    SELECT idempotency_key, installment_id, amount_cents, status FROM sandbox.charges
), journal AS MATERIALIZED (
    SELECT i.id, i.in_flight_cents,
           coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0) AS journal
    FROM installments i
    LEFT JOIN money_movements m ON m.installment_id = i.id AND m.customer_id = i.customer_id
    GROUP BY i.id, i.customer_id, i.in_flight_cents
)
SELECT 'sandbox charges without an attempt' AS check, count(*) AS bad
FROM c WHERE NOT EXISTS (SELECT 1 FROM a WHERE a.idempotency_key = c.idempotency_key)
UNION ALL
SELECT 'sandbox charges whose attempt differs in amount', count(*)
FROM c JOIN a ON a.idempotency_key = c.idempotency_key WHERE a.amount_cents <> c.amount_cents
UNION ALL
SELECT 'installments taken twice (two charges succeeded or processing)', count(*)
FROM (SELECT c.installment_id FROM c WHERE c.status IN ('succeeded', 'processing')
      GROUP BY c.installment_id HAVING count(*) > 1) t
UNION ALL
SELECT 'attempts taken per the ledger, not per the sandbox', count(*)
FROM a WHERE a.status IN ('succeeded', 'processing')
  AND NOT EXISTS (SELECT 1 FROM c WHERE c.idempotency_key = a.idempotency_key
                                    AND c.status IN ('succeeded', 'processing'))
UNION ALL
SELECT 'attempts taken per the sandbox, not per the ledger', count(*)
FROM c JOIN a ON a.idempotency_key = c.idempotency_key
WHERE c.status IN ('succeeded', 'processing') AND a.status NOT IN ('succeeded', 'processing')
UNION ALL
SELECT 'attempts still pending', count(*) FROM a WHERE a.status = 'pending'
UNION ALL
SELECT 'installments whose in-flight money disagrees with the journal', count(*)
FROM journal WHERE in_flight_cents <> journal;
SELECT status, count(*) AS attempts FROM charge_attempts GROUP BY status ORDER BY status;
SELECT count(*) AS sandbox_charges FROM sandbox.charges;
