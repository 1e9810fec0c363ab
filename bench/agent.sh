#!/usr/bin/env bash
# Benchmark of crypto-client, the OAuth2 client agent (the seed's :8001):
#   1. GET /api/currencies/{SYM} through the agent, direct and through nginx's
#      agent listener, beside crypto-server's GET /api/currency/{SYM} with one
#      token reused - the ceiling an agent cannot beat, since it makes that
#      very call for each of its callers;
#   2. the token requests a minute under RENEW_CONNECTIONS concurrent callers
#      when the client's tokens live RENEW_TTL seconds. Goal: one request per
#      renewal (at 80 % of the lifetime), not one per call.
# Prints a table and the verdict and writes them to
# bench/results/agent-<date>.txt. See bench/README.md.
#
# The agents measured are started here (free ports, their own state files,
# AGENT_FETCH_INTERVAL=0, the client's id and secret in the environment), and
# so is the nginx in front of the first one (scripts/nginx-conf.sh --no-limit,
# free ports); the stack behind them is the local one (scripts/run.sh, as
# bench/token.sh and bench/currency.sh use it) or, with PRIVATE_STACK=1, one of
# this script's own on free ports.
#
# Environment:
#   DURATION=8s         wrk duration of each measured run of part 1 (wrk syntax: 30s, 1m)
#   WARMUP=2s           unmeasured wrk run before each target's first measured one (0 = none)
#   ROUNDS=3            measured runs per target, interleaved; medians reported
#   CONNECTIONS=32 THREADS=2
#   SYMBOL=BTC          the currency asked for
#   NO_NGINX=1          skip the run through nginx (no nginx is started)
#   UPSTREAM=direct     the agents call AUTH_URL and CURRENCY_URL directly; "nginx": through
#                       NGINX_URL, as scripts/run.sh deploys the agent
#   RENEW_DURATION=60s  the renewal run of part 2 (0: skip it)
#   RENEW_CONNECTIONS=64
#   RENEW_TTL=10        access token lifetime of part 2's client (auth-service CLI --ttl, 5..3600)
#   PRIVATE_STACK=1     start PostgreSQL, auth-service, crypto-server and nginx on free ports
#                       (tests/integration/harness.py, binaries from BUILD_DIR) instead of
#                       using or starting the local stack on the fixed ports
#   BENCH_CLIENT_ID / BENCH_CLIENT_SECRET
#                       part 1's client (default: a new one, scope currency:read)
#   BUILD_DIR=ROOT/build
#   AUTH_URL=http://127.0.0.1:9001  CURRENCY_URL=http://127.0.0.1:9002
#   NGINX_URL=http://127.0.0.1:8000
#   STRICT=1            exit 3 when the renewal goal is missed
set -euo pipefail

DURATION="${DURATION:-8s}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SYMBOL="${SYMBOL:-BTC}"
UPSTREAM="${UPSTREAM:-direct}"
RENEW_DURATION="${RENEW_DURATION:-60s}"
RENEW_CONNECTIONS="${RENEW_CONNECTIONS:-64}"
RENEW_TTL="${RENEW_TTL:-10}"
PRIVATE_STACK="${PRIVATE_STACK:-0}"
CURRENCY_URL="${CURRENCY_URL:-http://127.0.0.1:9002}"
RENEW_PERCENT=80 # the agent's default (AGENT_RENEW_PERCENT)
RENEW_SKEW=30    # and AGENT_RENEW_SKEW

check_settings
[[ "$SYMBOL" =~ ^[A-Za-z0-9]{1,10}$ ]] || die "SYMBOL must be 1..10 letters or digits"
[[ "$UPSTREAM" =~ ^(direct|nginx)$ ]] || die "UPSTREAM must be direct or nginx"
RENEW_S="$(to_seconds "$RENEW_DURATION")" || die "RENEW_DURATION=$RENEW_DURATION: use wrk syntax (60s, 1m)"
[ "$RENEW_S" -le 3600 ] || die "RENEW_DURATION must be 0..1h"
[[ "$RENEW_CONNECTIONS" =~ ^[1-9][0-9]{0,3}$ ]] || die "RENEW_CONNECTIONS must be 1..9999"
if ! [[ "$RENEW_TTL" =~ ^[0-9]{1,4}$ ]] || [ "$RENEW_TTL" -lt 5 ] || [ "$RENEW_TTL" -gt 3600 ]; then
    die "RENEW_TTL must be 5..3600 seconds"
