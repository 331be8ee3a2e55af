#!/usr/bin/env bash
# CPU instructions Postgres runs per single-row INSERT into `leads` (with the relay's
# triggers) and into `leads_bare` (the same table without them): a count that does not
# move with the neighbours on a shared host, where rates do by ±10 %. It misses
# contention between writers, so a change it favours still has to win in the rates.
#
# A scratch cluster gets the relay's SQL (sql/001-004 of this checkout), then a
# single-user backend runs N1 and N2 INSERTs (each its own transaction) under
# valgrind; (count(N2) - count(N1)) / (N2 - N1) leaves out start-up and shutdown.
# Optional arguments: files of SQL (e.g. a CREATE OR REPLACE FUNCTION
# webhook_leads_emit() variant), each applied with psql to its own copy of the
# installed cluster and counted there. WRITE=update counts an UPDATE that announces
# nothing instead of the INSERT.
#
# Needs: PostgreSQL server binaries (the newest under /usr/lib/postgresql, or PG_BIN),
# valgrind (apt-get install valgrind), and to run as root or as the postgres user (a
# backend refuses to run as root).
#   crates/n8n-relay-bench/insert-instructions.sh [variant.sql ...]
set -euo pipefail
shopt -s inherit_errexit

BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$BIN/postgres" ] || { echo "no PostgreSQL server binaries found: set PG_BIN" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 2; }
N1=${N1:-200}
N2=${N2:-1200}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

WORK=$(mktemp -d /tmp/insert-instructions.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
stop() { as_pg "$BIN/pg_ctl" -D "$1" stop -m fast -w >/dev/null 2>&1 || true; }
cleanup() {
    for d in "$WORK"/data*; do
        if [ -f "$d/postmaster.pid" ]; then stop "$d"; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

export PGOPTIONS='-c client_min_messages=warning'
start() { as_pg "$BIN/pg_ctl" -D "$1" -o "-p 5499 -k $WORK -c listen_addresses=''" -l "$WORK/log" start -w >/dev/null; }
psql_scratch() { psql -h "$WORK" -p 5499 -U "$(as_pg whoami)" -q -v ON_ERROR_STOP=1 "$@"; }

as_pg "$BIN/initdb" -D "$WORK/data" -A trust >/dev/null
start "$WORK/data"
psql_scratch -d postgres -c "CREATE DATABASE bench"
for f in "$ROOT"/sql/00{1,2,3,4}_*.sql; do psql_scratch -d bench -f "$f" >/dev/null; done
psql_scratch -d bench -c "CREATE TABLE leads_bare (LIKE leads INCLUDING ALL)"
stop "$WORK/data"

# $1 table, $2 rows: the single-user backend's input. WRITE=update counts instead an
# UPDATE of one lead that changes no column the triggers announce (its score).
inserts() {
    echo "TRUNCATE leads RESTART IDENTITY CASCADE;"; echo "TRUNCATE leads_bare;"; echo "TRUNCATE webhook_events;"
    local row="INSERT INTO $1 (business_name, category, location, email, website) VALUES ('Bench Co', 'software', 'Berlin', 'lead@example.com', 'https://example.com');"
    if [ "${WRITE:-insert}" = update ]; then
        echo "$row"
        row="UPDATE $1 SET score = 0.5 WHERE id = (SELECT min(id) FROM $1);"
    fi
    for _ in $(seq "$2"); do echo "$row"; done
}
# $1 data directory, $2 table, $3 rows: instructions for the whole run.
count() {
    local out
    inserts "$2" "$3" > "$WORK/in.sql"
    out=$(as_pg valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        "$BIN/postgres" --single -D "$1" -c fsync=off bench < "$WORK/in.sql" 2>&1)
    if grep -qE '(ERROR|FATAL):' <<<"$out"; then
        echo "the backend failed on $2:" >&2; grep -E '(ERROR|FATAL):' <<<"$out" | head -n 3 >&2
        exit 1
    fi
    awk '/I *refs/ { gsub(",", "", $4); print $4 }' <<<"$out"
}
# $1 data directory, $2 table: instructions per INSERT.
per_insert() {
    local a b
    a=$(count "$1" "$2" "$N1"); b=$(count "$1" "$2" "$N2")
    if [ -z "$a" ] || [ -z "$b" ]; then
        echo "valgrind printed no instruction count for $2" >&2
        exit 1
    fi
    echo $(( (b - a) / (N2 - N1) ))
}

bare=$(per_insert "$WORK/data" leads_bare)
printf '%-40s %9s instructions per %s\n' "leads_bare (no triggers)" "$bare" "${WRITE:-insert}"
installed=$(per_insert "$WORK/data" leads)
printf '%-40s %9s (+%s)\n' "leads (the installed triggers)" "$installed" "$(( installed - bare ))"
i=0
for variant in "$@"; do
    i=$((i + 1))
    copy="$WORK/data-$i"
    as_pg cp -a "$WORK/data" "$copy"
    start "$copy"
    psql_scratch -d bench -f "$variant" >/dev/null
    stop "$copy"
    with=$(per_insert "$copy" leads)
    printf '%-40s %9s (+%s)\n' "leads with $(basename "$variant")" "$with" "$(( with - bare ))"
done
