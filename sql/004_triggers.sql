-- n8n-relay: triggers that turn business-row changes into events.
-- Idempotent: functions are replaced, a trigger attached only where it is missing or
-- differs (see the end of this file). Tables that do
-- not exist are skipped with a NOTICE, so this runs before or after your own tables.
--
-- Transitions (each fires once, in the business transaction, AFTER the row change):
--   leads       INSERT                                   -> lead_scraped
--   leads       status          -> 'qualified'           -> lead_qualified
--   leads       status          -> 'responded'           -> lead_responded
--   leads       outreach_status -> 'sent'                -> email_sent
--   leads       outreach_status -> 'failed'              -> email_failed
--   demo_sites  status          -> 'completed'|'approved' -> demo_completed
--   demo_sites  status          -> 'failed'              -> demo_failed
--   demo_sites  status          -> 'pending_approval'    -> approval_requested (approval_type "demo")
--   videos      status          -> 'completed'|'approved' -> video_completed
--   videos      status          -> 'failed'              -> video_failed
--   videos      status          -> 'pending_approval'    -> approval_requested (approval_type "video")
-- A demo_sites or videos INSERT that already carries one of these statuses fires like
-- the transition; a lead inserted 'qualified' announces lead_qualified after
-- lead_scraped, and a lead inserted with any other of these values only lead_scraped.
-- "approved" (set by an n8n approval callback) means the demo or video is ready for the
-- next step, which is what *_completed tells n8n; "rejected" emits nothing.
-- workflow_error comes from the error-notification callback through webhook_emit.
--
-- Each event's data is the row as JSON (to_jsonb(NEW)) plus the id under a
-- descriptive name (lead_id, demo_site_id, video_id), so your own columns travel too.

-- The trigger functions write the outbox row themselves instead of calling
-- webhook_emit(): a business INSERT pays for every function call in its trigger, and
-- measured with 16 writers the second call (with its own privilege and search_path
-- switch, and the event-type check these fixed names do not need) cost about a tenth
-- of the insert rate. They run as their owner (SECURITY DEFINER), as webhook_emit()
-- does, so a business role needs no privilege on the relay's tables; and like it they
-- read the wake-up flag only after the INSERT, and notify only when the relay armed it
-- (webhook_wake_relay(), a call paid only by the write that wakes the relay).
-- The id goes in with jsonb_set(), not `row || jsonb_build_object(...)`: the same
-- object, without building a second one to merge (about 5,000 fewer instructions per
-- business INSERT, counted by crates/n8n-relay-bench/insert-instructions.sh).
-- jsonb_set() returns NULL for a NULL value, hence the COALESCE for a table without an
-- id column, which keeps a lead_id (demo_site_id, video_id) of its own as it is.