fi
AGENT_PATH="/api/currencies/$SYMBOL"
API_PATH="/api/currency/$SYMBOL"

need_tools wrk curl python3
[ "$NO_NGINX" = 1 ] || need_tools nginx

start_tmp agent
# nginx's workers (nobody) must reach their directory under $TMP
chmod 711 "$TMP"

# ---------------------------------------------------------------- private stack
# A stack of our own (PRIVATE_STACK=1): tests/integration/harness.py's Stack on
# free ports in its own temp dir, kept up by a python3 process until it gets
# SIGTERM; it also creates both clients (the CLI needs the stack's database)
# and writes what the script needs to $TMP/stack.env. Stopped before lib.sh's
# cleanup (which gives a process 5 s: tearing PostgreSQL down may take longer).
STACK_PID=""
stop_private_stack() {
    [ -n "$STACK_PID" ] || return 0
    if kill -0 "$STACK_PID" 2>/dev/null; then
        log "stopping the private stack"
        kill -TERM "$STACK_PID" 2>/dev/null || true
        for _ in $(seq 1200); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$STACK_PID" 2>/dev/null || true
    fi
    wait "$STACK_PID" 2>/dev/null || true
    STACK_PID=""
}
# shellcheck disable=SC2317  # invoked by the EXIT trap
agent_cleanup() {
    local rc=$?
    stop_private_stack
    (exit "$rc")
    cleanup
}
trap agent_cleanup EXIT

start_private_stack() {
    log "starting a private stack on free ports (tests/integration/harness.py, binaries from $BUILD_DIR)"
    python3 - "$ROOT" "$BUILD_DIR" "$TMP/stack.env" "$RENEW_TTL" \
        >"$TMP/stack.log" 2>&1 <<'PY' &
import json, os, signal, sys, time
root, build, out, ttl = sys.argv[1:5]
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import harness
stopping = []
signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
signal.signal(signal.SIGINT, lambda *a: stopping.append(1))
s = harness.Stack(build)
harness.STACK = s
try:
    s.setup()
    if s.currency is None:
        raise RuntimeError(f"crypto-server did not start: {s.currency_error}")
    if s.agent is not None:  # the harness's own agent is not the one measured
        s.agent.stop()

    def client(name, *args):
        cid = s.uid(name)
        p = s.cli_create("--id", cid, "--scopes", "currency:read", *args)
        if p.returncode != 0:
            raise RuntimeError(f"client create {cid}: {p.stderr}")
        return cid, json.loads(p.stdout)["client_secret"]
    bid, bsec = client("bench")
    rid, rsec = client("bench-renew", "--ttl", ttl)
    with open(out + ".tmp", "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(f"AUTH_URL=http://127.0.0.1:{s.auth.port}\n"
                f"CURRENCY_URL=http://127.0.0.1:{s.currency.port}\n"
                f"NGINX_URL=http://127.0.0.1:{s.nginx.port}\n"
                f"BENCH_CLIENT_ID={bid}\nBENCH_CLIENT_SECRET={bsec}\n"
                f"RENEW_CLIENT_ID={rid}\nRENEW_CLIENT_SECRET={rsec}\n")
    os.rename(out + ".tmp", out)
    print("private stack ready", file=sys.stderr, flush=True)
    while not stopping:
        time.sleep(0.2)
finally:
    s.teardown()
PY
    STACK_PID=$!
    for _ in $(seq 1800); do
        [ ! -f "$TMP/stack.env" ] || break
        if ! kill -0 "$STACK_PID" 2>/dev/null; then
            tail -n 40 "$TMP/stack.log" >&2
            die "the private stack did not start"
        fi
        sleep 0.1
    done
    [ -f "$TMP/stack.env" ] || { tail -n 40 "$TMP/stack.log" >&2; die "the private stack did not start within 180 s"; }
    # shellcheck disable=SC1091
    . "$TMP/stack.env"
}

# ---------------------------------------------------------------- build, stack, clients
targets=(crypto-client)
[ "$PRIVATE_STACK" != 1 ] || targets+=(auth-service crypto-server)
build_targets "${targets[@]}"
AGENT_BIN="$BUILD_DIR/crypto-client/crypto-client"
[ -x "$AGENT_BIN" ] || die "$AGENT_BIN not found after the build"

