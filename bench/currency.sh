#!/usr/bin/env bash
# Benchmark of crypto-server's GET /api/currency/{SYM} against two ceilings
# measured in the same run: bench-ceiling-json (a bare libmicrohttpd JSON
# reply) and bench-ceiling-verify (the same plus one ES256 verification per
# request). Prints a table and the verdicts for the two goals of issue 3
#   - one token reused, direct:     >= 40% of the JSON ceiling's req/s
#   - a fresh token on every call:  >= 70% of the verify ceiling's req/s
# and writes it to bench/results/currency-<date>.txt. See bench/README.md.
#
# Environment:
#   DURATION=10s        wrk duration of each measured run (wrk syntax: 30s, 1m)
#   WARMUP=2s           unmeasured wrk run before each target's first measured one (0 = none)
#   ROUNDS=3            measured runs per target, interleaved; medians reported
#   CONNECTIONS=32 THREADS=2
#   SYMBOL=BTC          the currency asked for
#   ONLY_CEILINGS=1     measure the two ceilings alone (no stack: a local key signs the token)
#   NO_NGINX=1          skip the run through nginx
#   NO_FRESH=1          skip the fresh-token run
#   FRESH_TOKENS=N      fetch exactly N tokens per fresh-token run (default: enough for
#                       the run not to reuse any, estimated from the verify ceiling)
#   FRESH_MAX=1000000   cap on the tokens fetched per run (memory: ~0.5 KB each, twice)
#   BENCH_CLIENT_ID / BENCH_CLIENT_SECRET
#                       use this existing client instead of creating one
#   BUILD_DIR=ROOT/build
#   AUTH_URL=http://127.0.0.1:9001  CURRENCY_URL=http://127.0.0.1:9002
#   NGINX_URL=http://127.0.0.1:8000
#   STRICT=1            exit 3 when a goal is missed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
SYMBOL="${SYMBOL:-BTC}"
ONLY_CEILINGS="${ONLY_CEILINGS:-0}"
NO_NGINX="${NO_NGINX:-0}"
NO_FRESH="${NO_FRESH:-0}"
FRESH_TOKENS="${FRESH_TOKENS:-}"
FRESH_MAX="${FRESH_MAX:-1000000}"
STRICT="${STRICT:-0}"
AUTH_URL="${AUTH_URL:-http://127.0.0.1:9001}"
CURRENCY_URL="${CURRENCY_URL:-http://127.0.0.1:9002}"
NGINX_URL="${NGINX_URL:-http://127.0.0.1:8000}"
TOKEN_PATH="/api/auth/token"
GOAL_REUSED_PCT=40 # direct, one token reused, vs the JSON ceiling
GOAL_FRESH_PCT=70  # direct, a fresh token per request, vs the verify ceiling
FRESH_MARGIN=1.3   # tokens fetched = expected requests x this

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
[[ "$SYMBOL" =~ ^[A-Za-z0-9]{1,16}$ ]] || die "SYMBOL must be 1..16 letters or digits"
[[ "$FRESH_MAX" =~ ^[1-9][0-9]{0,7}$ ]] || die "FRESH_MAX must be 1..99999999"
if [ -n "$FRESH_TOKENS" ]; then
    [[ "$FRESH_TOKENS" =~ ^[1-9][0-9]{0,7}$ ]] || die "FRESH_TOKENS must be 1..99999999"
    [ "$FRESH_TOKENS" -ge "$THREADS" ] || die "FRESH_TOKENS must be at least THREADS ($THREADS)"
