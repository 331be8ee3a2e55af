-- n8n-relay: the webhook tables.
-- Idempotent: psql -v ON_ERROR_STOP=1 -f sql/001_webhook_tables.sql may run any number of times.
--
-- Flow: a trigger (or webhook_emit) writes webhook_events in the business transaction;
-- the relay routes each event into webhook_queue (one row per target), delivers it, and
-- records every attempt in webhook_logs and webhook_retry_history.

-- Tables of these names made by the older backend this replaces (its
-- 005_webhook_tables.sql), or by anything else, are not the relay's: CREATE TABLE IF
-- NOT EXISTS would keep them, and the script fail further down on a column they lack,
-- or worse, succeed, and every write of the relay fail on it later (an outcome never
-- recorded, its delivery sent again). A table is the relay's when it has every column
-- the relay's table of that name has had since its first release (the columns added
-- since, 001 adds below); the refusal names what each lacks.
DO $$
DECLARE
    foreign_tables text;
    how_many       integer;
BEGIN
    SELECT string_agg(format('%s (without %s)', t.name, t.missing), '; ' ORDER BY t.name), count(*)
    INTO foreign_tables, how_many
    FROM (
        SELECT r.name, string_agg(c.col, ', ' ORDER BY c.ord) AS missing
        FROM (VALUES
            ('webhook_events', ARRAY['id', 'event_type', 'entity_type', 'entity_id', 'payload',
                                     'occurred_at']),
            ('webhook_queue', ARRAY['id', 'webhook_id', 'event_id', 'event_type', 'entity_type',
                                    'entity_id', 'webhook_url', 'payload', 'priority', 'status',
                                    'retry_count', 'max_retries', 'next_attempt_at',
                                    'lease_expires_at', 'last_error', 'last_response_status',
                                    'occurred_at', 'sent_at', 'created_at', 'updated_at']),
            ('webhook_logs', ARRAY['id', 'direction', 'event_type', 'webhook_queue_id',
                                   'webhook_url', 'endpoint', 'attempt', 'response_status',
                                   'response_body', 'duration_ms', 'error_message', 'created_at']),
            ('webhook_retry_history', ARRAY['id', 'webhook_queue_id', 'attempt', 'response_status',
                                            'error_message', 'duration_ms', 'next_attempt_at',
                                            'note', 'created_at']),
            ('workflow_runs', ARRAY['id', 'execution_id', 'workflow_id', 'status', 'current_step',
                                    'duration_ms', 'lead_id', 'error_message', 'payload',
                                    'created_at', 'updated_at']),
            ('webhook_callback_receipts', ARRAY['request_hash', 'endpoint', 'response_status',
                                                'response_body', 'created_at'])
        ) AS r (name, columns)
        CROSS JOIN LATERAL unnest(r.columns) WITH ORDINALITY AS c (col, ord)
        -- No schema to create in (a search_path naming none that exists): the CREATE
        -- TABLE below says so in Postgres's words.
        WHERE current_schema() IS NOT NULL
          AND to_regclass(format('%I.%I', current_schema(), r.name)) IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                          WHERE a.attrelid = to_regclass(format('%I.%I', current_schema(), r.name))
                            AND a.attname = c.col AND a.attnum > 0 AND NOT a.attisdropped)
        GROUP BY r.name
    ) AS t;
    IF foreign_tables IS NOT NULL THEN
        RAISE EXCEPTION 'n8n-relay: % in schema % % not n8n-relay''s (the older backend''s?); nothing was changed',
            foreign_tables, current_schema(),
            CASE WHEN how_many > 1 THEN 'are' ELSE 'is' END
            USING HINT = 'Rename the older tables, e.g. ALTER TABLE webhook_queue RENAME TO webhook_queue_old '
                         '(and webhook_logs, webhook_retry_history), then run this again; their rows '
                         'are not carried over: re-send what was still pending with webhook_emit() or '
                         '`n8n-relay emit` (sql/README.md, "Coming from the older backend").';
    END IF;
