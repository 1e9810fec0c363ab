/* HTTP client for daemon-to-daemon calls over libcurl's easy interface.
 *
 * Each thread keeps one CURL handle for its whole life: the handle owns the
 * connection cache, so reusing it gives keep-alive (no TCP/TLS handshake per
 * JWKS fetch or token call) without any locking between threads. Options are
 * cleared with curl_easy_reset() before each call, which keeps the live
 * connections and the DNS cache but forgets the previous request. */
#include "m2m/httpc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "m2m/log.h"

#define HTTPC_DEFAULT_TIMEOUT_MS 5000L
#define HTTPC_MAX_CONNECT_MS     2000L
#define HTTPC_DEFAULT_MAX        ((size_t)1 << 20)

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t handle_key;
static bool key_ok;

/* Runs at thread exit for every thread that made a call. */
static void handle_destroy(void *h)
{
    curl_easy_cleanup(h);
}

static void key_create(void)
{
    key_ok = pthread_key_create(&handle_key, handle_destroy) == 0;
}

static CURL *thread_handle(void)
{
    CURL *h;

    pthread_once(&key_once, key_create);
    if (!key_ok)
        return NULL;
    h = pthread_getspecific(handle_key);
    if (h)
        return h;
    h = curl_easy_init();
    if (!h)
        return NULL;
    if (pthread_setspecific(handle_key, h) != 0) {
        curl_easy_cleanup(h);
        return NULL;
    }
    return h;
}

m2m_err m2m_httpc_global_init(void)
{
    /* curl_global_init is not thread-safe (hence "call before threads") but
     * is reference-counted, so calling it again is harmless. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return M2M_ERR_INTERNAL;
    pthread_once(&key_once, key_create);
    return key_ok ? M2M_OK : M2M_ERR_INTERNAL;
}

void m2m_httpc_global_cleanup(void)
{
    /* Thread-specific destructors do not run for the main thread when it
     * returns from main(), so release the caller's handle here. Other
     * threads must have exited already (their destructors did the work). */
    if (key_ok) {
        CURL *h = pthread_getspecific(handle_key);

        if (h) {
            curl_easy_cleanup(h);
            pthread_setspecific(handle_key, NULL);
        }
    }
    curl_global_cleanup();
}

typedef struct {
    m2m_buf *body;
    m2m_err err; /* why the write callback aborted, if it did */
} sink;

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sink *s = userdata;
    size_t n = size * nmemb; /* size is always 1 per libcurl's documentation */
    m2m_err rc;

    rc = m2m_buf_append(s->body, ptr, n);
    if (rc) {
        s->err = rc;
        return 0; /* anything but n aborts the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

/* Sets the method and body. GET and POST have dedicated options; the rest
 * go through CURLOPT_CUSTOMREQUEST, which only renames the method, so a body
 * still needs POSTFIELDS. */
static CURLcode set_method(CURL *h, const m2m_httpc_req *req)
{
    const char *m = req->method ? req->method : "GET";
    bool has_body = req->body != NULL;
    CURLcode cc = CURLE_OK;

    if (strcmp(m, "GET") == 0 && !has_body)
        return curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    if (strcmp(m, "HEAD") == 0 && !has_body)
        return curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (strcmp(m, "POST") == 0 || has_body) {
        /* POSTFIELDS with an explicit size: the body may be binary, and a
         * POST without a body still sends "Content-Length: 0". */
        cc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                              (curl_off_t)(has_body ? req->body_len : 0));
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, has_body ? req->body : "");
        if (cc != CURLE_OK)
            return cc;
    }
    if (strcmp(m, "POST") != 0)
        cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
    return cc;
}