fi
API_PATH="/api/currency/$SYMBOL"

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done
[ "$ONLY_CEILINGS" != 1 ] || command -v openssl >/dev/null || die "openssl not found"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-currency.XXXXXX")"
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
JSON_BIN="$BUILD_DIR/bench/bench-ceiling-json"
VERIFY_BIN="$BUILD_DIR/bench/bench-ceiling-verify"
find_bin() { # name var: the top level may set an output directory
    local p="$BUILD_DIR/bench/$1"
    [ -x "$p" ] || p="$(find "$BUILD_DIR" -type f -name "$1" -perm -u+x | head -n 1)"
    [ -n "$p" ] || die "$1 not found under $BUILD_DIR after the build"
    printf -v "$2" '%s' "$p"
}
build() {
    local targets=(bench-ceiling-json bench-ceiling-verify)
    [ "$ONLY_CEILINGS" = 1 ] || targets+=(crypto-server)
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        # The project's default build type (RelWithDebInfo: -O2 -g), as scripts/run.sh uses.
        log "configuring $BUILD_DIR"
        cmake -S "$ROOT" -B "$BUILD_DIR" >"$TMP/build.log" 2>&1 \
            || { cat "$TMP/build.log" >&2; die "cmake configure failed"; }
    fi
    log "building ${targets[*]}"
    timeout 900 cmake --build "$BUILD_DIR" --target "${targets[@]}" -j "$(nproc)" \
        >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "build failed"; }
    find_bin bench-ceiling-json JSON_BIN
    find_bin bench-ceiling-verify VERIFY_BIN
}
build

# ---------------------------------------------------------------- helpers in python3
# (The script comes on stdin: data goes in arguments and files.)
# kid TOKEN: the kid of the token's header. jwks2pem TOKEN JWKS > PEM: the
# P-256 key of the JWKS whose kid is the token's (or the only key), as a
# SubjectPublicKeyInfo PEM. mktoken KEY.pem:
# an ES256 token signed with openssl (for ONLY_CEILINGS=1; the ceilings do not
# read the claims).
py() {
    python3 - "$@" <<'PY'
import base64, json, subprocess, sys

def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

cmd = sys.argv[1]
if cmd == "kid":
    print(json.loads(b64d(sys.argv[2].split(".")[0])).get("kid"))
elif cmd == "jwks2pem":
    kid = json.loads(b64d(sys.argv[2].split(".")[0])).get("kid")
    with open(sys.argv[3]) as f:
        keys = [k for k in json.load(f).get("keys", [])
                if k.get("kty") == "EC" and k.get("crv") == "P-256"]
    match = [k for k in keys if k.get("kid") == kid] or (keys if len(keys) == 1 else [])
    if not match:
        sys.exit("no P-256 key with kid %r in the JWKS" % kid)
    x, y = b64d(match[0]["x"]), b64d(match[0]["y"])
    if len(x) != 32 or len(y) != 32:
        sys.exit("bad P-256 coordinates in the JWKS")
    # SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } BIT STRING 04||x||y
    der = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + x + y
    b = base64.b64encode(der).decode()
    print("-----BEGIN PUBLIC KEY-----")
    for i in range(0, len(b), 64):
        print(b[i:i + 64])
    print("-----END PUBLIC KEY-----")
elif cmd == "mktoken":
    h = b64e(b'{"alg":"ES256","typ":"at+jwt","kid":"bench"}')
    p = b64e(b'{"iss":"bench","sub":"bench-client","aud":"bench","scope":"currency:read",'
             b'"exp":4102444800,"jti":"bench-ceilings-only-0000"}')
    signing_input = (h + "." + p).encode()
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sys.argv[2]],
                         input=signing_input, capture_output=True, check=True).stdout
    # DER SEQUENCE { INTEGER r, INTEGER s } -> raw r||s (RFC 7518 section 3.4)
    def integer(i):
        assert der[i] == 2
        n = der[i + 1]
        return int.from_bytes(der[i + 2:i + 2 + n], "big"), i + 2 + n
    r, i = integer(2)
    s, _ = integer(i)
    print(h + "." + p + "." + b64e(r.to_bytes(32, "big") + s.to_bytes(32, "big")))
PY
}

