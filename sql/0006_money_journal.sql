-- The money journal (DESIGN.md, "The money journal"; the money-ledger issue).
--
-- Every movement of money for an installment is a row of money_movements that is never
-- updated or deleted. An installment's paid_cents, in_flight_cents, status, attempts and
-- next_attempt_on are derived from its rows by installments_derive_v1, called by the
-- money_*_v1 functions below in the same transaction as the rows they add; no other statement
-- writes those columns (tests/test_money_journal.py reads every named query to hold that).
--
-- Kinds and what they do to an installment:
--   presented  +in flight   a debit or charge sent (or about to be) for this much
--   released   -in flight   declined, not taken, refused by the eligibility check
--   settled    -in flight, +paid
--   returned   -in flight   a bank debit that came back before it settled
--   reversed   -paid        a debit returned after it was counted paid
--   replanned  (no money)   the collection date set by an event that moves no money (a new
--                           primary method, a row set aside for an operator)
-- A row with sets_plan carries the installment's next collection date (retry_on, NULL: no
-- automatic attempt); the latest such row is the plan. Rows of a manual payment's ending set
-- no plan, so the batch's retry plan survives a declined manual payment.

-- Who the money comes from, independent of the payment_methods row a customer can delete and
-- add again: the gateway's fingerprint of the card or bank account where it has one, else the
-- gateway's token. Scoped to the customer (the future distribution key). md5 is a name here,
-- not a secret: the token itself is never copied onto attempts.
ALTER TABLE payment_methods ADD COLUMN fingerprint text
    CHECK (fingerprint IS NULL OR btrim(fingerprint) <> '');
ALTER TABLE payment_methods ADD COLUMN instrument_key text GENERATED ALWAYS AS (
    md5(customer_id::text || ':' || kind || ':'
        || coalesce('fp:' || fingerprint, 'tok:' || gateway || ':' || token))
) STORED;

-- An attempt keeps what it sent, so that a re-send under its key is identical, and who it
-- was sent to, so that the rules count the history of the card or account.
ALTER TABLE charge_attempts
    ADD COLUMN customer_id bigint REFERENCES customers (id),
    ADD COLUMN instrument_key text,
    ADD COLUMN as_of date,
    ADD COLUMN effective_on date,
    ADD COLUMN reinitiation boolean NOT NULL DEFAULT false,
    ADD COLUMN network_advice text,
    ADD COLUMN last_sent_at timestamptz;
UPDATE charge_attempts a
SET customer_id = pm.customer_id, instrument_key = pm.instrument_key,
    as_of = a.created_at::date, effective_on = a.created_at::date,
    last_sent_at = a.created_at
FROM payment_methods pm
WHERE pm.id = a.payment_method_id;
-- A debit presented again after an NSF return was labelled a reinitiation at send time.
UPDATE charge_attempts a SET reinitiation = true
WHERE a.source = 'retry' AND EXISTS (
    SELECT 1 FROM charge_attempts b JOIN charge_returns r ON r.attempt_id = b.id
    WHERE b.installment_id = a.installment_id AND b.id < a.id AND r.category = 'nsf');
ALTER TABLE charge_attempts
    ALTER COLUMN customer_id SET NOT NULL,
    ALTER COLUMN instrument_key SET NOT NULL,
    ALTER COLUMN as_of SET NOT NULL,
    ALTER COLUMN last_sent_at SET NOT NULL,
    ALTER COLUMN last_sent_at SET DEFAULT now();
-- 'refused': the eligibility check would not let this money be presented; nothing was sent.
ALTER TABLE charge_attempts DROP CONSTRAINT charge_attempts_status_check;
ALTER TABLE charge_attempts ADD CONSTRAINT charge_attempts_status_check CHECK (status IN
    ('pending', 'succeeded', 'declined', 'failed', 'processing', 'returned', 'in_doubt',
     'refused'));
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
    ('pending', 'succeeded', 'processing', 'declined', 'failed', 'in_doubt', 'returned',
     'refused'));
-- The networks' caps and NACHA's reinitiation count read the history of an instrument.
CREATE INDEX charge_attempts_instrument ON charge_attempts (instrument_key, as_of);
DROP INDEX charge_attempts_method_recent;

ALTER TABLE installments
    ADD COLUMN in_flight_cents bigint NOT NULL DEFAULT 0 CHECK (in_flight_cents >= 0),
    ADD CONSTRAINT installments_taken_within_amount
        CHECK (paid_cents + in_flight_cents <= amount_cents);

