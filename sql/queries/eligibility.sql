-- history --
-- On one node (plain PostgreSQL; Citus: instruments, then history_routed a shard group at a
-- time): what the eligibility check reads for presentments ($1 attempt ids, $2 installment ids,
-- $3 instrument keys, $4 method kinds) on business date $5. Per presentment: its instrument's
-- declines in the 30 days before $5, its attempts still without an answer, advice never to
-- try again ($6 codes), unauthorized returns and dead-account returns ($7 codes); for a bank
-- debit, the money's earlier lines on that account (presentments and returns), from the
-- journal, so manual and batch presentments of the same money count alike; each line carries
-- the amount of its entry (the attempt's whole amount, not this installment's share), since
-- NACHA asks a reinitiation for the identical amount of the returned entry. Cards skip the
-- lines (a one-time filter on p.kind), so the hot path reads one index range per card.
-- The two-strike stop ($8 failures; 0: off): per presentment, how many of its lease's latest
-- automatic presentments on its instrument failed in a row (declined or returned, newest
-- first, up to the first that succeeded) since the instrument's latest authorization.
-- Promises to pay: the date automatic presentments of the lease may resume, when it has a
-- promise open or kept (promises.resume_on; one index probe a presentment).
WITH p AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])
      AS p(attempt_id, installment_id, instrument_key, kind)
), instruments AS (
    -- One index range of charge_attempts per instrument (a LATERAL: a join by key let the
    -- planner scan every attempt of the book, once a batch).
    SELECT k.instrument_key, h.*
    FROM (SELECT DISTINCT instrument_key FROM p) k
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE a.status = 'declined' AND a.as_of > $5::date - 30)
                   AS declines_30d,
               coalesce(array_agg(a.id) FILTER (WHERE a.status IN ('pending', 'in_doubt')),
                        '{}'::bigint[]) AS unresolved_ids,
               coalesce(bool_or(a.network_advice = ANY ($6::text[])), false) AS never_retry,
               coalesce(bool_or(r.category = 'unauthorized'), false) AS unauthorized_return,
               coalesce(bool_or(r.return_code = ANY ($7::text[])), false) AS dead_account_return,
               count(*) FILTER (WHERE a.status IN ('declined', 'returned')) AS failures
        FROM charge_attempts a
        LEFT JOIN charge_returns r ON r.attempt_id = a.id
        WHERE a.instrument_key = k.instrument_key
    ) h
)
SELECT p.attempt_id, p.installment_id,
       coalesce(h.declines_30d, 0) AS declines_30d,
       coalesce(h.unresolved_ids, '{}'::bigint[]) AS unresolved_ids,
       coalesce(h.never_retry, false) AS never_retry,
       coalesce(h.unauthorized_return, false) AS unauthorized_return,
       coalesce(h.dead_account_return, false) AS dead_account_return,
       m.line_ids, m.line_attempts, m.line_returned, m.line_nsf, m.line_cents, m.line_on,
       m.line_sent,
       coalesce(st.strikes, 0) AS strikes,
       pr.resume_on AS promise_resume_on