END;
$$;

-- An upgrade changes the relay's tables (ADD COLUMN, CREATE INDEX lock the table even
-- when there is nothing to add). Behind a long transaction such a lock would wait, and
-- every statement queued behind it with it: so each waits at most lock_timeout (5 s
-- unless the session sets one), then the script stops with "canceling statement due to
-- lock timeout". Run it again. A session that set no lock_timeout has none again at
-- the end (n8n_relay.lock_timeout_ours marks that this script set it, so a run stopped
-- half way and run again still ends with none); one that set its own keeps it.
DO $$
BEGIN
    IF current_setting('lock_timeout') = '0' THEN
        PERFORM set_config('lock_timeout', '5s', false);
        PERFORM set_config('n8n_relay.lock_timeout_ours', 'on', false);
    END IF;
END;
$$;

-- The outbox: events not yet routed, and nothing else. Kept lean on purpose: the
-- business INSERT pays for this row and its primary key, nothing more. The relay
-- deletes each event in the statement that creates its queue rows (which carry
-- everything the event had), so the oldest unrouted events are the bottom of the
-- primary key.
CREATE TABLE IF NOT EXISTS webhook_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type   text        NOT NULL,
    entity_type  text        NOT NULL,
    entity_id    bigint,
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- clock_timestamp(), not now(): the moment the change happened inside a long
    -- transaction, which is what commit-to-delivery latency is measured from.
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Always NULL now: earlier versions kept routed events, marked here.
    routed_at    timestamptz
);

-- The delivery queue: one row per (event, target). Column names follow the older
-- system's monitoring SQL, which keeps working unchanged.
CREATE TABLE IF NOT EXISTS webhook_queue (
    id                   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    -- The stable idempotency key sent as X-Webhook-Id and as the body's "id".
    webhook_id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    event_id             bigint,
    event_type           text        NOT NULL,
    entity_type          text,
    entity_id            bigint,
    webhook_url          text        NOT NULL,
    payload              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority             integer     NOT NULL DEFAULT 0,
    status               text        NOT NULL DEFAULT 'pending',
    retry_count          integer     NOT NULL DEFAULT 0,
    max_retries          integer     NOT NULL DEFAULT 3,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    lease_expires_at     timestamptz,
    last_error           text,
    last_response_status integer,
    occurred_at          timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_queue_status_check
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    CONSTRAINT webhook_queue_retry_count_check CHECK (retry_count >= 0),
    CONSTRAINT webhook_queue_max_retries_check CHECK (max_retries >= 0)
);
-- Half of each page is left free when rows are inserted, for the next version of the
-- rows on it: a row is inserted when it is routed and rewritten when its attempt ends,
-- and a rewrite that fits on the row's own page logs only the bytes that changed
-- (about 140 bytes), where one that must move to another page logs the whole row,
-- payload included, and locks the old one first (about 750 bytes). Filled to the
-- brim, 45 % of a drain's rewrites moved; with half the page free almost none do,
-- and the WAL per delivered event fell from 2,380 to 1,800 bytes (n8n-relay-bench,
-- scenario 3, release drains of 100,000 events). The price is space: delivered rows
-- kept for queue.retention_days take up to twice the pages. Only new pages are
-- affected; VACUUM FULL webhook_queue rewrites older ones.
ALTER TABLE webhook_queue SET (fillfactor = 50);