CREATE TABLE money_movements (
    id              bigserial PRIMARY KEY,
    customer_id     bigint NOT NULL REFERENCES customers (id),
    installment_id  bigint NOT NULL REFERENCES installments (id),
    attempt_id      bigint REFERENCES charge_attempts (id),
    payment_id      bigint REFERENCES payments (id),
    kind            text NOT NULL CHECK (kind IN
                    ('presented', 'released', 'settled', 'returned', 'reversed', 'replanned')),
    amount_cents    bigint NOT NULL,
    as_of           date NOT NULL,
    source          text NOT NULL CHECK (btrim(source) <> ''),
    sets_plan       boolean NOT NULL DEFAULT false,
    retry_on        date,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'replanned') = (amount_cents = 0)),
    CHECK (amount_cents >= 0),
    CHECK (kind <> 'replanned' OR sets_plan),
    -- Money moves under an attempt; only history carried over from before the journal
    -- (source 'migration') and plan lines have none.
    CHECK (attempt_id IS NOT NULL OR kind = 'replanned' OR source = 'migration')
);
CREATE INDEX money_movements_installment ON money_movements (installment_id, id);
CREATE INDEX money_movements_attempt ON money_movements (attempt_id, kind)
    WHERE attempt_id IS NOT NULL;
CREATE INDEX money_movements_customer ON money_movements (customer_id);

-- Append-only: the journal is history.
CREATE FUNCTION money_movements_append_only_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'money_movements is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER money_movements_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON money_movements
    FOR EACH STATEMENT EXECUTE FUNCTION money_movements_append_only_v1();

-- Rows no batch statement could apply, set aside for an operator with their reason
-- (DESIGN.md, "Failure isolation"); the rest of the batch, pass and file went on.
CREATE TABLE needs_attention (
    id           bigserial PRIMARY KEY,
    customer_id  bigint REFERENCES customers (id),
    subject      text NOT NULL CHECK (subject IN
                 ('installment', 'attempt', 'payment', 'ach_entry', 'return', 'settlement')),
    subject_id   text NOT NULL,
    reason       text NOT NULL CHECK (btrim(reason) <> ''),
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);
CREATE INDEX needs_attention_open ON needs_attention (subject, subject_id)
    WHERE resolved_at IS NULL;

