#!/usr/bin/env bash
# CPU instructions Postgres runs per single-row INSERT into `leads` (with the relay's
# triggers) and into `leads_bare` (the same table without them): a count that does not
# move with the neighbours on a shared host, where rates do by ±10 %.
#
# A scratch cluster gets the relay's SQL (sql/001-004 of this checkout), then a
# single-user backend runs N1 and N2 INSERTs (each its own transaction) under
# valgrind; (count(N2) - count(N1)) / (N2 - N1) leaves out start-up and shutdown.
# Optional: files of SQL (e.g. a CREATE OR REPLACE FUNCTION webhook_leads_emit()
# variant) to measure instead of the installed triggers, one figure each.
#
# Needs: PostgreSQL 15 server binaries, valgrind (apt-get install valgrind), and to
# run as root or as the postgres user (a backend refuses to run as root).
#   crates/n8n-relay-bench/insert-instructions.sh [variant.sql ...]
set -euo pipefail

BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
N1=${N1:-200}
N2=${N2:-1200}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 2; }

WORK=$(mktemp -d /tmp/insert-instructions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

as_pg "$BIN/initdb" -D "$WORK/data" -A trust >/dev/null
as_pg "$BIN/pg_ctl" -D "$WORK/data" -o "-p 5499 -k $WORK -c listen_addresses=''" \
    -l "$WORK/log" start -w >/dev/null
psql_scratch() { psql -h "$WORK" -p 5499 -U "$(as_pg whoami)" -q -v ON_ERROR_STOP=1 "$@"; }
psql_scratch -d postgres -c "CREATE DATABASE bench"
for f in "$ROOT"/sql/00{1,2,3,4}_*.sql; do psql_scratch -d bench -f "$f" >/dev/null 2>&1; done
psql_scratch -d bench -c "CREATE TABLE leads_bare (LIKE leads INCLUDING ALL)"
as_pg "$BIN/pg_ctl" -D "$WORK/data" stop -w >/dev/null

# $1 table, $2 rows, $3 optional SQL file run first (one statement per line in
# single-user mode: comments dropped, lines joined).
inserts() {
    if [ -n "${3:-}" ]; then sed -e 's/^ *--.*//' -e 's/ --.*//' "$3" | tr '\n' ' '; echo; fi
    echo "TRUNCATE leads CASCADE;"; echo "TRUNCATE leads_bare;"; echo "TRUNCATE webhook_events;"
    for _ in $(seq "$2"); do
        echo "INSERT INTO $1 (business_name, category, location, email, website) VALUES ('Bench Co', 'software', 'Berlin', 'lead@example.com', 'https://example.com');"
    done
}
count() { # table rows [sql]
    inserts "$@" > "$WORK/in.sql"
    as_pg valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        "$BIN/postgres" --single -D "$WORK/data" -c fsync=off bench < "$WORK/in.sql" 2>&1 >/dev/null \
        | awk '/I *refs/ { gsub(",", "", $4); print $4 }'
}
per_insert() { # table [sql]
    local a b
    a=$(count "$1" "$N1" "${2:-}"); b=$(count "$1" "$N2" "${2:-}")
    if [ -z "$a" ] || [ -z "$b" ]; then
        echo "valgrind printed no instruction count for $1 (is the backend starting?)" >&2
        exit 1
    fi
    echo $(( (b - a) / (N2 - N1) ))
}

bare=$(per_insert leads_bare)
printf '%-40s %9s instructions per INSERT\n' "leads_bare (no triggers)" "$bare"
installed=$(per_insert leads)
printf '%-40s %9s (+%s)\n' "leads (the installed triggers)" "$installed" "$(( installed - bare ))"
for variant in "$@"; do
    with=$(per_insert leads "$variant")
    printf '%-40s %9s (+%s)\n' "leads with $(basename "$variant")" "$with" "$(( with - bare ))"
done
