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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
ONLY_CEILING="${ONLY_CEILING:-0}"
PEER="${PEER:-0}"
NO_NGINX="${NO_NGINX:-0}"
STRICT="${STRICT:-0}"
AUTH_URL="${AUTH_URL:-http://127.0.0.1:9001}"
NGINX_URL="${NGINX_URL:-http://127.0.0.1:8000}"
TOKEN_PATH="/api/auth/token"
GOAL_PCT=70
GOAL_P99_MS=5

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# wrk duration ("10s", "1m", "2h", "0") -> whole seconds.
to_seconds() {
    local d="$1"
    [[ "$d" =~ ^([0-9]+)([smh]?)$ ]] || return 1
    case "${BASH_REMATCH[2]}" in
        h) echo $(( 10#${BASH_REMATCH[1]} * 3600 )) ;;
        m) echo $(( 10#${BASH_REMATCH[1]} * 60 )) ;;
        *) echo $(( 10#${BASH_REMATCH[1]} )) ;;
    esac
}
DURATION_S="$(to_seconds "$DURATION")" || die "DURATION=$DURATION: use wrk syntax (10s, 1m)"
WARMUP_S="$(to_seconds "$WARMUP")" || die "WARMUP=$WARMUP: use wrk syntax (2s, 0)"
if [ "$DURATION_S" -lt 1 ] || [ "$DURATION_S" -gt 3600 ]; then die "DURATION must be 1s..1h"; fi
if [ "$WARMUP_S" -gt 600 ]; then die "WARMUP must be 0..10m"; fi
[[ "$ROUNDS" =~ ^[1-9]$ ]] || die "ROUNDS must be 1..9"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]{0,3}$ ]] || die "CONNECTIONS must be 1..9999"
[[ "$THREADS" =~ ^[1-9][0-9]?$ ]] || die "THREADS must be 1..99"

for tool in wrk curl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-token.XXXXXX")"
PIDS=()
STARTED_STACK=0

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        # bounded wait: TERM, then KILL after ~5 s
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$STARTED_STACK" = 1 ]; then
        log "stopping the local stack (this script started it)"
        timeout 60 "$ROOT/scripts/run.sh" stop >&2 || log "scripts/run.sh stop failed"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Drop a pid from PIDS once the process is gone.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# bounded SECS OUT CMD...: runs CMD under timeout in the background and waits
