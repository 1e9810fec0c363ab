/* JSON logs: every line is one JSON object with ts/level/service/event, the
 * level is checked before formatting, the request id follows the thread,
 * peer bytes that are not UTF-8 never break a line, fields cannot override
 * the fixed keys, and concurrent writers never interleave lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <regex.h>
#include <cmocka.h>

#include <jansson.h>

#include "m2m/log.h"

#define SERVICE "unit-log"

/* ---- capture ------------------------------------------------------------ */

typedef struct {
    FILE *f;
    char *data;
    size_t len;
} capture;

static void capture_begin(capture *c)
{
    memset(c, 0, sizeof(*c));
    c->f = open_memstream(&c->data, &c->len);
    assert_non_null(c->f);
    m2m_log_set_stream(c->f);
}

/* Stops capturing; c->data holds everything written (NUL-terminated). */
static void capture_end(capture *c)
{
    m2m_log_set_stream(NULL);
    assert_int_equal(fclose(c->f), 0);
    c->f = NULL;
    assert_non_null(c->data);
}

static void capture_free(capture *c)
{
    free(c->data);
    c->data = NULL;
}

/* Splits the captured text into lines. Fails unless the text is empty or
 * ends with '\n' (a line is only whole with its newline). Returns the count;
 * *lines (malloc'd array of pointers into c->data) must be freed. */
static size_t capture_lines(capture *c, char ***lines)
{
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof(*v));

    assert_non_null(v);
    if (c->len)
        assert_int_equal(c->data[c->len - 1], '\n');
    for (char *p = c->data; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(*v));
            assert_non_null(v);
        }
        v[n++] = p;
        p = nl + 1;
    }
    *lines = v;
    return n;
}

/* Parses one line: a JSON object, nothing else on the line. */
static json_t *parse_line(const char *line)
{
    json_error_t err;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        fail_msg("not a JSON line (%s): %s", err.text, line);
    assert_true(json_is_object(j));
    return j;
}

