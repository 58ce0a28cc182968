-- The money journal (DESIGN.md, "The money journal"; the money-ledger issue).
--
-- Every movement of money for an installment is a row of money_movements that is never
-- updated or deleted. An installment's paid_cents, in_flight_cents, awaiting_answers,
-- attempts, status, plan and next_attempt_on are derived from its rows: money_apply_v1 adds
-- the rows the money_*_v1 functions below write, in the same transaction, and
-- installments_derive_v1 recomputes an installment from its whole journal; no other
-- statement writes those columns (tests/test_money_journal.py reads every named query and
-- migration to hold that, and `collector audit` compares the columns with the journal).
--
-- Kinds and what they do to an installment:
--   presented  +in flight   a debit or charge sent (or about to be) for this much
--   accepted   (answered)   the gateway took a debit that settles later (ACH processing)
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
    -- The customer, copied from the method (no foreign key: a check per row on the hot path
    -- for a value the method already names; the audit compares the two).
    ADD COLUMN customer_id bigint,
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
    -- Presentments of this installment's money still without the gateway's answer: while
    -- all of it is in flight, processing (some awaits an answer) or pending_settlement.
    ADD COLUMN awaiting_answers integer NOT NULL DEFAULT 0 CHECK (awaiting_answers >= 0),
    -- The plan: set by the latest journal row that sets one (planned), its date plan_on
    -- (NULL: no automatic attempt). next_attempt_on shows it while the money is collectable.
    ADD COLUMN planned boolean NOT NULL DEFAULT false,
    ADD COLUMN plan_on date,
    ADD CONSTRAINT installments_taken_within_amount
        CHECK (paid_cents + in_flight_cents <= amount_cents);

-- No foreign keys on the journal: a check per row on the hottest path (40 ms a batch of
-- 500, for 500 presented and 500 settled rows) for ids the money_*_v1 functions take from
-- rows they lock or have just written; `collector audit` checks every reference.
CREATE TABLE money_movements (
    id              bigserial PRIMARY KEY,
    customer_id     bigint NOT NULL,  -- the installment's lease's customer (distribution key)
    installment_id  bigint NOT NULL,
    attempt_id      bigint,
    payment_id      bigint,
    kind            text NOT NULL CHECK (kind IN
                    ('presented', 'accepted', 'released', 'settled', 'returned', 'reversed',
                     'replanned')),
    amount_cents    bigint NOT NULL,
    as_of           date NOT NULL,
    source          text NOT NULL CHECK (btrim(source) <> ''),
    -- The first answer to this attempt's presentment of this installment's money (accepted,
    -- or an ending with no acceptance before it): one less presentment awaiting an answer.
    answers         boolean NOT NULL DEFAULT false,
    sets_plan       boolean NOT NULL DEFAULT false,
    retry_on        date,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'replanned') = (amount_cents = 0)),
    CHECK (amount_cents >= 0),
    CHECK (kind <> 'replanned' OR sets_plan),
    CHECK (NOT answers OR kind IN ('accepted', 'released', 'settled', 'returned')),
    CHECK (kind <> 'accepted' OR answers),
    -- Money moves under an attempt; only history carried over from before the journal
    -- (source 'migration') and plan lines have none.
    CHECK (attempt_id IS NOT NULL OR kind = 'replanned' OR source = 'migration')
);
CREATE INDEX money_movements_installment ON money_movements (installment_id, id);
-- Each attempt presents an installment's money once, is accepted at most once, ends it once
-- (released, settled or returned) and reverses it at most once: a second row of any is
-- impossible, whatever the code above does (ON CONFLICT DO NOTHING makes a replay a no-op).
CREATE UNIQUE INDEX money_movements_presented ON money_movements (attempt_id, installment_id)
    WHERE kind = 'presented';
CREATE UNIQUE INDEX money_movements_accepted ON money_movements (attempt_id, installment_id)
    WHERE kind = 'accepted';
CREATE UNIQUE INDEX money_movements_ended ON money_movements (attempt_id, installment_id)
    WHERE kind IN ('released', 'settled', 'returned');
CREATE UNIQUE INDEX money_movements_reversed ON money_movements (attempt_id, installment_id)
    WHERE kind = 'reversed';

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

