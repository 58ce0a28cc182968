-- The journal's v2 functions name their customers (p_customers) in every statement, so that
-- Citus prunes each to one shard (0023, 0028). On plain PostgreSQL that array cost the pass
-- about a sixth of its rate (issue 12's note): under the functions' generic plans it is a
-- parameter, and PostgreSQL 15 takes `customer_id = ANY (p_customers)` beside `id = ANY
-- (p_rows)` as index conditions on the (id, customer_id) keys, a descent of the index for
-- every pair (500 rows and 500 customers: 250,000 a statement; money_apply_v2 took 30 ms a
-- call). Here p_customers NULL means "the rows name their customers": each such condition
-- becomes `(p_customers IS NULL OR x.customer_id = ANY (p_customers))`, which a generic plan
-- cannot use in an index, and the v1 wrappers (plain PostgreSQL's one-statement pass; nothing
-- calls them on Citus) pass NULL instead of reading their rows' customers first. On Citus,
-- where these functions plan each call for its values (distribution.py), the test of a given
-- array folds to false and the condition is the `= ANY` that prunes, as before. Bodies
-- otherwise unchanged.

CREATE OR REPLACE FUNCTION money_apply_v2(p_rows bigint[], p_customers bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    IF coalesce(cardinality(p_rows), 0) = 0 THEN
        RETURN;
    END IF;
    WITH d AS (
        SELECT m.installment_id, m.customer_id,
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
        WHERE m.id = ANY (p_rows) AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
        GROUP BY m.installment_id, m.customer_id
    ), n AS (
        SELECT d.*, plan.retry_on AS plan_on
        FROM d
        LEFT JOIN money_movements plan
          ON plan.id = d.plan_row AND plan.customer_id = d.customer_id
         AND (p_customers IS NULL OR plan.customer_id = ANY (p_customers))
    )
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
    WHERE i.id = n.installment_id AND i.customer_id = n.customer_id
      AND (p_customers IS NULL OR i.customer_id = ANY (p_customers));
END;
$$;

CREATE OR REPLACE FUNCTION money_replan_v2(
    p_installment bigint[], p_customers bigint[], p_retry_on date, p_as_of date,
    p_source text, p_reason text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, kind, amount_cents, as_of, source, sets_plan,
             retry_on, reason)
        SELECT i.customer_id, i.id, 'replanned', 0, p_as_of, p_source, true, p_retry_on,
               p_reason
        FROM installments i
        WHERE i.id = ANY (p_installment) AND (p_customers IS NULL OR i.customer_id = ANY (p_customers))
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v2(v_rows, p_customers);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;

CREATE OR REPLACE FUNCTION money_payoff_end_v1(p_rows bigint[], p_customers bigint[]) RETURNS void
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
        WHERE m.id = ANY (p_rows) AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
          AND (p_customers IS NULL OR p.customer_id = ANY (p_customers)) AND p.payoff
          AND m.kind IN ('settled', 'released', 'returned', 'reversed')
        ORDER BY m.payment_id, m.id
    ) e;
    IF v_payment IS NULL THEN
        RETURN;
    END IF;

    UPDATE leases l SET status = 'paid_off'
    FROM unnest(v_lease, v_customer, v_kind) AS e(lease_id, customer_id, kind)
    WHERE l.id = e.lease_id AND l.customer_id = e.customer_id
      AND (p_customers IS NULL OR l.customer_id = ANY (p_customers)) AND e.kind = 'settled' AND l.status = 'active';

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
         AND (p_customers IS NULL OR c.customer_id = ANY (p_customers)) AND c.kind = 'cancelled'
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
      AND (p_customers IS NULL OR l.customer_id = ANY (p_customers)) AND e.kind <> 'settled' AND l.status = 'paid_off';
END;
$$;

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
            WHERE m.attempt_id = f.attempt_id AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
              AND m.kind = 'presented'
              AND f.kind IN ('accepted', 'released', 'settled', 'returned')
            UNION ALL
            SELECT m.customer_id, m.installment_id, m.attempt_id, m.payment_id, m.amount_cents
            FROM money_movements m
            WHERE m.attempt_id = f.attempt_id AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
              AND m.kind = 'settled' AND f.kind = 'reversed'
        ) p
        -- Was it accepted before? One probe of the accepted index per row.
        LEFT JOIN LATERAL (
            SELECT acc.id FROM money_movements acc
            WHERE acc.attempt_id = p.attempt_id AND acc.installment_id = p.installment_id
              AND acc.customer_id = p.customer_id AND (p_customers IS NULL OR acc.customer_id = ANY (p_customers))
              AND acc.kind = 'accepted'
            LIMIT 1
        ) acc ON true
        -- A payoff's money that came back keeps the schedule of an installment not yet due.
        LEFT JOIN LATERAL (
            SELECT i.id AS installment_id
            FROM payments pay
            JOIN installments i
              ON i.id = p.installment_id AND i.customer_id = pay.customer_id
             AND (p_customers IS NULL OR i.customer_id = ANY (p_customers))
            WHERE pay.id = p.payment_id AND pay.customer_id = p.customer_id
              AND (p_customers IS NULL OR pay.customer_id = ANY (p_customers)) AND pay.payoff
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

-- The v1 forms: their v2 form, for whatever customers their rows name.
CREATE OR REPLACE FUNCTION money_apply_v1(p_rows bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    PERFORM money_apply_v2(p_rows, NULL);
END;
$$;

CREATE OR REPLACE FUNCTION money_present_v1(
    p_attempt bigint[], p_installment bigint[], p_amount bigint[], p_customer bigint[],
    p_payment bigint[], p_as_of date, p_source text[]
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    RETURN money_present_v2(p_attempt, p_installment, p_amount, p_customer, p_payment,
                            p_as_of, p_source, NULL);
END;
$$;

CREATE OR REPLACE FUNCTION money_follow_v1(
    p_attempt bigint[], p_kind text[], p_sets_plan boolean[], p_retry_on date[],
    p_reason text[], p_as_of date, p_source text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    RETURN money_follow_v2(p_attempt, p_kind, p_sets_plan, p_retry_on, p_reason, p_as_of,
                           p_source, NULL);
END;
$$;

CREATE OR REPLACE FUNCTION money_replan_v1(
    p_installment bigint[], p_retry_on date, p_as_of date, p_source text, p_reason text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    RETURN money_replan_v2(p_installment, NULL, p_retry_on, p_as_of, p_source, p_reason);
END;
$$;
