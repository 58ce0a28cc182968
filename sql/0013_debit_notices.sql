-- Regulation E notices of preauthorized debits (12 CFR 1005.10(d), issue 10).
--
-- A debit whose amount differs from the previous one (a fee added, a partial payment, a
-- changed schedule) must be announced at least 10 days before it is made, unless the
-- customer chose to be told only when the amount falls outside a range they set
-- (1005.10(d)(2)): the lease's notice range. Each notice sent is a row here, beside its
-- debit.upcoming event; the eligibility check reads the earliest notice of an installment's
-- amount to decide whether a varying debit may go.
ALTER TABLE leases
    ADD COLUMN notice_range_min_cents bigint CHECK (notice_range_min_cents >= 0),
    ADD COLUMN notice_range_max_cents bigint,
    ADD CONSTRAINT leases_notice_range_whole
        CHECK ((notice_range_min_cents IS NULL) = (notice_range_max_cents IS NULL)),
    ADD CONSTRAINT leases_notice_range_ordered
        CHECK (notice_range_max_cents >= notice_range_min_cents);

CREATE TABLE debit_notices (
    customer_id     bigint NOT NULL,
    installment_id  bigint NOT NULL,
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    collection_on   date NOT NULL,   -- the date the notice announced
    notified_on     date NOT NULL,   -- the business date it was written (and sent from)
    varying         boolean NOT NULL,
    event_id        bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, installment_id, amount_cents, collection_on)
);
CREATE INDEX debit_notices_installment ON debit_notices (installment_id, amount_cents);
