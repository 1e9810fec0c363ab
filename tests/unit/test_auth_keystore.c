/* auth-service signing keys on disk: first start creates the directory and
 * one key, restarts reuse it, the newest key signs, every key is published,
 * and files or directories open to others are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keystore.h"
#include "m2m/jwt.h"
#include "m2m/log.h"

typedef struct {
    char base[64];     /* mkdtemp */
    char dir[128];     /* base/keys: the key directory under test */
    auth_keystore *ks; /* freed by teardown */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->base, sizeof(f->base), "/tmp/test_auth_keystore.XXXXXX");
    if (!mkdtemp(f->base)) {
        free(f);
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "%s/keys", f->base);
    *state = f;
    return 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[512];
            snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(sub);
            else
                unlink(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int teardown(void **state)
{
    fixture *f = *state;
    auth_keystore_free(f->ks);
    remove_tree(f->base);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static void write_file(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    assert_int_equal(chmod(path, mode), 0); /* exact mode, whatever the umask */
}

/* A fresh P-256 key written as "<ts>-<kid>.pem"; its kid goes to kid_out. */
static void add_key(const char *dir, long long ts, mode_t mode, char kid_out[M2M_KID_MAX])
{
    m2m_key *k = NULL;
    m2m_buf pem;
    char name[128];

    m2m_buf_init(&pem, 16384);
    assert_int_equal(m2m_key_generate(&k), M2M_OK);
    assert_int_equal(m2m_key_private_pem(k, &pem), M2M_OK);
    snprintf(name, sizeof(name), "%010lld-%s.pem", ts, k->kid);
    write_file(dir, name, pem.data, pem.len, mode);
    if (kid_out)
        snprintf(kid_out, M2M_KID_MAX, "%s", k->kid);
    m2m_buf_free(&pem);
    m2m_key_free(k);
}

/* A public-key-only PEM (SubjectPublicKeyInfo) of a fresh key. */
static void add_public_only(const char *dir, const char *name)
{
    m2m_key *k = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;

    assert_non_null(bio);
    assert_int_equal(m2m_key_generate(&k), M2M_OK);
    assert_int_equal(PEM_write_bio_PUBKEY(bio, k->pkey), 1);
    long len = BIO_get_mem_data(bio, &data);
    assert_true(len > 0);
    assert_non_null(strstr(data, "BEGIN PUBLIC KEY"));
    write_file(dir, name, data, (size_t)len, 0600);
    BIO_free(bio);
    m2m_key_free(k);
}

static void make_dir(const char *dir, mode_t mode)
{
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, mode), 0);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Names of the directory's entries other than . and .., sorted; returns count. */
static size_t list_dir(const char *dir, char names[][128], size_t max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        assert_true(n < max);
        snprintf(names[n++], 128, "%.127s", e->d_name);
    }
    closedir(d);
    qsort(names, n, 128, name_cmp);
    return n;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* kids of the JWKS in document order; checks each is a public EC P-256 key. */
static size_t jwks_kids(const char *jwks, char kids[][M2M_KID_MAX], size_t max)
{
    json_error_t jerr;
    json_t *doc = json_loads(jwks, 0, &jerr);
    if (!doc)
        fail_msg("jwks_json does not parse: %s", jerr.text);
    assert_true(json_is_object(doc));
    assert_int_equal(json_object_size(doc), 1);
    json_t *keys = json_object_get(doc, "keys");
    assert_true(json_is_array(keys));
    size_t n = json_array_size(keys);
    assert_true(n <= max);
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_array_get(keys, i);
        assert_string_equal(json_string_value(json_object_get(k, "kty")), "EC");
        assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
        assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
        assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
        assert_non_null(json_string_value(json_object_get(k, "x")));
        assert_non_null(json_string_value(json_object_get(k, "y")));
        assert_null(json_object_get(k, "d")); /* never the private part */
        const char *kid = json_string_value(json_object_get(k, "kid"));
        assert_non_null(kid);
        snprintf(kids[i], M2M_KID_MAX, "%s", kid);
    }
    json_decref(doc);
    return n;
}

