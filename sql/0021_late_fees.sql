-- Late fees within state caps (issue 9, part 2).
--
-- A lease has a jurisdiction (its state, a two-letter US code; NULL: unknown, the default
-- rule applies). A late fee is a journal row: 'fee_assessed' adds to what an installment
-- owes, 'fee_waived' takes a fee back (the whole fee, once). The pass assesses fees
-- set-based, one statement a pass (money_assess_fees_v1), from the rule table the engine
-- loads and validates at start (collector/fees/rules.py) and passes in as arrays, so the
-- rules live in one place and are data.
--
-- An installment owes its rent (amount_cents) plus its fees less their waivers: fee_cents and
-- fee_waived_cents are derived from the journal by the one writer of an installment's money
-- state (money_apply_v1, installments_derive_v1, replaced below), and owed_cents is their
-- sum, so every statement that asks what is left to take reads owed - paid - in flight -
-- cancelled (cancelled: what a payoff forgave, sql/0017).
--
-- This migration runs after 0017 (payoff), which replaced the same shared things: the
-- journal's kinds, money_apply_v1 and installments_derive_v1 (cancelled money, status
-- through installment_status_v2), the installment CHECK on paid + in flight + cancelled,
-- money_cancel_v1 and lease_payoff_v1. Each is restated here with both: cancelled money and
-- what is owed. A payoff includes the lease's unpaid late fees (component 'late_fees') and
-- cancels them with the rent it forgives.

ALTER TABLE leases ADD COLUMN state text CHECK (state ~ '^[A-Z]{2}$');

ALTER TABLE installments
    ADD COLUMN fee_cents bigint NOT NULL DEFAULT 0 CHECK (fee_cents >= 0),
    ADD COLUMN fee_waived_cents bigint NOT NULL DEFAULT 0
        CHECK (fee_waived_cents >= 0 AND fee_waived_cents <= fee_cents),
    ADD COLUMN owed_cents bigint GENERATED ALWAYS AS (amount_cents + fee_cents - fee_waived_cents)
        STORED;

