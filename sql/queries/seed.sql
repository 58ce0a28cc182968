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
-- Insert leases from parallel arrays (with $5 their states); returns (id, customer_id,
-- agreement_ref)
INSERT INTO leases (customer_id, store, order_details, agreement_ref, state)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::text[], $5::text[])
RETURNING id, customer_id, agreement_ref;

-- insert_customer_emails --
-- The global uniqueness of customers' emails $1 (customers $2), in the transaction that
-- created them (sql/0022: a lookup table keyed by the email)
INSERT INTO customer_emails (email, customer_id)
SELECT * FROM unnest($1::text[], $2::bigint[]);

-- insert_agreement_refs --
-- The global uniqueness of leases' agreement references $1 (customers $2, leases $3), in the
-- transaction that created them
INSERT INTO lease_agreement_refs (agreement_ref, customer_id, lease_id)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]);

-- insert_schedules --
-- Give each lease $2 monthly installments of its amount, the first due on its first date;
-- $5 the leases' customers. A new installment's collection date is its due date.
INSERT INTO installments (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)
SELECT s.lease_id, s.customer_id, n, d.due_on, d.due_on, s.amount_cents
FROM unnest($1::bigint[], $3::date[], $4::bigint[], $5::bigint[])
  AS s(lease_id, first_due_on, amount_cents, customer_id)
CROSS JOIN generate_series(1, $2::int) AS n
CROSS JOIN LATERAL (SELECT (s.first_due_on + make_interval(months => n - 1))::date AS due_on) d;

-- set_terms --
-- Give leases $1 their terms from their schedules: the total of payments is the schedule's
-- sum, the cash price 60 % of it, delivered a month before the first due date, an
-- early-purchase window of 90 days with a $25.00 fee, and 50 % of the rent not yet due
-- after it
UPDATE leases l
SET total_of_payments_cents = s.total, cash_price_cents = s.total * 6 / 10,
    delivered_on = (s.first_due_on - interval '1 month')::date, epo_window_days = 90,
    epo_window_fee_cents = least(2500, s.total * 6 / 10), epo_after_bps = 5000
FROM (
    SELECT i.lease_id, sum(i.amount_cents)::bigint AS total, min(i.due_on) AS first_due_on
    FROM installments i
    WHERE i.lease_id = ANY ($1::bigint[])
    GROUP BY i.lease_id
) s
WHERE l.id = s.lease_id;

-- analyze --
-- Refresh the planner's statistics after a bulk load: with none, the claim query was planned
-- from payment_methods outwards and took seconds a batch at 240,000 installments
ANALYZE customers, customer_emails, payment_methods, leases, lease_agreement_refs, installments;
