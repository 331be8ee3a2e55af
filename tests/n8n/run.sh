#!/usr/bin/env bash
# End-to-end against a real n8n: the relay delivers real events into the workflows of
# deploy/n8n/, n8n verifies every signature, and n8n's signed callbacks change the rows.
#
# Opt-in, not part of CI: the first run installs n8n 1.123.81 from the npm registry
# (about 1.8 GB, about 5 minutes) into a cache directory, reused afterwards.
#
#   tests/n8n/run.sh                      # all three phases, about 5 minutes once cached
#   PHASES=nodes-standard tests/n8n/run.sh
#
# Phases (PHASES, space-separated; default all three), each with fresh databases and a
# fresh n8n start:
#   crypto          deploy/n8n/workflows: Webhook + Crypto + IF receivers, Code + Crypto +
#                   HTTP Request callbacks (x-webhook-signature)
#   nodes           deploy/n8n/workflows/nodes: the n8n-relay Trigger and action nodes of
#                   deploy/n8n/nodes (x-webhook-signature), installed into n8n from the
#                   package's `npm pack` tarball the way Settings -> Community nodes does
#   nodes-standard  the same workflows with security.scheme = "standard-webhooks"
#
# Needs: Node >= 20.19 with npm, a C++ toolchain (n8n's isolated-vm addon builds from
# source), cargo, psql/createdb against a PostgreSQL that trusts the current user
# (default postgres@127.0.0.1:5432; PGHOST/PGPORT/PGUSER as usual).
# Settings (environment): N8N_CACHE (install dir, default
# ~/.cache/n8n-relay/n8n-1.123.81), N8N_PORT (5678), CALLBACKS_PORT (18000),
# METRICS_PORT (19187), N8N_RELAY_BIN (a built binary; default: cargo build), PHASES,
# KEEP=1 (keep the databases, logs and n8n folder for a look afterwards).
#
# Each phase proves, with n8n's own records (its execution_entity/execution_data
# tables) and the relay's tables:
#   1. every one of the 11 events reaches its receiver on /webhook/<event-with-dashes>
#      verified, and the relay recorded every delivery as sent; the relay signs
#      mid-rotation (a newer secret n8n does not know yet, then n8n's), so each
#      receiver finds its signature among the ones the header lists. crypto: the
#      receiver's "signature valid" branch ran and none was rejected; nodes: each
#      delivery started exactly one execution of its receiver;
#   2. forged, wrongly signed and replayed-outside-the-window deliveries are answered
#      401 by n8n; nodes: and start no execution (the workflow's executions stay as
#      they were);
#   3. the approval workflow's signed callbacks (workflow-status, demo-approval,
#      video-approval, workflow-completed) were accepted by the relay and changed the
#      rows: the demo and the video are approved, which emits demo_completed and
#      video_completed, delivered in turn; the workflow run is recorded;
#   4. a failing callback (approval of a demo that does not exist) stops the approval
#      run and the error workflow's signed error-notification comes back as a
#      workflow_error event.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N8N_VERSION=1.123.81
N8N_CACHE=${N8N_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/n8n-relay/n8n-$N8N_VERSION}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
N8N_PORT=${N8N_PORT:-5678}
CALLBACKS_PORT=${CALLBACKS_PORT:-18000}
METRICS_PORT=${METRICS_PORT:-19187}
PHASES=${PHASES:-crypto nodes nodes-standard}
RUN=$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/n8n-relay-e2e.XXXXXX")
DATABASES=()
N8N_PID=""
RELAY_PID=""
PASSED=0
FAILED=0

for phase in $PHASES; do
    case $phase in
        crypto | nodes | nodes-standard) ;;
        *) echo "unknown phase '$phase' in PHASES (crypto, nodes, nodes-standard)" >&2; exit 2 ;;
    esac
done

