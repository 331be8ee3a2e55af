-- Route a batch of outbox events and claim the first of the resulting queue rows, in
-- one statement (crates/relay-daemon/src/claim.rs, ROUTE_AND_CLAIM, says why and what
-- each parameter is).
WITH routes AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::bool[], $12::text[],
                         $13::text[], $10::int4[])
        AS r(event_type, url, priority, claimable, ordering, scope, max_retries)
),
busy AS (
    SELECT * FROM unnest($5::text[], $6::int4[]) AS b(url, in_flight)
),
picked AS (
    -- A time of 'infinity' (only an INSERT that sets it by hand) would fail this statement,
    -- and with it every route behind that event: such an event is timed at its route.
    SELECT e.id, e.event_type, e.entity_type, e.entity_id, e.payload,
           CASE WHEN isfinite(e.occurred_at) THEN e.occurred_at ELSE now() END AS occurred_at
    FROM webhook_events e
    WHERE e.event_type = ANY ($1::text[])
      -- The relay's first try leaves out the next two lines and the conflict clause
      -- (claim::first_try): an event on an id the queue holds for another event waits.
      AND NOT EXISTS (SELECT 1 FROM webhook_queue q
                      WHERE q.event_id = e.id AND q.occurred_at <> e.occurred_at)
    ORDER BY e.id
    LIMIT $7
    FOR UPDATE SKIP LOCKED
),
targets AS (
    SELECT p.*, r.url, r.priority, r.claimable, r.max_retries,
           CASE WHEN p.entity_id IS NOT NULL THEN r.ordering END AS ordering,
           CASE WHEN p.entity_id IS NOT NULL AND r.ordering IS NOT NULL
                THEN r.scope END AS scope,
           row_number() OVER (
               PARTITION BY r.url, p.entity_type, p.entity_id,
                            p.entity_id IS NULL OR r.ordering IS NULL
               ORDER BY p.id
           ) AS nth_of_entity,
           row_number() OVER (
               PARTITION BY p.entity_type, p.entity_id,
                            p.entity_id IS NULL OR r.ordering IS NULL OR r.scope IS NULL
               ORDER BY p.id
           ) AS nth_in_scope
    FROM picked p
    JOIN routes r USING (event_type)
),
-- Of one ordered entity only its first event in the batch to a URL (or to any
-- lifecycle route) may be claimed, and only if nothing earlier of it is unfinished.
-- Materialized: inlined into the window below, the ordering check ran twice per row.
gated AS MATERIALIZED (
    SELECT t.*,
           t.claimable AND (t.ordering IS NULL OR (
               t.nth_of_entity = 1 AND (t.scope IS NULL OR t.nth_in_scope = 1)
               AND g.clear)) AS eligible
    FROM targets t
    CROSS JOIN LATERAL webhook_order_gate(t.url, t.entity_type, t.entity_id, t.id,
                                          t.scope, $1::text[]) g
),
capped AS (
    SELECT g.*, g.eligible AND row_number() OVER (
               PARTITION BY g.url, g.eligible ORDER BY g.priority DESC, g.id
           ) <= $8 - coalesce(b.in_flight, 0) AS within_cap,
           $8 - coalesce(b.in_flight, 0) > 0 AS has_room
    FROM gated g
    LEFT JOIN busy b ON b.url = g.url
),
chosen AS (
    SELECT t.*, t.within_cap AND row_number() OVER (
               PARTITION BY t.within_cap ORDER BY t.priority DESC, t.id
           ) <= $9 AS claim
    FROM capped t
),
-- An event stays in the outbox when every row of it could go now but for the room
-- left at its endpoint in this batch.
moved AS (
    SELECT c.id
    FROM chosen c
    GROUP BY c.id
    HAVING NOT bool_and(c.eligible AND NOT c.claim AND c.has_room)
),
routed AS (
    DELETE FROM webhook_events e WHERE e.id = ANY (ARRAY(SELECT m.id FROM moved m))
),
inserted AS (
    INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type, entity_id,
                               webhook_url, payload, priority, status, max_retries,
                               occurred_at, lease_expires_at, ordering, ordering_scope,
                               claimed_by)
    SELECT md5(c.id::text || '/' || (extract(epoch FROM c.occurred_at) * 1000000)::int8::text
               || '/' || c.url)::uuid,
           c.id, c.event_type, c.entity_type, c.entity_id, c.url, c.payload, c.priority,
           CASE WHEN c.claim THEN 'sending' ELSE 'pending' END,
           c.max_retries, c.occurred_at,
           CASE WHEN c.claim THEN now() + make_interval(secs => $11) END,
           c.ordering, c.scope, CASE WHEN c.claim THEN $14::int4 END
    FROM chosen c
    WHERE c.id IN (SELECT m.id FROM moved m)
    ORDER BY c.id
    -- The relay runs this statement first without the next line (claim::first_try).
    ON CONFLICT (event_id, webhook_url) DO NOTHING
    RETURNING *
)
SELECT n.routed, n.enqueued,
       -- The job columns, as in claim_due.sql.
       j.id, j.webhook_id::text, j.event_type, j.entity_type, j.entity_id, j.webhook_url,
       j.payload::text, j.priority, j.retry_count, j.max_retries,
       to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       (extract(epoch FROM j.lease_expires_at) * 1000000)::int8,
       extract(epoch FROM j.occurred_at)::float8, j.ordering, j.ordering_scope,
       n.async_commit, n.picked, n.left_for
FROM (SELECT (SELECT count(*) FROM moved) AS routed,
             ARRAY(SELECT DISTINCT c.url FROM chosen c
                   WHERE c.id NOT IN (SELECT m.id FROM moved m)) AS left_for,
             (SELECT count(*) FROM inserted) AS enqueued,
             count(*) AS picked,
             set_config('synchronous_commit', 'off', true) AS async_commit
      FROM picked) n
LEFT JOIN inserted j ON j.status = 'sending'
