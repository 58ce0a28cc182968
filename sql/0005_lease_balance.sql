-- A lease's balance on a business date, defined once for every query that shows it
-- (DESIGN.md, "What a pass collects"):
--   overdue: unpaid on installments due before the date and still scheduled or overdue,
--     whether or not a collection was tried; processing (being charged) and
--     pending_settlement (a bank debit in flight) are neither paid nor overdue;
--   pending: unpaid on installments whose bank debit has not settled;
--   next due: the earliest installment still scheduled and due on the date or later.
-- A single-SELECT SQL function: the planner inlines it into the calling query.

CREATE FUNCTION lease_balance_v1(p_lease_id bigint, p_as_of date)
RETURNS TABLE (overdue_cents bigint, pending_cents bigint, next_due_on date,
               next_due_cents bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.overdue_cents, s.pending_cents, n.due_on, n.unpaid_cents
    FROM (
        SELECT coalesce(sum(i.amount_cents - i.paid_cents) FILTER (
                   WHERE i.due_on < p_as_of AND i.status IN ('scheduled', 'overdue')), 0)::bigint
                   AS overdue_cents,
               coalesce(sum(i.amount_cents - i.paid_cents) FILTER (
                   WHERE i.status = 'pending_settlement'), 0)::bigint
                   AS pending_cents
        FROM installments i
        WHERE i.lease_id = p_lease_id
    ) s
    LEFT JOIN LATERAL (
        SELECT i.due_on, i.amount_cents - i.paid_cents AS unpaid_cents
        FROM installments i
        WHERE i.lease_id = p_lease_id AND i.status = 'scheduled' AND i.due_on >= p_as_of
        ORDER BY i.due_on, i.seq
        LIMIT 1
    ) n ON true
$$;