static const char *str_member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return NULL;
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* Checks the fixed keys of every line and returns the parsed object. */
static json_t *parse_checked(const char *line, const char *level, const char *event)
{
    regex_t re;
    json_t *j = parse_line(line);

    /* Fixed keys come first, in this order, so lines read well. */
    assert_true(strncmp(line, "{\"ts\":\"", 7) == 0);
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    const char *ts = str_member(j, "ts");
    assert_non_null(ts);
    assert_int_equal(regexec(&re, ts, 0, NULL, 0), 0);
    regfree(&re);
    /* ts is UTC and now (to a few seconds) */
    struct tm tm = {0};
    assert_non_null(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    assert_true(labs((long)(t - time(NULL))) <= 5);

    assert_string_equal(str_member(j, "level"), level);
    assert_string_equal(str_member(j, "service"), SERVICE);
    assert_string_equal(str_member(j, "event"), event);
    return j;
}

static int setup(void **state)
{
    (void)state;
    m2m_log_init(SERVICE, M2M_LOG_INFO);
    m2m_log_set_request_id(NULL);
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_line_shape(void **state)
{
    capture c;
    char **lines;
    (void)state;

    capture_begin(&c);
    m2m_log_msg(M2M_LOG_INFO, "unit_started", "hello %d %s", 42, "world");
    m2m_log_event(M2M_LOG_WARN, "unit_warned", NULL);
    m2m_log_event(M2M_LOG_ERROR, NULL, json_pack("{s:i}", "n", 7));
    capture_end(&c);

    assert_int_equal(capture_lines(&c, &lines), 3);
    json_t *j = parse_checked(lines[0], "info", "unit_started");
    assert_string_equal(str_member(j, "msg"), "hello 42 world");
    assert_null(json_object_get(j, "request_id"));
    assert_int_equal(json_object_size(j), 5);
    json_decref(j);

    j = parse_checked(lines[1], "warn", "unit_warned");
    assert_null(json_object_get(j, "msg"));
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);

    /* no event name: "log" */
    j = parse_checked(lines[2], "error", "log");
    assert_int_equal(json_integer_value(json_object_get(j, "n")), 7);
    json_decref(j);
    free(lines);
    capture_free(&c);
}

static void test_msg_escaping_stays_one_line(void **state)
{
    capture c;
    char **lines;
    (void)state;

    capture_begin(&c);
    m2m_log_msg(M2M_LOG_INFO, "unit_esc", "%s", "quote\" back\\slash\nnew line\r\ttab \x01 end");
    capture_end(&c);
    assert_int_equal(capture_lines(&c, &lines), 1);
    json_t *j = parse_checked(lines[0], "info", "unit_esc");
    assert_string_equal(str_member(j, "msg"), "quote\" back\\slash\nnew line\r\ttab \x01 end");
    json_decref(j);
    free(lines);
    capture_free(&c);
}

static int evaluated;
static int side_effect(void)
{
    return ++evaluated;
}

static void test_level_filtering(void **state)
{
    capture c;
    char **lines;
    (void)state;

    m2m_log_init(SERVICE, M2M_LOG_INFO);
    assert_false(m2m_log_enabled(M2M_LOG_DEBUG));
    assert_true(m2m_log_enabled(M2M_LOG_INFO));
    assert_true(m2m_log_enabled(M2M_LOG_WARN));
    assert_true(m2m_log_enabled(M2M_LOG_ERROR));

    evaluated = 0;
    capture_begin(&c);
    M2M_DEBUG("unit_debug_macro", "%d", side_effect());
    m2m_log_msg(M2M_LOG_DEBUG, "unit_debug_msg", "x");
    /* a suppressed event still consumes its fields (ASan checks the leak) */
    m2m_log_event(M2M_LOG_DEBUG, "unit_debug_event", json_pack("{s:s}", "k", "v"));
    M2M_INFO("unit_info", "%d", side_effect());
    M2M_WARN("unit_warn", "w");
    M2M_ERROR("unit_error", "e");
    capture_end(&c);
    /* the level is checked before the arguments are even evaluated */
    assert_int_equal(evaluated, 1);

    assert_int_equal(capture_lines(&c, &lines), 3);
    json_t *j = parse_checked(lines[0], "info", "unit_info");
    assert_string_equal(str_member(j, "msg"), "1");
    json_decref(j);
    json_decref(parse_checked(lines[1], "warn", "unit_warn"));
    json_decref(parse_checked(lines[2], "error", "unit_error"));
    free(lines);
    capture_free(&c);

    /* error only */
    m2m_log_init(SERVICE, M2M_LOG_ERROR);
    assert_false(m2m_log_enabled(M2M_LOG_WARN));
    capture_begin(&c);
    M2M_INFO("unit_info", "i");
    M2M_WARN("unit_warn", "w");
    m2m_log_event(M2M_LOG_WARN, "unit_warn_event", NULL);
    M2M_ERROR("unit_error", "e");
    capture_end(&c);
    assert_int_equal(capture_lines(&c, &lines), 1);
    json_decref(parse_checked(lines[0], "error", "unit_error"));
    free(lines);
    capture_free(&c);

    /* debug: everything */
    m2m_log_init(SERVICE, M2M_LOG_DEBUG);
    assert_true(m2m_log_enabled(M2M_LOG_DEBUG));
    capture_begin(&c);
    M2M_DEBUG("unit_debug", "d");
    capture_end(&c);
    assert_int_equal(capture_lines(&c, &lines), 1);
    json_decref(parse_checked(lines[0], "debug", "unit_debug"));
    free(lines);
    capture_free(&c);
    m2m_log_init(SERVICE, M2M_LOG_INFO);
}

static void test_request_id(void **state)
{
    capture c;
    char **lines;
    (void)state;

    capture_begin(&c);
    M2M_INFO("unit_before", "b");
    m2m_log_set_request_id("rid-123_abc.x");
    M2M_INFO("unit_during", "d1");
    m2m_log_event(M2M_LOG_WARN, "unit_during_event", json_pack("{s:s}", "k", "v"));
    m2m_log_set_request_id(NULL);
    M2M_INFO("unit_after", "a");
    m2m_log_set_request_id("rid-2");
    m2m_log_set_request_id(""); /* empty clears too */
    M2M_INFO("unit_after_empty", "a");
    capture_end(&c);

    assert_int_equal(capture_lines(&c, &lines), 5);
    json_t *j = parse_checked(lines[0], "info", "unit_before");
    assert_null(json_object_get(j, "request_id"));
    json_decref(j);
    j = parse_checked(lines[1], "info", "unit_during");
    assert_string_equal(str_member(j, "request_id"), "rid-123_abc.x");
    json_decref(j);
    j = parse_checked(lines[2], "warn", "unit_during_event");
    assert_string_equal(str_member(j, "request_id"), "rid-123_abc.x");
    assert_string_equal(str_member(j, "k"), "v");
    json_decref(j);
    j = parse_checked(lines[3], "info", "unit_after");
    assert_null(json_object_get(j, "request_id"));
    json_decref(j);
    j = parse_checked(lines[4], "info", "unit_after_empty");
    assert_null(json_object_get(j, "request_id"));
    json_decref(j);
    free(lines);
    capture_free(&c);
}

static void *log_without_rid(void *arg)
{
    (void)arg;
    M2M_INFO("unit_other_thread", "o");
    return NULL;
}

/* The request id belongs to the thread that set it. */
static void test_request_id_is_per_thread(void **state)
{
    capture c;
    char **lines;
    pthread_t th;
    (void)state;

    capture_begin(&c);
    m2m_log_set_request_id("main-thread-rid");
    assert_int_equal(pthread_create(&th, NULL, log_without_rid, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    M2M_INFO("unit_main_thread", "m");
    m2m_log_set_request_id(NULL);
    capture_end(&c);

    assert_int_equal(capture_lines(&c, &lines), 2);
    json_t *j = parse_checked(lines[0], "info", "unit_other_thread");
    assert_null(json_object_get(j, "request_id"));
    json_decref(j);
    j = parse_checked(lines[1], "info", "unit_main_thread");
    assert_string_equal(str_member(j, "request_id"), "main-thread-rid");
    json_decref(j);
    free(lines);
    capture_free(&c);
}

static void test_invalid_utf8_msg(void **state)
{
    capture c;
    char **lines;
    static char big[9000];
    (void)state;

    /* 8190 ASCII bytes then a 2-byte character: the 8 KiB message buffer
     * cuts it in half. */
    memset(big, 'a', 8190);
    memcpy(big + 8190, "\xc3\xa9tail", 6);
    big[8196] = '\0';

    capture_begin(&c);
    M2M_WARN("unit_bad_utf8", "peer sent %s here", "bad \xff\xfe bytes");
    M2M_WARN("unit_mixed", "%s", "caf\xc3\xa9 \xc3 \xe2\x82");
    M2M_WARN("unit_cut", "%s", big);
    M2M_WARN("unit_overlong", "%s", "\xc0\xaf slash");
    capture_end(&c);

    assert_int_equal(capture_lines(&c, &lines), 4);
    json_t *j = parse_checked(lines[0], "warn", "unit_bad_utf8");
    const char *msg = str_member(j, "msg");
    assert_non_null(msg);
    assert_non_null(strstr(msg, "peer sent bad "));
    assert_non_null(strstr(msg, " bytes here"));
    json_decref(j);

    j = parse_checked(lines[1], "warn", "unit_mixed");
    msg = str_member(j, "msg");
    assert_non_null(msg);
    assert_true(strncmp(msg, "caf", 3) == 0);
    json_decref(j);

    j = parse_checked(lines[2], "warn", "unit_cut");
    msg = str_member(j, "msg");
    assert_non_null(msg);
    assert_true(strlen(msg) >= 8190);
    assert_true(strncmp(msg, big, 8190) == 0);
    json_decref(j);

    j = parse_checked(lines[3], "warn", "unit_overlong");
    msg = str_member(j, "msg");
    assert_non_null(msg);
    assert_non_null(strstr(msg, " slash"));
    json_decref(j);
    free(lines);
    capture_free(&c);
}

static void test_fields_merge_without_override(void **state)
{
    capture c;
    char **lines;
    (void)state;

    capture_begin(&c);
    m2m_log_set_request_id("the-real-rid");
    m2m_log_event(M2M_LOG_INFO, "unit_fields",
                  json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:[i,i]}", "ts", "forged-ts",
                            "level", "error", "service", "forged-svc", "event", "forged-event",
                            "request_id", "forged-rid", "client_id", "c1", "n", 3, "ok", 1, "list",
                            1, 2));
    m2m_log_set_request_id(NULL);
    /* without a request id set, a field may carry one */
    m2m_log_event(M2M_LOG_INFO, "unit_fields2",
                  json_pack("{s:s, s:s}", "request_id", "from-field", "msg", "from field"));
    capture_end(&c);

    assert_int_equal(capture_lines(&c, &lines), 2);
    json_t *j = parse_checked(lines[0], "info", "unit_fields");
    assert_string_not_equal(str_member(j, "ts"), "forged-ts");
    assert_string_equal(str_member(j, "request_id"), "the-real-rid");
    assert_string_equal(str_member(j, "client_id"), "c1");
    assert_int_equal(json_integer_value(json_object_get(j, "n")), 3);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(json_array_size(json_object_get(j, "list")), 2);
    assert_int_equal(json_object_size(j), 9);
    json_decref(j);

    j = parse_checked(lines[1], "info", "unit_fields2");
    assert_string_equal(str_member(j, "request_id"), "from-field");
    assert_string_equal(str_member(j, "msg"), "from field");
    json_decref(j);
    free(lines);
    capture_free(&c);
}

/* ---- concurrency -------------------------------------------------------- */

#define NTHREADS   4
#define PER_THREAD 400

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    char rid[32];
    char pad[3001];

    snprintf(rid, sizeof(rid), "thread-%d", id);
    m2m_log_set_request_id(rid);
    for (int i = 0; i < PER_THREAD; i++) {
        /* lengths from 1 to 3000 bytes so that lines straddle stdio buffers */
        size_t n = 1 + (size_t)((i * 997 + id * 131) % 3000);
        memset(pad, 'a' + id, n);
        pad[n] = '\0';
        M2M_INFO("unit_concurrent", "%d %d %s", id, i, pad);
    }
    m2m_log_set_request_id(NULL);
    return NULL;
}