say() { printf '== %s\n' "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
pass() { PASSED=$((PASSED + 1)); printf '  ok   %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf '  FAIL %s\n' "$*"; }

stop() { # PID: SIGTERM, then SIGKILL after 15 s
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    stop "$RELAY_PID"
    stop "$N8N_PID"
    if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ] || [ "$FAILED" != 0 ]; then
        echo "kept for a look: $WORK (<phase>/n8n.log, <phase>/relay.log), databases ${DATABASES[*]:-none}"
        echo "  drop them with: for db in ${DATABASES[*]:-}; do dropdb \$db; done; rm -rf $WORK"
    else
        for db in "${DATABASES[@]}"; do dropdb --if-exists "$db" || true; done
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Polls COMMAND every half second until it succeeds, or fails the run after SECONDS.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${seconds}s waiting for: $what"
        sleep 0.5
    done
}

sql() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$1" -c "$2"; }
http_code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check() { # DESCRIPTION SECONDS COMMAND...: passes once COMMAND succeeds within SECONDS
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then fail "$what"; return 0; fi
        sleep 0.5
    done
    pass "$what"
}
is() { [ "$(sql "$1" "$2")" = "$3" ]; }
random_hex() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
# A Standard Webhooks secret: whsec_ and base64 of 32 random bytes.
random_whsec() { printf 'whsec_%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"; }

EVENTS=(lead_scraped lead_qualified demo_completed demo_failed video_completed video_failed
    email_sent email_failed lead_responded approval_requested workflow_error)

# ---------------------------------------------------------------------------------
say "n8n $N8N_VERSION in $N8N_CACHE"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
    || die "n8n $N8N_VERSION needs Node >= 20.19 (found $(node --version))"
N8N="$N8N_CACHE/node_modules/.bin/n8n"
if [ ! -x "$N8N" ] || [ "$(cd "$N8N_CACHE" && node -p 'require("n8n/package.json").version' 2>/dev/null)" != "$N8N_VERSION" ]; then
    mkdir -p "$N8N_CACHE"
    # Two overrides (see shared notes): n8n-nodes-base pins xlsx to a tarball outside
    # the registry, and @n8n/expression-runtime wants isolated-vm 6, which needs Node 22.
    cat >"$N8N_CACHE/package.json" <<EOF
{
  "name": "n8n-relay-e2e-n8n",
  "private": true,
  "dependencies": { "n8n": "$N8N_VERSION" },
  "overrides": { "xlsx": "0.18.5", "isolated-vm": "5.0.4" }
}
EOF
    echo "installing (about 1.8 GB, about 5 minutes the first time)..."
    (cd "$N8N_CACHE" && npm install --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1 \
        || { tail -n 30 "$WORK/npm.log"; die "npm install n8n@$N8N_VERSION"; }
fi
# n8n's default expression engine loads the isolated-vm addon; build it if npm did not.
if ! (cd "$N8N_CACHE" && node -e 'require("isolated-vm")') 2>/dev/null; then
    echo "building isolated-vm against the local Node headers..."
    gyp="$N8N_CACHE/node_modules/node-gyp/bin/node-gyp.js"
    (cd "$N8N_CACHE/node_modules/isolated-vm" && node "$gyp" rebuild --release --nodedir=/usr) \
        >"$WORK/isolated-vm.log" 2>&1 || { tail -n 20 "$WORK/isolated-vm.log"; die "isolated-vm build"; }
fi

say "n8n-relay"
if [ -n "${N8N_RELAY_BIN:-}" ]; then
    BIN=$N8N_RELAY_BIN
else
    (cd "$ROOT" && cargo build --quiet --bin n8n-relay)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/n8n-relay"
fi
[ -x "$BIN" ] || die "no n8n-relay binary at $BIN"

for port in "$N8N_PORT" "$CALLBACKS_PORT" "$METRICS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is taken (set N8N_PORT, CALLBACKS_PORT, METRICS_PORT)"
    fi
done


# The package goes where n8n's Settings -> Community nodes puts one: `npm pack`, then
# extracted into <n8n user folder>/.n8n/nodes/node_modules/<name> (it has no
# dependencies of its own; n8n provides n8n-workflow). n8n loads packages from there
# whatever N8N_COMMUNITY_PACKAGES_ENABLED says; that setting only hides the installer.
N8N_HOME="$WORK/n8n"
if [[ " $PHASES " == *" nodes"* ]]; then
    say "n8n-nodes-n8n-relay: npm ci, npm test, npm pack, install into n8n"
    (cd "$ROOT/deploy/n8n/nodes" && npm ci --no-audit --no-fund --loglevel=error && npm test) \
        >"$WORK/nodes-package.log" 2>&1 || { tail -n 30 "$WORK/nodes-package.log"; die "the nodes package's build or unit tests"; }
    TARBALL=$(cd "$ROOT/deploy/n8n/nodes" && npm pack --pack-destination "$WORK" --silent 2>>"$WORK/nodes-package.log" | tail -n 1)
    [ -f "$WORK/$TARBALL" ] || die "npm pack made no tarball (see $WORK/nodes-package.log)"
    PACKAGE_DIR="$N8N_HOME/.n8n/nodes/node_modules/n8n-nodes-n8n-relay"
    mkdir -p "$PACKAGE_DIR"
    tar -xzf "$WORK/$TARBALL" -C "$PACKAGE_DIR" --strip-components=1
    echo "installed $TARBALL"
fi

# ---------------------------------------------------------------------------------
# One phase: fresh databases, the phase's workflows, n8n and the relay, every event,
# the checks, then both processes stopped.
run_phase() {
    local name=$1 workflows scheme kind
    case $name in
        crypto) kind=crypto; scheme=x-webhook-signature; workflows="$ROOT/deploy/n8n/workflows" ;;
        nodes) kind=nodes; scheme=x-webhook-signature; workflows="$ROOT/deploy/n8n/workflows/nodes" ;;
        nodes-standard) kind=nodes; scheme=standard-webhooks; workflows="$ROOT/deploy/n8n/workflows/nodes" ;;
    esac
    local dir="$WORK/$name"
    mkdir -p "$dir"
    local secret=random_hex
    [ "$scheme" = standard-webhooks ] && secret=random_whsec
    WEBHOOK_SECRET=$($secret)
    N8N_WEBHOOK_SECRET=$($secret)
    # A secret rotation in progress: the relay also signs with a newer secret, first.
    ROTATED_SECRET=$($secret)
    local suffix=${name//-/_}
    N8N_DB=n8n_e2e_${RUN}_$suffix
    RELAY_DB=relay_e2e_${RUN}_$suffix

    echo
    say "phase $name ($scheme, $(basename "$workflows")/): databases $RELAY_DB (relay) and $N8N_DB (n8n)"
    createdb "$RELAY_DB"
    DATABASES+=("$RELAY_DB")
    createdb "$N8N_DB"
    DATABASES+=("$N8N_DB")

    relay_env=(
        PATH="$PATH"
        DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$RELAY_DB"
        N8N_BASE_URL="http://127.0.0.1:$N8N_PORT"
        N8N_WEBHOOK_BASE_URL="http://127.0.0.1:$N8N_PORT"
        RELAY_SECURITY__SCHEME="$scheme"
        WEBHOOK_SECRET="$WEBHOOK_SECRET"
        RELAY_SECURITY__WEBHOOK_SECRETS="[\"$ROTATED_SECRET\"]"
        N8N_WEBHOOK_SECRET="$N8N_WEBHOOK_SECRET"
        RELAY_CALLBACKS__LISTEN="127.0.0.1:$CALLBACKS_PORT"
        RELAY_METRICS__LISTEN="127.0.0.1:$METRICS_PORT"
        RELAY_DATABASE__POOL_SIZE=4
        WEBHOOK_RETRY_DELAYS="1,2,3"
        WEBHOOK_QUEUE_PROCESSING_INTERVAL=1
    )
    relay() { (cd "$dir" && env -i "${relay_env[@]}" "$BIN" "$@"); }

    n8n_env=(
        PATH="$PATH" HOME="$WORK"
        DB_TYPE=postgresdb DB_POSTGRESDB_HOST="$PGHOST" DB_POSTGRESDB_PORT="$PGPORT"
        DB_POSTGRESDB_USER="$PGUSER" DB_POSTGRESDB_DATABASE="$N8N_DB"
        N8N_USER_FOLDER="$N8N_HOME" N8N_LISTEN_ADDRESS=127.0.0.1 N8N_PORT="$N8N_PORT"
        WEBHOOK_URL="http://127.0.0.1:$N8N_PORT/"
        N8N_DIAGNOSTICS_ENABLED=false N8N_VERSION_NOTIFICATIONS_ENABLED=false
        N8N_PERSONALIZATION_ENABLED=false N8N_TEMPLATES_ENABLED=false
        N8N_COMMUNITY_PACKAGES_ENABLED=false N8N_RUNNERS_ENABLED=false
        N8N_ENCRYPTION_KEY="e2e-$RUN" N8N_DEFAULT_BINARY_DATA_MODE=default
        N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS=true
        # What the crypto workflows read through $env (the node workflows use a credential):
        N8N_BLOCK_ENV_ACCESS_IN_NODE=false
        WEBHOOK_SECRET="$WEBHOOK_SECRET"
        N8N_WEBHOOK_SECRET="$N8N_WEBHOOK_SECRET"
        N8N_RELAY_CALLBACK_BASE_URL="http://127.0.0.1:$CALLBACKS_PORT"
    )
    n8n() { (cd "$dir" && env -i "${n8n_env[@]}" "$N8N" "$@"); }

    say "schema: n8n-relay migrate --example-tables"
    relay migrate --example-tables >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log"; die "migrate"; }

    say "workflows: import and activate"
    n8n import:workflow --separate --input="$workflows" >"$dir/import.log" 2>&1 \
        || { tail -n 20 "$dir/import.log"; die "n8n import:workflow"; }
    if [ "$kind" = nodes ]; then
        # The credential the node workflows name (id n8n-relay): n8n encrypts it on import.
        # It knows only WEBHOOK_SECRET, not the newer one the relay signs with first.
        local credentials="$dir/credentials.json"
        (umask 077 && cat >"$credentials" <<EOF
[{"id": "n8n-relay", "name": "n8n-relay", "type": "n8nRelayApi",
  "data": {"scheme": "$scheme", "deliverySecret": "$WEBHOOK_SECRET", "deliverySecretNext": "",
           "callbackSecret": "$N8N_WEBHOOK_SECRET",
           "callbackBaseUrl": "http://127.0.0.1:$CALLBACKS_PORT"}}]
EOF
        )
        n8n import:credentials --input="$credentials" >>"$dir/import.log" 2>&1 \
            || { rm -f "$credentials"; tail -n 20 "$dir/import.log"; die "n8n import:credentials"; }
        rm -f "$credentials"
    fi
    n8n update:workflow --all --active=true >>"$dir/import.log" 2>&1 || die "activate workflows"
    # An Error Trigger workflow runs when another fails; it is never activated.
    n8n update:workflow --id=n8n-relay-error-report --active=false >>"$dir/import.log" 2>&1 \
        || die "deactivate the error workflow"

    say "start n8n on 127.0.0.1:$N8N_PORT"
    (cd "$dir" && exec env -i "${n8n_env[@]}" "$N8N" start >"$dir/n8n.log" 2>&1) &
    N8N_PID=$!
    ready() { [ "$(http_code "http://127.0.0.1:$N8N_PORT/healthz/readiness")" = 200 ]; }
    wait_for "n8n readiness" 120 ready
    # A production webhook is live once its CORS preflight answers 204.
    live() {
        [ "$(http_code -X OPTIONS -H 'Origin: http://127.0.0.1' \
            -H 'Access-Control-Request-Method: POST' "http://127.0.0.1:$N8N_PORT/webhook/$1")" = 204 ]
    }
    for event in "${EVENTS[@]}"; do
        wait_for "n8n webhook /webhook/${event//_/-} (see $dir/n8n.log)" 60 live "${event//_/-}"
    done

    say "start n8n-relay run (callbacks 127.0.0.1:$CALLBACKS_PORT, metrics 127.0.0.1:$METRICS_PORT)"
    (cd "$dir" && exec env -i "${relay_env[@]}" RUST_LOG=info "$BIN" run >"$dir/relay.log" 2>&1) &
    RELAY_PID=$!
    relay_ready() { [ "$(http_code "http://127.0.0.1:$METRICS_PORT/readyz")" = 200 ]; }
    wait_for "the relay's /readyz" 60 relay_ready

    say "business writes: every event"
    LEAD=$(sql "$RELAY_DB" "INSERT INTO leads (business_name, email) VALUES ('Acme Inc', 'hello@acme.test') RETURNING id")
    sql "$RELAY_DB" "
        UPDATE leads SET status = 'qualified', score = 0.85 WHERE id = $LEAD;
        UPDATE leads SET outreach_status = 'sent', outreach_subject = 'Your demo' WHERE id = $LEAD;
        UPDATE leads SET outreach_status = 'failed', outreach_error = 'mailbox full' WHERE id = $LEAD;
        UPDATE leads SET status = 'responded', response_message = 'Interested!' WHERE id = $LEAD;"
    DEMO=$(sql "$RELAY_DB" "INSERT INTO demo_sites (lead_id, status, url) VALUES ($LEAD, 'pending_approval', 'https://demo.acme.test') RETURNING id")
    VIDEO=$(sql "$RELAY_DB" "INSERT INTO videos (lead_id, demo_site_id, status, url) VALUES ($LEAD, $DEMO, 'pending_approval', 'https://video.acme.test') RETURNING id")
    sql "$RELAY_DB" "
        INSERT INTO demo_sites (lead_id, status, error_message) VALUES ($LEAD, 'failed', 'build failed');
        INSERT INTO videos (lead_id, status, error_message) VALUES ($LEAD, 'failed', 'render failed');"
    relay emit workflow_error --entity-type workflow --entity-id 0 \
        --data '{"workflow_name":"tests/n8n/run.sh","error":"a deliberate test error"}' >/dev/null
    # An approval the relay must refuse (no such demo): the approval run fails, and the
    # error workflow reports it back as workflow_error.
    relay emit approval_requested --entity-type demo_site --entity-id 999999 \
        --data "{\"approval_type\":\"demo\",\"entity_id\":999999,\"demo_site_id\":999999,\"lead_id\":$LEAD}" >/dev/null

    say "what came back ($name)"
    check "demo $DEMO approved by n8n's signed demo-approval callback" 60 \
        is "$RELAY_DB" "SELECT status FROM demo_sites WHERE id = $DEMO" approved
    check "video $VIDEO approved by n8n's signed video-approval callback" 60 \
        is "$RELAY_DB" "SELECT status FROM videos WHERE id = $VIDEO" approved
    check "the approval loop closed: demo_completed for demo $DEMO delivered" 60 \
        is "$RELAY_DB" "SELECT count(*) FROM webhook_queue WHERE event_type = 'demo_completed' AND entity_id = $DEMO AND status = 'sent'" 1
    check "workflow runs recorded by workflow-status/workflow-completed (2 successful)" 60 \
        is "$RELAY_DB" "SELECT count(*) FROM workflow_runs WHERE status = 'success' AND workflow_id = 'n8n-relay-approval-requested'" 2
    check "the failed approval came back as a workflow_error event (error workflow)" 60 \
        is "$RELAY_DB" "SELECT count(*) > 0 FROM (SELECT payload FROM webhook_events WHERE event_type = 'workflow_error' UNION ALL SELECT payload FROM webhook_queue WHERE event_type = 'workflow_error') e WHERE payload::text LIKE '%n8n-relay-approval-requested%'" t
    check "all 11 event types delivered and recorded as sent" 90 \
        is "$RELAY_DB" "SELECT count(DISTINCT event_type) FROM webhook_queue WHERE status = 'sent'" 11
    check "nothing left pending, retrying or failed" 90 \
        is "$RELAY_DB" "SELECT count(*) FROM webhook_queue WHERE status <> 'sent'" 0
    check "no delivery was ever answered 401 (n8n accepted every signature)" 5 \
        is "$RELAY_DB" "SELECT count(*) FROM webhook_logs WHERE direction = 'outgoing' AND response_status = 401" 0
    check "the error workflow ran and its callback succeeded" 30 \
        is "$N8N_DB" "SELECT count(*) > 0 FROM execution_entity WHERE \"workflowId\" = 'n8n-relay-error-report' AND status = 'success'" t

    # n8n's own record of what its workflows did.
    executions() { sql "$N8N_DB" "SELECT count(*) FROM execution_entity WHERE \"workflowId\" = '$1'"; }
    if [ "$kind" = crypto ]; then
        runs_of() { # workflow id -> "verified rejected" counts over its executions
            sql "$N8N_DB" "SELECT count(*) FILTER (WHERE d.data LIKE '%\"Verified: respond 200\"%') || ' ' ||
                                  count(*) FILTER (WHERE d.data LIKE '%\"Rejected: respond 401\"%')
                           FROM execution_entity e JOIN execution_data d ON d.\"executionId\" = e.id
                           WHERE e.\"workflowId\" = '$1'"
        }
        verified_only() { local ok bad; read -r ok bad <<<"$(runs_of "$1")"; [ "$ok" -ge 1 ] && [ "$bad" = 0 ]; }
        for event in "${EVENTS[@]}"; do
            id="n8n-relay-${event//_/-}"
            check "n8n verified the signature of $event (workflow $id: signature-valid branch ran, none rejected)" 30 \
                verified_only "$id"
        done
    else
        # The trigger starts an execution only for a verified delivery, so: one execution
        # per delivery the relay recorded as sent, each carrying the event it verified.
        one_run_per_delivery() { # event
            local id="n8n-relay-${1//_/-}" sent runs carried
            sent=$(sql "$RELAY_DB" "SELECT count(*) FROM webhook_queue WHERE event_type = '$1' AND status = 'sent'")
            runs=$(executions "$id")
            carried=$(sql "$N8N_DB" "SELECT count(*) FROM execution_entity e JOIN execution_data d ON d.\"executionId\" = e.id
                                     WHERE e.\"workflowId\" = '$id' AND d.data LIKE '%\"$1\"%'")
            [ "$sent" -ge 1 ] && [ "$runs" = "$sent" ] && [ "$carried" = "$sent" ]
        }
        for event in "${EVENTS[@]}"; do
            check "the n8n-relay Trigger verified $event: one execution of n8n-relay-${event//_/-} per delivery sent" 30 \
                one_run_per_delivery "$event"
        done
    fi

    # Deliveries straight to n8n that must be refused: a made-up signature, one made with
    # the wrong secret, and a correctly signed one replayed 10 minutes later.
    local body='{"id":"forged","event":"lead_scraped","occurred_at":"2025-11-04T12:00:00Z","entity_type":"lead","entity_id":1,"data":{"lead_id":1}}'
    refused() { # extra curl header arguments...
        [ "$(http_code -X POST -H 'Content-Type: application/json' -H 'X-Webhook-Id: forged' \
            -H 'X-Webhook-Event: lead_scraped' -H 'X-Webhook-Attempt: 1' "$@" --data-binary "$body" \
            "http://127.0.0.1:$N8N_PORT/webhook/lead-scraped")" = 401 ]
    }
    sign() { # --id only where the scheme signs one (the default refuses it)
        local -a id=()
        if [ "$scheme" = standard-webhooks ]; then id=(--id msg_forged); fi
        printf '%s' "$body" | relay sign --scheme "$scheme" "${id[@]}" "$@"
    }
    local before made_up
    before=$(executions n8n-relay-lead-scraped)
    if [ "$scheme" = standard-webhooks ]; then
        made_up=(-H "webhook-id: msg_forged" -H "webhook-timestamp: $(date +%s)"
            -H "webhook-signature: v1,$(head -c 32 /dev/zero | base64)")
    else
        made_up=(-H "X-Webhook-Timestamp: $(date +%s)" -H "X-Webhook-Signature-256: $(printf '0%.0s' $(seq 64))")
    fi
    check "n8n answers 401 to a made-up signature" 10 refused "${made_up[@]}"
    local -a wrong=() stale=() headers=()
    mapfile -t wrong < <(sign --secret "$($secret)")
    headers=(); for h in "${wrong[@]}"; do headers+=(-H "$h"); done
    check "n8n answers 401 to a signature made with the wrong secret" 10 refused "${headers[@]}"
    mapfile -t stale < <(sign --secret "$WEBHOOK_SECRET" --timestamp $(($(date +%s) - 600)))
    headers=(); for h in "${stale[@]}"; do headers+=(-H "$h"); done
    check "n8n answers 401 to a correct signature that is 10 minutes old (a replay outside the window)" 10 \
        refused "${headers[@]}"
    if [ "$kind" = nodes ]; then
        sleep 2
        check "none of the refused deliveries started an execution (n8n's executions of n8n-relay-lead-scraped: still $before)" 5 \
            is "$N8N_DB" "SELECT count(*) FROM execution_entity WHERE \"workflowId\" = 'n8n-relay-lead-scraped'" "$before"
        # And the control: the same request correctly signed now is accepted and runs.
        local -a good=()
        mapfile -t good < <(sign --secret "$WEBHOOK_SECRET")
        headers=(); for h in "${good[@]}"; do headers+=(-H "$h"); done
        accepted() {
            [ "$(http_code -X POST -H 'Content-Type: application/json' "${headers[@]}" --data-binary "$body" \
                "http://127.0.0.1:$N8N_PORT/webhook/lead-scraped")" = 200 ]
        }
        check "the same delivery signed correctly now is answered 200" 10 accepted
        check "... and started exactly one execution" 10 \
            is "$N8N_DB" "SELECT count(*) FROM execution_entity WHERE \"workflowId\" = 'n8n-relay-lead-scraped'" "$((before + 1))"
    fi

    stop "$RELAY_PID"
    RELAY_PID=""
    stop "$N8N_PID"
    N8N_PID=""
}

for phase in $PHASES; do
    run_phase "$phase"
done

echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
