#!/usr/bin/env bash
# The local stack: PostgreSQL (private cluster in var/pg), auth-service,
# crypto-server, crypto-client (the agent) and nginx under supervisord.
# Everything listens on 127.0.0.1; state lives in var/.
#
#   scripts/run.sh [--no-deps] [--no-build]    run in the foreground; Ctrl-C stops all
#   scripts/run.sh --detach [...]              start, wait until healthy, return
#   scripts/run.sh stop                        stop supervisord and PostgreSQL
#   scripts/run.sh status                      programs, database, health
#   scripts/run.sh client ARGS...              run "auth-service client ARGS" with the
#                                              stack's environment, e.g. client create --id admin-cli
#
# Environment: PGPORT_LOCAL (default 5433), M2M_NGINX_ARGS (extra options for
# scripts/nginx-conf.sh, e.g. "--no-limit" for benchmarks), M2M_AGENT_CLIENT_ID
# (the agent's client id before any POST /api/configure; default crypto-client).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$M2M_ROOT"
VAR="$ROOT/var"
PGDIR="$VAR/pg"
PGPORT="${PGPORT_LOCAL:-5433}"
CONF="$VAR/supervisord.conf"
PIDFILE="$VAR/run/supervisord.pid"
LISTEN=127.0.0.1:8000
TLS_LISTEN=127.0.0.1:8443
TLS_DIR="$VAR/tls"
AUTH_PORT=9001
AUTH_METRICS_PORT=9101
CURRENCY_PORT=9002
CURRENCY_METRICS_PORT=9102
AGENT_LISTEN=127.0.0.1:8001
AGENT_PORT=9003
AGENT_METRICS_PORT=9103
# The agent's client id until POST /api/configure sets another: the seed's
# "curl -X POST http://localhost:8001/api/register" registers it, and the
# secret the auth-service generates is kept in var/agent/state.json.
AGENT_CLIENT_ID="${M2M_AGENT_CLIENT_ID:-crypto-client}"
AUTH_BIN="${M2M_AUTH_BIN:-$ROOT/build/auth-service/auth-service}"
CURRENCY_BIN="${M2M_CURRENCY_BIN:-$ROOT/build/crypto-server/crypto-server}"
AGENT_BIN="${M2M_AGENT_BIN:-$ROOT/build/crypto-client/crypto-client}"
HEALTH_URL="http://127.0.0.1:${LISTEN##*:}/api/auth/health"
TLS_HEALTH_URL="https://localhost:${TLS_LISTEN##*:}/api/auth/health"
CURRENCY_HEALTH_URL="http://127.0.0.1:${LISTEN##*:}/api/currency/health"
AGENT_HEALTH_URL="http://127.0.0.1:${AGENT_LISTEN##*:}/api/health"
HEALTH_TIMEOUT=60

usage() {
    m2m_usage "${BASH_SOURCE[0]}" >&2
    exit 2
}

# How to call this script in printed hints.
self() {
    if [[ "$PWD" == "$ROOT" ]]; then echo scripts/run.sh; else echo "$ROOT/scripts/run.sh"; fi
}

supervisord_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    grep -q supervisord "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

ctl() {
    supervisorctl -c "$CONF" "$@"
}

