#!/bin/sh
# Writes the relay's secrets for compose.yaml from deploy/.env into deploy/secrets/,
# one private file each (owner: the relay's uid in the image, 10001; mode 0600: the
# relay refuses a secret file that others can read). Run it from deploy/ after
# editing .env, and again whenever a secret in .env changes. Needs root (or sudo) for
# the chown.
set -eu
cd "$(dirname "$0")"
[ -f .env ] || { echo "deploy/.env not found: install -m 600 compose.env.example .env and set the secrets" >&2; exit 1; }
# shellcheck disable=SC1091
. ./.env
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in deploy/.env}"
: "${WEBHOOK_SECRET:?set WEBHOOK_SECRET in deploy/.env}"
: "${N8N_WEBHOOK_SECRET:?set N8N_WEBHOOK_SECRET in deploy/.env}"
umask 077
# .env holds every secret of the stack: readable by its owner only.
chmod 0600 .env
mkdir -p secrets
printf %s "$POSTGRES_PASSWORD" > secrets/relay_database_password
printf %s "$WEBHOOK_SECRET" > secrets/relay_webhook_secret
printf %s "$N8N_WEBHOOK_SECRET" > secrets/relay_n8n_webhook_secret
chown 10001:10001 secrets/relay_database_password secrets/relay_webhook_secret \
    secrets/relay_n8n_webhook_secret
chmod 0600 secrets/relay_*
echo "wrote deploy/secrets/relay_* (owner 10001, mode 0600)"
