#!/usr/bin/env bash
# Narrated scenarios against a running stack (the seed's demo.py):
#   1. register a client and get a token (what is inside it)
#   2. call the protected API with it
#   3. a token expires: refused when used directly; the agent renews by itself
#   4. forged tokens are refused (changed claims, alg none, HS256 with the public key)
#   5. several clients at once
#
# Usage: scripts/demo.sh [options]
#   --url URL        the suite through nginx (default http://localhost:8000)
#   --cli CMD        how to run "auth-service client" for the short-lived
#                    client of scenario 3 (default: "<repo>/scripts/run.sh client")
#   --agent-bin PATH the crypto-client binary for scenario 3's own agent
#                    (default <repo>/build/crypto-client/crypto-client)
#   --fast           no pauses between steps
#
# Start the stack first: scripts/run.sh --detach. The demo changes nothing
# but what it creates: its own clients (ids demo-...) and, for scenario 3, an
# agent of its own on a free loopback port, stopped at the end.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

url=http://localhost:8000
cli="$M2M_ROOT/scripts/run.sh client"
agent_bin="$M2M_ROOT/build/crypto-client/crypto-client"
pause=1
need() { (($# >= 2)) || m2m_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
    --url) need "$@"; url="${2%/}"; shift 2 ;;
    --cli) need "$@"; cli="$2"; shift 2 ;;
    --agent-bin) need "$@"; agent_bin="$2"; shift 2 ;;
    --fast) pause=0; shift ;;
    -h | --help) m2m_usage "${BASH_SOURCE[0]}"; exit 0 ;;
    *) m2m_die "unknown option: $1 (see --help)" ;;
    esac
done
command -v jq >/dev/null || m2m_die "jq is needed (scripts/deps.sh installs it)"
[[ -x "$agent_bin" ]] || m2m_die "no crypto-client binary at $agent_bin (build first, or --agent-bin)"

tmp="$(mktemp -d)"
agent_pid=
cleanup() {
    if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    rm -rf -- "$tmp"
}
trap cleanup EXIT
run_id="$(date +%s)-$RANDOM"

# ---- narration ----------------------------------------------------------------

scenario() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }
say() { printf '\n%s\n' "$*"; ((pause)) && sleep 1 || true; }
show() { printf '  $ %s\n' "$*"; }
fail() {
    printf '\nDEMO FAILED: %s\n' "$*" >&2
    exit 1
}

# call METHOD URL [curl args]: prints the command, sets STATUS and BODY.
call() {
    local method="$1" target="$2"
    shift 2
    show "curl -X $method $target${1:+ ...}"
    STATUS="$(curl -sS -m 10 -X "$method" -o "$tmp/body" -w '%{http_code}' "$@" -- "$target" 2>&1)" ||
        fail "curl: $STATUS"
    BODY="$(cat "$tmp/body")"
    printf '  -> HTTP %s %s\n' "$STATUS" "$(head -c 240 <<<"$BODY")"
}

want() { [[ "$STATUS" == "$1" ]] || fail "expected HTTP $1, got $STATUS: $BODY"; }