-- Both run with the fixed search_path webhook_emit() has, set the same way (see
-- 002_webhook_emit.sql): in the statement that replaces each, so a business write
-- while this script runs (without psql -1) always finds the outbox.
DO $$
BEGIN
    PERFORM set_config('n8n_relay.installer_search_path', current_setting('search_path'), false);
    IF current_schema() IS NOT NULL THEN
        PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_temp', false);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION webhook_leads_emit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    -- Columns are read through JSON, never as NEW.column: a table without one of
    -- them (status, outreach_status, ...) must still accept its business writes.
    v_row      jsonb := to_jsonb(NEW);
    v_old      jsonb;
    v_data     jsonb;
    -- On an UPDATE: the new status and outreach_status where they changed, else NULL.
    v_status   text;
    v_outreach text;
    v_event    bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- The business INSERT's path, computed in place: nothing it does not need is
        -- declared or evaluated (6,800 fewer instructions per INSERT than with the
        -- UPDATE's variables computed up front, of 381,000 in all).
        INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
        VALUES ('lead_scraped', 'lead', (v_row ->> 'id')::bigint,
                jsonb_set(v_row, '{lead_id}', COALESCE(v_row -> 'id', v_row -> 'lead_id', 'null')))
        RETURNING id INTO v_event;
        IF v_row ->> 'status' = 'qualified' THEN
            INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
            VALUES ('lead_qualified', 'lead', (v_row ->> 'id')::bigint,
                    jsonb_set(v_row, '{lead_id}', COALESCE(v_row -> 'id', v_row -> 'lead_id', 'null')))
            RETURNING id INTO v_event;
        END IF;
    ELSE
        v_old := to_jsonb(OLD);
        v_status := CASE WHEN (v_row ->> 'status') IS DISTINCT FROM (v_old ->> 'status')
                         THEN v_row ->> 'status' END;
        v_outreach := CASE WHEN (v_row -> 'outreach_status') IS DISTINCT FROM (v_old -> 'outreach_status')
                           THEN v_row ->> 'outreach_status' END;
        -- An UPDATE that changes nothing announced (most of them) ends here, before
        -- the payload is built: 158,500 instructions over the bare UPDATE, where
        -- building it first cost 202,000 (WRITE=update insert-instructions.sh).
        -- IS NOT TRUE: a column changed to NULL makes the IN NULL, and announces nothing.
        IF (v_status IN ('qualified', 'responded')) IS NOT TRUE
           AND (v_outreach IN ('sent', 'failed')) IS NOT TRUE THEN
            RETURN NULL;
        END IF;
        v_data := jsonb_set(v_row, '{lead_id}', COALESCE(v_row -> 'id', v_row -> 'lead_id', 'null'));
        IF v_status = 'qualified' THEN
            INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
            VALUES ('lead_qualified', 'lead', (v_row ->> 'id')::bigint, v_data)
            RETURNING id INTO v_event;
        ELSIF v_status = 'responded' THEN
            INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
            VALUES ('lead_responded', 'lead', (v_row ->> 'id')::bigint,
                    v_data || jsonb_build_object('message', v_row -> 'response_message'))
            RETURNING id INTO v_event;
        END IF;
        IF v_outreach = 'sent' THEN
            INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
            VALUES ('email_sent', 'lead', (v_row ->> 'id')::bigint,
                    v_data || jsonb_build_object('subject', v_row -> 'outreach_subject'))
            RETURNING id INTO v_event;
        ELSIF v_outreach = 'failed' THEN
            INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
            VALUES ('email_failed', 'lead', (v_row ->> 'id')::bigint,
                    v_data || jsonb_build_object('error', v_row -> 'outreach_error'))
            RETURNING id INTO v_event;
        END IF;
    END IF;
    -- The wake-up, as in webhook_emit() (002_webhook_emit.sql).
    IF (SELECT last_value FROM webhook_relay_wakeup) = 1 THEN
        PERFORM webhook_wake_relay(v_event);
    END IF;
    RETURN NULL;
END;
$$;

-- demo_sites and videos share one function: the table decides the names.
CREATE OR REPLACE FUNCTION webhook_asset_emit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_kind   text := CASE TG_TABLE_NAME WHEN 'videos' THEN 'video' ELSE 'demo' END;
    v_entity text := CASE TG_TABLE_NAME WHEN 'videos' THEN 'video' ELSE 'demo_site' END;
    v_row    jsonb := to_jsonb(NEW);
    v_status text := v_row ->> 'status';
    v_id     bigint;
    v_data   jsonb;
    v_type   text;
    v_event  bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND v_status IS NOT DISTINCT FROM (to_jsonb(OLD) ->> 'status') THEN
        RETURN NULL;
    END IF;
    IF v_status IS NULL OR v_status NOT IN ('completed', 'approved', 'failed', 'pending_approval') THEN
        RETURN NULL;
    END IF;
    -- Built only for a change that is announced.
    v_id := (v_row ->> 'id')::bigint;
    v_data := jsonb_set(v_row, ARRAY[v_entity || '_id'], COALESCE(v_row -> 'id', v_row -> (v_entity || '_id'), 'null'));
    IF v_status IN ('completed', 'approved') THEN
        v_type := v_kind || '_completed';
    ELSIF v_status = 'failed' THEN
        v_type := v_kind || '_failed';
        v_data := v_data || jsonb_build_object('error', v_row -> 'error_message');
    ELSE
        v_type := 'approval_requested';
        v_data := v_data || jsonb_build_object('approval_type', v_kind, 'entity_id', v_id);
    END IF;
    INSERT INTO webhook_events (event_type, entity_type, entity_id, payload)
    VALUES (v_type, v_entity, v_id, v_data) RETURNING id INTO v_event;
    -- The wake-up, as in webhook_emit() (002_webhook_emit.sql).
    IF (SELECT last_value FROM webhook_relay_wakeup) = 1 THEN
        PERFORM webhook_wake_relay(v_event);
    END IF;
    RETURN NULL;
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
    FOREACH f IN ARRAY ARRAY['webhook_leads_emit()'::regprocedure, 'webhook_asset_emit()'::regprocedure] LOOP
        IF (SELECT proconfig IS DISTINCT FROM
                   ARRAY['search_path=' || pronamespace::regnamespace::text || ', pg_temp']
              FROM pg_proc WHERE oid = f) THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = %s, pg_temp',
                           f, (SELECT pronamespace::regnamespace FROM pg_proc WHERE oid = f));
        END IF;
    END LOOP;
END;
$$;

-- Attaching them. A trigger already attached as this script would attach it is left
-- alone: an upgrade replaces the functions above (which takes no lock on your tables)
-- and does not touch the triggers, so it never waits for, or holds up, a business
-- transaction. Only a missing, disabled or different trigger is (re)created, and
-- CREATE TRIGGER locks out writes to the table (and DROP TRIGGER, for one that must be
-- replaced, reads too): behind a long transaction on it, that waits at most lock_timeout
-- (5 s unless your session sets a nonzero one) for all the tables together, then stops
-- with an error that names the table, changing nothing.
DO $$
DECLARE
    t          record;
    v_rel      regclass;
    v_id       text;
    -- One lock_timeout for all the tables together: a table locked first stays locked
    -- while the next one is waited for, so a lock_timeout for each would hold its
    -- writes up to three times as long.
    v_timeout  text;
    v_deadline timestamptz;
