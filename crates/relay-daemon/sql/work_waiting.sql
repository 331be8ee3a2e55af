-- The idle check, in a newer snapshot than the arming (crates/relay-daemon/src/wakeup.rs,
-- WORK_WAITING, says what each parameter is): are unrouted events of a known type
-- waiting, and in how many seconds is the earliest claimable pending row due?
SELECT
    -- Not EXISTS: inside EXISTS the planner drops ORDER BY/LIMIT and, with stale
    -- statistics after a burst, scans the whole outbox (and its dead rows); this form
    -- always reads the bottom of its primary key.
    (SELECT id FROM webhook_events WHERE event_type = ANY ($1::text[])
     ORDER BY id LIMIT 1) IS NOT NULL,
    -- A row parked at 'infinity' (next_attempt_at = 'infinity', by hand) is never due:
    -- NULL, as if none were waiting. Subtracting it would fail the whole check.
    (SELECT CASE WHEN isfinite(q.next_attempt_at)
                 THEN extract(epoch FROM q.next_attempt_at - now())::float8
                 WHEN q.next_attempt_at < now() THEN 0::float8 END
     FROM (SELECT q.next_attempt_at, q.webhook_url, q.entity_type, q.entity_id, q.event_id,
                  q.ordering, q.ordering_scope
           FROM webhook_queue q
           WHERE $2 AND q.status = 'pending' AND q.retry_count >= 0
             AND CASE WHEN cardinality($3::text[]) = 0 THEN true
                      ELSE q.event_type <> ALL ($3::text[]) END
             AND CASE WHEN cardinality($4::text[]) = 0 THEN true
                      ELSE q.webhook_url <> ALL ($4::text[]) END
           ORDER BY q.next_attempt_at
           OFFSET 0) q
     CROSS JOIN LATERAL webhook_order_gate(q.webhook_url, q.entity_type, q.entity_id,
                                           q.event_id, q.ordering_scope, $1::text[]) g
     WHERE q.ordering IS NULL OR g.clear
     LIMIT 1),
    -- Whether the wake-up is armed now (a settle that trusts its last arming checks).
    (SELECT last_value = 1 FROM webhook_relay_wakeup)
