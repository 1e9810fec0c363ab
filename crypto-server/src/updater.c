#include "updater.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "m2m/db.h"
#include "m2m/log.h"

#define LEADER_LOCK "m2m.currency.updater"

struct updater {
    const currency_config *cfg;
    rates_store *rates;
    streams *subs;
    atomic_bool *schema_ready;
    updater_status st;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    bool joined;
    PGconn *conn;
    struct timespec last_ping;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop_conn(updater *u)
{
    if (u->conn)
        PQfinish(u->conn); /* ends the session: releases the leader lock */
    u->conn = NULL;
    atomic_store(&u->st.leader, false);
    atomic_store(&u->st.db_ok, false);
}

static bool ensure_conn(updater *u)
{
    if (u->conn && PQstatus(u->conn) == CONNECTION_OK)
        return true;
    drop_conn(u);
    u->conn = m2m_db_connect(u->cfg->database_url);
    if (!u->conn)
        return false;
    atomic_store(&u->st.db_ok, true);
    return true;
}

static bool exec_ok(PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Logs a failed statement (never parameters: there are only numbers here). */
static bool check(updater *u, PGresult *r, const char *what)
{
    if (exec_ok(r))
        return true;
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(u->conn));
    msg[strcspn(msg, "\n")] = '\0';
    M2M_WARN("updater_db", "%s: %s", what, msg);
    return false;
}

static void try_lead(updater *u)
{
    const char *p[1] = {LEADER_LOCK};
    PGresult *r = PQexecParams(u->conn, "SELECT pg_try_advisory_lock(hashtext($1))", 1, NULL, p,
                               NULL, NULL, 0);
    if (check(u, r, "leader lock") && PQgetvalue(r, 0, 0)[0] == 't') {
        atomic_store(&u->st.leader, true);
        M2M_INFO("updater_leader", "this instance now moves the rates");
    }
    PQclear(r);
}

/* One tick of the leader: move, record, prune - all or nothing. */
static bool move_rates(updater *u)
{
    char step[32], keep[32];
    /* step: a fraction, e.g. 0.005 for 50 bp; each rate moves by
     * (random() * 2 - 1) * step, never below the smallest representable rate */
    snprintf(step, sizeof(step), "%.6f", (double)u->cfg->max_step_bp / 10000.0);
    snprintf(keep, sizeof(keep), "%ld", u->cfg->history_retention);
    const char *p1[1] = {step};
    const char *p2[1] = {keep};
    bool ok = false;
    PGresult *r = PQexec(u->conn, "BEGIN");
    if (!check(u, r, "begin"))
        goto out;
    PQclear(r);
    r = PQexecParams(u->conn,
                     "WITH moved AS ("
                     " UPDATE currency.rates SET"
                     "  rate = greatest(round(rate * (1 + (random() * 2 - 1)::numeric * $1::numeric), 10),"
                     "                  0.0000000001),"
                     "  updated_at = now()"
                     " RETURNING symbol, rate, updated_at)"
                     " INSERT INTO currency.history (symbol, rate, at)"
                     " SELECT symbol, rate, updated_at FROM moved",
                     1, NULL, p1, NULL, NULL, 0);
    if (!check(u, r, "move rates"))
        goto rollback;
    PQclear(r);
    r = PQexecParams(u->conn,
                     "DELETE FROM currency.history WHERE at < now() - make_interval(secs => $1)",
                     1, NULL, p2, NULL, NULL, 0);
    if (!check(u, r, "prune history"))
        goto rollback;
    PQclear(r);
    r = PQexec(u->conn, "COMMIT");
    ok = check(u, r, "commit");
    goto out;
rollback:
    PQclear(r);
    r = PQexec(u->conn, "ROLLBACK");
out:
    PQclear(r);
    return ok;
}

static bool reload(updater *u)
{
    PGresult *r = PQexec(u->conn, RATES_SELECT_SQL);
    bool ok = check(u, r, "load rates") && rates_load(u->rates, r) == M2M_OK;
    PQclear(r);
    if (ok)
        atomic_store(&u->st.last_load_ms, now_ms());
    return ok;
}

/* Event: "id: N\nevent: rates\ndata: [...]\n\n" (one line of JSON). */
static void broadcast_rates(updater *u)
{
    size_t len = 0;
    char *json = rates_all_json(u->rates, &len);
    char *ev = NULL;
    if (!json)
        return;
    int n = asprintf(&ev, "id: %llu\nevent: rates\ndata: %s\n\n",
                     (unsigned long long)rates_version(u->rates), json);
    if (n > 0)
        streams_broadcast(u->subs, ev, (size_t)n);
    free(ev);
    free(json);
}

static void maybe_ping(updater *u)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - u->last_ping.tv_sec < u->cfg->ping_interval)
        return;
    u->last_ping = now;
    static const char ping[] = ": ping\n\n";
    streams_broadcast(u->subs, ping, sizeof(ping) - 1);
}

