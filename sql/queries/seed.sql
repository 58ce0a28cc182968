-- insert_customers --
-- Insert customers from parallel arrays of emails and names; returns (id, email)
INSERT INTO customers (email, name)
SELECT * FROM unnest($1::text[], $2::text[])
RETURNING id, email;

-- insert_payment_methods --
-- Insert one primary payment method per customer from parallel arrays
INSERT INTO payment_methods (customer_id, kind, gateway, token, brand, bank_name, last4, is_primary)
SELECT c, k, g, t, b, bn, l4, true
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
  AS m(c, k, g, t, b, bn, l4);

-- insert_leases --
-- Insert leases from parallel arrays (with $5 their states); returns (id, customer_id)
INSERT INTO leases (customer_id, store, order_details, agreement_ref, state)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::text[], $5::text[])
RETURNING id, customer_id;

-- insert_schedules --
-- Give each lease $2 monthly installments of its amount, the first due on its first date
INSERT INTO installments (lease_id, seq, due_on, amount_cents)
SELECT s.lease_id, n, (s.first_due_on + make_interval(months => n - 1))::date, s.amount_cents
FROM unnest($1::bigint[], $3::date[], $4::bigint[]) AS s(lease_id, first_due_on, amount_cents)
CROSS JOIN generate_series(1, $2::int) AS n;

-- analyze --
-- Refresh the planner's statistics after a bulk load: with none, the claim query was planned
-- from payment_methods outwards and took seconds a batch at 240,000 installments
ANALYZE customers, payment_methods, leases, installments;
