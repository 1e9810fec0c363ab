#include "m2m/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LOG_LINE_MAX 8192

static const char *log_service = "m2m";
static m2m_log_level log_min = M2M_LOG_INFO;
static FILE *log_stream;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char log_rid[64];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void m2m_log_init(const char *service, m2m_log_level min_level)
{
    log_service = service;
    log_min = min_level;
}

int m2m_log_level_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (s && strcasecmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

bool m2m_log_enabled(m2m_log_level level)
{
    return level >= log_min;
}

void m2m_log_set_request_id(const char *rid)
{
    if (!rid) {
        log_rid[0] = '\0';
        return;
    }
    snprintf(log_rid, sizeof(log_rid), "%s", rid);
}

const char *m2m_log_request_id(void)
{
    return log_rid[0] ? log_rid : NULL;
}

void m2m_log_set_stream(void *file)
{
    pthread_mutex_lock(&log_lock);
    log_stream = file;
    pthread_mutex_unlock(&log_lock);
}

static void log_timestamp(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void m2m_log_event(m2m_log_level level, const char *event, json_t *fields)
{
    char ts[40];
    json_t *line = NULL;
    char *text = NULL;

    if (!m2m_log_enabled(level))
        goto out;
    log_timestamp(ts, sizeof(ts));
    /* Fixed keys first so lines read well; fields may not override them. */
    line = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[level], "service",
                     log_service, "event", event ? event : "log");
    if (!line)
        goto out;
    if (log_rid[0])
        json_object_set_new(line, "request_id", json_string(log_rid));
    if (fields)
        json_object_update_missing(line, fields);
    text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        goto out;
    pthread_mutex_lock(&log_lock);
    FILE *f = log_stream ? log_stream : stdout;
    fputs(text, f);
    fputc('\n', f);
    fflush(f);
    pthread_mutex_unlock(&log_lock);
out:
    free(text);
    json_decref(line);
    json_decref(fields);
}

void m2m_log_msg(m2m_log_level level, const char *event, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX];
    va_list ap;

    if (!m2m_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *s = json_string(msg);
    if (!s) {
        /* Not UTF-8 (peer-supplied bytes, or a cut multi-byte character):
         * keep the line, lose only the odd bytes. */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        s = json_string(msg);
    }
    json_t *fields = json_object();
    if (fields && s)
        json_object_set_new(fields, "msg", s);
    else
        json_decref(s);
    m2m_log_event(level, event, fields);
}
