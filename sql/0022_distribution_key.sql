-- The distribution key in the schema (issue 12, part 1).
--
-- A distributed PostgreSQL (Citus) places each row on a shard by one column, and checks a
-- unique key, a primary key or a foreign key only inside one shard: every one of them must
-- include that column. The engine's column is customer_id: everything money touches belongs
-- to one customer, so one customer's money is on one shard and every statement about it can
-- route there. This migration, on plain PostgreSQL too (one schema for both; plain
-- PostgreSQL stays the default), gives the schema that shape:
--
-- * customer_id, NOT NULL, on every table money touches. installments, payment_allocations,
--   charge_returns and ach_entries get it here, backfilled from the row they belong to.
-- * Every primary key is (id, customer_id): id first, so a lookup by id alone still finds
--   its row through the key's index on plain PostgreSQL, and the key includes the
--   distribution column. ids come from sequences, so (id, customer_id) is as unique as id.
-- * Every foreign key between those tables names the customer on both sides (co-located:
--   a shard can check it).
-- * Every other unique key includes customer_id. A trace number is unique by construction
--   (ach_next_trace_v1); so is an account's prenote per customer.
-- * Global uniqueness that users rely on and that no customer id can carry lives in lookup
--   tables keyed by the value itself, written in the transaction that creates the row: a
--   customer's email (customer_emails), a lease's agreement reference
--   (lease_agreement_refs), and every idempotency key the engine sends to a gateway
--   (idempotency_keys): a gateway remembers keys across all of the lessor's customers, so
--   one key under two customers would answer the second with the first's charge. On Citus
--   each is distributed by its own key (collector/db/distribution.py), so its primary key is
--   checked where the value hashes.
-- * No trigger on installments: a row trigger on a distributed table runs on its shard and
--   Citus refuses it unless told otherwise. The trigger only defaulted next_attempt_on to the
--   due date; every insert now says so itself (the audit's derived plan catches one that
--   does not).
-- * needs_attention, the operators' queue, stays keyed by its own id: a row set aside may
--   name no customer (a return file's line that matches no debit). On Citus it is a
--   reference table, like the other small shared tables (collection_runs, ach_files,
--   webhook_events, delinquency_totals).

-- 1. The column where it was missing, backfilled from the row each belongs to.
ALTER TABLE installments ADD COLUMN customer_id bigint;
UPDATE installments i SET customer_id = l.customer_id FROM leases l WHERE l.id = i.lease_id;
ALTER TABLE installments ALTER COLUMN customer_id SET NOT NULL;

ALTER TABLE payment_allocations ADD COLUMN customer_id bigint;
UPDATE payment_allocations pa SET customer_id = p.customer_id
FROM payments p WHERE p.id = pa.payment_id;
ALTER TABLE payment_allocations ALTER COLUMN customer_id SET NOT NULL;

ALTER TABLE charge_returns ADD COLUMN customer_id bigint;
UPDATE charge_returns r SET customer_id = a.customer_id
FROM charge_attempts a WHERE a.id = r.attempt_id;
ALTER TABLE charge_returns ALTER COLUMN customer_id SET NOT NULL;

-- An entry is a debit's (its attempt's key) or a prenote's (its own key).
ALTER TABLE ach_entries ADD COLUMN customer_id bigint;
UPDATE ach_entries e SET customer_id = a.customer_id
FROM charge_attempts a WHERE a.idempotency_key = e.idempotency_key;
UPDATE ach_entries e SET customer_id = p.customer_id
FROM ach_prenotes p WHERE p.idempotency_key = e.idempotency_key AND e.customer_id IS NULL;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM ach_entries WHERE customer_id IS NULL) THEN
        RAISE EXCEPTION 'ach_entries: % entries match no attempt and no prenote',
            (SELECT count(*) FROM ach_entries WHERE customer_id IS NULL)
            USING HINT = 'every entry is a debit of an attempt or a prenote; '
                         'find the orphans by idempotency_key before migrating';
    END IF;
END $$;
ALTER TABLE ach_entries ALTER COLUMN customer_id SET NOT NULL;

