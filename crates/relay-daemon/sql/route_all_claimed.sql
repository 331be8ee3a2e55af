-- Route a batch of outbox events every one of whose queue rows is claimed at once, in
-- one statement (crates/relay-daemon/src/claim.rs, ROUTE_ALL_CLAIMED, says when the
-- relay uses it instead of route_and_claim.sql, and what each parameter is).
WITH routes AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[])
        AS r(event_type, url, priority, max_retries)
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
    LIMIT $5
    FOR UPDATE SKIP LOCKED
),
routed AS (
    DELETE FROM webhook_events e WHERE e.id = ANY (ARRAY(SELECT p.id FROM picked p))
),
inserted AS (
    INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type, entity_id,
                               webhook_url, payload, priority, status, max_retries,
                               occurred_at, lease_expires_at, claimed_by)
    SELECT md5(p.id::text || '/' || (extract(epoch FROM p.occurred_at) * 1000000)::int8::text
               || '/' || r.url)::uuid,
           p.id, p.event_type, p.entity_type, p.entity_id, r.url, p.payload, r.priority,
           'sending', r.max_retries, p.occurred_at, now() + make_interval(secs => $6),
           $7::int4
    FROM picked p
    JOIN routes r USING (event_type)
    ORDER BY p.id
    -- The relay runs this statement first without the next line (claim::first_try).
    ON CONFLICT (event_id, webhook_url) DO NOTHING
    RETURNING *
)
-- The columns of route_and_claim.sql, in its order.
SELECT n.routed, n.enqueued,
       -- The job columns, as in claim_due.sql.
       j.id, j.webhook_id::text, j.event_type, j.entity_type, j.entity_id, j.webhook_url,
       j.payload::text, j.priority, j.retry_count, j.max_retries,
       to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       (extract(epoch FROM j.lease_expires_at) * 1000000)::int8,
       extract(epoch FROM j.occurred_at)::float8, j.ordering, j.ordering_scope,
       n.async_commit, n.picked, n.left_for
FROM (SELECT count(*) AS routed,
             (SELECT count(*) FROM inserted) AS enqueued,
             count(*) AS picked,
             ARRAY[]::text[] AS left_for,
             set_config('synchronous_commit', 'off', true) AS async_commit
      FROM picked) n
LEFT JOIN inserted j ON true
