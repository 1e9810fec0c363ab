/* JSON logs: one object per line on stdout (pgbouncer slog, h2o access log).
 * The level is checked before anything is formatted. A request id set with
 * m2m_log_set_request_id() is added to every line the thread writes until it
 * is cleared, so every line of a request carries it.
 * Never pass secrets or whole tokens to these functions. */
#ifndef M2M_LOG_H
#define M2M_LOG_H

#include <jansson.h>
#include <stdbool.h>

typedef enum { M2M_LOG_DEBUG = 0, M2M_LOG_INFO, M2M_LOG_WARN, M2M_LOG_ERROR } m2m_log_level;

void m2m_log_init(const char *service, m2m_log_level min_level);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int m2m_log_level_parse(const char *s);
bool m2m_log_enabled(m2m_log_level level);
void m2m_log_set_request_id(const char *rid);
/* The calling thread's request id, or NULL when none is set. */
const char *m2m_log_request_id(void);
/* Redirect output (tests); NULL restores stdout. */
void m2m_log_set_stream(void *file);

/* Writes {"ts","level","service","event","request_id"?,"msg"?,...fields}.
 * `fields` (may be NULL) is consumed. */
void m2m_log_event(m2m_log_level level, const char *event, json_t *fields);
/* Same with a printf-formatted "msg". */
void m2m_log_msg(m2m_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define M2M_LOG(level, event, ...)                                                                 \
    do {                                                                                           \
        if (m2m_log_enabled(level))                                                                \
            m2m_log_msg(level, event, __VA_ARGS__);                                                \
    } while (0)
#define M2M_INFO(event, ...) M2M_LOG(M2M_LOG_INFO, event, __VA_ARGS__)
#define M2M_WARN(event, ...) M2M_LOG(M2M_LOG_WARN, event, __VA_ARGS__)
#define M2M_ERROR(event, ...) M2M_LOG(M2M_LOG_ERROR, event, __VA_ARGS__)
#define M2M_DEBUG(event, ...) M2M_LOG(M2M_LOG_DEBUG, event, __VA_ARGS__)

#endif