-- A notice of change is about an entry, so about its customer (the insert reads it there).
UPDATE ach_notifications_of_change n SET customer_id = e.customer_id
FROM ach_entries e WHERE e.idempotency_key = n.idempotency_key AND n.customer_id IS NULL;
-- One about a trace this originator never sent names nobody: from now on it is set aside
-- for an operator when imported (change_for_unknown_entry); those already recorded move
-- there, with everything they said.
INSERT INTO needs_attention (subject, subject_id, reason, detail, created_at)
SELECT 'ach_entry', n.original_trace, 'change_for_unknown_entry',
       jsonb_build_object('trace', n.original_trace, 'change_code', n.change_code,
                          'notice_trace', n.notice_trace, 'received_on', n.received_on,
                          'corrected_routing', n.corrected_routing,
                          'corrected_account_last4', n.corrected_account_last4,
                          'corrected_transaction_code', n.corrected_transaction_code,
                          'corrected_text', n.corrected_text, 'moved_by', '0022'),
       n.created_at
FROM ach_notifications_of_change n
WHERE n.customer_id IS NULL;
DELETE FROM ach_notifications_of_change WHERE customer_id IS NULL;
ALTER TABLE ach_notifications_of_change ALTER COLUMN customer_id SET NOT NULL;
-- Like its entry (below), a notice is the NACHA files' record: it names the entry's customer
-- without a foreign key to customers.
ALTER TABLE ach_notifications_of_change DROP CONSTRAINT ach_notifications_of_change_customer_id_fkey;

-- 2. Foreign keys that name a row by id alone go; they come back with the customer.
ALTER TABLE installments DROP CONSTRAINT installments_lease_id_fkey;
ALTER TABLE charge_attempts
    DROP CONSTRAINT charge_attempts_installment_id_fkey,
    DROP CONSTRAINT charge_attempts_payment_id_fkey,
    DROP CONSTRAINT charge_attempts_payment_method_id_fkey;
ALTER TABLE payments
    DROP CONSTRAINT payments_lease_id_fkey,
    DROP CONSTRAINT payments_payment_method_id_fkey;
ALTER TABLE payment_allocations
    DROP CONSTRAINT payment_allocations_installment_id_fkey,
    DROP CONSTRAINT payment_allocations_payment_id_fkey;
ALTER TABLE charge_returns DROP CONSTRAINT charge_returns_attempt_id_fkey;
ALTER TABLE method_authorizations DROP CONSTRAINT method_authorizations_payment_method_id_fkey;
ALTER TABLE ach_prenotes
    DROP CONSTRAINT ach_prenotes_idempotency_key_fkey,
    DROP CONSTRAINT ach_prenotes_payment_method_id_fkey;
ALTER TABLE payment_method_changes DROP CONSTRAINT payment_method_changes_payment_method_id_fkey;
ALTER TABLE promises DROP CONSTRAINT promises_lease_id_fkey;
-- The operators' queue may name no customer, and is not co-located (a reference table).
ALTER TABLE needs_attention DROP CONSTRAINT needs_attention_customer_id_fkey;

-- 3. Primary keys with the customer.
ALTER TABLE payment_methods DROP CONSTRAINT payment_methods_pkey,
    ADD PRIMARY KEY (id, customer_id);
ALTER TABLE leases DROP CONSTRAINT leases_pkey, ADD PRIMARY KEY (id, customer_id);
ALTER TABLE installments DROP CONSTRAINT installments_pkey, ADD PRIMARY KEY (id, customer_id);
ALTER TABLE charge_attempts DROP CONSTRAINT charge_attempts_pkey,
    ADD PRIMARY KEY (id, customer_id);
ALTER TABLE payments DROP CONSTRAINT payments_pkey, ADD PRIMARY KEY (id, customer_id);
ALTER TABLE payment_allocations DROP CONSTRAINT payment_allocations_pkey,
    ADD PRIMARY KEY (payment_id, installment_id, customer_id);
ALTER TABLE charge_returns DROP CONSTRAINT charge_returns_pkey,
    ADD PRIMARY KEY (attempt_id, customer_id);
ALTER TABLE ach_entries DROP CONSTRAINT ach_entries_pkey,
    ADD PRIMARY KEY (idempotency_key, customer_id);
ALTER TABLE money_movements DROP CONSTRAINT money_movements_pkey,
    ADD PRIMARY KEY (id, customer_id);
ALTER TABLE ach_notifications_of_change DROP CONSTRAINT ach_notifications_of_change_pkey,
    ADD PRIMARY KEY (id, customer_id);
ALTER TABLE method_authorizations DROP CONSTRAINT method_authorizations_pkey,
    ADD PRIMARY KEY (id, customer_id);