# for it, so that INT/TERM reach our traps at once (bash defers a trap until a
# foreground command ends, and timeout keeps its command out of the terminal's
# process group) and cleanup kills it like any other process of ours.
bounded() {
    local secs="$1" out="$2" pid rc=0
    shift 2
    timeout -k 5 "$secs" "$@" >"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# Wait until FILE has a line "port N"; print N. Fails after ~TIMEOUT s or if PID dies.
wait_port() {
    local file="$1" pid="$2" timeout="${3:-10}" port
    for _ in $(seq $(( timeout * 10 ))); do
        port="$(awk '$1 == "port" { print $2; exit }' "$file" 2>/dev/null || true)"
        if [ -n "$port" ]; then echo "$port"; return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- build
CEILING_BIN="$BUILD_DIR/bench/bench-ceiling-sign"
build() {
    local targets=(bench-ceiling-sign)
    [ "$ONLY_CEILING" = 1 ] || targets+=(auth-service)
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        # The project's default build type (RelWithDebInfo: -O2 -g), as scripts/run.sh uses.
        log "configuring $BUILD_DIR"
        cmake -S "$ROOT" -B "$BUILD_DIR" >"$TMP/build.log" 2>&1 \
            || { cat "$TMP/build.log" >&2; die "cmake configure failed"; }
    fi
    log "building ${targets[*]}"
    timeout 900 cmake --build "$BUILD_DIR" --target "${targets[@]}" -j "$(nproc)" \
        >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "build failed"; }
    if [ ! -x "$CEILING_BIN" ]; then # the top level may set an output directory
        CEILING_BIN="$(find "$BUILD_DIR" -type f -name bench-ceiling-sign -perm -u+x | head -n 1)"
        [ -n "$CEILING_BIN" ] || die "bench-ceiling-sign not found under $BUILD_DIR after the build"
    fi
}
build

# ---------------------------------------------------------------- stack + client
ensure_stack() {
    if curl -fsS -m 3 -o /dev/null "$AUTH_URL/api/auth/health"; then
        log "local stack already running"
        return 0
    fi
    [ -x "$ROOT/scripts/run.sh" ] || die "auth-service not answering on $AUTH_URL and scripts/run.sh missing"
    # nginx's rate limit on /api/auth/token would turn the nginx run into 429s.
    export M2M_NGINX_ARGS="${M2M_NGINX_ARGS:---no-limit}"
    log "starting the local stack: M2M_NGINX_ARGS=$M2M_NGINX_ARGS scripts/run.sh --detach"
    STARTED_STACK=1
    timeout 900 "$ROOT/scripts/run.sh" --detach >&2 || die "scripts/run.sh --detach failed"
    for _ in $(seq 120); do
        curl -fsS -m 2 -o /dev/null "$AUTH_URL/api/auth/health" && return 0
        sleep 0.5
    done
    die "auth-service not healthy on $AUTH_URL/api/auth/health after 60 s"
}

create_client() {
    if [ -n "${BENCH_CLIENT_ID:-}" ] && [ -n "${BENCH_CLIENT_SECRET:-}" ]; then
        log "using the existing client $BENCH_CLIENT_ID"
        return 0
    fi
    BENCH_CLIENT_ID="bench-$RANDOM$RANDOM"
    BENCH_CLIENT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    log "creating client $BENCH_CLIENT_ID (scope currency:read)"
    timeout 60 "$ROOT/scripts/run.sh" client create --id "$BENCH_CLIENT_ID" \
        --secret "$BENCH_CLIENT_SECRET" --scopes "currency:read" >"$TMP/client.json" 2>"$TMP/client.err" \
        || { cat "$TMP/client.json" "$TMP/client.err" >&2; die "scripts/run.sh client create failed"; }
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

# Read after the stack started: scripts/run.sh may have reconfigured build/.
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")"
BUILD_NOTE="build: ${BUILD_TYPE:-<none>}"
if grep -Eiq '^[A-Z0-9_]*SANITI[A-Z_]*:BOOL=(ON|TRUE|1)$' "$BUILD_DIR/CMakeCache.txt"; then
    BUILD_NOTE="$BUILD_NOTE, sanitizers ON (figures are not meaningful)"
fi

# ---------------------------------------------------------------- measuring
# check_endpoint NAME URL: one request, must be 200 with an access_token.
check_endpoint() {
    local name="$1" url="$2" code
    code="$(curl -sS -m 10 -o "$TMP/check.body" -w '%{http_code}' \
        -u "$BENCH_CLIENT_ID:$BENCH_CLIENT_SECRET" \
        -H 'Content-Type: application/x-www-form-urlencoded' \
        --data 'grant_type=client_credentials' "$url" 2>"$TMP/check.err")" || code="000"
    if [ "$code" != 200 ] || ! grep -q '"access_token"' "$TMP/check.body"; then
        {
            echo "---- $name: POST $url answered HTTP $code"
            cat "$TMP/check.err" "$TMP/check.body" 2>/dev/null
            echo
        } >&2
        die "$name: the token endpoint does not answer 200 with an access_token"
    fi
}

# Converts a wrk latency ("850.00us", "1.31ms", "1.02s", "2.00m") to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000;
        printf "%.2f", n }'
}

# median of whitespace-separated numbers (mean of the two middle ones if even).
median() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
minmax() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
        END { printf "%.0f-%.0f", lo, hi }'
}

# Targets: "key|name|url", measured in this order in every round.
TARGETS=()
add_target() {
    check_endpoint "$2" "$3"
    TARGETS+=("$1|$2|$3")
}

# measure KEY NAME URL ROUND: (warm-up in round 1) then one measured wrk run.
declare -A RPS_ALL P50_ALL P99_ALL ERRS
measure() {
    local key="$1" name="$2" url="$3" round="$4" out="$TMP/wrk-$1-$4.txt" line r p50 p99 e
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
    r="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")"
    p50="$(awk '$1 == "50%" { print $2; exit }' "$out")"
    p99="$(awk '$1 == "99%" { print $2; exit }' "$out")"
    line="$(grep '^token.lua:' "$out" || true)"
    if [ -z "$r" ] || [ -z "$p50" ] || [ -z "$p99" ] || [ -z "$line" ]; then
        cat "$out" >&2; die "$name: could not read wrk's output"
    fi
    p50="$(to_ms "$p50")"; p99="$(to_ms "$p99")"
    e="$(awk '{ s = 0; for (i = 2; i <= NF; i++) if ($i ~ /errors=/) { split($i, a, "="); s += a[2] }
        print s }' <<<"$line")"
    RPS_ALL[$key]="${RPS_ALL[$key]:-} $r"
    P50_ALL[$key]="${P50_ALL[$key]:-} $p50"
    P99_ALL[$key]="${P99_ALL[$key]:-} $p99"
    ERRS[$key]=$(( ${ERRS[$key]:-0} + e ))
    log "$name [round $round/$ROUNDS]: $r req/s, p50 $p50 ms, p99 $p99 ms, errors $e"
}