# ---------------------------------------------------------------- stack + client + token
ensure_stack() {
    if curl -fsS -m 3 -o /dev/null "$AUTH_URL/api/auth/health" \
        && curl -fsS -m 3 -o /dev/null "$CURRENCY_URL/api/currency/health"; then
        log "local stack already running (measured as it is: not rebuilt, not restarted)"
        return 0
    fi
    [ -x "$ROOT/scripts/run.sh" ] || die "the stack is not answering and scripts/run.sh is missing"
    if curl -fsS -m 3 -o /dev/null "$AUTH_URL/api/auth/health"; then
        die "auth-service answers but crypto-server does not ($CURRENCY_URL/api/currency/health): fix or stop the running stack"
    fi
    # Rate limits in nginx would turn the nginx run into 429s.
    export M2M_NGINX_ARGS="${M2M_NGINX_ARGS:---no-limit}"
    log "starting the local stack: M2M_NGINX_ARGS=$M2M_NGINX_ARGS scripts/run.sh --detach"
    STARTED_STACK=1
    timeout 900 "$ROOT/scripts/run.sh" --detach >&2 || die "scripts/run.sh --detach failed"
    for _ in $(seq 120); do
        if curl -fsS -m 2 -o /dev/null "$AUTH_URL/api/auth/health" \
            && curl -fsS -m 2 -o /dev/null "$CURRENCY_URL/api/currency/health"; then
            return 0
        fi
        sleep 0.5
    done
    die "the stack is not healthy ($AUTH_URL/api/auth/health, $CURRENCY_URL/api/currency/health) after 60 s"
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

# get_token: one access token from the token endpoint, on stdout.
get_token() {
    local code
    code="$(curl -sS -m 10 -o "$TMP/token.body" -w '%{http_code}' \
        -u "$BENCH_CLIENT_ID:$BENCH_CLIENT_SECRET" \
        -H 'Content-Type: application/x-www-form-urlencoded' \
        --data 'grant_type=client_credentials' "$AUTH_URL$TOKEN_PATH" 2>"$TMP/token.err")" || code="000"
    if [ "$code" != 200 ]; then
        cat "$TMP/token.err" "$TMP/token.body" >&2 2>/dev/null
        echo >&2
        die "POST $AUTH_URL$TOKEN_PATH answered HTTP $code"
    fi
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <"$TMP/token.body" \
        || die "no access_token in the token endpoint's answer"
}

if [ "$ONLY_CEILINGS" = 1 ]; then
    # No stack: a local key, and a token the ceilings will take (they only check the signature).
    if ! { openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/key.pem" \
        && openssl pkey -in "$TMP/key.pem" -pubout -out "$TMP/pubkey.pem"; } 2>"$TMP/openssl.err"; then
        cat "$TMP/openssl.err" >&2
        die "openssl could not make a P-256 key"
    fi
    BENCH_TOKEN="$(py mktoken "$TMP/key.pem")" || die "could not sign a token with openssl"
    KEY_NOTE="key: a local P-256 key (ONLY_CEILINGS=1)"
else
    ensure_stack
    create_client
    BENCH_TOKEN="$(get_token)"
    # The verify ceiling's key: the auth-service's JWKS, fetched once.
    curl -fsS -m 10 "$AUTH_URL/api/auth/jwks.json" -o "$TMP/jwks.json" \
        || die "cannot fetch $AUTH_URL/api/auth/jwks.json"
    py jwks2pem "$BENCH_TOKEN" "$TMP/jwks.json" >"$TMP/pubkey.pem" \
        || die "cannot make a PEM key from the JWKS"
    KEY_NOTE="key: the auth-service's JWKS key kid=$(py kid "$BENCH_TOKEN"), fetched once"
fi
export BENCH_CLIENT_ID BENCH_CLIENT_SECRET BENCH_TOKEN

# Read after the stack started: scripts/run.sh may have reconfigured build/.
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")"
BUILD_NOTE="build: ${BUILD_TYPE:-<none>}"
if grep -Eiq '^[A-Z0-9_]*SANITI[A-Z_]*:BOOL=(ON|TRUE|1)$' "$BUILD_DIR/CMakeCache.txt"; then
    BUILD_NOTE="$BUILD_NOTE, sanitizers ON (figures are not meaningful)"
fi

# ---------------------------------------------------------------- measuring
# check_endpoint NAME URL TOKEN: one GET, must be 200 with a JSON object.
check_endpoint() {
    local name="$1" url="$2" token="$3" code
    code="$(curl -sS -m 10 -o "$TMP/check.body" -w '%{http_code}' \
        -H 'Accept: application/json' -H "Authorization: Bearer $token" \
        "$url" 2>"$TMP/check.err")" || code="000"
    if [ "$code" != 200 ] || ! grep -q '^{' "$TMP/check.body"; then
        {
            echo "---- $name: GET $url answered HTTP $code"
            cat "$TMP/check.err" "$TMP/check.body" 2>/dev/null
            echo
        } >&2
        die "$name: does not answer 200 with a JSON object"
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
max_of() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | tail -n 1
}

# fetch_tokens COUNT OUT: COUNT fresh access tokens, one per line, into OUT,
# with wrk and fetch_tokens.lua on the token endpoint (direct). Stops wrk as
# soon as every thread has its share. Fewer than COUNT is reported, not fatal.
FETCH_TOTAL=0
fetch_tokens() {
    local count="$1" out="$2" prefix="$TMP/fetch" secs pid i got line
    # a multiple of THREADS, so that every thread's share is whole
    count=$(( (count + THREADS - 1) / THREADS * THREADS ))
    rm -f "$prefix".*
    # the token endpoint does >= ~20k/s here; allow 2k/s and 30 s more before giving up
    secs=$(( count / 2000 + 30 ))
    log "fetching $count fresh tokens from $AUTH_URL$TOKEN_PATH"
    BENCH_TOKEN_OUT="$prefix" BENCH_TOKEN_COUNT="$count" BENCH_THREADS="$THREADS" \
        timeout -k 5 $(( secs + 30 )) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" \
        -s "$BENCH/fetch_tokens.lua" "$AUTH_URL$TOKEN_PATH" >"$TMP/fetch.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do
        # shellcheck disable=SC2012
        if [ "$(ls "$prefix".done.* 2>/dev/null | wc -l)" -ge "$THREADS" ]; then
            # wrk's main thread sleeps out -d even when every thread stopped;
            # timeout passes INT on to wrk, which prints its summary and exits.
            kill -INT "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    line="$(grep '^fetch_tokens.lua:' "$TMP/fetch.out" || true)"
    [ -n "$line" ] || { cat "$TMP/fetch.out" >&2; die "fetching tokens: wrk failed"; }
    : >"$out"
    for (( i = 0; i < THREADS; i++ )); do
        [ ! -f "$prefix.$i" ] || cat "$prefix.$i" >>"$out"
    done
    got="$(wc -l <"$out")"
    FETCH_TOTAL=$(( FETCH_TOTAL + got ))
    log "fetched $got tokens (${line#fetch_tokens.lua: })"
    [ "$got" -ge "$THREADS" ] || die "fetching tokens: only $got tokens (need at least $THREADS)"
    [ "$got" -ge "$count" ] || log "warning: fewer tokens than asked ($got of $count): some will be reused"
    rm -f "$prefix".*
}

# fresh_count SECS: how many tokens a fresh-token run of SECS seconds needs:
# FRESH_TOKENS if set, else the fastest of the verify ceiling and the
# fresh-token row so far, times SECS, times FRESH_MARGIN (at most FRESH_MAX).
fresh_count() {
    local secs="$1" rate n
    if [ -n "$FRESH_TOKENS" ]; then echo "$FRESH_TOKENS"; return; fi
    rate="$(max_of "${RPS_ALL[verify]:-} ${RPS_ALL[fresh]:-} 1000")"
    n="$(awk -v r="$rate" -v s="$secs" -v m="$FRESH_MARGIN" 'BEGIN { printf "%d", r * s * m + 1000 }')"
    [ "$n" -le "$FRESH_MAX" ] || n="$FRESH_MAX"
    echo "$n"
}

# prepare_fresh SECS FILE: fetches the tokens of one fresh-token run into FILE,
# keeping one more aside to check that the batch is accepted (200) first.
prepare_fresh() {
    local secs="$1" file="$2" n
    n="$(fresh_count "$secs")"
    fetch_tokens $(( n + 1 )) "$TMP/fetched.txt"
    check_endpoint "$FRESH_NAME" "$CURRENCY_URL$API_PATH" "$(tail -n 1 "$TMP/fetched.txt")"
    head -n -1 "$TMP/fetched.txt" >"$file"
    rm -f "$TMP/fetched.txt"
}

# Targets: "key|name|url|script", measured in this order in every round.
TARGETS=()
add_target() {
    [ "$1" = fresh ] || check_endpoint "$2" "$3" "$BENCH_TOKEN"
    TARGETS+=("$1|$2|$3|$4")
}

# run_wrk KEY NAME URL SCRIPT SECS OUT TOKENS: one wrk run.
run_wrk() {
    local key="$1" name="$2" url="$3" script="$4" secs="$5" out="$6" tokens="$7"
    BENCH_TOKEN_FILE="$tokens" BENCH_THREADS="$THREADS" \
        bounded $(( secs + 30 )) "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" \
        --latency -s "$BENCH/$script" "$url" \
        || { cat "$out" >&2; die "$name: wrk failed"; }
}

# measure KEY NAME URL SCRIPT ROUND: (warm-up in round 1) then one measured wrk run.
declare -A RPS_ALL P50_ALL P99_ALL ERRS TOKENS_N SENT_N REUSED_N
measure() {
    local key="$1" name="$2" url="$3" script="$4" round="$5" out="$TMP/wrk-$1-$5.txt"
    local line r p50 p99 e tokens="" t s u
    if [ "$round" = 1 ] && [ "$WARMUP_S" -gt 0 ]; then
        log "$name: warm-up $WARMUP"
        if [ "$key" = fresh ]; then
            tokens="$TMP/tokens-warmup.txt"
            prepare_fresh "$WARMUP_S" "$tokens"
        fi
        run_wrk "$key" "$name" "$url" "$script" "$WARMUP_S" "$TMP/warmup.txt" "$tokens"
    fi
    if [ "$key" = fresh ]; then
        tokens="$TMP/tokens.txt"
        prepare_fresh "$DURATION_S" "$tokens"
    fi
    log "$name [round $round/$ROUNDS]: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s $script $url"
    run_wrk "$key" "$name" "$url" "$script" "$DURATION_S" "$out" "$tokens"
    [ -z "$tokens" ] || rm -f "$TMP/tokens.txt" "$TMP/tokens-warmup.txt"
    r="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")"
    p50="$(awk '$1 == "50%" { print $2; exit }' "$out")"
    p99="$(awk '$1 == "99%" { print $2; exit }' "$out")"
    line="$(grep -E '^[a-z_]+\.lua: requests=' "$out" || true)"
    if [ -z "$r" ] || [ -z "$p50" ] || [ -z "$p99" ] || [ -z "$line" ]; then
        cat "$out" >&2; die "$name: could not read wrk's output"
    fi
    p50="$(to_ms "$p50")"; p99="$(to_ms "$p99")"
    e="$(awk '{ s = 0; for (i = 2; i <= NF; i++) if ($i ~ /_errors=/) { split($i, a, "="); s += a[2] }
        print s }' <<<"$line")"
    RPS_ALL[$key]="${RPS_ALL[$key]:-} $r"
    P50_ALL[$key]="${P50_ALL[$key]:-} $p50"
    P99_ALL[$key]="${P99_ALL[$key]:-} $p99"
    ERRS[$key]=$(( ${ERRS[$key]:-0} + e ))
    if [ "$key" = fresh ]; then
        t="$(sed -n 's/.* tokens=\([0-9]*\).*/\1/p' <<<"$line")"
        s="$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$line")"
        u="$(sed -n 's/.* reused=\([0-9]*\).*/\1/p' <<<"$line")"
        TOKENS_N[$key]=$(( ${TOKENS_N[$key]:-0} + t ))
        SENT_N[$key]=$(( ${SENT_N[$key]:-0} + s ))
        REUSED_N[$key]=$(( ${REUSED_N[$key]:-0} + u ))
        log "$name [round $round/$ROUNDS]: $r req/s, p50 $p50 ms, p99 $p99 ms, errors $e, tokens $t, sent $s, reused $u"
    else
        log "$name [round $round/$ROUNDS]: $r req/s, p50 $p50 ms, p99 $p99 ms, errors $e"
    fi
}

