-- insert --
-- Write event of type $4 for customer $1, lease $2 (ordering key $3), business date $5, body
-- $6, once per dedupe key $7 ($7 NULL: this transaction's own key, txid-based)
INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body, dedupe_key)
VALUES ($1::bigint, $2::bigint, $3::text, $4::text, $5::date, $6::jsonb,
        coalesce($7::text, $4::text || ':' || $1::text || ':' || txid_current()::text))
ON CONFLICT (customer_id, dedupe_key) DO NOTHING
RETURNING id;

-- money_events --
-- Write the events of the answers of attempts $1 not written yet (sql/0016); how many. On
-- one node (Citus: money_events_routed)
SELECT outbox_money_events_v1($1::bigint[]) AS written;

-- money_events_routed --
-- money_events on Citus: the events of attempts $1 of customers $2 (one shard's; sql/0023)
SELECT outbox_money_events_v2($1::bigint[], $2::bigint[]) AS written;

-- dispatch_lock --
-- One dispatcher at a time, for the rest of this transaction (the key spells "colloutb"; the
-- one-key form never meets the passes' two-key liveness locks)
SELECT pg_advisory_xact_lock(7165064745151984738);

-- dispatch --
-- Fan the oldest $2 undispatched events out to endpoints $1 (one delivery row each) and mark
-- them dispatched; under dispatch_lock, in id order, so that the deliveries of one ordering
-- key exist in the order of their events
WITH picked AS MATERIALIZED (
    SELECT o.customer_id, o.id, o.ordering_key
    FROM outbox_events o
    WHERE NOT o.dispatched
    ORDER BY o.id
    LIMIT $2
), fanned AS (
    INSERT INTO event_deliveries (customer_id, event_id, endpoint, ordering_key)
    SELECT p.customer_id, p.id, e.endpoint, p.ordering_key
    FROM picked p CROSS JOIN unnest($1::text[]) AS e(endpoint)
    ON CONFLICT DO NOTHING
)
UPDATE outbox_events o SET dispatched = true
FROM picked p
WHERE o.customer_id = p.customer_id AND o.id = p.id
RETURNING o.id;

-- claim --
-- Claim for endpoint $1, for $3 seconds, up to $2 deliveries that are due and at the head of
-- their ordering key (no earlier pending delivery of that key to that endpoint), with their
-- events: one call, which locks per shard group (sql/0023)
SELECT customer_id, event_id, attempts, type, lease_id, as_of, body, created_at
FROM outbox_claim_deliveries_v1($1::text, $2::integer, $3::float8);

-- delivered --
-- Deliveries ($1 customers, $2 events) to endpoint $3 were answered 2xx with statuses $4
UPDATE event_deliveries d
SET status = 'delivered', attempts = d.attempts + 1, last_status = r.http_status,
    last_error = NULL, delivered_at = now(), claimed_until = NULL
FROM unnest($1::bigint[], $2::bigint[], $4::integer[]) AS r(customer_id, event_id, http_status)
-- The customers named on the table too: Citus prunes to their shards (CITUS_FINDINGS 1).
WHERE d.customer_id = ANY ($1::bigint[])
  AND d.customer_id = r.customer_id AND d.event_id = r.event_id AND d.endpoint = $3
  AND d.status = 'pending';

-- failed --
-- Delivery (customer $1, event $2) to endpoint $3 failed (HTTP status $4 or NULL, error $5):
-- try again in $6 seconds, or dead-letter it ($7)
UPDATE event_deliveries
SET attempts = attempts + 1, last_status = $4, last_error = $5,
    next_attempt_at = now() + make_interval(secs => $6),
    status = CASE WHEN $7 THEN 'dead' ELSE status END,
    claimed_until = NULL
WHERE customer_id = $1 AND event_id = $2 AND endpoint = $3 AND status = 'pending';

-- release --
-- Give claimed deliveries ($1 customers, $2 events) to endpoint $3 back unsent (the circuit
-- opened, or the deliverer is stopping): due again at once, no attempt counted
UPDATE event_deliveries d
SET claimed_until = NULL
FROM unnest($1::bigint[], $2::bigint[]) AS r(customer_id, event_id)
WHERE d.customer_id = ANY ($1::bigint[])
  AND d.customer_id = r.customer_id AND d.event_id = r.event_id AND d.endpoint = $3
  AND d.status = 'pending';

-- list --
-- Events, newest first, at most $3: of type $2 (NULL: any), whose status is $1 (NULL: any):
-- pending (not yet delivered everywhere), delivered (everywhere), dead (dead-lettered
-- somewhere). Walks the events newest first and stops at $3: it never aggregates the book.
SELECT o.id, o.type, o.customer_id, o.lease_id, o.as_of, o.created_at, d.endpoints,
       d.delivered, d.attempts, d.last_error, st.status
FROM outbox_events o
CROSS JOIN LATERAL (
    SELECT count(*) AS endpoints,
           count(*) FILTER (WHERE x.status = 'delivered') AS delivered,
           count(*) FILTER (WHERE x.status = 'dead') AS dead,
           coalesce(max(x.attempts), 0) AS attempts,
           (array_agg(x.last_error ORDER BY x.attempts DESC)
               FILTER (WHERE x.last_error IS NOT NULL))[1] AS last_error
    FROM event_deliveries x
    WHERE x.customer_id = o.customer_id AND x.event_id = o.id
) d
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN d.dead > 0 THEN 'dead'
        WHEN o.dispatched AND d.endpoints > 0 AND d.delivered = d.endpoints THEN 'delivered'
        ELSE 'pending'
    END AS status
) st
WHERE ($2::text IS NULL OR o.type = $2) AND ($1::text IS NULL OR st.status = $1)
ORDER BY o.id DESC
LIMIT $3;

-- redeliver --
-- Send event $1 again to every endpoint, from its first attempt; returns the deliveries reset
UPDATE event_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), claimed_until = NULL,
    last_error = NULL
WHERE event_id = $1
RETURNING endpoint;

-- redeliver_dead --
-- Send every dead-lettered delivery again, from its first attempt; returns their events
UPDATE event_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), claimed_until = NULL,
    last_error = NULL
WHERE status = 'dead'
RETURNING event_id;

-- backlog --
-- What waits for each endpoint of $1: its pending deliveries plus the events not fanned out
-- yet, and the age in seconds of the oldest of them (0 when none); two plain reads over
-- every shard, each event joined to its deliveries on the customer (co-located)
WITH undispatched AS (
    SELECT count(*) AS n, min(created_at) AS oldest FROM outbox_events WHERE NOT dispatched
), pending AS (
    SELECT d.endpoint, count(*) AS n, min(o.created_at) AS oldest
    FROM event_deliveries d
    JOIN outbox_events o ON o.customer_id = d.customer_id AND o.id = d.event_id
    WHERE d.endpoint = ANY ($1::text[]) AND d.status = 'pending'
    GROUP BY d.endpoint
)
SELECT e.endpoint, u.n + coalesce(p.n, 0) AS pending,
       coalesce(extract(epoch FROM now() - least(u.oldest, p.oldest)), 0)::float8
         AS oldest_age_s
FROM unnest($1::text[]) AS e(endpoint)
CROSS JOIN undispatched u
LEFT JOIN pending p ON p.endpoint = e.endpoint;
