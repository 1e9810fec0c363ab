#!/usr/bin/env bash
# The compose stack's database bootstrap: the equivalent of
# "scripts/pg.sh bootstrap" for the official postgres image, which runs it
# (mounted into /docker-entrypoint-initdb.d) once, on the first start of an
# empty data volume, as the postgres user against a server that listens on
# its unix socket only.
#
# Makes database m2m; roles auth_service and currency_service (LOGIN, nothing
# else) with the passwords from the secrets volume (docker/init-secrets.sh);
# one schema per service owned by its role, each role's search_path on its
# schema; nobody creates in public. Then restricts pg_hba.conf to those two
# roles on database m2m over TCP (scram-sha-256): the superuser only ever
# connects through the container's socket, as the postgres OS user
# (docker compose exec -u postgres postgres psql m2m). The daemons apply
# their own migrations at start. M2M_SECRETS_DIR (default /run/m2m-secrets)
# says where the password files are.
set -euo pipefail

SECRETS="${M2M_SECRETS_DIR:-/run/m2m-secrets}"
for role in auth_service currency_service; do
    [[ -s "$SECRETS/$role.password" ]] || {
        echo "postgres-init: error: no $SECRETS/$role.password (did the secrets service run?)" >&2
        exit 1
    }
done

# Passwords are read by psql itself (\set with backquotes): they never appear
# in an argv or the environment. The heredoc is quoted: bash expands nothing.
psql -X -q -v ON_ERROR_STOP=1 -v secrets="$SECRETS" \
    --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
\set auth_pw `cat :'secrets'/auth_service.password`
\set currency_pw `cat :'secrets'/currency_service.password`
SET password_encryption = 'scram-sha-256';
SELECT 'CREATE DATABASE m2m ENCODING ''UTF8''' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'm2m') \gexec
SELECT 'CREATE ROLE auth_service' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auth_service') \gexec
SELECT 'CREATE ROLE currency_service' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'currency_service') \gexec
ALTER ROLE auth_service WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'auth_pw';
ALTER ROLE currency_service WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'currency_pw';
SQL

psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname m2m <<'SQL'
SET client_min_messages = warning;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE m2m FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE m2m TO auth_service;
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION auth_service;
ALTER SCHEMA auth OWNER TO auth_service;
ALTER ROLE auth_service IN DATABASE m2m SET search_path = auth;
GRANT CONNECT, TEMPORARY ON DATABASE m2m TO currency_service;
CREATE SCHEMA IF NOT EXISTS currency AUTHORIZATION currency_service;
ALTER SCHEMA currency OWNER TO currency_service;
ALTER ROLE currency_service IN DATABASE m2m SET search_path = currency;
SQL

# Read when the entrypoint restarts the server after this script.
cat >"$PGDATA/pg_hba.conf" <<'HBA'
# Written by docker/postgres-init.sh (m2m compose stack).
# TYPE  DATABASE  USER                           ADDRESS  METHOD
local   all       postgres                                peer
host    m2m       auth_service,currency_service  all      scram-sha-256
HBA
echo "postgres-init: database m2m, roles auth_service and currency_service ready" >&2