# The two ceilings on free ports (they bind port 0 and print it).
"$JSON_BIN" 0 >"$TMP/json.out" 2>"$TMP/json.err" &
JSON_PID=$!
PIDS+=("$JSON_PID")
JSON_PORT="$(wait_port "$TMP/json.out" "$JSON_PID" 10)" \
    || { cat "$TMP/json.err" >&2; die "bench-ceiling-json did not start"; }
"$VERIFY_BIN" 0 "$TMP/pubkey.pem" >"$TMP/verify.out" 2>"$TMP/verify.err" &
VERIFY_PID=$!
PIDS+=("$VERIFY_PID")
VERIFY_PORT="$(wait_port "$TMP/verify.out" "$VERIFY_PID" 10)" \
    || { cat "$TMP/verify.err" >&2; die "bench-ceiling-verify did not start"; }

FRESH_NAME="crypto-server fresh tokens"
add_target json "ceiling (MHD JSON reply)" "http://127.0.0.1:$JSON_PORT$API_PATH" currency.lua
add_target verify "ceiling (MHD + ES256 verify)" "http://127.0.0.1:$VERIFY_PORT$API_PATH" currency.lua
if [ "$ONLY_CEILINGS" != 1 ]; then
    add_target direct "crypto-server direct :9002" "$CURRENCY_URL$API_PATH" currency.lua
    if [ "$NO_NGINX" != 1 ]; then
        add_target nginx "crypto-server via nginx :8000" "$NGINX_URL$API_PATH" currency.lua
    fi
    if [ "$NO_FRESH" != 1 ]; then
        # checked before each of its runs, with a token of the batch fetched for it
        add_target fresh "$FRESH_NAME" "$CURRENCY_URL$API_PATH" fresh_tokens.lua
    fi
