-- Late fees (collector/db/fees.py): the pass's assessment, the waiver, and the reads of the
-- dry run and the portal. The rule table comes in as parallel arrays ($2 states, $3 grace
-- days, $4 basis points, $5 caps, $6 minimums) and the default rule ($7 grace, $8 basis
-- points, $9 cap, $10 minimum): see late_fees_due_v1 in sql/0021_late_fees.sql.

-- assess --
-- Assess every late fee due on business date $1 in one statement ($11 source); returns the
-- fees added (count, cents)
SELECT fees, cents
FROM money_assess_fees_v1($1, $2::text[], $3::integer[], $4::integer[], $5::bigint[],
                          $6::bigint[], $7, $8, $9, $10, $11);

-- due_rows --
-- The late fees a pass on business date $1 would assess, one row each (the rules as for
-- assess): on Citus the fees are recorded per shard group of their customers
SELECT installment_id, customer_id, fee_cents, rule
FROM late_fees_due_v1($1, $2::text[], $3::integer[], $4::integer[], $5::bigint[],
                      $6::bigint[], $7, $8, $9, $10);

-- record_group --
-- Record late fees $1 (installments) of customers $2, $3 cents under rules $4, on business
-- date $5 from source $6, for customers $7 (one shard group's; sql/0027)
SELECT fees, cents
FROM money_record_fees_v1($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::date,
                          $6::text, $7::bigint[]);

-- due --
-- The late fees a pass on business date $1 would assess, by rule (count, cents), but on leases
-- $11, which it would charge off first (the pass's charge-off comes before its fees). Reads
-- only.
SELECT rule, count(*)::integer AS fees, sum(fee_cents)::bigint AS cents
FROM late_fees_due_v1($1, $2::text[], $3::integer[], $4::integer[], $5::bigint[],
                      $6::bigint[], $7, $8, $9, $10)
WHERE lease_id <> ALL ($11::bigint[])
GROUP BY rule
ORDER BY rule;

-- waive --
-- Waive fee $2 of lease $1 of customer $6 on business date $3 ($4 source, $5 reason);
-- returns the outcome ('waived', 'not_found', 'already_waived', 'fee_paid') and the waiver
-- (money_waive_fee_v2, sql/0023_route_portal.sql: every statement names the customer)
SELECT outcome, waiver_id, installment_id, amount_cents
FROM money_waive_fee_v2($6, $1, $2, $3, $4, $5);

-- lease_fees --
-- The fees of lease $1 (customer $2), oldest installment first, with their waivers
SELECT f.id AS fee_id, f.installment_id, i.seq, f.amount_cents, f.as_of AS assessed_on,
       f.reason AS rule, w.id AS waiver_id, w.as_of AS waived_on, w.reason AS waiver_reason
FROM installments i
JOIN money_movements f
    ON f.installment_id = i.id AND f.customer_id = i.customer_id AND f.kind = 'fee_assessed'
LEFT JOIN money_movements w
    ON w.installment_id = i.id AND w.customer_id = i.customer_id AND w.customer_id = $2
       AND w.kind = 'fee_waived'
WHERE i.customer_id = $2 AND f.customer_id = $2 AND i.lease_id = $1
ORDER BY i.due_on, i.id;

-- lease_state --
-- Set lease $1's (customer $3's) jurisdiction to $2 (a two-letter code, NULL: unknown);
-- returns the lease id
UPDATE leases SET state = $2 WHERE customer_id = $3 AND id = $1 RETURNING id;