stack_up() {
    auth_up "$1" && curl -fsS -m "$1" -o /dev/null "$CURRENCY_URL/api/currency/health"
}

# create_renew_client: the renewal run's client, tokens living RENEW_TTL s.
create_renew_client() {
    RENEW_CLIENT_ID="bench-renew-$RANDOM$RANDOM"
    RENEW_CLIENT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    log "creating client $RENEW_CLIENT_ID (scope currency:read, --ttl $RENEW_TTL)"
    timeout 60 "$ROOT/scripts/run.sh" client create --id "$RENEW_CLIENT_ID" \
        --secret "$RENEW_CLIENT_SECRET" --scopes "currency:read" --ttl "$RENEW_TTL" \
        >"$TMP/renew-client.json" 2>"$TMP/renew-client.err" \
        || { cat "$TMP/renew-client.json" "$TMP/renew-client.err" >&2; die "scripts/run.sh client create --ttl failed"; }
}

if [ "$PRIVATE_STACK" = 1 ]; then
    start_private_stack
    STACK_NOTE="stack: private, on free ports (tests/integration/harness.py), binaries from ${BUILD_DIR#"$ROOT"/}"
else
    if stack_up 3; then
        log "local stack already running (measured as it is: not rebuilt, not restarted)"
    else
        [ -x "$ROOT/scripts/run.sh" ] || die "the stack is not answering and scripts/run.sh is missing"
        auth_up 3 && die "auth-service answers but crypto-server does not ($CURRENCY_URL/api/currency/health)"
        start_stack stack_up "the stack is not healthy ($AUTH_URL/api/auth/health, $CURRENCY_URL/api/currency/health) after 60 s"
    fi
    create_client
    [ "$RENEW_S" = 0 ] || create_renew_client
    STACK_NOTE="stack: the local one ($AUTH_URL, $CURRENCY_URL, $NGINX_URL)"
fi
read_build_note

# BENCH_TOKEN: one token of part 1's client, for the crypto-server row.
code="$(post_token "$AUTH_URL$TOKEN_PATH" "$TMP/token.body" "$TMP/token.err")" || code=000
if [ "$code" != 200 ]; then
    cat "$TMP/token.err" "$TMP/token.body" >&2 2>/dev/null || true
    die "POST $AUTH_URL$TOKEN_PATH answered HTTP $code"
fi
BENCH_TOKEN="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <"$TMP/token.body")" \
    || die "no access_token in the token endpoint's answer"

# ---------------------------------------------------------------- agents and nginx
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
hostport() { # http://host:port[/...] -> host:port
    local u="${1#*://}"
    echo "${u%%/*}"
}

# start_agent NAME CLIENT_ID SECRET: a crypto-client on free ports; sets
# AGENT_PID_OUT and AGENT_PORT_OUT.
start_agent() {
    local name="$1" cid="$2" secret="$3" port mport
    port="$(free_port)"
    mport="$(free_port)"
    local env=(AGENT_PORT="$port" AGENT_METRICS_PORT="$mport"
               AGENT_STATE_FILE="$TMP/$name-state/state.json" AGENT_FETCH_INTERVAL=0
               AGENT_CLIENT_ID="$cid" AGENT_CLIENT_SECRET="$secret"
               AGENT_SERVER_URL="$NGINX_URL")
    if [ "$UPSTREAM" = direct ]; then
        env+=(AGENT_TOKEN_URL="$AUTH_URL$TOKEN_PATH" AGENT_CURRENCY_URL="$CURRENCY_URL/api/currency")
    fi
    env "${env[@]}" "$AGENT_BIN" >"$TMP/$name.log" 2>&1 &
    AGENT_PID_OUT=$!
    PIDS+=("$AGENT_PID_OUT")
    for _ in $(seq 100); do
        if curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$port/api/health" 2>/dev/null; then
            AGENT_PORT_OUT="$port"
            return 0
        fi
        kill -0 "$AGENT_PID_OUT" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$TMP/$name.log" >&2
    die "crypto-client ($name) did not start"
}

