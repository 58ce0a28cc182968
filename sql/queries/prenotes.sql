-- NACHA account validation (sql/0018_prenote_account_validation.sql): which accounts need a
-- prenote, what the eligibility check knows of each, and what a prenote's return or a
-- notification of change does to the methods of that account.

-- candidates --
-- Active primary bank-account methods of gateway $1 (of customer $2; NULL: every customer)
-- that need a prenote before their first live debit: not validated by the adapter, their
-- account (instrument key) without an open prenote, without a prenote returned for a closed
-- account or a revoked authorization ($3 codes), with fewer than $4 prenotes returned for
-- other reasons, never debited live (an entry that reached the bank: the account exists), and
-- with debits coming (an installment of an active lease with a collection date planned).
-- An account's history spans customers (an instrument key is the account, whoever holds
-- it): the methods are read first (joined on the customer), then their accounts' prenotes
-- and debits by key, each a plain read over every shard (Citus: each CTE one intermediate
-- result, never a correlated subquery across customers).
WITH m AS MATERIALIZED (
    SELECT pm.id, pm.customer_id, pm.instrument_key, pm.token, pm.gateway
    FROM payment_methods pm
    WHERE pm.gateway = $1 AND pm.kind = 'ach' AND pm.status = 'active' AND pm.is_primary
      AND NOT pm.account_validated
      AND ($2::bigint IS NULL OR pm.customer_id = $2::bigint)
      AND EXISTS (
          SELECT 1 FROM leases l
          JOIN installments i ON i.customer_id = l.customer_id AND i.lease_id = l.id
          WHERE l.customer_id = pm.customer_id AND l.status = 'active'
            AND i.next_attempt_on IS NOT NULL)
), p AS MATERIALIZED (
    SELECT r.instrument_key,
           count(*) FILTER (WHERE r.return_code IS NOT NULL)::integer AS returned,
           bool_or(r.return_code IS NULL OR r.return_code = ANY ($3::text[])) AS blocking
    FROM ach_prenotes r
    WHERE r.gateway = $1 AND r.instrument_key IN (SELECT m.instrument_key FROM m)
    GROUP BY r.instrument_key
), d AS MATERIALIZED (
    SELECT DISTINCT a.instrument_key
    FROM charge_attempts a
    WHERE a.instrument_key IN (SELECT m.instrument_key FROM m)
      AND a.status IN ('processing', 'succeeded', 'returned')
)
SELECT m.id AS payment_method_id, m.customer_id, m.instrument_key, m.token,
       coalesce(p.returned, 0) AS returned
FROM m
LEFT JOIN p ON p.instrument_key = m.instrument_key
LEFT JOIN d ON d.instrument_key = m.instrument_key
WHERE NOT coalesce(p.blocking, false) AND coalesce(p.returned, 0) < $4::integer
  AND d.instrument_key IS NULL
ORDER BY m.id;

-- record --
-- Record prenote entry $5 of gateway $4, sent for method $3 (customer $1, account $2) on
-- business date $6; an account with an open prenote keeps it (no row)
INSERT INTO ach_prenotes (customer_id, instrument_key, payment_method_id, gateway,
                          idempotency_key, requested_on)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
RETURNING id;

-- facts --
-- What the eligibility check knows of the accounts of presentments $1 (attempt ids) to
-- $2 (instrument keys) of methods $3 through gateways $4: the adapter validated the method;
-- the account was debited live before (an entry of another attempt reached the bank); the
-- code of a prenote returned for a closed account or a revoked authorization ($5 codes); how
-- many were returned for other reasons; the open prenote's requested date and its file's
-- effective entry date and whether that file is written. An account's history spans
-- customers: each fact is a plain read by instrument key over every shard (one intermediate
-- result each on Citus), joined to the presentments at the end.
WITH p AS MATERIALIZED (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
      AS p(attempt_id, instrument_key, payment_method_id, gateway)
), v AS MATERIALIZED (
    SELECT pm.id, pm.account_validated FROM payment_methods pm WHERE pm.id = ANY ($3::bigint[])
), debited AS MATERIALIZED (
    -- Another attempt's live entry: more than one, or one that is not this attempt.
    SELECT a.instrument_key, count(*) AS n, min(a.id) AS first_id
    FROM charge_attempts a
    WHERE a.instrument_key = ANY ($2::text[])
      AND a.status IN ('processing', 'succeeded', 'returned')
    GROUP BY a.instrument_key
), returned AS MATERIALIZED (
    SELECT r.instrument_key, r.gateway,
           (array_agg(r.return_code ORDER BY r.id)
               FILTER (WHERE r.return_code = ANY ($5::text[])))[1] AS closed_code,
           count(*) FILTER (WHERE r.return_code IS NOT NULL)::integer AS returned
    FROM ach_prenotes r
    WHERE r.instrument_key = ANY ($2::text[])
    GROUP BY r.instrument_key, r.gateway
), open AS MATERIALIZED (
    SELECT o.instrument_key, o.gateway, o.requested_on, f.effective_on,
           f.written_at IS NOT NULL AS written
    FROM ach_prenotes o
    JOIN ach_entries e ON e.customer_id = o.customer_id AND e.idempotency_key = o.idempotency_key
    LEFT JOIN ach_files f ON f.file_name = e.file_name
    WHERE o.instrument_key = ANY ($2::text[]) AND o.return_code IS NULL
)
SELECT p.attempt_id,
       coalesce(v.account_validated, false) AS validated,
       coalesce(d.n > 1 OR (d.n = 1 AND d.first_id <> p.attempt_id), false) AS debited_before,
       r.closed_code,
       coalesce(r.returned, 0) AS returned,
       o.requested_on, o.effective_on, o.written
