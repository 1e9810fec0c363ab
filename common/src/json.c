/* JSON request bodies. jansson does the parsing; this file adds the policy a
 * public endpoint needs: one object per body, no duplicate keys (two parsers
 * could disagree on which one wins), bounded nesting, and 400 messages that
 * name the offending field. */
#include "m2m/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>


/* True when v holds more than `left` levels of containers (v itself counts
 * as one when it is an object or array). The walk stops as soon as
 * the limit is passed, so recursion is bounded by M2M_JSON_MAX_DEPTH and not
 * by what the peer sent (jansson itself allows 2048 levels). */
static int too_deep(json_t *v, int left)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (left == 0)
        return 1;
    if (json_is_object(v)) {
        const char *k;
        json_t *child;

        json_object_foreach(v, k, child)
        {
            if (too_deep(child, left - 1))
                return 1;
        }
    } else {
        size_t i;
        json_t *child;

        json_array_foreach(v, i, child)
        {
            if (too_deep(child, left - 1))
                return 1;
        }
    }
    return 0;
}

m2m_err m2m_json_parse_object(const char *body, size_t len, json_t **out, char *errbuf,
                              size_t errlen)
{
    m2m_err rc = M2M_OK;
    json_error_t jerr;
    json_t *root = NULL;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    /* JSON_DECODE_ANY so that a scalar body parses and gets the clearer
     * "must be an object" message below instead of a syntax error. The EOF
     * check stays on: trailing bytes after the value are an error. */
    root = json_loadb(body ? body : "", body ? len : 0, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                      &jerr);
    if (!root) {
        m2m_errbuf_set(errbuf, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                jerr.text);
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    if (!json_is_object(root)) {
        m2m_errbuf_set(errbuf, errlen, "body must be a JSON object");
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    /* The top-level object is level 1: {"a":{}} has depth 2. */
    if (too_deep(root, M2M_JSON_MAX_DEPTH)) {
        m2m_errbuf_set(errbuf, errlen, "JSON nested deeper than %d levels", M2M_JSON_MAX_DEPTH);
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    *out = root;
    root = NULL;
out:
    json_decref(root);
    return rc;
}

m2m_err m2m_json_get_string(json_t *obj, const char *key, bool required, size_t maxlen,
                            const char **out, char *errbuf, size_t errlen)
{
    m2m_err rc = M2M_OK;
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    const char *s;
    size_t n;

    *out = NULL;
    /* An explicit null is what many clients send for "not given". */
    if (!v || json_is_null(v)) {
        if (required) {
            m2m_errbuf_set(errbuf, errlen, "%s: required", key);
            rc = M2M_ERR_INVALID_REQUEST;
        }
        goto out;
    }
    if (!json_is_string(v)) {
        m2m_errbuf_set(errbuf, errlen, "%s: must be a string", key);
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    s = json_string_value(v);
    n = json_string_length(v);
    /* Parsing without JSON_ALLOW_NUL already refuses "\u0000", but objects
     * built in code may hold one; a C caller would see a shorter string. */
    if (strlen(s) != n) {
        m2m_errbuf_set(errbuf, errlen, "%s: must not contain NUL", key);
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    if (n > maxlen) {
        m2m_errbuf_set(errbuf, errlen, "%s: at most %zu bytes", key, maxlen);
        rc = M2M_ERR_INVALID_REQUEST;
        goto out;
    }
    *out = s;
out:
    return rc;
}

char *m2m_json_dump(const json_t *v)
{
    if (!v)
        return NULL;
    /* JSON_ENCODE_ANY so a bare scalar dumps too instead of returning NULL,
     * which callers would take for an allocation failure. */
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}
