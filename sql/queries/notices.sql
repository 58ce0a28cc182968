-- expiring_cards --
-- On business date $1, write method.expiring for every active primary card whose expiry
-- (the end of its month) comes before the customer's next collection date, when that date is
-- within $2 days; once per card and collection date (the caller counts the rows written).
WITH next_collection AS (
    SELECT DISTINCT ON (l.customer_id) l.customer_id, i.lease_id, i.next_attempt_on AS on_date,
           i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS amount_cents
    FROM installments i
    JOIN leases l ON l.customer_id = i.customer_id AND l.id = i.lease_id
    WHERE i.status IN ('scheduled', 'overdue')
      AND i.next_attempt_on > $1::date AND i.next_attempt_on <= $1::date + $2::integer
      AND l.status = 'active'
    ORDER BY l.customer_id, i.next_attempt_on, i.id
)
INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body, dedupe_key)
SELECT pm.customer_id, n.lease_id, 'lease:' || n.lease_id, 'method.expiring', $1::date,
       jsonb_strip_nulls(jsonb_build_object(
           'method', jsonb_build_object('id', pm.id, 'kind', pm.kind, 'brand', pm.brand,
                                        'last4', pm.last4),
           'exp_month', pm.exp_month,
           'exp_year', pm.exp_year,
           'next_collection_on', n.on_date,
           'amount_cents', n.amount_cents)),
       'method.expiring:' || pm.id || ':' || n.on_date
FROM next_collection n
JOIN payment_methods pm ON pm.customer_id = n.customer_id AND pm.is_primary
WHERE pm.kind = 'card' AND pm.status = 'active' AND pm.exp_year IS NOT NULL
  -- Valid through the last day of its month: expired from the first of the next.
  AND (make_date(pm.exp_year, pm.exp_month, 1) + interval '1 month')::date <= n.on_date
ON CONFLICT (customer_id, dedupe_key) DO NOTHING;

-- upcoming_debits --
-- Up to $5 automatic collections planned from business date $1 to $1 + $2 days, after the
-- keyset cursor ($3 collection date, $4 installment id), in that order (the collectable
-- index's: a batch at a time, never the whole horizon at once), with what deciding their
-- notice needs: the amount a presentment would take, the previous automatic debit of the
-- lease (before this date), the installment's scheduled amount and the lease's notice range,
-- and the primary method's display fields
SELECT i.id AS installment_id, i.lease_id, l.customer_id, i.next_attempt_on AS collection_on,
       i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS amount_cents,
       i.amount_cents AS scheduled_cents,
       -- Each installment's newest automatic attempt, then the newest of those, as in
       -- notice_facts (sql/0032: never a walk back along the primary key).
       (SELECT b.amount_cents
        FROM installments i2
        CROSS JOIN LATERAL (
            SELECT a.id, a.amount_cents FROM charge_attempts a
            WHERE a.installment_id = i2.id AND a.customer_id = i2.customer_id
              AND a.source IN ('batch', 'retry') AND a.status <> 'refused'
            ORDER BY a.id DESC LIMIT 1
        ) b
        WHERE i2.customer_id = i.customer_id AND i2.lease_id = i.lease_id
        ORDER BY b.id DESC LIMIT 1) AS previous_cents,
       l.notice_range_min_cents, l.notice_range_max_cents,
       pm.id AS method_id, pm.kind AS method_kind, pm.brand, pm.bank_name, pm.last4
FROM installments i
JOIN leases l ON l.customer_id = i.customer_id AND l.id = i.lease_id
LEFT JOIN payment_methods pm
  ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
WHERE i.status IN ('scheduled', 'overdue')
  AND i.next_attempt_on >= $1::date AND i.next_attempt_on <= $1::date + $2::integer
  AND (i.next_attempt_on, i.id) > ($3::date, $4::bigint)
  AND l.status = 'active'
  AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
ORDER BY i.next_attempt_on, i.id
LIMIT $5;

-- write_debit_notices --
-- Record notices (customers $1, leases $2, installments $3, amounts $4, collection dates $5,
-- varying $6, previous amounts $7, method ids $8, kinds $9, brands $10, banks $11, last 4
-- $12) written on business date $13, each once, with its debit.upcoming event; returns the
-- events written
WITH n AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::date[],
                $6::boolean[], $7::bigint[], $8::bigint[], $9::text[], $10::text[],
                $11::text[], $12::text[])
      AS n(customer_id, lease_id, installment_id, amount_cents, collection_on, varying,
           previous_cents, method_id, method_kind, brand, bank_name, last4)
), events AS (
    INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                               dedupe_key)
    SELECT n.customer_id, n.lease_id, 'lease:' || n.lease_id, 'debit.upcoming', $13::date,
           jsonb_strip_nulls(jsonb_build_object(
               'installment_id', n.installment_id,
               'collection_on', n.collection_on,
               'amount_cents', n.amount_cents,
               'previous_amount_cents', n.previous_cents,
               'varying', n.varying,
               'method', CASE WHEN n.method_id IS NOT NULL THEN jsonb_build_object(
                   'id', n.method_id, 'kind', n.method_kind, 'brand', n.brand,
                   'bank_name', n.bank_name, 'last4', n.last4) END)),
           'debit.upcoming:' || n.installment_id || ':' || n.collection_on || ':'
               || n.amount_cents
    FROM n
    ON CONFLICT (customer_id, dedupe_key) DO NOTHING
    RETURNING id, customer_id, body
)
INSERT INTO debit_notices (customer_id, installment_id, amount_cents, collection_on,
                           notified_on, varying, event_id)
SELECT e.customer_id, (e.body->>'installment_id')::bigint, (e.body->>'amount_cents')::bigint,
       (e.body->>'collection_on')::date, $13::date, (e.body->>'varying')::boolean, e.id
FROM events e
ON CONFLICT DO NOTHING
RETURNING event_id;

-- notice_facts --
-- For presentments (attempts $1 of installments $2 for amounts $3): the previous automatic
-- debit of the lease before the attempt, the scheduled amount, the lease's notice range and
-- the earliest business date a notice of that amount was written
SELECT p.attempt_id, p.installment_id, i.amount_cents AS scheduled_cents,
       -- Each installment's newest attempt before this one, then the newest of those: one
       -- backward range of (installment_id, id) per installment of the lease (sql/0032).
       -- Asked of the whole lease at once, the planner was seen to walk the primary key,
       -- (id, customer_id), back from this attempt to the customer's previous one: every
       -- attempt in between, all of them for a customer's first.
       (SELECT b.amount_cents
        FROM installments i2
        CROSS JOIN LATERAL (
            SELECT a.id, a.amount_cents FROM charge_attempts a
            WHERE a.installment_id = i2.id AND a.customer_id = i2.customer_id
              AND a.source IN ('batch', 'retry') AND a.status <> 'refused'
              AND a.id < p.attempt_id
            ORDER BY a.id DESC LIMIT 1
        ) b
        WHERE i2.customer_id = i.customer_id AND i2.lease_id = i.lease_id
        ORDER BY b.id DESC LIMIT 1) AS previous_cents,
       l.notice_range_min_cents, l.notice_range_max_cents,
       (SELECT min(d.notified_on) FROM debit_notices d
        WHERE d.customer_id = i.customer_id AND d.installment_id = p.installment_id
          AND d.amount_cents = p.amount_cents)
           AS notified_on
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS p(attempt_id, installment_id,
                                                           amount_cents)
JOIN installments i ON i.id = p.installment_id
JOIN leases l ON l.customer_id = i.customer_id AND l.id = i.lease_id;
