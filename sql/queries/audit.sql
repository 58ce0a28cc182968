-- The ledger's invariants, one query per check of `collector audit` (collector/db/audit.py).
--
-- Every check reads the whole book in one statement and returns its violations as rows of
-- (total, message, installment_ids, attempt_ids, payment_ids, customer_ids, attention_ids,
-- keys, facts): total counts every violation (count(*) OVER () runs before LIMIT), at most
-- $1 are listed. Messages carry ids and amounts only, never a token or an instrument key.
-- The journal's sums follow the kinds of sql/0006_money_journal.sql:
--   paid      = settled - reversed
--   in flight = presented - released - settled - returned
--   cancelled = cancelled - reinstated (sql/0017)
--   fees      = fee_assessed, waived = fee_waived (sql/0021): owed = amount + fees - waived
--
-- On Citus (issue 12) each check is a plain multi-shard read: every join between two
-- distributed tables carries customer_id (R1 of the notes), so each shard judges its own
-- customers and only violations reach the coordinator. A journal row is its installment's
-- only under the installment's customer: a row under another customer is journal_references'
-- to report, not summed here. The checks whose rule follows a card or an account across
-- customers (instrument_key) say so where they join by it.

-- journal_matches_installments --
-- Installments whose paid, in-flight, attempts, awaiting answers, status or next collection
-- date differ from what their journal gives (recomputed here whole, with the one definition
-- of status and plan: installment_status_v2, installment_next_attempt_v1), at most $1
WITH sums AS (
    SELECT m.installment_id,
           sum(movement_paid_cents_v1(m.kind, m.amount_cents))::bigint AS paid,
           sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))::bigint AS in_flight,
           sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint AS cancelled,
           sum(movement_fee_cents_v1(m.kind, m.amount_cents))::bigint AS fee,
           sum(movement_fee_waived_cents_v1(m.kind, m.amount_cents))::bigint AS waived,
           count(*) FILTER (
               WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry'))::integer
               AS attempts,
           sum(CASE WHEN m.kind = 'presented' THEN 1 WHEN m.answers THEN -1 ELSE 0 END)::integer
               AS awaiting,
           bool_or(m.sets_plan) AS planned,
           (array_agg(m.retry_on ORDER BY m.id DESC) FILTER (WHERE m.sets_plan))[1] AS plan_on,
           m.customer_id
    FROM money_movements m
    GROUP BY m.installment_id, m.customer_id
), derived AS (
    SELECT i.id, i.customer_id, i.lease_id, i.due_on, i.amount_cents, i.paid_cents, i.in_flight_cents,
           i.cancelled_cents, i.attempts, i.awaiting_answers, i.status, i.next_attempt_on,
           i.fee_cents, i.fee_waived_cents,
           coalesce(s.paid, 0) AS d_paid,
           coalesce(s.in_flight, 0) AS d_in_flight,
           coalesce(s.cancelled, 0) AS d_cancelled,
           coalesce(s.attempts, 0) AS d_attempts,
           coalesce(s.awaiting, 0) AS d_awaiting,
           coalesce(s.fee, 0) AS d_fee,
           coalesce(s.waived, 0) AS d_waived,
           installment_status_v2(i.status,
                                 i.amount_cents + coalesce(s.fee, 0) - coalesce(s.waived, 0),
                                 coalesce(s.paid, 0), coalesce(s.in_flight, 0),
                                 coalesce(s.cancelled, 0), coalesce(s.awaiting, 0),
                                 coalesce(s.attempts, 0), coalesce(s.planned, false))
               AS d_status,
           coalesce(s.planned, false) AS planned, s.plan_on
    FROM installments i
    LEFT JOIN sums s ON s.installment_id = i.id AND s.customer_id = i.customer_id
), checked AS (
    SELECT d.*,
           installment_next_attempt_v1(d.d_status, d.planned, d.plan_on, d.due_on) AS d_next
    FROM derived d
), violations AS (
    -- An installment's customer is its lease's (the foreign key (lease_id, customer_id)).
    SELECT c.*
    FROM checked c
    WHERE (c.paid_cents, c.in_flight_cents, c.cancelled_cents, c.attempts, c.awaiting_answers,
           c.status)
              IS DISTINCT FROM (c.d_paid, c.d_in_flight, c.d_cancelled, c.d_attempts,
                                c.d_awaiting, c.d_status)
       OR c.next_attempt_on IS DISTINCT FROM c.d_next
       OR (c.fee_cents, c.fee_waived_cents) IS DISTINCT FROM (c.d_fee, c.d_waived)
)
SELECT count(*) OVER () AS total,
       format('installment %s holds paid %s, in flight %s, attempts %s, %s, next %s, fees %s'
              ' (waived %s); its journal gives paid %s, in flight %s, attempts %s, %s, next %s,'
              ' fees %s (waived %s)',
              v.id, v.paid_cents, v.in_flight_cents, v.attempts, v.status,
              coalesce(v.next_attempt_on::text, 'none'), v.fee_cents, v.fee_waived_cents,
              v.d_paid, v.d_in_flight, v.d_attempts, v.d_status,
              coalesce(v.d_next::text, 'none'), v.d_fee, v.d_waived) AS message,
       ARRAY[v.id] AS installment_ids, ARRAY[]::bigint[] AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[v.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object(
           'amount_cents', v.amount_cents,
           'paid_cents', v.paid_cents, 'journal_paid_cents', v.d_paid,
           'in_flight_cents', v.in_flight_cents, 'journal_in_flight_cents', v.d_in_flight,
           'cancelled_cents', v.cancelled_cents, 'journal_cancelled_cents', v.d_cancelled,
           'attempts', v.attempts, 'journal_attempts', v.d_attempts,
           'status', v.status, 'journal_status', v.d_status,
           'next_attempt_on', v.next_attempt_on, 'journal_next_attempt_on', v.d_next) AS facts
FROM violations v
ORDER BY v.id
LIMIT $1;

-- journal_matches_payments --
-- Manual payments whose status, attempt, allocations and journal rows disagree: one attempt
-- of the payment's status and amount; allocations that sum to the amount, on the lease's
-- installments; each allocation presented once for its amount and ended as the status says
-- (succeeded: settled; declined, failed, refused: released; pending, in doubt, processing:
-- still in flight; returned: returned, or settled and reversed), at most $1
WITH attempt AS (
    SELECT a.payment_id, a.customer_id, count(*) AS attempts, min(a.id) AS attempt_id,
           min(a.status) AS status, min(a.amount_cents) AS amount_cents
    FROM charge_attempts a
    WHERE a.payment_id IS NOT NULL
    GROUP BY a.payment_id, a.customer_id
), journal AS (
    SELECT m.payment_id, m.installment_id, m.customer_id,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'presented'), 0) AS presented,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'released'), 0) AS released,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'settled'), 0) AS settled,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'returned'), 0) AS returned,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'reversed'), 0) AS reversed
    FROM money_movements m
    -- A payoff's cancellations move no money: the payoffs check judges them.
    WHERE m.payment_id IS NOT NULL AND m.kind NOT IN ('cancelled', 'reinstated')
    GROUP BY m.payment_id, m.installment_id, m.customer_id
), line AS (
    -- Each allocation beside its journal rows, then (allocated 0) the journal rows of a
    -- payment's installment it allocated nothing to. Two legs, not a FULL JOIN or a UNION of
    -- the two: Citus runs neither between a table and a grouped subquery in one pass over
    -- the shards (it pulled the allocations to the coordinator); each leg is co-located.
    SELECT pa.payment_id, pa.installment_id, pa.customer_id, pa.amount_cents AS allocated,
           coalesce(j.presented, 0) AS presented, coalesce(j.released, 0) AS released,
           coalesce(j.settled, 0) AS settled, coalesce(j.returned, 0) AS returned,
           coalesce(j.reversed, 0) AS reversed
    FROM payment_allocations pa
    LEFT JOIN journal j ON j.payment_id = pa.payment_id AND j.installment_id = pa.installment_id
                       AND j.customer_id = pa.customer_id
), unallocated AS (
    SELECT m.payment_id, m.installment_id, m.customer_id,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'presented'), 0) AS presented,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'released'), 0) AS released,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'settled'), 0) AS settled,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'returned'), 0) AS returned,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'reversed'), 0) AS reversed
    FROM money_movements m
    -- An anti-join rather than NOT EXISTS: Citus refuses a correlated subquery here.
    LEFT JOIN payment_allocations pa
           ON pa.payment_id = m.payment_id AND pa.installment_id = m.installment_id
          AND pa.customer_id = m.customer_id
    WHERE m.payment_id IS NOT NULL AND m.kind NOT IN ('cancelled', 'reinstated')
      AND pa.payment_id IS NULL
    GROUP BY m.payment_id, m.installment_id, m.customer_id
), judged AS (
    SELECT l.*, p.lease_id,
           l.presented = l.allocated AND l.allocated > 0 AND CASE
               WHEN p.status = 'succeeded' THEN
                   l.settled = l.allocated AND l.released + l.returned + l.reversed = 0
               WHEN p.status IN ('declined', 'failed', 'refused') THEN
                   l.released = l.allocated AND l.settled + l.returned + l.reversed = 0
               WHEN p.status IN ('pending', 'in_doubt', 'processing') THEN
                   l.released + l.settled + l.returned + l.reversed = 0
               WHEN p.status = 'returned' THEN
                   l.released = 0 AND (
                       (l.returned = l.allocated AND l.settled + l.reversed = 0)
                       OR (l.settled = l.allocated AND l.reversed = l.allocated
                           AND l.returned = 0))
               ELSE false
           END AS ok,
           i.lease_id AS installment_lease_id
    FROM line l
    JOIN payments p ON p.id = l.payment_id AND p.customer_id = l.customer_id
    -- An installment of another customer is none of this payment's lease's.
    LEFT JOIN installments i ON i.id = l.installment_id AND i.customer_id = l.customer_id
), per_payment AS (
    SELECT j.payment_id, j.customer_id,
           sum(j.allocated) AS allocated,
           array_agg(j.installment_id ORDER BY j.installment_id) AS installment_ids,
           string_agg(format('installment %s allocated %s: presented %s, released %s,'
                             ' settled %s, returned %s, reversed %s',
                             j.installment_id, j.allocated, j.presented, j.released,
                             j.settled, j.returned, j.reversed), '; '
                      ORDER BY j.installment_id) FILTER (WHERE NOT j.ok) AS bad_lines,
           bool_or(j.installment_lease_id IS DISTINCT FROM j.lease_id) AS other_lease
    FROM judged j
    GROUP BY j.payment_id, j.customer_id
), per_payment_unallocated AS (
    -- Every such line is wrong (nothing allocated was presented): listed after the others.
    SELECT u.payment_id, u.customer_id,
           array_agg(u.installment_id ORDER BY u.installment_id) AS installment_ids,
           string_agg(format('installment %s allocated 0: presented %s, released %s,'
                             ' settled %s, returned %s, reversed %s',
                             u.installment_id, u.presented, u.released, u.settled,
                             u.returned, u.reversed), '; '
                      ORDER BY u.installment_id) AS bad_lines,
           bool_or(i.lease_id IS DISTINCT FROM p.lease_id) AS other_lease
    FROM unallocated u
    JOIN payments p ON p.id = u.payment_id AND p.customer_id = u.customer_id
    LEFT JOIN installments i ON i.id = u.installment_id AND i.customer_id = u.customer_id
    GROUP BY u.payment_id, u.customer_id
), violations AS (
    SELECT p.id, p.customer_id, p.status, p.amount_cents, a.attempt_id,
           ARRAY(SELECT x FROM unnest(coalesce(pp.installment_ids, ARRAY[]::bigint[])
                                      || coalesce(pu.installment_ids, ARRAY[]::bigint[])) AS x
                 ORDER BY x) AS installment_ids,
           array_remove(ARRAY[
               CASE WHEN coalesce(a.attempts, 0) <> 1
                    THEN format('%s attempts (one expected)', coalesce(a.attempts, 0)) END,
               CASE WHEN a.attempts = 1 AND a.status <> p.status
                    THEN format('its attempt %s is %s', a.attempt_id, a.status) END,
               CASE WHEN a.attempts = 1 AND a.amount_cents <> p.amount_cents
                    THEN format('its attempt %s is for %s', a.attempt_id, a.amount_cents) END,
               CASE WHEN coalesce(pp.allocated, 0) <> p.amount_cents
                    THEN format('allocations sum to %s', coalesce(pp.allocated, 0)) END,
               CASE WHEN pp.other_lease OR pu.other_lease
                    THEN 'allocated to an installment of another lease' END,
               pp.bad_lines, pu.bad_lines
           ], NULL) AS problems
    FROM payments p
    LEFT JOIN attempt a ON a.payment_id = p.id AND a.customer_id = p.customer_id
    LEFT JOIN per_payment pp ON pp.payment_id = p.id AND pp.customer_id = p.customer_id
    LEFT JOIN per_payment_unallocated pu
           ON pu.payment_id = p.id AND pu.customer_id = p.customer_id
)
SELECT count(*) OVER () AS total,
       format('payment %s (%s, %s cents): %s', v.id, v.status, v.amount_cents,
              array_to_string(v.problems, '; ')) AS message,
       v.installment_ids,
       CASE WHEN v.attempt_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[v.attempt_id] END
           AS attempt_ids,
       ARRAY[v.id] AS payment_ids, ARRAY[v.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('amount_cents', v.amount_cents, 'status', v.status) AS facts
FROM violations v
WHERE cardinality(v.problems) > 0
ORDER BY v.id
LIMIT $1;

-- journal_references --
-- Journal rows that name what does not exist or does not belong together (the journal has
-- no foreign keys: its writers take every id from a row they hold): an installment, attempt
-- or payment that is not there; a customer other than the installment's lease's; an attempt
-- or payment of another customer. Attempts whose customer is not their method's. At most $1
--
-- The point of this check is a customer mismatch, so it cannot join by customer alone. It
-- finds the suspects by a co-located anti-join (rows whose installment, attempt or payment
-- is not there under the row's own customer: each shard reads only its own), and only
-- those few rows go to the coordinator; then it asks where each suspect id lives, by id
-- (`id IN (the suspects)`: Citus sends the suspects' ids to every shard), and tells "no
-- such" from "another customer's". No table crosses to the coordinator but the suspects
-- and their owners.
WITH suspect AS MATERIALIZED (
    SELECT m.id AS row_id, m.installment_id, m.attempt_id, m.payment_id, m.customer_id,
           i.id IS NULL AS installment_elsewhere,
           m.attempt_id IS NOT NULL AND a.id IS NULL AS attempt_elsewhere,
           m.payment_id IS NOT NULL AND p.id IS NULL AS payment_elsewhere
    FROM money_movements m
    LEFT JOIN installments i ON i.id = m.installment_id AND i.customer_id = m.customer_id
    LEFT JOIN charge_attempts a ON a.id = m.attempt_id AND a.customer_id = m.customer_id
    LEFT JOIN payments p ON p.id = m.payment_id AND p.customer_id = m.customer_id
    WHERE i.id IS NULL OR (m.attempt_id IS NOT NULL AND a.id IS NULL)
       OR (m.payment_id IS NOT NULL AND p.id IS NULL)
), method_suspect AS MATERIALIZED (
    SELECT a.id, a.customer_id, a.installment_id, a.payment_id, a.payment_method_id
    FROM charge_attempts a
    LEFT JOIN payment_methods pm ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
    WHERE pm.id IS NULL
), installment_owner AS MATERIALIZED (
    SELECT i.id, min(i.customer_id) AS customer_id
    FROM installments i
    WHERE i.id IN (SELECT s.installment_id FROM suspect s WHERE s.installment_elsewhere)
    GROUP BY i.id
), attempt_owner AS MATERIALIZED (
    SELECT a.id, min(a.customer_id) AS customer_id
    FROM charge_attempts a
    WHERE a.id IN (SELECT s.attempt_id FROM suspect s WHERE s.attempt_elsewhere)
    GROUP BY a.id
), payment_owner AS MATERIALIZED (
    SELECT p.id, min(p.customer_id) AS customer_id
    FROM payments p
    WHERE p.id IN (SELECT s.payment_id FROM suspect s WHERE s.payment_elsewhere)
    GROUP BY p.id
), method_owner AS MATERIALIZED (
    SELECT pm.id, min(pm.customer_id) AS customer_id
    FROM payment_methods pm
    WHERE pm.id IN (SELECT ms.payment_method_id FROM method_suspect ms)
    GROUP BY pm.id
), bad AS (
    SELECT s.row_id, s.installment_id, s.attempt_id, s.payment_id, s.customer_id,
           array_remove(ARRAY[
               CASE WHEN s.installment_elsewhere AND io.id IS NULL THEN 'no such installment' END,
               CASE WHEN s.installment_elsewhere AND io.id IS NOT NULL
                    THEN format('the installment is customer %s''s', io.customer_id) END,
               CASE WHEN s.attempt_elsewhere AND ao.id IS NULL THEN 'no such attempt' END,
               CASE WHEN s.attempt_elsewhere AND ao.id IS NOT NULL
                    THEN format('the attempt is customer %s''s', ao.customer_id) END,
               CASE WHEN s.payment_elsewhere AND po.id IS NULL THEN 'no such payment' END,
               CASE WHEN s.payment_elsewhere AND po.id IS NOT NULL
                    THEN format('the payment is customer %s''s', po.customer_id) END
           ], NULL) AS problems
    FROM suspect s
    LEFT JOIN installment_owner io ON io.id = s.installment_id
    LEFT JOIN attempt_owner ao ON ao.id = s.attempt_id
    LEFT JOIN payment_owner po ON po.id = s.payment_id
), rows_bad AS (
    SELECT format('journal row %s: %s', b.row_id, array_to_string(b.problems, '; ')) AS message,
           b.installment_id, b.attempt_id, b.payment_id, b.customer_id, b.row_id AS sort_id, 0 AS part
    FROM bad b
    WHERE cardinality(b.problems) > 0
    UNION ALL
    SELECT format('attempt %s is customer %s''s but its method %s is customer %s''s',
                  ms.id, ms.customer_id, ms.payment_method_id, mo.customer_id),
           ms.installment_id, ms.id, ms.payment_id, ms.customer_id, ms.id, 1
    FROM method_suspect ms
    JOIN method_owner mo ON mo.id = ms.payment_method_id
)
SELECT count(*) OVER () AS total, r.message,
       CASE WHEN r.installment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[r.installment_id] END
           AS installment_ids,
       CASE WHEN r.attempt_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[r.attempt_id] END
           AS attempt_ids,
       CASE WHEN r.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[r.payment_id] END
           AS payment_ids,
       ARRAY[r.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       '{}'::jsonb AS facts
FROM rows_bad r
ORDER BY r.part, r.sort_id
LIMIT $1;

-- over_taken --
-- Installments whose journal has taken (settled + in flight) and cancelled more than they owe
-- (the amount plus fees less waivers), or counts a negative paid, in-flight or cancelled sum,
-- at most $1
WITH sums AS (
    SELECT m.installment_id,
           sum(movement_paid_cents_v1(m.kind, m.amount_cents))::bigint AS paid,
           sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))::bigint AS in_flight,
           sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint AS cancelled,
           sum(movement_fee_cents_v1(m.kind, m.amount_cents)
               - movement_fee_waived_cents_v1(m.kind, m.amount_cents))::bigint AS fees,
           m.customer_id
    FROM money_movements m
    GROUP BY m.installment_id, m.customer_id
), violations AS (
    SELECT i.id, i.amount_cents + s.fees AS amount_cents, i.customer_id, s.paid, s.in_flight,
           s.cancelled
    FROM sums s
    JOIN installments i ON i.id = s.installment_id AND i.customer_id = s.customer_id
    WHERE s.paid + s.in_flight + s.cancelled > i.amount_cents + s.fees
       OR s.paid < 0 OR s.in_flight < 0 OR s.cancelled < 0
)
SELECT count(*) OVER () AS total,
       format('installment %s of %s cents: its journal has paid %s, %s in flight and %s'
              ' cancelled', v.id, v.amount_cents, v.paid, v.in_flight, v.cancelled) AS message,
       ARRAY[v.id] AS installment_ids, ARRAY[]::bigint[] AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[v.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('amount_cents', v.amount_cents, 'journal_paid_cents', v.paid,
                          'journal_in_flight_cents', v.in_flight) AS facts
FROM violations v
ORDER BY v.id
LIMIT $1;

-- succeeded_without_reference --
-- Attempts that took money (succeeded, processing, returned) with no gateway reference to
-- find it by, at most $1
SELECT count(*) OVER () AS total,
       format('attempt %s is %s for %s cents with no gateway reference',
              a.id, a.status, a.amount_cents) AS message,
       CASE WHEN a.installment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.installment_id]
       END AS installment_ids,
       ARRAY[a.id] AS attempt_ids,
       CASE WHEN a.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.payment_id] END
           AS payment_ids,
       ARRAY[a.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys,
       jsonb_build_object('amount_cents', a.amount_cents, 'status', a.status,
                          'gateway', a.gateway) AS facts
FROM charge_attempts a
WHERE a.status IN ('succeeded', 'processing', 'returned')
  AND (a.gateway_ref IS NULL OR btrim(a.gateway_ref) = '')
ORDER BY a.id
LIMIT $1;

-- pending_past_deadline --
-- Attempts still pending more than grace $3 past their claim deadline (or, with none, their
-- last send) at time $2 (NULL: the database's clock): reconciliation is not running. In-doubt
-- attempts are left to wait for their gateway. At most $1
SELECT count(*) OVER () AS total,
       format('attempt %s (%s cents) is pending; its deadline %s passed %s ago',
              a.id, a.amount_cents,
              coalesce(a.claimed_until::text, 'none (last sent ' || a.last_sent_at || ')'),
              date_trunc('second', coalesce($2::timestamptz, now())
                                   - coalesce(a.claimed_until, a.last_sent_at))) AS message,
       CASE WHEN a.installment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.installment_id]
       END AS installment_ids,
       ARRAY[a.id] AS attempt_ids,
       CASE WHEN a.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.payment_id] END
           AS payment_ids,
       ARRAY[a.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys,
       jsonb_build_object('amount_cents', a.amount_cents, 'claimed_until', a.claimed_until,
                          'last_sent_at', a.last_sent_at, 'gateway', a.gateway) AS facts
FROM charge_attempts a
WHERE a.status = 'pending'
  AND coalesce(a.claimed_until, a.last_sent_at)
      < coalesce($2::timestamptz, now()) - $3::interval
ORDER BY a.id
LIMIT $1;

-- attempt_money_consistency --
-- Attempts whose journal rows disagree with their status (succeeded: settled; declined,
-- failed, refused: released; pending, in doubt: in flight, unanswered; processing: accepted,
-- in flight; returned:
-- returned, or settled and reversed), whose presented rows do not sum to their amount, or
-- whose rows name another installment or payment than the attempt serves, at most $1
WITH line AS (
    SELECT m.attempt_id, m.installment_id,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'presented'), 0) AS presented,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'released'), 0) AS released,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'settled'), 0) AS settled,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'returned'), 0) AS returned,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'reversed'), 0) AS reversed,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'accepted'), 0) AS accepted,
           bool_and(m.payment_id IS NOT DISTINCT FROM a.payment_id
                    AND (a.installment_id IS NULL OR m.installment_id = a.installment_id))
               AS named_right,
           m.customer_id
    FROM money_movements m
    JOIN charge_attempts a ON a.id = m.attempt_id AND a.customer_id = m.customer_id
    WHERE m.attempt_id IS NOT NULL
    GROUP BY m.attempt_id, m.installment_id, m.customer_id
), judged AS (
    SELECT l.*, a.status,
           CASE
               WHEN a.status = 'succeeded' THEN
                   l.settled = l.presented AND l.released + l.returned + l.reversed = 0
               WHEN a.status IN ('declined', 'failed', 'refused') THEN
                   l.released = l.presented AND l.settled + l.returned + l.reversed = 0
               WHEN a.status IN ('pending', 'in_doubt') THEN
                   l.accepted + l.released + l.settled + l.returned + l.reversed = 0
               WHEN a.status = 'processing' THEN
                   l.accepted = l.presented
                   AND l.released + l.settled + l.returned + l.reversed = 0
               WHEN a.status = 'returned' THEN
                   l.released = 0 AND (
                       (l.returned = l.presented AND l.settled + l.reversed = 0)
                       OR (l.settled = l.presented AND l.reversed = l.presented
                           AND l.returned = 0))
               ELSE false
           END AS ended_right
    FROM line l
    JOIN charge_attempts a ON a.id = l.attempt_id AND a.customer_id = l.customer_id
), violations AS (
    SELECT a.id, a.status, a.amount_cents, a.customer_id, a.installment_id, a.payment_id,
           coalesce(sum(j.presented), 0) AS presented,
           coalesce(sum(j.released), 0) AS released,
           coalesce(sum(j.settled), 0) AS settled,
           coalesce(sum(j.returned), 0) AS returned,
           coalesce(sum(j.reversed), 0) AS reversed,
           coalesce(array_agg(j.installment_id ORDER BY j.installment_id)
                    FILTER (WHERE j.installment_id IS NOT NULL), ARRAY[]::bigint[])
               AS installment_ids,
           coalesce(bool_and(j.ended_right), true) AS ended_right,
           coalesce(bool_and(j.named_right), true) AS named_right
    FROM charge_attempts a
    LEFT JOIN judged j ON j.attempt_id = a.id AND j.customer_id = a.customer_id
    GROUP BY a.id, a.customer_id
    HAVING coalesce(sum(j.presented), 0) <> a.amount_cents
        OR NOT coalesce(bool_and(j.ended_right), true)
        OR NOT coalesce(bool_and(j.named_right), true)
)
SELECT count(*) OVER () AS total,
       format('attempt %s (%s, %s cents): its journal has presented %s, released %s,'
              ' settled %s, returned %s, reversed %s%s',
              v.id, v.status, v.amount_cents, v.presented, v.released, v.settled, v.returned,
              v.reversed,
              CASE WHEN v.named_right THEN ''
                   ELSE '; rows name another installment or payment than it serves' END)
           AS message,
       v.installment_ids || CASE WHEN v.installment_id IS NULL
                                   OR v.installment_id = ANY (v.installment_ids)
                                 THEN ARRAY[]::bigint[] ELSE ARRAY[v.installment_id] END
           AS installment_ids,
       ARRAY[v.id] AS attempt_ids,
       CASE WHEN v.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[v.payment_id] END
           AS payment_ids,
       ARRAY[v.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys,
       jsonb_build_object('amount_cents', v.amount_cents, 'status', v.status,
                          'presented_cents', v.presented, 'released_cents', v.released,
                          'settled_cents', v.settled, 'returned_cents', v.returned,
                          'reversed_cents', v.reversed) AS facts
FROM violations v
ORDER BY v.id
LIMIT $1;

-- reinitiation_cap --
-- NACHA reinitiation (Operating Rules 2.12.4): per installment and bank account, after the
-- first entry returned for insufficient or uncollected funds, at most $2 later presentments
-- (batch or manual), each within $3 days of that original entry's business date; and no
-- presentment on an account after an unauthorized return on it. A presentment is an attempt
-- whose entry may have gone out: declined, failed and refused attempts sent nothing. At most $1
-- On Citus: the NSF rule is per installment, so per customer (co-located, the presentments
-- read twice rather than through one CTE, which would become a whole intermediate result).
-- The unauthorized rule follows the account across customers: the unauthorized returns
-- (few) are gathered first and sent to every shard, where attempts on those accounts are
-- found by instrument key; only the offending attempts come back.
WITH presentment AS (
    SELECT DISTINCT m.installment_id, a.id AS attempt_id, a.instrument_key, a.as_of,
           a.customer_id
    FROM money_movements m
    JOIN charge_attempts a ON a.id = m.attempt_id AND a.customer_id = m.customer_id
    WHERE m.kind = 'presented' AND a.status NOT IN ('declined', 'failed', 'refused')
), original AS (
    SELECT DISTINCT ON (p.customer_id, p.installment_id, p.instrument_key)
           p.installment_id, p.instrument_key, p.attempt_id, p.as_of, p.customer_id
    FROM presentment p
    JOIN charge_returns r ON r.attempt_id = p.attempt_id AND r.customer_id = p.customer_id
    WHERE r.category = 'nsf'
    ORDER BY p.customer_id, p.installment_id, p.instrument_key, p.as_of, p.attempt_id
), later AS (
    SELECT DISTINCT m.installment_id, a.id AS attempt_id, a.instrument_key, a.as_of,
           a.customer_id
    FROM money_movements m
    JOIN charge_attempts a ON a.id = m.attempt_id AND a.customer_id = m.customer_id
    WHERE m.kind = 'presented' AND a.status NOT IN ('declined', 'failed', 'refused')
), over_nsf AS (
    SELECT o.installment_id, o.attempt_id AS original_id, o.as_of AS original_on,
           o.customer_id,
           array_agg(p.attempt_id ORDER BY p.attempt_id) AS later_ids,
           count(*) AS later,
           count(*) FILTER (WHERE p.as_of > o.as_of + $3::integer) AS late
    FROM original o
    JOIN later p
      ON p.installment_id = o.installment_id AND p.instrument_key = o.instrument_key
     AND p.customer_id = o.customer_id AND p.attempt_id > o.attempt_id
    GROUP BY o.installment_id, o.attempt_id, o.as_of, o.customer_id
    HAVING count(*) > $2::integer OR count(*) FILTER (WHERE p.as_of > o.as_of + $3::integer) > 0
), unauthorized AS MATERIALIZED (
    SELECT b.id AS returned_id, b.instrument_key, r.return_code, r.as_of AS returned_on,
           r.received_at, b.customer_id
    FROM charge_returns r
    JOIN charge_attempts b ON b.id = r.attempt_id AND b.customer_id = r.customer_id
    WHERE r.category = 'unauthorized'
), presented_after AS MATERIALIZED (
    SELECT u.returned_id, p.id, m.installment_id
    FROM unauthorized u
    JOIN charge_attempts p
      ON p.instrument_key = u.instrument_key AND p.id <> u.returned_id
     AND (p.as_of, p.created_at) > (u.returned_on, u.received_at)
     AND p.status NOT IN ('declined', 'failed', 'refused')
    LEFT JOIN money_movements m
           ON m.attempt_id = p.id AND m.customer_id = p.customer_id AND m.kind = 'presented'
), after_unauthorized AS (
    SELECT u.returned_id, u.return_code, u.returned_on, u.customer_id,
           array_agg(DISTINCT pa.id ORDER BY pa.id) AS later_ids,
           array_agg(DISTINCT pa.installment_id ORDER BY pa.installment_id)
               FILTER (WHERE pa.installment_id IS NOT NULL) AS installment_ids
    FROM unauthorized u
    JOIN presented_after pa ON pa.returned_id = u.returned_id
    GROUP BY u.returned_id, u.return_code, u.returned_on, u.customer_id
), violations AS (
    SELECT format('installment %s: after NSF return of attempt %s (%s), %s later'
                  ' presentment(s) (at most %s), %s past %s days: attempts %s',
                  o.installment_id, o.original_id, o.original_on, o.later, $2::integer,
                  o.late, $3::integer, array_to_string(o.later_ids, ', ')) AS message,
           ARRAY[o.installment_id] AS installment_ids,
           o.original_id || o.later_ids AS attempt_ids,
           o.customer_id,
           jsonb_build_object('original_attempt_id', o.original_id,
                              'original_on', o.original_on, 'later_presentments', o.later,
                              'past_window', o.late) AS facts,
           1 AS part, o.installment_id AS sort_id
    FROM over_nsf o
    UNION ALL
    SELECT format('attempt %s was returned unauthorized (%s) on %s; the account was presented'
                  ' again: attempts %s',
                  u.returned_id, u.return_code, u.returned_on,
                  array_to_string(u.later_ids, ', ')),
           coalesce(u.installment_ids, ARRAY[]::bigint[]),
           u.returned_id || u.later_ids,
           u.customer_id,
           jsonb_build_object('returned_attempt_id', u.returned_id,
                              'return_code', u.return_code, 'returned_on', u.returned_on),
           2, u.returned_id
    FROM after_unauthorized u
)
SELECT count(*) OVER () AS total, v.message, v.installment_ids, v.attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[v.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys, v.facts
FROM violations v
ORDER BY v.part, v.sort_id
LIMIT $1;

-- card_cap --
-- Cards with more declined attempts within a 30-day window (by business date) than their
-- network allows: $2 Visa, $3 Mastercard, $4 any other brand (the mapping of
-- collector.policy.CardRetryRules.cap). One row per card, its worst window. At most $1
--
-- On Citus a card's declines are counted per customer on the customer's shard. A card on
-- file with more than one customer is counted across them: those cards (few) are found
-- first (a count of distinct customers, which Citus sums per shard), their declines
-- gathered, and judged on the coordinator; the per-customer count leaves them out.
WITH shared AS MATERIALIZED (
    SELECT a.instrument_key
    FROM charge_attempts a
    WHERE a.status = 'declined'
    GROUP BY a.instrument_key
    HAVING count(DISTINCT a.customer_id) > 1
), decline AS (
    SELECT a.id, a.instrument_key, a.customer_id, a.payment_method_id, a.as_of, pm.brand,
           CASE
               WHEN lower(btrim(coalesce(pm.brand, ''))) = 'visa' THEN $2::integer
               WHEN lower(btrim(coalesce(pm.brand, ''))) IN ('mastercard', 'master card', 'mc')
                   THEN $3::integer
               ELSE $4::integer
           END AS cap
    FROM charge_attempts a
    JOIN payment_methods pm ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
    LEFT JOIN shared sh ON sh.instrument_key = a.instrument_key
    WHERE a.status = 'declined' AND pm.kind = 'card' AND sh.instrument_key IS NULL
), windowed AS (
    SELECT d.*, count(*) OVER w AS declines, min(d.as_of) OVER w AS window_from,
           array_agg(d.id) OVER w AS attempt_ids
    FROM decline d
    WINDOW w AS (PARTITION BY d.customer_id, d.instrument_key ORDER BY d.as_of
                 RANGE BETWEEN interval '29 days' PRECEDING AND CURRENT ROW)
), worst AS (
    SELECT DISTINCT ON (w.customer_id, w.instrument_key) w.*
    FROM windowed w
    WHERE w.declines > w.cap
    ORDER BY w.customer_id, w.instrument_key, w.declines DESC, w.as_of, w.id
), shared_decline AS MATERIALIZED (
    SELECT a.id, a.instrument_key, a.customer_id, a.payment_method_id, a.as_of, pm.brand,
           CASE
               WHEN lower(btrim(coalesce(pm.brand, ''))) = 'visa' THEN $2::integer
               WHEN lower(btrim(coalesce(pm.brand, ''))) IN ('mastercard', 'master card', 'mc')
                   THEN $3::integer
               ELSE $4::integer
           END AS cap
    FROM charge_attempts a
    JOIN payment_methods pm ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
    WHERE a.status = 'declined' AND pm.kind = 'card'
      AND a.instrument_key IN (SELECT sh.instrument_key FROM shared sh)
), shared_worst AS (
    SELECT DISTINCT ON (w.instrument_key) w.*
    FROM (
        SELECT d.*, count(*) OVER w AS declines, min(d.as_of) OVER w AS window_from,
               array_agg(d.id) OVER w AS attempt_ids
        FROM shared_decline d
        WINDOW w AS (PARTITION BY d.instrument_key ORDER BY d.as_of
                     RANGE BETWEEN interval '29 days' PRECEDING AND CURRENT ROW)
    ) w
    WHERE w.declines > w.cap
    ORDER BY w.instrument_key, w.declines DESC, w.as_of, w.id
), every_worst AS (
    SELECT w.* FROM worst w
    UNION ALL
    SELECT w.* FROM shared_worst w
)
SELECT count(*) OVER () AS total,
       format('card (method %s, %s) of customer %s: %s declined attempts from %s to %s'
              ' (cap %s in 30 days)',
              v.payment_method_id, coalesce(v.brand, 'no brand'), v.customer_id, v.declines,
              v.window_from, v.as_of, v.cap) AS message,
       ARRAY[]::bigint[] AS installment_ids,
       ARRAY(SELECT x FROM unnest(v.attempt_ids) AS x ORDER BY x) AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[v.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('payment_method_id', v.payment_method_id, 'brand', v.brand,
                          'declines', v.declines, 'cap', v.cap,
                          'window_from', v.window_from, 'window_to', v.as_of) AS facts
FROM every_worst v
ORDER BY v.customer_id, v.payment_method_id
LIMIT $1;

-- two_strike_stop --
-- Automatic presentments sent (not refused) after $2 consecutive failed automatic presentments
-- of the same lease's money to the same card or account (declined or returned, each known
-- before the presentment was claimed), with no authorization of that instrument between the
-- failures and it (the two-strike stop; $2 = 0: off). At most $1
--
-- On Citus: a lease is one customer's, so every join is by customer and each shard judges
-- its own. The last $2 earlier attempts of each are found by a self-join and a row number
-- over (customer, attempt), which Citus runs per shard, not by a LATERAL ... LIMIT over a
-- CTE (an intermediate result of every automatic attempt). The authorization that resets
-- the count is one the customer gave for the instrument (method_authorizations of the same
-- customer).
WITH auto AS (
    SELECT a.id, a.customer_id, a.instrument_key, a.status, a.created_at, i.lease_id,
           CASE WHEN a.status = 'returned' THEN r.received_at
                ELSE coalesce(a.resolved_at, a.updated_at) END AS failed_at,
           coalesce((SELECT max(z.authorized_at) FROM method_authorizations z
                     WHERE z.instrument_key = a.instrument_key
                       AND z.customer_id = a.customer_id
                       AND z.authorized_at < a.created_at), '-infinity'::timestamptz)
               AS authorized_at
    FROM charge_attempts a
    JOIN installments i ON i.id = a.installment_id AND i.customer_id = a.customer_id
    LEFT JOIN charge_returns r ON r.attempt_id = a.id AND r.customer_id = a.customer_id
    WHERE a.source IN ('batch', 'retry')
), earlier AS (
    SELECT a.id, a.customer_id, a.instrument_key, a.status, a.created_at, i.lease_id,
           CASE WHEN a.status = 'returned' THEN r.received_at
                ELSE coalesce(a.resolved_at, a.updated_at) END AS failed_at
    FROM charge_attempts a
    JOIN installments i ON i.id = a.installment_id AND i.customer_id = a.customer_id
    LEFT JOIN charge_returns r ON r.attempt_id = a.id AND r.customer_id = a.customer_id
    WHERE a.source IN ('batch', 'retry')
), ranked AS (
    SELECT s.id, s.customer_id, s.lease_id, s.status, d.id AS earlier_id,
           d.status AS earlier_status,
           row_number() OVER (PARTITION BY s.customer_id, s.id ORDER BY d.id DESC) AS back
    FROM auto s
    JOIN earlier d
      ON d.customer_id = s.customer_id AND d.lease_id = s.lease_id
     AND d.instrument_key = s.instrument_key AND d.id < s.id
     AND (d.status = 'succeeded'
          OR (d.status IN ('declined', 'returned') AND d.failed_at <= s.created_at))
     AND d.created_at > s.authorized_at
    WHERE $2::integer > 0 AND s.status <> 'refused'
), bad AS (
    SELECT r.id, r.customer_id, r.lease_id,
           array_agg(r.earlier_id ORDER BY r.earlier_id) AS failures
    FROM ranked r
    WHERE r.back <= $2::integer
    GROUP BY r.id, r.customer_id, r.lease_id
    HAVING count(*) = $2::integer AND bool_and(r.earlier_status <> 'succeeded')
)
SELECT count(*) OVER () AS total,
       format('attempt %s on lease %s of customer %s was presented automatically after %s'
              ' failed attempts in a row on the same method (%s) with no new authorization',
              b.id, b.lease_id, b.customer_id, $2::integer, array_to_string(b.failures, ', '))
           AS message,
       ARRAY[]::bigint[] AS installment_ids, ARRAY[b.id] || b.failures AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[b.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('lease_id', b.lease_id, 'failures', b.failures) AS facts
FROM bad b
ORDER BY b.id
LIMIT $1;

-- charge_offs --
-- Charge-offs that do not hold: a lease with charge-off rows in the journal whose status is
-- not charged_off; a charge-off row for more than its installment owes; an automatic
-- (batch or retry) attempt on a lease's money made after its charge-off. At most $1
--
-- On Citus every join is by customer (a lease is one customer's): the charged-off leases'
-- later attempts are aggregated beside them, not read by a correlated subquery (refused
-- over a grouped subquery).
WITH co AS (
    SELECT i.lease_id, i.customer_id, min(m.created_at) AS charged_off_at,
           min(m.as_of) AS charged_off_on,
           array_agg(i.id ORDER BY i.id) AS installment_ids,
           bool_or(m.amount_cents > i.owed_cents) AS over_amount
    FROM money_movements m
    JOIN installments i ON i.id = m.installment_id AND i.customer_id = m.customer_id
    WHERE m.kind = 'charged_off'
    GROUP BY i.lease_id, i.customer_id
), auto AS (
    SELECT ai.lease_id, ai.customer_id, a.id, a.created_at
    FROM charge_attempts a
    JOIN installments ai ON ai.id = a.installment_id AND ai.customer_id = a.customer_id
    WHERE a.source IN ('batch', 'retry')
), bad AS (
    SELECT co.lease_id, co.customer_id, co.charged_off_at, co.charged_off_on,
           co.installment_ids, co.over_amount, l.status,
           coalesce(array_agg(au.id ORDER BY au.id) FILTER (WHERE au.id IS NOT NULL),
                    ARRAY[]::bigint[]) AS after_ids
    FROM co
    JOIN leases l ON l.id = co.lease_id AND l.customer_id = co.customer_id
    LEFT JOIN auto au ON au.lease_id = co.lease_id AND au.customer_id = co.customer_id
                     AND au.created_at > co.charged_off_at
    GROUP BY co.lease_id, co.customer_id, co.charged_off_at, co.charged_off_on,
             co.installment_ids, co.over_amount, l.status
)
SELECT count(*) OVER () AS total,
       format('lease %s of customer %s, charged off on %s: %s', b.lease_id, b.customer_id,
              b.charged_off_on,
              concat_ws('; ',
                  CASE WHEN b.status <> 'charged_off' THEN 'its status is ' || b.status END,
                  CASE WHEN b.over_amount THEN 'a charge-off row exceeds its installment' END,
                  CASE WHEN cardinality(b.after_ids) > 0
                       THEN cardinality(b.after_ids) || ' automatic attempt(s) after it' END))
           AS message,
       b.installment_ids, b.after_ids AS attempt_ids, ARRAY[]::bigint[] AS payment_ids,
       ARRAY[b.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys,
       jsonb_build_object('lease_id', b.lease_id, 'status', b.status,
                          'charged_off_on', b.charged_off_on) AS facts
FROM bad b
WHERE b.status <> 'charged_off' OR b.over_amount OR cardinality(b.after_ids) > 0
ORDER BY b.lease_id
LIMIT $1;

-- payoffs --
-- Payoffs that do not hold (sql/0017): a paid_off lease with an installment neither paid nor
-- cancelled; a cancellation (or reinstatement) under no payoff payment, or a reinstatement
-- of more than was cancelled; a payoff whose money ended without coming in (declined,
-- failed, refused, returned) with cancellations still standing; a payoff whose money came
-- in or is in flight (succeeded, processing, pending, in doubt) with money of its lease still
-- collectable, or no cancellation of what its allocations left; a succeeded payoff whose
-- lease is not paid_off; a lease whose total of payments is not its schedule's sum. At most $1
--
-- On Citus every join and correlated subquery is by customer (a payment, its lease and its
-- installments are one customer's); each part is a co-located read of its own.
WITH per_payment AS (
    SELECT m.payment_id, m.installment_id, m.customer_id,
           sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint AS standing,
           bool_or(m.kind = 'reinstated') AS reinstated
    FROM money_movements m
    WHERE m.kind IN ('cancelled', 'reinstated')
    GROUP BY m.payment_id, m.installment_id, m.customer_id
), payoff AS (
    SELECT p.id, p.lease_id, p.customer_id, p.status, l.status AS lease_status,
           coalesce((SELECT sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint
                     FROM money_movements m
                     WHERE m.payment_id = p.id AND m.customer_id = p.customer_id
                       AND m.kind IN ('cancelled', 'reinstated')), 0) AS standing,
           EXISTS (SELECT 1 FROM installments i
                   WHERE i.lease_id = p.lease_id AND i.customer_id = p.customer_id
                     AND i.status IN ('scheduled', 'overdue')
                     AND i.owed_cents - i.paid_cents - i.in_flight_cents
                         - i.cancelled_cents > 0) AS collectable
    FROM payments p JOIN leases l ON l.id = p.lease_id AND l.customer_id = p.customer_id
    WHERE p.payoff
), bad AS (
    SELECT format('lease %s is paid off but installment(s) %s are neither paid nor cancelled',
                  l.id, string_agg(i.id::text, ', ' ORDER BY i.id)) AS message,
           array_agg(i.id ORDER BY i.id) AS installment_ids, ARRAY[]::bigint[] AS payment_ids,
           l.customer_id, l.id AS lease_id, 0 AS part
    FROM leases l JOIN installments i ON i.lease_id = l.id AND i.customer_id = l.customer_id
    WHERE l.status = 'paid_off' AND i.status NOT IN ('paid', 'cancelled')
    GROUP BY l.id, l.customer_id
    UNION ALL
    SELECT format('installment %s: %s', pp.installment_id,
                  CASE WHEN p.id IS NULL OR NOT p.payoff
                       THEN format('cancelled under payment %s, which is no payoff',
                                   pp.payment_id)
                       ELSE 'reinstated more than was cancelled' END),
           ARRAY[pp.installment_id], ARRAY[pp.payment_id], p.customer_id, p.lease_id, 1
    FROM per_payment pp
    LEFT JOIN payments p ON p.id = pp.payment_id AND p.customer_id = pp.customer_id
    WHERE p.id IS NULL OR NOT p.payoff OR pp.standing < 0
    UNION ALL
    SELECT format('payoff payment %s of lease %s is %s: %s', o.id, o.lease_id, o.status,
                  concat_ws('; ',
                      CASE WHEN o.status IN ('declined', 'failed', 'refused', 'returned')
                                AND o.standing > 0
                           THEN o.standing || ' cents still cancelled' END,
                      CASE WHEN o.status IN ('succeeded', 'processing', 'pending', 'in_doubt')
                                AND o.collectable
                           THEN 'money of its lease is still collectable' END,
                      CASE WHEN o.status = 'succeeded' AND o.lease_status <> 'paid_off'
                           THEN 'its lease is ' || o.lease_status END)),
           ARRAY[]::bigint[], ARRAY[o.id], o.customer_id, o.lease_id, 2
    FROM payoff o
    WHERE (o.status IN ('declined', 'failed', 'refused', 'returned') AND o.standing > 0)
       OR (o.status IN ('succeeded', 'processing', 'pending', 'in_doubt') AND o.collectable)
       OR (o.status = 'succeeded' AND o.lease_status <> 'paid_off')
    UNION ALL
    SELECT format('lease %s: its total of payments %s is not its schedule''s sum %s',
                  l.id, l.total_of_payments_cents, t.total),
           ARRAY[]::bigint[], ARRAY[]::bigint[], l.customer_id, l.id, 3
    FROM leases l
    LEFT JOIN (
        SELECT i.lease_id, i.customer_id, sum(i.amount_cents) AS total
        FROM installments i GROUP BY i.lease_id, i.customer_id
    ) s ON s.lease_id = l.id AND s.customer_id = l.customer_id
    CROSS JOIN LATERAL (SELECT coalesce(s.total, 0) AS total) t
    WHERE l.total_of_payments_cents IS NOT NULL AND l.total_of_payments_cents <> t.total
)
SELECT count(*) OVER () AS total, b.message, b.installment_ids,
       ARRAY[]::bigint[] AS attempt_ids, b.payment_ids,
       ARRAY[b.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys, jsonb_build_object('lease_id', b.lease_id) AS facts
FROM bad b
ORDER BY b.part, b.lease_id
LIMIT $1;

-- promises --
-- Promises to pay that do not hold: an automatic (batch or retry) presentment sent (not
-- refused) on a lease's money after a promise of it was made and before its resume_on
-- (unless it was broken or cancelled first); a
-- promise kept with less settled money counted than its amount, or broken with as much or
-- before its date had passed; more than one open promise on a lease. At most $1
-- On Citus: a promise, its lease and the lease's attempts are one customer's; the
-- correlated subqueries name the customer on every table, so each shard runs its own.
WITH paused AS (
    SELECT pr.id, pr.customer_id, pr.lease_id,
           ARRAY(SELECT a.id FROM charge_attempts a
                 JOIN installments ai ON ai.id = a.installment_id
                                     AND ai.customer_id = a.customer_id
                 WHERE ai.lease_id = pr.lease_id AND ai.customer_id = pr.customer_id
                   AND a.customer_id = pr.customer_id AND a.source IN ('batch', 'retry')
                   AND a.status <> 'refused'
                   AND a.created_at > pr.created_at
                   AND (pr.status IN ('open', 'kept') OR a.created_at < pr.resolved_at)
                   AND a.as_of < pr.resume_on
                 ORDER BY a.id) AS during_ids,
           pr.status = 'kept' AND pr.paid_cents < pr.amount_cents AS kept_short,
           pr.status = 'broken'
               AND (pr.paid_cents >= pr.amount_cents OR pr.resolved_on <= pr.promised_on)
               AS broken_wrongly,
           pr.status = 'open' AND EXISTS (
               SELECT 1 FROM promises o
               WHERE o.lease_id = pr.lease_id AND o.customer_id = pr.customer_id
                 AND o.status = 'open' AND o.id <> pr.id)
               AS another_open
    FROM promises pr
)
SELECT count(*) OVER () AS total,
       format('promise %s of lease %s of customer %s: %s', b.id, b.lease_id, b.customer_id,
              concat_ws('; ',
                  CASE WHEN cardinality(b.during_ids) > 0
                       THEN cardinality(b.during_ids)
                            || ' automatic presentment(s) during its pause' END,
                  CASE WHEN b.kept_short THEN 'kept with less than its amount counted' END,
                  CASE WHEN b.broken_wrongly
                       THEN 'broken with its amount counted or before its date' END,
                  CASE WHEN b.another_open THEN 'another promise of the lease is open' END))
           AS message,
       ARRAY[]::bigint[] AS installment_ids, b.during_ids AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[b.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('promise_id', b.id, 'lease_id', b.lease_id) AS facts
FROM paused b
WHERE cardinality(b.during_ids) > 0 OR b.kept_short OR b.broken_wrongly OR b.another_open
ORDER BY b.id
LIMIT $1;

-- late_fees --
-- Late fees that do not hold, by installment, against the rule table ($2 states, $3 grace
-- days, $4 basis points, $5 caps, $6 minimums; $7..$10 the default rule): a fee above its
-- rule's cap, or above the lesser of its percentage and the cap (its minimum aside); fees of
-- one installment above the cap in total (more than one fee); a fee assessed within its
-- grace days, or on a lease after its charge-off; a waiver with no fee, of another amount
-- than its fee, or twice. At most $1
WITH rules AS (
    SELECT * FROM unnest($2::text[], $3::integer[], $4::integer[], $5::bigint[], $6::bigint[])
      AS r(state, grace, bp, cap, min_cents)
), fees AS (
    SELECT m.installment_id, m.customer_id,
           count(*) FILTER (WHERE m.kind = 'fee_assessed') AS fees,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'fee_assessed'), 0) AS fee_cents,
           max(m.amount_cents) FILTER (WHERE m.kind = 'fee_assessed') AS largest,
           min(m.as_of) FILTER (WHERE m.kind = 'fee_assessed') AS assessed_on,
           min(m.created_at) FILTER (WHERE m.kind = 'fee_assessed') AS assessed_at,
           count(*) FILTER (WHERE m.kind = 'fee_waived') AS waivers,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'fee_waived'), 0) AS waived_cents
    FROM money_movements m
    WHERE m.kind IN ('fee_assessed', 'fee_waived')
    GROUP BY m.installment_id, m.customer_id
), charged_off AS (
    -- Each lease's charge-off, beside it (Citus refuses the correlated subquery over a
    -- grouped one); by customer like every join here.
    SELECT ci.lease_id, ci.customer_id, min(co.created_at) AS charged_off_at
    FROM installments ci
    JOIN money_movements co ON co.installment_id = ci.id AND co.customer_id = ci.customer_id
    WHERE co.kind = 'charged_off'
    GROUP BY ci.lease_id, ci.customer_id
), checked AS (
    SELECT f.*, i.lease_id, i.due_on, i.amount_cents, l.state,
           coalesce(r.cap, $9::bigint) AS cap,
           greatest(coalesce(r.min_cents, $10::bigint),
                    i.amount_cents * coalesce(r.bp, $8::integer) / 10000) AS by_percent,
           coalesce(r.grace, $7::integer) AS grace,
           cof.charged_off_at
    FROM fees f
    JOIN installments i ON i.id = f.installment_id AND i.customer_id = f.customer_id
    JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id
    LEFT JOIN charged_off cof ON cof.lease_id = i.lease_id AND cof.customer_id = i.customer_id
    LEFT JOIN rules r ON r.state = l.state
), bad AS (
    SELECT c.*,
           concat_ws('; ',
               CASE WHEN c.largest > c.cap THEN format('a fee of %s cents is above the cap of %s',
                                                      c.largest, c.cap) END,
               CASE WHEN c.largest > c.by_percent AND c.largest <= c.cap
                    THEN format('a fee of %s cents is above %s (its percentage of %s)',
                                c.largest, c.by_percent, c.amount_cents) END,
               CASE WHEN c.fee_cents > c.cap
                    THEN format('%s fee(s) total %s cents, above the cap of %s', c.fees,
                                c.fee_cents, c.cap) END,
               CASE WHEN c.fees > 0 AND c.assessed_on - c.due_on <= c.grace
                    THEN format('assessed on %s, within %s grace days of %s', c.assessed_on,
                                c.grace, c.due_on) END,
               CASE WHEN c.assessed_at > c.charged_off_at
                    THEN 'assessed after the lease was charged off' END,
               CASE WHEN c.waivers > 0 AND c.fees = 0 THEN 'a waiver with no fee' END,
               CASE WHEN c.waivers > 1 THEN format('waived %s times', c.waivers) END,
               CASE WHEN c.waivers = 1 AND c.fees = 1 AND c.waived_cents <> c.fee_cents
                    THEN format('a waiver of %s cents for a fee of %s', c.waived_cents,
                                c.fee_cents) END) AS problems
    FROM checked c
)
SELECT count(*) OVER () AS total,
       format('installment %s of lease %s (%s): %s', b.installment_id, b.lease_id,
              coalesce(b.state, 'no state'), b.problems) AS message,
       ARRAY[b.installment_id] AS installment_ids, ARRAY[]::bigint[] AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids, ARRAY[b.customer_id] AS customer_ids,
       ARRAY[]::bigint[] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('fee_cents', b.fee_cents, 'cap_cents', b.cap,
                          'waived_cents', b.waived_cents) AS facts
FROM bad b
WHERE b.problems <> ''
ORDER BY b.installment_id
LIMIT $1;

-- open_needs_attention --
-- Rows set aside for an operator and not yet resolved, oldest first, at most $1 (their
-- detail is not shown: it is the writer's, and the audit prints ids and amounts only)
SELECT count(*) OVER () AS total,
       format('%s %s set aside on %s: %s', n.subject, n.subject_id,
              date_trunc('second', n.created_at), n.reason) AS message,
       ARRAY[]::bigint[] AS installment_ids, ARRAY[]::bigint[] AS attempt_ids,
       ARRAY[]::bigint[] AS payment_ids,
       CASE WHEN n.customer_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[n.customer_id] END
           AS customer_ids,
       ARRAY[n.id] AS attention_ids, ARRAY[]::text[] AS keys,
       jsonb_build_object('subject', n.subject, 'subject_id', n.subject_id,
                          'reason', n.reason, 'created_at', n.created_at) AS facts
FROM needs_attention n
WHERE n.resolved_at IS NULL
ORDER BY n.id
LIMIT $1;

-- sandbox_present --
-- Whether the sandbox gateways ever opened on this database (their table exists)
SELECT to_regclass('sandbox.charges') IS NOT NULL;

-- prenote_before_live --
-- Live bank debits sent to an account that had a prenote open or later found closed, before
-- that prenote was in a written file, less than 3 days (the banking-day wait is at least as
-- long) after its effective entry date, or after it came back for a closed account or a
-- revoked authorization ($2 codes), at most $1
--
-- The rule follows the account, whoever's attempt it is. On Citus the prenote and the
-- attempts of its own customer are judged on their shard; an account on file with more
-- than one customer (few: a count of distinct customers, which Citus sums per shard) has
-- its prenotes gathered and sent to every shard to meet other customers' attempts there.
WITH shared AS MATERIALIZED (
    SELECT pm.instrument_key
    FROM payment_methods pm
    WHERE pm.kind = 'ach'
    GROUP BY pm.instrument_key
    HAVING count(DISTINCT pm.customer_id) > 1
), shared_prenote AS MATERIALIZED (
    SELECT p.id, p.customer_id, p.instrument_key, p.gateway, p.created_at, p.return_code,
           p.returned_on, f.written_at, f.effective_on
    FROM ach_prenotes p
    JOIN ach_entries e ON e.idempotency_key = p.idempotency_key AND e.customer_id = p.customer_id
    LEFT JOIN ach_files f ON f.file_name = e.file_name
    WHERE p.instrument_key IN (SELECT sh.instrument_key FROM shared sh)
), pair AS (
    -- Each leg keeps only the debits that break the rule (the filter inside each, so only
    -- they leave the shards).
    SELECT p.id AS prenote_id, p.return_code, p.returned_on, f.written_at, f.effective_on,
           a.id, a.installment_id, a.payment_id, a.customer_id, a.as_of, a.created_at
    FROM ach_prenotes p
    JOIN ach_entries e ON e.idempotency_key = p.idempotency_key AND e.customer_id = p.customer_id
    LEFT JOIN ach_files f ON f.file_name = e.file_name
    JOIN charge_attempts a ON a.instrument_key = p.instrument_key AND a.gateway = p.gateway
                          AND a.customer_id = p.customer_id
    WHERE a.status IN ('processing', 'succeeded', 'returned')
      AND a.created_at > p.created_at
      AND (p.return_code IS NULL OR p.return_code = ANY ($2::text[]))
      AND (CASE WHEN p.return_code = ANY ($2::text[]) THEN a.as_of >= p.returned_on
                ELSE f.written_at IS NULL OR f.written_at > a.created_at
                     OR a.as_of < f.effective_on + 3 END)
    UNION ALL
    SELECT p.id, p.return_code, p.returned_on, p.written_at, p.effective_on,
           a.id, a.installment_id, a.payment_id, a.customer_id, a.as_of, a.created_at
    FROM shared_prenote p
    JOIN charge_attempts a ON a.instrument_key = p.instrument_key AND a.gateway = p.gateway
                          AND a.customer_id <> p.customer_id
    WHERE a.status IN ('processing', 'succeeded', 'returned')
      AND a.created_at > p.created_at
      AND (p.return_code IS NULL OR p.return_code = ANY ($2::text[]))
      AND (CASE WHEN p.return_code = ANY ($2::text[]) THEN a.as_of >= p.returned_on
                ELSE p.written_at IS NULL OR p.written_at > a.created_at
                     OR a.as_of < p.effective_on + 3 END)
)
SELECT count(*) OVER () AS total,
       format('attempt %s debited the account of prenote %s (%s) before it validated it',
              a.id, a.prenote_id,
              CASE WHEN a.return_code = ANY ($2::text[]) THEN 'returned ' || a.return_code
                   WHEN a.written_at IS NULL OR a.written_at > a.created_at
                       THEN 'not yet filed'
                   ELSE 'filed effective ' || a.effective_on END) AS message,
       CASE WHEN a.installment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.installment_id]
       END AS installment_ids,
       ARRAY[a.id] AS attempt_ids,
       CASE WHEN a.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.payment_id] END
           AS payment_ids,
       ARRAY[a.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys,
       jsonb_build_object('prenote_id', a.prenote_id, 'as_of', a.as_of,
                          'prenote_effective_on', a.effective_on) AS facts
FROM pair a
ORDER BY a.id
LIMIT $1;
