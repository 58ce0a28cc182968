-- A lease's balance on a business date from the money journal's derived columns (the money
-- ledger): what is owed now is what is left to take, amount - paid - in flight, so money
-- in flight is never shown as overdue as well.
--   overdue: left to take on installments due before the date that are scheduled or
--     overdue (an installment part in flight and part owed is overdue for the part owed);
--   pending: money in flight that the gateway accepted and that has not settled (a bank
--     debit), on installments with no presentment still awaiting an answer;
--   next due: the earliest installment still scheduled and due on the date or later, for
--     what is left to take on it.
-- lease_balance_v1 stays for code of the previous release during a deploy.

CREATE FUNCTION lease_balance_v2(p_lease_id bigint, p_as_of date)
RETURNS TABLE (overdue_cents bigint, pending_cents bigint, next_due_on date,
               next_due_cents bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.overdue_cents, s.pending_cents, n.due_on, n.unpaid_cents
    FROM (
        SELECT coalesce(sum(i.amount_cents - i.paid_cents - i.in_flight_cents) FILTER (
                   WHERE i.due_on < p_as_of AND i.status IN ('scheduled', 'overdue')), 0)::bigint
                   AS overdue_cents,
               coalesce(sum(i.in_flight_cents) FILTER (
                   WHERE i.in_flight_cents > 0 AND i.awaiting_answers = 0), 0)::bigint
                   AS pending_cents
        FROM installments i
        WHERE i.lease_id = p_lease_id
    ) s
    LEFT JOIN LATERAL (
        SELECT i.due_on, i.amount_cents - i.paid_cents - i.in_flight_cents AS unpaid_cents
        FROM installments i
        WHERE i.lease_id = p_lease_id AND i.status = 'scheduled' AND i.due_on >= p_as_of
        ORDER BY i.due_on, i.seq
        LIMIT 1
    ) n ON true
$$;
