-- installments_derive_v1 (0006; 0017's, 0021's), replaced by the same derivation done a
-- customer at a time (issue 12): a LANGUAGE sql function over distributed tables cannot be
-- planned by Citus ("parameters in SQL functions"), and one statement over installments of
-- several customers would not route to one shard. Each statement now names its customer, on
-- every table it reads or writes, and joins on it. Same values as 0021's: paid, in flight,
-- cancelled, fees and waivers, attempts, answers awaited and the plan, recomputed from the
-- whole journal. Not on the pass's path (the audit has its own co-located reading, 0026): a
-- repair and a test's tool, so one statement per customer costs nothing that matters, and
-- each call is planned for its values (a generic plan cannot be pruned to one shard).
CREATE OR REPLACE FUNCTION installments_derive_v1(p_ids bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_customer bigint;
    v_ids bigint[];
BEGIN
    FOR v_customer, v_ids IN
        SELECT i.customer_id, array_agg(i.id) FROM installments i
        WHERE i.id = ANY (p_ids) GROUP BY i.customer_id
    LOOP
        WITH s AS (
            SELECT ids.id, j.*
            FROM unnest(v_ids) AS ids(id)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                           AS paid,
                       coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0)
                           ::bigint AS in_flight,
                       coalesce(sum(movement_cancelled_cents_v1(m.kind, m.amount_cents)), 0)
                           ::bigint AS cancelled,
                       coalesce(sum(movement_fee_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                           AS fee,
                       coalesce(sum(movement_fee_waived_cents_v1(m.kind, m.amount_cents)), 0)
                           ::bigint AS waived,
                       count(*) FILTER (
                           WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry'))
                           ::integer AS attempts,
                       coalesce(sum(CASE WHEN m.kind = 'presented' THEN 1
                                         WHEN m.answers THEN -1 ELSE 0 END), 0)::integer
                           AS awaiting,
                       max(m.id) FILTER (WHERE m.sets_plan) AS plan_row
                FROM money_movements m
                WHERE m.installment_id = ids.id AND m.customer_id = v_customer
            ) j
        ), n AS (
            SELECT s.*, s.plan_row IS NOT NULL AS planned, plan.retry_on AS plan_on
            FROM s
            LEFT JOIN money_movements plan
              ON plan.id = s.plan_row AND plan.customer_id = v_customer
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
                                      n.in_flight, n.cancelled, n.awaiting, n.attempts,
                                      n.planned),
                n.planned, n.plan_on, i.due_on),
            updated_at = now()
        FROM n
        WHERE i.id = n.id AND i.customer_id = v_customer;
    END LOOP;
END;
$$;
