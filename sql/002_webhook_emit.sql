-- n8n-relay: webhook_emit(), the one way an event enters the outbox, and the wake-up.
-- Idempotent: safe to run again (CREATE OR REPLACE).
--
-- The wake-up. NOTIFY is only a hint, and an expensive one: every notifying commit
-- takes a cluster-wide lock, which serialises busy writers. So a writer notifies only
-- when the relay has armed the wake-up (it is idle and waiting); the first writer to
-- see it armed disarms it and notifies, everyone after that writes the outbox row
-- alone. While it is busy the relay polls the outbox and leaves the wake-up disarmed.
--
-- The flag is a sequence because sequences are not transactional: a writer sees the
-- relay's arming at once, whatever its isolation level or snapshot. 1 = armed.
-- Writers read it with `SELECT last_value FROM webhook_relay_wakeup`, which reads the
-- sequence's one page under a shared lock. pg_sequence_last_value() was tried: 13,000
-- fewer instructions of the 392,000 a business INSERT with the leads trigger runs
-- (valgrind), but it locks that page exclusively, and every writer reads it; with 16
-- writers and the relay frozen the rate kept 0.65, 0.66, 0.73 of the bare INSERT,
-- against 0.68, 0.65, 0.71 with the SELECT (n8n-relay-bench, interleaved).
-- How the relay closes the hand-over gap (a writer that read 0 just before the relay
-- armed) is described in crates/relay-daemon/src/wakeup.rs.
--
-- Two-phase commit: Postgres refuses PREPARE TRANSACTION in a transaction that has
-- sent a NOTIFY, so a writer that found the flag armed could not prepare. A session
-- (or role, or connection) that prepares its transactions sets n8n_relay.notify to
-- off (or false, no, 0): its writes neither notify nor disarm, and the relay finds
-- their events on its next look (the next writer's notification, or the sweep every
-- queue.processing_interval_seconds). The setting is read only when the flag is
-- armed, so other writes pay nothing for it.

-- Upgrading from releases that kept routed events in the outbox: they are already in
-- webhook_queue, and their index on unrouted events cost every business INSERT a
-- second index entry. Here rather than in 001: dropping the index locks the outbox,
-- and in a script of its own (one transaction under `migrate`) that lock is held only
-- as long as this script, which waits on no lock of the relay's other tables (a route
-- locks the outbox first, then the queue: 001 locking them the other way round could
-- deadlock with a relay still routing). At most lock_timeout (5 s unless the session
-- sets one) behind a business transaction, then it stops; run it again.
DO $$
BEGIN
    IF current_setting('lock_timeout') = '0' THEN
        PERFORM set_config('lock_timeout', '5s', true);
    END IF;
    DELETE FROM webhook_events WHERE routed_at IS NOT NULL;
    DROP INDEX IF EXISTS webhook_events_unrouted_idx;
END;
$$;

CREATE SEQUENCE IF NOT EXISTS webhook_relay_wakeup
    AS integer MINVALUE 0 MAXVALUE 1 START WITH 0 NO CYCLE;

-- The events the relay knows. Unknown names are refused here rather than discovered
-- by n8n later.
CREATE OR REPLACE FUNCTION webhook_event_types()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ARRAY[
        'lead_scraped', 'lead_qualified', 'demo_completed', 'demo_failed',
        'video_completed', 'video_failed', 'email_sent', 'email_failed',
        'lead_responded', 'approval_requested', 'workflow_error', 'endpoint_unhealthy'
    ]::text[]
$$;

-- The wake-up, for a writer that has written its outbox row and read the flag armed:
-- disarm it and notify, unless this session declined notifying (two-phase commit: see
-- above; the flag then stays armed for the next writer). webhook_emit() and the
-- triggers of 004_triggers.sql call it only in that branch, so a business write pays
-- for the call only when it is the one that wakes the relay. It runs with its
-- caller's rights: theirs are the owner's, anyone else's cannot set the flag.
CREATE OR REPLACE FUNCTION webhook_wake_relay(p_event bigint)
RETURNS void
LANGUAGE plpgsql
VOLATILE
AS $$
BEGIN
    IF lower(coalesce(current_setting('n8n_relay.notify', true), 'on'))
           NOT IN ('off', 'false', 'no', '0') THEN
        PERFORM setval('webhook_relay_wakeup', 0);
        -- At most the id: a NOTIFY payload is capped at 8000 bytes, the row is not.
        PERFORM pg_notify('n8n_relay', p_event::text);
    END IF;
END;
$$;

-- webhook_emit() runs as its owner with a fixed search_path: the schema this script
-- installs into (where the outbox is), then pg_temp, last, so that a caller's temporary
-- table cannot stand in for the outbox (pg_catalog, not named, is searched first, as
-- always). SET search_path FROM CURRENT takes it from this session, so it is set in the
-- statement that replaces the function: set by an ALTER FUNCTION after it, a business
-- write in between (the scripts run without psql -1) found no outbox in a schema of the
-- relay's own. The installer's search_path is put back right after.
DO $$
BEGIN
    PERFORM set_config('n8n_relay.installer_search_path', current_setting('search_path'), false);
    IF current_schema() IS NOT NULL THEN
        PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_temp', false);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION webhook_emit(
    p_event_type  text,
    p_entity_type text,
    p_entity_id   bigint,
    p_payload     jsonb DEFAULT '{}'::jsonb
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_event_type IS NULL OR NOT (p_event_type = ANY (webhook_event_types())) THEN
        RAISE EXCEPTION 'webhook_emit: unknown event type "%"', p_event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'known event types: ' || array_to_string(webhook_event_types(), ', ');
    END IF;
    IF p_entity_type IS NULL OR p_entity_type = '' THEN
        RAISE EXCEPTION 'webhook_emit: entity_type must not be empty (event "%")', p_event_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
    VALUES (p_event_type, p_entity_type, p_entity_id, COALESCE(p_payload, '{}'::jsonb))
    RETURNING id INTO v_id;

    -- Read the flag only after the INSERT: the relay relies on a writer holding its
    -- lock on webhook_events before it looks (see wakeup.rs).
    IF (SELECT last_value FROM webhook_relay_wakeup) = 1 THEN
        PERFORM webhook_wake_relay(v_id);
    END IF;
    RETURN v_id;
END;
$$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    IF current_setting('n8n_relay.installer_search_path', true) IS NOT NULL THEN
        PERFORM set_config('search_path', current_setting('n8n_relay.installer_search_path'), false);
    END IF;
    -- Run by a session other than the one that set the path above (a connection
    -- pooler between psql and Postgres), a CREATE took that session's search_path,
    -- with pg_temp first: each function gets its fixed one here after all.
    FOREACH f IN ARRAY ARRAY['webhook_emit(text, text, bigint, jsonb)'::regprocedure] LOOP
        IF (SELECT proconfig IS DISTINCT FROM
                   ARRAY['search_path=' || pronamespace::regnamespace::text || ', pg_temp']
              FROM pg_proc WHERE oid = f) THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = %s, pg_temp',
                           f, (SELECT pronamespace::regnamespace FROM pg_proc WHERE oid = f));
        END IF;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION webhook_emit(text, text, bigint, jsonb) IS
    'n8n-relay: record an event in the outbox (same transaction) and wake the relay if it is idle';
