/*
 * test_report.c - the report figures (common/domain/report.c) on a scripted ten-day history whose
 * every figure was worked out by hand (see the comments), with filters, percentiles and the
 * JSON/CSV renderings.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fold.h"
#include "report.h"
#include "util.h"

static int64_t next_offset;

static void put(dq_fold *f, const char *type, const char *dep, const char *svc,
                const char *env, const char *ver, const char *at, const char *data)
{
    dq_event *ev = dq_event_new(type, dep, svc, env, ver, "test@host/1");
    char *txt;

    assert_non_null(ev);
    assert_int_equal(dq_time_parse(at, &ev->at_ms), 0);
    ev->fence = 1;
    if (data) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data);
        assert_non_null(ev->data);
    }
    txt = dq_event_encode(ev);
    assert_non_null(txt);
    assert_int_equal(dq_fold_apply(f, 0, next_offset++, txt, strlen(txt)), DQ_FOLD_APPLIED);
    free(txt);
    dq_event_free(ev);
}

static void validated(dq_fold *f, const char *dep, const char *svc, const char *env,
                      const char *at, const char *commit_at)
{
    char data[512];

    snprintf(data, sizeof data,
             "{\"key_id\":\"ci\",\"issued_at\":\"%s\",\"strategy\":\"rolling\"%s%s%s,"
             "\"source\":{\"topic\":\"r\",\"partition\":0,\"offset\":0}}",
             at, commit_at ? ",\"commit_at\":\"" : "", commit_at ? commit_at : "",
             commit_at ? "\"" : "");
    put(f, DQ_EV_VALIDATED, dep, svc, env, "v", at, data);
}

#define D(n) "00000000-0000-4000-8000-00000000000" #n

/* The history (window 2026-01-01 .. 2026-01-11, 10 days):
 *   D1 api/staging     validated 01-01 10:00 (commit 09:00), succeeded 10:05
 *                      -> lead 65 min, time to deploy 5 min
 *   D2 api/production  validated 01-02 10:00 (commit 01-01 09:00), succeeded 10:10,
 *                      rollback requested 11:00 (first failure 10:50), restored 11:02
 *                      -> lead 25h10m, ttd 10 min, MTTR 12 min, escaped
 *   D3 api/staging     validated 01-03, failed               -> caught
 *   D4 api/production  rejected 01-04                        -> caught
 *   D5 web/production  validated 01-05 10:00 (no commit), succeeded 10:20, rollback
 *                      requested 11:05 (detected 11:00), succeeded at 11:30 without
 *                      restored_at -> ttd 20 min, MTTR 30 min, escaped
 *   D6 web/staging     validated 01-06 10:00 (commit 08:00), succeeded 10:02, rollback
 *                      requested, rollback failed -> lead 2h2m, ttd 2 min, caught
 *   D8 api/staging     validated 01-07, started, nothing more -> in progress
 *   D7 api/production  validated 01-12: outside the window
 */
