/* The current rates, in memory: handlers answer from here, never with a
 * database query (the updater reloads it every tick). The JSON bodies are
 * rendered once per tick, so a GET costs a copy. */
#ifndef CURRENCY_RATES_H
#define CURRENCY_RATES_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include "m2m/err.h"
#include "m2m/http.h"

#define RATES_MAX 64
#define SYMBOL_MAX 10

/* The rows rates_load() takes: the rate as exact decimal text. */
#define RATES_SELECT_SQL                                                                           \
    "SELECT symbol, name, trim_scale(rate)::text,"                                                 \
    " (extract(epoch FROM updated_at) * 1000)::bigint"                                             \
    " FROM currency.rates ORDER BY symbol"

typedef struct rates_store rates_store;

rates_store *rates_new(void);
void rates_free(rates_store *s);
/* Replaces the set from rows (symbol, name, rate as text, updated_at as
 * epoch milliseconds) and renders the bodies. */
m2m_err rates_load(rates_store *s, const PGresult *res);
/* True once anything was loaded. */
bool rates_ready(rates_store *s);
/* How many loads so far (the SSE event id). */
uint64_t rates_version(rates_store *s);

/* 200 with all rates, [{"symbol","name","rate","last_updated"}, ...]. */
void rates_reply_all(rates_store *s, m2m_req *req);
/* 200 with one rate; false (nothing replied) when the symbol is unknown.
 * `symbol` is upper-case. */
bool rates_reply_one(rates_store *s, m2m_req *req, const char *symbol);
bool rates_known(rates_store *s, const char *symbol);
/* A copy of the all-rates body (free() it), for the stream. */
char *rates_all_json(rates_store *s, size_t *len);

/* RFC 3339 UTC with milliseconds, four-digit year; any epoch ms. */
void rates_iso_time(long long ms, char *out, size_t cap);
/* True for an unsigned decimal without exponent: JSON-safe as is. */
bool rates_number_ok(const char *s);

/* Upper-cases a path segment into out if it is 1-10 of [A-Za-z0-9]. */
bool rates_symbol_normalize(const char *in, char out[SYMBOL_MAX + 1]);

#endif
