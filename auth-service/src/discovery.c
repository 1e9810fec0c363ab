/* Read-only endpoints: RFC 8414 metadata, the JWKS, health and metrics. */
#include <string.h>

#include "m2m/buf.h"
#include "m2m/log.h"
#include "server.h"

void auth_handle_metadata(m2m_req *req, void *arg)
{
    auth_ctx *ctx = arg;
    m2m_reply_header(req, "Cache-Control", "public, max-age=300");
    m2m_reply_raw(req, 200, "application/json", ctx->metadata_json, strlen(ctx->metadata_json));
}

void auth_handle_jwks(m2m_req *req, void *arg)
{
    auth_ctx *ctx = arg;
    /* Verifiers may cache; a new key is published well before it signs. */
    m2m_reply_header(req, "Cache-Control", "public, max-age=300");
    m2m_reply_raw(req, 200, "application/json", ctx->keys->jwks_json,
                  strlen(ctx->keys->jwks_json));
}

void auth_handle_health(m2m_req *req, void *arg)
{
    auth_ctx *ctx = arg;
    if (!m2m_req_may_block(req)) { /* a database round trip */
        m2m_req_defer(req, auth_handle_health);
        return;
    }
    m2m_err rc = m2m_db_ping(ctx->db);
    bool ready = atomic_load(&ctx->schema_ready);

    if (rc || !ready) {
        m2m_reply_header(req, "Retry-After", "1");
        m2m_reply_json(req, 503,
                       json_pack("{s:s, s:s, s:s, s:s}", "status", "unavailable", "database",
                                 rc ? "down" : "migrating", "error", "temporarily_unavailable",
                                 "error_description",
                                 rc ? "database unavailable" : "schema not migrated yet"));
        return;
    }
    m2m_reply_json(req, 200,
                   json_pack("{s:s, s:s, s:s, s:I}", "status", "ok", "database", "up",
                             "signing_kid", ctx->keys->signing->kid, "keys",
                             (json_int_t)ctx->keys->n));
}

void auth_handle_metrics(m2m_req *req, void *arg)
{
    auth_ctx *ctx = arg;
    m2m_buf out;
    m2m_buf_init(&out, 1 << 20);
    if (m2m_metrics_render(ctx->metrics, &out)) {
        m2m_reply_error(req, M2M_ERR_INTERNAL, "metrics too large");
    } else {
        m2m_reply_raw(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    }
    m2m_buf_free(&out);
}