b64url_json() { # decodes one JWT segment
    local s="$1"
    s="$(tr '_-' '/+' <<<"$s")"
    while ((${#s} % 4)); do s+="="; done
    base64 -d <<<"$s" 2>/dev/null
}

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

register() { # register ID SECRET NAME
    curl -sS -m 10 -o /dev/null -w '%{http_code}' -X POST "$url/api/auth/register" \
        -H 'Content-Type: application/json' \
        -d "{\"client_id\":\"$1\",\"client_secret\":\"$2\",\"app_name\":\"$3\"}"
}

token_for() { # token_for ID SECRET -> prints the access token
    curl -sS -m 10 -u "$1:$2" -d grant_type=client_credentials "$url/api/auth/token" |
        jq -r '.access_token // empty'
}

curl -fsS -m 5 -o /dev/null "$url/api/auth/health" ||
    fail "no stack at $url (start it: scripts/run.sh --detach)"

# ---- 1 -----------------------------------------------------------------------

scenario "1. A service registers and gets a token"
id="demo-$run_id"
secret="demo-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
say "The service registers itself with a client id and a secret (the seed's JSON):"
call POST "$url/api/auth/register" -H 'Content-Type: application/json' \
    -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"app_name\":\"Demo\"}"
want 201
say "It asks for a token with the client credentials grant (HTTP Basic, RFC 6749 §4.4):"
call POST "$url/api/auth/token" -u "$id:$secret" -d grant_type=client_credentials
want 200
token="$(jq -r '.access_token // empty' <<<"$BODY")"
[[ -n "$token" ]] || fail "no token"
say "The token is a JWT signed with ES256. Its header and claims:"
b64url_json "$(cut -d. -f1 <<<"$token")" | jq -c .
b64url_json "$(cut -d. -f2 <<<"$token")" | jq .

# ---- 2 -----------------------------------------------------------------------

scenario "2. It calls the protected API"
call GET "$url/api/currency/BTC" -H "Authorization: Bearer $token"
want 200
say "Without the token, the API says why in RFC 6750 terms:"
call GET "$url/api/currency/BTC"
want 401

# ---- 3 -----------------------------------------------------------------------

scenario "3. Tokens expire; the agent renews them by itself"
short="demo-short-$run_id"
short_secret="demo-short-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
say "An operator creates a client whose tokens live 5 seconds:"
show "$cli create --id $short --scopes currency:read --ttl 5"
# Word splitting of $cli is intended: it is a command and its first arguments.
# shellcheck disable=SC2086
$cli create --id "$short" --secret "$short_secret" --scopes currency:read --ttl 5 >/dev/null ||
    fail "could not create the short-lived client with: $cli"
short_token="$(token_for "$short" "$short_secret")"
[[ -n "$short_token" ]] || fail "no token for $short"
call GET "$url/api/currency/ETH" -H "Authorization: Bearer $short_token"
want 200
say "Eleven seconds later (5 s of life, 5 s of clock-skew leeway) the same token is refused:"
sleep 11
call GET "$url/api/currency/ETH" -H "Authorization: Bearer $short_token"
want 401

say "An agent holding the same credentials never shows its callers an expired token."
say "(A demo agent of its own, on a free loopback port, called twice a second.)"
agent_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
metrics_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
AGENT_PORT="$agent_port" AGENT_METRICS_PORT="$metrics_port" AGENT_SERVER_URL="$url" \
    AGENT_CLIENT_ID="$short" AGENT_CLIENT_SECRET="$short_secret" \
    AGENT_STATE_FILE="$tmp/agent/state.json" AGENT_FETCH_INTERVAL=0 AGENT_LOG_LEVEL=warn \
    "$agent_bin" >"$tmp/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 50); do
    curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$agent_port/api/health" 2>/dev/null && break
    sleep 0.1
done
agent_url="http://127.0.0.1:$agent_port"
fails=0
for i in $(seq 1 24); do
    code="$(curl -sS -m 5 -o "$tmp/body" -w '%{http_code}' "$agent_url/api/currencies/ETH")"
    [[ "$code" == 200 ]] || fails=$((fails + 1))
    if ((i % 4 == 0)); then
        curl -sS -m 5 "$agent_url/api/status" | jq -r --arg t "$((i / 2))" \
            '"  t=\($t)s  authenticated=\(.authenticated)  token expires \(.token.expires_at // "-")  token requests \(.counts.token_requests)  calls \(.counts.api_calls)  retries \(.counts.api_retries)"'
    fi
    sleep 0.5
done
((fails == 0)) || fail "$fails calls through the agent failed"
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "the demo agent did not stop cleanly; its log: $(tail -5 "$tmp/agent.log")"
agent_pid=
say "24 calls over 12 s, every one 200: the agent renewed the 5 s token at 80% of its lifetime."

# ---- 4 -----------------------------------------------------------------------

scenario "4. Forged tokens are refused"
header="$(cut -d. -f1 <<<"$token")"
sig="$(cut -d. -f3 <<<"$token")"
say "Claims changed (scope raised to currency:write), signature kept:"
claims="$(b64url_json "$(cut -d. -f2 <<<"$token")" | jq -c '.scope = "currency:read currency:write"' | b64url)"
call PUT "$url/api/currency/BTC" -H "Authorization: Bearer $header.$claims.$sig" \
    -H 'Content-Type: application/json' -d '{"rate": 1}'
want 401
say "\"alg\":\"none\" with no signature:"
none="$(printf '{"alg":"none","typ":"at+jwt"}' | b64url)"
call GET "$url/api/currency/BTC" -H "Authorization: Bearer $none.$(cut -d. -f2 <<<"$token")."
want 401
say "HS256 keyed with the server's public key (the classic algorithm confusion):"
jwk="$(curl -sS -m 5 "$url/api/auth/jwks.json" | jq -c '.keys[0]')"
hs_header="$(printf '{"alg":"HS256","typ":"at+jwt","kid":%s}' "$(jq '.kid' <<<"$jwk")" | b64url)"
hs_input="$hs_header.$(cut -d. -f2 <<<"$token")"
hs_sig="$(printf '%s' "$hs_input" | openssl dgst -sha256 -hmac "$jwk" -binary | b64url)"
call GET "$url/api/currency/BTC" -H "Authorization: Bearer $hs_input.$hs_sig"
want 401
say "The verifier pins ES256: the algorithm is never taken from the token."

# ---- 5 -----------------------------------------------------------------------

scenario "5. Several clients at once"
n=5
say "$n services register, get their own tokens and call the API 20 times each, concurrently:"
for c in $(seq 1 $n); do
    (
        cid="demo-$run_id-svc$c"
        csecret="svc-secret-$c-$run_id"
        [[ "$(register "$cid" "$csecret" "Service $c")" == 201 ]] || { echo "svc$c register failed"; exit 1; }
        t="$(token_for "$cid" "$csecret")"
        [[ -n "$t" ]] || { echo "svc$c no token"; exit 1; }
        ok=0
        for _ in $(seq 20); do
            code="$(curl -sS -m 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $t" \
                "$url/api/currency/")"
            [[ "$code" == 200 ]] && ok=$((ok + 1))
        done
        echo "svc$c: $ok/20 calls answered 200"
        ((ok == 20))
    ) >"$tmp/svc$c.out" 2>&1 &
done
failed=0
for job in $(jobs -p); do
    wait "$job" || failed=$((failed + 1))
done
cat "$tmp"/svc*.out | sed 's/^/  /'
((failed == 0)) || fail "$failed of $n clients failed"

printf '\nDemo complete: 5 scenarios passed.\n'