static void test_concurrent_whole_lines(void **state)
{
    capture c;
    char **lines;
    pthread_t th[NTHREADS];
    int seen[NTHREADS][PER_THREAD];
    (void)state;

    memset(seen, 0, sizeof(seen));
    capture_begin(&c);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    capture_end(&c);

    size_t n = capture_lines(&c, &lines);
    assert_int_equal(n, NTHREADS * PER_THREAD);
    for (size_t k = 0; k < n; k++) {
        json_t *j = parse_checked(lines[k], "info", "unit_concurrent");
        int id = -1, i = -1, off = 0;
        const char *msg = str_member(j, "msg");
        assert_non_null(msg);
        assert_int_equal(sscanf(msg, "%d %d %n", &id, &i, &off), 2);
        assert_in_range(id, 0, NTHREADS - 1);
        assert_in_range(i, 0, PER_THREAD - 1);
        /* the padding is whole and only this thread's letter */
        size_t want = 1 + (size_t)((i * 997 + id * 131) % 3000);
        assert_int_equal(strlen(msg + off), want);
        assert_int_equal(strspn(msg + off, (char[]){(char)('a' + id), '\0'}), want);
        char rid[32];
        snprintf(rid, sizeof(rid), "thread-%d", id);
        assert_string_equal(str_member(j, "request_id"), rid);
        seen[id][i]++;
        json_decref(j);
    }
    for (int id = 0; id < NTHREADS; id++)
        for (int i = 0; i < PER_THREAD; i++)
            assert_int_equal(seen[id][i], 1);
    free(lines);
    capture_free(&c);
}

