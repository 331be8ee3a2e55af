-- n8n-relay: least-privilege roles. An example for DBAs: read it, adapt the names,
-- then run it as the owner of the relay's schema, after `n8n-relay migrate` (or the
-- numbered scripts). That role creates the two roles and grants CONNECT, so it needs
-- CREATEROLE and to own the database (or run it as a superuser):
--     psql -v ON_ERROR_STOP=1 -d leads -f sql/roles.example.sql
--     psql -d leads -c '\password n8n_relay'
-- Idempotent: run it again after an upgrade that added tables.
--
-- Two roles:
--   n8n_relay          the relay process (`n8n-relay run`, `callbacks`, `queue`, `emit`).
--                      It owns nothing and cannot change the schema, so `migrate` runs
--                      as the schema owner, not as this role.
--   n8n_relay_emitters a group for roles that call webhook_emit themselves (your own
--                      triggers, ad-hoc events): EXECUTE on it. Writers of the tables
--                      with the built-in triggers need nothing: those triggers, like
--                      webhook_emit, are SECURITY DEFINER, so writers never touch the
--                      outbox, the wake-up sequence or pg_notify themselves.
-- Then: GRANT n8n_relay_emitters TO your_app_role;
-- sql/README.md explains each grant.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'n8n_relay') THEN
        CREATE ROLE n8n_relay LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'n8n_relay_emitters') THEN
        CREATE ROLE n8n_relay_emitters NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO n8n_relay', current_database());
END;
$$;

-- First, so that nothing below can stop the script before it: functions are
-- executable by PUBLIC by default, and webhook_emit() writes the outbox as its owner,
-- so only the roles that should emit may call it (granted further down). The built-in
-- trigger functions (004_triggers.sql; where it was not run, there are none) write it
-- as their owner too: a role that may attach them to a table of its own (a temporary
-- one will do) emits any event with any data. Nobody but their owner needs EXECUTE:
-- Postgres checks it when a trigger is created, not when one fires, so the triggers
-- already attached keep firing for every writer.
REVOKE EXECUTE ON FUNCTION webhook_emit(text, text, bigint, jsonb) FROM PUBLIC;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY array_remove(ARRAY[to_regprocedure('webhook_leads_emit()'),
                                          to_regprocedure('webhook_asset_emit()')], NULL) LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END;
$$;

-- The schema the relay's tables are in (public, unless installed in one of its own):
-- the relay works there, and the emitters call webhook_emit() there.
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %s TO n8n_relay, n8n_relay_emitters',
                   (SELECT relnamespace::regnamespace FROM pg_class
                     WHERE oid = 'webhook_queue'::regclass));
END;
$$;

-- The outbox: the router claims events (SELECT ... FOR UPDATE SKIP LOCKED, which needs
-- UPDATE) and deletes them as it queues them; retention deletes routed events that
-- earlier versions kept.
GRANT SELECT, UPDATE, DELETE ON webhook_events TO n8n_relay;

-- The queue: enqueue, claim, record outcomes, release leases; `queue retry|cancel`;
-- retention and `queue cleanup` delete.
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_queue TO n8n_relay;

-- Delivery and callback history: written on every attempt and request, read by
-- `queue show`, deleted with their queue rows by retention and `queue cleanup`.
-- Cleanup locks the log rows it deletes (FOR UPDATE SKIP LOCKED, so two cleanups do
-- not collide), and row locks need UPDATE; the relay never changes a log row.
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_logs TO n8n_relay;
GRANT SELECT, INSERT, DELETE ON webhook_retry_history TO n8n_relay;

-- Callbacks: workflow runs are upserted by execution id, and deleted by retention and
-- `queue cleanup` once n8n has said nothing of them for that long; a receipt is claimed
-- when a signed request arrives, completed with its answer (UPDATE), replayed to a
-- repeated request, and deleted after the signature window.
GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_runs TO n8n_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_callback_receipts TO n8n_relay;
-- Steering: pauses (read by every relay; written by `n8n-relay queue pause|resume`),
-- the shared rate-limit buckets, endpoint health changes.
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_pauses TO n8n_relay;
GRANT SELECT, INSERT, UPDATE ON webhook_rate_budget TO n8n_relay;
GRANT SELECT, INSERT, UPDATE ON webhook_endpoints TO n8n_relay;

-- The wake-up flag: the relay arms it (setval, needs UPDATE) and reads it.
GRANT USAGE, SELECT, UPDATE ON SEQUENCE webhook_relay_wakeup TO n8n_relay;

-- The outbox's identity: when its ids started again below the queue's (TRUNCATE ...
-- RESTART IDENTITY, a logical-replication cutover), the relay reads it and moves it
-- past them (setval), so that new events are not taken for ones already queued.
DO $$
BEGIN
    EXECUTE format('GRANT SELECT, UPDATE ON SEQUENCE %s TO n8n_relay',
                   pg_get_serial_sequence('webhook_events', 'id'));
END;
$$;

-- Approvals from n8n: a demo or video becomes approved or rejected. Only the review
-- columns, those of them the table has (a missing one must not stop this script before
-- the grants after it); reading the row gives the response its lead_id. The UPDATE
-- fires the business triggers (demo_completed, ...), which run as their owner.
DO $$
DECLARE
    t    regclass;
    cols text;
BEGIN
    -- Which scripts `migrate` applied (read only); absent after a psql install.
    IF to_regclass('relay_schema_migrations') IS NOT NULL THEN
        GRANT SELECT ON relay_schema_migrations TO n8n_relay;
    END IF;
    FOREACH t IN ARRAY array_remove(ARRAY[to_regclass('demo_sites'), to_regclass('videos')], NULL) LOOP
        EXECUTE format('GRANT SELECT ON %s TO n8n_relay', t);
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
          FROM pg_attribute
         WHERE attrelid = t AND attnum > 0 AND NOT attisdropped
           AND attname IN ('status', 'approval_status', 'reviewer', 'review_notes',
                           'reviewed_at', 'updated_at');
        IF cols IS NOT NULL THEN
            EXECUTE format('GRANT UPDATE (%s) ON %s TO n8n_relay', cols, t);
        END IF;
    END LOOP;
END;
$$;

-- Events: the error-notification callback and `n8n-relay emit` record through
-- webhook_emit; so do triggers of your own that call it (the revoke is at the top).
GRANT EXECUTE ON FUNCTION webhook_emit(text, text, bigint, jsonb)
    TO n8n_relay, n8n_relay_emitters;

-- Not granted, because not needed:
--  * pg_locks (the relay looks for open writers on webhook_events before it sleeps)
--    is readable by every role; no pg_read_all_stats or pg_monitor.
--  * LISTEN and NOTIFY need no privilege.
--  * The identity columns' sequences: INSERT into an identity column needs none.
--  * leads: the relay never reads or writes it.
