-- Payoff quotes and early purchase (issue 9, part 3).
--
-- A lease's terms: its cash price, total of payments and delivery date, and its
-- early-purchase rule. lease_payoff_v1 (below) is the ONE computation of what a customer
-- must pay today to own the goods; the quote endpoint and the payoff payment both read it.
--
-- A payoff payment is a manual payment (payments.payoff) that pays exactly the quote,
-- allocated oldest installment first like any manual payment, and cancels in the journal
-- what is left of every installment after that allocation: a 'cancelled' row per installment
-- (the cents forgiven), written in the payment's claim transaction, so that while an ACH
-- payoff is pending nothing of the lease is collectable. The payment's ending decides the
-- rest (money_payoff_follow_v1, a trigger on the journal, so that every path that ends a
-- payment's money does it: the card answer, ACH settlement, returns, reconciliation, the
-- eligibility check's refusal): settled, the lease becomes paid_off; released, returned or
-- reversed, a 'reinstated' row undoes each cancellation and a paid_off lease is active again.

-- The lease's terms: all or none (a lease loaded before this migration has none, and its
-- payoff is every cent of rent left; see lease_payoff_v1).
--   cash_price_cents         what the goods cost bought outright on delivery
--   total_of_payments_cents  what the schedule adds up to (the audit compares)
--   delivered_on             the business date the customer received the goods
--   epo_window_days          the early-purchase window: through delivered_on + this many days
--   epo_window_fee_cents     the fee added to the cash price within the window
--   epo_after_bps            after the window: the share of the rent not yet due, in basis
--                            points (10000 = all of it), on top of the rent past due
ALTER TABLE leases
    ADD COLUMN cash_price_cents bigint,
    ADD COLUMN total_of_payments_cents bigint,
    ADD COLUMN delivered_on date,
    ADD COLUMN epo_window_days integer,
    ADD COLUMN epo_window_fee_cents bigint,
    ADD COLUMN epo_after_bps integer,
    ADD CONSTRAINT leases_terms_all_or_none CHECK (
        num_nulls(cash_price_cents, total_of_payments_cents, delivered_on, epo_window_days,
                  epo_window_fee_cents, epo_after_bps) IN (0, 6)),
    ADD CONSTRAINT leases_terms_valid CHECK (
        cash_price_cents > 0
        AND total_of_payments_cents >= cash_price_cents
        AND total_of_payments_cents <= 1000000000000
        AND epo_window_days BETWEEN 0 AND 3660
        AND epo_window_fee_cents BETWEEN 0 AND cash_price_cents
        AND epo_after_bps BETWEEN 0 AND 10000);

-- The cents of an installment a payoff forgave: derived from the journal like paid and in
-- flight ('cancelled' - 'reinstated'), written only by money_apply_v1 and
-- installments_derive_v1. Nothing is collectable of an installment whose paid, in-flight and
-- cancelled money make its amount.
ALTER TABLE installments
    ADD COLUMN cancelled_cents bigint NOT NULL DEFAULT 0 CHECK (cancelled_cents >= 0),
    ADD CONSTRAINT installments_left_within_amount
        CHECK (paid_cents + in_flight_cents + cancelled_cents <= amount_cents);

ALTER TABLE payments ADD COLUMN payoff boolean NOT NULL DEFAULT false;

