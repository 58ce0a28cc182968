-- The transactional outbox (issue 10): every event the customer portal and the messaging
-- service hear about is a row written in the same transaction as the state change it
-- reports, so none is lost and none is sent for a change that rolled back.
--
-- Events about money come from the journal itself: a deferred constraint trigger on
-- money_movements turns each attempt's answer (accepted, released, settled, returned,
-- reversed) into one event when its transaction commits. Deferred, because the batch's
-- record statement updates the attempt and calls money_follow_v1 in sibling CTEs of one
-- statement, which share one snapshot: only at commit does the trigger see the attempt's
-- status, its return and its installments' new plan. Events about methods come from a
-- trigger on payment_methods; the rest (primary.changed, method.expiring, debit.upcoming)
-- are written by collector/db/outbox.py inside the transaction of their change.
--
-- Bodies name ids, amounts, dates, codes and display fields (brand, bank, last 4), never a
-- token, card or account number (collector/sensitive.py checks each body before it is sent).

CREATE TABLE outbox_events (
    id            bigserial,
    customer_id   bigint NOT NULL,  -- the distribution key, in every key below
    lease_id      bigint,           -- NULL for an event about the customer's methods
    -- Delivery keeps the order of events with one key: the lease's, or the customer's for
    -- events that name no lease.
    ordering_key  text NOT NULL,
    type          text NOT NULL CHECK (type IN (
                  'debit.upcoming', 'payment.succeeded', 'payment.failed',
                  'payment.pending_settlement', 'ach.returned', 'method.disabled',
                  'method.expiring', 'primary.changed', 'lease.delinquent',
                  'lease.paid_off')),
    as_of         date NOT NULL,    -- the business date of the change
    body          jsonb NOT NULL,
    -- What makes the event once: e.g. 'payment.succeeded:<attempt>'.
    dedupe_key    text NOT NULL,
    -- Fanned out to the endpoints configured when a deliverer first saw it.
    dispatched    boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    UNIQUE (customer_id, dedupe_key)
);
CREATE UNIQUE INDEX outbox_events_id ON outbox_events (id);
CREATE INDEX outbox_events_undispatched ON outbox_events (id) WHERE NOT dispatched;
CREATE INDEX outbox_events_type ON outbox_events (type, id);

-- One row per event and endpoint: at least once, in order per ordering key, with backoff,
-- dead-lettered after the retry limit.
CREATE TABLE event_deliveries (
    customer_id      bigint NOT NULL,
    event_id         bigint NOT NULL,
    endpoint         text NOT NULL,
    ordering_key     text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A deliverer sending it now holds it until then; past it (the deliverer died, SIGKILL),
    -- another sends it again: receivers dedupe by the event id.
    claimed_until    timestamptz,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id, endpoint),
    FOREIGN KEY (customer_id, event_id) REFERENCES outbox_events (customer_id, id)
);
CREATE INDEX event_deliveries_pending ON event_deliveries (endpoint, ordering_key, event_id)
    WHERE status = 'pending';
CREATE INDEX event_deliveries_event ON event_deliveries (event_id);

