/*
 * test_metrics.c - the metrics registry (common/base/metrics.c): the exact exposition text
 * (HELP and TYPE lines, the constant label first, label values and help escaped), a
 * histogram's cumulative buckets with _sum and _count, registration rules (same shape
 * finds the family, another shape or a bad name is refused), the bound on label sets, a
 * collector run before each render, thousands of label sets when the bound is raised, and
 * counts that add up under four threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void test_counter_and_gauge_text(void **state)
{
    static const char *const labels[] = {"service", "env", NULL};
    dq_metrics *m = dq_metrics_new("worker", "executor");
    dq_metric *c = dq_metrics_counter(m, "deployq_things_total", "Things done.", labels);
    dq_metric *g = dq_metrics_gauge(m, "deployq_level", "A level.", NULL);
    const char *api[] = {"api", "production"}, *web[] = {"web", "staging"};
    char *text;
    size_t len = 0;

    (void)state;
    assert_non_null(c);
    assert_non_null(g);
    dq_metric_add(c, api, 1);
    dq_metric_add(c, api, 2);
    dq_metric_add(c, web, 1);
    dq_metric_add(c, web, -5); /* a counter never goes down */
    dq_metric_set(g, NULL, 0.25);
    text = dq_metrics_render(m, &len);
    assert_non_null(text);
    assert_string_equal(text, "# HELP deployq_things_total Things done.\n"
                              "# TYPE deployq_things_total counter\n"
                              "deployq_things_total{worker=\"executor\",service=\"api\",env=\"production\"} 3\n"
                              "deployq_things_total{worker=\"executor\",service=\"web\",env=\"staging\"} 1\n"
                              "# HELP deployq_level A level.\n"
                              "# TYPE deployq_level gauge\n"
                              "deployq_level{worker=\"executor\"} 0.25\n");
    assert_int_equal(len, strlen(text));
    assert_true(dq_metric_value(c, api) == 3);
    assert_true(dq_metric_value(c, (const char *[]){"nope", "x"}) == 0);
    free(text);
    dq_metrics_free(m);
}

static void test_escaping(void **state)
{
    static const char *const labels[] = {"service", NULL};
    dq_metrics *m = dq_metrics_new(NULL, NULL);
    dq_metric *c = dq_metrics_counter(m, "x_total", "Help with \\ and\na newline.", labels);
    const char *v[] = {"a\"b\\c\nd"};
    char *text;

    (void)state;
    dq_metric_add(c, v, 1);
    text = dq_metrics_render(m, NULL);
    assert_string_equal(text, "# HELP x_total Help with \\\\ and\\na newline.\n"
                              "# TYPE x_total counter\n"
                              "x_total{service=\"a\\\"b\\\\c\\nd\"} 1\n");
    free(text);
    dq_metrics_free(m);
}

static void test_histogram(void **state)
{
    static const char *const labels[] = {"service", NULL};
    static const double bounds[] = {0.5, 1, 2};
    dq_metrics *m = dq_metrics_new("worker", "rollback");
    dq_metric *h = dq_metrics_histogram(m, "t_seconds", "T.", labels, bounds, 3);
    const char *v[] = {"api"};
    char *text;

    (void)state;
    dq_metric_observe(h, v, 0.5); /* le is inclusive */
    dq_metric_observe(h, v, 0.7);
    dq_metric_observe(h, v, 1.5);
    dq_metric_observe(h, v, 9);
    text = dq_metrics_render(m, NULL);
    assert_string_equal(text, "# HELP t_seconds T.\n"
                              "# TYPE t_seconds histogram\n"
                              "t_seconds_bucket{worker=\"rollback\",service=\"api\",le=\"0.5\"} 1\n"
                              "t_seconds_bucket{worker=\"rollback\",service=\"api\",le=\"1\"} 2\n"
                              "t_seconds_bucket{worker=\"rollback\",service=\"api\",le=\"2\"} 3\n"
                              "t_seconds_bucket{worker=\"rollback\",service=\"api\",le=\"+Inf\"} 4\n"
                              "t_seconds_sum{worker=\"rollback\",service=\"api\"} 11.7\n"
                              "t_seconds_count{worker=\"rollback\",service=\"api\"} 4\n");
    free(text);
    assert_true(dq_metric_value(h, v) == 4);
    dq_metrics_free(m);
}

