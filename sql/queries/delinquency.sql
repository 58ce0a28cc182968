-- Delinquency aging (collector/db/delinquency.py): the snapshot a pass writes per business
-- date, the charge-off, and the report's reads. Past due: money of an installment neither
-- paid nor in flight nor cancelled by a payoff (owed - paid - in flight - cancelled; owed:
-- rent + late fees - waivers; a bank debit awaiting settlement is not past due) whose due
-- date is before the business date; a lease's days past due are those of its oldest such
-- installment. Buckets: $2, the upper edges of the delinquent buckets in days
-- (e.g. {30,60,90}) and $3 their labels ({1-30,31-60,61-90,90+}: one more than the edges).

-- lock_date --
-- Two passes of one business date write its snapshot one after the other: lock ($1, $2 the
-- date's ordinal) until the end of the transaction
SELECT pg_advisory_xact_lock($1::integer, $2::integer);

-- clear_snapshot --
-- Forget the snapshot of business date $1 (a later pass of the same date writes it anew)
WITH gone AS (DELETE FROM delinquency_snapshots WHERE as_of = $1)
DELETE FROM delinquency_totals WHERE as_of = $1;

-- write_snapshot --
-- Write the snapshot of business date $1 in one statement: a row per active lease with money
-- past due (a charged-off lease is out of the book: the roll rates find it in the journal),
-- and the totals of every bucket ($2 edges, $3 labels), 'current' counting the active
-- leases with nothing past due. Returns the totals.
WITH lease_due AS (
    SELECT i.lease_id,
           ($1::date - min(i.due_on))::integer AS days_past_due,
           sum(i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents)::bigint
               AS past_due_cents
    FROM installments i
    WHERE i.due_on < $1::date
      AND i.status IN ('scheduled', 'overdue')
      AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
    GROUP BY i.lease_id
), aged AS (
    SELECT d.lease_id, l.customer_id, d.days_past_due, d.past_due_cents,
           coalesce((SELECT lbl FROM unnest($2::integer[], $3::text[]) WITH ORDINALITY
                         AS e(edge, lbl, n)
                     WHERE d.days_past_due <= e.edge ORDER BY e.n LIMIT 1),
                    ($3::text[])[cardinality($3::text[])]) AS bucket
    FROM lease_due d
    JOIN leases l ON l.id = d.lease_id AND l.status = 'active'
), written AS (
    INSERT INTO delinquency_snapshots
        (as_of, customer_id, lease_id, bucket, days_past_due, past_due_cents)
    SELECT $1::date, a.customer_id, a.lease_id, a.bucket, a.days_past_due, a.past_due_cents
    FROM aged a
    RETURNING bucket, past_due_cents
), sums AS (
    SELECT w.bucket, count(*)::integer AS leases, sum(w.past_due_cents)::bigint AS cents
    FROM written w GROUP BY w.bucket
), labels AS (
    SELECT 'current'::text AS bucket, 0 AS n
    UNION ALL
    SELECT lbl, n::integer FROM unnest($3::text[]) WITH ORDINALITY AS t(lbl, n)
), totals AS (
    INSERT INTO delinquency_totals (as_of, bucket, leases, past_due_cents)
    SELECT $1::date, b.bucket,
           CASE WHEN b.bucket = 'current'
                THEN (SELECT count(*) FROM leases WHERE status = 'active')::integer
                     - coalesce((SELECT sum(leases) FROM sums), 0)::integer
                ELSE coalesce(s.leases, 0) END,
           coalesce(s.cents, 0)
    FROM labels b LEFT JOIN sums s ON s.bucket = b.bucket
    RETURNING bucket, leases, past_due_cents
)
SELECT t.bucket, t.leases, t.past_due_cents
FROM totals t JOIN labels b ON b.bucket = t.bucket
ORDER BY b.n;

-- bucket_events --
-- The lease.delinquent events of the snapshot of business date $1, written in the snapshot's
-- transaction in one statement: one per lease whose bucket changed since the previous
-- snapshot (the latest before $1; with none, every lease counts as having been current),
-- with the old and new bucket, days past due and past-due cents. A lease missing from a
-- snapshot is 'current' (nothing past due), or 'charged_off' when its lease was charged off
-- (it left the book). Once per lease and business date (dedupe key).
WITH prev AS (
    SELECT max(as_of) AS as_of FROM delinquency_totals WHERE as_of < $1::date
), old AS (
    SELECT s.customer_id, s.lease_id, s.bucket, s.as_of
    FROM delinquency_snapshots s JOIN prev ON s.as_of = prev.as_of
), new AS (
    SELECT s.customer_id, s.lease_id, s.bucket, s.days_past_due, s.past_due_cents
    FROM delinquency_snapshots s WHERE s.as_of = $1::date
), changed AS (
    SELECT coalesce(n.customer_id, o.customer_id) AS customer_id,
           coalesce(n.lease_id, o.lease_id) AS lease_id,
           coalesce(o.bucket, 'current') AS old_bucket,
           coalesce(n.bucket, CASE WHEN l.status = 'charged_off' THEN 'charged_off'
                                   ELSE 'current' END) AS new_bucket,
           coalesce(n.days_past_due, 0) AS days_past_due,
           coalesce(n.past_due_cents, 0)::bigint AS past_due_cents,
           (SELECT as_of FROM prev) AS previous_as_of
    FROM new n
    FULL JOIN old o ON o.customer_id = n.customer_id AND o.lease_id = n.lease_id
    JOIN leases l ON l.id = coalesce(n.lease_id, o.lease_id)
)
INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body, dedupe_key)
SELECT c.customer_id, c.lease_id, 'lease:' || c.lease_id, 'lease.delinquent', $1::date,
       jsonb_strip_nulls(jsonb_build_object(
           'lease_id', c.lease_id,
           'old_bucket', c.old_bucket,
           'new_bucket', c.new_bucket,
           'days_past_due', c.days_past_due,
           'past_due_cents', c.past_due_cents,
           'previous_as_of', c.previous_as_of)),
       'lease.delinquent:' || c.lease_id || ':' || $1::date