# Ceiling: bench-ceiling-sign on a free port (it binds port 0 and prints it).
"$CEILING_BIN" 0 >"$TMP/ceiling.out" 2>"$TMP/ceiling.err" &
CEILING_PID=$!
PIDS+=("$CEILING_PID")
CEILING_PORT="$(wait_port "$TMP/ceiling.out" "$CEILING_PID" 10)" \
    || { cat "$TMP/ceiling.err" >&2; die "bench-ceiling-sign did not start"; }
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
    NODE_ENV=production node "$BENCH/peer/server.mjs" 0 >"$TMP/peer.out" 2>"$TMP/peer.err" &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    PEER_PORT="$(wait_port "$TMP/peer.out" "$PEER_PID" 30)" \
        || { cat "$TMP/peer.err" >&2; die "peer: server.mjs did not start"; }
    add_target peer "peer: node-oidc-provider 9" "http://127.0.0.1:$PEER_PORT/token"
fi

# Rounds: every target once per round, interleaved, so that a slow spell of
# the host hits all of them alike; the table shows medians over the rounds.
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name url <<<"$t"
        measure "$key" "$name" "$url" "$round"
    done
done
if [ -n "${PEER_PID:-}" ]; then
    PEER_RSS_KB="$(awk '/^VmRSS:/ { print $2 }' "/proc/$PEER_PID/status" 2>/dev/null || echo 0)"
    stop_pid "$PEER_PID"
fi
stop_pid "$CEILING_PID"

declare -A RPS P50 P99
for t in "${TARGETS[@]}"; do
    key="${t%%|*}"
    RPS[$key]="$(median "${RPS_ALL[$key]}" | awk '{ printf "%.0f", $1 }')"
    P50[$key]="$(median "${P50_ALL[$key]}" | awk '{ printf "%.2f", $1 }')"
    P99[$key]="$(median "${P99_ALL[$key]}" | awk '{ printf "%.2f", $1 }')"
done

# ---------------------------------------------------------------- report
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "-" }'; }
meets() { # req/s p99 -> 0 if the goal is met
    awk -v r="$1" -v c="${RPS[ceiling]}" -v p="$2" -v gp="$GOAL_PCT" -v gl="$GOAL_P99_MS" \
        'BEGIN { exit !(c > 0 && 100 * r / c >= gp && p < gl) }'
}

REPORT="$TMP/report.txt"
{
    echo "token endpoint benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(nproc) CPUs, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, keep-alive"
    echo "rounds: $ROUNDS (targets interleaved; figures are medians over the rounds), warm-up $WARMUP per target"
    echo "$BUILD_NOTE; git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$([ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] || echo ' (+ local changes)')"
    [ "$ONLY_CEILING" = 1 ] || echo "client: $BENCH_CLIENT_ID (client_secret_basic, grant_type=client_credentials)"
    echo
    fmt='%-30s %8s %9s %9s %13s %8s %15s\n'
    # shellcheck disable=SC2059
    printf "$fmt" "target" "req/s" "p50 ms" "p99 ms" "% of ceiling" "errors" "req/s min-max"
    # shellcheck disable=SC2059
    printf "$fmt" "------------------------------" "--------" "---------" "---------" "-------------" "--------" "---------------"
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ <<<"$t"
        # shellcheck disable=SC2059
        printf "$fmt" "$name" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
            "$(pct "${RPS[$key]}" "${RPS[ceiling]}")" "${ERRS[$key]}" "$(minmax "${RPS_ALL[$key]}")"
    done
    [ -z "${PEER_RSS_KB:-}" ] || echo "peer RSS at the end of its run: $(( PEER_RSS_KB / 1024 )) MB"
    echo
    echo "goal: token endpoint >= ${GOAL_PCT}% of the ceiling's req/s and p99 < ${GOAL_P99_MS} ms, no errors"
} >"$REPORT"

VERDICT_RC=0
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
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ <<<"$t"
        if [ "${ERRS[$key]}" != 0 ]; then
            echo "warning: $name had ${ERRS[$key]} failed requests (non-2xx or socket errors): its req/s is not a token rate"
            if [ "$key" = nginx ]; then
                echo "         (429s come from nginx's rate limit: run the stack with M2M_NGINX_ARGS=--no-limit scripts/run.sh)"
            fi
        fi
    done
} >>"$REPORT"

mkdir -p "$BENCH/results"
RESULT="$BENCH/results/token-$(date '+%Y%m%d-%H%M%S').txt"
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
} >"$RESULT"

echo
cat "$REPORT"
echo
echo "written to ${RESULT#"$ROOT"/}"

if [ "$STRICT" = 1 ] && [ "$VERDICT_RC" != 0 ]; then
    exit "$VERDICT_RC"
fi
exit 0
