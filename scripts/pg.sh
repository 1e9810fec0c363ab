#!/usr/bin/env bash
# Manage a private PostgreSQL cluster (never the Debian system cluster).
#
#   scripts/pg.sh init DIR PORT      create DIR/data (initdb) if needed; (re)write settings
#   scripts/pg.sh start DIR          start it (no-op if running)
#   scripts/pg.sh stop DIR           fast shutdown (no-op if stopped)
#   scripts/pg.sh status DIR         exit 0 if running, 3 if not
#   scripts/pg.sh bootstrap DIR      database m2m, roles/schemas; prints auth_service conninfo
#   scripts/pg.sh conninfo DIR ROLE  print the libpq conninfo for ROLE
#   scripts/pg.sh exec DIR PORT|- SQL...  run SQL as superuser (database $PGDB, default m2m)
#
# Layout of DIR: data/ (postgres, 0700)  run/ (unix socket)  log/postgres.log
#                secrets/ (root, 0700: <role>.password, pgpass)  port
# Progress goes to stderr; stdout carries only the conninfo lines.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROLES=(auth_service currency_service)
declare -A ROLE_SCHEMA=([auth_service]=auth [currency_service]=currency)

pg_bindir() {
    if [[ -n "${PG_BINDIR:-}" ]]; then
        printf '%s\n' "$PG_BINDIR"
        return
    fi
    local d
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$d" && -x "$d/initdb" ]] || m2m_die "PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/deps.sh)"
    printf '%s\n' "$d"
}

# Run a command as the postgres system user, from a directory it can read.
as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

usage() {
    m2m_usage "${BASH_SOURCE[0]}" >&2
    exit 2
}

