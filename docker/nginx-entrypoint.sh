#!/usr/bin/env bash
# Entry point of the nginx image (docker/nginx.Dockerfile): makes sure the TLS
# listener has a certificate, then runs nginx in the foreground with the
# configuration rendered at build time.
#
#   M2M_TLS_AUTO=1 (default)  make or reuse a self-signed certificate for
#                             localhost and 127.0.0.1 in /etc/m2m/tls (the tls
#                             volume) with scripts/tls-cert.sh; extra names with
#                             M2M_TLS_SANS="DNS:m2m.example IP:10.0.0.5"
#   M2M_TLS_AUTO=0            use /etc/m2m/tls/cert.pem and key.pem as they are
#                             (mount your own)
# To trust the self-signed one from the host:
#   docker compose cp nginx:/etc/m2m/tls/cert.pem m2m-cert.pem
#   curl --cacert m2m-cert.pem https://localhost:8443/api/auth/health
set -euo pipefail

TLS_DIR=/etc/m2m/tls
CONF_DIR=/var/lib/m2m-nginx

if [[ "${M2M_TLS_AUTO:-1}" != 0 ]]; then
    args=()
    for san in ${M2M_TLS_SANS:-}; do
        args+=(--san "$san")
    done
    /opt/m2m/scripts/tls-cert.sh "$TLS_DIR" "${args[@]}"
fi
for f in "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"; do
    [[ -r "$f" ]] || {
        printf 'm2m-nginx-entrypoint: error: cannot read %s\n' "$f" >&2
        exit 1
    }
done

exec nginx -p "$CONF_DIR" -e stderr -c "$CONF_DIR/nginx.conf" -g 'daemon off;' "$@"
