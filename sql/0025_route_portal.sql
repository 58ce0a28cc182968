-- The portal's reads and writes route to one shard (issue 12, part 2: manual pay and the
-- portal).
--
-- A portal request names a lease or a customer. The repository resolves a lease's customer
-- first (collector/db/portal.py, lease_customer: a plain read by id, kept in the process
-- once found, a lease never changes customer), and every function here takes that customer
-- and names it on every distributed table it reads or writes (customer_id = p_customer), so
-- on Citus each of their statements routes to the customer's shard (CITUS_FINDINGS R1-R3):
--
-- * plpgsql, never LANGUAGE sql: Citus cannot plan a SQL function's statements over
--   distributed tables with parameters; each is called as its own top-level statement
--   (SELECT ... FROM f(...)), never inside a statement over a distributed table, where it
--   would run nested on a worker;
-- * a statement that needs another function's result (the balance, the money of a
--   promise, the journal's money_present_v2 / money_follow_v2 / money_apply_v2) gets it
--   from a statement of its own in the function, through variables;
-- * no nextval in a routed CTE (the column defaults draw ids in plain INSERT ... VALUES), no
--   now() in RETURNING.
--
-- On plain PostgreSQL the same functions run: one statement from the engine, as before.
-- Of the functions they replace, lease_payoff_v1, money_cancel_v1 and money_waive_fee_v1
-- are dropped here (nothing calls them any more); lease_balance_v3 and promise_money_v1 stay
-- while the pass's promises.resolve and promises.due_collections call them (not routed yet:
-- they read every open promise, a pass-side change).

-- A customer's leases' balances on business date p_as_of (lease_balance_v3's definitions, one
-- line per lease with installments; p_lease NULL: every lease of the customer, else that
-- one): overdue (owed - paid - in flight - cancelled of installments due before p_as_of,
-- scheduled or overdue), pending (in flight with no answer awaited), the next due installment
-- on or after p_as_of and what is left of it, the late fees still owed, and the days past due
-- (those of the oldest installment with money neither paid nor in flight due before p_as_of;
-- the definition of sql/queries/delinquency.sql). One statement over the customer's shard.
CREATE FUNCTION lease_balances_v1(p_customer bigint, p_lease bigint, p_as_of date)
RETURNS TABLE (lease_id bigint, overdue_cents bigint, pending_cents bigint, next_due_on date,
               next_due_cents bigint, fees_owed_cents bigint, days_past_due integer)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT i.lease_id,
           coalesce(sum(i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents)
               FILTER (WHERE i.due_on < p_as_of AND i.status IN ('scheduled', 'overdue')),
               0)::bigint,
           coalesce(sum(i.in_flight_cents) FILTER (
               WHERE i.in_flight_cents > 0 AND i.awaiting_answers = 0), 0)::bigint,
           (array_agg(i.due_on ORDER BY i.due_on, i.seq) FILTER (
               WHERE i.status = 'scheduled' AND i.due_on >= p_as_of))[1],
           (array_agg(i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents
                      ORDER BY i.due_on, i.seq) FILTER (
               WHERE i.status = 'scheduled' AND i.due_on >= p_as_of))[1],
           -- Within an installment a payment pays the rent, then the fee.
           coalesce(sum(least(i.fee_cents - i.fee_waived_cents,
                              i.owed_cents - i.paid_cents - i.in_flight_cents
                              - i.cancelled_cents)) FILTER (
               WHERE i.status IN ('scheduled', 'overdue')), 0)::bigint,
           coalesce((p_as_of - min(i.due_on) FILTER (
               WHERE i.due_on < p_as_of AND i.status IN ('scheduled', 'overdue')
                 AND i.owed_cents - i.paid_cents - i.in_flight_cents
                     - i.cancelled_cents > 0))::integer, 0)
    FROM installments i
    WHERE i.customer_id = p_customer AND (p_lease IS NULL OR i.lease_id = p_lease)
    GROUP BY i.lease_id;
END;
$$;