static void tick(updater *u)
{
    if (!atomic_load(u->schema_ready) || !ensure_conn(u))
        return;
    if (!atomic_load(&u->st.leader))
        try_lead(u);
    if (atomic_load(&u->st.leader) && move_rates(u))
        atomic_fetch_add(&u->st.ticks, 1);
    if (reload(u))
        broadcast_rates(u);
    if (PQstatus(u->conn) != CONNECTION_OK) {
        M2M_WARN("updater_db_lost", "database connection lost; serving the last rates");
        drop_conn(u);
    }
}

static void *updater_main(void *arg)
{
    updater *u = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    u->last_ping = next;

    pthread_mutex_lock(&u->lock);
    while (!u->stop) {
        pthread_mutex_unlock(&u->lock);
        tick(u);
        maybe_ping(u);
        pthread_mutex_lock(&u->lock);
        /* Fixed cadence: the next tick is tick_ms after the previous one
         * was due, not after this one finished. Until the database is up,
         * retry every second at most. */
        long step = atomic_load(&u->st.db_ok) ? u->cfg->tick_ms : 1000;
        if (step > u->cfg->tick_ms)
            step = u->cfg->tick_ms;
        next.tv_nsec += (step % 1000) * 1000000L;
        next.tv_sec += step / 1000 + next.tv_nsec / 1000000000L;
        next.tv_nsec %= 1000000000L;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec + 5)
            next = now; /* we fell far behind (suspended?): don't burst */
        while (!u->stop &&
               pthread_cond_timedwait(&u->wake, &u->lock, &next) == 0)
            ;
    }
    pthread_mutex_unlock(&u->lock);
    drop_conn(u);
    return NULL;
}

m2m_err updater_start(const currency_config *cfg, rates_store *rates, streams *subs,
                      atomic_bool *schema_ready, updater **out)
{
    updater *u = calloc(1, sizeof(*u));
    pthread_condattr_t ca;

    *out = NULL;
    if (!u)
        return M2M_ERR_NOMEM;
    u->cfg = cfg;
    u->rates = rates;
    u->subs = subs;
    u->schema_ready = schema_ready;
    pthread_mutex_init(&u->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&u->thread, NULL, updater_main, u) != 0) {
        pthread_cond_destroy(&u->wake);
        pthread_mutex_destroy(&u->lock);
        free(u);
        return M2M_ERR_NOMEM;
    }
    *out = u;
    return M2M_OK;
}

void updater_stop(updater *u)
{
    if (!u || u->joined)
        return;
    pthread_mutex_lock(&u->lock);
    u->stop = true;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
    pthread_join(u->thread, NULL);
    u->joined = true;
}

void updater_free(updater *u)
{
    if (!u)
        return;
    updater_stop(u);
    pthread_cond_destroy(&u->wake);
    pthread_mutex_destroy(&u->lock);
    free(u);
}

const updater_status *updater_get_status(const updater *u)
{
    return &u->st;
}
