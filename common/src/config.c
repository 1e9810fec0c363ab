/* Table-driven configuration (pgbouncer, kore). A daemon refuses to start on
 * the first bad value, with a message that names the variable, instead of
 * running with a silently wrong setting. */
#include "m2m/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


static void *field_ptr(void *out, const m2m_cfg_entry *e)
{
    return (char *)out + e->offset;
}

/* Whole-string decimal integer: strtol alone would accept " 12", "12abc" and
 * clamp "99999999999999999999" to LONG_MAX without complaint. */
static int parse_long(const char *s, long *v)
{
    char *end;
    long x;

    if (!isdigit((unsigned char)s[0]) && s[0] != '-' && s[0] != '+')
        return -1;
    errno = 0;
    x = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *v = x;
    return 0;
}

static int parse_bool(const char *s, bool *v)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = false;
            return 0;
        }
    }
    return -1;
}

static m2m_err load_entry(const m2m_cfg_entry *e, const char *val, void *out, char *errbuf,
                          size_t errlen)
{
    m2m_err rc = M2M_OK;
    void *f = field_ptr(out, e);

    switch (e->type) {
    case M2M_CFG_STR: {
        char *copy = strdup(val);

        if (!copy) {
            rc = M2M_ERR_NOMEM;
            goto out;
        }
        free(*(char **)f);
        *(char **)f = copy;
        break;
    }
    case M2M_CFG_INT: {
        long x;

        if (parse_long(val, &x) || x < e->min || x > e->max) {
            /* A secret typed into the wrong variable must not reach the log. */
            if (e->secret)
                m2m_errbuf_set(errbuf, errlen, "%s: expected an integer in [%ld, %ld]", e->key, e->min,
                        e->max);
            else
                m2m_errbuf_set(errbuf, errlen, "%s: expected an integer in [%ld, %ld], got '%s'", e->key,
                        e->min, e->max, val);
            rc = M2M_ERR_CONFIG;
            goto out;
        }
        *(long *)f = x;
        break;
    }
    case M2M_CFG_BOOL: {
        bool b;

        if (parse_bool(val, &b)) {
            if (e->secret)
                m2m_errbuf_set(errbuf, errlen, "%s: expected a boolean (true/false, 1/0, yes/no, on/off)",
                        e->key);
            else
                m2m_errbuf_set(errbuf, errlen,
                        "%s: expected a boolean (true/false, 1/0, yes/no, on/off), got '%s'",
                        e->key, val);
            rc = M2M_ERR_CONFIG;
            goto out;
        }
        *(bool *)f = b;
        break;
    }
    default:
        m2m_errbuf_set(errbuf, errlen, "%s: unknown configuration type %d", e->key, (int)e->type);
        rc = M2M_ERR_CONFIG;
        goto out;
    }
out:
    return rc;
}

m2m_err m2m_config_load_with(const m2m_cfg_entry *table, size_t n, void *out,
                             const char *(*lookup)(const char *key, void *arg), void *arg,
                             char *errbuf, size_t errlen)
{
    m2m_err rc = M2M_OK;
    size_t i;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    for (i = 0; i < n; i++) {
        const m2m_cfg_entry *e = &table[i];
        const char *val = lookup(e->key, arg);

        /* An empty variable counts as unset: compose files and shells often
         * pass KEY= for "not configured", and a required key must not be
         * satisfied by an empty string. */
        if (!val || val[0] == '\0')
            val = e->def;
        if (!val) {
            m2m_errbuf_set(errbuf, errlen, "%s is required", e->key);
            rc = M2M_ERR_CONFIG;
            goto out;
        }
        rc = load_entry(e, val, out, errbuf, errlen);
        if (rc) {
            if (rc == M2M_ERR_NOMEM)
                m2m_errbuf_set(errbuf, errlen, "%s: out of memory", e->key);
            goto out;
        }
    }
out:
    /* All or nothing: no half-loaded struct with some strings allocated. */
    if (rc)
        m2m_config_free(table, n, out);
    return rc;
}

static const char *env_lookup(const char *key, void *arg)
{
    (void)arg;
    return getenv(key);
}

m2m_err m2m_config_load(const m2m_cfg_entry *table, size_t n, void *out, char *errbuf,
                        size_t errlen)
{
    return m2m_config_load_with(table, n, out, env_lookup, NULL, errbuf, errlen);
}

void m2m_config_free(const m2m_cfg_entry *table, size_t n, void *out)
{
    size_t i;

    if (!out)
        return;
    for (i = 0; i < n; i++) {
        if (table[i].type == M2M_CFG_STR) {
            char **p = field_ptr(out, &table[i]);

            free(*p);
            *p = NULL;
        }
    }
}

/* Type column text, with the bounds for integers so --help documents them. */
static void type_text(const m2m_cfg_entry *e, char *buf, size_t len)
{
    switch (e->type) {
    case M2M_CFG_STR:
        snprintf(buf, len, "string");
        break;
    case M2M_CFG_INT:
        snprintf(buf, len, "int %ld..%ld", e->min, e->max);
        break;
    case M2M_CFG_BOOL:
        snprintf(buf, len, "bool");
        break;
    default:
        snprintf(buf, len, "?");
        break;
    }
}

static const char *default_text(const m2m_cfg_entry *e)
{
    if (!e->def)
        return "(required)";
    if (e->secret)
        return "(hidden)";
    if (e->def[0] == '\0')
        return "\"\"";
    return e->def;
}

void m2m_config_print_help(FILE *f, const m2m_cfg_entry *table, size_t n)
{
    char type[64];
    int wkey = (int)strlen("VARIABLE"), wtype = (int)strlen("TYPE");
    int wdef = (int)strlen("DEFAULT");
    size_t i;

    for (i = 0; i < n; i++) {
        size_t k = strlen(table[i].key), d = strlen(default_text(&table[i]));

        type_text(&table[i], type, sizeof(type));
        if (k > (size_t)wkey)
            wkey = k > 64 ? 64 : (int)k;
        if (strlen(type) > (size_t)wtype)
            wtype = (int)strlen(type);
        if (d > (size_t)wdef)
            wdef = d > 40 ? 40 : (int)d; /* a long URL default should not push every row */
    }
    fprintf(f, "%-*s  %-*s  %-*s  %s\n", wkey, "VARIABLE", wtype, "TYPE", wdef, "DEFAULT",
            "DESCRIPTION");
    for (i = 0; i < n; i++) {
        const m2m_cfg_entry *e = &table[i];

        type_text(e, type, sizeof(type));
        fprintf(f, "%-*s  %-*s  %-*s  %s\n", wkey, e->key, wtype, type, wdef, default_text(e),
                e->desc ? e->desc : "");
    }
}