-- The portal's view of a customer's leases (p_lease NULL) or of one lease of theirs on
-- business date p_as_of: the lease, its balances (lease_balances_v1: zero, no next due, for
-- a lease without installments) and the customer's primary method (display fields only).
-- Two statements on the customer's shard: the balances, then the leases with them.
CREATE FUNCTION portal_leases_v1(p_customer bigint, p_lease bigint, p_as_of date)
RETURNS TABLE (id bigint, customer_id bigint, agreement_ref text, store text, status text,
               order_details jsonb, state text, overdue_cents bigint, pending_cents bigint,
               next_due_on date, next_due_cents bigint, fees_owed_cents bigint,
               days_past_due integer, method_id bigint, method_kind text,
               method_gateway text, method_brand text, method_bank_name text,
               method_last4 text, method_status text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_overdue bigint[];
    v_pending bigint[];
    v_next_on date[];
    v_next_cents bigint[];
    v_fees bigint[];
    v_days integer[];
BEGIN
    SELECT array_agg(b.lease_id), array_agg(b.overdue_cents), array_agg(b.pending_cents),
           array_agg(b.next_due_on), array_agg(b.next_due_cents), array_agg(b.fees_owed_cents),
           array_agg(b.days_past_due)
    INTO v_ids, v_overdue, v_pending, v_next_on, v_next_cents, v_fees, v_days
    FROM lease_balances_v1(p_customer, p_lease, p_as_of) b;
    RETURN QUERY
    SELECT l.id, l.customer_id, l.agreement_ref::text, l.store::text, l.status::text,
           l.order_details, l.state::text,
           coalesce(b.overdue_cents, 0)::bigint, coalesce(b.pending_cents, 0)::bigint,
           b.next_due_on, b.next_due_cents,
           coalesce(b.fees_owed_cents, 0)::bigint, coalesce(b.days_past_due, 0)::integer,
           pm.id, pm.kind::text, pm.gateway::text, pm.brand::text, pm.bank_name::text,
           pm.last4::text, pm.status::text
    FROM leases l
    LEFT JOIN unnest(v_ids, v_overdue, v_pending, v_next_on, v_next_cents, v_fees, v_days)
        AS b(lease_id, overdue_cents, pending_cents, next_due_on, next_due_cents,
             fees_owed_cents, days_past_due) ON b.lease_id = l.id
    LEFT JOIN payment_methods pm
        ON pm.customer_id = l.customer_id AND pm.customer_id = p_customer AND pm.is_primary
    WHERE l.customer_id = p_customer AND (p_lease IS NULL OR l.id = p_lease)
    ORDER BY l.id;
END;
$$;

-- Lock lease p_lease of customer p_customer for a new promise (the lease lock manual pay
-- takes, FOR UPDATE: the two run one at a time per lease) and read, after the lock is held,
-- its status and overdue amount on business date p_as_of (lease_balances_v1). No row when
-- the customer has no such lease. VOLATILE: the balance's statement takes its snapshot after
-- the lock.
CREATE FUNCTION promise_lock_lease_v1(p_customer bigint, p_lease bigint, p_as_of date)
RETURNS TABLE (id bigint, customer_id bigint, status text, overdue_cents bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_status text;
BEGIN
    SELECT l.status INTO v_status FROM leases l
    WHERE l.id = p_lease AND l.customer_id = p_customer
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p_lease, p_customer, v_status,
           coalesce((SELECT b.overdue_cents FROM lease_balances_v1(p_customer, p_lease, p_as_of) b),
                    0)::bigint;
END;
$$;

-- promise_money_v1 (0020) with the customer: the money counted toward a promise of lease
-- p_lease made at p_since for date p_until, settled and in flight, from the journal, over
-- the lease's attempts made since the promise and presented on or before its date.
CREATE FUNCTION promise_money_v2(
    p_customer bigint, p_lease bigint, p_since timestamptz, p_until date
) RETURNS TABLE (settled_cents bigint, in_flight_cents bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint,
           coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0)::bigint
    FROM installments i
    JOIN money_movements m ON m.installment_id = i.id AND m.customer_id = i.customer_id
    JOIN charge_attempts a ON a.id = m.attempt_id AND a.customer_id = m.customer_id
    WHERE i.customer_id = p_customer AND m.customer_id = p_customer
      AND a.customer_id = p_customer
      AND i.lease_id = p_lease
      AND a.created_at >= p_since
      AND a.as_of <= p_until;
END;
$$;

-- Lease p_lease's (customer p_customer's) promises, newest first, with the money counted
-- toward each (an open one: as it stands now, promise_money_v2; a resolved one: what
-- counted when it was resolved). A statement for the promises, one per open promise (a lease
-- has at most one open).
CREATE FUNCTION lease_promises_v1(p_customer bigint, p_lease bigint)
RETURNS TABLE (id bigint, lease_id bigint, amount_cents bigint, made_on date,
               promised_on date, auto_collect boolean, resume_on date, status text,
               resolved_on date, payment_id bigint, created_at timestamptz,
               paid_cents bigint, pending_cents bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    r record;
    v_settled bigint;
    v_in_flight bigint;
BEGIN
    FOR r IN
        SELECT pr.* FROM promises pr
        WHERE pr.customer_id = p_customer AND pr.lease_id = p_lease
        ORDER BY pr.id DESC
    LOOP
        IF r.status = 'open' THEN
            SELECT m.settled_cents, m.in_flight_cents INTO v_settled, v_in_flight
            FROM promise_money_v2(p_customer, p_lease, r.created_at, r.promised_on) m;
        ELSE
            v_settled := r.paid_cents;
            v_in_flight := 0;
        END IF;
        id := r.id; lease_id := r.lease_id; amount_cents := r.amount_cents;
        made_on := r.made_on; promised_on := r.promised_on; auto_collect := r.auto_collect;
        resume_on := r.resume_on; status := r.status; resolved_on := r.resolved_on;
        payment_id := r.payment_id; created_at := r.created_at;
        paid_cents := v_settled; pending_cents := v_in_flight;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- money_waive_fee_v1 (0021) with the customer: every statement names it. Same answers.
CREATE FUNCTION money_waive_fee_v2(
    p_customer bigint, p_lease bigint, p_fee bigint, p_as_of date, p_source text,
    p_reason text
) RETURNS TABLE (outcome text, waiver_id bigint, installment_id bigint, amount_cents bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_fee money_movements%ROWTYPE;
    v_inst installments%ROWTYPE;
    v_row bigint;
BEGIN
    SELECT m.* INTO v_fee FROM money_movements m
    JOIN installments i ON i.id = m.installment_id AND i.customer_id = m.customer_id
    WHERE m.customer_id = p_customer AND i.customer_id = p_customer
      AND m.id = p_fee AND m.kind = 'fee_assessed' AND i.lease_id = p_lease;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    SELECT * INTO v_inst FROM installments i
    WHERE i.id = v_fee.installment_id AND i.customer_id = p_customer
    FOR UPDATE;
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
    VALUES (p_customer, v_inst.id, 'fee_waived', v_fee.amount_cents, p_as_of, p_source,
            p_reason)
    RETURNING id INTO v_row;
    PERFORM money_apply_v2(ARRAY[v_row], ARRAY[p_customer]);
    RETURN QUERY SELECT 'waived'::text, v_row, v_inst.id, v_fee.amount_cents;
END;
$$;
DROP FUNCTION money_waive_fee_v1(bigint, bigint, date, text, text);

-- money_cancel_v1 (0021) with the customer: the payoff's cancellations of customer
-- p_customer's lease p_lease, every table named with the customer. Same answers.
CREATE FUNCTION money_cancel_v2(
    p_customer bigint, p_payment bigint, p_attempt bigint, p_lease bigint, p_as_of date,
    p_source text
) RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source, reason)
        SELECT p_customer, i.id, p_attempt, p_payment, 'cancelled',
               i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents, p_as_of,
               p_source, 'payoff'
        FROM installments i
        WHERE i.customer_id = p_customer AND i.lease_id = p_lease AND i.status <> 'cancelled'
          AND i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        ORDER BY i.due_on, i.id
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v2(v_rows, ARRAY[p_customer]);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;
DROP FUNCTION money_cancel_v1(bigint, bigint, bigint, date, text);

-- Record a pending manual payment of lease p_lease (customer p_customer) with method
-- p_method, its allocations (parallel arrays p_ids, p_cents) and its pending charge attempt
-- (key derived from the payment id, deadline p_deadline_s seconds away), then present the
-- allocations' money in the journal (money_present_v2: it marks them in flight). One call,
-- as payments.insert_payment's one statement was; each statement inside names the customer.
CREATE FUNCTION payment_insert_v1(
    p_lease bigint, p_customer bigint, p_method bigint, p_amount bigint, p_request_key text,
    p_request_hash text, p_as_of date, p_gateway text, p_deadline_s double precision,
    p_ids bigint[], p_cents bigint[], p_payoff boolean
) RETURNS TABLE (payment_id bigint, created_at timestamptz, attempt_id bigint,
                 idempotency_key text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_payment bigint;
    v_created timestamptz;
    v_attempt bigint;
    v_key text;
    v_instrument text;
BEGIN
    INSERT INTO payments
        (lease_id, customer_id, payment_method_id, amount_cents, request_key, request_hash,
         as_of, payoff)
    VALUES (p_lease, p_customer, p_method, p_amount, p_request_key, p_request_hash, p_as_of,
            p_payoff)
    RETURNING payments.id, payments.created_at INTO v_payment, v_created;
    INSERT INTO payment_allocations
        (payment_id, installment_id, customer_id, amount_cents, prev_status,
         prev_next_attempt_on)
    SELECT v_payment, a.installment_id, p_customer, a.amount_cents, i.status,
           i.next_attempt_on
    FROM unnest(p_ids, p_cents) AS a(installment_id, amount_cents)
    JOIN installments i ON i.id = a.installment_id
    WHERE i.customer_id = p_customer;
    SELECT pm.instrument_key INTO v_instrument FROM payment_methods pm
    WHERE pm.id = p_method AND pm.customer_id = p_customer;
    v_key := 'collector-pay-' || v_payment;
    INSERT INTO charge_attempts
        (payment_id, payment_method_id, amount_cents, idempotency_key, source, status, gateway,
         claimed_until, customer_id, instrument_key, as_of, effective_on, last_sent_at)
    VALUES (v_payment, p_method, p_amount, v_key, 'manual', 'pending', p_gateway,
            now() + make_interval(secs => p_deadline_s), p_customer, v_instrument, p_as_of,
            p_as_of, now())
    RETURNING charge_attempts.id INTO v_attempt;
    PERFORM money_present_v2(
        array_fill(v_attempt, ARRAY[cardinality(p_ids)]), p_ids, p_cents,
        array_fill(p_customer, ARRAY[cardinality(p_ids)]),
        array_fill(v_payment, ARRAY[cardinality(p_ids)]), p_as_of,
        array_fill('manual'::text, ARRAY[cardinality(p_ids)]), ARRAY[p_customer]);
    RETURN QUERY SELECT v_payment, v_created, v_attempt, v_key;
END;
$$;

-- Store the answer to manual payment p_payment's attempt p_attempt (customer p_customer):
-- p_attempt_status, p_payment_status, gateway ref, code, message, p_disable (disable the
-- method), p_response_status / p_response_body the first answer (NULL: keep the one stored),
-- p_advice network advice, then what it does to the money (p_kind the journal kind, NULL for
-- none yet; money_follow_v2, a manual payment's ending sets no plan). Only an attempt still
-- pending or in doubt changes; returns its id, or no row. payments.record_outcome's one
-- statement, as one call.
CREATE FUNCTION payment_record_outcome_v1(
    p_customer bigint, p_payment bigint, p_attempt bigint, p_attempt_status text,
    p_payment_status text, p_gateway_ref text, p_code text, p_message text, p_disable boolean,
    p_response_status integer, p_response_body jsonb, p_advice text, p_kind text,
    p_as_of date, p_source text
) RETURNS TABLE (id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_attempt bigint;
    v_method bigint;
BEGIN
    UPDATE charge_attempts a
    SET status = p_attempt_status,
        gateway_ref = coalesce(p_gateway_ref, a.gateway_ref),
        outcome_code = p_code,
        outcome_message = p_message,
        network_advice = coalesce(p_advice, a.network_advice),
        updated_at = v_now,
        resolved_at = CASE WHEN p_attempt_status = 'in_doubt' THEN NULL ELSE v_now END,
        claimed_until = CASE WHEN p_attempt_status = 'in_doubt' THEN v_now END
    WHERE a.customer_id = p_customer AND a.id = p_attempt AND a.payment_id = p_payment
      AND a.status IN ('pending', 'in_doubt')
    RETURNING a.id, a.payment_method_id INTO v_attempt, v_method;
    IF v_attempt IS NULL THEN
        RETURN;
    END IF;
    UPDATE payments p
    SET status = p_payment_status, updated_at = v_now,
        response_status = coalesce(p_response_status, p.response_status),
        response_body = coalesce(p_response_body, p.response_body)
    WHERE p.customer_id = p_customer AND p.id = p_payment;
    IF p_disable THEN
        UPDATE payment_methods pm
        SET status = 'disabled', disabled_reason = p_code, updated_at = v_now
        WHERE pm.customer_id = p_customer AND pm.id = v_method AND pm.status = 'active';
    END IF;
    IF p_kind IS NOT NULL THEN
        PERFORM money_follow_v2(ARRAY[v_attempt], ARRAY[p_kind], ARRAY[false],
                                ARRAY[NULL::date], ARRAY[p_code], p_as_of, p_source,
                                ARRAY[p_customer]);
    END IF;
    RETURN QUERY SELECT v_attempt;
END;
$$;

-- lease_payoff_v1 (0021) with the customer: the one computation of a payoff of customer
-- p_customer's lease p_lease, every table named with the customer; the same columns and
-- answers. One statement on the customer's shard.
CREATE FUNCTION lease_payoff_v2(
    p_customer bigint, p_lease bigint, p_as_of date, p_quote_days integer
) RETURNS TABLE (lease_id bigint, rule text, amount_cents bigint, components jsonb,
                 remaining_rent_cents bigint, rent_paid_cents bigint, in_flight_cents bigint,
                 payable boolean, window_ends_on date, next_due_on date, valid_until date,
                 late_fees_cents bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        WITH i AS (
            SELECT i.*,
                   i.owed_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents AS left_cents,
                   least(i.fee_cents - i.fee_waived_cents,
                         greatest(i.owed_cents - i.paid_cents - i.in_flight_cents
                                  - i.cancelled_cents, 0)) AS fee_left_cents
            FROM installments i
            WHERE i.customer_id = p_customer AND i.lease_id = p_lease
              AND i.status <> 'cancelled'
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
            WHERE l.customer_id = p_customer AND l.id = p_lease
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
        FROM c;
END;
$$;
DROP FUNCTION lease_payoff_v1(bigint, date, integer);
