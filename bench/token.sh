#!/usr/bin/env bash
# Benchmark of the token endpoint (client credentials grant, ES256 JWT) against
# its ceiling: bench-ceiling-sign, a bare libmicrohttpd server doing one ES256
# sign per request and nothing else. Prints a table and the verdict for the
# goal (token endpoint >= 70% of the ceiling's req/s, p99 < 5 ms), and writes
# it to bench/results/token-<date>.txt. See bench/README.md.
#
# Environment:
#   DURATION=10s        wrk duration of each measured run (wrk syntax: 30s, 1m)
#   WARMUP=2s           unmeasured wrk run before each measured one (0 = none)
#   ROUNDS=3            measured runs per target, interleaved; medians reported
#   CONNECTIONS=32 THREADS=2
#   ONLY_CEILING=1      measure the ceiling alone (no stack, no client)
#   PEER=1              add node-oidc-provider (bench/peer/) as a peer column
#   NO_NGINX=1          skip the run through nginx
#   BENCH_CLIENT_ID / BENCH_CLIENT_SECRET
#                       use this existing client instead of creating one
#   BUILD_DIR=ROOT/build
#   AUTH_URL=http://127.0.0.1:9001  NGINX_URL=http://127.0.0.1:8000
#   STRICT=1            exit 3 when the goal is missed
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ONLY_CEILING="${ONLY_CEILING:-0}"
PEER="${PEER:-0}"
GOAL_PCT=70
GOAL_P99_MS=5

check_settings
need_tools wrk curl
start_tmp token

# ---------------------------------------------------------------- build
CEILING_BIN="" # set by build
build() {
    local targets=(bench-ceiling-sign)
    [ "$ONLY_CEILING" = 1 ] || targets+=(auth-service)
    build_targets "${targets[@]}"
    find_bin bench-ceiling-sign CEILING_BIN
}
build

# ---------------------------------------------------------------- stack + client
ensure_stack() {
    if auth_up 3; then
        log "local stack already running"
        return 0
    fi
    [ -x "$ROOT/scripts/run.sh" ] || die "auth-service not answering on $AUTH_URL and scripts/run.sh missing"
    start_stack auth_up "auth-service not healthy on $AUTH_URL/api/auth/health after 60 s"
}

if [ "$ONLY_CEILING" = 1 ]; then
    # The ceiling ignores credentials; send a header of the same size anyway.
    BENCH_CLIENT_ID="${BENCH_CLIENT_ID:-bench-0000000000}"
    BENCH_CLIENT_SECRET="${BENCH_CLIENT_SECRET:-$(printf '0%.0s' $(seq 64))}"
else
    ensure_stack
    create_client
fi
export BENCH_CLIENT_ID BENCH_CLIENT_SECRET

read_build_note

# ---------------------------------------------------------------- measuring
# check_endpoint NAME URL: one request, must be 200 with an access_token.
check_endpoint() {
    local name="$1" url="$2" code
    code="$(post_token "$url" "$TMP/check.body" "$TMP/check.err")" || code="000"
    if [ "$code" != 200 ] || ! grep -q '"access_token"' "$TMP/check.body"; then
        {
            echo "---- $name: POST $url answered HTTP $code"
            cat "$TMP/check.err" "$TMP/check.body" 2>/dev/null
            echo
        } >&2
        die "$name: the token endpoint does not answer 200 with an access_token"
    fi
}

# Targets: "key|name|url".
add_target() {
    check_endpoint "$2" "$3"
    TARGETS+=("$1|$2|$3")
}

# measure KEY NAME URL ROUND: (warm-up in round 1) then one measured wrk run.
measure() {
    local key="$1" name="$2" url="$3" round="$4" out="$TMP/wrk-$1-$4.txt"
    if [ "$round" = 1 ] && [ "$WARMUP_S" -gt 0 ]; then
        log "$name: warm-up $WARMUP"
        bounded $(( WARMUP_S + 30 )) "$TMP/warmup.txt" wrk -t"$THREADS" -c"$CONNECTIONS" \
            -d"$WARMUP" -s "$BENCH/token.lua" "$url" \
            || { cat "$TMP/warmup.txt" >&2; die "$name: wrk warm-up failed"; }
    fi
    log "$name [round $round/$ROUNDS]: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $url"
    bounded $(( DURATION_S + 30 )) "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
        --latency -s "$BENCH/token.lua" "$url" \
        || { cat "$out" >&2; die "$name: wrk failed"; }
    read_wrk "$key" "$name" "$out" '^token.lua:'
    log_wrk "$name" "$round"
}

