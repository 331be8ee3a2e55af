-- n8n-relay: triggers that turn business-row changes into events.
-- Idempotent: functions are replaced, triggers dropped and recreated. Tables that do
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
-- An INSERT that already carries one of these statuses fires like the transition.
-- "approved" (set by an n8n approval callback) means the demo or video is ready for the
-- next step, which is what *_completed tells n8n; "rejected" emits nothing.
-- workflow_error comes from the error-notification callback through webhook_emit.
--
-- Each event's data is the row as JSON (to_jsonb(NEW)) plus the id under a
-- descriptive name (lead_id, demo_site_id, video_id), so your own columns travel too.

CREATE OR REPLACE FUNCTION webhook_leads_emit()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    -- Columns are read through JSON, never as NEW.column: a table without one of
    -- them (status, outreach_status, ...) must still accept its business writes.
    v_row    jsonb := to_jsonb(NEW);
    v_id     bigint := (v_row ->> 'id')::bigint;
    v_data   jsonb := v_row || jsonb_build_object('lead_id', v_row -> 'id');
    v_status text := v_row ->> 'status';
    v_old    jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM webhook_emit('lead_scraped', 'lead', v_id, v_data);
        IF v_status = 'qualified' THEN
            PERFORM webhook_emit('lead_qualified', 'lead', v_id, v_data);
        END IF;
        RETURN NULL;
    END IF;
    v_old := to_jsonb(OLD);
    IF v_status IS DISTINCT FROM (v_old ->> 'status') THEN
        IF v_status = 'qualified' THEN
            PERFORM webhook_emit('lead_qualified', 'lead', v_id, v_data);
        ELSIF v_status = 'responded' THEN
            PERFORM webhook_emit('lead_responded', 'lead', v_id,
                v_data || jsonb_build_object('message', v_row -> 'response_message'));
        END IF;
    END IF;
    IF (v_row -> 'outreach_status') IS DISTINCT FROM (v_old -> 'outreach_status') THEN
        IF v_row ->> 'outreach_status' = 'sent' THEN
            PERFORM webhook_emit('email_sent', 'lead', v_id,
                v_data || jsonb_build_object('subject', v_row -> 'outreach_subject'));
        ELSIF v_row ->> 'outreach_status' = 'failed' THEN
            PERFORM webhook_emit('email_failed', 'lead', v_id,
                v_data || jsonb_build_object('error', v_row -> 'outreach_error'));
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- demo_sites and videos share one function: the table decides the names.
CREATE OR REPLACE FUNCTION webhook_asset_emit()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_kind   text := CASE TG_TABLE_NAME WHEN 'videos' THEN 'video' ELSE 'demo' END;
    v_entity text := CASE TG_TABLE_NAME WHEN 'videos' THEN 'video' ELSE 'demo_site' END;
    v_row    jsonb := to_jsonb(NEW);
    v_id     bigint := (v_row ->> 'id')::bigint;
    v_data   jsonb := v_row || jsonb_build_object(v_entity || '_id', v_row -> 'id');
    v_status text := v_row ->> 'status';
BEGIN
    IF TG_OP = 'UPDATE' AND v_status IS NOT DISTINCT FROM (to_jsonb(OLD) ->> 'status') THEN
        RETURN NULL;
    END IF;
    IF v_status IN ('completed', 'approved') THEN
        PERFORM webhook_emit(v_kind || '_completed', v_entity, v_id, v_data);
    ELSIF v_status = 'failed' THEN
        PERFORM webhook_emit(v_kind || '_failed', v_entity, v_id,
            v_data || jsonb_build_object('error', v_row -> 'error_message'));
    ELSIF v_status = 'pending_approval' THEN
        PERFORM webhook_emit('approval_requested', v_entity, v_id,
            v_data || jsonb_build_object('approval_type', v_kind, 'entity_id', v_id));
    END IF;
    RETURN NULL;
END;
$$;

DO $$
BEGIN
    IF to_regclass('leads') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS webhook_leads_insert ON leads;
        CREATE TRIGGER webhook_leads_insert
            AFTER INSERT ON leads
            FOR EACH ROW EXECUTE FUNCTION webhook_leads_emit();
        DROP TRIGGER IF EXISTS webhook_leads_update ON leads;
        CREATE TRIGGER webhook_leads_update
            AFTER UPDATE ON leads
            FOR EACH ROW EXECUTE FUNCTION webhook_leads_emit();
    ELSE
        RAISE NOTICE 'n8n-relay: table leads not found; its triggers were not installed';
    END IF;

    IF to_regclass('demo_sites') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass('demo_sites') AND attname = 'status' AND NOT attisdropped
    ) THEN
        RAISE NOTICE 'n8n-relay: table demo_sites has no status column; its triggers were not installed (sql/README.md shows how to attach your own)';
    ELSIF to_regclass('demo_sites') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS webhook_demo_sites_change ON demo_sites;
        CREATE TRIGGER webhook_demo_sites_change
            AFTER INSERT OR UPDATE OF status ON demo_sites
            FOR EACH ROW EXECUTE FUNCTION webhook_asset_emit();
    ELSE
        RAISE NOTICE 'n8n-relay: table demo_sites not found; its triggers were not installed';
    END IF;

    IF to_regclass('videos') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass('videos') AND attname = 'status' AND NOT attisdropped
    ) THEN
        RAISE NOTICE 'n8n-relay: table videos has no status column; its triggers were not installed (sql/README.md shows how to attach your own)';
    ELSIF to_regclass('videos') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS webhook_videos_change ON videos;
        CREATE TRIGGER webhook_videos_change
            AFTER INSERT OR UPDATE OF status ON videos
            FOR EACH ROW EXECUTE FUNCTION webhook_asset_emit();
    ELSE
        RAISE NOTICE 'n8n-relay: table videos not found; its triggers were not installed';
    END IF;
END;
$$;
