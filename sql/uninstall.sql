-- n8n-relay: remove everything the install scripts created, except your business
-- tables (leads, demo_sites, videos are dropped only if you uncomment the last block).
-- Undelivered events are lost with the tables: check `n8n-relay queue stats` first
-- (pending, sending and "not yet routed", the events still in the outbox, all 0).
-- Idempotent: psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql may run any number of times.
--
-- One statement, so one transaction whatever psql's settings: it removes all of it or,
-- on any error, nothing.
-- - Refused while something of yours uses webhook_emit() (sql/README, "Your own
--   tables"): without it every write of the tables whose triggers call it would fail.
--   A function whose body calls it (in any spelling; plpgsql bodies are text, which
--   Postgres does not track), or anything Postgres records as depending on it (a
--   BEGIN ATOMIC function, a view, a column default). A false alarm (a call in a
--   comment) passes with: PGOPTIONS='-c n8n_relay.uninstall_anyway=on' psql ...
-- - Each lock waits at most lock_timeout (5 s unless the session sets one; for this
--   transaction only): DROP TRIGGER locks out a business table's reads and writes,
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
BEGIN
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

    IF to_regclass('leads') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS webhook_leads_insert ON leads;
        DROP TRIGGER IF EXISTS webhook_leads_update ON leads;
    END IF;
    IF to_regclass('demo_sites') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS webhook_demo_sites_change ON demo_sites;
    END IF;
    IF to_regclass('videos') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS webhook_videos_change ON videos;
    END IF;

    DROP FUNCTION IF EXISTS webhook_leads_emit();
    DROP FUNCTION IF EXISTS webhook_asset_emit();
    DROP FUNCTION IF EXISTS webhook_emit(text, text, bigint, jsonb);
    DROP FUNCTION IF EXISTS webhook_wake_relay(bigint);
    DROP FUNCTION IF EXISTS webhook_event_types();
    DROP FUNCTION IF EXISTS webhook_order_gate(text, text, bigint, bigint, text, text[]);
    DROP SEQUENCE IF EXISTS webhook_relay_wakeup;
    DROP TABLE IF EXISTS webhook_retry_history;
    DROP TABLE IF EXISTS webhook_logs;
    DROP TABLE IF EXISTS webhook_queue;
    DROP TABLE IF EXISTS webhook_events;
    DROP TABLE IF EXISTS workflow_runs;
    DROP TABLE IF EXISTS webhook_callback_receipts;
    DROP TABLE IF EXISTS webhook_pauses;
    DROP TABLE IF EXISTS webhook_rate_budget;
    DROP TABLE IF EXISTS webhook_endpoints;
    DROP TABLE IF EXISTS relay_schema_migrations;
END;
$$;

-- DROP TABLE IF EXISTS videos;
-- DROP TABLE IF EXISTS demo_sites;
-- DROP TABLE IF EXISTS leads;
