-- A payoff's ending, written by the function that writes endings (issue 12): 0017's two row
-- triggers on the journal (money_movements_payoff, money_movements_payoff_plan) read payments
-- and installments from inside an insert into money_movements. On Citus a row trigger runs
-- on the shard, on a worker, where a statement over another distributed table is a nested
-- distributed query: manual pay of a payoff failed there. Their rules move, unchanged, into
-- money_follow_v2 (the one writer of endings since 0023), on plain PostgreSQL as on Citus:
--
-- * the plan rule (was money_payoff_plan_v1, BEFORE INSERT): a payoff's money that came back
--   (released, returned, reversed) sets no plan for an installment not yet due on the row's
--   business date; it goes back to its schedule, never collected early. Now a term of the
--   INSERT's SELECT, so the row is written as it is applied.
-- * the ending (was money_payoff_follow_v1, AFTER INSERT): settled, the payoff's lease is
--   paid off; released, returned or reversed, each of its cancellations is undone by a
--   'reinstated' row and the lease is active again. Now money_payoff_end_v1, called by
--   money_follow_v2 after it applied its rows; every statement names the customers.
--
-- The v1 journal functions (0006, 0021: apply, present, follow, replan) become wrappers of
-- their v2 forms: one body each, and the plain pass's one-statement record (which calls
-- money_follow_v1 inside its CTE) gets the payoff rules through the same code. The wrappers
-- read the customers of their rows by primary key or attempt; on Citus nothing calls them.

SET LOCAL citus.enable_unsafe_triggers = on;
DROP TRIGGER money_movements_payoff ON money_movements;
DROP TRIGGER money_movements_payoff_plan ON money_movements;
DROP FUNCTION money_payoff_follow_v1();
DROP FUNCTION money_payoff_plan_v1();