# agent_counts PORT: "token_requests api_calls api_retries stale_served token_failures"
agent_counts() {
    curl -fsS -m 5 "http://127.0.0.1:$1/api/status" | python3 -c '
import json, sys
c = json.load(sys.stdin)["counts"]
print(c["token_requests"], c["api_calls"], c["api_retries"], c["stale_served"], c["token_failures"])'
}

# check_endpoint NAME URL [TOKEN]: one GET, must be 200 with a JSON object
# (for the agent: "stale":false).
check_endpoint() {
    local name="$1" url="$2" token="${3:-}" code args=(-H 'Accept: application/json')
    [ -z "$token" ] || args+=(-H "Authorization: Bearer $token")
    code="$(curl -sS -m 10 -o "$TMP/check.body" -w '%{http_code}' "${args[@]}" "$url" \
        2>"$TMP/check.err")" || code=000
    if [ "$code" != 200 ] || ! grep -q '^{' "$TMP/check.body" \
        || { [ -z "$token" ] && ! grep -q '^{"stale":false,' "$TMP/check.body"; }; then
        { echo "---- $name: GET $url answered HTTP $code"; cat "$TMP/check.err" "$TMP/check.body"; echo; } >&2
        die "$name: does not answer 200 with fresh JSON"
    fi
}

start_agent agent "$BENCH_CLIENT_ID" "$BENCH_CLIENT_SECRET"
AGENT_PID="$AGENT_PID_OUT" AGENT_PORT="$AGENT_PORT_OUT"

NGINX_PID=""
if [ "$NO_NGINX" != 1 ]; then
    NGINX_LISTEN="127.0.0.1:$(free_port)"
    NGINX_AGENT="127.0.0.1:$(free_port)"
    "$ROOT/scripts/nginx-conf.sh" "$TMP/nginx" --listen "$NGINX_LISTEN" \
        --auth "$(hostport "$AUTH_URL")" --currency "$(hostport "$CURRENCY_URL")" \
        --agent-listen "$NGINX_AGENT" --agent "127.0.0.1:$AGENT_PORT" --no-limit \
        >"$TMP/nginx-conf.log" 2>&1 || { cat "$TMP/nginx-conf.log" >&2; die "scripts/nginx-conf.sh failed"; }
    "$(command -v nginx)" -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf" \
        -g 'daemon off;' >"$TMP/nginx.out" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    for _ in $(seq 100); do
        curl -sS -m 1 -o /dev/null "http://$NGINX_AGENT/api/health" 2>/dev/null && break
        kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx.out" "$TMP/nginx/logs/error.log" >&2 || true; die "nginx did not start"; }
        sleep 0.1
    done
fi

# Targets: "key|name|url|token (yes/no)"
add_target() {
    local token=""
    [ "$4" = no ] || token="$BENCH_TOKEN"
    check_endpoint "$2" "$3" "$token"
    TARGETS+=("$1|$2|$3|$4")
}
add_target direct "crypto-server, token reused" "$CURRENCY_URL$API_PATH" yes
add_target agent "agent direct" "http://127.0.0.1:$AGENT_PORT$AGENT_PATH" no
[ "$NO_NGINX" = 1 ] || add_target nginx "agent via nginx" "http://$NGINX_AGENT$AGENT_PATH" no

# run_wrk NAME URL TOKEN? SECS CONNECTIONS OUT: one wrk run (currency.lua).
run_wrk() {
    local name="$1" url="$2" use_token="$3" secs="$4" conns="$5" out="$6" token=""
    [ "$use_token" = no ] || token="$BENCH_TOKEN"
    BENCH_TOKEN="$token" bounded $(( secs + 30 )) "$out" wrk -t"$THREADS" -c"$conns" \
        -d"${secs}s" --latency -s "$BENCH/currency.lua" "$url" \
        || { cat "$out" >&2; die "$name: wrk failed"; }
}

measure() {
    local key="$1" name="$2" url="$3" use_token="$4" round="$5" out="$TMP/wrk-$1-$5.txt"
    if [ "$round" = 1 ] && [ "$WARMUP_S" -gt 0 ]; then
        log "$name: warm-up $WARMUP"
        run_wrk "$name" "$url" "$use_token" "$WARMUP_S" "$CONNECTIONS" "$TMP/warmup.txt"
    fi
    log "$name [round $round/$ROUNDS]: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $url"
    run_wrk "$name" "$url" "$use_token" "$DURATION_S" "$CONNECTIONS" "$out"
    read_wrk "$key" "$name" "$out" '^currency\.lua: requests='
    log_wrk "$name" "$round"
}

