-- collector's initial schema. Money is integer cents (bigint), times are timestamptz, dates
-- are the lessor's local business dates. Statuses are CHECKed text, mirrored by the StrEnums
-- of collector/domain.py (a test compares the two).

CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A gateway token, never a card number, CVV or full account number: only display fields.
CREATE TABLE payment_methods (
    id               bigserial PRIMARY KEY,
    customer_id      bigint NOT NULL REFERENCES customers (id),
    kind             text NOT NULL CHECK (kind IN ('card', 'ach')),
    gateway          text NOT NULL,
    token            text NOT NULL,
    brand            text,
    bank_name        text,
    last4            text CHECK (last4 ~ '^[0-9]{4}$'),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason  text,
    is_primary       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One primary method per customer, enforced by the database.
CREATE UNIQUE INDEX payment_methods_one_primary ON payment_methods (customer_id) WHERE is_primary;

CREATE TABLE leases (
    id             bigserial PRIMARY KEY,
    customer_id    bigint NOT NULL REFERENCES customers (id),
    store          text NOT NULL,
    order_details  jsonb NOT NULL DEFAULT '{}'::jsonb,
    agreement_ref  text NOT NULL UNIQUE,
    status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'paid_off', 'closed', 'charged_off')),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leases_customer ON leases (customer_id);

-- next_attempt_on is the date the engine will next try to collect the installment: its due
-- date while scheduled, the policy's retry date while overdue, NULL when no automatic attempt
-- is planned (hard decline, retries exhausted, paid, in flight). One column, one index, one
-- claim query for first attempts and retries alike.
CREATE TABLE installments (
    id               bigserial PRIMARY KEY,
    lease_id         bigint NOT NULL REFERENCES leases (id),
    seq              integer NOT NULL CHECK (seq > 0),
    due_on           date NOT NULL,
    amount_cents     bigint NOT NULL CHECK (amount_cents > 0),
    paid_cents       bigint NOT NULL DEFAULT 0 CHECK (paid_cents >= 0),
    status           text NOT NULL DEFAULT 'scheduled' CHECK (status IN
                     ('scheduled', 'processing', 'pending_settlement', 'paid', 'overdue', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_on  date,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lease_id, seq),
    CHECK (paid_cents <= amount_cents),
    CHECK (status <> 'paid' OR paid_cents = amount_cents)
);
CREATE INDEX installments_lease ON installments (lease_id, due_on);
CREATE INDEX installments_collectable ON installments (next_attempt_on, id)
    WHERE status IN ('scheduled', 'overdue') AND next_attempt_on IS NOT NULL;

CREATE FUNCTION installments_default_next_attempt_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'scheduled' AND NEW.next_attempt_on IS NULL THEN
        NEW.next_attempt_on := NEW.due_on;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER installments_default_next_attempt BEFORE INSERT ON installments
    FOR EACH ROW EXECUTE FUNCTION installments_default_next_attempt_v1();

-- One row per pass, for monitoring; its id also names the pass's liveness lock.
CREATE TABLE collection_runs (
    id              bigserial PRIMARY KEY,
    as_of           date NOT NULL,
    host            text NOT NULL,
    pid             integer NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'failed')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    due             integer NOT NULL DEFAULT 0,
    succeeded       integer NOT NULL DEFAULT 0,
    declined        integer NOT NULL DEFAULT 0,
    in_doubt        integer NOT NULL DEFAULT 0,
    processing      integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    reconciled      integer NOT NULL DEFAULT 0,
    charged_cents   bigint NOT NULL DEFAULT 0,
    error           text
);

-- The ledger of every request to a gateway. The idempotency key is unique: a second row for
-- the same key is impossible, so the same key can never be charged under two attempts.
CREATE TABLE charge_attempts (
    id                 bigserial PRIMARY KEY,
    installment_id     bigint REFERENCES installments (id),
    payment_method_id  bigint NOT NULL REFERENCES payment_methods (id),
    amount_cents       bigint NOT NULL CHECK (amount_cents > 0),
    idempotency_key    text NOT NULL UNIQUE,
    source             text NOT NULL CHECK (source IN ('batch', 'retry', 'manual')),
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN
                       ('pending', 'succeeded', 'declined', 'failed', 'processing', 'returned', 'in_doubt')),
    gateway            text NOT NULL,
    gateway_ref        text,
    outcome_code       text,
    outcome_message    text,
    run_id             bigint REFERENCES collection_runs (id),
    claimed_until      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at        timestamptz
);
CREATE INDEX charge_attempts_installment ON charge_attempts (installment_id);
CREATE INDEX charge_attempts_unresolved ON charge_attempts (claimed_until, id)
    WHERE status IN ('pending', 'in_doubt');
