/* The rates updater: every tick the leader moves every rate by a random step
 * of at most CURRENCY_MAX_STEP_BP and records history, in one transaction,
 * and prunes history older than the retention; every instance then reloads
 * the rates into memory and broadcasts them to stream subscribers.
 *
 * One leader across instances: a session-level advisory lock held on the
 * updater's own connection. If the leader dies its session ends, the lock is
 * released and another instance takes over on its next tick, so rates move
 * once per tick however many instances run. */
#ifndef CURRENCY_UPDATER_H
#define CURRENCY_UPDATER_H

#include <stdatomic.h>
#include <stdbool.h>
#include "currency_config.h"
#include "rates.h"
#include "streams.h"

typedef struct updater updater;

typedef struct {
    atomic_bool leader;
    atomic_bool db_ok;
    atomic_ullong ticks;      /* ticks this instance led */
    atomic_llong last_load_ms; /* wall clock of the last successful reload */
} updater_status;

/* schema_ready: the updater waits until it is true (migrations done). */
m2m_err updater_start(const currency_config *cfg, rates_store *rates, streams *subs,
                      atomic_bool *schema_ready, updater **out);
/* Stops the thread (idempotent); the status stays readable. */
void updater_stop(updater *u);
void updater_free(updater *u);
const updater_status *updater_get_status(const updater *u);

#endif