-- The reason class of a failed payment, from its attempt: refused by the eligibility check,
-- not taken (the gateway never had it), a hard decline (the method was disabled for it), one
-- the customer must complete (authentication), or a soft decline.
CREATE FUNCTION outbox_reason_class_v1(p_status text, p_code text, p_method_status text,
                                       p_disabled_reason text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_status = 'refused' THEN 'refused'
        WHEN p_status = 'failed' THEN 'not_taken'
        WHEN p_method_status = 'disabled' AND p_disabled_reason IS NOT DISTINCT FROM p_code
            THEN 'hard'
        WHEN p_code = 'authentication_required' THEN 'action_required'
        ELSE 'soft'
    END
$$;

-- One event per attempt and kind of answer; the rows of a manual payment over several
-- installments make one event. A generic plan serves every call: its statements look rows
-- up by key, whatever the values (a custom plan re-planned each statement on every row: the
-- pass took 2.5 times as long), and never a sequential scan (see 0010).
CREATE FUNCTION outbox_money_event_v1() RETURNS trigger
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_type text := CASE NEW.kind
        WHEN 'accepted' THEN 'payment.pending_settlement'
        WHEN 'released' THEN 'payment.failed'
        WHEN 'settled' THEN 'payment.succeeded'
        ELSE 'ach.returned'
    END;
    v_key text := v_type || ':' || NEW.attempt_id;
    v_lease bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM outbox_events
               WHERE customer_id = NEW.customer_id AND dedupe_key = v_key) THEN
        RETURN NULL;
    END IF;
    SELECT lease_id INTO v_lease FROM installments WHERE id = NEW.installment_id;
    INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                               dedupe_key)
    SELECT NEW.customer_id, v_lease, 'lease:' || v_lease, v_type, NEW.as_of,
           jsonb_strip_nulls(jsonb_build_object(
               'attempt_id', a.id,
               'payment_id', a.payment_id,
               'installment_ids', j.installment_ids,
               'amount_cents', a.amount_cents,
               'source', a.source,
               'gateway', a.gateway,
               'method', jsonb_build_object('id', pm.id, 'kind', pm.kind, 'brand', pm.brand,
                                            'bank_name', pm.bank_name, 'last4', pm.last4),
               'effective_on', CASE WHEN v_type = 'payment.pending_settlement'
                                    THEN a.effective_on END,
               'reason_class', CASE WHEN v_type = 'payment.failed' THEN
                   outbox_reason_class_v1(a.status, a.outcome_code, pm.status,
                                          pm.disabled_reason) END,
               'code', CASE WHEN v_type IN ('payment.failed', 'ach.returned')
                            THEN coalesce(r.return_code, a.outcome_code) END,
               'return_category', r.category,
               'reversed_paid', CASE WHEN v_type = 'ach.returned' THEN NEW.kind = 'reversed' END,
               'method_disabled', CASE WHEN v_type IN ('payment.failed', 'ach.returned')
                                       THEN pm.status = 'disabled' END,
               'retry_planned', CASE WHEN v_type IN ('payment.failed', 'ach.returned')
                                     THEN j.retry_on IS NOT NULL END,
               'retry_on', CASE WHEN v_type IN ('payment.failed', 'ach.returned')
                                THEN j.retry_on END
           )),
           v_key
    FROM charge_attempts a
    JOIN payment_methods pm ON pm.id = a.payment_method_id
    LEFT JOIN charge_returns r ON r.attempt_id = a.id
    CROSS JOIN LATERAL (
        SELECT array_agg(m.installment_id ORDER BY m.installment_id) AS installment_ids,
               min(i.next_attempt_on) AS retry_on
        FROM money_movements m JOIN installments i ON i.id = m.installment_id
        WHERE m.attempt_id = a.id AND m.kind = 'presented'
    ) j
    WHERE a.id = NEW.attempt_id
    ON CONFLICT (customer_id, dedupe_key) DO NOTHING;

    -- The lease's last money came in: every installment paid (or cancelled).
    IF NEW.kind = 'settled' AND v_lease IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM installments
        WHERE lease_id = v_lease AND status NOT IN ('paid', 'cancelled')
    ) THEN
        INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,
                                   dedupe_key)
        SELECT NEW.customer_id, v_lease, 'lease:' || v_lease, 'lease.paid_off', NEW.as_of,
               jsonb_build_object('paid_cents', sum(i.paid_cents),
                                  'installments', count(*)),
               'lease.paid_off:' || v_lease
        FROM installments i WHERE i.lease_id = v_lease
        ON CONFLICT (customer_id, dedupe_key) DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER money_movements_outbox AFTER INSERT ON money_movements
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.attempt_id IS NOT NULL
          AND NEW.kind IN ('accepted', 'released', 'settled', 'returned', 'reversed'))
    EXECUTE FUNCTION outbox_money_event_v1();

-- A method disabled, by whatever statement (a hard decline, a return, a dispute). Deferred
-- too, so that its business date is that of the money movement behind it (the decline's or
-- the return's, written in the same statement), the latest of its card or account.
-- The journal is read through its partial indexes by kind (attempt_id leads each; together
-- they cover every kind a row under an attempt can have), never whole: a method disabled per
-- hard decline must not scan the book.
CREATE FUNCTION outbox_method_disabled_v1() RETURNS trigger
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    INSERT INTO outbox_events (customer_id, ordering_key, type, as_of, body, dedupe_key)
    VALUES (NEW.customer_id, 'customer:' || NEW.customer_id, 'method.disabled',
            coalesce((SELECT max(m.as_of)
                      FROM charge_attempts a
                      CROSS JOIN LATERAL (
                          SELECT p.as_of FROM money_movements p
                          WHERE p.attempt_id = a.id AND p.kind = 'presented'
                          UNION ALL
                          SELECT c.as_of FROM money_movements c
                          WHERE c.attempt_id = a.id AND c.kind = 'accepted'
                          UNION ALL
                          SELECT e.as_of FROM money_movements e
                          WHERE e.attempt_id = a.id
                            AND e.kind IN ('released', 'settled', 'returned')
                          UNION ALL
                          SELECT r.as_of FROM money_movements r
                          WHERE r.attempt_id = a.id AND r.kind = 'reversed'
                      ) m
                      WHERE a.instrument_key = NEW.instrument_key), current_date),
            jsonb_strip_nulls(jsonb_build_object(
                'method', jsonb_build_object('id', NEW.id, 'kind', NEW.kind,
                                             'brand', NEW.brand, 'bank_name', NEW.bank_name,
                                             'last4', NEW.last4),
                'reason', NEW.disabled_reason,
                'was_primary', NEW.is_primary)),
            'method.disabled:' || NEW.id || ':' || txid_current())
    ON CONFLICT (customer_id, dedupe_key) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER payment_methods_outbox_disabled
    AFTER UPDATE OF status ON payment_methods
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status = 'disabled')
    EXECUTE FUNCTION outbox_method_disabled_v1();
