#!/usr/bin/env bash
# shellcheck disable=SC2034  # variables set here are read by the sourcing script
# What bench/token.sh and bench/currency.sh share. Source it, do not run it:
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Sourcing sets ROOT, BENCH and the defaults of the settings both scripts take
# (documented in each script's header and in bench/README.md); the rest is
# functions. The calling script then, in order: check_settings (and its own
# checks), need_tools, start_tmp, build_targets/find_bin, ensure_stack with
# start_stack, create_client, read_build_note, start_server and add_target for
# every target, run_rounds (which calls its measure), compute_medians, its
# report into $REPORT (report_run_info, table_header, table_row, warn_errors),
# and finish.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
NO_NGINX="${NO_NGINX:-0}"
STRICT="${STRICT:-0}"
AUTH_URL="${AUTH_URL:-http://127.0.0.1:9001}"
NGINX_URL="${NGINX_URL:-http://127.0.0.1:8000}"
TOKEN_PATH="/api/auth/token"

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

# check_settings: validates the shared settings; sets DURATION_S and WARMUP_S.
check_settings() {
    DURATION_S="$(to_seconds "$DURATION")" || die "DURATION=$DURATION: use wrk syntax (10s, 1m)"
    WARMUP_S="$(to_seconds "$WARMUP")" || die "WARMUP=$WARMUP: use wrk syntax (2s, 0)"
    if [ "$DURATION_S" -lt 1 ] || [ "$DURATION_S" -gt 3600 ]; then die "DURATION must be 1s..1h"; fi
    if [ "$WARMUP_S" -gt 600 ]; then die "WARMUP must be 0..10m"; fi
    [[ "$ROUNDS" =~ ^[1-9]$ ]] || die "ROUNDS must be 1..9"
    [[ "$CONNECTIONS" =~ ^[1-9][0-9]{0,3}$ ]] || die "CONNECTIONS must be 1..9999"
    [[ "$THREADS" =~ ^[1-9][0-9]?$ ]] || die "THREADS must be 1..99"
}

need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
    done
}

# ---------------------------------------------------------------- processes
# start_tmp NAME: the temporary directory TMP (bench-NAME.XXXXXX), with the
# report's file REPORT in it, and the EXIT/INT/TERM traps that clean up after
# the script.
PIDS=()
STARTED_STACK=0
start_tmp() {
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-$1.XXXXXX")"
    REPORT="$TMP/report.txt"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

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

# start_server NAME TIMEOUT WHAT CMD...: starts CMD, a server that binds a free
# port and prints "port N", in the background (stdout and stderr in
# $TMP/NAME.out and .err); sets SERVER_PID and SERVER_PORT. Dies with "WHAT
# did not start" and its stderr if no port shows within ~TIMEOUT s.
start_server() {
    local name="$1" timeout="$2" what="$3"
    shift 3
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_PORT="$(wait_port "$TMP/$name.out" "$SERVER_PID" "$timeout")" \
        || { cat "$TMP/$name.err" >&2; die "$what did not start"; }
}

# ---------------------------------------------------------------- build
# build_targets TARGET...: configures BUILD_DIR if it has no CMake cache yet,
# then builds the targets.
build_targets() {
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        # The project's default build type (RelWithDebInfo: -O2 -g), as scripts/run.sh uses.
        log "configuring $BUILD_DIR"
        cmake -S "$ROOT" -B "$BUILD_DIR" >"$TMP/build.log" 2>&1 \
            || { cat "$TMP/build.log" >&2; die "cmake configure failed"; }
    fi
    log "building $*"
    timeout 900 cmake --build "$BUILD_DIR" --target "$@" -j "$(nproc)" \
        >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "build failed"; }
}

find_bin() { # name var: the top level may set an output directory
    local p="$BUILD_DIR/bench/$1"
    [ -x "$p" ] || p="$(find "$BUILD_DIR" -type f -name "$1" -perm -u+x | head -n 1)"
    [ -n "$p" ] || die "$1 not found under $BUILD_DIR after the build"
    printf -v "$2" '%s' "$p"
}