fi
# The ceiling with a forged signature must say 401 (it really verifies).
code="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer ${BENCH_TOKEN%?????}AAAAA" \
    "http://127.0.0.1:$VERIFY_PORT$API_PATH" 2>/dev/null)" || code=000
[ "$code" = 401 ] || die "bench-ceiling-verify answered $code to a token with a broken signature"

# Rounds: every target once per round, interleaved, so that a slow spell of
# the host hits all of them alike; the table shows medians over the rounds.
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name url script <<<"$t"
        measure "$key" "$name" "$url" "$script" "$round"
    done
done
stop_pid "$VERIFY_PID"
stop_pid "$JSON_PID"

declare -A RPS P50 P99
for t in "${TARGETS[@]}"; do
    key="${t%%|*}"
    RPS[$key]="$(median "${RPS_ALL[$key]}" | awk '{ printf "%.0f", $1 }')"
    P50[$key]="$(median "${P50_ALL[$key]}" | awk '{ printf "%.2f", $1 }')"
    P99[$key]="$(median "${P99_ALL[$key]}" | awk '{ printf "%.2f", $1 }')"
done

# ---------------------------------------------------------------- report
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "-" }'; }
# the ceiling each row is compared with
ceiling_of() { case "$1" in fresh) echo verify ;; *) echo json ;; esac; }
REUSE_PCT=0
if [ -n "${SENT_N[fresh]:-}" ] && [ "${SENT_N[fresh]}" -gt 0 ]; then
    REUSE_PCT="$(pct "${REUSED_N[fresh]}" "${SENT_N[fresh]}")"
