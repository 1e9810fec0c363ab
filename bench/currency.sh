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

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SYMBOL="${SYMBOL:-BTC}"
ONLY_CEILINGS="${ONLY_CEILINGS:-0}"
NO_FRESH="${NO_FRESH:-0}"
FRESH_TOKENS="${FRESH_TOKENS:-}"
FRESH_MAX="${FRESH_MAX:-1000000}"
CURRENCY_URL="${CURRENCY_URL:-http://127.0.0.1:9002}"
GOAL_REUSED_PCT=40 # direct, one token reused, vs the JSON ceiling
GOAL_FRESH_PCT=70  # direct, a fresh token per request, vs the verify ceiling
FRESH_MARGIN=1.3   # tokens fetched = expected requests x this

check_settings
[[ "$SYMBOL" =~ ^[A-Za-z0-9]{1,16}$ ]] || die "SYMBOL must be 1..16 letters or digits"
[[ "$FRESH_MAX" =~ ^[1-9][0-9]{0,7}$ ]] || die "FRESH_MAX must be 1..99999999"
if [ -n "$FRESH_TOKENS" ]; then
    [[ "$FRESH_TOKENS" =~ ^[1-9][0-9]{0,7}$ ]] || die "FRESH_TOKENS must be 1..99999999"
    [ "$FRESH_TOKENS" -ge "$THREADS" ] || die "FRESH_TOKENS must be at least THREADS ($THREADS)"
fi
API_PATH="/api/currency/$SYMBOL"

need_tools wrk curl python3
[ "$ONLY_CEILINGS" != 1 ] || command -v openssl >/dev/null || die "openssl not found"

start_tmp currency

# ---------------------------------------------------------------- build
JSON_BIN="" VERIFY_BIN="" # set by build
build() {
    local targets=(bench-ceiling-json bench-ceiling-verify)
    [ "$ONLY_CEILINGS" = 1 ] || targets+=(crypto-server)
    build_targets "${targets[@]}"
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
# stack_up SECS: both services answer their health checks within SECS.
stack_up() {
    auth_up "$1" && curl -fsS -m "$1" -o /dev/null "$CURRENCY_URL/api/currency/health"
}

ensure_stack() {
    if stack_up 3; then
        log "local stack already running (measured as it is: not rebuilt, not restarted)"
        return 0
    fi
    [ -x "$ROOT/scripts/run.sh" ] || die "the stack is not answering and scripts/run.sh is missing"
    if auth_up 3; then
        die "auth-service answers but crypto-server does not ($CURRENCY_URL/api/currency/health): fix or stop the running stack"
    fi
    start_stack stack_up "the stack is not healthy ($AUTH_URL/api/auth/health, $CURRENCY_URL/api/currency/health) after 60 s"
}

# get_token: one access token from the token endpoint, on stdout.
get_token() {
    local code
    code="$(post_token "$AUTH_URL$TOKEN_PATH" "$TMP/token.body" "$TMP/token.err")" || code="000"
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

read_build_note

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

# Targets: "key|name|url|script".
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
declare -A TOKENS_N SENT_N REUSED_N
measure() {
    local key="$1" name="$2" url="$3" script="$4" round="$5" out="$TMP/wrk-$1-$5.txt"
    local tokens="" t s u
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
    read_wrk "$key" "$name" "$out" '^[a-z_]+\.lua: requests='
    if [ "$key" = fresh ]; then
        t="$(sed -n 's/.* tokens=\([0-9]*\).*/\1/p' <<<"$WRK_LINE")"
        s="$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$WRK_LINE")"
        u="$(sed -n 's/.* reused=\([0-9]*\).*/\1/p' <<<"$WRK_LINE")"
        TOKENS_N[$key]=$(( ${TOKENS_N[$key]:-0} + t ))
        SENT_N[$key]=$(( ${SENT_N[$key]:-0} + s ))
        REUSED_N[$key]=$(( ${REUSED_N[$key]:-0} + u ))
        log_wrk "$name" "$round" ", tokens $t, sent $s, reused $u"
    else
        log_wrk "$name" "$round"
    fi
}

# The two ceilings on free ports (they bind port 0 and print it).
start_server json 10 bench-ceiling-json "$JSON_BIN" 0
JSON_PID="$SERVER_PID" JSON_PORT="$SERVER_PORT"
start_server verify 10 bench-ceiling-verify "$VERIFY_BIN" 0 "$TMP/pubkey.pem"
VERIFY_PID="$SERVER_PID" VERIFY_PORT="$SERVER_PORT"

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

run_rounds
stop_pid "$VERIFY_PID"
stop_pid "$JSON_PID"

compute_medians

# ---------------------------------------------------------------- report
# the ceiling each row is compared with
ceiling_of() { case "$1" in fresh) echo verify ;; *) echo json ;; esac; }
REUSE_PCT=0
if [ -n "${SENT_N[fresh]:-}" ] && [ "${SENT_N[fresh]}" -gt 0 ]; then
    REUSE_PCT="$(pct "${REUSED_N[fresh]}" "${SENT_N[fresh]}")"
fi

{
    echo "currency API benchmark (GET $API_PATH), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    report_run_info
    [ "$ONLY_CEILINGS" = 1 ] || echo "client: $BENCH_CLIENT_ID (scope currency:read); reused token: ${#BENCH_TOKEN} bytes"
    echo "$KEY_NOTE"
    echo
    table_header
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r key name _ _ <<<"$t"
        c="$(ceiling_of "$key")"
        table_row "$name" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
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
    warn_errors "a rate of answered requests"
} >>"$REPORT"

finish currency
