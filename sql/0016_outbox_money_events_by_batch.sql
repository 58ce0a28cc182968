-- Money events written a batch at a time (issue 10's outbox at issue 7's speed budget).
--
-- 0011 made one event per attempt's answer in a deferred row trigger on money_movements: at
-- commit, for each answer row, a probe, a lookup of the lease, an INSERT with four joins and
-- a check whether the lease was paid off. Measured with pg_stat_statements (track = all) on
-- a pass over 20,000 due, those statements took 2.0 s of the pass's 6.5 s: a quarter of
-- the server's time went to executing them row by row.
--
-- Now the events of many attempts are written by one function, outbox_money_events_v1, in
-- one INSERT per kind of event. The batch paths (the recorder's and settlement's statements)
-- call it in the transaction of their answers, after the statement that wrote them, when the
-- attempt's status, its method and its installments' new plan are all visible. The deferred
-- trigger stays the guarantee for every other path (manual pay, returns, webhooks, any code
-- added later): at commit it finds the event already there (one probe of the dedupe key) or
-- writes it through the same function. One body for every event, whoever asks.

-- The events of the answers of attempts p_attempts not written yet: for each attempt, one
-- per kind of event (a manual payment's rows over several installments make one event), in
-- journal order, and lease.paid_off for a lease whose last money settled. Returns how many
-- events were written. Every statement reaches its rows by key (see 0010).
CREATE FUNCTION outbox_money_events_v1(p_attempts bigint[]) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_written integer;
BEGIN
    WITH answer_rows AS (
        -- Each branch names its kinds, so the journal's partial unique indexes (attempt_id
        -- leads each) find the rows.
        SELECT m.id, m.attempt_id, m.customer_id, m.installment_id, m.kind, m.as_of
        FROM unnest(p_attempts) AS p(attempt_id)
        JOIN money_movements m ON m.attempt_id = p.attempt_id AND m.kind = 'accepted'
        UNION ALL
        SELECT m.id, m.attempt_id, m.customer_id, m.installment_id, m.kind, m.as_of
        FROM unnest(p_attempts) AS p(attempt_id)
        JOIN money_movements m ON m.attempt_id = p.attempt_id
             AND m.kind IN ('released', 'settled', 'returned')
        UNION ALL
        SELECT m.id, m.attempt_id, m.customer_id, m.installment_id, m.kind, m.as_of
        FROM unnest(p_attempts) AS p(attempt_id)
        JOIN money_movements m ON m.attempt_id = p.attempt_id AND m.kind = 'reversed'
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
    ), money_events AS (
        INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                                   dedupe_key)
        SELECT n.customer_id, i.lease_id, 'lease:' || i.lease_id, n.type, n.as_of,
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
               )),
               n.key
        FROM answers n
        JOIN installments i ON i.id = n.installment_id
        JOIN charge_attempts a ON a.id = n.attempt_id
        JOIN payment_methods pm ON pm.id = a.payment_method_id
        LEFT JOIN charge_returns r ON r.attempt_id = a.id
        CROSS JOIN LATERAL (
            SELECT array_agg(m.installment_id ORDER BY m.installment_id) AS installment_ids,
                   min(mi.next_attempt_on) AS retry_on
            FROM money_movements m JOIN installments mi ON mi.id = m.installment_id
            WHERE m.attempt_id = a.id AND m.kind = 'presented'
        ) j
        WHERE NOT EXISTS (SELECT 1 FROM outbox_events e
                          WHERE e.customer_id = n.customer_id AND e.dedupe_key = n.key)
        -- Ids in journal order: delivery keeps each lease's events in id order.
        ORDER BY n.id
        ON CONFLICT (customer_id, dedupe_key) DO NOTHING
        RETURNING customer_id, lease_id, type, as_of
    ), paid_off AS (
        -- The lease's last money came in: every installment paid (or cancelled). Read after
        -- the money event it follows was written, so its id comes after it.
        INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                                   dedupe_key)
        SELECT s.customer_id, s.lease_id, 'lease:' || s.lease_id, 'lease.paid_off', s.as_of,
               jsonb_build_object('paid_cents', t.paid_cents, 'installments', t.installments),
               'lease.paid_off:' || s.lease_id
        FROM (SELECT DISTINCT ON (e.lease_id) e.customer_id, e.lease_id, e.as_of
              FROM money_events e
              WHERE e.type = 'payment.succeeded' AND e.lease_id IS NOT NULL
              ORDER BY e.lease_id, e.as_of DESC) s
        CROSS JOIN LATERAL (
            SELECT sum(i.paid_cents)::bigint AS paid_cents, count(*) AS installments,
                   bool_and(i.status IN ('paid', 'cancelled')) AS done
            FROM installments i WHERE i.lease_id = s.lease_id
        ) t
        WHERE t.done
        ON CONFLICT (customer_id, dedupe_key) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM money_events) + (SELECT count(*) FROM paid_off)
    INTO v_written;
    RETURN v_written;
END;
$$;

-- The guarantee: at commit, each answer row finds its event, or has it written.
CREATE OR REPLACE FUNCTION outbox_money_event_v1() RETURNS trigger
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM outbox_events
        WHERE customer_id = NEW.customer_id
          AND dedupe_key = CASE NEW.kind
                               WHEN 'accepted' THEN 'payment.pending_settlement'
                               WHEN 'released' THEN 'payment.failed'
                               WHEN 'settled' THEN 'payment.succeeded'
                               ELSE 'ach.returned'
                           END || ':' || NEW.attempt_id
    ) THEN
        PERFORM outbox_money_events_v1(ARRAY[NEW.attempt_id]);
    END IF;
    RETURN NULL;
END;
$$;
