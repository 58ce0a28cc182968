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
           (array_agg(m.retry_on ORDER BY m.id DESC) FILTER (WHERE m.sets_plan))[1] AS plan_on
    FROM money_movements m
    GROUP BY m.installment_id
), derived AS (
    SELECT i.id, i.lease_id, i.due_on, i.amount_cents, i.paid_cents, i.in_flight_cents,
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
    LEFT JOIN sums s ON s.installment_id = i.id
), checked AS (
    SELECT d.*,
           installment_next_attempt_v1(d.d_status, d.planned, d.plan_on, d.due_on) AS d_next
    FROM derived d
), violations AS (
    SELECT c.*, l.customer_id
    FROM checked c
    JOIN leases l ON l.id = c.lease_id
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
    SELECT a.payment_id, count(*) AS attempts, min(a.id) AS attempt_id,
           min(a.status) AS status, min(a.amount_cents) AS amount_cents
    FROM charge_attempts a
    WHERE a.payment_id IS NOT NULL
    GROUP BY a.payment_id
), journal AS (
    SELECT m.payment_id, m.installment_id,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'presented'), 0) AS presented,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'released'), 0) AS released,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'settled'), 0) AS settled,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'returned'), 0) AS returned,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'reversed'), 0) AS reversed
    FROM money_movements m
    -- A payoff's cancellations move no money: the payoffs check judges them.
    WHERE m.payment_id IS NOT NULL AND m.kind NOT IN ('cancelled', 'reinstated')
    GROUP BY m.payment_id, m.installment_id
), line AS (
    SELECT coalesce(pa.payment_id, j.payment_id) AS payment_id,
           coalesce(pa.installment_id, j.installment_id) AS installment_id,
           coalesce(pa.amount_cents, 0) AS allocated,
           coalesce(j.presented, 0) AS presented, coalesce(j.released, 0) AS released,
           coalesce(j.settled, 0) AS settled, coalesce(j.returned, 0) AS returned,
           coalesce(j.reversed, 0) AS reversed
    FROM payment_allocations pa
    FULL JOIN journal j ON j.payment_id = pa.payment_id AND j.installment_id = pa.installment_id
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
    JOIN payments p ON p.id = l.payment_id
    LEFT JOIN installments i ON i.id = l.installment_id
), per_payment AS (
    SELECT j.payment_id,
           sum(j.allocated) AS allocated,
           array_agg(j.installment_id ORDER BY j.installment_id) AS installment_ids,
           string_agg(format('installment %s allocated %s: presented %s, released %s,'
                             ' settled %s, returned %s, reversed %s',
                             j.installment_id, j.allocated, j.presented, j.released,
                             j.settled, j.returned, j.reversed), '; '
                      ORDER BY j.installment_id) FILTER (WHERE NOT j.ok) AS bad_lines,
           bool_or(j.installment_lease_id IS DISTINCT FROM j.lease_id) AS other_lease
    FROM judged j
    GROUP BY j.payment_id
), violations AS (
    SELECT p.id, p.customer_id, p.status, p.amount_cents, a.attempt_id,
           coalesce(pp.installment_ids, ARRAY[]::bigint[]) AS installment_ids,
           array_remove(ARRAY[
               CASE WHEN coalesce(a.attempts, 0) <> 1
                    THEN format('%s attempts (one expected)', coalesce(a.attempts, 0)) END,
               CASE WHEN a.attempts = 1 AND a.status <> p.status
                    THEN format('its attempt %s is %s', a.attempt_id, a.status) END,
               CASE WHEN a.attempts = 1 AND a.amount_cents <> p.amount_cents
                    THEN format('its attempt %s is for %s', a.attempt_id, a.amount_cents) END,
               CASE WHEN coalesce(pp.allocated, 0) <> p.amount_cents
                    THEN format('allocations sum to %s', coalesce(pp.allocated, 0)) END,
               CASE WHEN pp.other_lease
                    THEN 'allocated to an installment of another lease' END,
               pp.bad_lines
           ], NULL) AS problems
    FROM payments p
    LEFT JOIN attempt a ON a.payment_id = p.id
    LEFT JOIN per_payment pp ON pp.payment_id = p.id
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
WITH bad AS (
    SELECT m.id AS row_id, m.installment_id, m.attempt_id, m.payment_id, m.customer_id,
           array_remove(ARRAY[
               CASE WHEN i.id IS NULL THEN 'no such installment' END,
               CASE WHEN i.id IS NOT NULL AND l.customer_id IS DISTINCT FROM m.customer_id
                    THEN format('the installment is customer %s''s', l.customer_id) END,
               CASE WHEN m.attempt_id IS NOT NULL AND a.id IS NULL THEN 'no such attempt' END,
               CASE WHEN a.id IS NOT NULL AND a.customer_id <> m.customer_id
                    THEN format('the attempt is customer %s''s', a.customer_id) END,
               CASE WHEN m.payment_id IS NOT NULL AND p.id IS NULL THEN 'no such payment' END,
               CASE WHEN p.id IS NOT NULL AND p.customer_id <> m.customer_id
                    THEN format('the payment is customer %s''s', p.customer_id) END
           ], NULL) AS problems
    FROM money_movements m
    LEFT JOIN installments i ON i.id = m.installment_id
    LEFT JOIN leases l ON l.id = i.lease_id
    LEFT JOIN charge_attempts a ON a.id = m.attempt_id
    LEFT JOIN payments p ON p.id = m.payment_id
), rows_bad AS (
    SELECT format('journal row %s: %s', b.row_id, array_to_string(b.problems, '; ')) AS message,
           b.installment_id, b.attempt_id, b.payment_id, b.customer_id, b.row_id AS sort_id, 0 AS part
    FROM bad b
    WHERE cardinality(b.problems) > 0
    UNION ALL
    SELECT format('attempt %s is customer %s''s but its method %s is customer %s''s',
                  a.id, a.customer_id, pm.id, pm.customer_id),
           a.installment_id, a.id, a.payment_id, a.customer_id, a.id, 1
    FROM charge_attempts a
    JOIN payment_methods pm ON pm.id = a.payment_method_id
    WHERE pm.customer_id <> a.customer_id
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
               - movement_fee_waived_cents_v1(m.kind, m.amount_cents))::bigint AS fees
    FROM money_movements m
    GROUP BY m.installment_id
), violations AS (
    SELECT i.id, i.amount_cents + s.fees AS amount_cents, l.customer_id, s.paid, s.in_flight,
           s.cancelled
    FROM sums s
    JOIN installments i ON i.id = s.installment_id
    JOIN leases l ON l.id = i.lease_id
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
               AS named_right
    FROM money_movements m
    JOIN charge_attempts a ON a.id = m.attempt_id
    WHERE m.attempt_id IS NOT NULL
    GROUP BY m.attempt_id, m.installment_id
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
    JOIN charge_attempts a ON a.id = l.attempt_id
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
    LEFT JOIN judged j ON j.attempt_id = a.id
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
WITH presentment AS (
    SELECT DISTINCT m.installment_id, a.id AS attempt_id, a.instrument_key, a.as_of,
           a.customer_id
    FROM money_movements m
    JOIN charge_attempts a ON a.id = m.attempt_id
    WHERE m.kind = 'presented' AND a.status NOT IN ('declined', 'failed', 'refused')
), original AS (
    SELECT DISTINCT ON (p.installment_id, p.instrument_key)
           p.installment_id, p.instrument_key, p.attempt_id, p.as_of, p.customer_id
    FROM presentment p
    JOIN charge_returns r ON r.attempt_id = p.attempt_id
    WHERE r.category = 'nsf'
    ORDER BY p.installment_id, p.instrument_key, p.as_of, p.attempt_id
), over_nsf AS (
    SELECT o.installment_id, o.attempt_id AS original_id, o.as_of AS original_on,
           o.customer_id,
           array_agg(p.attempt_id ORDER BY p.attempt_id) AS later_ids,
           count(*) AS later,
           count(*) FILTER (WHERE p.as_of > o.as_of + $3::integer) AS late
    FROM original o
    JOIN presentment p
      ON p.installment_id = o.installment_id AND p.instrument_key = o.instrument_key
     AND p.attempt_id > o.attempt_id
    GROUP BY o.installment_id, o.attempt_id, o.as_of, o.customer_id
    HAVING count(*) > $2::integer OR count(*) FILTER (WHERE p.as_of > o.as_of + $3::integer) > 0
), after_unauthorized AS (
    SELECT b.id AS returned_id, r.return_code, r.as_of AS returned_on, b.customer_id,
           array_agg(DISTINCT p.id ORDER BY p.id) AS later_ids,
           array_agg(DISTINCT m.installment_id ORDER BY m.installment_id)
               FILTER (WHERE m.installment_id IS NOT NULL) AS installment_ids
    FROM charge_returns r
    JOIN charge_attempts b ON b.id = r.attempt_id
    JOIN charge_attempts p
      ON p.instrument_key = b.instrument_key AND p.id <> b.id
     AND (p.as_of, p.created_at) > (r.as_of, r.received_at)
     AND p.status NOT IN ('declined', 'failed', 'refused')
    LEFT JOIN money_movements m ON m.attempt_id = p.id AND m.kind = 'presented'
    WHERE r.category = 'unauthorized'
    GROUP BY b.id, r.return_code, r.as_of, b.customer_id
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
WITH decline AS (
    SELECT a.id, a.instrument_key, a.customer_id, a.payment_method_id, a.as_of, pm.brand,
           CASE
               WHEN lower(btrim(coalesce(pm.brand, ''))) = 'visa' THEN $2::integer
               WHEN lower(btrim(coalesce(pm.brand, ''))) IN ('mastercard', 'master card', 'mc')
                   THEN $3::integer
               ELSE $4::integer
           END AS cap
    FROM charge_attempts a
    JOIN payment_methods pm ON pm.id = a.payment_method_id
    WHERE a.status = 'declined' AND pm.kind = 'card'
), windowed AS (
    SELECT d.*, count(*) OVER w AS declines, min(d.as_of) OVER w AS window_from,
           array_agg(d.id) OVER w AS attempt_ids
    FROM decline d
    WINDOW w AS (PARTITION BY d.instrument_key ORDER BY d.as_of
                 RANGE BETWEEN interval '29 days' PRECEDING AND CURRENT ROW)
), worst AS (
    SELECT DISTINCT ON (w.instrument_key) w.*
    FROM windowed w
    WHERE w.declines > w.cap
    ORDER BY w.instrument_key, w.declines DESC, w.as_of, w.id
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
FROM worst v
ORDER BY v.customer_id, v.payment_method_id
LIMIT $1;

-- two_strike_stop --
-- Automatic presentments sent (not refused) after $2 consecutive failed automatic presentments
-- of the same lease's money to the same card or account (declined or returned, each known
-- before the presentment was claimed), with no authorization of that instrument between the
-- failures and it (the two-strike stop; $2 = 0: off). At most $1
WITH auto AS (
    SELECT a.id, a.customer_id, a.instrument_key, a.status, a.created_at, i.lease_id,
           CASE WHEN a.status = 'returned' THEN r.received_at
                ELSE coalesce(a.resolved_at, a.updated_at) END AS failed_at
    FROM charge_attempts a
    JOIN installments i ON i.id = a.installment_id
    LEFT JOIN charge_returns r ON r.attempt_id = a.id
    WHERE a.source IN ('batch', 'retry')
), bad AS (
    SELECT s.*, run.failures
    FROM auto s
    CROSS JOIN LATERAL (
        SELECT array_agg(d.id ORDER BY d.id) AS failures
        FROM (
            SELECT d.id, d.status
            FROM auto d
            WHERE d.lease_id = s.lease_id AND d.instrument_key = s.instrument_key
              AND d.id < s.id
              AND (d.status = 'succeeded'
                   OR (d.status IN ('declined', 'returned') AND d.failed_at <= s.created_at))
              AND d.created_at > coalesce(
                  (SELECT max(z.authorized_at) FROM method_authorizations z
                   WHERE z.instrument_key = s.instrument_key
                     AND z.authorized_at < s.created_at), '-infinity'::timestamptz)
            ORDER BY d.id DESC
            LIMIT $2::integer
        ) d
        HAVING count(*) = $2::integer AND bool_and(d.status <> 'succeeded')
    ) run
    WHERE $2::integer > 0 AND s.status <> 'refused'
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
WITH co AS (
    SELECT i.lease_id, min(m.created_at) AS charged_off_at, min(m.as_of) AS charged_off_on,
           array_agg(i.id ORDER BY i.id) AS installment_ids,
           bool_or(m.amount_cents > i.owed_cents) AS over_amount
    FROM money_movements m
    JOIN installments i ON i.id = m.installment_id
    WHERE m.kind = 'charged_off'
    GROUP BY i.lease_id
), bad AS (
    SELECT co.*, l.customer_id, l.status,
           ARRAY(SELECT a.id FROM charge_attempts a JOIN installments ai ON ai.id = a.installment_id
                 WHERE ai.lease_id = co.lease_id AND a.source IN ('batch', 'retry')
                   AND a.created_at > co.charged_off_at
                 ORDER BY a.id) AS after_ids
    FROM co JOIN leases l ON l.id = co.lease_id
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
WITH per_payment AS (
    SELECT m.payment_id, m.installment_id,
           sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint AS standing,
           bool_or(m.kind = 'reinstated') AS reinstated
    FROM money_movements m
    WHERE m.kind IN ('cancelled', 'reinstated')
    GROUP BY m.payment_id, m.installment_id
), payoff AS (
    SELECT p.id, p.lease_id, p.customer_id, p.status, l.status AS lease_status,
           coalesce((SELECT sum(pp.standing) FROM per_payment pp WHERE pp.payment_id = p.id),
                    0) AS standing,
           EXISTS (SELECT 1 FROM installments i
                   WHERE i.lease_id = p.lease_id AND i.status IN ('scheduled', 'overdue')
                     AND i.owed_cents - i.paid_cents - i.in_flight_cents
                         - i.cancelled_cents > 0) AS collectable
    FROM payments p JOIN leases l ON l.id = p.lease_id
    WHERE p.payoff
), bad AS (
    SELECT format('lease %s is paid off but installment(s) %s are neither paid nor cancelled',
                  l.id, string_agg(i.id::text, ', ' ORDER BY i.id)) AS message,
           array_agg(i.id ORDER BY i.id) AS installment_ids, ARRAY[]::bigint[] AS payment_ids,
           l.customer_id, l.id AS lease_id, 0 AS part
    FROM leases l JOIN installments i ON i.lease_id = l.id
    WHERE l.status = 'paid_off' AND i.status NOT IN ('paid', 'cancelled')
    GROUP BY l.id, l.customer_id
    UNION ALL
    SELECT format('installment %s: %s', pp.installment_id,
                  CASE WHEN p.id IS NULL OR NOT p.payoff
                       THEN format('cancelled under payment %s, which is no payoff',
                                   pp.payment_id)
                       ELSE 'reinstated more than was cancelled' END),
           ARRAY[pp.installment_id], ARRAY[pp.payment_id], p.customer_id, p.lease_id, 1
    FROM per_payment pp LEFT JOIN payments p ON p.id = pp.payment_id
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
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(i.amount_cents), 0) AS total
        FROM installments i WHERE i.lease_id = l.id
    ) t
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
WITH paused AS (
    SELECT pr.id, pr.customer_id, pr.lease_id,
           ARRAY(SELECT a.id FROM charge_attempts a
                 JOIN installments ai ON ai.id = a.installment_id
                 WHERE ai.lease_id = pr.lease_id AND a.source IN ('batch', 'retry')
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
               WHERE o.lease_id = pr.lease_id AND o.status = 'open' AND o.id <> pr.id)
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
    SELECT m.installment_id,
           count(*) FILTER (WHERE m.kind = 'fee_assessed') AS fees,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'fee_assessed'), 0) AS fee_cents,
           max(m.amount_cents) FILTER (WHERE m.kind = 'fee_assessed') AS largest,
           min(m.as_of) FILTER (WHERE m.kind = 'fee_assessed') AS assessed_on,
           min(m.created_at) FILTER (WHERE m.kind = 'fee_assessed') AS assessed_at,
           count(*) FILTER (WHERE m.kind = 'fee_waived') AS waivers,
           coalesce(sum(m.amount_cents) FILTER (WHERE m.kind = 'fee_waived'), 0) AS waived_cents
    FROM money_movements m
    WHERE m.kind IN ('fee_assessed', 'fee_waived')
    GROUP BY m.installment_id
), checked AS (
    SELECT f.*, i.lease_id, i.due_on, i.amount_cents, l.customer_id, l.state,
           coalesce(r.cap, $9::bigint) AS cap,
           greatest(coalesce(r.min_cents, $10::bigint),
                    i.amount_cents * coalesce(r.bp, $8::integer) / 10000) AS by_percent,
           coalesce(r.grace, $7::integer) AS grace,
           (SELECT min(co.created_at) FROM installments ci
            JOIN money_movements co ON co.installment_id = ci.id AND co.kind = 'charged_off'
            WHERE ci.lease_id = i.lease_id) AS charged_off_at
    FROM fees f
    JOIN installments i ON i.id = f.installment_id
    JOIN leases l ON l.id = i.lease_id
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
SELECT count(*) OVER () AS total,
       format('attempt %s debited the account of prenote %s (%s) before it validated it',
              a.id, p.id, CASE WHEN p.return_code = ANY ($2::text[]) THEN 'returned '
                                                                     || p.return_code
                               WHEN f.written_at IS NULL OR f.written_at > a.created_at
                                   THEN 'not yet filed'
                               ELSE 'filed effective ' || f.effective_on END) AS message,
       CASE WHEN a.installment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.installment_id]
       END AS installment_ids,
       ARRAY[a.id] AS attempt_ids,
       CASE WHEN a.payment_id IS NULL THEN ARRAY[]::bigint[] ELSE ARRAY[a.payment_id] END
           AS payment_ids,
       ARRAY[a.customer_id] AS customer_ids, ARRAY[]::bigint[] AS attention_ids,
       ARRAY[]::text[] AS keys,
       jsonb_build_object('prenote_id', p.id, 'as_of', a.as_of,
                          'prenote_effective_on', f.effective_on) AS facts
FROM ach_prenotes p
JOIN ach_entries e ON e.idempotency_key = p.idempotency_key
LEFT JOIN ach_files f ON f.file_name = e.file_name
JOIN charge_attempts a ON a.instrument_key = p.instrument_key AND a.gateway = p.gateway
WHERE a.status IN ('processing', 'succeeded', 'returned')
  AND a.created_at > p.created_at
  AND (p.return_code IS NULL OR p.return_code = ANY ($2::text[]))
  AND (CASE WHEN p.return_code = ANY ($2::text[]) THEN a.as_of >= p.returned_on
            ELSE f.written_at IS NULL OR f.written_at > a.created_at
                 OR a.as_of < f.effective_on + 3 END)
ORDER BY a.id
LIMIT $1;
