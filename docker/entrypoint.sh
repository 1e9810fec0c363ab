#!/usr/bin/env bash
# Entry point of the daemons' image (docker/Dockerfile): runs COMMAND [ARGS...]
# (auth-service, crypto-server, crypto-client, or e.g.
# "auth-service client create --id admin-cli ...") after one preparation:
#
#   M2M_DB_PASSWORD_FILE  a file holding the daemon's PostgreSQL password
#                         (docker-compose.yml: the secrets volume). It is
#                         written into a private pgpass file (0600, in $TMPDIR)
#                         and PGPASSFILE points libpq at it, so the password
#                         is never in the environment, argv or the
#                         connection string.
set -euo pipefail

die() {
    printf 'm2m-entrypoint: error: %s\n' "$*" >&2
    exit 1
}

(($# >= 1)) || die "usage: m2m-entrypoint COMMAND [ARGS...]"

if [[ -n "${M2M_DB_PASSWORD_FILE:-}" ]]; then
    [[ -r "$M2M_DB_PASSWORD_FILE" ]] || die "M2M_DB_PASSWORD_FILE: cannot read $M2M_DB_PASSWORD_FILE (did the secrets service run?)"
    pw="$(<"$M2M_DB_PASSWORD_FILE")"
    [[ -n "$pw" ]] || die "M2M_DB_PASSWORD_FILE: $M2M_DB_PASSWORD_FILE is empty"
    # pgpass escapes: backslash and colon.
    pw="${pw//\\/\\\\}"
    pw="${pw//:/\\:}"
    passfile="$(mktemp "${TMPDIR:-/tmp}/pgpass.XXXXXX")"
    printf '*:*:*:*:%s\n' "$pw" >"$passfile"
    unset pw
    export PGPASSFILE="$passfile"
fi
unset M2M_DB_PASSWORD_FILE

exec "$@"
