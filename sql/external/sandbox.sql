-- Queries over records another system keeps: the sandbox gateways' table sandbox.charges
-- (collector/gateways/sandbox.py), which the engine's migrations never create. They live
-- outside sql/queries because every query there must prepare against the migrated schema
-- (tests/test_schema.py); collector/db/audit.py runs them only once audit.sandbox_present
-- says the table exists. Same row shape as sql/queries/audit.sql.

-- sandbox_matches_ledger --
-- What the sandbox accepted (succeeded or processing) against what the ledger took, at most
-- $1. Per idempotency key, for attempts of the sandbox's gateways ($2, and any the table
-- names): a key the sandbox accepted is one the ledger counts as taken (succeeded,
-- processing, returned) or has not heard back about yet (pending, in doubt), for the same
-- amount and gateway; a key the ledger counts as taken is one the sandbox accepted; a return
-- is the sandbox's as well as the ledger's. Per installment: the sandbox never kept more
-- than it owes (rent + late fees - waivers; what it accepted, less what the ledger knows came
-- back).
--
-- On Citus sandbox.charges is a local table of the coordinator and the attempts are on the
-- shards: the sandbox's charges are sent to every shard, where each attempt meets its key
-- (and its journal rows, by customer); only the keys in trouble come back. A key the
-- sandbox accepted under no attempt is found by asking the shards which of the sandbox's
-- keys they know (an intermediate result as large as the sandbox's own table, not the
-- ledger's), then kept against its installment, by id, on the shards.
WITH box AS MATERIALIZED (
    SELECT c.idempotency_key, c.gateway, c.installment_id, c.amount_cents, c.status,
           c.return_code,
           c.status IN ('succeeded', 'processing') AS accepted
    FROM sandbox.charges c
), box_gateway AS MATERIALIZED (
    SELECT DISTINCT b.gateway FROM box b
), known AS MATERIALIZED (
    SELECT DISTINCT a.idempotency_key
    FROM charge_attempts a
    WHERE a.idempotency_key IN (SELECT b.idempotency_key FROM box b)
      AND (a.gateway = ANY ($2::text[]) OR a.gateway IN (SELECT g.gateway FROM box_gateway g))
), box_only AS MATERIALIZED (
    SELECT b.*
    FROM box b
    WHERE b.accepted AND b.idempotency_key NOT IN (SELECT k.idempotency_key FROM known k)
), by_key AS (
    SELECT k.*,
           CASE
               WHEN k.accepted AND k.ledger_status IN ('declined', 'failed', 'refused') THEN
                   format('the sandbox accepted it; the ledger says %s', k.ledger_status)
               WHEN NOT k.accepted
                    AND k.ledger_status IN ('succeeded', 'processing', 'returned') THEN
                   format('the ledger says %s; the sandbox %s', k.ledger_status,
                          CASE WHEN k.box_status IS NULL THEN 'has no charge under this key'
                               ELSE 'declined it' END)
               WHEN k.accepted AND k.box_cents <> k.ledger_cents THEN
                   format('the sandbox took %s cents; the ledger asked for %s',
                          k.box_cents, k.ledger_cents)
               WHEN k.accepted AND k.box_gateway <> k.ledger_gateway THEN
                   format('the sandbox took it as %s; the ledger sent it to %s',
                          k.box_gateway, k.ledger_gateway)
               WHEN k.accepted AND k.ledger_status = 'returned' AND k.return_code IS NULL THEN
                   'the ledger says returned; the sandbox never returns it'
               WHEN k.accepted AND k.ledger_status = 'succeeded'
                    AND k.return_code IS NOT NULL THEN
                   format('the ledger says succeeded; the sandbox returns it (%s)',
                          k.return_code)
           END AS problem
    FROM (
        SELECT a.idempotency_key, a.id AS attempt_id, a.status AS ledger_status,
               a.amount_cents AS ledger_cents, a.gateway AS ledger_gateway, a.installment_id,
               a.payment_id, a.customer_id,
               b.status AS box_status, b.amount_cents AS box_cents, b.gateway AS box_gateway,
               b.return_code, coalesce(b.accepted, false) AS accepted,
               b.installment_id AS box_installment_id
        FROM charge_attempts a
        LEFT JOIN box b ON b.idempotency_key = a.idempotency_key
        WHERE a.gateway = ANY ($2::text[]) OR a.gateway IN (SELECT g.gateway FROM box_gateway g)
    ) k
), box_only_cents AS MATERIALIZED (
    SELECT o.installment_id, sum(o.amount_cents) AS cents,
           array_agg(o.idempotency_key ORDER BY o.idempotency_key) AS keys
    FROM box_only o
    WHERE o.installment_id IS NOT NULL
    GROUP BY o.installment_id
), kept AS (
    -- Each accepted key's money, by the installments the ledger presented it for (a manual
    -- payment's allocations), else by the installment the sandbox recorded; by customer.
    SELECT coalesce(m.installment_id, b.installment_id) AS installment_id, a.customer_id,
           sum(coalesce(m.amount_cents, b.amount_cents)) AS cents,
           array_agg(DISTINCT a.id) AS attempt_ids
    FROM charge_attempts a
    JOIN box b ON b.idempotency_key = a.idempotency_key AND b.accepted
    LEFT JOIN money_movements m
           ON m.attempt_id = a.id AND m.customer_id = a.customer_id AND m.kind = 'presented'
    WHERE (a.gateway = ANY ($2::text[]) OR a.gateway IN (SELECT g.gateway FROM box_gateway g))
      AND a.status <> 'returned'
    GROUP BY 1, 2
), kept_again AS (
    -- kept, restated: read once per use, each stays on the shards (a CTE read twice would
    -- become one intermediate result of every kept key).
    SELECT coalesce(m.installment_id, b.installment_id) AS installment_id, a.customer_id
    FROM charge_attempts a
    JOIN box b ON b.idempotency_key = a.idempotency_key AND b.accepted
    LEFT JOIN money_movements m
           ON m.attempt_id = a.id AND m.customer_id = a.customer_id AND m.kind = 'presented'
    WHERE (a.gateway = ANY ($2::text[]) OR a.gateway IN (SELECT g.gateway FROM box_gateway g))
      AND a.status <> 'returned'
    GROUP BY 1, 2
), over_kept AS (
    -- What an installment can have taken: what it owes (rent + fees - waivers) less what a
    -- payoff cancelled of it.
    SELECT i.id, i.owed_cents - i.cancelled_cents AS amount_cents, i.customer_id,
           (t.cents + coalesce(bo.cents, 0))::bigint AS kept,
           t.attempt_ids, bo.keys
    FROM kept t
    JOIN installments i ON i.id = t.installment_id AND i.customer_id = t.customer_id
    LEFT JOIN box_only_cents bo ON bo.installment_id = i.id
    WHERE t.cents + coalesce(bo.cents, 0) > i.owed_cents - i.cancelled_cents
    UNION ALL
    SELECT i.id, i.owed_cents - i.cancelled_cents, i.customer_id, bo.cents::bigint,
           NULL::bigint[], bo.keys
    FROM box_only_cents bo
    JOIN installments i ON i.id = bo.installment_id
    LEFT JOIN kept_again t ON t.installment_id = i.id AND t.customer_id = i.customer_id
    WHERE t.installment_id IS NULL AND bo.cents > i.owed_cents - i.cancelled_cents
), violations AS (
    SELECT format('key %s%s: %s', k.idempotency_key,
                  CASE WHEN k.attempt_id IS NULL THEN ''
                       ELSE format(' (attempt %s)', k.attempt_id) END,
                  k.problem) AS message,
           CASE WHEN coalesce(k.installment_id, k.box_installment_id) IS NULL
                THEN ARRAY[]::bigint[]
                ELSE ARRAY[coalesce(k.installment_id, k.box_installment_id)] END
               AS installment_ids,
           CASE WHEN k.attempt_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[k.attempt_id] END
               AS attempt_ids,
           CASE WHEN k.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[k.payment_id] END
               AS payment_ids,
           CASE WHEN k.customer_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[k.customer_id] END
               AS customer_ids,
           ARRAY[k.idempotency_key] AS keys,
           jsonb_build_object('ledger_status', k.ledger_status, 'ledger_cents', k.ledger_cents,
                              'sandbox_status', k.box_status, 'sandbox_cents', k.box_cents,
                              'return_code', k.return_code) AS facts,
           1 AS part, k.idempotency_key AS sort_key
    FROM by_key k
    WHERE k.problem IS NOT NULL
    UNION ALL
    SELECT format('key %s: the sandbox accepted it; the ledger has no attempt under this key',
                  o.idempotency_key),
           CASE WHEN o.installment_id IS NULL THEN ARRAY[]::bigint[]
                ELSE ARRAY[o.installment_id] END,
           ARRAY[]::bigint[], ARRAY[]::bigint[], ARRAY[]::bigint[],
           ARRAY[o.idempotency_key],
           jsonb_build_object('ledger_status', NULL, 'ledger_cents', NULL,
                              'sandbox_status', o.status, 'sandbox_cents', o.amount_cents,
                              'return_code', o.return_code),
           1, o.idempotency_key
    FROM box_only o
    UNION ALL
    SELECT format('installment %s of %s cents: the sandbox kept %s cents for it',
                  o.id, o.amount_cents, o.kept),
           ARRAY[o.id],
           coalesce(ARRAY(SELECT x FROM unnest(o.attempt_ids) AS x ORDER BY x),
                    ARRAY[]::bigint[]),
           ARRAY[]::bigint[],
           ARRAY[o.customer_id],
           coalesce(ARRAY(SELECT x FROM unnest(o.keys) AS x ORDER BY x), ARRAY[]::text[]),
           jsonb_build_object('amount_cents', o.amount_cents, 'sandbox_kept_cents', o.kept),
           2, lpad(o.id::text, 20, '0')
    FROM over_kept o
)
SELECT count(*) OVER () AS total, v.message, v.installment_ids, v.attempt_ids, v.payment_ids,
       v.customer_ids, ARRAY[]::bigint[] AS attention_ids, v.keys, v.facts
FROM violations v
ORDER BY v.part, v.sort_key
LIMIT $1;