-- Per-entity ordering (opt-in per route), set when the row is routed: NULL for an
-- unordered route; 'skip' or 'block' (the route's on_failure) for a route with
-- ordering = "entity". An ordered row is claimed only when no earlier event (by
-- event_id, which is commit order for one entity) of the same entity to the same URL
-- is unrouted, pending, sending, or (under 'block') failed.
ALTER TABLE webhook_queue ADD COLUMN IF NOT EXISTS ordering text
    CONSTRAINT webhook_queue_ordering_check CHECK (ordering IN ('skip', 'block'));
-- Ordering across routes (ordering = "lifecycle"): 'lifecycle' on the rows of those
-- routes, NULL otherwise. Such a row also waits for every earlier unfinished
-- 'lifecycle' row of its entity, whatever its URL: one entity's lifecycle reaches n8n
-- in commit order across the workflows it passes through.
ALTER TABLE webhook_queue ADD COLUMN IF NOT EXISTS ordering_scope text
    CONSTRAINT webhook_queue_ordering_scope_check CHECK (ordering_scope = 'lifecycle');
-- The relay that claimed the row last (while it is 'sending', the one holding it): its
-- marker, a key under which
-- every live session of that relay holds a shared advisory lock (class 1849193081,
-- see pg_locks). When no session holds it any more the relay is gone, and any
-- other relay puts the row back within seconds instead of waiting out the lease.
ALTER TABLE webhook_queue ADD COLUMN IF NOT EXISTS claimed_by integer;

-- Enqueue is idempotent: one row per event and target, whoever routes it.
CREATE UNIQUE INDEX IF NOT EXISTS webhook_queue_event_target_key
    ON webhook_queue (event_id, webhook_url);
-- No index on webhook_id: the relay never looks a row up by it, and it is unique by
-- construction (derived from the event and the target, which the key above makes
-- unique). Each index costs every version of every queue row: dropping this one took
-- a 100,000-event drain from 6,300-7,100 to 8,100-8,700 events/s on 2 cores. To find
-- the row of an X-Webhook-Id by hand, WHERE webhook_id = '...' scans the queue; add
-- your own index if you do that often.
DROP INDEX IF EXISTS webhook_queue_webhook_id_key;
-- The dispatcher's claim: each URL's due pending rows by priority, then age. Led by
-- the URL so an endpoint at its cap (with a backlog behind it) is never scanned, and
-- the claim can list the URLs with pending rows one probe each.
CREATE INDEX IF NOT EXISTS webhook_queue_url_claim_idx
    ON webhook_queue (webhook_url, priority DESC, id) WHERE status = 'pending';
-- Replaced by webhook_queue_url_claim_idx (every index costs each queue row change).
DROP INDEX IF EXISTS webhook_queue_claim_idx;
-- When the next pending row is due: the relay sleeps until then when idle, so a
-- retry is on time without polling (a backlog of far-future retries stays cheap).
-- `retry_count >= 0` always holds (the CHECK above); it is in the predicate so that
-- only a query that says it (the relay's idle check) can use this index. Without it,
-- statistics taken while nothing was pending make this the smallest index of pending
-- rows, and the claim walked and sorted every pending row through it (88 ms per claim
-- at 100,000 pending) instead of taking them in order from webhook_queue_url_claim_idx.
CREATE INDEX IF NOT EXISTS webhook_queue_next_due_idx
    ON webhook_queue (next_attempt_at) WHERE status = 'pending' AND retry_count >= 0;
-- Replaced by webhook_queue_next_due_idx.
DROP INDEX IF EXISTS webhook_queue_due_idx;
-- The ordering check: "is an earlier row of this entity to this URL unfinished?" is one
-- probe. Only unfinished ordered rows (and failed ones under 'block') are in it, so it
-- stays as small as the ordered part of the backlog.
CREATE INDEX IF NOT EXISTS webhook_queue_entity_order_idx
    ON webhook_queue (webhook_url, entity_type, entity_id, event_id)
    WHERE ordering IS NOT NULL
      AND (status IN ('pending', 'sending') OR (status = 'failed' AND ordering = 'block'));
-- The lifecycle check: "is an earlier lifecycle row of this entity unfinished?", on any
-- URL, is one probe.
CREATE INDEX IF NOT EXISTS webhook_queue_lifecycle_order_idx
    ON webhook_queue (entity_type, entity_id, event_id)
    WHERE ordering_scope = 'lifecycle'
      AND (status IN ('pending', 'sending') OR (status = 'failed' AND ordering = 'block'));
-- The ordering check of the relay's claims, in one place: may the ordered queue row of
-- event p_event (entity p_etype/p_eid, target p_url, ordering scope p_scope) go now?
-- Not while an earlier event of the entity is still in the outbox (p_events: the event
-- types the relay routes; an unknown type is never routed), nor while an earlier
-- ordered row of the entity to the URL is pending, sending, or failed under 'block',
-- nor, for a 'lifecycle' row, while an earlier 'lifecycle' row of the entity to any URL
-- is. Each queue probe is one lookup in webhook_queue_entity_order_idx or
-- webhook_queue_lifecycle_order_idx, whose predicates it repeats word for word. The
-- outbox probe only looks between the oldest unrouted event (an uncorrelated subquery,
-- found once per statement) and this one, which is normally empty: from the bottom of
-- the outbox's key it would step over every routed (deleted) entry that vacuum has not
-- yet removed, once per row.
-- The relay calls it in FROM (CROSS JOIN LATERAL webhook_order_gate(...)), where the
-- planner inlines it into the calling statement, so EXPLAIN shows the probes and each
-- runs only for the ordered rows that reach it. It must stay LANGUAGE sql, STABLE, a
-- set-returning function, without SECURITY DEFINER or a SET clause: any of those would
-- stop the inlining and turn the check into a function call per row.
CREATE OR REPLACE FUNCTION webhook_order_gate(p_url text, p_etype text, p_eid bigint,
                                              p_event bigint, p_scope text,
                                              p_events text[])
RETURNS TABLE (clear boolean)
LANGUAGE sql
STABLE
AS $$
    SELECT NOT EXISTS (
               SELECT 1 FROM webhook_queue o
               WHERE o.webhook_url = p_url AND o.entity_type = p_etype
                 AND o.entity_id = p_eid AND o.event_id < p_event
                 AND o.ordering IS NOT NULL
                 AND (o.status IN ('pending', 'sending')
                      OR (o.status = 'failed' AND o.ordering = 'block')))
       AND (p_scope IS NULL OR NOT EXISTS (
               SELECT 1 FROM webhook_queue o
               WHERE o.entity_type = p_etype AND o.entity_id = p_eid
                 AND o.event_id < p_event
                 AND o.ordering_scope = 'lifecycle'
                 AND (o.status IN ('pending', 'sending')
                      OR (o.status = 'failed' AND o.ordering = 'block'))))
       AND NOT EXISTS (
               SELECT 1 FROM webhook_events e
               WHERE e.id < p_event
                 AND e.id >= (SELECT min(u.id) FROM webhook_events u
                              WHERE u.event_type = ANY (p_events))
                 AND e.entity_type = p_etype AND e.entity_id = p_eid
                 AND e.event_type = ANY (p_events))
$$;

-- Failed rows: the guide's "Failed Webhooks" and "Identify problematic webhooks"
-- queries, the console's failed page and `queue retry --failed` read only these,
-- where without it each read the whole queue, delivered history included (0.9 s at
-- 1.2 million rows). Only a failed row has an entry, so a delivery pays for it no more
-- than a test of the predicate: its row versions are never failed, and `status` is
-- already in other predicates, so no update that was HOT stops being HOT.
CREATE INDEX IF NOT EXISTS webhook_queue_failed_idx
    ON webhook_queue (id) WHERE status = 'failed';
-- The sweeper: leases that expired (a crashed or killed relay).
CREATE INDEX IF NOT EXISTS webhook_queue_lease_idx
    ON webhook_queue (lease_expires_at) WHERE status = 'sending';
-- Retention cleanup (rows older than queue.retention_days). A BRIN index: a few
-- bytes per block range instead of an entry for every version of every row, because
-- each status change of a row writes a new version into every btree index.
CREATE INDEX IF NOT EXISTS webhook_queue_created_brin
    ON webhook_queue USING brin (created_at);
-- Replaced by webhook_queue_created_brin.
DROP INDEX IF EXISTS webhook_queue_status_created_idx;

CREATE TABLE IF NOT EXISTS webhook_logs (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    direction        text        NOT NULL,
    event_type       text,
    webhook_queue_id bigint,
    webhook_url      text,
    endpoint         text,
    attempt          integer,
    response_status  integer,
    response_body    text,
    duration_ms      integer,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_logs_direction_check CHECK (direction IN ('outgoing', 'incoming'))
);
-- What an outgoing attempt meant for its row: sent, retry (pending again) or failed.
-- The console's deliveries-per-minute chart counts these.
ALTER TABLE webhook_logs ADD COLUMN IF NOT EXISTS outcome text;
-- Retention: the log is append-only, so created_at follows the table's physical
-- order and a BRIN index (a few bytes per block range) serves the cleanup.
CREATE INDEX IF NOT EXISTS webhook_logs_created_brin ON webhook_logs USING brin (created_at);
DROP INDEX IF EXISTS webhook_logs_created_idx;
CREATE INDEX IF NOT EXISTS webhook_logs_queue_idx ON webhook_logs (webhook_queue_id);

CREATE TABLE IF NOT EXISTS webhook_retry_history (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_queue_id bigint      NOT NULL REFERENCES webhook_queue (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    response_status  integer,
    error_message    text,
    duration_ms      integer,
    next_attempt_at  timestamptz,
    note             text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_retry_history_queue_idx
    ON webhook_retry_history (webhook_queue_id);

-- Callback state: n8n workflow runs, keyed by n8n's execution id.
CREATE TABLE IF NOT EXISTS workflow_runs (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    execution_id  text        NOT NULL UNIQUE,
    workflow_id   text,
    status        text,
    current_step  text,
    duration_ms   bigint,
    lead_id       bigint,
    error_message text,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Replay protection for callbacks: the first response to a signed request, kept for
-- the signature window so an identical retry gets the same answer and changes nothing.
CREATE TABLE IF NOT EXISTS webhook_callback_receipts (
    request_hash     text        PRIMARY KEY,
    endpoint         text        NOT NULL,
    response_status  integer     NOT NULL,
    response_body    text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_callback_receipts_created_idx
    ON webhook_callback_receipts (created_at);

-- Run-time pauses (`n8n-relay queue pause`): every relay on the database reads this
-- table (at once on a 'control' notification, and at least every second) and holds the
-- matching events in the queue, pending, until the pause is lifted. scope 'all'
-- (target ''), 'event' (target an event type) or 'url' (target a route URL).
CREATE TABLE IF NOT EXISTS webhook_pauses (
    scope      text        NOT NULL
        CONSTRAINT webhook_pauses_scope_check CHECK (scope IN ('all', 'event', 'url')),
    target     text        NOT NULL DEFAULT '',
    reason     text,
    paused_by  text        NOT NULL,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, target)
);

-- Rate limits (routes.EVENT.max_per_second, n8n.max_per_second): one token bucket per
-- limited URL (or 'n8n' for all of them) shared by every relay. A relay takes a few
-- tokens at a time in one statement, so the limit holds for the database as a whole.
CREATE TABLE IF NOT EXISTS webhook_rate_budget (
    key         text        PRIMARY KEY,
    tokens      float8      NOT NULL,
    last_grant  float8      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Endpoint health (queue.unhealthy_after): written only when a URL changes state, so
-- that the change is reported once for the database, not once per relay.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    url                  text        PRIMARY KEY,
    healthy              boolean     NOT NULL,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    last_error           text,
    changed_at           timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF current_setting('n8n_relay.lock_timeout_ours', true) = 'on' THEN
        PERFORM set_config('lock_timeout', '0', false);
        PERFORM set_config('n8n_relay.lock_timeout_ours', '', false);
    END IF;
END;
$$;