-- The payoffs that ended in journal rows p_rows of customers p_customers (one shard's on
-- Citus). Once per payment: a payment over several installments ends in one row each, all
-- of one kind, business date and source; the reinstated rows are unique per cancellation
-- (money_movements_reinstated) and a lease's status changes only from the state it expects.
CREATE FUNCTION money_payoff_end_v1(p_rows bigint[], p_customers bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_payment bigint[];
    v_customer bigint[];
    v_lease bigint[];
    v_kind text[];
    v_as_of date[];
    v_source text[];
    v_rows bigint[];
BEGIN
    IF coalesce(cardinality(p_rows), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(e.payment_id), array_agg(e.customer_id), array_agg(e.lease_id),
           array_agg(e.kind), array_agg(e.as_of), array_agg(e.source)
    INTO v_payment, v_customer, v_lease, v_kind, v_as_of, v_source
    FROM (
        SELECT DISTINCT ON (m.payment_id) m.payment_id, m.customer_id, p.lease_id, m.kind,
               m.as_of, m.source
        FROM money_movements m
        JOIN payments p ON p.id = m.payment_id AND p.customer_id = m.customer_id
        WHERE m.id = ANY (p_rows) AND m.customer_id = ANY (p_customers)
          AND p.customer_id = ANY (p_customers) AND p.payoff
          AND m.kind IN ('settled', 'released', 'returned', 'reversed')
        ORDER BY m.payment_id, m.id
    ) e;
    IF v_payment IS NULL THEN
        RETURN;
    END IF;

    UPDATE leases l SET status = 'paid_off'
    FROM unnest(v_lease, v_customer, v_kind) AS e(lease_id, customer_id, kind)
    WHERE l.id = e.lease_id AND l.customer_id = e.customer_id
      AND l.customer_id = ANY (p_customers) AND e.kind = 'settled' AND l.status = 'active';

    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source, reason)
        SELECT c.customer_id, c.installment_id, c.attempt_id, c.payment_id, 'reinstated',
               c.amount_cents, e.as_of, e.source, 'payoff_' || e.kind
        FROM unnest(v_payment, v_customer, v_kind, v_as_of, v_source)
          AS e(payment_id, customer_id, kind, as_of, source)
        JOIN money_movements c
          ON c.payment_id = e.payment_id AND c.customer_id = e.customer_id
         AND c.customer_id = ANY (p_customers) AND c.kind = 'cancelled'
        WHERE e.kind <> 'settled'
        ORDER BY c.id
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v2(v_rows, p_customers);

    UPDATE leases l SET status = 'active'
    FROM unnest(v_lease, v_customer, v_kind) AS e(lease_id, customer_id, kind)
    WHERE l.id = e.lease_id AND l.customer_id = e.customer_id
      AND l.customer_id = ANY (p_customers) AND e.kind <> 'settled' AND l.status = 'paid_off';
END;
$$;

-- money_follow_v2 (0023), with the payoff's rules (see the header). Same signature, same
-- settings; the plan rule is the LEFT JOIN keeps_schedule.
CREATE OR REPLACE FUNCTION money_follow_v2(
    p_attempt bigint[], p_kind text[], p_sets_plan boolean[], p_retry_on date[],
    p_reason text[], p_as_of date, p_source text, p_customers bigint[]
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
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
               f.sets_plan AND keep.installment_id IS NULL,
               CASE WHEN keep.installment_id IS NULL THEN f.retry_on END,
               f.reason
        FROM unnest(p_attempt, p_kind, p_sets_plan, p_retry_on, p_reason)
          AS f(attempt_id, kind, sets_plan, retry_on, reason)
        -- Each branch names its kind, so the partial unique indexes find the rows.
        CROSS JOIN LATERAL (
            SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, m.amount_cents
            FROM money_movements m
            WHERE m.attempt_id = f.attempt_id AND m.customer_id = ANY (p_customers)
              AND m.kind = 'presented'
              AND f.kind IN ('accepted', 'released', 'settled', 'returned')
            UNION ALL
            SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, m.amount_cents
            FROM money_movements m
            WHERE m.attempt_id = f.attempt_id AND m.customer_id = ANY (p_customers)
              AND m.kind = 'settled' AND f.kind = 'reversed'
        ) p
        -- Was it accepted before? One probe of the accepted index per row.
        LEFT JOIN LATERAL (
            SELECT acc.id FROM money_movements acc
            WHERE acc.attempt_id = p.attempt_id AND acc.installment_id = p.installment_id
              AND acc.customer_id = p.customer_id AND acc.customer_id = ANY (p_customers)
              AND acc.kind = 'accepted'
            LIMIT 1
        ) acc ON true
        -- A payoff's money that came back keeps the schedule of an installment not yet due.
        LEFT JOIN LATERAL (
            SELECT i.id AS installment_id
            FROM payments pay
            JOIN installments i
              ON i.id = p.installment_id AND i.customer_id = pay.customer_id
             AND i.customer_id = ANY (p_customers)
            WHERE pay.id = p.payment_id AND pay.customer_id = p.customer_id
              AND pay.customer_id = ANY (p_customers) AND pay.payoff
              AND f.kind IN ('released', 'returned', 'reversed') AND i.due_on >= p_as_of
        ) keep ON true
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v2(v_rows, p_customers);
    PERFORM money_payoff_end_v1(v_rows, p_customers);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;

-- The v1 forms, one body each: their v2 form over the customers of their rows (read in a
-- statement of their own, so that the v2 call touches no table itself: R3).
CREATE OR REPLACE FUNCTION money_apply_v1(p_rows bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_customers bigint[];
BEGIN
    IF coalesce(cardinality(p_rows), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(DISTINCT m.customer_id) INTO v_customers
    FROM money_movements m WHERE m.id = ANY (p_rows);
    PERFORM money_apply_v2(p_rows, v_customers);
END;
$$;

CREATE OR REPLACE FUNCTION money_present_v1(
    p_attempt bigint[], p_installment bigint[], p_amount bigint[], p_customer bigint[],
    p_payment bigint[], p_as_of date, p_source text[]
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    RETURN money_present_v2(p_attempt, p_installment, p_amount, p_customer, p_payment,
                            p_as_of, p_source, p_customer);
END;
$$;

CREATE OR REPLACE FUNCTION money_follow_v1(
    p_attempt bigint[], p_kind text[], p_sets_plan boolean[], p_retry_on date[],
    p_reason text[], p_as_of date, p_source text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_customers bigint[];
BEGIN
    SELECT array_agg(DISTINCT a.customer_id) INTO v_customers
    FROM charge_attempts a WHERE a.id = ANY (p_attempt);
    RETURN money_follow_v2(p_attempt, p_kind, p_sets_plan, p_retry_on, p_reason, p_as_of,
                           p_source, v_customers);
END;
$$;

CREATE OR REPLACE FUNCTION money_replan_v1(
    p_installment bigint[], p_retry_on date, p_as_of date, p_source text, p_reason text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_customers bigint[];
BEGIN
    SELECT array_agg(DISTINCT i.customer_id) INTO v_customers
    FROM installments i WHERE i.id = ANY (p_installment);
    RETURN money_replan_v2(p_installment, v_customers, p_retry_on, p_as_of, p_source,
                           p_reason);
END;
$$;
