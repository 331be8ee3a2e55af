-- n8n-relay: remove everything the install scripts created, except your business
-- tables (leads, demo_sites, videos are dropped only if you uncomment the last block).
-- Undelivered events are lost with the tables: check `n8n-relay queue stats` first
-- (pending, sending and "not yet routed", the events still in the outbox, all 0).
-- Idempotent: psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql may run any number of times.

-- Refused, changing nothing, while functions of yours call webhook_emit() (sql/README,
-- "Your own tables"): without it every write of the tables whose triggers run them
-- would fail. And like the install scripts, it waits at most lock_timeout (5 s unless
-- the session sets a nonzero one) for a business table: DROP TRIGGER locks out its
-- reads and writes, and behind a long transaction it would hold up all of them.
DO $$
DECLARE
    v_functions text;
    v_triggers  text;
BEGIN
    SELECT string_agg(DISTINCT p.oid::regprocedure::text, ', '),
           string_agg(DISTINCT t.tgname || ' ON ' || t.tgrelid::regclass::text, ', ')
      INTO v_functions, v_triggers
      FROM pg_proc p
      LEFT JOIN pg_trigger t ON t.tgfoid = p.oid AND NOT t.tgisinternal
     WHERE p.prosrc ~ 'webhook_emit\s*\('
       AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND p.proname NOT IN ('webhook_emit', 'webhook_leads_emit', 'webhook_asset_emit',
                             'webhook_wake_relay', 'webhook_event_types', 'webhook_order_gate');
    IF v_functions IS NOT NULL THEN
        RAISE EXCEPTION 'n8n-relay uninstall: % call webhook_emit(), which this script removes (triggers running them: %)',
            v_functions, coalesce(v_triggers, 'none')
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Drop those triggers and functions first (or replace them), then run this script again. Nothing was removed.';
    END IF;
    IF current_setting('lock_timeout') = '0' THEN
        PERFORM set_config('lock_timeout', '5s', false);
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
END;
$$;

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

-- DROP TABLE IF EXISTS videos;
-- DROP TABLE IF EXISTS demo_sites;
-- DROP TABLE IF EXISTS leads;
