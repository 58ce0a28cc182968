-- The attempts of an installment, by id, for the "attempt before this one" lookups: the
-- notice rule's previous automatic debit of the lease (notices.notice_facts, and
-- notices.upcoming_debits for the notices written ahead) and the eligibility check's
-- two-strike run (eligibility.history) read `installment_id = ... AND id < <this attempt>`
-- (upcoming_debits: the newest), newest first.
--
-- The primary key is (id, customer_id) since sql/0022, and with only (installment_id) beside
-- it the planner was seen to take `id < $attempt AND customer_id = ...` as the key's index
-- condition, walking back from this attempt (or, in a BitmapAnd, over all older ones) to
-- test the customer: every attempt made since the customer's previous one, all of them for
-- a customer's first. In a pass over 20,000 due, once its plan flipped with the statistics
-- autovacuum took mid-pass, notice_facts went from 6 ms a batch of 500 to 128 ms and the
-- pass's PostgreSQL CPU doubled; the cost grows with the table. With the id in the
-- installment's index one backward range answers both conditions
-- (tests/test_previous_attempt_plans.py holds the three lookups to it, in generic and
-- custom plans). Same entries as the index it replaces, which installment_id led as this does.
DROP INDEX charge_attempts_installment;
CREATE INDEX charge_attempts_installment ON charge_attempts (installment_id, id);