fi

REPORT="$TMP/report.txt"
{
    echo "currency API benchmark (GET $API_PATH), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(nproc) CPUs, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, keep-alive"
    echo "rounds: $ROUNDS (targets interleaved; figures are medians over the rounds), warm-up $WARMUP per target"
    echo "$BUILD_NOTE; git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$([ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] || echo ' (+ local changes)')"
    [ "$ONLY_CEILINGS" = 1 ] || echo "client: $BENCH_CLIENT_ID (scope currency:read); reused token: ${#BENCH_TOKEN} bytes"
    echo "$KEY_NOTE"
    echo
    fmt='%-30s %8s %9s %9s %13s %8s %15s\n'
    # shellcheck disable=SC2059
    printf "$fmt" "target" "req/s" "p50 ms" "p99 ms" "% of ceiling" "errors" "req/s min-max"
    # shellcheck disable=SC2059
    printf "$fmt" "------------------------------" "--------" "---------" "---------" "-------------" "--------" "---------------"
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ _ <<<"$t"
        c="$(ceiling_of "$key")"
        # shellcheck disable=SC2059
        printf "$fmt" "$name" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
            "$(pct "${RPS[$key]}" "${RPS[$c]}") $c" "${ERRS[$key]}" "$(minmax "${RPS_ALL[$key]}")"
    done
    echo
    echo "% of ceiling: the ceilings and the reused-token rows against the JSON ceiling (json),"
    echo "the fresh-token row against the verify ceiling (verify)"
    if [ -n "${SENT_N[fresh]:-}" ]; then
        echo "fresh tokens: ${TOKENS_N[fresh]} loaded for the measured runs, ${SENT_N[fresh]} requests sent," \
            "${REUSED_N[fresh]} of them (${REUSE_PCT}%) with a token already used in the run;" \
            "$FETCH_TOTAL fetched in all (warm-up and checks included)"
    fi
    echo
    echo "goals: crypto-server direct, one token reused >= ${GOAL_REUSED_PCT}% of the JSON ceiling;"
    echo "       a fresh token per request >= ${GOAL_FRESH_PCT}% of the verify ceiling; no errors"
} >"$REPORT"