/* A token signed with the store's signing key verifies against its JWKS. */
static void assert_jwks_verifies_signing_key(const auth_keystore *ks)
{
    json_t *doc = json_loads(ks->jwks_json, 0, NULL);
    json_t *keys = json_object_get(doc, "keys");
    size_t n = json_array_size(keys);
    m2m_key *pub[AUTH_KEYSTORE_MAX_KEYS] = {0};
    m2m_buf tok;
    json_t *claims =
        json_pack("{s:s,s:I}", "sub", "keystore-test", "exp", (json_int_t)time(NULL) + 60);
    json_t *got = NULL;
    const char *why = NULL;

    assert_non_null(doc);
    assert_true(n <= AUTH_KEYSTORE_MAX_KEYS);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(m2m_key_from_jwk(json_array_get(keys, i), &pub[i]), M2M_OK);
    m2m_buf_init(&tok, M2M_JWT_MAX_LEN);
    assert_int_equal(m2m_jwt_sign(ks->signing, "at+jwt", claims, &tok), M2M_OK);
    m2m_keyset set = {pub, n};
    m2m_jwt_expect exp = {.typ = "at+jwt"};
    m2m_err rc = m2m_jwt_verify(tok.data, tok.len, &set, &exp, &got, &why);
    if (rc != M2M_OK)
        fail_msg("token signed by the signing key does not verify with the JWKS: %s",
                 why ? why : "?");
    assert_string_equal(json_string_value(json_object_get(got, "sub")), "keystore-test");
    json_decref(got);
    json_decref(claims);
    m2m_buf_free(&tok);
    for (size_t i = 0; i < n; i++)
        m2m_key_free(pub[i]);
    json_decref(doc);
}

static void assert_open_fails(fixture *f, m2m_err want)
{
    auth_keystore *ks = (auth_keystore *)0x1;
    m2m_err rc = auth_keystore_open(f->dir, &ks);
    if (rc == M2M_OK) {
        f->ks = ks;
        fail_msg("auth_keystore_open(%s) succeeded, want failure", f->dir);
    }
    assert_null(ks);
    if (want != M2M_OK && rc != want)
        fail_msg("auth_keystore_open(%s) = %s, want %s", f->dir, m2m_err_name(rc),
                 m2m_err_name(want));
}

/* ---- tests -------------------------------------------------------------- */

static void first_open_creates_dir_and_key(void **state)
{
    fixture *f = *state;
    char names[8][128], kids[4][M2M_KID_MAX], path[512];
    time_t before = time(NULL);

    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    time_t after = time(NULL);
    assert_non_null(f->ks);
    assert_int_equal(mode_of(f->dir), 0700);

    /* exactly one file, "<10-digit time>-<kid>.pem", mode 0600, no temp left */
    assert_int_equal(list_dir(f->dir, names, 8), 1);
    const char *name = names[0];
    size_t len = strlen(name);
    assert_true(len > 16);
    for (int i = 0; i < 10; i++)
        assert_true(name[i] >= '0' && name[i] <= '9');
    assert_int_equal(name[10], '-');
    assert_string_equal(name + len - 4, ".pem");
    long long ts = strtoll(name, NULL, 10);
    assert_true(ts >= (long long)before && ts <= (long long)after);
    char file_kid[M2M_KID_MAX];
    snprintf(file_kid, sizeof(file_kid), "%.*s", (int)(len - 15), name + 11);
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    assert_int_equal(mode_of(path), 0600);

    assert_int_equal(f->ks->n, 1);
    assert_non_null(f->ks->signing);
    assert_ptr_equal(f->ks->signing, f->ks->keys[0]);
    assert_true(f->ks->signing->has_private);
    assert_string_equal(f->ks->signing->kid, file_kid);

    assert_non_null(f->ks->jwks_json);
    assert_int_equal(jwks_kids(f->ks->jwks_json, kids, 4), 1);
    assert_string_equal(kids[0], file_kid);
    assert_jwks_verifies_signing_key(f->ks);
}

static void reopen_keeps_the_key(void **state)
{
    fixture *f = *state;
    char kid[M2M_KID_MAX], names[8][128], first_name[128], kids[4][M2M_KID_MAX];

    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    snprintf(kid, sizeof(kid), "%s", f->ks->signing->kid);
    assert_int_equal(list_dir(f->dir, names, 8), 1);
    snprintf(first_name, sizeof(first_name), "%s", names[0]);
    auth_keystore_free(f->ks);
    f->ks = NULL;

    for (int i = 0; i < 2; i++) {
        assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
        assert_int_equal(f->ks->n, 1);
        assert_string_equal(f->ks->signing->kid, kid);
        assert_int_equal(jwks_kids(f->ks->jwks_json, kids, 4), 1);
        assert_string_equal(kids[0], kid);
        auth_keystore_free(f->ks);
        f->ks = NULL;
        assert_int_equal(list_dir(f->dir, names, 8), 1);
        assert_string_equal(names[0], first_name);
    }
}

