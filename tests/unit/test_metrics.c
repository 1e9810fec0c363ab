/* Prometheus metrics: route registration, per-status counters with "other",
 * cumulative latency histograms, named counters, limits, and a rendering that
 * parses as the Prometheus text format line by line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <cmocka.h>

#include "m2m/metrics.h"

#define RENDER_MAX (1u << 20)

/* ---- rendering helpers ------------------------------------------------ */

static char *render(m2m_metrics *m)
{
    m2m_buf b;
    m2m_buf_init(&b, RENDER_MAX);
    assert_int_equal(m2m_metrics_render(m, &b), M2M_OK);
    assert_non_null(b.data);
    assert_int_equal(strlen(b.data), b.len);
    return m2m_buf_steal(&b);
}

/* Value of the sample whose name+labels is exactly `series`; -1 if absent.
 * Fails if the series appears twice. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    double v = -1;
    int found = 0;

    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        if (p[0] != '#' && (size_t)(nl - p) > n && strncmp(p, series, n) == 0 && p[n] == ' ') {
            char *end;
            v = strtod(p + n + 1, &end);
            assert_ptr_equal(end, nl);
            found++;
        }
        p = nl + 1;
    }
    assert_true(found <= 1);
    return v;
}

static int count_lines_containing(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        size_t len = (size_t)(nl - p);
        char line[1024];
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        if (strstr(line, needle))
            n++;
        p = nl + 1;
    }
    return n;
}

/* Prometheus text format 0.0.4, checked line by line: HELP/TYPE comments and
 * samples `name{label="v",...} value`; every sample belongs to a family whose
 * TYPE came before it; a family has one TYPE line. Returns the sample count. */
static int check_prometheus(const char *text)
{
    regex_t help, type, samp;
    char families[64][128];
    char ftypes[64][16];
    int nfam = 0, nsamples = 0;

    assert_int_equal(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* [^\n]*$", REG_EXTENDED), 0);
    assert_int_equal(regcomp(&type,
                             "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) "
                             "(counter|gauge|histogram|summary|untyped)$",
                             REG_EXTENDED),
                     0);
    assert_int_equal(regcomp(&samp,
                             "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
                             "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\.)*\""
                             "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\.)*\")*\\})? "
                             "([-+]?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|[-+]Inf|NaN)$",
                             REG_EXTENDED),
                     0);
    assert_true(*text == '\0' || text[strlen(text) - 1] == '\n');
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        char line[1024];
        regmatch_t mt[3];
        size_t len = (size_t)(nl - p);

        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            if (regexec(&help, line, 0, NULL, 0) != 0)
                fail_msg("bad HELP line: %s", line);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            if (regexec(&type, line, 3, mt, 0) != 0)
                fail_msg("bad TYPE line: %s", line);
            assert_true(nfam < 64);
            snprintf(families[nfam], sizeof(families[nfam]), "%.*s",
                     (int)(mt[1].rm_eo - mt[1].rm_so), line + mt[1].rm_so);
            snprintf(ftypes[nfam], sizeof(ftypes[nfam]), "%.*s", (int)(mt[2].rm_eo - mt[2].rm_so),
                     line + mt[2].rm_so);
            for (int i = 0; i < nfam; i++)
                if (strcmp(families[i], families[nfam]) == 0)
                    fail_msg("metric family %s has two TYPE lines", families[i]);
            nfam++;
        } else {
            if (regexec(&samp, line, 2, mt, 0) != 0)
                fail_msg("bad sample line: '%s'", line);
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)(mt[1].rm_eo - mt[1].rm_so),
                     line + mt[1].rm_so);
            int fam = -1;
            for (int i = 0; i < nfam; i++) {
                size_t fl = strlen(families[i]);
                if (strcmp(name, families[i]) == 0)
                    fam = i;
                else if (strcmp(ftypes[i], "histogram") == 0 &&
                         strncmp(name, families[i], fl) == 0 &&
                         (strcmp(name + fl, "_bucket") == 0 || strcmp(name + fl, "_sum") == 0 ||
                          strcmp(name + fl, "_count") == 0))
                    fam = i;
            }
            if (fam < 0)
                fail_msg("sample before its TYPE line: %s", line);
            nsamples++;
        }
    }
    regfree(&help);
    regfree(&type);
    regfree(&samp);
    return nsamples;
}

/* ---- tests -------------------------------------------------------------- */