read -r A_TOK0 A_CALLS0 A_RETRY0 A_STALE0 A_FAIL0 <<<"$(agent_counts "$AGENT_PORT")"
run_rounds
read -r A_TOK1 A_CALLS1 A_RETRY1 A_STALE1 A_FAIL1 <<<"$(agent_counts "$AGENT_PORT")"
compute_medians
[ -z "$NGINX_PID" ] || stop_pid "$NGINX_PID"
stop_pid "$AGENT_PID"

# ---------------------------------------------------------------- part 2: renewals
# The token manager's renewal offset for a lifetime (tokens.c renew_offset).
renew_offset() {
    awk -v l="$1" -v p="$RENEW_PERCENT" -v k="$RENEW_SKEW" 'BEGIN {
        share = l * p / 100; skew = l - k
        printf "%.2f", (skew >= l / 2 && skew < share) ? skew : share }'
}
if [ "$RENEW_S" -gt 0 ]; then
    start_agent renew "$RENEW_CLIENT_ID" "$RENEW_CLIENT_SECRET"
    RENEW_PID="$AGENT_PID_OUT" RENEW_PORT="$AGENT_PORT_OUT"
    check_endpoint "agent ($RENEW_TTL s tokens)" "http://127.0.0.1:$RENEW_PORT$AGENT_PATH"
    read -r R_TOK0 R_CALLS0 R_RETRY0 R_STALE0 R_FAIL0 <<<"$(agent_counts "$RENEW_PORT")"
    log "renewals: wrk -t$THREADS -c$RENEW_CONNECTIONS -d$RENEW_DURATION on an agent whose tokens live $RENEW_TTL s"
    run_wrk "renewal run" "http://127.0.0.1:$RENEW_PORT$AGENT_PATH" no "$RENEW_S" \
        "$RENEW_CONNECTIONS" "$TMP/wrk-renew.txt"
    read -r R_TOK1 R_CALLS1 R_RETRY1 R_STALE1 R_FAIL1 <<<"$(agent_counts "$RENEW_PORT")"
    stop_pid "$RENEW_PID"
    R_RPS="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk-renew.txt")"
    R_P99="$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$TMP/wrk-renew.txt")")"
    R_LINE="$(grep -E '^currency\.lua: requests=' "$TMP/wrk-renew.txt" || true)"
    if [ -z "$R_RPS" ] || [ -z "$R_LINE" ]; then
        cat "$TMP/wrk-renew.txt" >&2
        die "renewal run: could not read wrk's output"
    fi
    R_REQS="$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$R_LINE")"
    R_ERRS="$(awk '{ s = 0; for (i = 2; i <= NF; i++) if ($i ~ /_errors=/) { split($i, a, "="); s += a[2] }
        print s }' <<<"$R_LINE")"
    R_TOKENS=$(( R_TOK1 - R_TOK0 ))
    R_OFFSET="$(renew_offset "$RENEW_TTL")"
    R_EXPECTED="$(awk -v s="$RENEW_S" -v o="$R_OFFSET" 'BEGIN { printf "%.1f", s / o }')"
    R_PER_MIN="$(awk -v n="$R_TOKENS" -v s="$RENEW_S" 'BEGIN { printf "%.1f", n * 60 / s }')"
fi