FROM p
LEFT JOIN v ON v.id = p.payment_method_id
LEFT JOIN debited d ON d.instrument_key = p.instrument_key
LEFT JOIN returned r ON r.instrument_key = p.instrument_key AND r.gateway = p.gateway
LEFT JOIN open o ON o.instrument_key = p.instrument_key AND o.gateway = p.gateway;

-- by_key --
-- The prenote sent as entry $1, if that entry is one
SELECT id, customer_id, instrument_key, payment_method_id, gateway, return_code
FROM ach_prenotes WHERE idempotency_key = $1;

-- mark_returned --
-- Prenote $1 of customer $4 came back with code $2 on business date $3; one already returned
-- changes nothing
UPDATE ach_prenotes SET return_code = $2, returned_on = $3
WHERE customer_id = $4 AND id = $1 AND return_code IS NULL
RETURNING id;

-- disable_account --
-- Disable every active method of customer $1 for account $2 (reason $3), returning each with
-- its display fields; the outbox trigger reports each as method.disabled
UPDATE payment_methods
SET status = 'disabled', disabled_reason = $3, updated_at = now()
WHERE customer_id = $1 AND instrument_key = $2 AND status = 'active'
RETURNING id, customer_id, last4;

-- method_of_entry --
-- The method entry $1 was sent for: a prenote's, else its attempt's
SELECT pm.id, pm.customer_id, pm.gateway, pm.token, pm.last4, pm.bank_name, pm.instrument_key
FROM payment_methods pm
WHERE pm.id = coalesce(
    (SELECT p.payment_method_id FROM ach_prenotes p WHERE p.idempotency_key = $1),
    (SELECT a.payment_method_id FROM charge_attempts a WHERE a.idempotency_key = $1 LIMIT 1));

-- methods_of_token --
-- The methods of customer $1 on gateway $2 holding vault token $3 (each sees a corrected
-- account alike)
SELECT id, last4, bank_name FROM payment_methods
WHERE customer_id = $1 AND gateway = $2 AND token = $3
ORDER BY id;

-- set_last4 --
-- Method $1 of customer $3 now shows account last four $2 (a notification of change
-- corrected the number)
UPDATE payment_methods SET last4 = $2, updated_at = now() WHERE customer_id = $3 AND id = $1;

-- record_change --
-- Record what source $3 (code $4, of the entry with trace $5, received on $7) changed on
-- method $2 of customer $1 ($6: display values only); once per method, code and trace
INSERT INTO payment_method_changes (customer_id, payment_method_id, source, code,
                                    original_trace, changed, received_on)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (payment_method_id, source, code, original_trace, customer_id) DO NOTHING
RETURNING id;

-- closed_accounts --
-- Of the instrument keys $1, those a prenote found closed or unauthorized ($2 codes)
SELECT DISTINCT instrument_key FROM ach_prenotes
WHERE instrument_key = ANY ($1::text[]) AND return_code = ANY ($2::text[]);

-- mark_validated --
-- The adapter said method $1's account is validated already (no prenote)
UPDATE payment_methods SET account_validated = true, updated_at = now() WHERE id = $1;

-- close_if_closed --
-- Disable method $1, just added, when a prenote found its account closed or unauthorized
-- ($2 codes) before (under any method row); the reason is that return's code. The account's
-- prenotes span customers: read by its instrument key (a plain read over every shard), never
-- joined to the method across customers.
UPDATE payment_methods pm
SET status = 'disabled', disabled_reason = r.return_code, updated_at = now()
FROM (SELECT p.return_code FROM ach_prenotes p
      WHERE p.instrument_key = (SELECT m.instrument_key FROM payment_methods m WHERE m.id = $1)
        AND p.return_code = ANY ($2::text[])
      ORDER BY p.id LIMIT 1) r
WHERE pm.id = $1 AND pm.status = 'active'
RETURNING pm.id;

-- change_applied --
-- Whether notification of change $2 of the entry with trace $3 was applied to method $1
SELECT EXISTS (
    SELECT 1 FROM payment_method_changes
    WHERE payment_method_id = $1 AND source = 'notification_of_change' AND code = $2
      AND original_trace = $3);