ALTER TABLE ach_prenotes DROP CONSTRAINT ach_prenotes_pkey, ADD PRIMARY KEY (id, customer_id);
ALTER TABLE payment_method_changes DROP CONSTRAINT payment_method_changes_pkey,
    ADD PRIMARY KEY (id, customer_id);

-- 4. Other unique keys with the customer (see the header for why each loses nothing).
ALTER TABLE installments DROP CONSTRAINT installments_lease_id_seq_key,
    ADD CONSTRAINT installments_lease_id_seq_key UNIQUE (lease_id, seq, customer_id);
ALTER TABLE charge_attempts DROP CONSTRAINT charge_attempts_idempotency_key_key,
    ADD CONSTRAINT charge_attempts_idempotency_key_key UNIQUE (idempotency_key, customer_id);
ALTER TABLE payments DROP CONSTRAINT payments_lease_id_request_key_key,
    ADD CONSTRAINT payments_lease_id_request_key_key UNIQUE (lease_id, request_key, customer_id);
ALTER TABLE ach_notifications_of_change
    DROP CONSTRAINT ach_notifications_of_change_original_trace_notice_trace_cha_key,
    ADD CONSTRAINT ach_notifications_of_change_unique
        UNIQUE (original_trace, notice_trace, change_code, customer_id);
ALTER TABLE ach_prenotes DROP CONSTRAINT ach_prenotes_idempotency_key_key,
    ADD CONSTRAINT ach_prenotes_idempotency_key_key UNIQUE (idempotency_key, customer_id);
ALTER TABLE payment_method_changes
    DROP CONSTRAINT payment_method_changes_payment_method_id_source_code_origin_key,
    ADD CONSTRAINT payment_method_changes_unique
        UNIQUE (payment_method_id, source, code, original_trace, customer_id);

DROP INDEX ach_entries_file_trace;
CREATE UNIQUE INDEX ach_entries_file_trace ON ach_entries (file_name, trace_number, customer_id)
    WHERE file_name IS NOT NULL;
DROP INDEX ach_entries_unfiled_trace;
CREATE UNIQUE INDEX ach_entries_unfiled_trace ON ach_entries (trace_number, customer_id)
    WHERE file_name IS NULL;

DROP INDEX money_movements_ended;
CREATE UNIQUE INDEX money_movements_ended ON money_movements (attempt_id, installment_id, customer_id)
    WHERE kind IN ('released', 'settled', 'returned');
DROP INDEX money_movements_reversed;
CREATE UNIQUE INDEX money_movements_reversed
    ON money_movements (attempt_id, installment_id, customer_id) WHERE kind = 'reversed';
DROP INDEX money_movements_charged_off;
CREATE UNIQUE INDEX money_movements_charged_off ON money_movements (installment_id, customer_id)
    WHERE kind = 'charged_off';
DROP INDEX money_movements_cancelled;
CREATE UNIQUE INDEX money_movements_cancelled
    ON money_movements (attempt_id, installment_id, customer_id) WHERE kind = 'cancelled';
DROP INDEX money_movements_reinstated;
CREATE UNIQUE INDEX money_movements_reinstated
    ON money_movements (attempt_id, installment_id, customer_id) WHERE kind = 'reinstated';
DROP INDEX money_movements_fee_waived;
CREATE UNIQUE INDEX money_movements_fee_waived ON money_movements (installment_id, customer_id)
    WHERE kind = 'fee_waived';
DROP INDEX money_movements_presented;
CREATE UNIQUE INDEX money_movements_presented
    ON money_movements (attempt_id, installment_id, customer_id) WHERE kind = 'presented';
DROP INDEX money_movements_accepted;
CREATE UNIQUE INDEX money_movements_accepted
    ON money_movements (attempt_id, installment_id, customer_id) WHERE kind = 'accepted';
DROP INDEX money_movements_fee_assessed;
CREATE UNIQUE INDEX money_movements_fee_assessed ON money_movements (installment_id, customer_id)
    WHERE kind = 'fee_assessed';

-- The composite primary keys made these id-only keys redundant; a lookup by id uses the
-- primary key's index (id leads).
DROP INDEX outbox_events_id;
DROP INDEX promises_id;
DROP INDEX promises_one_open;
CREATE UNIQUE INDEX promises_one_open ON promises (lease_id, customer_id) WHERE status = 'open';
-- One open prenote per account per customer: the instrument key is the account's identity.
DROP INDEX ach_prenotes_open;
CREATE UNIQUE INDEX ach_prenotes_open ON ach_prenotes (gateway, instrument_key, customer_id)
    WHERE return_code IS NULL;