BEGIN
    IF current_setting('lock_timeout') = '0' THEN
        PERFORM set_config('lock_timeout', '5s', true);
    END IF;
    v_timeout := current_setting('lock_timeout');
    v_deadline := clock_timestamp() + v_timeout::interval;
    -- tgtype: 1 = FOR EACH ROW, 4 = INSERT, 16 = UPDATE (an AFTER trigger sets no other bit).
    FOR t IN
        SELECT * FROM (VALUES
            ('leads', 'webhook_leads_insert', 'AFTER INSERT', 5, NULL, 'webhook_leads_emit'),
            ('leads', 'webhook_leads_update', 'AFTER UPDATE', 17, NULL, 'webhook_leads_emit'),
            ('demo_sites', 'webhook_demo_sites_change', 'AFTER INSERT OR UPDATE OF status', 21,
             'status', 'webhook_asset_emit'),
            ('videos', 'webhook_videos_change', 'AFTER INSERT OR UPDATE OF status', 21,
             'status', 'webhook_asset_emit')
        ) AS v(tbl, name, events, tgtype, update_of, func)
    LOOP
        v_rel := to_regclass(t.tbl);
        IF v_rel IS NULL THEN
            RAISE NOTICE 'n8n-relay: table % not found; its trigger % was not installed', t.tbl, t.name;
            CONTINUE;
        END IF;
        -- The event's entity_id is the row's id cast to bigint: an id that is not an
        -- integer (a uuid, a text key, a numeric with decimals or past 18 digits) would
        -- fail every business write the trigger fires for. An integer type, a domain
        -- over one, or numeric(p, 0) with p <= 18 is one. (crates/relay-core/src/
        -- schema.rs, TRIGGER_MISSING, skips the same tables.)
        SELECT format_type(a.atttypid, a.atttypmod) INTO v_id
          FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid,
               LATERAL (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) AS base,
                               CASE WHEN ty.typbasetype <> 0 THEN ty.typtypmod ELSE a.atttypmod END AS m) k
         WHERE a.attrelid = v_rel AND a.attname = 'id' AND a.attnum > 0 AND NOT a.attisdropped
           AND k.base NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
           AND NOT (k.base = 'numeric'::regtype AND k.m >= 4 AND ((k.m - 4) & 65535) = 0
                    AND ((k.m - 4) >> 16) <= 18);
        IF v_id IS NOT NULL THEN
            RAISE NOTICE 'n8n-relay: table %''s id is %, not an integer; its trigger % was not installed (sql/README.md shows how to attach your own)',
                t.tbl, v_id, t.name;
            CONTINUE;
        END IF;
        IF t.update_of IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_attribute
            WHERE attrelid = v_rel AND attname = t.update_of AND NOT attisdropped
        ) THEN
            RAISE NOTICE 'n8n-relay: table % has no % column; its trigger % was not installed (sql/README.md shows how to attach your own)',
                t.tbl, t.update_of, t.name;
            CONTINUE;
        END IF;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM pg_trigger g
            WHERE g.tgrelid = v_rel AND g.tgname = t.name AND NOT g.tgisinternal
              AND g.tgfoid = to_regproc(t.func) AND g.tgtype = t.tgtype
              AND g.tgenabled = 'O' AND g.tgqual IS NULL AND g.tgnargs = 0
              -- UPDATE OF's columns, as int2vector's text: '' for none, '3' for one.
              AND g.tgattr::text = coalesce((
                      SELECT a.attnum::text FROM pg_attribute a
                      WHERE a.attrelid = v_rel AND a.attname = t.update_of), ''));
        BEGIN
            PERFORM set_config('lock_timeout',
                greatest(1, (extract(epoch FROM v_deadline - clock_timestamp()) * 1000)::int)::text, true);
            -- A DBA may have disabled it on purpose (a bulk load): said, since this
            -- enables it again.
            IF EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = v_rel AND g.tgname = t.name
                         AND g.tgenabled = 'D') THEN
                RAISE NOTICE 'n8n-relay: trigger % on % was disabled; it is enabled again (ALTER TABLE % DISABLE TRIGGER % after this script keeps it off)',
                    t.name, t.tbl, t.tbl, t.name;
            END IF;
            -- DROP TRIGGER locks out reads too, even when there is nothing to drop:
            -- only when there is. CREATE TRIGGER alone lets reads through.
            IF EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = v_rel AND g.tgname = t.name) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', t.name, v_rel);
            END IF;
            EXECUTE format('CREATE TRIGGER %I %s ON %s FOR EACH ROW EXECUTE FUNCTION %s()',
                           t.name, t.events, v_rel, t.func);
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'n8n-relay: could not lock table % within lock_timeout (%) to attach its trigger %: a transaction holds it', t.tbl, v_timeout, t.name
                USING ERRCODE = 'lock_not_available',
                      HINT = 'No trigger was changed. Run the install again once that transaction ends (pg_locks and pg_stat_activity show which it is).';
        END;
    END LOOP;
END;
$$;