static void test_route_registration_idempotent(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    assert_non_null(m);
    char copy[] = "/a";

    assert_int_equal(m2m_metrics_route(m, "/a"), 0);
    assert_int_equal(m2m_metrics_route(m, "/b"), 1);
    assert_int_equal(m2m_metrics_route(m, "/a"), 0);
    assert_int_equal(m2m_metrics_route(m, copy), 0); /* by content, not pointer */
    assert_int_equal(m2m_metrics_route(m, "/b"), 1);
    assert_int_equal(m2m_metrics_route(m, "/c"), 2);

    /* observing /a twice through both indices lands in one series */
    m2m_metrics_observe(m, m2m_metrics_route(m, "/a"), 200, 0.001);
    m2m_metrics_observe(m, 0, 200, 0.001);
    char *t = render(m);
    assert_true(sample(t, "unit_http_requests_total{route=\"/a\",status=\"200\"}") == 2);
    assert_int_equal(count_lines_containing(t, "route=\"/a\",status="), 1);
    free(t);
    m2m_metrics_free(m);
}

static void test_route_limit(void **state)
{
    static char labels[M2M_METRICS_MAX_ROUTES + 1][16];
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    assert_non_null(m);

    for (int i = 0; i <= M2M_METRICS_MAX_ROUTES; i++)
        snprintf(labels[i], sizeof(labels[i]), "/r%d", i);
    for (int i = 0; i < M2M_METRICS_MAX_ROUTES; i++)
        assert_int_equal(m2m_metrics_route(m, labels[i]), i);
    assert_int_equal(m2m_metrics_route(m, labels[M2M_METRICS_MAX_ROUTES]), -1);
    assert_int_equal(m2m_metrics_route(m, "/another"), -1);
    /* known routes are still found when full */
    assert_int_equal(m2m_metrics_route(m, "/r0"), 0);
    assert_int_equal(m2m_metrics_route(m, "/r63"), 63);

    /* observing the refused index is a no-op */
    m2m_metrics_observe(m, -1, 200, 0.1);
    m2m_metrics_observe(m, 63, 200, 0.1);
    char *t = render(m);
    assert_true(sample(t, "unit_http_requests_total{route=\"/r63\",status=\"200\"}") == 1);
    assert_int_equal(count_lines_containing(t, "/r64"), 0);
    check_prometheus(t);
    free(t);
    m2m_metrics_free(m);
}

static void test_status_counters(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("auth");
    int r = m2m_metrics_route(m, "/oauth2/token");
    int o = m2m_metrics_route(m, "/other");
    static const int tracked[] = {200, 201, 204, 400, 401, 403, 404, 405, 409,
                                  413, 415, 429, 431, 500, 502, 503, 504};

    for (int i = 0; i < 3; i++)
        m2m_metrics_observe(m, r, 200, 0.001);
    m2m_metrics_observe(m, r, 401, 0.001);
    m2m_metrics_observe(m, r, 503, 0.001);
    /* untracked statuses all land in "other" */
    m2m_metrics_observe(m, r, 418, 0.001);
    m2m_metrics_observe(m, r, 499, 0.001);
    m2m_metrics_observe(m, r, 302, 0.001);
    m2m_metrics_observe(m, r, 0, 0.001);
    for (size_t i = 0; i < sizeof(tracked) / sizeof(tracked[0]); i++)
        m2m_metrics_observe(m, o, tracked[i], 0.001);

    char *t = render(m);
    assert_true(sample(t, "auth_http_requests_total{route=\"/oauth2/token\",status=\"200\"}") == 3);
    assert_true(sample(t, "auth_http_requests_total{route=\"/oauth2/token\",status=\"401\"}") == 1);
    assert_true(sample(t, "auth_http_requests_total{route=\"/oauth2/token\",status=\"503\"}") == 1);
    assert_true(sample(t, "auth_http_requests_total{route=\"/oauth2/token\",status=\"other\"}") ==
                4);
    /* statuses never seen get no line */
    assert_true(sample(t, "auth_http_requests_total{route=\"/oauth2/token\",status=\"500\"}") ==
                -1);
    assert_int_equal(count_lines_containing(t, "auth_http_requests_total{route=\"/oauth2/token\""),
                     4);
    for (size_t i = 0; i < sizeof(tracked) / sizeof(tracked[0]); i++) {
        char series[128];
        snprintf(series, sizeof(series), "auth_http_requests_total{route=\"/other\",status=\"%d\"}",
                 tracked[i]);
        assert_true(sample(t, series) == 1);
    }
    assert_true(sample(t, "auth_http_requests_total{route=\"/other\",status=\"other\"}") == -1);
    assert_true(sample(t, "auth_http_request_duration_seconds_count{route=\"/oauth2/token\"}") ==
                9);
    check_prometheus(t);
    free(t);
    m2m_metrics_free(m);
}