m2m_err m2m_httpc_do(const m2m_httpc_req *req, m2m_httpc_resp *resp)
{
    m2m_err rc = M2M_OK;
    struct curl_slist *hdrs = NULL, *tmp;
    CURLcode cc;
    CURL *h;
    long timeout, connect_timeout;
    size_t max;
    char *ctype = NULL;
    bool caller_expect = false, caller_rid = false;
    const char *rid;
    sink s;

    max = req && req->max_response ? req->max_response : HTTPC_DEFAULT_MAX;
    resp->status = 0;
    resp->content_type[0] = '\0';
    m2m_buf_init(&resp->body, max);
    s.body = &resp->body;
    s.err = M2M_OK;
    if (!req || !req->url) {
        rc = M2M_ERR_INTERNAL; /* a caller bug, not the upstream's fault */
        goto out;
    }
    h = thread_handle();
    if (!h) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    curl_easy_reset(h);

    timeout = req->timeout_ms > 0 ? req->timeout_ms : HTTPC_DEFAULT_TIMEOUT_MS;
    connect_timeout = timeout < HTTPC_MAX_CONNECT_MS ? timeout : HTTPC_MAX_CONNECT_MS;

    if (req->headers) {
        for (const char *const *p = req->headers; *p; p++) {
            if (strncasecmp(*p, "Expect:", 7) == 0)
                caller_expect = true;
            if (strncasecmp(*p, "X-Request-Id:", 13) == 0)
                caller_rid = true;
            tmp = curl_slist_append(hdrs, *p);
            if (!tmp) {
                rc = M2M_ERR_NOMEM;
                goto out;
            }
            hdrs = tmp;
        }
    }
    rid = m2m_log_request_id();
    if (rid && !caller_rid) {
        char line[96];
        snprintf(line, sizeof(line), "X-Request-Id: %s", rid);
        tmp = curl_slist_append(hdrs, line);
        if (!tmp) {
            rc = M2M_ERR_NOMEM;
            goto out;
        }
        hdrs = tmp;
    }
    if (req->body && !caller_expect) {
        /* No "Expect: 100-continue" round trip before a large body: our
         * peers are our own services, and waiting for the 100 only adds
         * latency. */
        tmp = curl_slist_append(hdrs, "Expect:");
        if (!tmp) {
            rc = M2M_ERR_NOMEM;
            goto out;
        }
        hdrs = tmp;
    }

    /* NOSIGNAL: timeouts must not use SIGALRM in a threaded daemon.
     * Protocols limited to http(s): a URL from configuration or a JWKS
     * document must not be able to read file:// or talk gopher. No redirects:
     * a token endpoint that redirects is a misconfiguration, not something
     * to follow with credentials attached. MAXFILESIZE stops a reply whose
     * Content-Length is already too big before any byte is buffered. */
    if ((cc = curl_easy_setopt(h, CURLOPT_URL, req->url)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https")) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_WRITEDATA, &s)) != CURLE_OK ||
        (cc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs)) != CURLE_OK ||
        (cc = set_method(h, req)) != CURLE_OK) {
        rc = cc == CURLE_OUT_OF_MEMORY ? M2M_ERR_NOMEM : M2M_ERR_INTERNAL;
        goto out;
    }

    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        /* Out of memory while buffering is ours to report; everything else
         * (refused, timed out, too big, reset) is the upstream failing. */
        rc = s.err == M2M_ERR_NOMEM ? M2M_ERR_NOMEM : M2M_ERR_UPSTREAM;
        goto out;
    }
    /* An empty reply still gets a valid "" so callers can treat body.data as
     * a string without a NULL check. */
    rc = m2m_buf_append(&resp->body, "", 0);
    if (rc)
        goto out;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status) != CURLE_OK) {
        rc = M2M_ERR_UPSTREAM;
        goto out;
    }
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype)
        snprintf(resp->content_type, sizeof(resp->content_type), "%s", ctype);
out:
    /* The handle keeps pointers to hdrs and the body until the next reset;
     * they are never used again, so freeing the list here is safe. */
    curl_slist_free_all(hdrs);
    if (rc) {
        resp->status = 0;
        resp->content_type[0] = '\0';
        m2m_buf_free(&resp->body);
    }
    return rc;
}

void m2m_httpc_resp_free(m2m_httpc_resp *resp)
{
    if (!resp)
        return;
    m2m_buf_free(&resp->body);
}