# read_build_note: BUILD_NOTE, the build type and whether sanitizers are on.
# Call it after the stack started: scripts/run.sh may have reconfigured build/.
read_build_note() {
    local build_type
    build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")"
    BUILD_NOTE="build: ${build_type:-<none>}"
    if grep -Eiq '^[A-Z0-9_]*SANITI[A-Z_]*:BOOL=(ON|TRUE|1)$' "$BUILD_DIR/CMakeCache.txt"; then
        BUILD_NOTE="$BUILD_NOTE, sanitizers ON (figures are not meaningful)"
    fi
}

# ---------------------------------------------------------------- stack + client
# auth_up SECS: the auth-service answers its health check within SECS.
auth_up() {
    curl -fsS -m "$1" -o /dev/null "$AUTH_URL/api/auth/health"
}

# start_stack CHECK MESSAGE: starts the local stack with scripts/run.sh
# --detach, then waits up to 60 s for "CHECK 2" to succeed; dies with MESSAGE
# if it does not.
start_stack() {
    local check="$1" message="$2"
    # nginx's rate limits (on /api/auth/token and the API) would turn the
    # nginx run into 429s.
    export M2M_NGINX_ARGS="${M2M_NGINX_ARGS:---no-limit}"
    log "starting the local stack: M2M_NGINX_ARGS=$M2M_NGINX_ARGS scripts/run.sh --detach"
    STARTED_STACK=1
    timeout 900 "$ROOT/scripts/run.sh" --detach >&2 || die "scripts/run.sh --detach failed"
    for _ in $(seq 120); do
        "$check" 2 && return 0
        sleep 0.5
    done
    die "$message"
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

# post_token URL BODY ERR: one client credentials request (client_secret_basic,
# the bench client): prints the HTTP status, keeps the answer in BODY and
# curl's errors in ERR; fails as curl does. Use: code="$(post_token ...)" || code=000
post_token() {
    curl -sS -m 10 -o "$2" -w '%{http_code}' \
        -u "$BENCH_CLIENT_ID:$BENCH_CLIENT_SECRET" \
        -H 'Content-Type: application/x-www-form-urlencoded' \
        --data 'grant_type=client_credentials' "$1" 2>"$3"
}

# ---------------------------------------------------------------- measuring
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

# Targets: "key|name|url[|more]", measured in this order in every round; each
# script's add_target checks a target and appends it.
TARGETS=()

# Every measured run, per target key: req/s, p50 and p99 (ms), errors summed.
declare -A RPS_ALL P50_ALL P99_ALL ERRS

# read_wrk KEY NAME OUT PATTERN: reads the output OUT of one measured wrk run
# and adds it to the target KEY's figures. Sets WRK_RPS, WRK_P50, WRK_P99 (ms),
# WRK_LINE (the line the wrk script's done() printed, found with grep -E
# PATTERN) and WRK_ERRS (the sum of that line's *_errors= fields).
read_wrk() {
    local key="$1" name="$2" out="$3" pattern="$4"
    WRK_RPS="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")"
    WRK_P50="$(awk '$1 == "50%" { print $2; exit }' "$out")"
    WRK_P99="$(awk '$1 == "99%" { print $2; exit }' "$out")"
    WRK_LINE="$(grep -E "$pattern" "$out" || true)"
    if [ -z "$WRK_RPS" ] || [ -z "$WRK_P50" ] || [ -z "$WRK_P99" ] || [ -z "$WRK_LINE" ]; then
        cat "$out" >&2; die "$name: could not read wrk's output"
    fi
    WRK_P50="$(to_ms "$WRK_P50")"; WRK_P99="$(to_ms "$WRK_P99")"
    WRK_ERRS="$(awk '{ s = 0; for (i = 2; i <= NF; i++) if ($i ~ /_errors=/) { split($i, a, "="); s += a[2] }
        print s }' <<<"$WRK_LINE")"
    RPS_ALL[$key]="${RPS_ALL[$key]:-} $WRK_RPS"
    P50_ALL[$key]="${P50_ALL[$key]:-} $WRK_P50"
    P99_ALL[$key]="${P99_ALL[$key]:-} $WRK_P99"
    ERRS[$key]=$(( ${ERRS[$key]:-0} + WRK_ERRS ))
}