/* The MTTR buckets resolve seconds: a 3 s rollback lands in le="3", not in a 60 s bucket. */
static void test_mttr_buckets(void **state)
{
    static const char *const labels[] = {"service", "env", NULL};
    dq_metrics *m = dq_metrics_new(NULL, NULL);
    dq_metric *h = dq_metrics_histogram(m, "deployq_mttr_seconds", "MTTR.", labels,
                                        dq_mttr_buckets, DQ_MTTR_BUCKETS);
    const char *v[] = {"api", "production"};
    char *text;

    (void)state;
    assert_non_null(h);
    dq_metric_observe(h, v, 2.6);
    text = dq_metrics_render(m, NULL);
    assert_non_null(strstr(text, "deployq_mttr_seconds_bucket{service=\"api\",env=\"production\",le=\"2\"} 0\n"));
    assert_non_null(strstr(text, "deployq_mttr_seconds_bucket{service=\"api\",env=\"production\",le=\"3\"} 1\n"));
    assert_non_null(strstr(text, "le=\"0.5\""));
    assert_non_null(strstr(text, "le=\"1800\""));
    free(text);
    dq_metrics_free(m);
}

static void test_registration(void **state)
{
    static const char *const ab[] = {"a", "b", NULL}, *const ba[] = {"b", "a", NULL};
    static const char *const bad[] = {"a-b", NULL}, *const worker[] = {"worker", NULL};
    static const double up[] = {1, 2}, down[] = {2, 1};
    dq_metrics *m = dq_metrics_new("worker", "w");
    dq_metric *c = dq_metrics_counter(m, "c_total", "C.", ab);

    (void)state;
    assert_non_null(c);
    assert_ptr_equal(dq_metrics_counter(m, "c_total", "other help", ab), c);
    assert_null(dq_metrics_counter(m, "c_total", "C.", ba));      /* other labels */
    assert_null(dq_metrics_gauge(m, "c_total", "C.", ab));        /* other type */
    assert_null(dq_metrics_counter(m, "bad-name", "x", NULL));    /* not a metric name */
    assert_null(dq_metrics_counter(m, "ok_total", "x", bad));     /* not a label name */
    assert_null(dq_metrics_counter(m, "ok_total", "x", worker));  /* the constant label */
    assert_null(dq_metrics_histogram(m, "h", "x", NULL, down, 2)); /* not increasing */
    assert_non_null(dq_metrics_histogram(m, "h", "x", NULL, up, 2));
    assert_null(dq_metrics_counter(NULL, "x_total", "x", NULL));
    /* a NULL family is a no-op everywhere */
    dq_metric_add(NULL, NULL, 1);
    dq_metric_set(NULL, NULL, 1);
    dq_metric_observe(NULL, NULL, 1);
    dq_metric_clear(NULL);
    dq_metrics_free(m);
}

/* Past DQ_METRICS_MAX_SERIES label sets, new ones go to the "_other" series. */
static void test_series_bound(void **state)
{
    static const char *const labels[] = {"service", "env", NULL};
    dq_metrics *m = dq_metrics_new(NULL, NULL);
    dq_metric *c = dq_metrics_counter(m, "c_total", "C.", labels);
    char name[32];
    char *text;

    (void)state;
    for (int i = 0; i < DQ_METRICS_MAX_SERIES + 50; i++) {
        const char *v[] = {name, "prod"};

        snprintf(name, sizeof name, "svc%d", i);
        dq_metric_add(c, v, 1);
    }
    assert_true(dq_metric_value(c, (const char *[]){"svc0", "prod"}) == 1);
    assert_true(dq_metric_value(c, (const char *[]){DQ_METRICS_OTHER, DQ_METRICS_OTHER}) == 50);
    text = dq_metrics_render(m, NULL);
    assert_non_null(strstr(text, "c_total{service=\"_other\",env=\"_other\"} 50\n"));
    assert_null(strstr(text, "svc1000\""));
    free(text);
    dq_metrics_free(m);
}

/* Thousands of label sets (the registry's per-target figures), past the default bound when
 * raised: each keeps its own count through the table's growth, and a clear empties it. */
