-- The journal's v2 functions name their customers (p_customers) in every statement, so that
-- Citus prunes each to one shard (0023, 0028). On plain PostgreSQL that array cost the pass
-- about a sixth of its rate (issue 12's note): under the functions' generic plans it is a
-- parameter, and PostgreSQL 15 takes `customer_id = ANY (p_customers)` beside `id = ANY
-- (p_rows)` as index conditions on the (id, customer_id) keys, a descent of the index for
-- every pair (500 rows and 500 customers: 250,000 a statement; money_apply_v2 took 30 ms a
-- call). Here p_customers NULL means "the rows name their customers": each such condition
-- becomes `(p_customers IS NULL OR x.customer_id = ANY (p_customers))`, which a generic plan
-- cannot use in an index, and the v1 wrappers (plain PostgreSQL's one-statement pass; nothing
-- calls them on Citus) pass NULL instead of reading their rows' customers first; the events'
-- function (outbox_money_events_v2), which plain PostgreSQL's settlement calls with a batch's
-- customers, takes the same form. On Citus, where these functions plan each call for its
-- values (distribution.py), the test of a given array folds to false and the condition is
-- the `= ANY` that prunes, as before. Bodies otherwise unchanged; tests/test_money_journal.py
-- keeps every generically planned function to this form.

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

-- The money events of a batch, as routed (0023): on plain PostgreSQL settlement and the
-- routed record path call it with a whole batch's customers.
CREATE OR REPLACE FUNCTION outbox_money_events_v2(p_attempts bigint[], p_customers bigint[])
RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_customer bigint[];
    v_lease bigint[];
    v_type text[];
    v_as_of date[];
    v_body jsonb[];
    v_key text[];
    v_written integer;
    v_paid_off integer;
BEGIN
    -- The events, read in one routed statement (an INSERT ... SELECT over these joins is not
    -- routed by Citus, "complex joins"), then written from the arrays.
    WITH answer_rows AS (
        -- Each branch names its kinds, so the journal's partial unique indexes (attempt_id
        -- leads each) find the rows.
        SELECT m.id, m.attempt_id, m.customer_id, m.installment_id, m.kind, m.as_of
        FROM unnest(p_attempts) AS p(attempt_id)
        JOIN money_movements m ON m.attempt_id = p.attempt_id AND m.kind = 'accepted'
             AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
        UNION ALL
        SELECT m.id, m.attempt_id, m.customer_id, m.installment_id, m.kind, m.as_of
        FROM unnest(p_attempts) AS p(attempt_id)
        JOIN money_movements m ON m.attempt_id = p.attempt_id
             AND m.kind IN ('released', 'settled', 'returned')
             AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
        UNION ALL
        SELECT m.id, m.attempt_id, m.customer_id, m.installment_id, m.kind, m.as_of
        FROM unnest(p_attempts) AS p(attempt_id)
        JOIN money_movements m ON m.attempt_id = p.attempt_id AND m.kind = 'reversed'
             AND (p_customers IS NULL OR m.customer_id = ANY (p_customers))
    ), typed AS (
        SELECT r.*, CASE r.kind
                        WHEN 'accepted' THEN 'payment.pending_settlement'
                        WHEN 'released' THEN 'payment.failed'
                        WHEN 'settled' THEN 'payment.succeeded'
                        ELSE 'ach.returned'
                    END AS type
        FROM answer_rows r
    ), answers AS (
        -- An attempt's first row of each event type, as the trigger once saw it.
        SELECT DISTINCT ON (t.attempt_id, t.type) t.*, t.type || ':' || t.attempt_id AS key
        FROM typed t
        ORDER BY t.attempt_id, t.type, t.id
    )
    SELECT array_agg(e.customer_id ORDER BY e.id), array_agg(e.lease_id ORDER BY e.id),
           array_agg(e.type ORDER BY e.id), array_agg(e.as_of ORDER BY e.id),
           array_agg(e.body ORDER BY e.id), array_agg(e.key ORDER BY e.id)
    INTO v_customer, v_lease, v_type, v_as_of, v_body, v_key
    FROM (
        SELECT n.id, n.customer_id, i.lease_id, n.type, n.as_of,
               jsonb_strip_nulls(jsonb_build_object(
                   'attempt_id', a.id,
                   'payment_id', a.payment_id,
                   'installment_ids', j.installment_ids,
                   'amount_cents', a.amount_cents,
                   'source', a.source,
                   'gateway', a.gateway,
                   'method', jsonb_build_object('id', pm.id, 'kind', pm.kind,
                                                'brand', pm.brand, 'bank_name', pm.bank_name,
                                                'last4', pm.last4),
                   'effective_on', CASE WHEN n.type = 'payment.pending_settlement'
                                        THEN a.effective_on END,
                   'reason_class', CASE WHEN n.type = 'payment.failed' THEN
                       outbox_reason_class_v1(a.status, a.outcome_code, pm.status,
                                              pm.disabled_reason) END,
                   'code', CASE WHEN n.type IN ('payment.failed', 'ach.returned')
                                THEN coalesce(r.return_code, a.outcome_code) END,
                   'return_category', r.category,
                   'reversed_paid', CASE WHEN n.type = 'ach.returned'
                                         THEN n.kind = 'reversed' END,
                   'method_disabled', CASE WHEN n.type IN ('payment.failed', 'ach.returned')
                                           THEN pm.status = 'disabled' END,
                   'retry_planned', CASE WHEN n.type IN ('payment.failed', 'ach.returned')
                                         THEN j.retry_on IS NOT NULL END,
                   'retry_on', CASE WHEN n.type IN ('payment.failed', 'ach.returned')
                                    THEN j.retry_on END
               )) AS body,
               n.key
        FROM answers n
        JOIN installments i
          ON i.id = n.installment_id AND i.customer_id = n.customer_id
         AND (p_customers IS NULL OR i.customer_id = ANY (p_customers))
        JOIN charge_attempts a
          ON a.id = n.attempt_id AND a.customer_id = n.customer_id
         AND (p_customers IS NULL OR a.customer_id = ANY (p_customers))
        JOIN payment_methods pm
          ON pm.id = a.payment_method_id AND pm.customer_id = a.customer_id
         AND (p_customers IS NULL OR pm.customer_id = ANY (p_customers))
        LEFT JOIN charge_returns r
          ON r.attempt_id = a.id AND r.customer_id = a.customer_id
         AND (p_customers IS NULL OR r.customer_id = ANY (p_customers))
        CROSS JOIN LATERAL (
            SELECT array_agg(m.installment_id ORDER BY m.installment_id) AS installment_ids,
                   min(mi.next_attempt_on) AS retry_on
            FROM money_movements m
            JOIN installments mi
              ON mi.id = m.installment_id AND mi.customer_id = m.customer_id
             AND (p_customers IS NULL OR mi.customer_id = ANY (p_customers))
            WHERE m.attempt_id = a.id AND m.customer_id = a.customer_id
              AND (p_customers IS NULL OR m.customer_id = ANY (p_customers)) AND m.kind = 'presented'
        ) j
        WHERE NOT EXISTS (SELECT 1 FROM outbox_events e
                          WHERE e.customer_id = n.customer_id
                            AND (p_customers IS NULL OR e.customer_id = ANY (p_customers))
                            AND e.dedupe_key = n.key)
    ) e;
    IF v_key IS NULL THEN
        RETURN 0;
    END IF;
    -- Ids in journal order: delivery keeps each lease's events in id order.
    WITH written AS (
        INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                                   dedupe_key)
        SELECT u.customer_id, u.lease_id, 'lease:' || u.lease_id, u.type, u.as_of, u.body,
               u.key
        FROM unnest(v_customer, v_lease, v_type, v_as_of, v_body, v_key) WITH ORDINALITY
          AS u(customer_id, lease_id, type, as_of, body, key, n)
        ORDER BY u.n
        ON CONFLICT (customer_id, dedupe_key) DO NOTHING
        RETURNING customer_id, lease_id, type, as_of
    )
    SELECT count(*)::integer,
           array_agg(w.customer_id) FILTER (WHERE w.type = 'payment.succeeded'),
           array_agg(w.lease_id) FILTER (WHERE w.type = 'payment.succeeded'),
           array_agg(w.as_of) FILTER (WHERE w.type = 'payment.succeeded')
    INTO v_written, v_customer, v_lease, v_as_of
    FROM written w;
    IF v_lease IS NULL THEN
        RETURN v_written;
    END IF;
    -- The lease's last money came in: every installment paid (or cancelled). Read after the
    -- money event it follows was written, so its id comes after it.
    SELECT array_agg(s.customer_id ORDER BY s.lease_id), array_agg(s.lease_id ORDER BY s.lease_id),
           array_agg(s.as_of ORDER BY s.lease_id),
           array_agg(jsonb_build_object('paid_cents', t.paid_cents,
                                        'installments', t.installments) ORDER BY s.lease_id)
    INTO v_customer, v_lease, v_as_of, v_body
    FROM (SELECT DISTINCT ON (e.lease_id) e.customer_id, e.lease_id, e.as_of
          FROM unnest(v_customer, v_lease, v_as_of) AS e(customer_id, lease_id, as_of)
          ORDER BY e.lease_id, e.as_of DESC) s
    CROSS JOIN LATERAL (
        SELECT sum(i.paid_cents)::bigint AS paid_cents, count(*) AS installments,
               bool_and(i.status IN ('paid', 'cancelled')) AS done
        FROM installments i
        WHERE i.lease_id = s.lease_id AND i.customer_id = s.customer_id
          AND (p_customers IS NULL OR i.customer_id = ANY (p_customers))
    ) t
    WHERE t.done;
    IF v_lease IS NULL THEN
        RETURN v_written;
    END IF;
    INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                               dedupe_key)
    SELECT u.customer_id, u.lease_id, 'lease:' || u.lease_id, 'lease.paid_off', u.as_of,
           u.body, 'lease.paid_off:' || u.lease_id
    FROM unnest(v_customer, v_lease, v_as_of, v_body) AS u(customer_id, lease_id, as_of, body)
    ON CONFLICT (customer_id, dedupe_key) DO NOTHING;
    GET DIAGNOSTICS v_paid_off = ROW_COUNT;
    RETURN v_written + v_paid_off;
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
