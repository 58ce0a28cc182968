-- Promises to pay (issue 9, part 4).
--
-- A customer promises to pay an amount by a date (POST /v1/leases/{id}/promises). From then
-- on, automatic collection of the lease pauses until `resume_on`: the promised date, or the
-- day after it when the customer asked the engine to collect the promised amount on that
-- date itself (so that on that day only the promised amount is taken, not the normal
-- schedule as well). A promise kept early keeps the pause to its date (what the customer
-- asked for, and a second pass of the date sees what the first saw); a broken or cancelled
-- one pauses nothing. The claim passes over paused leases and the eligibility check refuses
-- an automatic presentment of them (sql/queries/attempts.sql, eligibility.sql).
--
-- What counts toward a promise (promise_money_v1): the lease's money presented after the
-- promise was made and on or before its date, manual or automatic; settled money counts,
-- money still in flight (a bank debit awaiting settlement) counts provisionally: the promise
-- stays open until it settles (kept) or comes back (broken). A promise is kept as soon as the
-- settled money reaches its amount, broken once its date has passed and even the money in
-- flight cannot reach it, cancelled when its lease leaves 'active' (charged off, closed)
-- before either. The pass decides, set-based, in one statement (promises.resolve).
CREATE TABLE promises (
    id            bigserial,
    customer_id   bigint NOT NULL,  -- the lease's customer (the distribution key)
    lease_id      bigint NOT NULL REFERENCES leases (id),
    amount_cents  bigint NOT NULL CHECK (amount_cents > 0),
    made_on       date NOT NULL,    -- the business date it was made
    promised_on   date NOT NULL CHECK (promised_on > made_on),
    auto_collect  boolean NOT NULL DEFAULT false,
    -- The first business date automatic collection may present the lease's money again.
    resume_on     date NOT NULL GENERATED ALWAYS AS (
                      CASE WHEN auto_collect THEN promised_on + 1 ELSE promised_on END) STORED,
    status        text NOT NULL DEFAULT 'open'
                  CHECK (status IN ('open', 'kept', 'broken', 'cancelled')),
    -- The settled money that counted toward it when it was resolved.
    paid_cents    bigint CHECK (paid_cents >= 0),
    -- The manual-pay payment the pass made for it on its date (auto_collect), if any.
    payment_id    bigint,
    resolved_on   date,
    created_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    PRIMARY KEY (customer_id, id),
    CHECK ((status = 'open') = (resolved_on IS NULL)),
    CHECK (status = 'open' OR paid_cents IS NOT NULL)
);
CREATE UNIQUE INDEX promises_id ON promises (id);
-- At most one open promise per lease.
CREATE UNIQUE INDEX promises_one_open ON promises (lease_id) WHERE status = 'open';
-- The pause: the claim's and the eligibility check's lookup (a kept promise keeps pausing
-- until its resume_on; broken and cancelled ones no longer do).
CREATE INDEX promises_pausing ON promises (lease_id, resume_on)
    WHERE status IN ('open', 'kept');
CREATE INDEX promises_lease ON promises (lease_id, id);

-- The money counted toward a promise of lease p_lease made at p_since for date p_until:
-- settled (paid) and still in flight, from the journal (kinds as in 0006), over the lease's
-- attempts made since the promise and presented on or before its date.
CREATE FUNCTION promise_money_v1(p_lease bigint, p_since timestamptz, p_until date)
RETURNS TABLE (settled_cents bigint, in_flight_cents bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint,
           coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0)::bigint
    FROM installments i
    JOIN money_movements m ON m.installment_id = i.id
    JOIN charge_attempts a ON a.id = m.attempt_id
    WHERE i.lease_id = p_lease
      AND a.created_at >= p_since
      AND a.as_of <= p_until
$$;
