# syntax=docker/dockerfile:1
# nginx in front of the daemons, for docker-compose.yml: the configuration is
# rendered from the same template as the local stack's
# (scripts/nginx-conf.sh --compose --no-check: the upstream host names only
# resolve once the stack runs), and the static site (/docs/ and /) is built by
# scripts/docs.sh in a node stage. Build context: the repository root.

# ---- docs: Swagger UI (swagger-ui-dist from npm) over the OpenAPI documents
FROM node:20-bookworm-slim AS docs
WORKDIR /src
COPY scripts/lib.sh scripts/docs.sh scripts/
COPY docs/package.json docs/package-lock.json docs/
COPY auth-service/openapi.yaml auth-service/
COPY crypto-server/openapi.yaml crypto-server/
COPY crypto-client/openapi.yaml crypto-client/
RUN bash scripts/docs.sh /out

# ---- nginx: Debian 12's nginx 1.22, the same as the local stack's
FROM debian:12-slim AS nginx
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx openssl curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10010 m2m-nginx \
 && useradd --system --uid 10010 --gid m2m-nginx --home-dir /var/lib/m2m-nginx \
        --shell /usr/sbin/nologin m2m-nginx
COPY scripts/lib.sh scripts/nginx-conf.sh scripts/tls-cert.sh /opt/m2m/scripts/
COPY nginx/ /opt/m2m/nginx/
COPY --from=docs /out/ /srv/m2m-static/
# Rendered once, at build time; nginx runs unprivileged (ports above 1024), so
# its directory (pid, temp files) and the TLS volume belong to m2m-nginx.
RUN /opt/m2m/scripts/nginx-conf.sh /var/lib/m2m-nginx --compose --no-check \
 && chown -R m2m-nginx:m2m-nginx /var/lib/m2m-nginx \
 && install -d -o m2m-nginx -g m2m-nginx -m 0700 /etc/m2m/tls
COPY docker/nginx-entrypoint.sh /usr/local/bin/m2m-nginx-entrypoint
USER m2m-nginx
EXPOSE 8000 8443 8001
ENTRYPOINT ["/usr/local/bin/m2m-nginx-entrypoint"]
