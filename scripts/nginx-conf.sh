#!/usr/bin/env bash
# Render nginx/m2m.conf.template into OUTDIR/nginx.conf and check it with nginx -t.
#
# Usage: scripts/nginx-conf.sh OUTDIR [options]
#   --listen HOST:PORT        public listener          (default 127.0.0.1:8000)
#   --auth HOST:PORT          auth-service upstream    (default 127.0.0.1:9001)
#   --currency HOST:PORT      crypto-server upstream   (default 127.0.0.1:9002)
#   --agent-listen HOST:PORT  with --agent: a second server proxying / to the agent
#   --agent HOST:PORT         crypto-client upstream
#   --static DIR              serve DIR at / (else / answers a JSON 404)
#   --token-rate RATE         limit_req rate for /api/auth/{token,register}
#                             per client address (default 200r/s)
#   --token-burst N           burst for it (default 400, nodelay)
#   --no-limit                no rate limiting at all (benchmarks)
#
# Run the result with:
#   nginx -p OUTDIR -e OUTDIR/logs/error.log -c OUTDIR/nginx.conf -g 'daemon off;'
# Stop it with: kill -QUIT "$(cat OUTDIR/nginx.pid)"  (or -TERM)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    m2m_usage "${BASH_SOURCE[0]}" >&2
    exit 2
}

(($# >= 1)) || usage
case "$1" in -h | --help) usage ;; esac
out="$(m2m_abspath "$1")"
shift

listen=127.0.0.1:8000
auth=127.0.0.1:9001
currency=127.0.0.1:9002
agent_listen=
agent=
static=
token_rate=200r/s
token_burst=400
limit=1

need() { (($# >= 2)) || m2m_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
    --listen) need "$@"; listen="$2"; shift 2 ;;
    --auth) need "$@"; auth="$2"; shift 2 ;;
    --currency) need "$@"; currency="$2"; shift 2 ;;
    --agent-listen) need "$@"; agent_listen="$2"; shift 2 ;;
    --agent) need "$@"; agent="$2"; shift 2 ;;
    --static) need "$@"; static="$2"; shift 2 ;;
    --token-rate) need "$@"; token_rate="$2"; shift 2 ;;
    --token-burst) need "$@"; token_burst="$2"; shift 2 ;;
    --no-limit) limit=0; shift ;;
    -h | --help) usage ;;
    *) m2m_die "unknown option: $1 (see --help)" ;;
    esac
done

m2m_check_hostport --listen "$listen"
m2m_check_hostport --auth "$auth"
m2m_check_hostport --currency "$currency"
if [[ -n "$agent_listen" || -n "$agent" ]]; then
    [[ -n "$agent_listen" && -n "$agent" ]] || m2m_die "--agent-listen and --agent go together"
    m2m_check_hostport --agent-listen "$agent_listen"
    m2m_check_hostport --agent "$agent"
fi
[[ "$token_rate" =~ ^[1-9][0-9]*r/[sm]$ ]] || m2m_die "--token-rate: expected like 200r/s or 60r/m, got '$token_rate'"
[[ "$token_burst" =~ ^[0-9]+$ ]] || m2m_die "--token-burst: expected a number, got '$token_burst'"
[[ "$out" != *[\;\{\}\'\"\\[:space:]\$]* ]] || m2m_die "OUTDIR must not contain spaces, quotes, braces, ';' or '\$': $out"
if [[ -n "$static" ]]; then
    static="$(m2m_abspath "$static")"
    [[ -d "$static" ]] || m2m_die "--static: no such directory: $static"
    [[ "$static" != *[\;\{\}\'\"\\[:space:]\$]* ]] || m2m_die "--static must not contain spaces, quotes, braces, ';' or '\$': $static"
fi

mkdir -p -- "$out/logs" "$out/tmp"
# Workers run as an unprivileged user when the master is root: they must be
# able to reach OUTDIR (logs are opened by the master, temp dirs are chowned).
chmod 0755 -- "$out" "$out/tmp"

sections=()
if ((limit)); then sections+=(+limit); else sections+=(-limit); fi
if [[ -n "$agent" ]]; then sections+=(+agent); else sections+=(-agent); fi
if [[ -n "$static" ]]; then sections+=(+static -nostatic); else sections+=(-static +nostatic); fi

cp "$M2M_ROOT/nginx/json-errors.conf" "$out/json-errors.conf"
m2m_render "$M2M_ROOT/nginx/m2m.conf.template" "$out/nginx.conf" \
    OUT="$out" LISTEN="$listen" AUTH="$auth" CURRENCY="$currency" \
    AGENT_LISTEN="$agent_listen" AGENT="$agent" STATIC="$static" \
    TOKEN_RATE="$token_rate" TOKEN_BURST="$token_burst" \
    "${sections[@]}"

nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$nginx_bin" ]] || m2m_die "nginx not found (run scripts/deps.sh)"
if ! check="$("$nginx_bin" -t -q -p "$out" -e "$out/logs/error.log" -c "$out/nginx.conf" 2>&1)"; then
    printf '%s\n' "$check" >&2
    m2m_die "nginx -t rejected $out/nginx.conf"
fi
[[ -z "$check" ]] || printf '%s\n' "$check" >&2
m2m_info "wrote $out/nginx.conf (listen $listen, auth $auth, currency $currency$([[ -n "$agent" ]] && echo ", agent $agent_listen -> $agent")$( ((limit)) && echo ", token limit $token_rate burst $token_burst" || echo ", no rate limit"))"
