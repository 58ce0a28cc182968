-- Delinquency aging and charge-off (issue 9, part 1).
--
-- A pass writes one snapshot of the book's delinquency per business date: a row per lease with
-- money past due (its bucket, days past due, past-due cents) and a row per bucket of totals,
-- current leases included, so the report's roll-rate matrix compares two dates without
-- recomputing history. Past due: an installment's money neither paid nor in flight (a bank
-- debit awaiting settlement is not past due) whose due date is before the business date; a
-- lease's days past due are those of its oldest such installment.
CREATE TABLE delinquency_snapshots (
    as_of           date NOT NULL,
    customer_id     bigint NOT NULL,  -- the distribution key
    lease_id        bigint NOT NULL,
    bucket          text NOT NULL CHECK (btrim(bucket) <> ''),
    days_past_due   integer NOT NULL CHECK (days_past_due > 0),
    past_due_cents  bigint NOT NULL CHECK (past_due_cents > 0),
    PRIMARY KEY (as_of, customer_id, lease_id)
);

CREATE TABLE delinquency_totals (
    as_of           date NOT NULL,
    bucket          text NOT NULL CHECK (btrim(bucket) <> ''),
    leases          integer NOT NULL CHECK (leases >= 0),
    past_due_cents  bigint NOT NULL CHECK (past_due_cents >= 0),
    written_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (as_of, bucket)
);

-- Charge-off is a journal row: 'charged_off' records, per unpaid installment of a lease the
-- pass charged off, the cents written off (what was neither paid nor in flight), and ends its
-- automatic collection (it sets the plan: no date). It moves no money: paid and in flight are
-- unchanged, so a recovery (a manual payment after charge-off) is collected and counted like
-- any payment.
ALTER TABLE money_movements DROP CONSTRAINT money_movements_kind_check;
ALTER TABLE money_movements ADD CONSTRAINT money_movements_kind_check CHECK (kind IN
    ('presented', 'accepted', 'released', 'settled', 'returned', 'reversed', 'replanned',
     'charged_off'));
-- Money moves under an attempt; a charge-off is the pass's own decision, under none.
-- (The constraint was unnamed in 0006: found by what it says.)
DO $$
DECLARE
    v_name text;
BEGIN
    SELECT conname INTO STRICT v_name FROM pg_constraint
    WHERE conrelid = 'money_movements'::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) LIKE '%attempt_id IS NOT NULL%';
    EXECUTE format('ALTER TABLE money_movements DROP CONSTRAINT %I', v_name);
END;
$$;
ALTER TABLE money_movements ADD CONSTRAINT money_movements_under_attempt CHECK (
    attempt_id IS NOT NULL OR kind IN ('replanned', 'charged_off') OR source = 'migration');
ALTER TABLE money_movements ADD CONSTRAINT money_movements_charge_off_plans CHECK (
    kind <> 'charged_off' OR (sets_plan AND retry_on IS NULL));
-- Each installment is charged off once.
CREATE UNIQUE INDEX money_movements_charged_off ON money_movements (installment_id)
    WHERE kind = 'charged_off';

-- Charge off, on business date p_as_of, every active lease whose oldest past-due installment
-- is more than p_days days past due: one 'charged_off' row per installment with money left
-- to take (amount - paid - in flight), applied by money_apply_v1 like every journal row, and
-- the lease's status. Set-based: one statement a pass, whatever the size of the book.
-- Returns the leases charged off. Run once a pass over the book: planned for its values on
-- each call (a kept generic plan is for the functions that reach rows by key, see 0010).
CREATE FUNCTION money_charge_off_v1(p_as_of date, p_days integer, p_source text)
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
          AND i.amount_cents - i.paid_cents - i.in_flight_cents > 0
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
               i.amount_cents - i.paid_cents - i.in_flight_cents, p_as_of, p_source, true,
               NULL, 'charged_off'
        FROM unnest(v_leases, v_customers) AS c(lease_id, customer_id)
        JOIN installments i ON i.lease_id = c.lease_id
        WHERE i.status <> 'cancelled'
          AND i.amount_cents - i.paid_cents - i.in_flight_cents > 0
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
