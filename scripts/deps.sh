#!/usr/bin/env bash
# Install the Debian packages this project needs, only those that are missing.
# Usage: scripts/deps.sh
# Silent (apart from one line) when everything is already installed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(
    build-essential cmake pkg-config
    libmicrohttpd-dev libjansson-dev libjwt-dev libpq-dev libssl-dev
    libcurl4-openssl-dev libcmocka-dev
    postgresql postgresql-client nginx supervisor
    wrk curl jq python3 openssl ca-certificates
    docker-compose systemd
)
# Node.js is only needed for front-end tooling; any node on PATH will do.
if ! command -v node >/dev/null 2>&1; then
    packages+=(nodejs npm)
fi

is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -qx 'Status: install ok installed'
}

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    m2m_info "all ${#packages[@]} packages present"
    exit 0
fi

m2m_require_root
m2m_info "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Installing postgresql, nginx or supervisor would start their system services
# (a cluster on 5432, a default site on :80, a system supervisord). We never use
# them, so keep them from starting during the install when nothing else already
# decides that (Docker images ship a policy-rc.d of their own).
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    trap 'rm -f -- "$policy"' EXIT
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

still=()
for p in "${missing[@]}"; do
    is_installed "$p" || still+=("$p")
done
((${#still[@]} == 0)) || m2m_die "not installed after apt-get: ${still[*]}"
m2m_info "installed ${#missing[@]} package(s)"
