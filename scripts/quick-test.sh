#!/usr/bin/env bash
# End-to-end check of a running stack through nginx, with curl, one step per
# line (the seed's quick-test.py). Exits 1 at the first failed step, showing
# what came back.
#
# Usage: scripts/quick-test.sh [options]
#   --url URL          the suite through nginx        (default http://localhost:8000)
#   --agent-url URL    the agent through nginx        (default http://localhost:8001)
#   --configure-agent  point the agent at the client this run registers
#                      (default: use the agent's own client, registering it
#                      first if it has no secret yet - the seed's flow)
#   --no-agent         skip the agent steps
#
# Start the stack first: scripts/run.sh --detach
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

url=http://localhost:8000
agent_url=http://localhost:8001
configure_agent=0
agent=1
need() { (($# >= 2)) || m2m_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
    --url) need "$@"; url="${2%/}"; shift 2 ;;
    --agent-url) need "$@"; agent_url="${2%/}"; shift 2 ;;
    --configure-agent) configure_agent=1; shift ;;
    --no-agent) agent=0; shift ;;
    -h | --help) m2m_usage "${BASH_SOURCE[0]}"; exit 0 ;;
    *) m2m_die "unknown option: $1 (see --help)" ;;
    esac
done
command -v jq >/dev/null || m2m_die "jq is needed (scripts/deps.sh installs it)"

tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT
step=0
STATUS=
BODY="$tmp/body"
HEADERS="$tmp/headers"

# call METHOD URL [curl args...]: sets STATUS, leaves the body in $BODY.
call() {
    local method="$1" target="$2"
    shift 2
    STATUS="$(curl -sS -m 10 -X "$method" -o "$BODY" -D "$HEADERS" -w '%{http_code}' "$@" \
        -- "$target" 2>"$tmp/curl.err")" || STATUS="000 ($(<"$tmp/curl.err"))"
}

begin() {
    step=$((step + 1))
    printf '[%2d] %-66s ' "$step" "$*"
}

ok() { printf 'ok%s\n' "${1:+  ($1)}"; }

fail() {
    printf 'FAILED\n     %s\n     HTTP %s: %s\n' "$1" "$STATUS" "$(head -c 600 "$BODY" 2>/dev/null)" >&2
    exit 1
}

expect() { # expect STATUS [jq-condition] [what it means]
    [[ "$STATUS" == "$1" ]] || fail "expected HTTP $1"
    if [[ -n "${2:-}" ]] && ! jq -e "$2" "$BODY" >/dev/null 2>&1; then
        fail "expected ${3:-$2}"
    fi
}

json() { jq -r "$1" "$BODY"; }

header() { # the value of a response header (case-insensitive)
    tr -d '\r' <"$HEADERS" | awk -v h="$(tr '[:upper:]' '[:lower:]' <<<"$1")" -F': ' \
        'tolower($1) == h { sub(/^[^:]*: /, ""); print; exit }'
}

echo "quick test of $url${agent:+ and $agent_url}"

begin "auth-service health"
call GET "$url/api/auth/health"
expect 200 '.status == "ok"' 'status ok'
ok

begin "crypto-server health"
call GET "$url/api/currency/health"
expect 200 '.status == "ok"' 'status ok'
ok

begin "RFC 8414 metadata names the token endpoint and the JWKS"
call GET "$url/.well-known/oauth-authorization-server"
expect 200 '(.token_endpoint | endswith("/api/auth/token")) and (.jwks_uri | endswith("/api/auth/jwks.json")) and (.grant_types_supported | index("client_credentials") != null)' 'token_endpoint, jwks_uri, client_credentials'
ok "issuer $(json .issuer)"

begin "JWKS has a P-256 key"
call GET "$url/api/auth/jwks.json"
expect 200 '[.keys[] | select(.kty == "EC" and .crv == "P-256" and .kid)] | length > 0' 'an EC P-256 key'
ok "$(json '.keys | length') key(s)"

id="quick-$(date +%s)-$RANDOM"
secret="qt-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
begin "register $id (the seed's JSON)"
call POST "$url/api/auth/register" -H 'Content-Type: application/json' \
    -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"app_name\":\"Quick test\"}"
expect 201 ".client_id == \"$id\" and (has(\"client_secret\") | not)" 'the client, without the secret echoed'
ok

begin "registering the same id again is a 409"
call POST "$url/api/auth/register" -H 'Content-Type: application/json' \
    -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\"}"
expect 409 '.error == "conflict"' 'error conflict'
ok

begin "token with the seed's JSON body"
call POST "$url/api/auth/token" -H 'Content-Type: application/json' \
    -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\"}"
expect 200 '.token_type == "Bearer" and (.access_token | split(".") | length == 3) and .expires_in > 0' 'a Bearer JWT'
[[ "$(header cache-control)" == *no-store* ]] || fail "expected Cache-Control: no-store"
token="$(json .access_token)"
ok "expires in $(json .expires_in) s, scope $(json .scope)"

