#!/usr/bin/env bash
# m2m-init-secrets [DIR]: the PostgreSQL passwords of the compose stack, made
# once (random, 256 bits, hex) in DIR (default /run/m2m-secrets, the secrets
# volume) and kept on later runs. Run as root by docker-compose.yml's
# one-shot "secrets" service before postgres and the daemons start.
#
#   postgres.password          the superuser's   (uid 999: the postgres image's user)
#   auth_service.password      role auth_service      (m2m-auth + group 999)
#   currency_service.password  role currency_service  (m2m-currency + group 999)
#
# Each file is readable by the daemon that needs it and by the postgres
# container (which sets the roles' passwords from them on its first start,
# docker/postgres-init.sh), and by no one else. To bring your own passwords,
# write these files into the volume before the first start.
set -euo pipefail

dir="${1:-/run/m2m-secrets}"
PG_UID=999 # the official postgres image's postgres user and group
PG_GID=999

die() {
    printf 'm2m-init-secrets: error: %s\n' "$*" >&2
    exit 1
}

[[ "$(id -u)" -eq 0 ]] || die "must run as root (it sets owners)"
[[ -d "$dir" ]] || die "no directory $dir"
umask 077

secret() {
    local name="$1" owner="$2" mode="$3" f="$dir/$1"
    if [[ ! -s "$f" ]]; then
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$f.tmp"
        mv -f -- "$f.tmp" "$f"
        printf 'm2m-init-secrets: made %s\n' "$name" >&2
    fi
    chmod "$mode" -- "$f"
    chown "$owner" -- "$f"
}

chown 0:0 -- "$dir"
chmod 0711 -- "$dir" # traverse, not list
secret postgres.password "$PG_UID:$PG_GID" 0400
secret auth_service.password "m2m-auth:$PG_GID" 0440
secret currency_service.password "m2m-currency:$PG_GID" 0440