static void test_histogram(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    int r = m2m_metrics_route(m, "/h");
    int idle = m2m_metrics_route(m, "/idle");
    (void)idle;
    static const double obs[] = {0.0001, 0.0005, 0.003, 0.2, 1.0, 7.0, 0.05};
    static const char *const les[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                      "0.1",    "0.25",  "0.5",    "1",     "5",    "+Inf"};
    /* boundaries are inclusive (le = less or equal) */
    static const double want[] = {2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7};
    double sum = 0;

    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        m2m_metrics_observe(m, r, 200, obs[i]);
        sum += obs[i];
    }
    char *t = render(m);
    double prev = 0;
    for (size_t b = 0; b < sizeof(les) / sizeof(les[0]); b++) {
        char series[160];
        snprintf(series, sizeof(series),
                 "unit_http_request_duration_seconds_bucket{route=\"/h\",le=\"%s\"}", les[b]);
        double v = sample(t, series);
        if (v != want[b])
            fail_msg("%s = %g, want %g", series, v, want[b]);
        assert_true(v >= prev); /* cumulative */
        prev = v;
    }
    assert_int_equal(count_lines_containing(t, "_bucket{route=\"/h\""), 13);
    double count = sample(t, "unit_http_request_duration_seconds_count{route=\"/h\"}");
    assert_true(count == 7);
    assert_true(sample(t, "unit_http_request_duration_seconds_bucket{route=\"/h\",le=\"+Inf\"}") ==
                count);
    double s = sample(t, "unit_http_request_duration_seconds_sum{route=\"/h\"}");
    assert_true(fabs(s - sum) < 1e-5);
    /* a route without observations has no histogram lines */
    assert_int_equal(count_lines_containing(t, "route=\"/idle\""), 0);
    check_prometheus(t);
    free(t);
    m2m_metrics_free(m);
}

static void test_named_counters(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    m2m_counter *a = m2m_metrics_counter(m, "unit_tokens_issued_total", "Access tokens issued.");
    m2m_counter *b = m2m_metrics_counter(m, "unit_clients_registered_total", "Clients registered.");

    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    m2m_counter_add(a, 5);
    m2m_counter_add(a, 2);
    m2m_counter_add(NULL, 1); /* a missing counter is a no-op */
    char *t = render(m);
    assert_non_null(strstr(t, "# HELP unit_tokens_issued_total Access tokens issued.\n"
                              "# TYPE unit_tokens_issued_total counter\n"
                              "unit_tokens_issued_total 7\n"));
    assert_non_null(strstr(t, "# HELP unit_clients_registered_total Clients registered.\n"
                              "# TYPE unit_clients_registered_total counter\n"
                              "unit_clients_registered_total 0\n"));
    assert_int_equal(check_prometheus(t), 2);
    free(t);
    m2m_metrics_free(m);
}

static void test_counter_limit(void **state)
{
    static char names[M2M_METRICS_MAX_COUNTERS + 1][32];
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");

    for (int i = 0; i <= M2M_METRICS_MAX_COUNTERS; i++)
        snprintf(names[i], sizeof(names[i]), "unit_c%d_total", i);
    for (int i = 0; i < M2M_METRICS_MAX_COUNTERS; i++) {
        m2m_counter *c = m2m_metrics_counter(m, names[i], "A counter.");
        assert_non_null(c);
        m2m_counter_add(c, (uint64_t)i);
    }
    assert_null(m2m_metrics_counter(m, names[M2M_METRICS_MAX_COUNTERS], "One too many."));
    char *t = render(m);
    assert_true(sample(t, "unit_c31_total") == 31);
    assert_true(sample(t, "unit_c32_total") == -1);
    assert_int_equal(check_prometheus(t), M2M_METRICS_MAX_COUNTERS);
    free(t);
    m2m_metrics_free(m);
}

static void test_observe_ignores_bad_input(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    int r = m2m_metrics_route(m, "/x");

    m2m_metrics_observe(NULL, 0, 200, 0.1);
    m2m_metrics_observe(m, -1, 200, 0.1);
    m2m_metrics_observe(m, r + 1, 200, 0.1); /* not registered */
    m2m_metrics_observe(m, M2M_METRICS_MAX_ROUTES, 200, 0.1);
    m2m_metrics_observe(m, 1000000, 200, 0.1);
    char *t = render(m);
    /* only the headers of the two families */
    assert_int_equal(check_prometheus(t), 0);
    assert_int_equal(count_lines_containing(t, "route="), 0);
    assert_int_equal(count_lines_containing(t, "# TYPE unit_http_requests_total counter"), 1);
    assert_int_equal(
        count_lines_containing(t, "# TYPE unit_http_request_duration_seconds histogram"), 1);
    free(t);
    m2m_metrics_free(m);
}

/* Every failing append is reported: render into buffers too small by one
 * byte or more gives PAYLOAD_TOO_LARGE, the exact size works. */