-- Two kinds more (0015's list, plus):
--   cancelled   +cancelled   what a payoff forgave of an installment (under the payoff's
--                            attempt and payment)
--   reinstated  -cancelled   a cancellation undone: the payoff's money did not come in
ALTER TABLE money_movements DROP CONSTRAINT money_movements_kind_check;
ALTER TABLE money_movements ADD CONSTRAINT money_movements_kind_check CHECK (kind IN
    ('presented', 'accepted', 'released', 'settled', 'returned', 'reversed', 'replanned',
     'charged_off', 'cancelled', 'reinstated'));
ALTER TABLE money_movements ADD CONSTRAINT money_movements_payoff_rows CHECK (
    kind NOT IN ('cancelled', 'reinstated')
    OR (attempt_id IS NOT NULL AND payment_id IS NOT NULL AND NOT sets_plan));
-- A payoff cancels an installment once and reinstates it at most once.
CREATE UNIQUE INDEX money_movements_cancelled ON money_movements (attempt_id, installment_id)
    WHERE kind = 'cancelled';
CREATE UNIQUE INDEX money_movements_reinstated ON money_movements (attempt_id, installment_id)
    WHERE kind = 'reinstated';
CREATE INDEX money_movements_payment ON money_movements (payment_id, kind)
    WHERE payment_id IS NOT NULL;

CREATE FUNCTION movement_cancelled_cents_v1(p_kind text, p_amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'cancelled' THEN p_amount WHEN 'reinstated' THEN -p_amount
                       ELSE 0 END
$$;

-- installment_status_v1 with cancelled money: an installment whose money is all paid,
-- in flight or cancelled has nothing left to collect; with some in flight it waits for it
-- (processing, pending_settlement), with none it is paid (nothing cancelled) or cancelled.
-- An installment cancelled outside the journal (before it; p_was, nothing cancelled in the
-- journal) stays cancelled; money_apply_v1 passes p_was 'reinstated' for an installment
-- whose cancellation is being undone, so that its status comes from its money again.
CREATE FUNCTION installment_status_v2(
    p_was text, p_amount bigint, p_paid bigint, p_in_flight bigint, p_cancelled bigint,
    p_awaiting integer, p_attempts integer, p_planned boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_was = 'cancelled' AND p_cancelled = 0 THEN 'cancelled'
        WHEN p_paid = p_amount THEN 'paid'
        WHEN p_paid + p_in_flight + p_cancelled = p_amount THEN
            CASE WHEN p_in_flight = 0 THEN 'cancelled'
                 WHEN p_awaiting > 0 THEN 'processing'
                 ELSE 'pending_settlement' END
        WHEN p_planned OR p_attempts > 0 THEN 'overdue'
        ELSE 'scheduled'
    END
$$;

-- Replaces 0006's money_apply_v1 (same signature, same callers): it also sums cancelled
-- money and derives status through installment_status_v2. Keeps 0010's settings. As in 0006,
-- every new value is computed in the UPDATE from the row it locked (a CTE reading
-- installments would read them before the lock, and lose a concurrent change).
CREATE OR REPLACE FUNCTION money_apply_v1(p_rows bigint[]) RETURNS void
LANGUAGE sql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
    WITH d AS (
        SELECT m.installment_id,
               sum(movement_paid_cents_v1(m.kind, m.amount_cents))::bigint AS paid,
               sum(movement_in_flight_cents_v1(m.kind, m.amount_cents))::bigint AS in_flight,
               sum(movement_cancelled_cents_v1(m.kind, m.amount_cents))::bigint AS cancelled,
               count(*) FILTER (WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry'))
                   ::integer AS attempts,
               sum(CASE WHEN m.kind = 'presented' THEN 1 WHEN m.answers THEN -1 ELSE 0 END)
                   ::integer AS awaiting,
               max(m.id) FILTER (WHERE m.sets_plan) AS plan_row
        FROM money_movements m
        WHERE m.id = ANY (p_rows)
        GROUP BY m.installment_id
    ), n AS (
        SELECT d.*, plan.retry_on AS plan_on
        FROM d LEFT JOIN money_movements plan ON plan.id = d.plan_row
    )
    -- SET reads the row as it was: each new value is the old one plus the rows' effect.
    UPDATE installments i
    SET paid_cents = i.paid_cents + n.paid,
        in_flight_cents = i.in_flight_cents + n.in_flight,
        cancelled_cents = i.cancelled_cents + n.cancelled,
        attempts = i.attempts + n.attempts,
        awaiting_answers = i.awaiting_answers + n.awaiting,
        planned = i.planned OR n.plan_row IS NOT NULL,
        plan_on = CASE WHEN n.plan_row IS NOT NULL THEN n.plan_on ELSE i.plan_on END,
        status = installment_status_v2(
            CASE WHEN n.cancelled < 0 THEN 'reinstated' ELSE i.status END,
            i.amount_cents, i.paid_cents + n.paid, i.in_flight_cents + n.in_flight,
            i.cancelled_cents + n.cancelled, i.awaiting_answers + n.awaiting,
            i.attempts + n.attempts, i.planned OR n.plan_row IS NOT NULL),
        next_attempt_on = installment_next_attempt_v1(
            installment_status_v2(
                CASE WHEN n.cancelled < 0 THEN 'reinstated' ELSE i.status END,
                i.amount_cents, i.paid_cents + n.paid, i.in_flight_cents + n.in_flight,
                i.cancelled_cents + n.cancelled, i.awaiting_answers + n.awaiting,
                i.attempts + n.attempts, i.planned OR n.plan_row IS NOT NULL),
            i.planned OR n.plan_row IS NOT NULL,
            CASE WHEN n.plan_row IS NOT NULL THEN n.plan_on ELSE i.plan_on END,
            i.due_on),
        updated_at = now()
    FROM n
    WHERE i.id = n.installment_id;
$$;

-- Replaces 0006's installments_derive_v1 (same signature): cancelled money too.
CREATE OR REPLACE FUNCTION installments_derive_v1(p_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    WITH s AS (
        SELECT ids.id, j.*
        FROM unnest(p_ids) AS ids(id)
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(movement_paid_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS paid,
                   coalesce(sum(movement_in_flight_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS in_flight,
                   coalesce(sum(movement_cancelled_cents_v1(m.kind, m.amount_cents)), 0)::bigint
                       AS cancelled,
                   count(*) FILTER (
                       WHERE m.kind = 'presented' AND m.source IN ('batch', 'retry'))::integer
                       AS attempts,
                   coalesce(sum(CASE WHEN m.kind = 'presented' THEN 1
                                     WHEN m.answers THEN -1 ELSE 0 END), 0)::integer
                       AS awaiting,
                   max(m.id) FILTER (WHERE m.sets_plan) AS plan_row
            FROM money_movements m
            WHERE m.installment_id = ids.id
        ) j
    ), n AS (
        SELECT s.*, s.plan_row IS NOT NULL AS planned, plan.retry_on AS plan_on
        FROM s LEFT JOIN money_movements plan ON plan.id = s.plan_row
    )
    UPDATE installments i
    SET paid_cents = n.paid,
        in_flight_cents = n.in_flight,
        cancelled_cents = n.cancelled,
        attempts = n.attempts,
        awaiting_answers = n.awaiting,
        planned = n.planned,
        plan_on = n.plan_on,
        status = installment_status_v2(i.status, i.amount_cents, n.paid, n.in_flight,
                                       n.cancelled, n.awaiting, n.attempts, n.planned),
        next_attempt_on = installment_next_attempt_v1(
            installment_status_v2(i.status, i.amount_cents, n.paid, n.in_flight, n.cancelled,
                                  n.awaiting, n.attempts, n.planned),
            n.planned, n.plan_on, i.due_on),
        updated_at = now()
    FROM n
    WHERE i.id = n.id;
$$;

-- What a customer must pay on business date p_as_of to own the goods of lease p_lease: the
-- one computation of a payoff (the quote endpoint and the payoff payment read it). Over the
-- lease's installments that are not cancelled:
--   rent paid      paid_cents: settled money only (a debit in flight may still come back)
--   past due rent  left to take on installments due before p_as_of
--   rent not due   left to take on installments due on p_as_of or later
--   remaining rent past due + not due: what finishing the lease would still cost
-- Rules (rule):
--   'no_terms'       a lease without terms: the remaining rent
--   'within_window'  p_as_of <= delivered_on + epo_window_days: cash price - rent paid (never
--                    below 0; rent paid counts toward the cash price, as "same as cash" terms
--                    promise) + the window fee
--   'after_window'   past due rent + epo_after_bps of the rent not yet due, rounded half up
--                    to the cent: (cents * bps + 5000) / 10000 in integer arithmetic
-- The amount never exceeds the remaining rent (a payoff never costs more than paying the
-- lease out); the components (jsonb [{kind, cents}], cents signed) add up to it.
-- valid_until: the quote holds through the day before the next due date of money left to
-- take (that day's collection changes it), the last day of the window, and p_quote_days
-- from today, whichever comes first, but at least today. in_flight_cents: money in flight
-- on the lease, which the quote does not count as paid; a payoff is not taken while there is
-- any (payable false).
CREATE FUNCTION lease_payoff_v1(p_lease bigint, p_as_of date, p_quote_days integer)
RETURNS TABLE (lease_id bigint, rule text, amount_cents bigint, components jsonb,
               remaining_rent_cents bigint, rent_paid_cents bigint, in_flight_cents bigint,
               payable boolean, window_ends_on date, next_due_on date, valid_until date)
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT coalesce(sum(i.paid_cents), 0)::bigint AS rent_paid,
               coalesce(sum(i.in_flight_cents), 0)::bigint AS in_flight,
               coalesce(sum(i.amount_cents - i.paid_cents - i.in_flight_cents
                            - i.cancelled_cents) FILTER (WHERE i.due_on < p_as_of), 0)::bigint
                   AS past_due,
               coalesce(sum(i.amount_cents - i.paid_cents - i.in_flight_cents
                            - i.cancelled_cents) FILTER (WHERE i.due_on >= p_as_of), 0)::bigint
                   AS not_due,
               min(i.due_on) FILTER (
                   WHERE i.due_on >= p_as_of
                     AND i.amount_cents - i.paid_cents - i.in_flight_cents
                         - i.cancelled_cents > 0) AS next_due_on
        FROM installments i
        WHERE i.lease_id = p_lease AND i.status <> 'cancelled'
    ), r AS (
        SELECT l.id, s.*, s.past_due + s.not_due AS remaining,
               CASE WHEN l.cash_price_cents IS NULL THEN 'no_terms'
                    WHEN p_as_of <= l.delivered_on + l.epo_window_days THEN 'within_window'
                    ELSE 'after_window' END AS rule,
               l.cash_price_cents, l.epo_window_fee_cents,
               (s.not_due * l.epo_after_bps + 5000) / 10000 AS share_not_due,
               l.delivered_on + l.epo_window_days AS window_ends_on
        FROM leases l, s
        WHERE l.id = p_lease
    ), q AS (
        SELECT r.*,
               CASE r.rule
                   WHEN 'no_terms' THEN r.remaining
                   WHEN 'within_window' THEN
                       greatest(r.cash_price_cents - r.rent_paid, 0) + r.epo_window_fee_cents
                   ELSE r.past_due + r.share_not_due
               END AS raw
        FROM r
    ), c AS (
        SELECT q.*, least(q.raw, q.remaining) AS amount,
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
               || CASE WHEN q.raw > q.remaining THEN jsonb_build_array(
                       jsonb_build_object('kind', 'capped_at_remaining_rent',
                                          'cents', q.remaining - q.raw))
                  ELSE '[]'::jsonb END AS components
        FROM q
    )
    SELECT c.id, c.rule, c.amount, c.components, c.remaining, c.rent_paid, c.in_flight,
           c.in_flight = 0 AND c.amount > 0,
           c.window_ends_on, c.next_due_on,
           greatest(p_as_of, least(
               c.next_due_on - 1,
               CASE WHEN c.rule = 'within_window' THEN c.window_ends_on END,
               p_as_of + p_quote_days - 1))
    FROM c
$$;

-- Cancel, under payoff payment p_payment's attempt p_attempt, what is left of each of lease
-- p_lease's installments after the payment's own money was presented (amount - paid - in
-- flight - cancelled), applied by money_apply_v1. Returns the rows added.
CREATE FUNCTION money_cancel_v1(
    p_payment bigint, p_attempt bigint, p_lease bigint, p_as_of date, p_source text
) RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_rows bigint[];
BEGIN
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source, reason)
        SELECT l.customer_id, i.id, p_attempt, p_payment, 'cancelled',
               i.amount_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents, p_as_of,
               p_source, 'payoff'
        FROM installments i JOIN leases l ON l.id = i.lease_id
        WHERE i.lease_id = p_lease AND i.status <> 'cancelled'
          AND i.amount_cents - i.paid_cents - i.in_flight_cents - i.cancelled_cents > 0
        ORDER BY i.due_on, i.id
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    RETURN coalesce(cardinality(v_rows), 0);
END;
$$;

-- A payoff payment's money ended (a journal row of its attempt): settled, its lease is paid
-- off; released, returned or reversed, each of its cancellations is undone by a 'reinstated'
-- row (applied by money_apply_v1) and its lease is active again. Once per payment (the
-- unique indexes; the lease's status changes only from the state it expects): a payment over
-- several installments ends in one row each. Rows of other payments, and of the batch (no
-- payment), pass the trigger's WHEN without a call.
CREATE FUNCTION money_payoff_follow_v1() RETURNS trigger
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_lease bigint;
    v_rows bigint[];
BEGIN
    SELECT p.lease_id INTO v_lease FROM payments p WHERE p.id = NEW.payment_id AND p.payoff;
    IF v_lease IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.kind = 'settled' THEN
        UPDATE leases SET status = 'paid_off' WHERE id = v_lease AND status = 'active';
        RETURN NULL;
    END IF;
    WITH added AS (
        INSERT INTO money_movements
            (customer_id, installment_id, attempt_id, payment_id, kind, amount_cents, as_of,
             source, reason)
        SELECT c.customer_id, c.installment_id, c.attempt_id, c.payment_id, 'reinstated',
               c.amount_cents, NEW.as_of, NEW.source, 'payoff_' || NEW.kind
        FROM money_movements c
        WHERE c.payment_id = NEW.payment_id AND c.kind = 'cancelled'
        ORDER BY c.id
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_rows FROM added;
    PERFORM money_apply_v1(v_rows);
    UPDATE leases SET status = 'active' WHERE id = v_lease AND status = 'paid_off';
    RETURN NULL;
END;
$$;

CREATE TRIGGER money_movements_payoff AFTER INSERT ON money_movements
    FOR EACH ROW
    WHEN (NEW.payment_id IS NOT NULL
          AND NEW.kind IN ('settled', 'released', 'returned', 'reversed'))
    EXECUTE FUNCTION money_payoff_follow_v1();

-- A payoff's money that came back (returned, reversed) plans a retry, as a returned manual
-- payment does, but only for the installments that were due: those not yet due on the
-- return's business date go back to their schedule (the row keeps no plan, so the
-- installment's own due date stays its collection date), never collected early. A BEFORE
-- trigger, so that the row is written as it is applied (money_apply_v1 and
-- installments_derive_v1 read the same row).
CREATE FUNCTION money_payoff_plan_v1() RETURNS trigger
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM payments p WHERE p.id = NEW.payment_id AND p.payoff)
       AND EXISTS (SELECT 1 FROM installments i
                   WHERE i.id = NEW.installment_id AND i.due_on >= NEW.as_of) THEN
        NEW.sets_plan := false;
        NEW.retry_on := NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER money_movements_payoff_plan BEFORE INSERT ON money_movements
    FOR EACH ROW
    WHEN (NEW.payment_id IS NOT NULL AND NEW.sets_plan
          AND NEW.kind IN ('released', 'returned', 'reversed'))
    EXECUTE FUNCTION money_payoff_plan_v1();
