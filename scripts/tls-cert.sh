#!/usr/bin/env bash
# Make (or reuse) a local self-signed TLS certificate for nginx's TLS listener.
#
# Usage: scripts/tls-cert.sh DIR [--san SAN]... [--days N] [--renew-days N] [--force]
#   DIR              where DIR/cert.pem (0644) and DIR/key.pem (0600) live;
#                    created 0700 when missing
#   --san SAN        an extra subjectAltName, e.g. DNS:m2m.internal or IP:10.0.0.5
#                    (always included: DNS:localhost, IP:127.0.0.1)
#   --days N         validity of a new certificate (default 365)
#   --renew-days N   replace a certificate that expires within N days (default 30)
#   --force          replace it whatever its state
#
# The key is ECDSA P-256. The certificate is a self-signed leaf (CA:FALSE,
# serverAuth only), so trusting it (curl --cacert DIR/cert.pem, Python's
# ssl cafile=) trusts this one certificate for these names and nothing else.
# An existing pair is kept when the key is private (0600 or stricter), matches
# the certificate, the certificate carries every requested name, and it is not
# about to expire; otherwise a new pair replaces it (written atomically).
# Messages go to stderr; nothing is printed on stdout.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    m2m_usage "${BASH_SOURCE[0]}" >&2
    exit 2
}

(($# >= 1)) || usage
case "$1" in -h | --help) usage ;; -*) usage ;; esac
dir="$(m2m_abspath "$1")"
shift

sans=(DNS:localhost IP:127.0.0.1)
days=365
renew_days=30
force=0
need() { (($# >= 2)) || m2m_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
    --san) need "$@"; sans+=("$2"); shift 2 ;;
    --days) need "$@"; days="$2"; shift 2 ;;
    --renew-days) need "$@"; renew_days="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) usage ;;
    *) m2m_die "unknown option: $1 (see --help)" ;;
    esac
done

[[ "$days" =~ ^[1-9][0-9]{0,3}$ ]] || m2m_die "--days: expected 1..9999, got '$days'"
[[ "$renew_days" =~ ^[0-9]{1,4}$ ]] || m2m_die "--renew-days: expected 0..9999, got '$renew_days'"
((renew_days < days)) || m2m_die "--renew-days must be less than --days"
for s in "${sans[@]}"; do
    [[ "$s" =~ ^DNS:[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ || "$s" =~ ^IP:[0-9A-Fa-f:.]+$ ]] ||
        m2m_die "--san: expected DNS:NAME or IP:ADDRESS, got '$s'"
done
command -v openssl >/dev/null 2>&1 || m2m_die "openssl not found (run scripts/deps.sh)"

cert="$dir/cert.pem"
key="$dir/key.pem"

# How "openssl x509 -ext subjectAltName" prints a SAN.
san_text() {
    case "$1" in
    DNS:*) printf 'DNS:%s' "${1#DNS:}" ;;
    IP:*) printf 'IP Address:%s' "${1#IP:}" ;;
    esac
}

# Why the existing pair cannot be kept (empty: keep it).
stale_reason() {
    [[ -f "$cert" && -f "$key" ]] || { echo "none yet"; return; }
    local mode
    mode="$(stat -c %a -- "$key")"
    [[ "$mode" =~ ^[0-7]?[0-7]00$ ]] || { echo "key.pem is readable by others (mode $mode)"; return; }
    local kpub cpub
    kpub="$(openssl pkey -in "$key" -pubout 2>/dev/null)" || { echo "key.pem does not parse"; return; }
    cpub="$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null)" || { echo "cert.pem does not parse"; return; }
    [[ "$kpub" == "$cpub" ]] || { echo "key.pem does not match cert.pem"; return; }
    openssl x509 -in "$cert" -noout -checkend $((renew_days * 86400)) >/dev/null 2>&1 ||
        { echo "it expires within $renew_days days"; return; }
    local have s
    have="$(openssl x509 -in "$cert" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')"
    for s in "${sans[@]}"; do
        s="$(san_text "$s")"
        [[ ",$have," == *",${s// /},"* ]] || { echo "it lacks $s"; return; }
    done
}

if [[ -d "$dir" ]] && ((!force)); then
    reason="$(stale_reason)"
    if [[ -z "$reason" ]]; then
        m2m_info "reusing $cert ($(openssl x509 -in "$cert" -noout -enddate))"
        exit 0
    fi
    [[ "$reason" == "none yet" ]] || m2m_info "replacing $cert: $reason"
fi

if [[ ! -d "$dir" ]]; then
    mkdir -p -- "$(dirname "$dir")"
    mkdir -m 0700 -- "$dir"
fi
tmp="$(mktemp -d "$dir/.tls-cert.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT

san_list="$(IFS=,; echo "${sans[*]}")"
cat >"$tmp/openssl.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
O = m2m local
CN = localhost
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san_list
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF

(
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/key.pem" 2>/dev/null
) || m2m_die "openssl genpkey failed"
if ! err="$(openssl req -x509 -new -config "$tmp/openssl.cnf" -key "$tmp/key.pem" -sha256 \
    -days "$days" -out "$tmp/cert.pem" 2>&1)"; then
    printf '%s\n' "$err" >&2
    m2m_die "openssl req -x509 failed"
fi
chmod 0600 -- "$tmp/key.pem"
chmod 0644 -- "$tmp/cert.pem"
# Key first: a reader that sees the new certificate also finds its key.
mv -f -- "$tmp/key.pem" "$key"
mv -f -- "$tmp/cert.pem" "$cert"
m2m_info "wrote $cert and $key (self-signed, P-256, $san_list, $days days)"
