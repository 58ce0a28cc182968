-- event_seen --
-- Whether gateway $1's event $2 was already applied and remembered
SELECT EXISTS (SELECT 1 FROM webhook_events WHERE gateway = $1 AND event_id = $2);