wait_pid_gone() {
    local pid="$1" secs="$2" i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

pg_stop() {
    if [[ -f "$PGDIR/data/PG_VERSION" ]]; then
        "$ROOT/scripts/pg.sh" stop "$PGDIR" || m2m_warn "could not stop PostgreSQL in $PGDIR"
    fi
}

# Stop supervisord (and so its programs), then PostgreSQL. Safe to call twice.
stop_all() {
    local pid
    if pid="$(supervisord_pid)"; then
        m2m_info "stopping supervisord (pid $pid)"
        ctl shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        if ! wait_pid_gone "$pid" 60; then
            m2m_warn "supervisord did not exit in 60 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    pg_stop
}

wait_healthy() {
    local sup_pid="$1" deadline=$((SECONDS + HEALTH_TIMEOUT))
    while ((SECONDS < deadline)); do
        if curl -fsS -m 2 -o /dev/null "$HEALTH_URL" 2>/dev/null &&
            curl -fsS -m 2 -o /dev/null "$CURRENCY_HEALTH_URL" 2>/dev/null &&
            curl -fsS -m 2 -o /dev/null "$AGENT_HEALTH_URL" 2>/dev/null &&
            curl -fsS -m 2 --cacert "$TLS_DIR/cert.pem" -o /dev/null "$TLS_HEALTH_URL" 2>/dev/null; then
            return 0
        fi
        kill -0 "$sup_pid" 2>/dev/null || {
            m2m_warn "supervisord exited while starting"
            return 1
        }
        # A program that keeps crashing ends up FATAL: no point in waiting.
        local st
        st="$(ctl status 2>/dev/null || true)"
        if [[ "$st" == *FATAL* ]]; then
            printf '%s\n' "$st" >&2
            return 1
        fi
        sleep 0.5
    done
    curl -fsS -m 2 -o /dev/null "$HEALTH_URL" || true
    return 1
}

show_logs() {
    local f
    for f in "$VAR/nginx/logs/error.log" "$VAR/log/nginx.log" "$VAR/log/supervisord.log" \
        "$VAR/log/auth-service.log" "$VAR/log/crypto-server.log" "$VAR/log/crypto-client.log"; do
        [[ -s "$f" ]] || continue
        printf -- '--- last lines of %s\n' "$f" >&2
        tail -n 8 "$f" >&2
    done
}

banner() {
    local conninfo="$1" me
    me="$(self)"
    cat <<MSG

m2m stack is up. Logs: $VAR/log/   Database: $conninfo
  API:       http://localhost:8000/api/auth/...   (register, token, jwks.json, health)
             http://localhost:8000/api/currency/  (rates: GET /, /{SYM}, /{SYM}/history, /stream; PUT /{SYM})
  Metadata:  http://localhost:8000/.well-known/oauth-authorization-server
  TLS:       https://localhost:8443/...   (the same routes; trust $TLS_DIR/cert.pem, e.g. curl --cacert)
  Docs:      http://localhost:8000/docs/   (Swagger UI: auth-service, crypto-server, crypto-client)
  Agent:     http://localhost:8001/api/...   (configure, register, login, status, currencies)
  Metrics:   http://127.0.0.1:$AUTH_METRICS_PORT/metrics, http://127.0.0.1:$CURRENCY_METRICS_PORT/metrics, http://127.0.0.1:$AGENT_METRICS_PORT/metrics   (internal, not proxied)

Through the agent (client id $AGENT_CLIENT_ID; it gets and renews its tokens itself):
  curl -X POST http://localhost:8001/api/register
  curl -X POST http://localhost:8001/api/login
  curl http://localhost:8001/api/currencies

Directly:
  curl -X POST http://localhost:8000/api/auth/register -H "Content-Type: application/json" -d '{"client_id":"test","client_secret":"secret","app_name":"Test"}'
  curl -X POST http://localhost:8000/api/auth/token -H "Content-Type: application/json" -d '{"client_id":"test","client_secret":"secret"}'
  curl http://localhost:8000/api/currency/ -H "Authorization: Bearer <TOKEN>"

Create an admin client (runs $AUTH_BIN with AUTH_DATABASE_URL set):
  $me client create --id admin-cli --scopes "currency:read currency:write" --role admin

MSG
}

check_paths() {
    [[ "$ROOT" != *[\'\"\\%[:space:]\;]* ]] ||
        m2m_die "the repository path must not contain spaces, quotes, '%' or ';': $ROOT"
    [[ "$AGENT_CLIENT_ID" =~ ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$ ]] ||
        m2m_die "M2M_AGENT_CLIENT_ID: 1-128 characters of A-Z a-z 0-9 . _ : @ -, got '$AGENT_CLIENT_ID'"
}

prepare() {
    local do_deps="$1" do_build="$2"
    check_paths
    m2m_require_root
    if ((do_deps)); then
        m2m_header "dependencies"
        "$ROOT/scripts/deps.sh"
    fi
    if ((do_build)); then
        m2m_header "build"
        cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$ROOT/build" -j2
    fi
    [[ -x "$AUTH_BIN" ]] || m2m_die "no auth-service binary at $AUTH_BIN"
    [[ -x "$CURRENCY_BIN" ]] || m2m_die "no crypto-server binary at $CURRENCY_BIN"
    [[ -x "$AGENT_BIN" ]] || m2m_die "no crypto-client binary at $AGENT_BIN"

    m2m_header "database"
    mkdir -p -- "$VAR/log"
    install -d -m 0700 -- "$VAR/run" "$VAR/auth-keys" "$VAR/agent"
    "$ROOT/scripts/pg.sh" init "$PGDIR" "$PGPORT"
    "$ROOT/scripts/pg.sh" start "$PGDIR"
    CONNINFO="$("$ROOT/scripts/pg.sh" bootstrap "$PGDIR" | tail -n 1)"
    [[ "$CONNINFO" == host=* ]] || m2m_die "pg.sh bootstrap printed no conninfo"
    local currency_conninfo
    currency_conninfo="$("$ROOT/scripts/pg.sh" conninfo "$PGDIR" currency_service)"

    m2m_header "configuration"
    local -a nginx_args=()
    # Word splitting is intended: M2M_NGINX_ARGS is a list of options.
    # shellcheck disable=SC2206
    [[ -n "${M2M_NGINX_ARGS:-}" ]] && nginx_args=(${M2M_NGINX_ARGS})
    local -a static_args=()
    if "$ROOT/scripts/docs.sh" "$VAR/www"; then
        static_args=(--static "$VAR/www")
    else
        m2m_warn "no /docs/: scripts/docs.sh failed (the npm registry is needed once)"
    fi
    "$ROOT/scripts/nginx-conf.sh" "$VAR/nginx" --listen "$LISTEN" \
        --auth "127.0.0.1:$AUTH_PORT" --currency "127.0.0.1:$CURRENCY_PORT" \
        --agent-listen "$AGENT_LISTEN" --agent "127.0.0.1:$AGENT_PORT" \
        --tls-listen "$TLS_LISTEN" --tls-dir "$TLS_DIR" \
        "${static_args[@]}" "${nginx_args[@]}"
    m2m_render "$ROOT/scripts/supervisord.conf.template" "$CONF" \
        ROOT="$ROOT" VAR="$VAR" AUTH_BIN="$AUTH_BIN" \
        AUTH_DATABASE_URL="${CONNINFO//%/%%}" \
        AUTH_PORT="$AUTH_PORT" AUTH_METRICS_PORT="$AUTH_METRICS_PORT" \
        CURRENCY_BIN="$CURRENCY_BIN" CURRENCY_DATABASE_URL="${currency_conninfo//%/%%}" \
        CURRENCY_PORT="$CURRENCY_PORT" CURRENCY_METRICS_PORT="$CURRENCY_METRICS_PORT" \
        AGENT_BIN="$AGENT_BIN" AGENT_PORT="$AGENT_PORT" AGENT_METRICS_PORT="$AGENT_METRICS_PORT" \
        AGENT_SERVER_URL="http://127.0.0.1:${LISTEN##*:}" AGENT_CLIENT_ID="$AGENT_CLIENT_ID"
    chmod 0600 -- "$CONF"
    m2m_info "wrote $CONF"
}

cmd_up() {
    local detach=0 do_deps=1 do_build=1
    while (($#)); do
        case "$1" in
        --detach | -d) detach=1 ;;
        --no-deps) do_deps=0 ;;
        --no-build) do_build=0 ;;
        -h | --help) usage ;;
        *) m2m_die "unknown option: $1 (see --help)" ;;
        esac
        shift
    done

    local pid
    if pid="$(supervisord_pid)"; then
        if ((detach)) && curl -fsS -m 2 -o /dev/null "$HEALTH_URL" 2>/dev/null; then
            m2m_info "already running (supervisord pid $pid) and healthy"
            return 0
        fi
        m2m_die "already running (supervisord pid $pid); stop it first: $(self) stop"
    fi

    CONNINFO=
    prepare "$do_deps" "$do_build"
    m2m_header "start"

    if ((detach)); then
        supervisord -c "$CONF"
        local i
        for ((i = 0; i < 100; i++)); do
            pid="$(supervisord_pid)" && break
            sleep 0.1
        done
        [[ -n "$pid" ]] || {
            show_logs
            pg_stop
            m2m_die "supervisord did not start"
        }
        if ! wait_healthy "$pid"; then
            show_logs
            stop_all
            m2m_die "the stack did not become healthy ($HEALTH_URL); logs in $VAR/log"
        fi
        banner "$CONNINFO"
        echo "Running in the background (supervisord pid $pid). Stop: $(self) stop"
        return 0
    fi

    supervisord -n -c "$CONF" &
    SUP_PID=$!
    on_signal() {
        trap - INT TERM
        echo
        m2m_info "shutting down"
        stop_all
        wait "$SUP_PID" 2>/dev/null || true
        exit 0
    }
    trap on_signal INT TERM
    if ! wait_healthy "$SUP_PID"; then
        show_logs
        trap - INT TERM
        stop_all
        wait "$SUP_PID" 2>/dev/null || true
        m2m_die "the stack did not become healthy ($HEALTH_URL); logs in $VAR/log"
    fi
    banner "$CONNINFO"
    echo "Running in the foreground (supervisord pid $SUP_PID). Stop: Ctrl-C"
    local rc=0
    wait "$SUP_PID" || rc=$?
    # supervisord exited by itself (or through '$(self) stop').
    trap - INT TERM
    m2m_info "supervisord exited (status $rc)"
    pg_stop
    return "$rc"
}

cmd_stop() {
    (($# == 0)) || usage
    m2m_require_root
    if ! supervisord_pid >/dev/null; then
        m2m_info "supervisord not running"
    fi
    stop_all
}

cmd_status() {
    (($# == 0)) || usage
    m2m_require_root
    local rc=0 pid
    if pid="$(supervisord_pid)"; then
        echo "supervisord: running (pid $pid)"
        ctl status || rc=3
    else
        echo "supervisord: not running"
        rc=3
    fi
    if [[ -f "$PGDIR/data/PG_VERSION" ]]; then
        printf 'postgresql: '
        "$ROOT/scripts/pg.sh" status "$PGDIR" || rc=3
    else
        echo "postgresql: no cluster in $PGDIR"
        rc=3
    fi
    if curl -fsS -m 2 -o /dev/null "$HEALTH_URL" 2>/dev/null; then
        echo "health: ok ($HEALTH_URL)"
    else
        echo "health: failing ($HEALTH_URL)"
        rc=3
    fi
    return "$rc"
}

cmd_client() {
    m2m_require_root
    [[ -x "$AUTH_BIN" ]] || m2m_die "no auth-service binary at $AUTH_BIN (run $(self) --detach, or build first)"
    [[ -f "$PGDIR/data/PG_VERSION" ]] || m2m_die "no database in $PGDIR yet (run $(self) --detach first)"
    local started=0 rc=0 conninfo
    if ! "$ROOT/scripts/pg.sh" status "$PGDIR" >/dev/null; then
        "$ROOT/scripts/pg.sh" start "$PGDIR"
        started=1
    fi
    if [[ -f "$PGDIR/secrets/pgpass" ]]; then
        conninfo="$("$ROOT/scripts/pg.sh" conninfo "$PGDIR" auth_service)"
    else
        conninfo="$("$ROOT/scripts/pg.sh" bootstrap "$PGDIR" | tail -n 1)"
    fi
    install -d -m 0700 -- "$VAR/auth-keys"
    (
        cd "$ROOT"
        AUTH_DATABASE_URL="$conninfo" AUTH_KEY_DIR="$VAR/auth-keys" \
            AUTH_PORT="$AUTH_PORT" AUTH_METRICS_PORT="$AUTH_METRICS_PORT" \
            exec "$AUTH_BIN" "$@"
    ) || rc=$?
    if ((started)); then
        "$ROOT/scripts/pg.sh" stop "$PGDIR"
    fi
    return "$rc"
}

case "${1:-}" in
stop) shift; cmd_stop "$@" ;;
status) shift; cmd_status "$@" ;;
client) cmd_client "$@" ;; # passes "client ..." through: auth-service client ...
-h | --help | help) usage ;;
*) cmd_up "$@" ;;
esac