static dq_fold *history(void)
{
    dq_fold *f = dq_fold_new();

    next_offset = 0;
    validated(f, D(1), "api", "staging", "2026-01-01T10:00:00Z", "2026-01-01T09:00:00Z");
    put(f, DQ_EV_SUCCEEDED, D(1), "api", "staging", "v", "2026-01-01T10:05:00Z", NULL);

    validated(f, D(2), "api", "production", "2026-01-02T10:00:00Z", "2026-01-01T09:00:00Z");
    put(f, DQ_EV_SUCCEEDED, D(2), "api", "production", "v", "2026-01-02T10:10:00Z", NULL);
    put(f, DQ_EV_ROLLBACK_REQUESTED, D(2), "api", "production", "v", "2026-01-02T11:00:00Z",
        "{\"reason\":\"5xx\",\"requested_by\":\"deployq-monitor\",\"evidence\":{"
        "\"probe\":\"http\",\"kind\":\"status\",\"first_failure_at\":\"2026-01-02T10:50:00Z\","
        "\"detected_at\":\"2026-01-02T10:55:00Z\"}}");
    put(f, DQ_EV_ROLLBACK_SUCCEEDED, D(2), "api", "production", "v", "2026-01-02T11:03:00Z",
        "{\"to_version\":\"u\",\"method\":\"redeploy\",\"restored_at\":\"2026-01-02T11:02:00Z\"}");

    validated(f, D(3), "api", "staging", "2026-01-03T10:00:00Z", NULL);
    put(f, DQ_EV_FAILED, D(3), "api", "staging", "v", "2026-01-03T10:03:00Z",
        "{\"reason\":\"build_failed\"}");

    put(f, DQ_EV_REJECTED, D(4), "api", "production", "v", "2026-01-04T10:00:00Z",
        "{\"reasons\":[{\"code\":\"promotion\",\"message\":\"not in staging\"}]}");

    validated(f, D(5), "web", "production", "2026-01-05T10:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(5), "web", "production", "v", "2026-01-05T10:20:00Z", NULL);
    put(f, DQ_EV_ROLLBACK_REQUESTED, D(5), "web", "production", "v", "2026-01-05T11:05:00Z",
        "{\"reason\":\"latency\",\"requested_by\":\"deployq-monitor\",\"evidence\":{"
        "\"probe\":\"http\",\"kind\":\"latency\",\"detected_at\":\"2026-01-05T11:00:00Z\"}}");
    put(f, DQ_EV_ROLLBACK_SUCCEEDED, D(5), "web", "production", "v", "2026-01-05T11:30:00Z",
        "{\"to_version\":\"u\",\"method\":\"redeploy\"}");

    validated(f, D(6), "web", "staging", "2026-01-06T10:00:00Z", "2026-01-06T08:00:00Z");
    put(f, DQ_EV_SUCCEEDED, D(6), "web", "staging", "v", "2026-01-06T10:02:00Z", NULL);
    put(f, DQ_EV_ROLLBACK_REQUESTED, D(6), "web", "staging", "v", "2026-01-06T10:30:00Z",
        "{\"reason\":\"manual\",\"requested_by\":\"alice\"}");
    put(f, DQ_EV_ROLLBACK_FAILED, D(6), "web", "staging", "v", "2026-01-06T10:40:00Z",
        "{\"reason\":\"provider down\"}");

    validated(f, D(8), "api", "staging", "2026-01-07T10:00:00Z", NULL);
    put(f, DQ_EV_STARTED, D(8), "api", "staging", "v", "2026-01-07T10:01:00Z",
        "{\"provider\":\"command\",\"provider_deployment_id\":\"x\",\"attempt\":1}");

    validated(f, D(7), "api", "production", "2026-01-12T10:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(7), "api", "production", "v", "2026-01-12T10:01:00Z", NULL);
    return f;
}

static dq_report_opts window(void)
{
    dq_report_opts o = {0};

    assert_int_equal(dq_time_parse("2026-01-01T00:00:00Z", &o.since_ms), 0);
    assert_int_equal(dq_time_parse("2026-01-11T00:00:00Z", &o.until_ms), 0);
    return o;
}

#define assert_close(x, y) assert_true(fabs((double)(x) - (double)(y)) < 1e-6)

static void test_figures(void **state)
{
    (void)state;
    dq_fold *f = history();
    dq_report_opts o = window();
    dq_report r;

    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 7);
    assert_int_equal(r.succeeded, 4);
    assert_int_equal(r.failed, 1);
    assert_int_equal(r.rejected, 1);
    assert_int_equal(r.in_progress, 1);
    assert_int_equal(r.rolled_back, 3);
    assert_true(r.has_success_rate);
    assert_close(r.success_rate, 0.8);
    assert_close(r.change_failure_rate, 0.75);
    assert_close(r.window_days, 10.0);
    assert_close(r.deploys_per_day, 0.4);
    assert_int_equal(r.caught, 3);
    assert_int_equal(r.escaped, 2);
    assert_close(r.stopped_before_production, 0.6);
    /* lead: 65 min, 2h2m, 25h10m */
    assert_int_equal(r.lead_time.n, 3);
    assert_close(r.lead_time.median_ms, 7320000);
    assert_close(r.lead_time.p90_ms, 7320000 + 0.8 * (90600000 - 7320000));
    assert_close(r.lead_time.min_ms, 3900000);
    assert_close(r.lead_time.max_ms, 90600000);
    /* time to deploy: 2, 5, 10, 20 min */
    assert_int_equal(r.time_to_deploy.n, 4);
    assert_close(r.time_to_deploy.median_ms, 450000);
    assert_close(r.time_to_deploy.p90_ms, 1020000);
    /* MTTR: 12 and 30 min; the failed rollback has no time to restore */
    assert_int_equal(r.rollbacks, 3);
    assert_int_equal(r.rollbacks_succeeded, 2);
    assert_int_equal(r.rollbacks_failed, 1);
    assert_int_equal(r.mttr.n, 2);
    assert_close(r.mttr.median_ms, 1260000);
    assert_close(r.mttr.p90_ms, 1692000);
    dq_fold_free(f);
}

/* A rollback the notify policy did not attempt (rollback.failed with data.policy
 * "notify") is a rollback request, not a failed rollback. */
static void test_notify_policy_not_a_failed_rollback(void **state)
{
    dq_fold *f = dq_fold_new();
    dq_report_opts o = window();
    dq_report r;
    (void)state;

    next_offset = 0;
    validated(f, D(1), "api", "production", "2026-01-02T10:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(1), "api", "production", "v", "2026-01-02T10:10:00Z", NULL);
    put(f, DQ_EV_ROLLBACK_REQUESTED, D(1), "api", "production", "v", "2026-01-02T11:00:00Z",
        "{\"reason\":\"5xx\",\"requested_by\":\"deployq-monitor\"}");
    put(f, DQ_EV_ROLLBACK_FAILED, D(1), "api", "production", "v", "2026-01-02T11:00:01Z",
        "{\"reason\":\"policy notify: nothing was rolled back; a person must decide\","
        "\"policy\":\"notify\"}");
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.rollbacks, 1);
    assert_int_equal(r.rollbacks_failed, 0);
    assert_int_equal(r.rollbacks_succeeded, 0);
    dq_fold_free(f);
}

static void test_filters(void **state)
{
    (void)state;
    dq_fold *f = history();
    dq_report_opts o = window();
    dq_report r;

    o.service = "web";
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 2);
    assert_close(r.success_rate, 1.0);
    assert_close(r.change_failure_rate, 1.0);
    assert_int_equal(r.caught, 1);
    assert_int_equal(r.escaped, 1);
    assert_close(r.stopped_before_production, 0.5);
    assert_int_equal(r.mttr.n, 1);
    assert_close(r.mttr.median_ms, 1800000);

    o.service = NULL;
    o.environment = "production";
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 3);
    assert_int_equal(r.succeeded, 2);
    assert_int_equal(r.rejected, 1);
    assert_close(r.change_failure_rate, 1.0);
    assert_int_equal(r.caught, 1);
    assert_int_equal(r.escaped, 2);
    assert_close(r.stopped_before_production, 1.0 / 3.0);
    assert_true(r.has_success_rate);
    assert_close(r.success_rate, 1.0);

    /* no window: everything, D7 included; the window runs from the first to the last event */
    assert_int_equal(dq_report_compute(f, NULL, &r), 0);
    assert_int_equal(r.deployments, 8);
    assert_int_equal(r.succeeded, 5);
    {
        int64_t a, b;

        dq_time_parse("2026-01-01T10:00:00Z", &a);
        dq_time_parse("2026-01-12T10:01:00Z", &b);
        assert_int_equal(r.since_ms, a);
        assert_int_equal(r.until_ms, b);
    }

    /* nothing matches: every rate absent */
    o.environment = "nowhere";
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 0);
    assert_false(r.has_success_rate);
    assert_false(r.has_change_failure_rate);
    assert_false(r.has_stopped_share);
    assert_int_equal(r.mttr.n, 0);
    dq_fold_free(f);
}

