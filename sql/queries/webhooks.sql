-- event_seen --
-- Whether gateway $1's event $2 was already applied and remembered
SELECT EXISTS (SELECT 1 FROM webhook_events WHERE gateway = $1 AND event_id = $2);

-- attempt_named --
-- The attempt made under idempotency key $1, with what a gateway's event about it must match:
-- its gateway, the reference the gateway answered, its amount and its method's kind. A key
-- names no customer: a plain read over every shard, the method joined on the customer.
SELECT a.id AS attempt_id, a.gateway, a.gateway_ref, a.amount_cents, pm.kind AS method_kind
FROM charge_attempts a
JOIN payment_methods pm ON pm.customer_id = a.customer_id AND pm.id = a.payment_method_id
WHERE a.idempotency_key = $1;
