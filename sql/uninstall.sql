-- n8n-relay: remove everything the install scripts created, except your business
-- tables (leads, demo_sites, videos are dropped only if you uncomment the last block).
-- Undelivered events are lost with the tables: check `n8n-relay queue stats` first
-- (pending, sending and "not yet routed", the events still in the outbox, all 0).
-- Idempotent: psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql may run any number of times
-- (with the search_path of the install; where the session's finds no relay but another
-- schema holds one, it stops and names that schema rather than remove nothing quietly).
--
-- One statement, so one transaction whatever psql's settings: it removes all of it or,
-- on any error, nothing.
-- - Refused while something of yours uses webhook_emit() (sql/README, "Your own
--   tables"): without it every write of the tables whose triggers call it would fail.
--   A function whose body calls it (in any spelling; plpgsql bodies are text, which
--   Postgres does not track), or anything Postgres records as depending on it (a
--   BEGIN ATOMIC function, a view, a column default). A false alarm (a call in a
--   comment) passes with: PGOPTIONS='-c n8n_relay.uninstall_anyway=on' psql ...
-- - All its locks together wait at most lock_timeout (5 s unless the session sets one;
--   for this transaction only): DROP TRIGGER locks out a business table's reads and writes,
--   and behind a long transaction it would hold up all of them. Stop the relay first,
--   or its sessions may hold the relay's tables.
DO $$
DECLARE
    v_emit      oid := to_regprocedure('webhook_emit(text, text, bigint, jsonb)')::oid;
    v_ours      oid[] := array_remove(ARRAY[
        to_regprocedure('webhook_emit(text, text, bigint, jsonb)')::oid,
        to_regprocedure('webhook_leads_emit()')::oid,
        to_regprocedure('webhook_asset_emit()')::oid,
        to_regprocedure('webhook_wake_relay(bigint)')::oid,
        to_regprocedure('webhook_event_types()')::oid,
        to_regprocedure('webhook_order_gate(text, text, bigint, bigint, text, text[])')::oid
    ], NULL);
    v_users     text;
    v_triggers  text;
    v_dependent text;
    v_schemas   text;
    v_deadline  timestamptz;
    v_relay_tables text;
    v_trigger   record;
BEGIN
    -- Installed in a schema this session's search_path does not name: everything below
    -- would look for it in the wrong place and find nothing to remove (or take the
    -- relay's own functions there for someone else's).
    SELECT string_agg(DISTINCT c.relnamespace::regnamespace::text, ', ')
      INTO v_schemas
      FROM pg_class c
     WHERE c.relname = 'webhook_events' AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't';
    IF to_regclass('webhook_events') IS NULL AND v_schemas IS NOT NULL THEN
        RAISE EXCEPTION 'n8n-relay uninstall: the relay is installed in schema %, which this session''s search_path (%) does not name',
            v_schemas, current_setting('search_path')
            USING ERRCODE = 'undefined_table',
                  HINT = format('Run it with the install''s search_path: PGOPTIONS=''-c search_path=%s,public'' psql ...; nothing was removed.',
                                split_part(v_schemas, ', ', 1));
    END IF;
    -- A call in any spelling: Webhook_Emit(, "webhook_emit"(, public.webhook_emit (;
    -- not a name that merely ends in it (customers_webhook_emit).
    SELECT string_agg(DISTINCT p.oid::regprocedure::text, ', '),
           string_agg(DISTINCT t.tgname || ' ON ' || t.tgrelid::regclass::text, ', ')
      INTO v_users, v_triggers
      FROM pg_proc p
      LEFT JOIN pg_trigger t ON t.tgfoid = p.oid AND NOT t.tgisinternal
     WHERE p.prosrc ~* '"?\mwebhook_emit"?\s*\('
       AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND NOT (p.oid = ANY (v_ours));
    SELECT string_agg(DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
      INTO v_dependent
      FROM pg_depend d
     WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = v_emit
       AND d.deptype = 'n';
    IF (v_users IS NOT NULL OR v_dependent IS NOT NULL)
       AND lower(coalesce(current_setting('n8n_relay.uninstall_anyway', true), 'off'))
           NOT IN ('on', 'true', 'yes', '1') THEN
        RAISE EXCEPTION 'n8n-relay uninstall: % use webhook_emit(), which this script removes (triggers running them: %)',
            concat_ws(', ', v_users, v_dependent), coalesce(v_triggers, 'none')
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Drop those first (or replace them), then run this script again; nothing was removed. For a false alarm (a call in a comment): PGOPTIONS=''-c n8n_relay.uninstall_anyway=on'' psql ...';
    END IF;
    IF current_setting('lock_timeout') = '0' THEN
        PERFORM set_config('lock_timeout', '5s', true);
    END IF;
    -- One lock_timeout for all the locks together: a table locked first stays locked
    -- while the next one is waited for. The business tables first, then the relay's
    -- own, in the order a business write takes them (its table, then the outbox in its
    -- trigger): the other way round, a write arriving meanwhile deadlocked with this.
    v_deadline := clock_timestamp() + current_setting('lock_timeout')::interval;
    FOR v_trigger IN
        SELECT * FROM (VALUES ('leads', 'webhook_leads_insert'), ('leads', 'webhook_leads_update'),
                              ('demo_sites', 'webhook_demo_sites_change'),
                              ('videos', 'webhook_videos_change')) AS v(tbl, name)
        WHERE to_regclass(v.tbl) IS NOT NULL
    LOOP
        PERFORM set_config('lock_timeout',
            greatest(1, (extract(epoch FROM v_deadline - clock_timestamp()) * 1000)::int)::text, true);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_trigger.name, to_regclass(v_trigger.tbl));
    END LOOP;
    PERFORM set_config('lock_timeout',
        greatest(1, (extract(epoch FROM v_deadline - clock_timestamp()) * 1000)::int)::text, true);
    -- The relay's tables there are: locked here, dropped at the end.
    SELECT string_agg(r::text, ', ') INTO v_relay_tables
      FROM unnest(ARRAY[to_regclass('webhook_events'), to_regclass('webhook_queue'),
                        to_regclass('webhook_logs'), to_regclass('webhook_retry_history'),
                        to_regclass('workflow_runs'), to_regclass('webhook_callback_receipts'),
                        to_regclass('webhook_pauses'), to_regclass('webhook_rate_budget'),
                        to_regclass('webhook_endpoints'), to_regclass('relay_schema_migrations')]) AS r
     WHERE r IS NOT NULL;
    IF v_relay_tables IS NOT NULL THEN
        EXECUTE 'LOCK TABLE ' || v_relay_tables || ' IN ACCESS EXCLUSIVE MODE';
    END IF;

    DROP FUNCTION IF EXISTS webhook_leads_emit();
    DROP FUNCTION IF EXISTS webhook_asset_emit();
    DROP FUNCTION IF EXISTS webhook_emit(text, text, bigint, jsonb);
    DROP FUNCTION IF EXISTS webhook_wake_relay(bigint);
    DROP FUNCTION IF EXISTS webhook_event_types();
    DROP FUNCTION IF EXISTS webhook_order_gate(text, text, bigint, bigint, text, text[]);
    DROP SEQUENCE IF EXISTS webhook_relay_wakeup;
    -- The tables locked above, in one statement (webhook_retry_history refers to
    -- webhook_queue).
    IF v_relay_tables IS NOT NULL THEN
        EXECUTE 'DROP TABLE ' || v_relay_tables;
    END IF;
END;
$$;

-- DROP TABLE IF EXISTS videos;
-- DROP TABLE IF EXISTS demo_sites;
-- DROP TABLE IF EXISTS leads;
