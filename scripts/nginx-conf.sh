#!/usr/bin/env bash
# Render the nginx configuration (nginx/*) into OUTDIR and check it with nginx -t.
#
# Usage: scripts/nginx-conf.sh OUTDIR [options]
#   --listen HOST:PORT        public HTTP listener     (default 127.0.0.1:8000)
#   --auth HOST:PORT          auth-service upstream    (default 127.0.0.1:9001)
#   --currency HOST:PORT      crypto-server upstream   (default 127.0.0.1:9002)
#   --agent-listen HOST:PORT  with --agent: a second server proxying / to the agent
#   --agent HOST:PORT         crypto-client upstream
#   --static DIR              serve DIR at / and /docs/ (else they answer a JSON 404)
#   --tls                     add a TLS server serving everything --listen serves
#                             (on 127.0.0.1:8443 unless --tls-listen)
#   --tls-listen HOST:PORT    its listener (implies --tls)
#   --tls-cert FILE           certificate chain (PEM) and
#   --tls-key FILE            its private key; without these two a self-signed
#                             pair is made or reused by scripts/tls-cert.sh in
#                             --tls-dir (default OUTDIR/tls: cert.pem, key.pem)
#   --tls-dir DIR             where that self-signed pair lives
#   --hsts-max-age SECONDS    Strict-Transport-Security max-age, sent on the TLS
#                             server only (default 63072000, two years)
#   --upstream-timeout SECS   read/send timeout towards the daemons (default 60;
#                             the SSE stream has its own hour)
#   --token-rate RATE         limit_req rate for /api/auth/{token,register}
#                             per client address (default 200r/s)
#   --token-burst N           burst for it (default 400, nodelay; 0: none)
#   --no-limit                no rate limiting at all (benchmarks)
#   --compose                 the docker compose variant (docker-compose.yml):
#                             listeners on 0.0.0.0 (:8000, TLS :8443, agent
#                             :8001), upstreams auth-service:9001,
#                             crypto-server:9002, crypto-client:9003, static
#                             /srv/m2m-static, TLS /etc/m2m/tls/{cert,key}.pem,
#                             logs to stdout/stderr. Other options still apply
#                             on top of these defaults.
#   --no-check                do not run nginx -t, nor check that --static and the
#                             TLS files exist, nor make a certificate: for a
#                             config rendered for another filesystem, e.g. in a
#                             container image build, where the upstream host
#                             names do not resolve yet
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
case "$1" in -h | --help | -*) usage ;; esac
out="$(m2m_abspath "$1")"
shift

listen=127.0.0.1:8000
auth=127.0.0.1:9001
currency=127.0.0.1:9002
agent_listen=
agent=
static=
tls=0
tls_listen=127.0.0.1:8443
tls_cert=
tls_key=
tls_dir=
hsts_max_age=63072000
upstream_timeout=60
token_rate=200r/s
token_burst=400
limit=1
check=1
compose=0
access_log="$out/logs/access.log"
error_log="$out/logs/error.log"

# --compose sets defaults that the other options may then override, wherever
# it stands on the command line.
for arg in "$@"; do
    if [[ "$arg" == --compose ]]; then
        compose=1
        listen=0.0.0.0:8000
        auth="auth-service:9001"
        currency="crypto-server:9002"
        agent_listen=0.0.0.0:8001
        agent="crypto-client:9003"
        static=/srv/m2m-static
        tls=1
        tls_listen=0.0.0.0:8443
        tls_cert=/etc/m2m/tls/cert.pem
        tls_key=/etc/m2m/tls/key.pem
        access_log=/dev/stdout
        error_log=stderr
    fi
done

need() { (($# >= 2)) || m2m_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
    --listen) need "$@"; listen="$2"; shift 2 ;;
    --auth) need "$@"; auth="$2"; shift 2 ;;
    --currency) need "$@"; currency="$2"; shift 2 ;;
    --agent-listen) need "$@"; agent_listen="$2"; shift 2 ;;
    --agent) need "$@"; agent="$2"; shift 2 ;;
    --static) need "$@"; static="$2"; shift 2 ;;
    --tls) tls=1; shift ;;
    --tls-listen) need "$@"; tls=1; tls_listen="$2"; shift 2 ;;
    --tls-cert) need "$@"; tls=1; tls_cert="$2"; shift 2 ;;
    --tls-key) need "$@"; tls=1; tls_key="$2"; shift 2 ;;
    --tls-dir) need "$@"; tls=1; tls_dir="$2"; shift 2 ;;
    --hsts-max-age) need "$@"; hsts_max_age="$2"; shift 2 ;;
    --upstream-timeout) need "$@"; upstream_timeout="$2"; shift 2 ;;
    --token-rate) need "$@"; token_rate="$2"; shift 2 ;;
    --token-burst) need "$@"; token_burst="$2"; shift 2 ;;
    --no-limit) limit=0; shift ;;
    --compose) shift ;;
    --no-check) check=0; shift ;;
    -h | --help) usage ;;
    *) m2m_die "unknown option: $1 (see --help)" ;;
    esac
done

