#!/usr/bin/env bash
# Build the static docs site that nginx serves at / (scripts/nginx-conf.sh --static OUTDIR).
#
# Usage: scripts/docs.sh OUTDIR
#
# Writes:
#   OUTDIR/index.html          a small landing page (links to /docs/ and the main endpoints)
#   OUTDIR/docs/               Swagger UI (swagger-ui-dist from the npm registry) over
#                              the three OpenAPI documents, with a selector:
#   OUTDIR/docs/auth-service.yaml, crypto-server.yaml, crypto-client.yaml
#                              copies of <service>/openapi.yaml
#
# swagger-ui-dist (and the linter the tests use) are pinned in docs/package.json
# and docs/package-lock.json and installed with `npm ci` into docs/node_modules
# (not committed) the first time, or when the lock file changed; later runs
# only copy files. Nothing is loaded from a CDN: the pages use local files only,
# and Swagger UI's online validator is switched off.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    m2m_usage "${BASH_SOURCE[0]}" >&2
    exit 2
}

(($# == 1)) || usage
case "$1" in -h | --help) usage ;; esac
out="$(m2m_abspath "$1")"

DOCS="$M2M_ROOT/docs"
MODULES="$DOCS/node_modules"
DIST="$MODULES/swagger-ui-dist"
STAMP="$MODULES/.m2m-lock.sha256"
SERVICES=(auth-service crypto-server crypto-client)

# nginx workers run as an unprivileged user: everything must be world-readable.
umask 022

# npm ci only when node_modules does not match package-lock.json.
want="$(sha256sum "$DOCS/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$DIST/package.json" || ! -f "$STAMP" || "$(<"$STAMP")" != "$want" ]]; then
    command -v npm >/dev/null 2>&1 || m2m_die "npm not found (run scripts/deps.sh)"
    m2m_info "installing the docs tooling: npm ci in $DOCS"
    # --ignore-scripts: no install script is needed, and swagger-ui-dist's
    # analytics dependency would otherwise phone home.
    (cd "$DOCS" && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
        m2m_die "npm ci failed in $DOCS (the npm registry is needed once)"
    printf '%s\n' "$want" >"$STAMP"
fi
version="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$DIST/package.json" | head -n 1)"

for svc in "${SERVICES[@]}"; do
    [[ -f "$M2M_ROOT/$svc/openapi.yaml" ]] || m2m_die "missing $M2M_ROOT/$svc/openapi.yaml"
done

# Build next to the target and swap it in, so a running nginx never serves a
# half-written directory.
mkdir -p -- "$out"
new="$(mktemp -d "$out/.docs.XXXXXX")"
trap 'rm -rf -- "$new"' EXIT
for f in swagger-ui.css index.css swagger-ui-bundle.js swagger-ui-standalone-preset.js \
    oauth2-redirect.html oauth2-redirect.js favicon-16x16.png favicon-32x32.png LICENSE NOTICE; do
    cp -- "$DIST/$f" "$new/$f"
done
for svc in "${SERVICES[@]}"; do
    cp -- "$M2M_ROOT/$svc/openapi.yaml" "$new/$svc.yaml"
done

cat >"$new/index.html" <<'HTML'
<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>m2m API reference</title>
    <link rel="stylesheet" type="text/css" href="./swagger-ui.css">
    <link rel="stylesheet" type="text/css" href="./index.css">
    <link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="./favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <noscript>Swagger UI needs JavaScript. The documents themselves:
      <a href="auth-service.yaml">auth-service.yaml</a>,
      <a href="crypto-server.yaml">crypto-server.yaml</a>,
      <a href="crypto-client.yaml">crypto-client.yaml</a>.</noscript>
    <div id="swagger-ui"></div>
    <script src="./swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="./swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
HTML

# A file, not an inline script: works under a strict Content-Security-Policy too.
cat >"$new/swagger-initializer.js" <<'JS'
// The m2m services' OpenAPI documents (copies of <service>/openapi.yaml),
// with a selector in the top bar. Everything is served from this directory.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    urls: [
      { url: "auth-service.yaml", name: "auth-service" },
      { url: "crypto-server.yaml", name: "crypto-server" },
      { url: "crypto-client.yaml", name: "crypto-client" }
    ],
    "urls.primaryName": "auth-service",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No request to the public validator service: no third-party calls.
    validatorUrl: null,
    // ?url= and ?configUrl= in the address bar are ignored (default, made explicit).
    queryConfigEnabled: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
JS

cat >"$out/.index.html.new" <<HTML
<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>m2m: OAuth2 for machines</title>
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <h1>m2m: OAuth2 for machines</h1>
    <p><a href="/docs/">API reference</a> (Swagger UI over the OpenAPI documents of the
      <a href="/docs/auth-service.yaml">auth-service</a>,
      <a href="/docs/crypto-server.yaml">crypto-server</a> and
      <a href="/docs/crypto-client.yaml">crypto-client</a> agent).</p>
    <h2>Endpoints</h2>
    <ul>
      <li><code>POST /api/auth/register</code>: register a client</li>
      <li><code>POST /api/auth/token</code>: get an access token (client credentials)</li>
      <li><a href="/.well-known/oauth-authorization-server"><code>GET /.well-known/oauth-authorization-server</code></a>: RFC 8414 metadata</li>
      <li><a href="/api/auth/jwks.json"><code>GET /api/auth/jwks.json</code></a>: the keys that verify tokens</li>
      <li><a href="/api/auth/health"><code>GET /api/auth/health</code></a>, <a href="/api/currency/health"><code>GET /api/currency/health</code></a>: health</li>
      <li><code>GET /api/currency/</code>, <code>GET /api/currency/{SYM}</code>: rates (Bearer token, scope <code>currency:read</code>)</li>
      <li>The agent's API: <code>/api/configure</code>, <code>/api/register</code>, <code>/api/login</code>, <code>/api/status</code>, <code>/api/currencies</code> on port 8001</li>
    </ul>
    <p><small>Swagger UI ${version}.</small></p>
  </body>
</html>
HTML

chmod -R a+rX -- "$new"
chmod 0755 -- "$new" "$out"
chmod 0644 -- "$out/.index.html.new"
old="$out/.docs.old.$$"
if [[ -d "$out/docs" ]]; then
    mv -- "$out/docs" "$old"
fi
mv -- "$new" "$out/docs"
trap - EXIT
rm -rf -- "$old"
mv -f -- "$out/.index.html.new" "$out/index.html"
m2m_info "wrote $out/docs/ (Swagger UI $version; ${SERVICES[*]}) and $out/index.html"
