/* Configuration tables (pgbouncer, kore): each daemon declares one table of
 * {key, type, default, description, offset, bounds}; values come from the
 * environment and are validated at start with errors that name the key. */
#ifndef M2M_CONFIG_H
#define M2M_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include "m2m/err.h"

typedef enum {
    M2M_CFG_STR,  /* char * (malloc'd) */
    M2M_CFG_INT,  /* long, within [min, max] */
    M2M_CFG_BOOL, /* bool: true/false/1/0/yes/no/on/off */
} m2m_cfg_type;

typedef struct {
    const char *key; /* environment variable */
    m2m_cfg_type type;
    const char *def; /* default as text; NULL = required */
    const char *desc;
    size_t offset; /* offsetof(struct, field) */
    long min, max; /* M2M_CFG_INT bounds */
    bool secret;   /* never printed */
} m2m_cfg_entry;

/* Loads every entry into `out` from getenv(); on error names the key in errbuf. */
m2m_err m2m_config_load(const m2m_cfg_entry *table, size_t n, void *out, char *errbuf,
                        size_t errlen);
/* Loads with a lookup function instead of getenv (tests). */
m2m_err m2m_config_load_with(const m2m_cfg_entry *table, size_t n, void *out,
                             const char *(*lookup)(const char *key, void *arg), void *arg,
                             char *errbuf, size_t errlen);
void m2m_config_free(const m2m_cfg_entry *table, size_t n, void *out);
void m2m_config_print_help(FILE *f, const m2m_cfg_entry *table, size_t n);

#endif
