-- Manual payments from the customer portal. A payment is one charge that may cover several
-- overdue installments; its allocations say how much went to each, oldest first. The portal's
-- Idempotency-Key is unique per lease, and the first answer is kept to be replayed.

CREATE TABLE payments (
    id                 bigserial PRIMARY KEY,
    lease_id           bigint NOT NULL REFERENCES leases (id),
    customer_id        bigint NOT NULL REFERENCES customers (id),
    payment_method_id  bigint NOT NULL REFERENCES payment_methods (id),
    amount_cents       bigint NOT NULL CHECK (amount_cents > 0),
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN
                       ('pending', 'succeeded', 'processing', 'declined', 'failed', 'in_doubt',
                        'returned')),
    request_key        text NOT NULL,
    request_hash       text NOT NULL,
    response_status    integer,
    response_body      jsonb,
    as_of              date NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lease_id, request_key)
);

-- prev_status / prev_next_attempt_on: the installment's state before the payment claimed it,
-- restored if the charge is declined.
CREATE TABLE payment_allocations (
    payment_id            bigint NOT NULL REFERENCES payments (id),
    installment_id        bigint NOT NULL REFERENCES installments (id),
    amount_cents          bigint NOT NULL CHECK (amount_cents > 0),
    prev_status           text NOT NULL,
    prev_next_attempt_on  date,
    PRIMARY KEY (payment_id, installment_id)
);
CREATE INDEX payment_allocations_installment ON payment_allocations (installment_id);

ALTER TABLE charge_attempts ADD COLUMN payment_id bigint REFERENCES payments (id);
ALTER TABLE charge_attempts ADD CONSTRAINT charge_attempts_serves_one
    CHECK ((installment_id IS NULL) <> (payment_id IS NULL));
CREATE INDEX charge_attempts_payment ON charge_attempts (payment_id) WHERE payment_id IS NOT NULL;

-- For the dashboards' gauges, refreshed after each pass: installments by due date.
CREATE INDEX installments_due_on ON installments (due_on);

-- Card networks cap retries per card over 30 days: the policy counts recent declines by method.
CREATE INDEX charge_attempts_method_recent ON charge_attempts (payment_method_id, created_at);