# Ceiling: bench-ceiling-sign on a free port (it binds port 0 and prints it).
start_server ceiling 10 bench-ceiling-sign "$CEILING_BIN" 0
CEILING_PID="$SERVER_PID" CEILING_PORT="$SERVER_PORT"
add_target ceiling "ceiling (MHD + ES256 sign)" "http://127.0.0.1:$CEILING_PORT$TOKEN_PATH"

if [ "$ONLY_CEILING" != 1 ]; then
    add_target direct "auth-service direct :9001" "$AUTH_URL$TOKEN_PATH"
    if [ "$NO_NGINX" != 1 ]; then
        add_target nginx "auth-service via nginx :8000" "$NGINX_URL$TOKEN_PATH"
    fi
fi

if [ "$PEER" = 1 ]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then die "PEER=1 needs node and npm"; fi
    if [ ! -d "$BENCH/peer/node_modules/oidc-provider" ]; then
        log "peer: npm install in bench/peer"
        (cd "$BENCH/peer" && timeout 300 npm install --no-audit --no-fund --loglevel=error) >&2 \
            || die "peer: npm install failed"
    fi
    # The peer gets the same client id and secret (exported above).
    start_server peer 30 "peer: server.mjs" env NODE_ENV=production node "$BENCH/peer/server.mjs" 0
    PEER_PID="$SERVER_PID" PEER_PORT="$SERVER_PORT"
    add_target peer "peer: node-oidc-provider 9" "http://127.0.0.1:$PEER_PORT/token"
fi

run_rounds
if [ -n "${PEER_PID:-}" ]; then
    PEER_RSS_KB="$(awk '/^VmRSS:/ { print $2 }' "/proc/$PEER_PID/status" 2>/dev/null || echo 0)"
    stop_pid "$PEER_PID"
fi
stop_pid "$CEILING_PID"

compute_medians

# ---------------------------------------------------------------- report
meets() { # req/s p99 -> 0 if the goal is met
    awk -v r="$1" -v c="${RPS[ceiling]}" -v p="$2" -v gp="$GOAL_PCT" -v gl="$GOAL_P99_MS" \
        'BEGIN { exit !(c > 0 && 100 * r / c >= gp && p < gl) }'
}

{
    echo "token endpoint benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    report_run_info
    [ "$ONLY_CEILING" = 1 ] || echo "client: $BENCH_CLIENT_ID (client_secret_basic, grant_type=client_credentials)"
    echo
    table_header
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ <<<"$t"
        table_row "$name" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
            "$(pct "${RPS[$key]}" "${RPS[ceiling]}")" "${ERRS[$key]}" "$(minmax "${RPS_ALL[$key]}")"
    done
    [ -z "${PEER_RSS_KB:-}" ] || echo "peer RSS at the end of its run: $(( PEER_RSS_KB / 1024 )) MB"
    echo
    echo "goal: token endpoint >= ${GOAL_PCT}% of the ceiling's req/s and p99 < ${GOAL_P99_MS} ms, no errors"
} >"$REPORT"

verdict() { # key label
    local key="$1" label="$2" ok=1
    meets "${RPS[$key]}" "${P99[$key]}" || ok=0
    [ "${ERRS[$key]}" = 0 ] || ok=0
    if [ "$ok" = 1 ]; then
        echo "$label: PASS ($(pct "${RPS[$key]}" "${RPS[ceiling]}")% of ceiling, p99 ${P99[$key]} ms)"
    else
        echo "$label: FAIL ($(pct "${RPS[$key]}" "${RPS[ceiling]}")% of ceiling, p99 ${P99[$key]} ms, errors ${ERRS[$key]})"
        return 1
    fi
}
{
    if [ "$ONLY_CEILING" = 1 ]; then
        echo "verdict: none (ONLY_CEILING=1: the token endpoint was not measured)"
    else
        verdict direct "verdict (auth-service direct)" || VERDICT_RC=3
        if [ -n "${RPS[nginx]:-}" ]; then
            verdict nginx "through nginx (informative)" || true
        fi
    fi
    warn_errors "a token rate"
} >>"$REPORT"

finish token