static void test_render_cap(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    int r = m2m_metrics_route(m, "/r");
    m2m_metrics_observe(m, r, 200, 0.01);
    m2m_metrics_observe(m, r, 404, 0.01);
    m2m_counter_add(m2m_metrics_counter(m, "unit_things_total", "Things."), 3);

    char *full = render(m);
    size_t len = strlen(full);
    for (size_t cap = 0; cap < len; cap++) {
        m2m_buf b;
        m2m_buf_init(&b, cap);
        assert_int_equal(m2m_metrics_render(m, &b), M2M_ERR_PAYLOAD_TOO_LARGE);
        m2m_buf_free(&b);
    }
    m2m_buf b;
    m2m_buf_init(&b, len);
    assert_int_equal(m2m_metrics_render(m, &b), M2M_OK);
    assert_string_equal(b.data, full);
    m2m_buf_free(&b);
    free(full);
    m2m_metrics_free(m);
}

static void test_prometheus_format_full(void **state)
{
    static char labels[M2M_METRICS_MAX_ROUTES][40];
    (void)state;
    m2m_metrics *m = m2m_metrics_new("auth");

    for (int i = 0; i < M2M_METRICS_MAX_ROUTES; i++) {
        snprintf(labels[i], sizeof(labels[i]), "/api/v%d/*/things", i);
        int r = m2m_metrics_route(m, labels[i]);
        assert_int_equal(r, i);
        m2m_metrics_observe(m, r, 200 + i, 0.0001 * (i + 1));
        m2m_metrics_observe(m, r, 500, 3.0);
    }
    m2m_counter_add(m2m_metrics_counter(m, "auth_tokens_issued_total", "Tokens."), 1);
    char *t = render(m);
    /* per route: 2 status lines (200..263 are tracked only for 200/201/204),
     * 13 buckets + sum + count */
    int samples = check_prometheus(t);
    int status_lines = count_lines_containing(t, "auth_http_requests_total{");
    assert_int_equal(samples, status_lines + M2M_METRICS_MAX_ROUTES * 15 + 1);
    assert_true(sample(t, "auth_http_requests_total{route=\"/api/v0/*/things\",status=\"200\"}") ==
                1);
    assert_true(
        sample(t, "auth_http_requests_total{route=\"/api/v5/*/things\",status=\"other\"}") == 1);
    assert_true(sample(t, "auth_http_requests_total{route=\"/api/v5/*/things\",status=\"500\"}") ==
                1);
    free(t);
    m2m_metrics_free(m);
}

#define OBS_THREADS    4
#define OBS_PER_THREAD 20000

typedef struct {
    m2m_metrics *m;
    int route;
    m2m_counter *c;
} obs_arg;

static void *observe_many(void *p)
{
    obs_arg *a = p;
    for (int i = 0; i < OBS_PER_THREAD; i++) {
        m2m_metrics_observe(a->m, a->route, (i & 1) ? 200 : 404, 0.002);
        m2m_counter_add(a->c, 1);
    }
    return NULL;
}

static void test_concurrent_observe(void **state)
{
    (void)state;
    m2m_metrics *m = m2m_metrics_new("unit");
    obs_arg a = {m, m2m_metrics_route(m, "/c"), m2m_metrics_counter(m, "unit_n_total", "N.")};
    pthread_t th[OBS_THREADS];

    for (int i = 0; i < OBS_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, observe_many, &a), 0);
    for (int i = 0; i < OBS_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    char *t = render(m);
    const double total = OBS_THREADS * OBS_PER_THREAD;
    assert_true(sample(t, "unit_http_requests_total{route=\"/c\",status=\"200\"}") == total / 2);
    assert_true(sample(t, "unit_http_requests_total{route=\"/c\",status=\"404\"}") == total / 2);
    assert_true(sample(t, "unit_http_request_duration_seconds_count{route=\"/c\"}") == total);
    assert_true(
        sample(t, "unit_http_request_duration_seconds_bucket{route=\"/c\",le=\"0.0025\"}") ==
        total);
    assert_true(fabs(sample(t, "unit_http_request_duration_seconds_sum{route=\"/c\"}") -
                     total * 0.002) < 1e-3);
    assert_true(sample(t, "unit_n_total") == total);
    free(t);
    m2m_metrics_free(m);
}

static void test_free_null(void **state)
{
    (void)state;
    m2m_metrics_free(NULL);
    m2m_metrics *m = m2m_metrics_new("unit");
    assert_non_null(m);
    m2m_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_registration_idempotent),
        cmocka_unit_test(test_route_limit),
        cmocka_unit_test(test_status_counters),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_named_counters),
        cmocka_unit_test(test_counter_limit),
        cmocka_unit_test(test_observe_ignores_bad_input),
        cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_prometheus_format_full),
        cmocka_unit_test(test_concurrent_observe),
        cmocka_unit_test(test_free_null),
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