static void test_many_series(void **state)
{
    static const char *const labels[] = {"service", NULL};
    dq_metrics *m = dq_metrics_new(NULL, NULL);
    dq_metric *c;
    char name[32];

    (void)state;
    dq_metrics_set_max_series(m, 100000);
    c = dq_metrics_counter(m, "c_total", "C.", labels);
    for (int round = 1; round <= 2; round++)
        for (int i = 0; i < 5000; i++) {
            const char *v[] = {name};

            snprintf(name, sizeof name, "svc%d", i);
            dq_metric_add(c, v, i);
        }
    for (int i = 0; i < 5000; i += 499) {
        const char *v[] = {name};

        snprintf(name, sizeof name, "svc%d", i);
        assert_true(dq_metric_value(c, v) == 2.0 * i);
    }
    assert_true(dq_metric_value(c, (const char *[]){DQ_METRICS_OTHER}) == 0);
    dq_metric_clear(c);
    assert_true(dq_metric_value(c, (const char *[]){"svc10"}) == 0);
    dq_metric_add(c, (const char *[]){"svc10"}, 3);
    assert_true(dq_metric_value(c, (const char *[]){"svc10"}) == 3);
    dq_metrics_free(m);
}

static void collect(void *ctx, dq_metrics *m)
{
    int *calls = ctx;
    dq_metric *g = dq_metrics_gauge(m, "calls", "Collector calls.", NULL);

    (*calls)++;
    dq_metric_set(g, NULL, *calls);
}

static void test_collector(void **state)
{
    dq_metrics *m = dq_metrics_new(NULL, NULL);
    int calls = 0;
    char *text;

    (void)state;
    assert_int_equal(dq_metrics_on_collect(m, collect, &calls), 0);
    free(dq_metrics_render(m, NULL));
    text = dq_metrics_render(m, NULL);
    assert_string_equal(text, "# HELP calls Collector calls.\n# TYPE calls gauge\ncalls 2\n");
    free(text);
    dq_metrics_off_collect(m, collect, &calls);
    text = dq_metrics_render(m, NULL);
    assert_string_equal(text, "# HELP calls Collector calls.\n# TYPE calls gauge\ncalls 2\n");
    free(text);
    dq_metrics_free(m);
}

#define THREADS 4
#define BUMPS 20000

typedef struct bumper {
    dq_metrics *m;
    int index;
} bumper;

static void *bump(void *arg)
{
    static const char *const labels[] = {"service", NULL};
    bumper *b = arg;
    dq_metric *c = dq_metrics_counter(b->m, "n_total", "N.", labels);
    dq_metric *h = dq_metrics_histogram(b->m, "d_seconds", "D.", labels, dq_mttr_buckets,
                                        DQ_MTTR_BUCKETS);
    const char *shared[] = {"shared"}, *own[] = {b->index % 2 ? "odd" : "even"};

    for (int i = 0; i < BUMPS; i++) {
        dq_metric_add(c, shared, 1);
        dq_metric_add(c, own, 1);
        dq_metric_observe(h, shared, 1);
        if (i % 5000 == 0)
            free(dq_metrics_render(b->m, NULL)); /* renders while others bump */
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    dq_metrics *m = dq_metrics_new("worker", "t");
    pthread_t t[THREADS];
    bumper b[THREADS];
    static const char *const labels[] = {"service", NULL};
    char *text;

    (void)state;
    for (int i = 0; i < THREADS; i++) {
        b[i] = (bumper){m, i};
        assert_int_equal(pthread_create(&t[i], NULL, bump, &b[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    {
        dq_metric *c = dq_metrics_counter(m, "n_total", "N.", labels);
        dq_metric *h = dq_metrics_histogram(m, "d_seconds", "D.", labels, dq_mttr_buckets,
                                            DQ_MTTR_BUCKETS);

        assert_true(dq_metric_value(c, (const char *[]){"shared"}) == THREADS * BUMPS);
        assert_true(dq_metric_value(c, (const char *[]){"odd"}) == THREADS / 2 * BUMPS);
        assert_true(dq_metric_value(h, (const char *[]){"shared"}) == THREADS * BUMPS);
    }
    text = dq_metrics_render(m, NULL);
    assert_non_null(strstr(text, "d_seconds_sum{worker=\"t\",service=\"shared\"} 80000\n"));
    free(text);
    dq_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge_text),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_mttr_buckets),
        cmocka_unit_test(test_registration),
        cmocka_unit_test(test_series_bound),
        cmocka_unit_test(test_many_series),
        cmocka_unit_test(test_collector),
        cmocka_unit_test(test_concurrency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