VERDICT_RC=0
# verdict KEY GOAL LABEL [EXTRA-CONDITION-MESSAGE]
verdict() {
    local key="$1" goal="$2" label="$3" c p ok=1 why=""
    c="$(ceiling_of "$key")"
    p="$(pct "${RPS[$key]}" "${RPS[$c]}")"
    awk -v p="$p" -v g="$goal" 'BEGIN { exit !(p != "-" && p + 0 >= g) }' || ok=0
    if [ "${ERRS[$key]}" != 0 ]; then ok=0; why=", errors ${ERRS[$key]}"; fi
    if [ "$key" = fresh ] && awk -v r="$REUSE_PCT" 'BEGIN { exit !(r > 1) }'; then
        ok=0; why="$why, ${REUSE_PCT}% of requests reused a token: not a fresh-token figure"
    fi
    if [ "$ok" = 1 ]; then
        echo "$label: PASS ($p% of the $c ceiling, goal >= $goal%, p99 ${P99[$key]} ms)"
    else
        echo "$label: FAIL ($p% of the $c ceiling, goal >= $goal%, p99 ${P99[$key]} ms$why)"
        return 1
    fi
}
{
    if [ "$ONLY_CEILINGS" = 1 ]; then
        echo "verdict: none (ONLY_CEILINGS=1: crypto-server was not measured)"
    else
        verdict direct "$GOAL_REUSED_PCT" "verdict (reused token, direct)" || VERDICT_RC=3
        if [ -n "${RPS[fresh]:-}" ]; then
            verdict fresh "$GOAL_FRESH_PCT" "verdict (fresh tokens, direct)" || VERDICT_RC=3
        else
            echo "verdict (fresh tokens, direct): none (NO_FRESH=1)"
        fi
        if [ -n "${RPS[nginx]:-}" ]; then
            verdict nginx "$GOAL_REUSED_PCT" "through nginx (informative)" || true
        fi
    fi
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ _ <<<"$t"
        if [ "${ERRS[$key]}" != 0 ]; then
            echo "warning: $name had ${ERRS[$key]} failed requests (non-2xx or socket errors): its req/s is not a rate of answered requests"
            if [ "$key" = nginx ]; then
                echo "         (429s come from nginx's rate limit: run the stack with M2M_NGINX_ARGS=--no-limit scripts/run.sh)"
            fi
        fi
    done
} >>"$REPORT"

mkdir -p "$BENCH/results"
RESULT="$BENCH/results/currency-$(date '+%Y%m%d-%H%M%S').txt"
{
    cat "$REPORT"
    echo
    echo "==== raw wrk output"
    for round in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            IFS='|' read -r key name _ _ <<<"$t"
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