FROM p
LEFT JOIN instruments h ON h.instrument_key = p.instrument_key
LEFT JOIN LATERAL (
    SELECT max(o.resume_on) AS resume_on
    FROM installments pi
    JOIN promises o ON o.lease_id = pi.lease_id AND o.status IN ('open', 'kept')
    WHERE pi.id = p.installment_id
) pr ON true
LEFT JOIN LATERAL (
    -- Attempts that neither failed nor succeeded (pending, in doubt, processing, refused, a
    -- gateway error) neither count nor break the run; a new authorization starts it afresh.
    SELECT coalesce(min(s.n) FILTER (WHERE s.status = 'succeeded') - 1, count(*))::integer
               AS strikes
    FROM (
        SELECT b.status, row_number() OVER (ORDER BY b.id DESC) AS n
        FROM installments pi
        JOIN installments bi ON bi.lease_id = pi.lease_id
        JOIN charge_attempts b ON b.installment_id = bi.id
        -- An instrument with fewer failures in all than the limit cannot have that many in a
        -- row on one lease: skipped before any lookup (most presentments of a pass; the
        -- count doubled the query's time when it ran for every one).
        WHERE $8::integer > 0 AND h.failures >= $8::integer
          AND pi.id = p.installment_id
          AND b.instrument_key = p.instrument_key
          AND b.source IN ('batch', 'retry')
          AND b.id < p.attempt_id
          AND b.status IN ('succeeded', 'declined', 'returned')
          AND b.created_at > coalesce(
              (SELECT max(z.authorized_at) FROM method_authorizations z
               WHERE z.instrument_key = p.instrument_key), '-infinity'::timestamptz)
        ORDER BY b.id DESC
        LIMIT $8::integer
    ) s
) st ON true
LEFT JOIN LATERAL (
    SELECT array_agg(j.id ORDER BY j.id) AS line_ids,
           array_agg(j.attempt_id ORDER BY j.id) AS line_attempts,
           array_agg(j.kind <> 'presented' ORDER BY j.id) AS line_returned,
           array_agg(coalesce(r.category = 'nsf', false) ORDER BY j.id) AS line_nsf,
           array_agg(b.amount_cents ORDER BY j.id) AS line_cents,
           array_agg(j.as_of ORDER BY j.id) AS line_on,
           -- A presentment refused, or declined or not taken by the gateway, never reached
           -- the bank: no entry, so no reinitiation.
           array_agg(b.status NOT IN ('refused', 'declined', 'failed') ORDER BY j.id)
               AS line_sent
    FROM money_movements j
    JOIN charge_attempts b ON b.id = j.attempt_id AND b.instrument_key = p.instrument_key
    LEFT JOIN charge_returns r ON r.attempt_id = j.attempt_id
    WHERE p.kind = 'ach'
      AND j.installment_id = p.installment_id
      AND j.kind IN ('presented', 'returned', 'reversed')
      AND j.attempt_id <> p.attempt_id
) m ON true;

-- instruments --
-- On Citus, before history_routed: what the eligibility check reads of instruments $1 (card or account identities, whoever's
-- customer they are on file with) on business date $2: declines in the 30 days before $2,
-- attempts still without an answer, advice never to try again ($3 codes), unauthorized
-- returns and dead-account returns ($4 codes), failures in all, and the latest
-- authorization. A plain read (on Citus across shards, aggregated per instrument); the
-- per-presentment history (history) is read a shard group at a time.
WITH h AS (
    SELECT a.instrument_key,
           count(*) FILTER (WHERE a.status = 'declined' AND a.as_of > $2::date - 30)
               AS declines_30d,
           coalesce(array_agg(a.id) FILTER (WHERE a.status IN ('pending', 'in_doubt')),
                    '{}'::bigint[]) AS unresolved_ids,
           coalesce(bool_or(a.network_advice = ANY ($3::text[])), false) AS never_retry,
           coalesce(bool_or(r.category = 'unauthorized'), false) AS unauthorized_return,
           coalesce(bool_or(r.return_code = ANY ($4::text[])), false) AS dead_account_return,
           count(*) FILTER (WHERE a.status IN ('declined', 'returned')) AS failures
    FROM charge_attempts a
    LEFT JOIN charge_returns r ON r.attempt_id = a.id AND r.customer_id = a.customer_id
    WHERE a.instrument_key = ANY ($1::text[])
    GROUP BY a.instrument_key
), z AS (
    SELECT z.instrument_key, max(z.authorized_at) AS authorized_at
    FROM method_authorizations z
    WHERE z.instrument_key = ANY ($1::text[])
    GROUP BY z.instrument_key
)
SELECT k.instrument_key,
       coalesce(h.declines_30d, 0) AS declines_30d,
       coalesce(h.unresolved_ids, '{}'::bigint[]) AS unresolved_ids,
       coalesce(h.never_retry, false) AS never_retry,
       coalesce(h.unauthorized_return, false) AS unauthorized_return,
       coalesce(h.dead_account_return, false) AS dead_account_return,
       coalesce(h.failures, 0) AS failures,
       z.authorized_at
FROM unnest($1::text[]) AS k(instrument_key)
LEFT JOIN h ON h.instrument_key = k.instrument_key
LEFT JOIN z ON z.instrument_key = k.instrument_key;

-- history_routed --
-- history on Citus, after instruments: what the eligibility check reads for presentments
-- ($1 attempt ids, $2 installment ids, $3 instrument keys, $4 method kinds, $5 their
-- instruments' failures in all and $6 latest authorizations, from instruments) of
-- customers $7 (one shard's; every table names them): for a bank debit the money's
-- earlier lines on that account, the two-strike stop's strikes ($8 failures; 0: off), the
-- promise's resume date; as history reads them.
WITH p AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                $6::timestamptz[])
      AS p(attempt_id, installment_id, instrument_key, kind, failures, authorized_at)
)
SELECT p.attempt_id, p.installment_id,
       m.line_ids, m.line_attempts, m.line_returned, m.line_nsf, m.line_cents, m.line_on,
       m.line_sent,
       coalesce(st.strikes, 0) AS strikes,
       pr.resume_on AS promise_resume_on
FROM p
LEFT JOIN LATERAL (
    SELECT max(o.resume_on) AS resume_on
    FROM installments pi
    JOIN promises o
      ON o.lease_id = pi.lease_id AND o.customer_id = pi.customer_id
     AND o.customer_id = ANY ($7::bigint[]) AND o.status IN ('open', 'kept')
    WHERE pi.id = p.installment_id AND pi.customer_id = ANY ($7::bigint[])
) pr ON true
LEFT JOIN LATERAL (
    -- Attempts that neither failed nor succeeded (pending, in doubt, processing, refused, a
    -- gateway error) neither count nor break the run; a new authorization starts it afresh.
    SELECT coalesce(min(s.n) FILTER (WHERE s.status = 'succeeded') - 1, count(*))::integer
               AS strikes
    FROM (
        SELECT b.status, row_number() OVER (ORDER BY b.id DESC) AS n
        FROM installments pi
        JOIN installments bi
          ON bi.lease_id = pi.lease_id AND bi.customer_id = pi.customer_id
         AND bi.customer_id = ANY ($7::bigint[])
        JOIN charge_attempts b
          ON b.installment_id = bi.id AND b.customer_id = bi.customer_id
         AND b.customer_id = ANY ($7::bigint[])
        -- An instrument with fewer failures in all than the limit cannot have that many in a
        -- row on one lease: skipped before any lookup (most presentments of a pass; the
        -- count doubled the query's time when it ran for every one).
        WHERE $8::integer > 0 AND p.failures >= $8::integer
          AND pi.id = p.installment_id AND pi.customer_id = ANY ($7::bigint[])
          AND b.instrument_key = p.instrument_key
          AND b.source IN ('batch', 'retry')
          AND b.id < p.attempt_id
          AND b.status IN ('succeeded', 'declined', 'returned')
          AND b.created_at > coalesce(p.authorized_at, '-infinity'::timestamptz)
        ORDER BY b.id DESC
        LIMIT $8::integer
    ) s
) st ON true
LEFT JOIN LATERAL (
    SELECT array_agg(j.id ORDER BY j.id) AS line_ids,
           array_agg(j.attempt_id ORDER BY j.id) AS line_attempts,
           array_agg(j.kind <> 'presented' ORDER BY j.id) AS line_returned,
           array_agg(coalesce(r.category = 'nsf', false) ORDER BY j.id) AS line_nsf,
           array_agg(b.amount_cents ORDER BY j.id) AS line_cents,
           array_agg(j.as_of ORDER BY j.id) AS line_on,
           -- A presentment refused, or declined or not taken by the gateway, never reached
           -- the bank: no entry, so no reinitiation.
           array_agg(b.status NOT IN ('refused', 'declined', 'failed') ORDER BY j.id)
               AS line_sent
    FROM money_movements j
    JOIN charge_attempts b
      ON b.id = j.attempt_id AND b.customer_id = j.customer_id
     AND b.customer_id = ANY ($7::bigint[]) AND b.instrument_key = p.instrument_key
    LEFT JOIN charge_returns r
      ON r.attempt_id = j.attempt_id AND r.customer_id = j.customer_id
     AND r.customer_id = ANY ($7::bigint[])
    WHERE p.kind = 'ach'
      AND j.installment_id = p.installment_id AND j.customer_id = ANY ($7::bigint[])
      AND j.kind IN ('presented', 'returned', 'reversed')
      AND j.attempt_id <> p.attempt_id
) m ON true;

-- mark --
-- Store the verdicts on attempts $1 of customers $4 (one shard's on Citus): a reinitiation
-- ($2) is labelled so, and is re-sent so; a refusal ($3, the reason; NULL: eligible) ends
-- the attempt unsent
UPDATE charge_attempts a
SET reinitiation = v.reinitiation,
    status = CASE WHEN v.reason IS NULL THEN a.status ELSE 'refused' END,
    outcome_code = coalesce(v.reason, a.outcome_code),
    outcome_message = CASE WHEN v.reason IS NULL THEN a.outcome_message
                           ELSE 'refused before presentment: ' || v.reason END,
    -- A pending or in-doubt attempt is unresolved (resolved_at NULL): a refusal resolves it
    -- now. now() outside the CASE (Citus refuses it inside one); now() + NULL is NULL.
    resolved_at = now() + CASE WHEN v.reason IS NULL THEN NULL::interval
                               ELSE interval '0' END,
    claimed_until = CASE WHEN v.reason IS NULL THEN a.claimed_until END,
    updated_at = now()
FROM unnest($1::bigint[], $2::boolean[], $3::text[]) AS v(attempt_id, reinitiation, reason)
WHERE a.id = ANY ($1::bigint[]) AND a.customer_id = ANY ($4::bigint[])
  AND a.id = v.attempt_id AND a.status IN ('pending', 'in_doubt');
