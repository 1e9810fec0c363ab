/* Operator commands, run against the same database as the daemon:
 *   auth-service migrate
 *   auth-service client create --id ID [--secret S] [--scopes "a b"]
 *                              [--role R] [--name APP] [--ttl SECONDS]
 * `client create` is how privileged (admin) clients come to exist: no default
 * credentials ship anywhere. A generated secret is printed once. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients.h"
#include "m2m/log.h"
#include "m2m/rand.h"
#include "scope.h"
#include "secret_hash.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: auth-service [serve]\n"
               "       auth-service migrate\n"
               "       auth-service client create --id ID [--secret S] [--scopes \"a b\"]\n"
               "                                  [--role ROLE] [--name APP] [--ttl SECONDS]\n"
               "       auth-service --help   (configuration variables)\n");
}

static int client_create(auth_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"id", required_argument, NULL, 'i'},
                                         {"secret", required_argument, NULL, 's'},
                                         {"scopes", required_argument, NULL, 'c'},
                                         {"role", required_argument, NULL, 'r'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"ttl", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    const char *id = NULL, *secret = NULL, *scopes = "currency:read", *role = NULL, *name = "";
    long ttl = 0;
    char gen[M2M_B64URL_LEN(32) + 1], hash[AUTH_SECRET_HASH_MAX], scope[AUTH_SCOPE_MAX + 1];
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': id = optarg; break;
        case 's': secret = optarg; break;
        case 'c': scopes = optarg; break;
        case 'r': role = optarg; break;
        case 'n': name = optarg; break;
        case 't': {
            char *end = NULL;
            ttl = strtol(optarg, &end, 10);
            if (!*optarg || *end || ttl < 5 || ttl > 86400) {
                fprintf(stderr, "--ttl: seconds between 5 and 86400\n");
                return 2;
            }
            break;
        }
        default: usage(stderr); return 2;
        }
    }
    if (!id || !auth_client_id_valid(id)) {
        fprintf(stderr, "--id: required; 1-128 characters of A-Z a-z 0-9 . _ : @ -\n");
        return 2;
    }
    if (role && !auth_role_valid(role)) {
        fprintf(stderr, "--role: [a-z][a-z0-9_-]{0,31}\n");
        return 2;
    }
    if (auth_scope_normalize(scopes, scope, sizeof(scope))) {
        fprintf(stderr, "--scopes: space-separated RFC 6749 scope tokens\n");
        return 2;
    }
    if (strlen(name) > AUTH_APP_NAME_MAX) {
        fprintf(stderr, "--name: at most %d bytes\n", AUTH_APP_NAME_MAX);
        return 2;
    }
    if (secret && (strlen(secret) < 6 || strlen(secret) > AUTH_SECRET_MAX)) {
        fprintf(stderr, "--secret: 6 to %d characters\n", AUTH_SECRET_MAX);
        return 2;
    }
    if (!secret) {
        if (m2m_rand_token(32, gen, sizeof(gen)))
            return 1;
        secret = gen;
    }
    if (auth_secret_hash(ctx->secrets, secret, strlen(secret), hash, sizeof(hash)))
        return 1;
    auth_client cl = {.client_id = id,
                      .secret_hash = hash,
                      .app_name = name,
                      .scopes = scope,
                      .role = role,
                      .grant_types = "client_credentials",
                      .access_token_ttl = ttl};
    m2m_err rc = auth_client_insert(ctx->db, &cl, "operator");
    if (rc == M2M_ERR_CONFLICT) {
        fprintf(stderr, "client '%s' already exists\n", id);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "cannot create client: %s\n", m2m_err_text(rc));
        return 1;
    }
    json_t *out = json_pack("{s:s, s:s, s:s?, s:s}", "client_id", id, "scope", scope, "role",
                            role, "app_name", name);
    if (out && secret == gen)
        json_object_set_new(out, "client_secret", json_string(secret));
    char *text = out ? json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(out);
    explicit_bzero(gen, sizeof(gen));
    return 0;
}

int auth_cli(const auth_config *cfg, int argc, char **argv)
{
    auth_ctx ctx;
    int status = 1;

    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    /* Only what the commands need: no key directory, no listeners. */
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = cfg;
    auth_secrets_params sp = {.log_n = (int)cfg->kdf_log_n,
                              .r = 8,
                              .p = (int)cfg->kdf_parallel,
                              .concurrency = 1,
                              .cache_slots = 0};
    if (auth_secrets_new(&sp, &ctx.secrets) || m2m_db_open(cfg->database_url, &ctx.db))
        goto out;
    m2m_err rc = auth_ctx_migrate(&ctx);
    if (rc) {
        fprintf(stderr, "database: %s\n", m2m_err_text(rc));
        goto out;
    }
    if (strcmp(argv[0], "migrate") == 0) {
        status = 0;
    } else if (argc >= 2 && strcmp(argv[0], "client") == 0 && strcmp(argv[1], "create") == 0) {
        status = client_create(&ctx, argc - 1, argv + 1);
    } else {
        usage(stderr);
        status = 2;
    }
out:
    auth_ctx_free(&ctx);
    return status;
}
