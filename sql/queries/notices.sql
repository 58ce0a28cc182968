-- expiring_cards --
-- On business date $1, write method.expiring for every active primary card whose expiry
-- (the end of its month) comes before the customer's next collection date, when that date is
-- within $2 days; once per card and collection date. Returns the events written.
WITH next_collection AS (
    SELECT DISTINCT ON (l.customer_id) l.customer_id, i.lease_id, i.next_attempt_on AS on_date,
           i.amount_cents - i.paid_cents - i.in_flight_cents AS amount_cents
    FROM installments i
    JOIN leases l ON l.id = i.lease_id
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
ON CONFLICT (customer_id, dedupe_key) DO NOTHING
RETURNING id;