-- 5. Foreign keys, co-located: each names the customer on both sides.
ALTER TABLE installments ADD CONSTRAINT installments_lease_fkey
    FOREIGN KEY (lease_id, customer_id) REFERENCES leases (id, customer_id);
ALTER TABLE charge_attempts
    ADD CONSTRAINT charge_attempts_installment_fkey
        FOREIGN KEY (installment_id, customer_id) REFERENCES installments (id, customer_id),
    ADD CONSTRAINT charge_attempts_payment_fkey
        FOREIGN KEY (payment_id, customer_id) REFERENCES payments (id, customer_id),
    ADD CONSTRAINT charge_attempts_payment_method_fkey
        FOREIGN KEY (payment_method_id, customer_id) REFERENCES payment_methods (id, customer_id);
ALTER TABLE payments
    ADD CONSTRAINT payments_lease_fkey
        FOREIGN KEY (lease_id, customer_id) REFERENCES leases (id, customer_id),
    ADD CONSTRAINT payments_payment_method_fkey
        FOREIGN KEY (payment_method_id, customer_id) REFERENCES payment_methods (id, customer_id);
ALTER TABLE payment_allocations
    ADD CONSTRAINT payment_allocations_installment_fkey
        FOREIGN KEY (installment_id, customer_id) REFERENCES installments (id, customer_id),
    ADD CONSTRAINT payment_allocations_payment_fkey
        FOREIGN KEY (payment_id, customer_id) REFERENCES payments (id, customer_id);
ALTER TABLE charge_returns ADD CONSTRAINT charge_returns_attempt_fkey
    FOREIGN KEY (attempt_id, customer_id) REFERENCES charge_attempts (id, customer_id);
ALTER TABLE method_authorizations ADD CONSTRAINT method_authorizations_payment_method_fkey
    FOREIGN KEY (payment_method_id, customer_id) REFERENCES payment_methods (id, customer_id);
ALTER TABLE ach_prenotes
    ADD CONSTRAINT ach_prenotes_entry_fkey
        FOREIGN KEY (idempotency_key, customer_id) REFERENCES ach_entries (idempotency_key, customer_id),
    ADD CONSTRAINT ach_prenotes_payment_method_fkey
        FOREIGN KEY (payment_method_id, customer_id) REFERENCES payment_methods (id, customer_id);
ALTER TABLE payment_method_changes ADD CONSTRAINT payment_method_changes_payment_method_fkey
    FOREIGN KEY (payment_method_id, customer_id) REFERENCES payment_methods (id, customer_id);
ALTER TABLE promises ADD CONSTRAINT promises_lease_fkey
    FOREIGN KEY (lease_id, customer_id) REFERENCES leases (id, customer_id);
-- ach_entries names its customer without a foreign key: it is the NACHA gateway's own record
-- (the engine's attempts reference it by key, not the other way round).

-- 6. Global uniqueness by lookup tables keyed by the value.
CREATE TABLE customer_emails (
    email       text PRIMARY KEY,
    customer_id bigint NOT NULL
);
INSERT INTO customer_emails (email, customer_id) SELECT email, id FROM customers;
ALTER TABLE customers DROP CONSTRAINT customers_email_key;

CREATE TABLE lease_agreement_refs (
    agreement_ref text PRIMARY KEY,
    customer_id   bigint NOT NULL,
    lease_id      bigint NOT NULL
);
INSERT INTO lease_agreement_refs (agreement_ref, customer_id, lease_id)
SELECT agreement_ref, customer_id, id FROM leases WHERE agreement_ref IS NOT NULL;
ALTER TABLE leases DROP CONSTRAINT leases_agreement_ref_key;

CREATE TABLE idempotency_keys (
    idempotency_key text PRIMARY KEY,
    customer_id     bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO idempotency_keys (idempotency_key, customer_id)
SELECT idempotency_key, customer_id FROM charge_attempts
UNION ALL
SELECT idempotency_key, customer_id FROM ach_prenotes;

-- 7. No trigger on installments (see the header).
DROP TRIGGER installments_default_next_attempt ON installments;
DROP FUNCTION installments_default_next_attempt_v1();