/* ---- stream ------------------------------------------------------------- */

/* NULL restores stdout. */
static void test_stream_null_is_stdout(void **state)
{
    char path[] = "/tmp/test_log_stdout.XXXXXX";
    int fd = mkstemp(path);
    (void)state;

    assert_true(fd >= 0);
    unlink(path);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);

    capture c;
    capture_begin(&c);
    M2M_INFO("unit_to_capture", "c");
    capture_end(&c); /* sets the stream back to NULL */
    M2M_INFO("unit_to_stdout", "s");
    fflush(stdout);

    assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    close(saved);

    char buf[1024] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    assert_true(n > 0);
    buf[n] = '\0';
    capture out = {.data = buf, .len = (size_t)n};
    char **lines;
    assert_int_equal(capture_lines(&out, &lines), 1);
    json_decref(parse_checked(lines[0], "info", "unit_to_stdout"));
    free(lines);

    char **cl;
    assert_int_equal(capture_lines(&c, &cl), 1);
    json_decref(parse_checked(cl[0], "info", "unit_to_capture"));
    free(cl);
    capture_free(&c);
}

static void test_level_parse(void **state)
{
    (void)state;
    assert_int_equal(m2m_log_level_parse("debug"), M2M_LOG_DEBUG);
    assert_int_equal(m2m_log_level_parse("info"), M2M_LOG_INFO);
    assert_int_equal(m2m_log_level_parse("warn"), M2M_LOG_WARN);
    assert_int_equal(m2m_log_level_parse("error"), M2M_LOG_ERROR);
    assert_int_equal(m2m_log_level_parse("INFO"), M2M_LOG_INFO);
    assert_int_equal(m2m_log_level_parse("Error"), M2M_LOG_ERROR);
    assert_int_equal(m2m_log_level_parse(NULL), -1);
    assert_int_equal(m2m_log_level_parse(""), -1);
    assert_int_equal(m2m_log_level_parse("trace"), -1);
    assert_int_equal(m2m_log_level_parse("inf"), -1);
    assert_int_equal(m2m_log_level_parse("info "), -1);
    assert_int_equal(m2m_log_level_parse(" info"), -1);
    assert_int_equal(m2m_log_level_parse("debugx"), -1);
    assert_int_equal(m2m_log_level_parse("3"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_line_shape, setup),
        cmocka_unit_test_setup(test_msg_escaping_stays_one_line, setup),
        cmocka_unit_test_setup(test_level_filtering, setup),
        cmocka_unit_test_setup(test_request_id, setup),
        cmocka_unit_test_setup(test_request_id_is_per_thread, setup),
        cmocka_unit_test_setup(test_invalid_utf8_msg, setup),
        cmocka_unit_test_setup(test_fields_merge_without_override, setup),
        cmocka_unit_test_setup(test_concurrent_whole_lines, setup),
        cmocka_unit_test_setup(test_stream_null_is_stdout, setup),
        cmocka_unit_test(test_level_parse),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed) {
        /* A failed assertion longjmps past the test's own cleanup: skip the
         * leak check (LeakSanitizer runs from exit()) so that the report
         * shows the failures rather than the leaks they cause. */
        fflush(stdout);
        fflush(stderr);
        _exit(1);
    }
    return 0;
}