-- The one writer of an installment's money state: re-derive each installment in p_ids from
-- its journal, under the row lock the UPDATE takes.
CREATE FUNCTION installments_derive_v1(p_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    WITH sums AS (
        SELECT m.installment_id,
               sum(CASE m.kind WHEN 'settled' THEN m.amount_cents
                               WHEN 'reversed' THEN -m.amount_cents ELSE 0 END) AS paid,
               sum(CASE m.kind WHEN 'presented' THEN m.amount_cents
                               WHEN 'released' THEN -m.amount_cents
                               WHEN 'settled' THEN -m.amount_cents
                               WHEN 'returned' THEN -m.amount_cents ELSE 0 END) AS in_flight,
               count(DISTINCT m.attempt_id) FILTER (
                   WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry')) AS attempts,
               bool_or(m.sets_plan) AS planned,
               (array_agg(m.retry_on ORDER BY m.id DESC) FILTER (WHERE m.sets_plan))[1]
                   AS plan_on
        FROM money_movements m
        WHERE m.installment_id = ANY (p_ids)
        GROUP BY m.installment_id
    ), derived AS (
        SELECT i.id,
               coalesce(s.paid, 0) AS paid,
               coalesce(s.in_flight, 0) AS in_flight,
               coalesce(s.attempts, 0) AS attempts,
               CASE
                   WHEN i.status = 'cancelled' THEN 'cancelled'
                   WHEN coalesce(s.paid, 0) = i.amount_cents THEN 'paid'
                   WHEN coalesce(s.paid, 0) + coalesce(s.in_flight, 0) = i.amount_cents THEN
                       CASE WHEN EXISTS (
                           SELECT 1 FROM money_movements p
                           JOIN charge_attempts a ON a.id = p.attempt_id
                           WHERE p.installment_id = i.id AND p.kind = 'presented'
                             AND a.status IN ('pending', 'in_doubt'))
                       THEN 'processing' ELSE 'pending_settlement' END
                   WHEN coalesce(s.planned, false) OR coalesce(s.attempts, 0) > 0 THEN 'overdue'
                   ELSE 'scheduled'
               END AS status,
               s.planned, s.plan_on, i.due_on
        FROM installments i
        LEFT JOIN sums s ON s.installment_id = i.id
        WHERE i.id = ANY (p_ids)
    )
    UPDATE installments i
    SET paid_cents = d.paid,
        in_flight_cents = d.in_flight,
        attempts = d.attempts,
        status = d.status,
        next_attempt_on = CASE
            WHEN d.status NOT IN ('scheduled', 'overdue') THEN NULL
            WHEN coalesce(d.planned, false) THEN d.plan_on
            ELSE d.due_on
        END,
        updated_at = now()
    FROM derived d
    WHERE i.id = d.id;
$$;

-- Present money: one 'presented' row per (attempt, installment, amount), then re-derive.
CREATE FUNCTION money_present_v1(
    p_attempt bigint[], p_installment bigint[], p_amount bigint[], p_customer bigint[],
    p_payment bigint[], p_as_of date, p_source text[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO money_movements
        (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of, source)
    SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, 'presented',
           m.amount_cents, p_as_of, m.source
    FROM unnest(p_attempt, p_installment, p_amount, p_customer, p_payment, p_source)
      AS m(attempt_id, installment_id, amount_cents, customer_id, payment_id, source);
    PERFORM installments_derive_v1(p_installment);
END;
$$;

-- What became of attempts: for each attempt, p_kind 'released', 'settled' or 'returned'
-- mirrors its presented rows (what is still in flight), 'reversed' mirrors its settled rows
-- not yet reversed, NULL adds nothing (the attempt's status changed: re-derive only). Each
-- ending is applied once: an attempt whose money already ended adds nothing again. Rows of
-- p_sets_plan carry p_retry_on as the installment's next collection date.
CREATE FUNCTION money_follow_v1(
    p_attempt bigint[], p_kind text[], p_sets_plan boolean[], p_retry_on date[],
    p_reason text[], p_as_of date, p_source text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO money_movements
        (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
         source, sets_plan, retry_on, reason)
    SELECT p.customer_id, p.installment_id, p.attempt_id, p.payment_id, f.kind,
           p.amount_cents, p_as_of, p_source, f.sets_plan, f.retry_on, f.reason
    FROM unnest(p_attempt, p_kind, p_sets_plan, p_retry_on, p_reason)
      AS f(attempt_id, kind, sets_plan, retry_on, reason)
    JOIN money_movements p
      ON p.attempt_id = f.attempt_id
     AND p.kind = CASE WHEN f.kind = 'reversed' THEN 'settled' ELSE 'presented' END
    WHERE f.kind IN ('released', 'settled', 'returned', 'reversed')
      AND NOT EXISTS (
          SELECT 1 FROM money_movements e
          WHERE e.attempt_id = f.attempt_id AND e.installment_id = p.installment_id
            AND e.kind = ANY (CASE WHEN f.kind = 'reversed' THEN ARRAY['reversed']
                                   ELSE ARRAY['released', 'settled', 'returned'] END));
    PERFORM installments_derive_v1(ARRAY(
        SELECT DISTINCT p.installment_id
        FROM money_movements p
        WHERE p.attempt_id = ANY (p_attempt) AND p.kind = 'presented'));
END;
$$;

-- Set the collection date of installments without moving money.
CREATE FUNCTION money_replan_v1(
    p_installment bigint[], p_retry_on date, p_as_of date, p_source text, p_reason text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO money_movements
        (customer_id, installment_id, kind, amount_cents, as_of, source, sets_plan, retry_on,
         reason)
    SELECT l.customer_id, i.id, 'replanned', 0, p_as_of, p_source, true, p_retry_on, p_reason
    FROM installments i JOIN leases l ON l.id = i.lease_id
    WHERE i.id = ANY (p_installment);
    PERFORM installments_derive_v1(p_installment);
END;
$$;

-- What deciding a returned debit needs to know of its money on its account: the NSF returns
-- of earlier presentments of the same installments to the same instrument, the business date
-- of the original entry (the first that came back NSF, else this one), and the customer's
-- active primary method now (a new one chosen while the debit was in flight is used next).
CREATE FUNCTION debit_history_v1(p_attempt bigint)
RETURNS TABLE (nsf_returns bigint, original_on date, primary_method_id bigint)
LANGUAGE sql STABLE AS $$
    WITH a AS (
        SELECT id, instrument_key, customer_id, as_of FROM charge_attempts WHERE id = p_attempt
    ), same AS (
        SELECT DISTINCT b.id, b.as_of
        FROM money_movements own
        JOIN money_movements m ON m.installment_id = own.installment_id AND m.kind = 'presented'
        JOIN charge_attempts b ON b.id = m.attempt_id
        JOIN a ON a.instrument_key = b.instrument_key
        WHERE own.attempt_id = p_attempt AND own.kind = 'presented' AND b.id <> p_attempt
    ), nsf AS (
        SELECT s.id, s.as_of FROM same s
        JOIN charge_returns r ON r.attempt_id = s.id AND r.category = 'nsf'
    )
    SELECT (SELECT count(*) FROM nsf),
           coalesce((SELECT min(as_of) FROM nsf), (SELECT as_of FROM a)),
           (SELECT pm.id FROM payment_methods pm JOIN a ON pm.customer_id = a.customer_id
            WHERE pm.is_primary AND pm.status = 'active')
$$;

-- The history before the journal, carried over as journal rows: each attempt presented what
-- it asked for (its installment, or its payment's allocations) and ended as its status says.
-- What an installment counted paid with no attempt behind it (loaded from an earlier system)
-- is an opening 'presented' + 'settled' pair of source 'migration'.
INSERT INTO money_movements
    (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of, source,
     created_at)
SELECT a.customer_id, coalesce(a.installment_id, pa.installment_id), a.id, a.payment_id,
       'presented', coalesce(pa.amount_cents, a.amount_cents), a.as_of, a.source, a.created_at
FROM charge_attempts a
LEFT JOIN payment_allocations pa ON pa.payment_id = a.payment_id
WHERE a.installment_id IS NOT NULL OR pa.payment_id IS NOT NULL
ORDER BY a.id, pa.installment_id;

INSERT INTO money_movements
    (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of, source,
     sets_plan, retry_on, created_at)
SELECT p.customer_id, p.installment_id, p.attempt_id, p.payment_id, e.kind, p.amount_cents,
       coalesce(a.resolved_at, a.updated_at)::date, 'migration',
       e.kind <> 'settled' AND p.payment_id IS NULL, i.next_attempt_on,
       coalesce(a.resolved_at, a.updated_at)
FROM money_movements p
JOIN charge_attempts a ON a.id = p.attempt_id
JOIN installments i ON i.id = p.installment_id
LEFT JOIN charge_returns r ON r.attempt_id = a.id
CROSS JOIN LATERAL (
    SELECT unnest(CASE
        WHEN a.status = 'succeeded' THEN ARRAY['settled']
        WHEN a.status IN ('declined', 'failed') THEN ARRAY['released']
        WHEN a.status = 'returned' AND r.reversed_paid THEN ARRAY['settled', 'reversed']
        WHEN a.status = 'returned' THEN ARRAY['returned']
        ELSE ARRAY[]::text[]
    END) AS kind
) e
WHERE p.kind = 'presented'
ORDER BY p.id, e.kind = 'reversed';

INSERT INTO money_movements
    (customer_id, installment_id, kind, amount_cents, as_of, source)
SELECT l.customer_id, i.id, k.kind, gap.cents, i.updated_at::date, 'migration'
FROM installments i
JOIN leases l ON l.id = i.lease_id
CROSS JOIN LATERAL (
    SELECT i.paid_cents - coalesce(sum(CASE m.kind WHEN 'settled' THEN m.amount_cents
                                                   WHEN 'reversed' THEN -m.amount_cents
                                                   ELSE 0 END), 0) AS cents
    FROM money_movements m WHERE m.installment_id = i.id
) gap
CROSS JOIN (VALUES ('presented'), ('settled')) AS k(kind)
WHERE gap.cents > 0;

-- The plan an installment had (a retry date, or none after a hard decline) is kept where
-- the history alone would not give it back.
INSERT INTO money_movements
    (customer_id, installment_id, kind, amount_cents, as_of, source, sets_plan, retry_on,
     reason)
SELECT l.customer_id, i.id, 'replanned', 0, i.updated_at::date, 'migration', true,
       i.next_attempt_on, 'plan before the journal'
FROM installments i
JOIN leases l ON l.id = i.lease_id
WHERE i.status = 'overdue';

SELECT installments_derive_v1(ARRAY(SELECT id FROM installments));