# log_wrk NAME ROUND [MORE]: the figures read_wrk read, on stderr.
log_wrk() {
    log "$1 [round $2/$ROUNDS]: $WRK_RPS req/s, p50 $WRK_P50 ms, p99 $WRK_P99 ms, errors $WRK_ERRS${3:-}"
}

# Rounds: every target once per round, interleaved, so that a slow spell of
# the host hits all of them alike; the table shows medians over the rounds.
# Calls the script's "measure FIELD... ROUND" with the fields of each target.
run_rounds() {
    local round t fields
    for round in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            IFS='|' read -r -a fields <<<"$t"
            measure "${fields[@]}" "$round"
        done
    done
}

# compute_medians: RPS, P50 and P99 per target key, medians over the rounds.
declare -A RPS P50 P99
compute_medians() {
    local t key
    for t in "${TARGETS[@]}"; do
        key="${t%%|*}"
        RPS[$key]="$(median "${RPS_ALL[$key]}" | awk '{ printf "%.0f", $1 }')"
        P50[$key]="$(median "${P50_ALL[$key]}" | awk '{ printf "%.2f", $1 }')"
        P99[$key]="$(median "${P99_ALL[$key]}" | awk '{ printf "%.2f", $1 }')"
    done
}

# ---------------------------------------------------------------- report
VERDICT_RC=0 # the script's verdicts set it (3: a goal is missed)

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "-" }'; }

# report_run_info: the host, wrk, rounds, build and git lines of the report.
report_run_info() {
    echo "host: $(nproc) CPUs, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, keep-alive"
    echo "rounds: $ROUNDS (targets interleaved; figures are medians over the rounds), warm-up $WARMUP per target"
    echo "$BUILD_NOTE; git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$([ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] || echo ' (+ local changes)')"
}

# table_row NAME REQ/S P50 P99 PCT ERRORS MIN-MAX: one row of the table.
table_row() {
    printf '%-30s %8s %9s %9s %13s %8s %15s\n' "$@"
}
table_header() {
    table_row "target" "req/s" "p50 ms" "p99 ms" "% of ceiling" "errors" "req/s min-max"
    table_row "------------------------------" "--------" "---------" "---------" "-------------" "--------" "---------------"
}

# warn_errors WHAT: a warning for every target with failed requests, saying
# that its req/s is not WHAT.
warn_errors() {
    local t key name
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ <<<"$t"
        if [ "${ERRS[$key]}" != 0 ]; then
            echo "warning: $name had ${ERRS[$key]} failed requests (non-2xx or socket errors): its req/s is not $1"
            if [ "$key" = nginx ]; then
                echo "         (429s come from nginx's rate limit: run the stack with M2M_NGINX_ARGS=--no-limit scripts/run.sh)"
            fi
        fi
    done
}

# finish NAME: writes REPORT and the raw wrk output of every run to
# bench/results/NAME-<date>.txt, prints REPORT, and exits: 0, or VERDICT_RC
# under STRICT=1.
finish() {
    local result round t key name
    mkdir -p "$BENCH/results"
    result="$BENCH/results/$1-$(date '+%Y%m%d-%H%M%S').txt"
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
    } >"$result"

    echo
    cat "$REPORT"
    echo
    echo "written to ${result#"$ROOT"/}"

    if [ "$STRICT" = 1 ] && [ "$VERDICT_RC" != 0 ]; then
        exit "$VERDICT_RC"
    fi
    exit 0
}