static void newer_key_signs_and_both_published(void **state)
{
    fixture *f = *state;
    char old_kid[M2M_KID_MAX], new_kid[M2M_KID_MAX], kids[4][M2M_KID_MAX];

    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    snprintf(old_kid, sizeof(old_kid), "%s", f->ks->signing->kid);
    auth_keystore_free(f->ks);
    f->ks = NULL;

    add_key(f->dir, (long long)time(NULL) + 100, 0600, new_kid);
    assert_string_not_equal(old_kid, new_kid);

    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    assert_int_equal(f->ks->n, 2);
    assert_string_equal(f->ks->signing->kid, new_kid);
    assert_ptr_equal(f->ks->signing, f->ks->keys[1]);
    assert_string_equal(f->ks->keys[0]->kid, old_kid); /* oldest first */
    assert_int_equal(jwks_kids(f->ks->jwks_json, kids, 4), 2);
    assert_true((strcmp(kids[0], new_kid) == 0 && strcmp(kids[1], old_kid) == 0) ||
                (strcmp(kids[0], old_kid) == 0 && strcmp(kids[1], new_kid) == 0));
    assert_jwks_verifies_signing_key(f->ks);
}

static void key_order_is_by_timestamp_not_kid(void **state)
{
    fixture *f = *state;
    char a[M2M_KID_MAX], b[M2M_KID_MAX], c[M2M_KID_MAX];
    long long now = (long long)time(NULL);

    make_dir(f->dir, 0700);
    add_key(f->dir, now - 200, 0600, a);
    add_key(f->dir, now, 0600, c); /* newest written second */
    add_key(f->dir, now - 100, 0600, b);
    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    assert_int_equal(f->ks->n, 3);
    assert_string_equal(f->ks->keys[0]->kid, a);
    assert_string_equal(f->ks->keys[1]->kid, b);
    assert_string_equal(f->ks->keys[2]->kid, c);
    assert_string_equal(f->ks->signing->kid, c);
}

static void at_most_max_keys_newest_kept(void **state)
{
    fixture *f = *state;
    char kid[AUTH_KEYSTORE_MAX_KEYS + 2][M2M_KID_MAX],
        kids[AUTH_KEYSTORE_MAX_KEYS + 2][M2M_KID_MAX];
    long long now = (long long)time(NULL);

    make_dir(f->dir, 0700);
    for (int i = 0; i < AUTH_KEYSTORE_MAX_KEYS + 2; i++)
        add_key(f->dir, now - 1000 + i, 0600, kid[i]);
    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    assert_int_equal(f->ks->n, AUTH_KEYSTORE_MAX_KEYS);
    assert_string_equal(f->ks->signing->kid, kid[AUTH_KEYSTORE_MAX_KEYS + 1]);
    assert_string_equal(f->ks->keys[0]->kid, kid[2]);
    size_t n = jwks_kids(f->ks->jwks_json, kids, AUTH_KEYSTORE_MAX_KEYS + 2);
    assert_int_equal(n, AUTH_KEYSTORE_MAX_KEYS);
    for (size_t i = 0; i < n; i++) {
        assert_string_not_equal(kids[i], kid[0]);
        assert_string_not_equal(kids[i], kid[1]);
    }
}

static void key_file_0644_refused(void **state)
{
    fixture *f = *state;
    make_dir(f->dir, 0700);
    add_key(f->dir, (long long)time(NULL), 0644, NULL);
    assert_open_fails(f, M2M_ERR_CONFIG);
}

static void key_file_group_readable_refused(void **state)
{
    fixture *f = *state;
    make_dir(f->dir, 0700);
    add_key(f->dir, (long long)time(NULL) - 10, 0600, NULL);
    add_key(f->dir, (long long)time(NULL), 0640, NULL);
    assert_open_fails(f, M2M_ERR_CONFIG);
}

static void dir_0755_refused(void **state)
{
    fixture *f = *state;
    char names[4][128];
    make_dir(f->dir, 0755);
    assert_open_fails(f, M2M_ERR_CONFIG);
    /* refused before anything was written into it */
    assert_int_equal(list_dir(f->dir, names, 4), 0);
}

static void dir_0750_with_key_refused(void **state)
{
    fixture *f = *state;
    make_dir(f->dir, 0750);
    add_key(f->dir, (long long)time(NULL), 0600, NULL);
    assert_open_fails(f, M2M_ERR_CONFIG);
}

static void dir_is_a_file_refused(void **state)
{
    fixture *f = *state;
    write_file(f->base, "keys", "x", 1, 0600);
    assert_open_fails(f, M2M_ERR_CONFIG);
}