-- What one journal row does to its installment's money: each kind's effect, defined once
-- (single-expression SQL functions: inlined wherever the journal is summed).
CREATE FUNCTION movement_paid_cents_v1(p_kind text, p_amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'settled' THEN p_amount WHEN 'reversed' THEN -p_amount ELSE 0 END
$$;

CREATE FUNCTION movement_in_flight_cents_v1(p_kind text, p_amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind
        WHEN 'presented' THEN p_amount
        WHEN 'released' THEN -p_amount
        WHEN 'settled' THEN -p_amount
        WHEN 'returned' THEN -p_amount
        ELSE 0
    END
$$;

-- An installment's state from its money: one definition, used by the functions that apply
-- journal rows and by the full derivation (single-expression SQL functions: inlined).
CREATE FUNCTION installment_status_v1(
    p_was text, p_amount bigint, p_paid bigint, p_in_flight bigint, p_awaiting integer,
    p_attempts integer, p_planned boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_was = 'cancelled' THEN 'cancelled'
        WHEN p_paid = p_amount THEN 'paid'
        WHEN p_paid + p_in_flight = p_amount THEN
            CASE WHEN p_awaiting > 0 THEN 'processing' ELSE 'pending_settlement' END
        -- Tried by the batch, or planned by an event (a return, a refusal, an operator).
        WHEN p_planned OR p_attempts > 0 THEN 'overdue'
        ELSE 'scheduled'
    END
$$;

CREATE FUNCTION installment_next_attempt_v1(
    p_status text, p_planned boolean, p_plan_on date, p_due_on date
) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_status NOT IN ('scheduled', 'overdue') THEN NULL
        WHEN p_planned THEN p_plan_on
        ELSE p_due_on
    END
$$;

-- The one writer of an installment's money state: apply the journal rows just added (ids
-- p_rows) to their installments, under the row lock the UPDATE takes. Each row's effect is
-- its own (kind, amount, source, answers, sets_plan), so the columns always equal the sums
-- of the journal (installments_derive_v1 recomputes them whole; the audit compares).
--   paid      += settled - reversed
--   in flight += presented - released - settled - returned
--   attempts  += batch and retry presentments
--   awaiting  += presentments - first answers
--   plan       = the latest row that sets one
CREATE FUNCTION money_apply_v1(p_rows bigint[]) RETURNS void
LANGUAGE sql SET plan_cache_mode = force_generic_plan AS $$
    WITH d AS (
        SELECT m.installment_id,
               sum(movement_paid_cents_v1(m.kind, m.amount_cents))::bigint AS paid,
               sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))::bigint AS in_flight,
               count(*) FILTER (WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry'))
                   ::integer AS attempts,
               sum(CASE WHEN m.kind = 'presented' THEN 1 WHEN m.answers THEN -1 ELSE 0 END)
                   ::integer AS awaiting,
               max(m.id) FILTER (WHERE m.sets_plan) AS plan_row
        FROM money_movements m
        WHERE m.id = ANY (p_rows)
        GROUP BY m.installment_id
    ), n AS (
        SELECT d.*, plan.retry_on AS plan_on
        FROM d LEFT JOIN money_movements plan ON plan.id = d.plan_row
    )
    -- SET reads the row as it was: each new value is the old one plus the rows' effect.
    UPDATE installments i
    SET paid_cents = i.paid_cents + n.paid,
        in_flight_cents = i.in_flight_cents + n.in_flight,
        attempts = i.attempts + n.attempts,
        awaiting_answers = i.awaiting_answers + n.awaiting,
        planned = i.planned OR n.plan_row IS NOT NULL,
        plan_on = CASE WHEN n.plan_row IS NOT NULL THEN n.plan_on ELSE i.plan_on END,
        status = installment_status_v1(
            i.status, i.amount_cents, i.paid_cents + n.paid, i.in_flight_cents + n.in_flight,
            i.awaiting_answers + n.awaiting, i.attempts + n.attempts,
            i.planned OR n.plan_row IS NOT NULL),
        next_attempt_on = installment_next_attempt_v1(
            installment_status_v1(
                i.status, i.amount_cents, i.paid_cents + n.paid,
                i.in_flight_cents + n.in_flight, i.awaiting_answers + n.awaiting,
                i.attempts + n.attempts, i.planned OR n.plan_row IS NOT NULL),
            i.planned OR n.plan_row IS NOT NULL,
            CASE WHEN n.plan_row IS NOT NULL THEN n.plan_on ELSE i.plan_on END,
            i.due_on),
        updated_at = now()
    FROM n
    WHERE i.id = n.installment_id;
$$;

-- Recompute installments p_ids whole from their journal (the migration, repairs, tests).
CREATE FUNCTION installments_derive_v1(p_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    WITH s AS (
        SELECT ids.id, j.*
        FROM unnest(p_ids) AS ids(id)
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS paid,
                   coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS in_flight,
                   count(*) FILTER (
                       WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry'))::integer
                       AS attempts,
                   coalesce(sum(CASE WHEN m.kind = 'presented' THEN 1
                                     WHEN m.answers THEN -1 ELSE 0 END), 0)::integer
                       AS awaiting,
                   max(m.id) FILTER (WHERE m.sets_plan) AS plan_row
            FROM money_movements m
            WHERE m.installment_id = ids.id
        ) j
    ), n AS (
        SELECT s.*, s.plan_row IS NOT NULL AS planned, plan.retry_on AS plan_on
        FROM s LEFT JOIN money_movements plan ON plan.id = s.plan_row
    )
    UPDATE installments i
    SET paid_cents = n.paid,
        in_flight_cents = n.in_flight,
        attempts = n.attempts,
        awaiting_answers = n.awaiting,
        planned = n.planned,
        plan_on = n.plan_on,
        status = installment_status_v1(i.status, i.amount_cents, n.paid, n.in_flight,
                                       n.awaiting, n.attempts, n.planned),
        next_attempt_on = installment_next_attempt_v1(
            installment_status_v1(i.status, i.amount_cents, n.paid, n.in_flight, n.awaiting,
                                  n.attempts, n.planned),
            n.planned, n.plan_on, i.due_on),
        updated_at = now()
    FROM n
    WHERE i.id = n.id;
$$;

-- Present money: one 'presented' row per (attempt, installment, amount), then apply them.
-- The money_*_v1 functions return how many rows they added, so that one statement can
-- claim or record and apply the money (SELECT money_present_v1(...) in a CTE: they read
-- only rows committed before, and write what the statement does not). Their statements are
-- driven by arrays, whatever the values: a generic plan serves every call (the engine's
-- connections force custom plans, which re-planned them on each call).
CREATE FUNCTION money_present_v1(
    p_attempt bigint[], p_installment bigint[], p_amount bigint[], p_customer bigint[],
    p_payment bigint[], p_as_of date, p_source text[]
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source)
        SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, 'presented',
               m.amount_cents, p_as_of, m.source
        FROM unnest(p_attempt, p_installment, p_amount, p_customer, p_payment, p_source)
          AS m(attempt_id, installment_id, amount_cents, customer_id, payment_id, source)
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;

-- What became of attempts: for each attempt, p_kind 'accepted' (the gateway took the debit,
-- it settles later), 'released', 'settled' or 'returned' mirrors its presented rows,
-- 'reversed' its settled rows. Each is applied once (the unique indexes; a replay adds
-- nothing). An ending is a first answer unless the attempt was accepted before. Rows of
-- p_sets_plan carry p_retry_on as the installment's next collection date.
CREATE FUNCTION money_follow_v1(
    p_attempt bigint[], p_kind text[], p_sets_plan boolean[], p_retry_on date[],
    p_reason text[], p_as_of date, p_source text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source, answers, sets_plan, retry_on, reason)
        SELECT p.customer_id, p.installment_id, p.attempt_id, p.payment_id, f.kind,
               p.amount_cents, p_as_of, p_source,
               f.kind = 'accepted'
                   OR (f.kind IN ('released', 'settled', 'returned') AND acc.id IS NULL),
               f.sets_plan, f.retry_on, f.reason
        FROM unnest(p_attempt, p_kind, p_sets_plan, p_retry_on, p_reason)
          AS f(attempt_id, kind, sets_plan, retry_on, reason)
        -- Each branch names its kind, so the partial unique indexes find the rows.
        CROSS JOIN LATERAL (
            SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, m.amount_cents
            FROM money_movements m
            WHERE m.attempt_id = f.attempt_id AND m.kind = 'presented'
              AND f.kind IN ('accepted', 'released', 'settled', 'returned')
            UNION ALL
            SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, m.amount_cents
            FROM money_movements m
            WHERE m.attempt_id = f.attempt_id AND m.kind = 'settled' AND f.kind = 'reversed'
        ) p
        -- Was it accepted before? One probe of the accepted index per row (a NOT EXISTS was
        -- planned as a hash of every accepted row of the book).
        LEFT JOIN LATERAL (
            SELECT acc.id FROM money_movements acc
            WHERE acc.attempt_id = p.attempt_id AND acc.installment_id = p.installment_id
              AND acc.kind = 'accepted'
            LIMIT 1
        ) acc ON true
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;

-- Set the collection date of installments without moving money.
CREATE FUNCTION money_replan_v1(
    p_installment bigint[], p_retry_on date, p_as_of date, p_source text, p_reason text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, kind, amount_cents, as_of, source, sets_plan,
             retry_on, reason)
        SELECT l.customer_id, i.id, 'replanned', 0, p_as_of, p_source, true, p_retry_on,
               p_reason
        FROM installments i JOIN leases l ON l.id = i.lease_id
        WHERE i.id = ANY (p_installment)
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN coalesce(cardinality(v_rows), 0);
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
     answers, sets_plan, retry_on, created_at)
SELECT p.customer_id, p.installment_id, p.attempt_id, p.payment_id, e.kind, p.amount_cents,
       coalesce(a.resolved_at, a.updated_at)::date, 'migration',
       e.kind IN ('accepted', 'released', 'settled', 'returned'),
       e.kind IN ('released', 'returned', 'reversed') AND p.payment_id IS NULL,
       i.next_attempt_on, coalesce(a.resolved_at, a.updated_at)
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
        WHEN a.status = 'processing' THEN ARRAY['accepted']
        ELSE ARRAY[]::text[]
    END) AS kind
) e
WHERE p.kind = 'presented'
ORDER BY p.id, e.kind = 'reversed';

INSERT INTO money_movements
    (customer_id, installment_id, kind, amount_cents, as_of, source, answers)
SELECT l.customer_id, i.id, k.kind, gap.cents, i.updated_at::date, 'migration',
       k.kind = 'settled'
FROM installments i
JOIN leases l ON l.id = i.lease_id
CROSS JOIN LATERAL (
    SELECT i.paid_cents - coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)
               AS cents
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
