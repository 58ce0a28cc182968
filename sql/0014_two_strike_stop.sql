-- The two-strike stop (issue 9, part 5): after N consecutive failed automatic presentments of
-- a lease's money to one card or bank account, no further automatic attempt on it until the
-- customer authorizes it again (CFPB payment rule for covered loans, 12 CFR 1041.7-1041.8:
-- after two consecutive failed attempts, a new and specific authorization is needed).
--
-- An authorization is a fact with a time, kept as history (never overwritten), so that the
-- eligibility check counts failures since the latest one and `collector audit` can tell, for
-- any attempt sent, whether an authorization came between the failures and it. Keyed by the
-- instrument (payment_methods.instrument_key), like every other rule of the history: a card
-- removed and added again is a new authorization of the same card.
CREATE TABLE method_authorizations (
    id                 bigserial PRIMARY KEY,
    customer_id        bigint NOT NULL REFERENCES customers (id),
    payment_method_id  bigint NOT NULL REFERENCES payment_methods (id),
    instrument_key     text NOT NULL,
    -- 'added': a new method registered through the portal; 'primary': chosen (or chosen
    -- again) as the primary method; 'migration': methods on file before this table.
    source             text NOT NULL CHECK (source IN ('added', 'primary', 'migration')),
    authorized_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX method_authorizations_instrument
    ON method_authorizations (instrument_key, authorized_at);

INSERT INTO method_authorizations
    (customer_id, payment_method_id, instrument_key, source, authorized_at)
SELECT customer_id, id, instrument_key, 'migration', created_at FROM payment_methods;