static void dir_parent_missing_fails(void **state)
{
    fixture *f = *state;
    snprintf(f->dir, sizeof(f->dir), "%s/no/such/keys", f->base);
    assert_open_fails(f, M2M_ERR_IO);
}

static void garbage_pem_refused(void **state)
{
    fixture *f = *state;
    static const char junk[] =
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    make_dir(f->dir, 0700);
    add_key(f->dir, (long long)time(NULL) - 10, 0600, NULL);
    write_file(f->dir, "0000000001-garbage.pem", junk, sizeof(junk) - 1, 0600);
    assert_open_fails(f, M2M_OK);
}

static void random_bytes_pem_refused(void **state)
{
    fixture *f = *state;
    unsigned char junk[300];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 37 + 11);
    make_dir(f->dir, 0700);
    write_file(f->dir, "9999999999-random.pem", junk, sizeof(junk), 0600);
    assert_open_fails(f, M2M_OK);
}

static void empty_pem_refused(void **state)
{
    fixture *f = *state;
    make_dir(f->dir, 0700);
    write_file(f->dir, "1700000000-empty.pem", "", 0, 0600);
    assert_open_fails(f, M2M_OK);
}

static void public_only_pem_refused(void **state)
{
    fixture *f = *state;
    make_dir(f->dir, 0700);
    add_key(f->dir, (long long)time(NULL) - 10, 0600, NULL);
    add_public_only(f->dir, "9999999999-public.pem");
    assert_open_fails(f, M2M_OK);
}

static void symlinked_key_refused(void **state)
{
    fixture *f = *state;
    char target[512], link_path[512], names[4][128];
    make_dir(f->dir, 0700);
    add_key(f->dir, 1000000000LL, 0600, NULL);
    assert_int_equal(list_dir(f->dir, names, 4), 1);
    snprintf(target, sizeof(target), "%s/%s", f->dir, names[0]);
    snprintf(link_path, sizeof(link_path), "%s/2000000000-link.pem", f->dir);
    assert_int_equal(symlink(target, link_path), 0);
    assert_open_fails(f, M2M_OK);
}

static void non_key_files_ignored(void **state)
{
    fixture *f = *state;
    static const char junk[] = "not a key at all\n";
    char names[16][128], kids[4][M2M_KID_MAX], kid[M2M_KID_MAX];

    make_dir(f->dir, 0700);
    /* None of these is "<digit>....pem": none is read, whatever its mode. */
    write_file(f->dir, "README", junk, sizeof(junk) - 1, 0644);
    write_file(f->dir, "notes.tmp", junk, sizeof(junk) - 1, 0644);
    write_file(f->dir, ".new-123.tmp", junk, sizeof(junk) - 1, 0644);
    write_file(f->dir, "1700000000-x.pem.tmp", junk, sizeof(junk) - 1, 0644);
    write_file(f->dir, "1700000000-x.pem~", junk, sizeof(junk) - 1, 0644);
    write_file(f->dir, "key.pem", junk, sizeof(junk) - 1, 0644);
    write_file(f->dir, ".pem", junk, sizeof(junk) - 1, 0644);

    /* no key among them: one is created */
    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    assert_int_equal(f->ks->n, 1);
    snprintf(kid, sizeof(kid), "%s", f->ks->signing->kid);
    assert_int_equal(list_dir(f->dir, names, 16), 8);
    auth_keystore_free(f->ks);
    f->ks = NULL;

    /* a real key beside them: it alone is loaded */
    add_key(f->dir, (long long)time(NULL) + 100, 0600, NULL);
    assert_int_equal(auth_keystore_open(f->dir, &f->ks), M2M_OK);
    assert_int_equal(f->ks->n, 2);
    assert_string_equal(f->ks->keys[0]->kid, kid);
    assert_int_equal(jwks_kids(f->ks->jwks_json, kids, 4), 2);
}

int main(void)
{
    m2m_log_init("test_auth_keystore", M2M_LOG_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(key_order_is_by_timestamp_not_kid),
        T(at_most_max_keys_newest_kept),
        T(key_file_0644_refused),
        T(key_file_group_readable_refused),
        T(dir_0755_refused),
        T(dir_0750_with_key_refused),
        T(dir_is_a_file_refused),
        T(dir_parent_missing_fails),
        T(garbage_pem_refused),
        T(random_bytes_pem_refused),
        T(empty_pem_refused),
        T(public_only_pem_refused),
        T(symlinked_key_refused),
        /* these start from a directory without keys (first start) */
        T(first_open_creates_dir_and_key),
        T(reopen_keeps_the_key),
        T(newer_key_signs_and_both_published),
        T(non_key_files_ignored),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
