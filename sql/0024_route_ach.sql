-- Settlement, returns and the methods' outbox trigger on Citus (issue 12, part 2: queries
-- that route). Plain PostgreSQL gets the same answers from the same statements.
--
-- 1. A row trigger on a distributed table runs on the shard, on a worker, where Citus
--    refuses any distributed query (nested execution: "Executing a distributed query in a
--    function call that may be pushed to a remote node"), even one that prunes to a shard
--    of that same worker. So a trigger that reads or writes other tables of the same
--    customer names their co-located shards itself (shard_beside_v1): they are on the same
--    node, in the same transaction, and see its rows. On plain PostgreSQL the trigger's
--    table is the table itself and the helper gives the table named.
-- 2. outbox_method_disabled_v1 (payment_methods' deferred trigger) reads the account's
--    latest money date and writes its event through those shards, every read filtered by
--    the customer (one shard); a dynamic statement, so its plan is made for these values.
-- 3. settle_attempts_v1: the settled debits of one shard group's customers, their manual
--    payments and their money (money_follow_v1) in one top-level call: the statement that
--    did it in one CTE called a function that touches distributed tables inside a
--    distributed statement, which Citus cannot run. One call per shard group; one on plain
--    PostgreSQL, as before.
-- 4. debit_history_v1 (LANGUAGE sql over distributed tables, called per row inside a
--    distributed read: both refused by Citus) is replaced by lateral reads in the two
--    queries that used it (sql/queries/settlement.sql), joined on the customer.

-- The shard of p_table beside the shard p_shard_table (a trigger's TG_TABLE_NAME) on Citus:
-- the co-located shard of the same hash range, on the same node. On plain PostgreSQL (or
-- when p_shard_table is no shard) p_table itself.
CREATE FUNCTION shard_beside_v1(p_shard_table text, p_table regclass) RETURNS regclass
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_shard bigint;
    v_beside regclass;
BEGIN
    IF p_shard_table !~ '_[0-9]+$'
       OR NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN p_table;
    END IF;
    v_shard := substring(p_shard_table FROM '_([0-9]+)$')::bigint;
    -- pg_dist_shard is Citus's catalog: named only here, where the extension is.
    EXECUTE $q$
        SELECT format('%I.%I', n.nspname, shard_name(s2.logicalrelid, s2.shardid))::regclass
        FROM pg_dist_shard s1
        JOIN pg_dist_shard s2 ON s2.shardminvalue = s1.shardminvalue
                             AND s2.logicalrelid = $2
        JOIN pg_class c ON c.oid = s2.logicalrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE s1.shardid = $1
    $q$ INTO v_beside USING v_shard, p_table;
    RETURN coalesce(v_beside, p_table);
END;
$$;

-- A method disabled, by whatever statement: its event, dated by the latest money movement
-- of its account (the decline's or the return's, written in the same transaction), read
-- through the journal's partial indexes by kind (sql/0011). On Citus the trigger runs on
-- the method's shard and reaches the customer's attempts, journal and outbox through their
-- co-located shards (see 1. above).
CREATE OR REPLACE FUNCTION outbox_method_disabled_v1() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_as_of date;
    v_attempts regclass := shard_beside_v1(TG_TABLE_NAME, 'charge_attempts');
    v_movements regclass := shard_beside_v1(TG_TABLE_NAME, 'money_movements');
    v_outbox regclass := shard_beside_v1(TG_TABLE_NAME, 'outbox_events');
BEGIN
    EXECUTE format($q$
        SELECT max(m.as_of)
        FROM %1$s a
        CROSS JOIN LATERAL (
            SELECT p.as_of FROM %2$s p
            WHERE p.attempt_id = a.id AND p.customer_id = a.customer_id AND p.kind = 'presented'
            UNION ALL
            SELECT c.as_of FROM %2$s c
            WHERE c.attempt_id = a.id AND c.customer_id = a.customer_id AND c.kind = 'accepted'
            UNION ALL
            SELECT e.as_of FROM %2$s e
            WHERE e.attempt_id = a.id AND e.customer_id = a.customer_id
              AND e.kind IN ('released', 'settled', 'returned')
            UNION ALL
            SELECT r.as_of FROM %2$s r
            WHERE r.attempt_id = a.id AND r.customer_id = a.customer_id AND r.kind = 'reversed'
        ) m
        WHERE a.customer_id = $1 AND a.instrument_key = $2
    $q$, v_attempts, v_movements) INTO v_as_of USING NEW.customer_id, NEW.instrument_key;
    -- The id from the table's own sequence (a shard has no column default; on a Citus
    -- worker the sequence draws from that node's range).
    EXECUTE format($q$
        INSERT INTO %1$s (id, customer_id, ordering_key, type, as_of, body, dedupe_key)
        VALUES (nextval($5::regclass), $1, 'customer:' || $1, 'method.disabled', $2, $3, $4)
        ON CONFLICT (customer_id, dedupe_key) DO NOTHING
    $q$, v_outbox)
    USING NEW.customer_id,
          coalesce(v_as_of, current_date),
          jsonb_strip_nulls(jsonb_build_object(
              'method', jsonb_build_object('id', NEW.id, 'kind', NEW.kind,
                                           'brand', NEW.brand, 'bank_name', NEW.bank_name,
                                           'last4', NEW.last4),
              'reason', NEW.disabled_reason,
              'was_primary', NEW.is_primary)),
          'method.disabled:' || NEW.id || ':' || txid_current(),
          pg_get_serial_sequence('outbox_events', 'id');
    RETURN NULL;
END;
$$;

-- Debits p_attempts of customers p_customers (one shard's, on Citus) settled: each attempt
-- still processing succeeds, and its manual payment with it, and its money is settled in the
-- journal (money_follow_v1; p_as_of business date, p_source source). Returns the attempts
-- that changed. Every statement names the customers (one shard); the time is read once, so
-- that no statement carries now() (sql/0022's notes, CITUS_FINDINGS 3).
CREATE FUNCTION settle_attempts_v1(
    p_customers bigint[], p_attempts bigint[], p_as_of date, p_source text
) RETURNS TABLE (attempt_id bigint, amount_cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_ids bigint[];
    v_amounts bigint[];
    v_payments bigint[];
BEGIN
    WITH settled AS (
        UPDATE charge_attempts a
        SET status = 'succeeded', resolved_at = v_now, updated_at = v_now
        WHERE a.customer_id = ANY (p_customers) AND a.id = ANY (p_attempts)
          AND a.status = 'processing'
        RETURNING a.id, a.payment_id, a.amount_cents
    )
    SELECT array_agg(s.id ORDER BY s.id), array_agg(s.amount_cents ORDER BY s.id),
           array_agg(s.payment_id) FILTER (WHERE s.payment_id IS NOT NULL)
    INTO v_ids, v_amounts, v_payments
    FROM settled s;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    IF v_payments IS NOT NULL THEN
        UPDATE payments p SET status = 'succeeded', updated_at = v_now
        WHERE p.customer_id = ANY (p_customers) AND p.id = ANY (v_payments);
    END IF;
    PERFORM money_follow_v2(v_ids, array_fill('settled'::text, ARRAY[cardinality(v_ids)]),
                            array_fill(false, ARRAY[cardinality(v_ids)]),
                            array_fill(NULL::date, ARRAY[cardinality(v_ids)]),
                            array_fill(NULL::text, ARRAY[cardinality(v_ids)]),
                            p_as_of, p_source, p_customers);
    RETURN QUERY SELECT u.id, u.cents FROM unnest(v_ids, v_amounts) AS u(id, cents);
END;
$$;

DROP FUNCTION debit_history_v1(bigint);

-- Attempt p_attempt of customer p_customer was returned with code p_code (category
-- p_category): record the return once (a replay changes nothing), mark the attempt returned
-- (and its manual payment), and disable the method when p_disable; p_source = where the
-- return came from, p_as_of = business date. Returns the attempt and whether its money had
-- settled, when this call applied it (no row otherwise). The statement it replaces locked the
-- attempt in a CTE and inserted the return from it, which Citus runs as an INSERT into every
-- shard; here each statement names the customer: one shard, the lock taken there.
CREATE FUNCTION record_return_v1(
    p_customer bigint, p_attempt bigint, p_code text, p_category text, p_source text,
    p_disable boolean, p_as_of date
) RETURNS TABLE (attempt_id bigint, reversed_paid boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_status text;
    v_payment bigint;
    v_method bigint;
    v_amount bigint;
    v_reversed boolean;
BEGIN
    SELECT a.status, a.payment_id, a.payment_method_id, a.amount_cents
    INTO v_status, v_payment, v_method, v_amount
    FROM charge_attempts a
    WHERE a.customer_id = p_customer AND a.id = p_attempt
      AND a.status IN ('processing', 'succeeded')
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO charge_returns (attempt_id, customer_id, return_code, category, amount_cents,
                                reversed_paid, source, as_of)
    VALUES (p_attempt, p_customer, p_code, p_category, v_amount, v_status = 'succeeded',
            p_source, p_as_of)
    ON CONFLICT (attempt_id, customer_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_reversed := v_status = 'succeeded';
    UPDATE charge_attempts a
    SET status = 'returned', outcome_code = p_code, updated_at = v_now, resolved_at = v_now
    WHERE a.customer_id = p_customer AND a.id = p_attempt;
    IF v_payment IS NOT NULL THEN
        UPDATE payments p SET status = 'returned', updated_at = v_now
        WHERE p.customer_id = p_customer AND p.id = v_payment;
    END IF;
    IF p_disable THEN
        UPDATE payment_methods pm
        SET status = 'disabled', disabled_reason = 'ach_return_' || p_code, updated_at = v_now
        WHERE pm.customer_id = p_customer AND pm.id = v_method AND pm.status = 'active';
    END IF;
    RETURN QUERY SELECT p_attempt, v_reversed;
END;
$$;

-- NACHA files (sql/0004, sql/0007): an export claims the unfiled entries of a file by key,
-- and releases those it can no longer hold. The statements they replace updated entries by
-- key alone (row locks on every shard) and set the file's count from a CTE. Here each call
-- names one shard group's customers and adds to (or takes from) the file's count and total,
-- so a file filled by several groups adds up; one call on plain PostgreSQL, as before.
CREATE FUNCTION ach_claim_entries_v1(
    p_file text, p_customers bigint[], p_keys text[], p_effective date
) RETURNS TABLE (entry_count integer, total_cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_count integer;
    v_cents bigint;
BEGIN
    WITH claimed AS (
        UPDATE ach_entries e
        SET file_name = p_file, effective_on = p_effective,
            requested_on = coalesce(e.requested_on, e.effective_on)
        WHERE e.customer_id = ANY (p_customers) AND e.idempotency_key = ANY (p_keys)
          AND e.file_name IS NULL
        RETURNING e.amount_cents
    )
    SELECT count(*), coalesce(sum(c.amount_cents), 0) INTO v_count, v_cents FROM claimed c;
    RETURN QUERY
    UPDATE ach_files f
    SET entry_count = f.entry_count + v_count, total_cents = f.total_cents + v_cents
    WHERE f.file_name = p_file
    RETURNING f.entry_count, f.total_cents;
END;
$$;

CREATE FUNCTION ach_release_entries_v1(p_file text, p_customers bigint[], p_keys text[])
RETURNS TABLE (entry_count integer, total_cents bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_count integer;
    v_cents bigint;
BEGIN
    WITH released AS (
        UPDATE ach_entries e
        SET file_name = NULL, effective_on = coalesce(e.requested_on, e.effective_on)
        WHERE e.customer_id = ANY (p_customers) AND e.file_name = p_file
          AND e.idempotency_key = ANY (p_keys)
        RETURNING e.amount_cents
    )
    SELECT count(*), coalesce(sum(r.amount_cents), 0) INTO v_count, v_cents FROM released r;
    RETURN QUERY
    UPDATE ach_files f
    SET entry_count = f.entry_count - v_count, total_cents = f.total_cents - v_cents
    WHERE f.file_name = p_file AND f.written_at IS NULL
    RETURNING f.entry_count, f.total_cents;
END;
$$;

-- The outbox's deliverers (sql/0011): claim, for endpoint p_endpoint and p_claim_s seconds,
-- up to p_limit due deliveries that are at the head of their ordering key (no earlier
-- pending delivery of that key to that endpoint), with their events. The statement it
-- replaces locked with FOR UPDATE SKIP LOCKED over every shard, which Citus refuses. Here the
-- heads are read without locks (a plain read over every shard; an ordering key is one
-- customer's, so DISTINCT ON leads with the customer and each shard answers for its own),
-- then each shard group's candidates are locked and claimed in one statement that names its
-- customers, the head and due checks made again on the locked rows. One call from the
-- engine on both; on plain PostgreSQL one group.
CREATE FUNCTION outbox_claim_deliveries_v1(
    p_endpoint text, p_limit integer, p_claim_s double precision
) RETURNS TABLE (customer_id bigint, event_id bigint, attempts integer, type text,
                 lease_id bigint, as_of date, body jsonb, created_at timestamptz)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_customers bigint[];
    v_events bigint[];
    v_group record;
BEGIN
    SELECT array_agg(c.customer_id ORDER BY c.event_id), array_agg(c.event_id ORDER BY c.event_id)
    INTO v_customers, v_events
    FROM (
        SELECT h.customer_id, h.event_id
        FROM (
            SELECT DISTINCT ON (d.customer_id, d.ordering_key) d.customer_id, d.event_id,
                   d.next_attempt_at, d.claimed_until
            FROM event_deliveries d
            WHERE d.endpoint = p_endpoint AND d.status = 'pending'
            ORDER BY d.customer_id, d.ordering_key, d.event_id
        ) h
        WHERE h.next_attempt_at <= v_now AND (h.claimed_until IS NULL OR h.claimed_until < v_now)
        ORDER BY h.event_id
        LIMIT p_limit
    ) c;
    IF v_events IS NULL THEN
        RETURN;
    END IF;
    -- The shard groups (collector/db/routing.py's, in SQL): Citus's shard function is named
    -- only where the extension is.
    FOR v_group IN EXECUTE CASE
        WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN $q$
            SELECT array_agg(u.c) AS customers, array_agg(u.e) AS events
            FROM unnest($1::bigint[], $2::bigint[]) AS u(c, e)
            GROUP BY get_shard_id_for_distribution_column('customers', u.c)
        $q$
        ELSE 'SELECT $1::bigint[] AS customers, $2::bigint[] AS events'
    END USING v_customers, v_events
    LOOP
        RETURN QUERY
        WITH due AS (
            SELECT d.customer_id, d.event_id
            FROM event_deliveries d
            WHERE d.customer_id = ANY (v_group.customers) AND d.event_id = ANY (v_group.events)
              AND d.endpoint = p_endpoint AND d.status = 'pending'
              AND d.next_attempt_at <= v_now
              AND (d.claimed_until IS NULL OR d.claimed_until < v_now)
              AND NOT EXISTS (
                  SELECT 1 FROM event_deliveries e
                  WHERE e.customer_id = d.customer_id
                    AND e.customer_id = ANY (v_group.customers)
                    AND e.endpoint = p_endpoint AND e.ordering_key = d.ordering_key
                    AND e.status = 'pending' AND e.event_id < d.event_id)
            ORDER BY d.event_id
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE event_deliveries d
        SET claimed_until = v_now + make_interval(secs => p_claim_s)
        FROM due, outbox_events o
        WHERE d.customer_id = ANY (v_group.customers)
          AND d.customer_id = due.customer_id AND d.event_id = due.event_id
          AND d.endpoint = p_endpoint
          AND o.customer_id = ANY (v_group.customers)
          AND o.customer_id = due.customer_id AND o.id = due.event_id
        RETURNING d.customer_id, d.event_id, d.attempts, o.type, o.lease_id, o.as_of, o.body,
                  o.created_at;
    END LOOP;
END;
$$;
