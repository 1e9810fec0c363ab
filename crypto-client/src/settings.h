/* The agent's credentials and where to use them: from the environment at
 * start, replaced by POST /api/configure, persisted in a state file that
 * only the agent's user can read (so a restart keeps them). */
#ifndef AGENT_SETTINGS_H
#define AGENT_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include "m2m/err.h"

#define AGENT_CLIENT_ID_MAX 128
#define AGENT_SECRET_MIN 6 /* the auth-service's minimum */
#define AGENT_SECRET_MAX 256
#define AGENT_URL_MAX 512
#define AGENT_APP_NAME_MAX 128

typedef struct {
    char client_id[AGENT_CLIENT_ID_MAX + 1];         /* "": not configured */
    char client_secret[AGENT_SECRET_MAX + 1];        /* "": none yet */
    char server_url[AGENT_URL_MAX + 1];              /* without a trailing '/' */
    char app_name[AGENT_APP_NAME_MAX + 1];
} agent_settings;

/* The auth-service's rules, so a bad value is refused here, not there. */
bool agent_client_id_valid(const char *s);
bool agent_secret_valid(const char *s);
bool agent_app_name_valid(const char *s);
/* http:// or https://, printable, at most AGENT_URL_MAX bytes. */
bool agent_url_valid(const char *s);
/* Copies a URL without its trailing slashes. */
void agent_url_set(char dst[AGENT_URL_MAX + 1], const char *src);

/* Reads the state file into s (only the members it has). M2M_ERR_NOT_FOUND
 * when there is none; M2M_ERR_CONFIG (message in errbuf) when it cannot be
 * read or is not a valid state. A file others may read is made 0600. */
m2m_err agent_settings_load(const char *path, agent_settings *s, char *errbuf, size_t errlen);
/* Writes s atomically (temp file 0600, fsync, rename; parent made 0700). */
m2m_err agent_settings_save(const char *path, const agent_settings *s, char *errbuf,
                            size_t errlen);
/* Overwrites the secret in memory. */
void agent_settings_wipe(agent_settings *s);

#endif