-- What is taken never exceeds what is owed (rent + fees - waivers), nor what is taken and
-- cancelled (0017's installments_left_within_amount, now on owed), and paid means all of it.
-- (0001's two checks on amount_cents were unnamed: found by what they say.)
DO $$
DECLARE
    v_name text;
BEGIN
    FOR v_name IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'installments'::regclass AND contype = 'c'
          AND (pg_get_constraintdef(oid) IN ('CHECK ((paid_cents <= amount_cents))',
                                             'CHECK (((status <> ''paid''::text) OR (paid_cents = amount_cents)))')
               OR conname IN ('installments_taken_within_amount',
                              'installments_left_within_amount'))
    LOOP
        EXECUTE format('ALTER TABLE installments DROP CONSTRAINT %I', v_name);
    END LOOP;
END;
$$;
ALTER TABLE installments
    ADD CONSTRAINT installments_taken_within_owed
        CHECK (paid_cents + in_flight_cents <= owed_cents),
    ADD CONSTRAINT installments_left_within_owed
        CHECK (paid_cents + in_flight_cents + cancelled_cents <= owed_cents),
    ADD CONSTRAINT installments_paid_is_owed CHECK (status <> 'paid' OR paid_cents = owed_cents);

-- The candidates of the fee assessment: unpaid installments with no fee yet, by due date.
CREATE INDEX installments_fee_candidates ON installments (due_on)
    WHERE status IN ('scheduled', 'overdue') AND fee_cents = 0;

-- The journal's kinds: 0017's list (0015's plus the payoff's 'cancelled' and 'reinstated')
-- plus the two fee kinds. A fee is the pass's (or an operator's) decision, under no attempt;
-- it moves no money, it changes what is owed. (A payoff's rows name their attempt and
-- payment: 0017's money_movements_payoff_rows, unchanged.)
ALTER TABLE money_movements DROP CONSTRAINT money_movements_kind_check;
ALTER TABLE money_movements ADD CONSTRAINT money_movements_kind_check CHECK (kind IN
    ('presented', 'accepted', 'released', 'settled', 'returned', 'reversed', 'replanned',
     'charged_off', 'cancelled', 'reinstated', 'fee_assessed', 'fee_waived'));
ALTER TABLE money_movements DROP CONSTRAINT money_movements_under_attempt;
ALTER TABLE money_movements ADD CONSTRAINT money_movements_under_attempt CHECK (
    attempt_id IS NOT NULL OR kind IN ('replanned', 'charged_off', 'fee_assessed', 'fee_waived')
    OR source = 'migration');
-- A fee has an amount, names no attempt or payment, sets no plan, and says why (the rule's
-- jurisdiction; a waiver's reason).
ALTER TABLE money_movements ADD CONSTRAINT money_movements_fee_rows CHECK (
    kind NOT IN ('fee_assessed', 'fee_waived')
    OR (amount_cents > 0 AND attempt_id IS NULL AND payment_id IS NULL AND NOT sets_plan
        AND reason IS NOT NULL AND btrim(reason) <> ''));
-- At most one fee per installment, whatever its fate, and a fee is waived at most once.
CREATE UNIQUE INDEX money_movements_fee_assessed ON money_movements (installment_id)
    WHERE kind = 'fee_assessed';
CREATE UNIQUE INDEX money_movements_fee_waived ON money_movements (installment_id)
    WHERE kind = 'fee_waived';

-- What one journal row does to an installment's fees (like movement_paid_cents_v1).
CREATE FUNCTION movement_fee_cents_v1(p_kind text, p_amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'fee_assessed' THEN p_amount ELSE 0 END
$$;

CREATE FUNCTION movement_fee_waived_cents_v1(p_kind text, p_amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'fee_waived' THEN p_amount ELSE 0 END
$$;

-- money_apply_v1 (0006; 0017's), replaced: paid, in flight and cancelled money as in 0017,
-- and also fees and waivers; the status from installment_status_v2 over what is owed (rent
-- + fees - waivers) instead of the rent alone. Same signature, same settings (0010's
-- generic plan with enable_seqscan off). As in 0006, every new value is computed in the
-- UPDATE from the row it locked; i.owed_cents there is the row's value before the UPDATE.
CREATE OR REPLACE FUNCTION money_apply_v1(p_rows bigint[]) RETURNS void
LANGUAGE sql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
    WITH d AS (
        SELECT m.installment_id,
               sum(movement_paid_cents_v1(m.kind, m.amount_cents))::bigint AS paid,
               sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))::bigint AS in_flight,
               sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint AS cancelled,
               sum(movement_fee_cents_v1(m.kind, m.amount_cents))::bigint AS fee,
               sum(movement_fee_waived_cents_v1(m.kind, m.amount_cents))::bigint AS waived,
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
        cancelled_cents = i.cancelled_cents + n.cancelled,
        fee_cents = i.fee_cents + n.fee,
        fee_waived_cents = i.fee_waived_cents + n.waived,
        attempts = i.attempts + n.attempts,
        awaiting_answers = i.awaiting_answers + n.awaiting,
        planned = i.planned OR n.plan_row IS NOT NULL,
        plan_on = CASE WHEN n.plan_row IS NOT NULL THEN n.plan_on ELSE i.plan_on END,
        status = installment_status_v2(
            CASE WHEN n.cancelled < 0 THEN 'reinstated' ELSE i.status END,
            i.owed_cents + n.fee - n.waived, i.paid_cents + n.paid,
            i.in_flight_cents + n.in_flight, i.cancelled_cents + n.cancelled,
            i.awaiting_answers + n.awaiting, i.attempts + n.attempts,
            i.planned OR n.plan_row IS NOT NULL),
        next_attempt_on = installment_next_attempt_v1(
            installment_status_v2(
                CASE WHEN n.cancelled < 0 THEN 'reinstated' ELSE i.status END,
                i.owed_cents + n.fee - n.waived, i.paid_cents + n.paid,
                i.in_flight_cents + n.in_flight, i.cancelled_cents + n.cancelled,
                i.awaiting_answers + n.awaiting, i.attempts + n.attempts,
                i.planned OR n.plan_row IS NOT NULL),
            i.planned OR n.plan_row IS NOT NULL,
            CASE WHEN n.plan_row IS NOT NULL THEN n.plan_on ELSE i.plan_on END,
            i.due_on),
        updated_at = now()
    FROM n
    WHERE i.id = n.installment_id;
$$;

-- installments_derive_v1 (0006; 0017's), replaced: cancelled money, fees and waivers, the
-- status from installment_status_v2 over what is owed. Same signature (no settings, as in
-- 0006 and 0017).
CREATE OR REPLACE FUNCTION installments_derive_v1(p_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    WITH s AS (
        SELECT ids.id, j.*
        FROM unnest(p_ids) AS ids(id)
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS paid,
                   coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS in_flight,
                   coalesce(sum(movement_cancelled_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS cancelled,
                   coalesce(sum(movement_fee_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS fee,
                   coalesce(sum(movement_fee_waived_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS waived,
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
        cancelled_cents = n.cancelled,
        fee_cents = n.fee,
        fee_waived_cents = n.waived,
        attempts = n.attempts,
        awaiting_answers = n.awaiting,
        planned = n.planned,
        plan_on = n.plan_on,
        status = installment_status_v2(i.status, i.amount_cents + n.fee - n.waived, n.paid,
                                       n.in_flight, n.cancelled, n.awaiting, n.attempts,
                                       n.planned),
        next_attempt_on = installment_next_attempt_v1(
            installment_status_v2(i.status, i.amount_cents + n.fee - n.waived, n.paid,
                                  n.in_flight, n.cancelled, n.awaiting, n.attempts, n.planned),
            n.planned, n.plan_on, i.due_on),
        updated_at = now()
    FROM n
    WHERE i.id = n.id;
$$;

-- The late fees due on business date p_as_of: one per installment of an active lease (never
-- a charged-off one) that is unpaid (scheduled or overdue, money neither paid, in flight nor
-- cancelled by a payoff),
-- has no fee yet, and is more than its jurisdiction's grace days past due. The rule of the
-- lease's state (p_states ... p_min, parallel arrays), else the default (p_default_*): the fee
-- is the lesser of p_bp basis points of the installment's rent and p_cap cents, but at least
-- p_min cents (the rule table keeps p_min <= p_cap, so no fee is ever above its cap). One
-- definition, read by the pass (money_assess_fees_v1) and the dry run. Reads only.
CREATE FUNCTION late_fees_due_v1(
    p_as_of date, p_states text[], p_grace integer[], p_bp integer[], p_cap bigint[],
    p_min bigint[], p_default_grace integer, p_default_bp integer, p_default_cap bigint,
    p_default_min bigint
) RETURNS TABLE (installment_id bigint, lease_id bigint, customer_id bigint, due_on date,
                 fee_cents bigint, rule text)
LANGUAGE sql STABLE AS $$
    WITH rules AS (
        SELECT * FROM unnest(p_states, p_grace, p_bp, p_cap, p_min)
          AS r(state, grace, bp, cap, min_cents)
    ), due AS (
        SELECT i.id, i.lease_id, l.customer_id, i.due_on,
               least(coalesce(r.cap, p_default_cap),
                     greatest(coalesce(r.min_cents, p_default_min),
                              i.amount_cents * coalesce(r.bp, p_default_bp) / 10000))
                   AS fee,
               coalesce(r.state, 'default') AS rule
        FROM installments i
        JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
        LEFT JOIN rules r ON r.state = l.state
        WHERE i.status IN ('scheduled', 'overdue') AND i.fee_cents = 0
          -- The shortest grace of any rule bounds the scan of the candidates' index.
          AND i.due_on < p_as_of - least(p_default_grace,
                                         (SELECT min(g) FROM unnest(p_grace) AS g))
          AND i.due_on < p_as_of - coalesce(r.grace, p_default_grace)
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
    )
    SELECT id, lease_id, customer_id, due_on, fee, rule FROM due WHERE fee > 0
$$;

-- Assess the late fees due on business date p_as_of (late_fees_due_v1), in one statement
-- whatever the size of the book: one 'fee_assessed' row each (its reason names the rule),
-- applied by money_apply_v1 like every journal row. Returns the fees assessed (count, cents).
-- Run once a pass over the book: planned for its values on each call (like 0015's charge-off).
CREATE FUNCTION money_assess_fees_v1(
    p_as_of date, p_states text[], p_grace integer[], p_bp integer[], p_cap bigint[],
    p_min bigint[], p_default_grace integer, p_default_bp integer, p_default_cap bigint,
    p_default_min bigint, p_source text
) RETURNS TABLE (fees integer, cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, kind, amount_cents, as_of, source, reason)
        SELECT d.customer_id, d.installment_id, 'fee_assessed', d.fee_cents, p_as_of, p_source,
               'late_fee:' || d.rule
        FROM late_fees_due_v1(p_as_of, p_states, p_grace, p_bp, p_cap, p_min, p_default_grace,
                              p_default_bp, p_default_cap, p_default_min) d
        ORDER BY d.due_on, d.installment_id
        -- Two passes of one date: the second finds the fee (the unique index) and adds none.
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN QUERY
        SELECT count(*)::integer, coalesce(sum(m.amount_cents), 0)::bigint
        FROM money_movements m WHERE m.id = ANY (v_rows);
END;
$$;

-- Waive fee p_fee (its 'fee_assessed' row) of installment p_installment: one 'fee_waived'
-- row of the fee's whole amount with the operator's reason, applied by money_apply_v1, under
-- the installment's row lock. Returns the waiver's row, or, when it cannot be waived, why:
-- 'not_found' (no such fee on that lease), 'already_waived', 'fee_paid' (some of the fee is
-- paid or in flight: a refund, not a waiver; or a payoff's cancellation covers it, pending
-- or done: the payoff forgave it or is paying it).
CREATE FUNCTION money_waive_fee_v1(
    p_lease bigint, p_fee bigint, p_as_of date, p_source text, p_reason text
) RETURNS TABLE (outcome text, waiver_id bigint, installment_id bigint, amount_cents bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_fee money_movements%ROWTYPE;
    v_inst installments%ROWTYPE;
    v_row bigint;
BEGIN
    SELECT m.* INTO v_fee FROM money_movements m
    JOIN installments i ON i.id = m.installment_id
    WHERE m.id = p_fee AND m.kind = 'fee_assessed' AND i.lease_id = p_lease;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    SELECT * INTO v_inst FROM installments WHERE id = v_fee.installment_id FOR UPDATE;
    IF v_inst.fee_waived_cents > 0 THEN
        RETURN QUERY SELECT 'already_waived'::text, NULL::bigint, v_inst.id, v_fee.amount_cents;
        RETURN;
    END IF;
    IF v_inst.paid_cents + v_inst.in_flight_cents + v_inst.cancelled_cents
           > v_inst.owed_cents - v_fee.amount_cents THEN
        RETURN QUERY SELECT 'fee_paid'::text, NULL::bigint, v_inst.id, v_fee.amount_cents;
        RETURN;
    END IF;
    INSERT INTO money_movements
        (customer_id, installment_id, kind, amount_cents, as_of, source, reason)
    VALUES (v_fee.customer_id, v_inst.id, 'fee_waived', v_fee.amount_cents, p_as_of, p_source,
            p_reason)
    RETURNING id INTO v_row;
    PERFORM money_apply_v1(ARRAY[v_row]);
    RETURN QUERY SELECT 'waived'::text, v_row, v_inst.id, v_fee.amount_cents;
END;
$$;

-- money_charge_off_v1 (0015), replaced: what is written off is what is owed (rent + fees -
-- waivers) less paid, in flight and cancelled. Same signature and settings.
CREATE OR REPLACE FUNCTION money_charge_off_v1(p_as_of date, p_days integer, p_source text)
RETURNS TABLE (lease_id bigint, customer_id bigint, cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_leases bigint[];
    v_customers bigint[];
    v_rows bigint[];
BEGIN
    WITH due AS (
        SELECT i.lease_id
        FROM installments i
        JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
        WHERE i.status IN ('scheduled', 'overdue')
          AND i.due_on < p_as_of - p_days
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        GROUP BY i.lease_id
    ), flipped AS (
        UPDATE leases l SET status = 'charged_off'
        FROM due WHERE l.id = due.lease_id AND l.status = 'active'
        RETURNING l.id, l.customer_id
    )
    SELECT array_agg(f.id ORDER BY f.id), array_agg(f.customer_id ORDER BY f.id)
    INTO v_leases, v_customers
    FROM flipped f;
    IF v_leases IS NULL THEN
        RETURN;
    END IF;
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, kind, amount_cents, as_of, source, sets_plan,
             retry_on, reason)
        SELECT c.customer_id, i.id, 'charged_off',
               i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents, p_as_of,
               p_source, true, NULL, 'charged_off'
        FROM unnest(v_leases, v_customers) AS c(lease_id, customer_id)
        JOIN installments i ON i.lease_id = c.lease_id
        WHERE i.status <> 'cancelled'
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        ORDER BY i.due_on, i.id
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN QUERY
        SELECT c.lease_id, c.customer_id, coalesce(sum(m.amount_cents), 0)::bigint
        FROM unnest(v_leases, v_customers) AS c(lease_id, customer_id)
        JOIN installments i ON i.lease_id = c.lease_id
        JOIN money_movements m ON m.installment_id = i.id AND m.kind = 'charged_off'
        GROUP BY c.lease_id, c.customer_id;
END;
$$;

-- A lease's balance (lease_balance_v2, 0008) with fees: what is left to take is owed (rent +
-- fees - waivers) - paid - in flight - cancelled; and the fees still owed on past-due
-- installments (within an installment the rent is paid first, so the fee is what is left of
-- it last). The portal and the promises' overdue amount read it.
-- lease_balance_v2 stays for code of the previous release during a deploy.
CREATE FUNCTION lease_balance_v3(p_lease_id bigint, p_as_of date)
RETURNS TABLE (overdue_cents bigint, pending_cents bigint, next_due_on date,
               next_due_cents bigint, fees_owed_cents bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.overdue_cents, s.pending_cents, n.due_on, n.unpaid_cents, s.fees_owed_cents
    FROM (
        SELECT coalesce(sum(i.owed_cents - i.paid_cents - i.in_flight_cents
                            - i.cancelled_cents) FILTER (
                   WHERE i.due_on < p_as_of AND i.status IN ('scheduled', 'overdue')), 0)::bigint
                   AS overdue_cents,
               coalesce(sum(i.in_flight_cents) FILTER (
                   WHERE i.in_flight_cents > 0 AND i.awaiting_answers = 0), 0)::bigint
                   AS pending_cents,
               -- Within an installment a payment pays the rent, then the fee.
               coalesce(sum(least(i.fee_cents - i.fee_waived_cents,
                                  i.owed_cents - i.paid_cents - i.in_flight_cents
                                  - i.cancelled_cents)) FILTER (
                   WHERE i.status IN ('scheduled', 'overdue')), 0)::bigint AS fees_owed_cents
        FROM installments i
        WHERE i.lease_id = p_lease_id
    ) s
    LEFT JOIN LATERAL (
        SELECT i.due_on,
               i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents
                   AS unpaid_cents
        FROM installments i
        WHERE i.lease_id = p_lease_id AND i.status = 'scheduled' AND i.due_on >= p_as_of
        ORDER BY i.due_on, i.seq
        LIMIT 1
    ) n ON true
$$;

-- money_cancel_v1 (0017), replaced: a payoff cancels what is left of each installment after
-- its own money was presented, late fees included (owed - paid - in flight - cancelled).
-- Same signature and settings.
CREATE OR REPLACE FUNCTION money_cancel_v1(
    p_payment bigint, p_attempt bigint, p_lease bigint, p_as_of date, p_source text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source, reason)
        SELECT l.customer_id, i.id, p_attempt, p_payment, 'cancelled',
               i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents, p_as_of,
               p_source, 'payoff'
        FROM installments i JOIN leases l ON l.id = i.lease_id
        WHERE i.lease_id = p_lease AND i.status <> 'cancelled'
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        ORDER BY i.due_on, i.id
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;

-- lease_payoff_v1 (0017), replaced with the lease's late fees (a new output column, so it is
-- dropped and created again; same arguments, the one computation of a payoff still). Over
-- the lease's installments that are not cancelled, with what is left of each (owed - paid -
-- in flight - cancelled) split into its fee and its rent (a payment pays an installment's
-- rent before its fee, so what is left of it is its fee first):
--   rent paid      settled money on the rent (least(paid, amount)): a fee paid is no rent
--   late fees      the fees left to pay (least(fee - waived, left))
--   past due rent  the rest of what is left, on installments due before p_as_of
--   rent not due   the rest of what is left, on installments due on p_as_of or later
--   remaining rent past due + not due
-- Every rule adds the late fees (component 'late_fees', listed when there are any): they are
-- owed whatever the terms, and the payoff cancels them with the rent it forgives
-- (money_cancel_v1). The amount never exceeds the remaining rent + late fees (what paying the
-- lease out costs). Otherwise as 0017: 'within_window' cash price - rent paid (never below 0)
-- + the window fee; 'after_window' past due rent + epo_after_bps of the rent not yet due,
-- rounded half up; 'no_terms' the remaining rent; the components add up to the amount.
DROP FUNCTION lease_payoff_v1(bigint, date, integer);
CREATE FUNCTION lease_payoff_v1(p_lease bigint, p_as_of date, p_quote_days integer)
RETURNS TABLE (lease_id bigint, rule text, amount_cents bigint, components jsonb,
               remaining_rent_cents bigint, rent_paid_cents bigint, in_flight_cents bigint,
               payable boolean, window_ends_on date, next_due_on date, valid_until date,
               late_fees_cents bigint)
LANGUAGE sql STABLE AS $$
    WITH i AS (
        SELECT i.*,
               i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS left_cents,
               least(i.fee_cents - i.fee_waived_cents,
                     greatest(i.owed_cents - i.paid_cents - i.in_flight_cents
                              - i.cancelled_cents, 0)) AS fee_left_cents
        FROM installments i
        WHERE i.lease_id = p_lease AND i.status <> 'cancelled'
    ), s AS (
        SELECT coalesce(sum(least(i.paid_cents, i.amount_cents)), 0)::bigint AS rent_paid,
               coalesce(sum(i.in_flight_cents), 0)::bigint AS in_flight,
               coalesce(sum(i.fee_left_cents), 0)::bigint AS late_fees,
               coalesce(sum(i.left_cents - i.fee_left_cents) FILTER (
                   WHERE i.due_on < p_as_of), 0)::bigint AS past_due,
               coalesce(sum(i.left_cents - i.fee_left_cents) FILTER (
                   WHERE i.due_on >= p_as_of), 0)::bigint AS not_due,
               min(i.due_on) FILTER (WHERE i.due_on >= p_as_of AND i.left_cents > 0)
                   AS next_due_on
        FROM i
    ), r AS (
        SELECT l.id, s.*, s.past_due + s.not_due AS remaining,
               CASE WHEN l.cash_price_cents IS NULL THEN 'no_terms'
                    WHEN p_as_of <= l.delivered_on + l.epo_window_days THEN 'within_window'
                    ELSE 'after_window' END AS rule,
               l.cash_price_cents, l.epo_window_fee_cents,
               (s.not_due * l.epo_after_bps + 5000) / 10000 AS share_not_due,
               l.delivered_on + l.epo_window_days AS window_ends_on
        FROM leases l, s
        WHERE l.id = p_lease
    ), q AS (
        SELECT r.*,
               CASE r.rule
                   WHEN 'no_terms' THEN r.remaining
                   WHEN 'within_window' THEN
                       greatest(r.cash_price_cents - r.rent_paid, 0) + r.epo_window_fee_cents
                   ELSE r.past_due + r.share_not_due
               END + r.late_fees AS raw
        FROM r
    ), c AS (
        SELECT q.*, least(q.raw, q.remaining + q.late_fees) AS amount,
               CASE q.rule
                   WHEN 'no_terms' THEN jsonb_build_array(
                       jsonb_build_object('kind', 'past_due_rent', 'cents', q.past_due),
                       jsonb_build_object('kind', 'rent_not_yet_due', 'cents', q.not_due))
                   WHEN 'within_window' THEN jsonb_build_array(
                       jsonb_build_object('kind', 'cash_price', 'cents', q.cash_price_cents),
                       jsonb_build_object('kind', 'rent_paid',
                                          'cents', -least(q.rent_paid, q.cash_price_cents)),
                       jsonb_build_object('kind', 'early_purchase_fee',
                                          'cents', q.epo_window_fee_cents))
                   ELSE jsonb_build_array(
                       jsonb_build_object('kind', 'past_due_rent', 'cents', q.past_due),
                       jsonb_build_object('kind', 'rent_not_yet_due', 'cents', q.not_due),
                       jsonb_build_object('kind', 'early_purchase_discount',
                                          'cents', q.share_not_due - q.not_due))
               END
               || CASE WHEN q.late_fees > 0 THEN jsonb_build_array(
                       jsonb_build_object('kind', 'late_fees', 'cents', q.late_fees))
                  ELSE '[]'::jsonb END
               || CASE WHEN q.raw > q.remaining + q.late_fees THEN jsonb_build_array(
                       jsonb_build_object('kind', 'capped_at_remaining_rent',
                                          'cents', q.remaining + q.late_fees - q.raw))
                  ELSE '[]'::jsonb END AS components
        FROM q
    )
    SELECT c.id, c.rule, c.amount, c.components, c.remaining, c.rent_paid, c.in_flight,
           c.in_flight = 0 AND c.amount > 0,
           c.window_ends_on, c.next_due_on,
           greatest(p_as_of, least(
               c.next_due_on - 1,
               CASE WHEN c.rule = 'within_window' THEN c.window_ends_on END,
               p_as_of + p_quote_days - 1)),
           c.late_fees
    FROM c
$$;
