-- Route a batch of outbox events of ordered routes when every endpoint has room for all
-- of them, in one statement (crates/relay-daemon/src/claim.rs, ROUTE_ORDERED_WITH_ROOM,
-- says when the relay uses it instead of route_and_claim.sql, and what each parameter
-- is): each row its entity's order lets go now is claimed, every other row is queued
-- pending, and every event picked leaves the outbox.
WITH routes AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[], $5::text[],
                         $6::text[])
        AS r(event_type, url, priority, max_retries, ordering, scope)
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
-- As in route_and_claim.sql: of one ordered entity only its first event in the batch to
-- a URL (or to any lifecycle route) may be claimed, and only if nothing earlier of it is
-- unfinished.
targets AS (
    SELECT p.*, r.url, r.priority, r.max_retries,
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
gated AS MATERIALIZED (
    SELECT t.*,
           t.ordering IS NULL OR (
               t.nth_of_entity = 1 AND (t.scope IS NULL OR t.nth_in_scope = 1)
               AND g.clear) AS claim
    FROM targets t
    CROSS JOIN LATERAL webhook_order_gate(t.url, t.entity_type, t.entity_id, t.id,
                                          t.scope, $1::text[]) g
),
routed AS (
    DELETE FROM webhook_events e WHERE e.id = ANY (ARRAY(SELECT p.id FROM picked p))
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
           CASE WHEN c.claim THEN now() + make_interval(secs => $8) END,
           c.ordering, c.scope, CASE WHEN c.claim THEN $9::int4 END
    FROM gated c
    ORDER BY c.id
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
LEFT JOIN inserted j ON j.status = 'sending'
