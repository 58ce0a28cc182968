-- The pass's collections steps on Citus (issue 12, part 2): charge-off and late fees, one
-- shard group at a time.
--
-- On plain PostgreSQL the pass keeps money_charge_off_v1 and money_assess_fees_v1 (0021):
-- one statement over the whole book each (collector/db/routing.py one_node). On Citus both
-- fail: the charge-off joins installments and leases by lease id alone ("a join that
-- requires repartitioning"), the assessment calls a function inside a distributed statement,
-- and both apply their rows through money_apply_v1. There the engine reads the candidates
-- once (a plain multi-shard read: late_fees_due_v1, 0026, or charge_off_candidates below),
-- groups their customers by shard, and calls these once per group: every statement names
-- the group's customers (one shard), and the rows are applied by money_apply_v2 (0023).

-- The leases of customers p_customers more than p_days past due on p_as_of: charged off,
-- their collectable money written off in the journal (what money_charge_off_v1 does, for one
-- shard group); each lease charged off and its cents.
CREATE FUNCTION money_charge_off_v2(
    p_as_of date, p_days integer, p_source text, p_customers bigint[]
) RETURNS TABLE (lease_id bigint, customer_id bigint, cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_leases bigint[];
    v_customers bigint[];
    v_rows bigint[];
BEGIN
    WITH due AS (
        SELECT i.lease_id, i.customer_id
        FROM installments i
        JOIN leases l
          ON l.id = i.lease_id AND l.customer_id = i.customer_id AND l.status = 'active'
        WHERE i.customer_id = ANY (p_customers) AND l.customer_id = ANY (p_customers)
          AND i.status IN ('scheduled', 'overdue')
          AND i.due_on < p_as_of - p_days
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        GROUP BY i.lease_id, i.customer_id
    ), flipped AS (
        UPDATE leases l SET status = 'charged_off'
        FROM due
        WHERE l.customer_id = ANY (p_customers)
          AND l.id = due.lease_id AND l.customer_id = due.customer_id AND l.status = 'active'
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
        SELECT i.customer_id, i.id, 'charged_off',
               i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents, p_as_of,
               p_source, true, NULL, 'charged_off'
        FROM installments i
        WHERE i.customer_id = ANY (v_customers) AND i.lease_id = ANY (v_leases)
          AND i.status <> 'cancelled'
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        ORDER BY i.due_on, i.id
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v2(v_rows, p_customers);
    RETURN QUERY
        SELECT i.lease_id, i.customer_id, coalesce(sum(m.amount_cents), 0)::bigint
        FROM installments i
        JOIN money_movements m
          ON m.installment_id = i.id AND m.customer_id = i.customer_id
         AND m.kind = 'charged_off'
        WHERE i.customer_id = ANY (v_customers) AND m.customer_id = ANY (v_customers)
          AND i.lease_id = ANY (v_leases)
        GROUP BY i.lease_id, i.customer_id;
END;
$$;

-- The late fees p_installments (of customers p_customer, one shard group's; p_cents each,
-- under rule p_rule) assessed on p_as_of: one 'fee_assessed' row each, applied by
-- money_apply_v2; a fee already assessed adds nothing (the unique index). What
-- money_assess_fees_v1 does with the rows late_fees_due_v1 found, for one shard group.
CREATE FUNCTION money_record_fees_v1(
    p_installments bigint[], p_customer bigint[], p_cents bigint[], p_rule text[],
    p_as_of date, p_source text, p_customers bigint[]
) RETURNS TABLE (fees integer, cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, kind, amount_cents, as_of, source, reason)
        SELECT f.customer_id, f.installment_id, 'fee_assessed', f.cents, p_as_of, p_source,
               'late_fee:' || f.rule
        FROM unnest(p_installments, p_customer, p_cents, p_rule)
          AS f(installment_id, customer_id, cents, rule)
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v2(v_rows, p_customers);
    RETURN QUERY
        SELECT count(*)::integer, coalesce(sum(m.amount_cents), 0)::bigint
        FROM money_movements m
        WHERE m.customer_id = ANY (p_customers) AND m.id = ANY (v_rows);
END;
$$;