static void test_percentile(void **state)
{
    (void)state;
    const double one[] = {5}, four[] = {1, 2, 3, 4}, ten[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

    assert_close(dq_report_percentile(one, 1, 0.5), 5);
    assert_close(dq_report_percentile(one, 1, 0.9), 5);
    assert_close(dq_report_percentile(four, 4, 0.5), 2.5);
    assert_close(dq_report_percentile(four, 4, 0.9), 3.7);
    assert_close(dq_report_percentile(ten, 10, 0.9), 9.1);
    assert_close(dq_report_percentile(ten, 10, 0), 1);
    assert_close(dq_report_percentile(ten, 10, 1), 10);
    assert_close(dq_report_percentile(NULL, 0, 0.5), 0);
}

static void test_renderings(void **state)
{
    (void)state;
    dq_fold *f = history();
    dq_report_opts o = window();
    dq_report r;
    cJSON *j;
    char *txt, *buf = NULL;
    size_t len = 0;
    FILE *mem;

    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    j = dq_report_json(&r);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "mttr_ms"));
    assert_string_equal(txt, "{\"n\":2,\"median\":1260000,\"p90\":1692000,\"min\":720000,"
                             "\"max\":1800000}");
    free(txt);
    assert_close(cJSON_GetObjectItem(j, "success_rate")->valuedouble, 0.8);
    assert_close(cJSON_GetObjectItem(j, "stopped_before_production")->valuedouble, 0.6);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "window"));
    assert_string_equal(txt, "{\"since\":\"2026-01-01T00:00:00.000Z\","
                             "\"until\":\"2026-01-11T00:00:00.000Z\",\"days\":10}");
    free(txt);
    cJSON_Delete(j);

    mem = open_memstream(&buf, &len);
    dq_report_write_csv(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "metric,value\n"));
    assert_non_null(strstr(buf, "\nsuccess_rate,0.8000\n"));
    assert_non_null(strstr(buf, "\nlead_time_median_ms,7320000\n"));
    assert_non_null(strstr(buf, "\nmttr_p90_ms,1692000\n"));
    free(buf);

    buf = NULL;
    mem = open_memstream(&buf, &len);
    dq_report_write_table(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "success rate                   80.0% (4 of 5)\n"));
    assert_non_null(strstr(buf, "MTTR (failure -> restored)     median 21m0s, p90 28m12s (n=2)\n"));
    free(buf);
    dq_fold_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_figures),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_notify_policy_not_a_failed_rollback),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_renderings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
