-- Card expiry, for display and notices only (issue 10): the month and year a card is valid
-- through, as the portal or the gateway shows them. Never the number; never used to charge.
-- method.expiring goes out when the card expires before the next collection date.
ALTER TABLE payment_methods
    ADD COLUMN exp_month smallint CHECK (exp_month BETWEEN 1 AND 12),
    ADD COLUMN exp_year smallint CHECK (exp_year BETWEEN 2000 AND 2099),
    ADD CONSTRAINT payment_methods_expiry_whole
        CHECK ((exp_month IS NULL) = (exp_year IS NULL)),
    ADD CONSTRAINT payment_methods_expiry_cards_only
        CHECK (exp_month IS NULL OR kind = 'card');