# ---------------------------------------------------------------- report
{
    echo "agent benchmark (GET $AGENT_PATH through crypto-client), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    report_run_info
    echo "$STACK_NOTE"
    echo "agent: ${AGENT_BIN#"$ROOT"/}, defaults (AGENT_BLOCKING_THREADS 8, one event thread per CPU), AGENT_FETCH_INTERVAL=0; upstream: $UPSTREAM ($( [ "$UPSTREAM" = direct ] && echo "$AUTH_URL, $CURRENCY_URL" || echo "$NGINX_URL"))"
    echo "client: $BENCH_CLIENT_ID (scope currency:read, default token lifetime); crypto-server row: one token reused"
    echo
    table_header
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ _ <<<"$t"
        table_row "$name" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
            "$(pct "${RPS[$key]}" "${RPS[direct]}")" "${ERRS[$key]}" "$(minmax "${RPS_ALL[$key]}")"
    done
    echo
    echo "% of ceiling: against crypto-server direct with a reused token (every agent call makes"
    echo "that call upstream: the agent cannot beat it). Agent during these runs: $(( A_TOK1 - A_TOK0 )) token" \
        "requests, $(( A_CALLS1 - A_CALLS0 )) calls upstream, $(( A_RETRY1 - A_RETRY0 )) retries after a 401," \
        "$(( A_STALE1 - A_STALE0 )) stale replies, $(( A_FAIL1 - A_FAIL0 )) token failures"
    if [ "$RENEW_S" -gt 0 ]; then
        echo
        echo "renewals: wrk -t$THREADS -c$RENEW_CONNECTIONS -d$RENEW_DURATION, agent direct, client $RENEW_CLIENT_ID with $RENEW_TTL s tokens"
        echo "  $R_REQS requests ($R_RPS req/s, p99 $R_P99 ms, errors $R_ERRS); agent: $(( R_CALLS1 - R_CALLS0 )) calls upstream," \
            "$(( R_RETRY1 - R_RETRY0 )) retries after a 401, $(( R_STALE1 - R_STALE0 )) stale replies, $(( R_FAIL1 - R_FAIL0 )) token failures"
        echo "  token requests: $R_TOKENS in $RENEW_S s = $R_PER_MIN a minute (one per renewal: every $R_OFFSET s," \
            "$R_EXPECTED expected; one per call would be $R_REQS)"
    fi
} >"$REPORT"

{
    bad=""
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ _ <<<"$t"
        [ "${ERRS[$key]}" = 0 ] || bad="$bad, $name: ${ERRS[$key]} errors"
    done
    [ "$(( A_STALE1 - A_STALE0 ))" = 0 ] || bad="$bad, the agent served stale data (upstream failed)"
    if [ -z "$bad" ]; then
        via=""
        [ "$NO_NGINX" = 1 ] || via=", via nginx $(pct "${RPS[nginx]}" "${RPS[direct]}")%"
        echo "part 1 (informative): agent direct $(pct "${RPS[agent]}" "${RPS[direct]}")% of the crypto-server's req/s$via"
    else
        echo "part 1: figures not meaningful${bad}"
    fi
    if [ "$RENEW_S" -gt 0 ]; then
        limit="$(awk -v e="$R_EXPECTED" 'BEGIN { printf "%d", e + 2 }')"
        why=""
        [ "$R_TOKENS" -le "$limit" ] || why="$why, $R_TOKENS token requests (at most $limit)"
        [ "$R_ERRS" = 0 ] || why="$why, $R_ERRS failed requests"
        [ "$(( R_RETRY1 - R_RETRY0 ))" = 0 ] || why="$why, $(( R_RETRY1 - R_RETRY0 )) retries after a 401"
        [ "$(( R_STALE1 - R_STALE0 ))" = 0 ] || why="$why, stale replies"
        if [ -z "$why" ]; then
            echo "verdict (one token request per renewal): PASS ($R_TOKENS in $RENEW_S s, $R_EXPECTED expected, under $RENEW_CONNECTIONS callers)"
        else
            echo "verdict (one token request per renewal): FAIL (${why#, })"
            VERDICT_RC=3
        fi
    else
        echo "verdict (one token request per renewal): none (RENEW_DURATION=0)"
    fi
} >>"$REPORT"

# finish: lib.sh's finish, plus the renewal run's raw output in the results file
stop_private_stack
result="$BENCH/results/agent-$(date '+%Y%m%d-%H%M%S').txt"
mkdir -p "$BENCH/results"
{
    cat "$REPORT"
    echo
    echo "==== raw wrk output"
    for round in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            IFS='|' read -r key name _ <<<"$t"
            echo "---- round $round: $name"
            cat "$TMP/wrk-$key-$round.txt"
        done
    done
    if [ "$RENEW_S" -gt 0 ]; then
        echo "---- renewal run"
        cat "$TMP/wrk-renew.txt"
    fi
} >"$result"
echo
cat "$REPORT"
echo
echo "written to ${result#"$ROOT"/}"
if [ "$STRICT" = 1 ] && [ "$VERDICT_RC" != 0 ]; then
    exit "$VERDICT_RC"
fi
exit 0
