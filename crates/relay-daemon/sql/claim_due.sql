-- Claim due queue rows by priority, then age (crates/relay-daemon/src/claim.rs,
-- CLAIM_DUE, says why it is shaped so and what each parameter is).
WITH RECURSIVE
busy AS (
    SELECT * FROM unnest($3::text[], $4::int4[]) AS b(url, in_flight)
),
-- The URLs with pending rows: a loose index scan of webhook_queue_url_claim_idx, one
-- probe per distinct URL.
urls AS (
    (SELECT q.webhook_url AS url FROM webhook_queue q
     WHERE q.status = 'pending' ORDER BY q.webhook_url LIMIT 1)
    UNION ALL
    SELECT (SELECT q.webhook_url FROM webhook_queue q
            WHERE q.status = 'pending' AND q.webhook_url > u.url
            ORDER BY q.webhook_url LIMIT 1)
    FROM urls u
    WHERE u.url IS NOT NULL
),
-- How many more rows each may take.
room AS (
    SELECT u.url, $5 - coalesce(b.in_flight, 0) AS room
    FROM urls u
    LEFT JOIN busy b ON b.url = u.url
    WHERE u.url IS NOT NULL AND $5 - coalesce(b.in_flight, 0) > 0
),
-- Each URL's own best rows, in claim order, the ordering check applied as the scan
-- hands them over (OFFSET 0 keeps it out of the scan).
due AS (
    SELECT d.id, d.priority
    FROM room r
    CROSS JOIN LATERAL (
        SELECT q.id, q.priority
        FROM (SELECT q.id, q.webhook_url, q.priority, q.entity_type, q.entity_id,
                     q.event_id, q.ordering, q.ordering_scope
              FROM webhook_queue q
              WHERE q.status = 'pending' AND q.webhook_url = r.url
                AND q.next_attempt_at <= now()
                AND CASE WHEN cardinality($2::text[]) = 0 THEN true
                         ELSE q.event_type <> ALL ($2::text[]) END
              ORDER BY q.priority DESC, q.id
              FOR UPDATE SKIP LOCKED
              OFFSET 0) q
        CROSS JOIN LATERAL webhook_order_gate(q.webhook_url, q.entity_type, q.entity_id,
                                              q.event_id, q.ordering_scope, $7::text[]) g
        WHERE q.ordering IS NULL OR g.clear
        LIMIT r.room
    ) d
    ORDER BY d.priority DESC, d.id
    LIMIT $1
),
claimed AS (
    UPDATE webhook_queue q
    SET status = 'sending', lease_expires_at = now() + make_interval(secs => $6),
        claimed_by = $8, updated_at = now()
    WHERE q.id = ANY (ARRAY(SELECT due.id FROM due))
    RETURNING q.*
)
-- The job columns, as in route_and_claim.sql. The set_config is the one-row side of
-- the join, so that it runs even when nothing is claimed.
SELECT j.id, j.webhook_id::text, j.event_type, j.entity_type, j.entity_id, j.webhook_url,
       j.payload::text, j.priority, j.retry_count, j.max_retries,
       to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       (extract(epoch FROM j.lease_expires_at) * 1000000)::int8,
       extract(epoch FROM j.occurred_at)::float8, j.ordering, j.ordering_scope,
       s.async_commit
FROM (SELECT set_config('synchronous_commit', 'off', true) AS async_commit) s
LEFT JOIN claimed j ON true
ORDER BY j.priority DESC, j.id
