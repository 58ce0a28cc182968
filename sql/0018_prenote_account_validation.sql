-- NACHA account validation: prenotes before the first WEB debit of a new bank account, their
-- returns, and notifications of change applied to the method and the vault.
--
-- 1. A prenote is an ach_entries row with prenote = true and amount 0: it takes a trace
--    number, goes out in the next file (transaction code 28 checking / 38 savings) and is
--    matched by its trace when the bank returns it, like a debit. It has no charge attempt and
--    no money: the journal never sees it.
-- 2. ach_prenotes: one row per prenote, naming the bank account by its instrument key (the
--    gateway's fingerprint, else its token: payment_methods.instrument_key), so a method
--    removed and added again is neither prenoted again nor let through unvalidated. At most
--    one open (not returned) prenote per account; a returned one stays as history (its code:
--    R02/R03/R04 close the account for good, other codes let the next pass send a new one).
-- 3. payment_methods.account_validated: the adapter said, when the method was added, that the
--    account is already validated (e.g. Stripe verified it with the customer): no prenote.
-- 4. payment_method_changes: the audit trail of what a prenote return or a notification of
--    change did to a method (display fields only, never an account number).

ALTER TABLE ach_entries ADD COLUMN prenote boolean NOT NULL DEFAULT false;
ALTER TABLE ach_entries DROP CONSTRAINT ach_entries_amount_cents_check;
ALTER TABLE ach_entries ADD CONSTRAINT ach_entries_amount_cents_check
    CHECK (CASE WHEN prenote THEN amount_cents = 0 ELSE amount_cents > 0 END);

ALTER TABLE payment_methods ADD COLUMN account_validated boolean NOT NULL DEFAULT false;

CREATE TABLE ach_prenotes (
    id                bigserial PRIMARY KEY,
    customer_id       bigint NOT NULL REFERENCES customers (id),
    instrument_key    text NOT NULL,
    -- The method it was sent for (the account may be added again under another row).
    payment_method_id bigint NOT NULL REFERENCES payment_methods (id),
    gateway           text NOT NULL,
    idempotency_key   text NOT NULL UNIQUE REFERENCES ach_entries (idempotency_key),
    -- The business date of the pass (or primary change) that asked for it.
    requested_on      date NOT NULL,
    return_code       text CHECK (return_code ~ '^R[0-9]{2}$'),
    returned_on       date,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((return_code IS NULL) = (returned_on IS NULL))
);
CREATE UNIQUE INDEX ach_prenotes_open ON ach_prenotes (gateway, instrument_key)
    WHERE return_code IS NULL;
CREATE INDEX ach_prenotes_instrument ON ach_prenotes (instrument_key, id);

CREATE TABLE payment_method_changes (
    id                bigserial PRIMARY KEY,
    customer_id       bigint NOT NULL REFERENCES customers (id),
    payment_method_id bigint NOT NULL REFERENCES payment_methods (id),
    source            text NOT NULL CHECK (source IN ('prenote_return', 'notification_of_change')),
    code              text NOT NULL CHECK (code ~ '^[RC][0-9]{2}$'),
    -- The ach_entries trace the bank's entry named.
    original_trace    text NOT NULL,
    -- What changed, display values only: e.g. {"last4": ["4444", "5927"]}, {"status": ...}.
    changed           jsonb NOT NULL,
    received_on       date NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payment_method_id, source, code, original_trace)
);
