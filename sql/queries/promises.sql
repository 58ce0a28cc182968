-- Promises to pay (collector/db/promises.py; the table and promise_money_v1 in
-- sql/0020_promises_to_pay.sql). Past due ("overdue") is lease_balance_v3's
-- (sql/0021_late_fees.sql): what is owed (rent + late fees - waivers) neither paid, in flight
-- nor cancelled, of installments due before the business date.

-- lock_lease --
-- Lock lease $1 of customer $3 for a new promise, with its status and its overdue amount on
-- business date $2 (the same lease lock manual pay takes: the two run one at a time per
-- lease); the balance is read after the lock is held, in one call (promise_lock_lease_v1,
-- sql/0023_route_portal.sql: every statement names the customer); no row for no such lease
SELECT id, customer_id, status, overdue_cents
FROM promise_lock_lease_v1($3, $1, $2::date);

-- open_promise --
-- The id of lease $1's (customer $2's) open promise, if any
SELECT id FROM promises WHERE customer_id = $2 AND lease_id = $1 AND status = 'open';

-- insert --
-- Record an open promise of lease $1 (customer $2) to pay $3 cents by $5, made on $4, $6:
-- collect it automatically on that date
INSERT INTO promises (customer_id, lease_id, amount_cents, made_on, promised_on, auto_collect)
VALUES ($2, $1, $3, $4, $5, $6)
RETURNING id;

-- list --
-- Lease $1's (customer $2's) promises, newest first, with the money counted toward each (for
-- an open one, as it stands now; for a resolved one, what counted when it was resolved):
-- lease_promises_v1 (sql/0023_route_portal.sql), every statement naming the customer
SELECT id, lease_id, amount_cents, made_on, promised_on, auto_collect, resume_on, status,
       resolved_on, payment_id, created_at, paid_cents, pending_cents
FROM lease_promises_v1($2, $1);

-- resolve --
-- Decide every open promise on business date $1 in one statement: kept once the settled
-- money counted toward it reaches its amount; cancelled when its lease is no longer active;
-- broken once its date has passed and the money counted, in flight included, falls short.
-- The money counted: the lease's journal rows under attempts made from the promise's
-- creation to its date (what promise_money_v2 counts for one promise), summed here for all
-- of them with every join on the customer, so that on Citus each shard decides its own
-- promises (a function per row inside the statement would run nested on the workers).
-- Returns the promises resolved.
WITH counted AS (
    SELECT pr.customer_id, pr.id, pr.amount_cents, pr.promised_on, l.status AS lease_status,
           coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents))
                        FILTER (WHERE a.id IS NOT NULL), 0)::bigint AS settled_cents,
           coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))
                        FILTER (WHERE a.id IS NOT NULL), 0)::bigint AS in_flight_cents
    FROM promises pr
    JOIN leases l ON l.id = pr.lease_id AND l.customer_id = pr.customer_id
    LEFT JOIN installments i ON i.lease_id = pr.lease_id AND i.customer_id = pr.customer_id
    LEFT JOIN money_movements m ON m.installment_id = i.id AND m.customer_id = i.customer_id
    LEFT JOIN charge_attempts a
      ON a.id = m.attempt_id AND a.customer_id = m.customer_id
     AND a.created_at >= pr.created_at AND a.as_of <= pr.promised_on
    WHERE pr.status = 'open'
    GROUP BY pr.customer_id, pr.id, pr.amount_cents, pr.promised_on, l.status
), decided AS (
    SELECT c.*,
           CASE
               WHEN c.settled_cents >= c.amount_cents THEN 'kept'
               WHEN c.lease_status <> 'active' THEN 'cancelled'
               WHEN c.promised_on < $1::date
                    AND c.settled_cents + c.in_flight_cents < c.amount_cents THEN 'broken'
           END AS outcome
    FROM counted c
)
UPDATE promises pr
SET status = d.outcome, paid_cents = d.settled_cents, resolved_on = $1::date,
    resolved_at = now()
FROM decided d
WHERE pr.customer_id = d.customer_id AND pr.id = d.id
  AND d.outcome IS NOT NULL AND pr.status = 'open'
RETURNING pr.id, pr.lease_id, pr.customer_id, pr.status, pr.amount_cents, pr.paid_cents;

-- due_collections --
-- The open promises of active leases to collect automatically on business date $1: their
-- date is $1; what they still lack (amount - settled - in flight, counted as in resolve),
-- and what to collect: that, at most the lease's overdue amount (what manual pay can take:
-- lease_balances_v1's overdue_cents). Joined on the customer throughout (see resolve).
WITH due AS (
    SELECT pr.customer_id, pr.id, pr.lease_id, pr.amount_cents, pr.created_at, pr.promised_on
    FROM promises pr
    JOIN leases l ON l.id = pr.lease_id AND l.customer_id = pr.customer_id AND l.status = 'active'
    WHERE pr.status = 'open' AND pr.auto_collect AND pr.promised_on = $1::date
), counted AS (
    SELECT d.customer_id, d.id,
           coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents))
                        FILTER (WHERE a.id IS NOT NULL), 0)::bigint AS settled_cents,
           coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))
                        FILTER (WHERE a.id IS NOT NULL), 0)::bigint AS in_flight_cents
    FROM due d
    LEFT JOIN installments i ON i.lease_id = d.lease_id AND i.customer_id = d.customer_id
    LEFT JOIN money_movements m ON m.installment_id = i.id AND m.customer_id = i.customer_id
    LEFT JOIN charge_attempts a
      ON a.id = m.attempt_id AND a.customer_id = m.customer_id
     AND a.created_at >= d.created_at AND a.as_of <= d.promised_on
    GROUP BY d.customer_id, d.id
), overdue AS (
    SELECT d.customer_id, d.id,
           coalesce(sum(i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents)
                        FILTER (WHERE i.due_on < $1::date
                                  AND i.status IN ('scheduled', 'overdue')), 0)::bigint
               AS overdue_cents
    FROM due d
    LEFT JOIN installments i ON i.lease_id = d.lease_id AND i.customer_id = d.customer_id
    GROUP BY d.customer_id, d.id
)
SELECT d.id, d.lease_id, d.customer_id,
       d.amount_cents - c.settled_cents - c.in_flight_cents AS missing_cents,
       least(d.amount_cents - c.settled_cents - c.in_flight_cents, o.overdue_cents)
           AS collect_cents
FROM due d
JOIN counted c ON c.customer_id = d.customer_id AND c.id = d.id
JOIN overdue o ON o.customer_id = d.customer_id AND o.id = d.id
WHERE d.amount_cents - c.settled_cents - c.in_flight_cents > 0
ORDER BY d.id;

-- link_payment --
-- Promise $1 of customer $4: its automatic collection is lease $2's manual-pay payment under
-- key $3 (one customer: one shard)
UPDATE promises pr
SET payment_id = p.id
FROM payments p
WHERE pr.customer_id = $4 AND p.customer_id = $4
  AND pr.id = $1 AND p.lease_id = $2 AND p.request_key = $3 AND pr.payment_id IS NULL;

-- counts --
-- How many promises are in each status (the gauges: counters are lost with a textfile host)
SELECT status, count(*)::bigint AS promises FROM promises GROUP BY status;
