-- The reports' and the dry run's reads on Citus (issue 12, part 2).
--
-- late_fees_due_v1 (0021) was LANGUAGE sql, which Citus cannot plan with parameters over
-- distributed tables ("parameters in SQL functions ... not supported. Consider using
-- PL/pgSQL"), and it joined a lease to its installments by the lease alone. Restated in
-- plpgsql, same signature and answer, with the customer in the join (R1): on Citus a plain
-- multi-shard read, each shard answering for its own customers. Called as a statement of
-- its own (the dry run's fees.due, money_assess_fees_v1), never inside a routed statement.
-- STABLE as before; planned for its values on each call, like the charge-off (a pass calls
-- it once).
CREATE OR REPLACE FUNCTION late_fees_due_v1(
    p_as_of date, p_states text[], p_grace integer[], p_bp integer[], p_cap bigint[],
    p_min bigint[], p_default_grace integer, p_default_bp integer, p_default_cap bigint,
    p_default_min bigint
) RETURNS TABLE (installment_id bigint, lease_id bigint, customer_id bigint, due_on date,
                 fee_cents bigint, rule text)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    RETURN QUERY
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
        JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id
                     AND l.status = 'active'
        LEFT JOIN rules r ON r.state = l.state
        WHERE i.status IN ('scheduled', 'overdue') AND i.fee_cents = 0
          -- The shortest grace of any rule bounds the scan of the candidates' index.
          AND i.due_on < p_as_of - least(p_default_grace,
                                         (SELECT min(g) FROM unnest(p_grace) AS g))
          AND i.due_on < p_as_of - coalesce(r.grace, p_default_grace)
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
    )
    SELECT d.id, d.lease_id, d.customer_id, d.due_on, d.fee, d.rule FROM due d WHERE d.fee > 0;
END;
$$;