begin "token with HTTP Basic (RFC 6749 client_secret_basic)"
call POST "$url/api/auth/token" -u "$id:$secret" -d grant_type=client_credentials
expect 200 '.token_type == "Bearer"' 'a token'
ok

begin "a wrong secret is 401 invalid_client with WWW-Authenticate"
call POST "$url/api/auth/token" -u "$id:wrong-$secret" -d grant_type=client_credentials
expect 401 '.error == "invalid_client"' 'invalid_client'
[[ -n "$(header www-authenticate)" ]] || fail "expected a WWW-Authenticate header"
ok

begin "token header is ES256 at+jwt with a kid"
hdr="$(cut -d. -f1 <<<"$token" | tr '_-' '/+')"
while (( ${#hdr} % 4 )); do hdr+="="; done
base64 -d <<<"$hdr" >"$BODY" 2>/dev/null || fail "the header is not base64url"
expect "$STATUS" '.alg == "ES256" and .typ == "at+jwt" and (.kid | length > 0)' 'alg ES256, typ at+jwt, kid'
ok

begin "GET /api/currency/ with the token"
call GET "$url/api/currency/" -H "Authorization: Bearer $token"
expect 200 'type == "array" and length > 0 and all(.[]; has("symbol") and has("rate"))' 'a list of rates'
ok "$(json length) rates"

begin "GET /api/currency/BTC"
call GET "$url/api/currency/BTC" -H "Authorization: Bearer $token"
expect 200 '.symbol == "BTC" and (.rate | type == "number")' 'the BTC rate'
ok "BTC $(json .rate)"

begin "an unknown symbol is a JSON 404"
call GET "$url/api/currency/NOPE" -H "Authorization: Bearer $token"
expect 404 '.error == "not_found"' 'error not_found'
ok

begin "no token is 401 with WWW-Authenticate: Bearer"
call GET "$url/api/currency/"
expect 401 '.error' 'a JSON error'
[[ "$(header www-authenticate)" == Bearer* ]] || fail "expected WWW-Authenticate: Bearer"
ok

begin "a forged token (signature changed) is 401 invalid_token"
forged="${token%.*}.AAAA${token##*.}"
forged="${forged:0:${#token}}"
call GET "$url/api/currency/" -H "Authorization: Bearer $forged"
expect 401 '.error == "invalid_token"' 'invalid_token'
ok

begin "a token with alg none is 401"
none_hdr="$(printf '{"alg":"none","typ":"at+jwt"}' | base64 | tr '+/' '-_' | tr -d '=\n')"
call GET "$url/api/currency/" -H "Authorization: Bearer $none_hdr.$(cut -d. -f2 <<<"$token")."
expect 401 '.error == "invalid_token"' 'invalid_token'
ok

begin "a write needs currency:write (403 insufficient_scope)"
call PUT "$url/api/currency/BTC" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"rate": 1}'
expect 403 '.error == "insufficient_scope"' 'insufficient_scope'
ok

begin "an unknown route is a JSON 404 with X-Request-Id"
call GET "$url/api/nothing-here"
expect 404 '.error' 'a JSON error'
[[ -n "$(header x-request-id)" ]] || fail "expected X-Request-Id"
ok

if ((agent)); then
    begin "agent health"
    call GET "$agent_url/api/health"
    expect 200 '.status == "ok"' 'status ok'
    ok

    if ((configure_agent)); then
        begin "configure the agent with $id"
        call POST "$agent_url/api/configure" -H 'Content-Type: application/json' \
            -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\"}"
        expect 200 ".configured and .client_id == \"$id\" and (has(\"client_secret\") | not)" 'configured, secret not echoed'
        ok
    fi

    call GET "$agent_url/api/status"
    if [[ "$STATUS" == 200 ]] && jq -e '.configured and (.has_secret | not)' "$BODY" >/dev/null; then
        begin "agent: register its client (the seed's line)"
        call POST "$agent_url/api/register"
        expect 201 '.registered and (has("client_secret") | not)' 'registered, secret not shown'
        ok "$(json .client_id)"
    fi

    begin "agent: POST /api/login"
    call POST "$agent_url/api/login"
    expect 200 '.authenticated and .token_type == "Bearer" and (has("access_token") | not)' 'authenticated, no token shown'
    ok "expires $(json .expires_at)"

    begin "agent: GET /api/currencies"
    call GET "$agent_url/api/currencies"
    expect 200 '(.stale | not) and (.data | type == "array" and length > 0)' 'fresh rates'
    ok "$(json '.data | length') rates"

    begin "agent: GET /api/currencies/BTC"
    call GET "$agent_url/api/currencies/BTC"
    expect 200 '.data.symbol == "BTC"' 'the BTC rate'
    ok "BTC $(json .data.rate)"

    begin "agent: status says authenticated"
    call GET "$agent_url/api/status"
    expect 200 '.authenticated and .token.expires_in > 0 and .counts.token_requests >= 1' 'authenticated'
    ok "$(json .counts.token_requests) token request(s), $(json .counts.api_calls) API call(s)"
fi

echo "all $step steps passed"
