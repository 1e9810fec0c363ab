#include "settings.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_VERSION 1
#define STATE_MAX_BYTES 8192

bool agent_client_id_valid(const char *s)
{
    size_t n = 0;
    if (!s || !isalnum((unsigned char)s[0]))
        return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '@' || c == '-') ||
            n >= AGENT_CLIENT_ID_MAX)
            return false;
    }
    return true;
}

static bool printable(const char *s, size_t min, size_t max)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f || n >= max)
            return false;
    return s && n >= min;
}

bool agent_secret_valid(const char *s)
{
    return printable(s, AGENT_SECRET_MIN, AGENT_SECRET_MAX);
}

bool agent_app_name_valid(const char *s)
{
    return printable(s, 0, AGENT_APP_NAME_MAX);
}

bool agent_url_valid(const char *s)
{
    size_t n = 0, scheme;
    if (!s)
        return false;
    scheme = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;
    if (!scheme || !s[scheme] || s[scheme] == '/')
        return false;
    for (; s[n]; n++)
        if ((unsigned char)s[n] <= ' ' || (unsigned char)s[n] >= 0x7f || n >= AGENT_URL_MAX ||
            s[n] == '?' || s[n] == '#')
            return false;
    return true;
}

void agent_url_set(char dst[AGENT_URL_MAX + 1], const char *src)
{
    size_t n = strlen(src);
    while (n && src[n - 1] == '/')
        n--;
    if (n > AGENT_URL_MAX)
        n = AGENT_URL_MAX;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void agent_settings_wipe(agent_settings *s)
{
    OPENSSL_cleanse(s->client_secret, sizeof(s->client_secret));
}

/* One member of the state: a string that passes `valid` (or is empty when
 * empty_ok), copied into dst. */
static bool take(json_t *st, const char *key, bool (*valid)(const char *), bool empty_ok,
                 char *dst, size_t cap)
{
    json_t *v = json_object_get(st, key);
    const char *s = json_string_value(v);
    if (!v)
        return true;
    if (!s || strlen(s) >= cap || !(valid(s) || (empty_ok && !*s)))
        return false;
    memcpy(dst, s, strlen(s) + 1);
    return true;
}

m2m_err agent_settings_load(const char *path, agent_settings *s, char *errbuf, size_t errlen)
{
    m2m_err rc = M2M_OK;
    int fd = -1;
    struct stat stt;
    char buf[STATE_MAX_BYTES + 1];
    ssize_t n;
    json_t *st = NULL;
    json_error_t jerr;
    char url[AGENT_URL_MAX + 1] = "";

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? M2M_ERR_NOT_FOUND : M2M_ERR_CONFIG;
        m2m_errbuf_set(errbuf, errlen, "state file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &stt) || !S_ISREG(stt.st_mode)) {
        rc = M2M_ERR_CONFIG;
        m2m_errbuf_set(errbuf, errlen, "state file %s: not a regular file", path);
        goto out;
    }
    if ((stt.st_mode & 077) && fchmod(fd, 0600)) { /* it holds a secret */
        rc = M2M_ERR_CONFIG;
        m2m_errbuf_set(errbuf, errlen, "state file %s is readable by others and cannot be "
                                       "made 0600: %s", path, strerror(errno));
        goto out;
    }
    n = read(fd, buf, sizeof(buf));
    if (n < 0 || n > STATE_MAX_BYTES) {
        rc = M2M_ERR_CONFIG;
        m2m_errbuf_set(errbuf, errlen, "state file %s: %s", path,
                       n < 0 ? strerror(errno) : "too large");
        goto out;
    }
    st = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(st) ||
        json_integer_value(json_object_get(st, "version")) != STATE_VERSION) {
        rc = M2M_ERR_CONFIG;
        m2m_errbuf_set(errbuf, errlen, "state file %s: not a version %d state (%s)", path,
                       STATE_VERSION, st ? "wrong version" : jerr.text);
        goto out;
    }
    if (!take(st, "client_id", agent_client_id_valid, true, s->client_id,
              sizeof(s->client_id)) ||
        !take(st, "client_secret", agent_secret_valid, true, s->client_secret,
              sizeof(s->client_secret)) ||
        !take(st, "server_url", agent_url_valid, false, url, sizeof(url)) ||
        !take(st, "app_name", agent_app_name_valid, true, s->app_name, sizeof(s->app_name))) {
        rc = M2M_ERR_CONFIG;
        m2m_errbuf_set(errbuf, errlen, "state file %s: a member is invalid", path);
        goto out;
    }
    if (*url)
        agent_url_set(s->server_url, url);
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    if (fd >= 0)
        close(fd);
    json_decref(st); /* the secret's copy in jansson's heap is freed unwiped: short-lived */
    return rc;
}

/* mkdir -p of the state file's directory; directories it creates are 0700. */
static m2m_err make_parent(const char *path, char *errbuf, size_t errlen)
{
    char copy[4096], dir[4096];
    if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy))
        return M2M_ERR_CONFIG;
    snprintf(dir, sizeof(dir), "%s", dirname(copy)); /* dirname may return static storage */
    for (char *p = dir + 1;; p++) {
        bool last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) && errno != EEXIST) {
            m2m_errbuf_set(errbuf, errlen, "cannot create %s: %s", dir, strerror(errno));
            return M2M_ERR_IO;
        }
        if (last)
            return M2M_OK;
        *p = '/';
    }
}

m2m_err agent_settings_save(const char *path, const agent_settings *s, char *errbuf,
                            size_t errlen)
{
    char tmp[4200] = "", *text = NULL, dirbuf[4096];
    int fd = -1;
    m2m_err rc;
    json_t *st = json_pack("{s:i, s:s, s:s, s:s, s:s}", "version", STATE_VERSION, "client_id",
                           s->client_id, "client_secret", s->client_secret, "server_url",
                           s->server_url, "app_name", s->app_name);

    rc = make_parent(path, errbuf, errlen);
    if (rc)
        goto out;
    text = st ? json_dumps(st, JSON_INDENT(2)) : NULL;
    if (!text) {
        rc = M2M_ERR_NOMEM;
        goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    size_t len = strlen(text);
    if (fd < 0 || fchmod(fd, 0600) || write(fd, text, len) != (ssize_t)len ||
        write(fd, "\n", 1) != 1 || fsync(fd)) {
        rc = M2M_ERR_IO;
        m2m_errbuf_set(errbuf, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path)) {
        rc = M2M_ERR_IO;
        m2m_errbuf_set(errbuf, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    /* the rename itself is durable once the directory is synced */
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    fd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0)
        fsync(fd);
out:
    if (fd >= 0)
        close(fd);
    if (rc && *tmp)
        unlink(tmp);
    if (text) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    json_decref(st);
    return rc;
}