check_dir_name() {
    local dir="$1"
    [[ "$dir" != *[\'\"\\[:space:]]* ]] || m2m_die "DIR must not contain quotes, backslashes or spaces: $dir"
    # sun_path is 108 bytes: DIR/run/.s.PGSQL.NNNNN plus its NUL must fit.
    ((${#dir} + 22 <= 107)) || m2m_die "DIR is too long for a unix socket path (${#dir} chars, max 85): $dir"
}

check_port() {
    if ! [[ "$1" =~ ^[0-9]{1,5}$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then
        m2m_die "bad port: $1"
    fi
}

# postgres must be able to traverse every ancestor of DIR. Add the search bit
# (o+x, never read) where it is missing, e.g. on a mktemp -d directory.
make_traversable() {
    local d="$1"
    local -a chain=()
    while [[ "$d" != / ]]; do
        chain=("$d" "${chain[@]}")
        d="$(dirname "$d")"
    done
    # From the top down, so that each test only fails for its own directory.
    for d in "${chain[@]}"; do
        [[ -d "$d" ]] || break
        if ! as_postgres test -x "$d"; then
            m2m_info "adding o+x to $d so that the postgres user can reach the cluster"
            chmod o+x -- "$d"
        fi
    done
}

stored_port() {
    local dir="$1"
    [[ -f "$dir/port" ]] || m2m_die "no cluster in $dir (run: $0 init $dir PORT)"
    local p
    p="$(<"$dir/port")"
    check_port "$p"
    printf '%s\n' "$p"
}

is_running() {
    local dir="$1"
    [[ -f "$dir/data/PG_VERSION" ]] || return 1
    as_postgres "$(pg_bindir)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

# psql as the superuser over the unix socket (peer authentication).
su_psql() {
    local dir="$1" port="$2" db="$3"
    shift 3
    as_postgres "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$dir/run" -p "$port" -d "$db" "$@"
}

cmd_init() {
    (($# == 2)) || usage
    m2m_require_root
    local dir port bindir
    dir="$(m2m_abspath "$1")"
    port="$2"
    check_dir_name "$dir"
    check_port "$port"
    port=$((10#$port))
    bindir="$(pg_bindir)"
    id postgres >/dev/null 2>&1 || m2m_die "no postgres system user (run scripts/deps.sh)"

    mkdir -p -- "$dir"
    chmod 0755 -- "$dir"
    install -d -o postgres -g postgres -m 0700 -- "$dir/data" "$dir/run" "$dir/log"
    install -d -o root -g root -m 0700 -- "$dir/secrets"
    make_traversable "$dir"

    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        m2m_info "initdb $dir/data"
        if ! as_postgres "$bindir/initdb" -D "$dir/data" -U postgres \
            --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 --no-sync >"$dir/log/initdb.log" 2>&1; then
            cat "$dir/log/initdb.log" >&2
            m2m_die "initdb failed"
        fi
        printf "\n# Settings managed by scripts/pg.sh\ninclude_if_exists = 'm2m.conf'\n" >>"$dir/data/postgresql.conf"
    fi

    # Rewritten on every init so that a changed PORT (or DIR) takes effect.
    local conf
    conf="$(mktemp)"
    cat >"$conf" <<CONF
# Written by scripts/pg.sh init; rewritten on every run.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
logging_collector = off
password_encryption = scram-sha-256
CONF
    install -o postgres -g postgres -m 0600 -- "$conf" "$dir/data/m2m.conf"
    cat >"$conf" <<HBA
# Written by scripts/pg.sh init; rewritten on every run.
# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       postgres                peer
host    m2m       all       127.0.0.1/32  scram-sha-256
HBA
    install -o postgres -g postgres -m 0600 -- "$conf" "$dir/data/pg_hba.conf"
    rm -f -- "$conf"
    printf '%s\n' "$port" >"$dir/port"

    if is_running "$dir"; then
        as_postgres "$bindir/pg_ctl" -D "$dir/data" reload -s >/dev/null ||
            m2m_warn "reload failed"
        m2m_info "cluster running; settings reloaded (a port change needs stop/start)"
    fi
    m2m_info "cluster ready in $dir (port $port)"
}

cmd_start() {
    (($# == 1)) || usage
    m2m_require_root
    local dir
    dir="$(m2m_abspath "$1")"
    [[ -f "$dir/data/PG_VERSION" ]] || m2m_die "no cluster in $dir (run: $0 init $dir PORT)"
    if is_running "$dir"; then
        m2m_info "already running ($dir)"
        return 0
    fi
    make_traversable "$dir"
    install -d -o postgres -g postgres -m 0700 -- "$dir/run" "$dir/log"
    if ! as_postgres "$(pg_bindir)/pg_ctl" -D "$dir/data" -l "$dir/log/postgres.log" \
        -w -t 60 -s start; then
        tail -n 20 "$dir/log/postgres.log" >&2 || true
        m2m_die "could not start PostgreSQL in $dir (log: $dir/log/postgres.log)"
    fi
    m2m_info "started ($dir, port $(stored_port "$dir"))"
}

cmd_stop() {
    (($# == 1)) || usage
    m2m_require_root
    local dir
    dir="$(m2m_abspath "$1")"
    if ! is_running "$dir"; then
        m2m_info "not running ($dir)"
        return 0
    fi
    as_postgres "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 60 -s stop
    m2m_info "stopped ($dir)"
}

cmd_status() {
    (($# == 1)) || usage
    m2m_require_root
    local dir
    dir="$(m2m_abspath "$1")"
    if is_running "$dir"; then
        echo "running ($dir, port $(stored_port "$dir"))"
        return 0
    fi
    echo "not running ($dir)"
    return 3
}

conninfo_line() {
    local dir="$1" port="$2" role="$3"
    printf 'host=127.0.0.1 port=%s dbname=m2m user=%s passfile=%s connect_timeout=3\n' \
        "$port" "$role" "$dir/secrets/pgpass"
}

cmd_bootstrap() {
    (($# == 1)) || usage
    m2m_require_root
    local dir port
    dir="$(m2m_abspath "$1")"
    port="$(stored_port "$dir")"
    is_running "$dir" || m2m_die "cluster in $dir is not running (run: $0 start $dir)"
    install -d -o root -g root -m 0700 -- "$dir/secrets"

    local role pw sql
    declare -A pws=()
    for role in "${ROLES[@]}"; do
        local f="$dir/secrets/$role.password"
        if [[ ! -s "$f" ]]; then
            (umask 077 && openssl rand -hex 32 >"$f.tmp" && mv -f -- "$f.tmp" "$f")
        fi
        chmod 0600 -- "$f"
        pw="$(<"$f")"
        [[ "$pw" =~ ^[0-9a-f]{64}$ ]] || m2m_die "$f does not hold a 64-digit hex password"
        pws[$role]="$pw"
    done

    # Database and roles (cluster-wide). SQL goes through stdin, never argv, so
    # passwords do not show up in ps.
    sql="SELECT 'CREATE DATABASE m2m ENCODING ''UTF8''' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'm2m') \\gexec"$'\n'
    for role in "${ROLES[@]}"; do
        sql+="SELECT 'CREATE ROLE $role' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') \\gexec"$'\n'
        sql+="ALTER ROLE $role WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '${pws[$role]}';"$'\n'
    done
    printf '%s' "$sql" | su_psql "$dir" "$port" postgres -f - ||
        m2m_die "bootstrap (roles, database) failed"

    # Inside m2m: one schema per service, owned by its role; nobody creates in public.
    sql="SET client_min_messages = warning;"$'\n'
    sql+="REVOKE CREATE ON SCHEMA public FROM PUBLIC;"$'\n'
    sql+="REVOKE ALL ON DATABASE m2m FROM PUBLIC;"$'\n'
    for role in "${ROLES[@]}"; do
        sql+="GRANT CONNECT, TEMPORARY ON DATABASE m2m TO $role;"$'\n'
        sql+="CREATE SCHEMA IF NOT EXISTS ${ROLE_SCHEMA[$role]} AUTHORIZATION $role;"$'\n'
        sql+="ALTER SCHEMA ${ROLE_SCHEMA[$role]} OWNER TO $role;"$'\n'
        sql+="ALTER ROLE $role IN DATABASE m2m SET search_path = ${ROLE_SCHEMA[$role]};"$'\n'
    done
    printf '%s' "$sql" | su_psql "$dir" "$port" m2m -f - ||
        m2m_die "bootstrap (schemas) failed"

    local tmp
    tmp="$(umask 077 && mktemp "$dir/secrets/pgpass.XXXXXX")"
    for role in "${ROLES[@]}"; do
        printf '127.0.0.1:%s:m2m:%s:%s\n' "$port" "$role" "${pws[$role]}" >>"$tmp"
    done
    chmod 0600 -- "$tmp"
    mv -f -- "$tmp" "$dir/secrets/pgpass"
    m2m_info "bootstrapped m2m (roles: ${ROLES[*]})"
    conninfo_line "$dir" "$port" auth_service
}

cmd_conninfo() {
    (($# == 2)) || usage
    local dir role
    dir="$(m2m_abspath "$1")"
    role="$2"
    [[ -n "${ROLE_SCHEMA[$role]:-}" ]] || m2m_die "unknown role '$role' (known: ${ROLES[*]})"
    [[ -f "$dir/secrets/pgpass" ]] || m2m_die "no $dir/secrets/pgpass (run: $0 bootstrap $dir)"
    conninfo_line "$dir" "$(stored_port "$dir")" "$role"
}

cmd_exec() {
    (($# >= 3)) || usage
    m2m_require_root
    local dir port
    dir="$(m2m_abspath "$1")"
    port="$2"
    shift 2
    [[ "$port" == - ]] && port="$(stored_port "$dir")"
    check_port "$port"
    local -a args=()
    local s
    for s in "$@"; do
        args+=(-c "$s")
    done
    su_psql "$dir" "$port" "${PGDB:-m2m}" "${args[@]}"
}

(($# >= 1)) || usage
cmd="$1"
shift
case "$cmd" in
init) cmd_init "$@" ;;
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status "$@" ;;
bootstrap) cmd_bootstrap "$@" ;;
conninfo) cmd_conninfo "$@" ;;
exec) cmd_exec "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
