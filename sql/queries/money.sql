-- present --
-- Present money: one presented row per (attempt $1, installment $2, cents $3), customer $4,
-- payment $5, business date $6, source $7, all of customers $8 (one shard's on Citus);
-- re-derives the installments
SELECT money_present_v2($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                        $6::date, $7::text[], $8::bigint[]);

-- follow --
-- What became of attempts $1 of customers $8 (one shard's on Citus): kinds $2 (NULL:
-- re-derive only), plan flags $3 and dates $4, reasons $5, business date $6, source $7
SELECT money_follow_v2($1::bigint[], $2::text[], $3::boolean[], $4::date[], $5::text[],
                       $6::date, $7::text, $8::bigint[]);

-- replan --
-- Set the collection date of installments $1 of customers $6 (one shard's on Citus) to $2
-- (NULL: none) on business date $3, from source $4 for reason $5, without moving money
SELECT money_replan_v2($1::bigint[], $6::bigint[], $2::date, $3::date, $4::text, $5::text);

-- set_aside --
-- Set a row aside for an operator: subject $1 with id $2 (customer $3), reason $4, detail $5.
-- A subject already open for the same reason is not set aside twice.
INSERT INTO needs_attention (subject, subject_id, customer_id, reason, detail)
SELECT $1, $2, $3, $4, $5
WHERE NOT EXISTS (
    SELECT 1 FROM needs_attention n
    WHERE n.subject = $1 AND n.subject_id = $2 AND n.reason = $4 AND n.resolved_at IS NULL)
RETURNING id;

-- open_attention --
-- The rows set aside and not yet resolved, oldest first, at most $1
SELECT id, subject, subject_id, customer_id, reason, detail, created_at
FROM needs_attention
WHERE resolved_at IS NULL
ORDER BY id
LIMIT $1;