FROM changed c
WHERE c.old_bucket <> c.new_bucket
ORDER BY c.lease_id
ON CONFLICT (customer_id, dedupe_key) DO NOTHING;

-- charge_off --
-- Charge off, on business date $1, the active leases more than $2 days past due (journal rows
-- through money_charge_off_v1, source $3); returns each lease charged off and its cents
SELECT lease_id, customer_id, cents FROM money_charge_off_v1($1::date, $2::integer, $3::text);

-- charge_off_candidates --
-- The customers with an active lease more than $2 days past due on business date $1 (a plain
-- read over every shard, joined by customer): on Citus the charge-off runs per shard group of
-- them
SELECT DISTINCT i.customer_id
FROM installments i
JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id AND l.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.due_on < $1::date - $2::integer
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0;

-- charge_off_group --
-- money_charge_off_v1 for customers $4 (one shard group's; sql/0027)
SELECT lease_id, customer_id, cents
FROM money_charge_off_v2($1::date, $2::integer, $3::text, $4::bigint[]);

-- snapshot_dates --
-- The business date of the latest snapshot on or before $1, if any
SELECT max(as_of) FROM delinquency_totals WHERE as_of <= $1;

-- totals --
-- The bucket totals of the snapshot of business date $1
SELECT bucket, leases, past_due_cents FROM delinquency_totals WHERE as_of = $1;

-- roll_rates --
-- Where the past-due cents of snapshot $1 went by snapshot $2: per lease, its bucket on $1
-- and on $2 ('current' when not past due on $2 and not charged off; 'charged_off' when its
-- lease was charged off by $2), with its cents on $1. Every join by customer (a lease is
-- one customer's): on Citus each shard reads its own.
SELECT f.bucket AS from_bucket,
       CASE WHEN l.status = 'charged_off' AND EXISTS (
                SELECT 1 FROM installments i
                JOIN money_movements m ON m.installment_id = i.id
                                      AND m.customer_id = i.customer_id
                                      AND m.kind = 'charged_off'
                WHERE i.lease_id = f.lease_id AND i.customer_id = f.customer_id
                  AND m.as_of <= $2)
            THEN 'charged_off'
            ELSE coalesce(t.bucket, 'current') END AS to_bucket,
       count(*)::integer AS leases,
       sum(f.past_due_cents)::bigint AS cents
FROM delinquency_snapshots f
JOIN leases l ON l.id = f.lease_id AND l.customer_id = f.customer_id
LEFT JOIN delinquency_snapshots t
  ON t.as_of = $2 AND t.customer_id = f.customer_id AND t.lease_id = f.lease_id
WHERE f.as_of = $1
GROUP BY 1, 2;

-- recoveries --
-- Money settled on or before business date $1 on installments of charged-off leases after
-- their charge-off: how many leases, how many cents (joined by customer, for Citus)
SELECT count(DISTINCT c.lease_id)::integer AS leases,
       coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint AS cents
FROM (
    SELECT i.lease_id, i.customer_id, i.id AS installment_id, co.id AS charge_off_row
    FROM money_movements co
    JOIN installments i ON i.id = co.installment_id AND i.customer_id = co.customer_id
    WHERE co.kind = 'charged_off'
) c
JOIN money_movements m ON m.installment_id = c.installment_id AND m.customer_id = c.customer_id
                      AND m.id > c.charge_off_row
WHERE m.kind IN ('settled', 'reversed') AND m.as_of <= $1;

-- lease_aging --
-- Lease $1's days past due on business date $2 (0: nothing past due)
SELECT coalesce(($2::date - min(i.due_on))::integer, 0)
FROM installments i
WHERE i.lease_id = $1 AND i.due_on < $2::date
  AND i.status IN ('scheduled', 'overdue')
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0;
