#include "keystore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "m2m/buf.h"
#include "m2m/log.h"

#define KEY_FILE_MAX 16384

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_key_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && name[0] >= '0' && name[0] <= '9' && strcmp(name + n - 4, ".pem") == 0;
}

static m2m_err read_key(const char *dir, const char *name, m2m_key **out)
{
    char path[4096], pem[KEY_FILE_MAX];
    struct stat st;
    ssize_t len;
    m2m_err rc = M2M_OK;
    int fd = -1;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        M2M_ERROR("keystore", "cannot open key %s: %s", path, strerror(errno));
        rc = M2M_ERR_IO;
        goto out;
    }
    if (st.st_mode & 077) {
        M2M_ERROR("keystore", "key %s is readable by group or others (mode %03o): chmod 600 it",
                  path, (unsigned)(st.st_mode & 0777));
        rc = M2M_ERR_CONFIG;
        goto out;
    }
    len = read(fd, pem, sizeof(pem) - 1);
    if (len <= 0 || (size_t)len >= sizeof(pem) - 1) {
        M2M_ERROR("keystore", "cannot read key %s", path);
        rc = M2M_ERR_IO;
        goto out;
    }
    rc = m2m_key_from_pem(pem, (size_t)len, out);
    if (rc == M2M_OK && !(*out)->has_private) {
        m2m_key_free(*out);
        *out = NULL;
        rc = M2M_ERR_CRYPTO;
    }
    if (rc)
        M2M_ERROR("keystore", "key %s is not a P-256 private key", path);
out:
    explicit_bzero(pem, sizeof(pem));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Writes a new key under a temporary name and links it into place, so a
 * reader never sees half a key and two starting instances never overwrite
 * each other's key. */
static m2m_err create_key(const char *dir)
{
    m2m_key *k = NULL;
    m2m_buf pem;
    char tmp[4096], path[4096];
    m2m_err rc;
    int fd = -1;

    m2m_buf_init(&pem, KEY_FILE_MAX);
    rc = m2m_key_generate(&k);
    if (rc)
        goto out;
    rc = m2m_key_private_pem(k, &pem);
    if (rc)
        goto out;
    snprintf(tmp, sizeof(tmp), "%s/.new-%ld.tmp", dir, (long)getpid());
    snprintf(path, sizeof(path), "%s/%010lld-%s.pem", dir, (long long)time(NULL), k->kid);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, pem.data, pem.len) != (ssize_t)pem.len || fsync(fd) != 0) {
        M2M_ERROR("keystore", "cannot write %s: %s", tmp, strerror(errno));
        rc = M2M_ERR_IO;
        goto out;
    }
    if (link(tmp, path) != 0) {
        M2M_ERROR("keystore", "cannot create %s: %s", path, strerror(errno));
        rc = M2M_ERR_IO;
        goto out;
    }
    M2M_INFO("keystore_key_created", "created signing key %s", k->kid);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    if (pem.data)
        explicit_bzero(pem.data, pem.len);
    m2m_buf_free(&pem);
    m2m_key_free(k);
    return rc;
}

static m2m_err list_keys(const char *dir, char ***names, size_t *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0, cap = 0;
    char **v = NULL;

    *names = NULL;
    *count = 0;
    if (!d) {
        M2M_ERROR("keystore", "cannot open %s: %s", dir, strerror(errno));
        return M2M_ERR_IO;
    }
    while ((e = readdir(d)) != NULL) {
        if (!is_key_name(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nv = realloc(v, cap * sizeof(*v));
            if (!nv)
                goto nomem;
            v = nv;
        }
        v[n] = strdup(e->d_name);
        if (!v[n])
            goto nomem;
        n++;
    }
    closedir(d);
    if (n > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(v, n, sizeof(*v), name_cmp);
    *names = v;
    *count = n;
    return M2M_OK;
nomem:
    closedir(d);
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return M2M_ERR_NOMEM;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static m2m_err build_jwks(auth_keystore *ks)
{
    json_t *keys = json_array();
    json_t *doc = json_pack("{s:o}", "keys", keys);
    if (!doc)
        return M2M_ERR_NOMEM;
    for (size_t i = ks->n; i-- > 0;) { /* newest first */
        json_t *jwk = m2m_key_public_jwk(ks->keys[i]);
        if (!jwk || json_array_append_new(keys, jwk)) {
            json_decref(doc);
            return M2M_ERR_CRYPTO;
        }
    }
    ks->jwks_json = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return ks->jwks_json ? M2M_OK : M2M_ERR_NOMEM;
}

m2m_err auth_keystore_open(const char *dir, auth_keystore **out)
{
    m2m_err rc = M2M_OK;
    char **names = NULL;
    size_t count = 0;
    struct stat st;
    auth_keystore *ks = calloc(1, sizeof(*ks));

    *out = NULL;
    if (!ks)
        return M2M_ERR_NOMEM;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        M2M_ERROR("keystore", "cannot create key directory %s: %s", dir, strerror(errno));
        rc = M2M_ERR_IO;
        goto out;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        M2M_ERROR("keystore", "%s is not a directory", dir);
        rc = M2M_ERR_CONFIG;
        goto out;
    }
    if (st.st_mode & 077) {
        M2M_ERROR("keystore", "key directory %s is open to group or others (mode %03o): chmod 700",
                  dir, (unsigned)(st.st_mode & 0777));
        rc = M2M_ERR_CONFIG;
        goto out;
    }
    rc = list_keys(dir, &names, &count);
    if (rc)
        goto out;
    if (count == 0) {
        rc = create_key(dir);
        if (rc)
            goto out;
        rc = list_keys(dir, &names, &count);
        if (rc)
            goto out;
    }
    /* Keep the newest AUTH_KEYSTORE_MAX_KEYS. */
    size_t first = count > AUTH_KEYSTORE_MAX_KEYS ? count - AUTH_KEYSTORE_MAX_KEYS : 0;
    for (size_t i = first; i < count; i++) {
        rc = read_key(dir, names[i], &ks->keys[ks->n]);
        if (rc)
            goto out;
        ks->n++;
    }
    if (ks->n == 0) {
        rc = M2M_ERR_CONFIG;
        goto out;
    }
    ks->signing = ks->keys[ks->n - 1];
    rc = build_jwks(ks);
    if (rc)
        goto out;
    M2M_INFO("keystore_loaded", "%zu key(s) from %s, signing with %s", ks->n, dir,
             ks->signing->kid);
out:
    free_names(names, count);
    if (rc) {
        auth_keystore_free(ks);
        ks = NULL;
    }
    *out = ks;
    return rc;
}

void auth_keystore_free(auth_keystore *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        m2m_key_free(ks->keys[i]);
    free(ks->jwks_json);
    free(ks);
}