# Values written into the configuration: no spaces, quotes, braces, ';' or '$'.
check_path() {
    [[ "$2" != *[\;\{\}\'\"\\[:space:]\$]* ]] ||
        m2m_die "$1 must not contain spaces, quotes, braces, ';' or '\$': $2"
}

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
[[ "$hsts_max_age" =~ ^[0-9]{1,9}$ ]] || m2m_die "--hsts-max-age: expected seconds, got '$hsts_max_age'"
[[ "$upstream_timeout" =~ ^[1-9][0-9]{0,4}$ ]] || m2m_die "--upstream-timeout: expected seconds (1..99999), got '$upstream_timeout'"
check_path OUTDIR "$out"
if [[ -n "$static" ]]; then
    static="$(m2m_abspath "$static")"
    check_path --static "$static"
    ((!check)) || [[ -d "$static" ]] || m2m_die "--static: no such directory: $static"
fi

if ((tls)); then
    m2m_check_hostport --tls-listen "$tls_listen"
    if [[ -n "$tls_cert" || -n "$tls_key" ]]; then
        [[ -n "$tls_cert" && -n "$tls_key" ]] || m2m_die "--tls-cert and --tls-key go together"
        [[ -z "$tls_dir" ]] || m2m_die "--tls-dir is for the self-signed pair; not with --tls-cert/--tls-key"
        tls_cert="$(m2m_abspath "$tls_cert")"
        tls_key="$(m2m_abspath "$tls_key")"
        if ((check)); then
            [[ -r "$tls_cert" ]] || m2m_die "--tls-cert: cannot read $tls_cert"
            [[ -r "$tls_key" ]] || m2m_die "--tls-key: cannot read $tls_key"
        fi
    else
        tls_dir="$(m2m_abspath "${tls_dir:-$out/tls}")"
        tls_cert="$tls_dir/cert.pem"
        tls_key="$tls_dir/key.pem"
        if ((check)); then
            "$M2M_ROOT/scripts/tls-cert.sh" "$tls_dir"
        fi
    fi
    check_path --tls-cert "$tls_cert"
    check_path --tls-key "$tls_key"
fi

# Retry-After of a 429 from limit_req: the time one request takes to drip in.
rate="${token_rate%r/*}"
if [[ "$token_rate" == */m ]]; then
    retry_after=$(((60 + rate - 1) / rate))
else
    retry_after=1
fi

# nginx refuses "burst=0": no burst is written as no burst parameter.
burst=
((10#$token_burst == 0)) || burst=" burst=$token_burst nodelay"

mkdir -p -- "$out/logs" "$out/tmp"
# Workers run as an unprivileged user when the master is root: they must be
# able to reach OUTDIR (logs are opened by the master, temp dirs are chowned).
chmod 0755 -- "$out" "$out/tmp"

sections=()
if ((limit)); then sections+=(+limit); else sections+=(-limit); fi
if [[ -n "$agent" ]]; then sections+=(+agent); else sections+=(-agent); fi
if [[ -n "$static" ]]; then sections+=(+static -nostatic); else sections+=(-static +nostatic); fi
if ((tls)); then sections+=(+tls); else sections+=(-tls); fi

for f in headers.conf json-errors.conf tls.conf; do
    install -m 0644 -- "$M2M_ROOT/nginx/$f" "$out/$f"
done
m2m_render "$M2M_ROOT/nginx/m2m-locations.conf.template" "$out/m2m-locations.conf" \
    STATIC="$static" BURST="$burst" "${sections[@]}"
m2m_render "$M2M_ROOT/nginx/m2m.conf.template" "$out/nginx.conf" \
    OUT="$out" LISTEN="$listen" AUTH="$auth" CURRENCY="$currency" \
    AGENT_LISTEN="$agent_listen" AGENT="$agent" \
    TLS_LISTEN="$tls_listen" TLS_CERT="$tls_cert" TLS_KEY="$tls_key" \
    HSTS_MAX_AGE="$hsts_max_age" RETRY_AFTER="$retry_after" \
    UPSTREAM_TIMEOUT="$upstream_timeout" TOKEN_RATE="$token_rate" \
    ACCESS_LOG="$access_log" ERROR_LOG="$error_log" \
    "${sections[@]}"

if ((check)); then
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
    [[ -x "$nginx_bin" ]] || m2m_die "nginx not found (run scripts/deps.sh)"
    if ! result="$("$nginx_bin" -t -q -p "$out" -e "$out/logs/error.log" -c "$out/nginx.conf" 2>&1)"; then
        printf '%s\n' "$result" >&2
        m2m_die "nginx -t rejected $out/nginx.conf"
    fi
    [[ -z "$result" ]] || printf '%s\n' "$result" >&2
fi

summary="listen $listen"
((tls)) && summary+=", TLS $tls_listen ($tls_cert)"
summary+=", auth $auth, currency $currency"
[[ -n "$agent" ]] && summary+=", agent $agent_listen -> $agent"
[[ -n "$static" ]] && summary+=", static $static"
if ((limit)); then summary+=", token limit $token_rate burst $token_burst"; else summary+=", no rate limit"; fi
((compose)) && summary+=", compose variant"
((check)) || summary+=", not checked (--no-check)"
m2m_info "wrote $out/nginx.conf ($summary)"
