/*
 * test_report.c - the report figures (common/domain/report.c) on a scripted ten-day history whose
 * every figure was worked out by hand (see the comments), with filters, percentiles and the
 * JSON/CSV renderings; canaries aborted before 100 as catches, with the traffic they reached.
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

/* deploy.validated at `at`, signed at issued (NULL: at), with commit_at when given. */
static void validated_issued(dq_fold *f, const char *dep, const char *svc, const char *env,
                             const char *at, const char *issued, const char *commit_at)
{
    char data[512];

    snprintf(data, sizeof data,
             "{\"key_id\":\"ci\",\"issued_at\":\"%s\",\"strategy\":\"rolling\"%s%s%s,"
             "\"source\":{\"topic\":\"r\",\"partition\":0,\"offset\":0}}",
             issued ? issued : at, commit_at ? ",\"commit_at\":\"" : "",
             commit_at ? commit_at : "", commit_at ? "\"" : "");
    put(f, DQ_EV_VALIDATED, dep, svc, env, "v", at, data);
}

static void validated(dq_fold *f, const char *dep, const char *svc, const char *env,
                      const char *at, const char *commit_at)
{
    validated_issued(f, dep, svc, env, at, NULL, commit_at);
}

static void verified(dq_fold *f, const char *dep, const char *svc, const char *env,
                     const char *at)
{
    put(f, DQ_EV_VERIFIED, dep, svc, env, "v", at, "{\"window_ms\":600000,\"samples\":10}");
}

/* deploy.rejected with the reason codes given as a JSON array of {"code","message"}. */
static void rejected(dq_fold *f, const char *dep, const char *svc, const char *env,
                     const char *at, const char *reasons)
{
    char data[512];

    snprintf(data, sizeof data, "{\"reasons\":%s}", reasons);
    put(f, DQ_EV_REJECTED, dep, svc, env, "v", at, data);
}

#define D(n) "00000000-0000-4000-8000-00000000000" #n

/* The history (window 2026-01-01 .. 2026-01-11, 10 days). Per deployment, what each
 * definition of report.h makes of it:
 *   D1 api/staging     validated 01-01 10:00 (commit 09:00), succeeded 10:05, verified
 *                      10:15, then alice asks for a rollback 01-10 15:00 that never ends
 *                      -> lead 65 min; time to deploy 15 min (staging); a failed change
 *                      (later rolled back), caught outside production; rollback R6 open
 *   D2 api/production  validated 01-02 10:00 (commit 01-01 09:00), succeeded 10:10, the
 *                      monitor asks for a rollback 11:00 (first failure 10:50), restored
 *                      11:02 -> lead 25h10m; failed change, escaped; R1: MTTR 12 min
 *   D3 api/staging     validated 01-03, deploy.failed -> failed (the provider: no catch)
 *   D4 api/production  rejected 01-04 (promotion)        -> a gate catch
 *   D5 web/production  validated 01-05 10:00, succeeded 10:20, the monitor asks for a
 *                      rollback 11:05 (detected 11:00), succeeded 11:30 without
 *                      restored_at -> failed change, escaped; R2: MTTR 30 min
 *   D6 web/staging     validated 01-06 10:00 (commit 08:00), succeeded 10:02, alice asks
 *                      for a rollback 10:30, it fails 10:40 -> lead 2h2m; failed change,
 *                      caught outside production; R3: MTTR 10 min (to the failure), manual
 *   D8 api/staging     validated 01-07, started, nothing more -> in progress
 *   D9 api/production  rejected 01-08 (stale)            -> refused as invalid input
 *   Da api/production  rejected 01-08 (replayed_nonce and freeze) -> invalid input (an
 *                      untrusted request judged nothing, even with a gate's code beside it)
 *   Db web/production  rejected 01-08 (schema)           -> invalid input
 *   Dc web/staging     rejected 01-08 (internal)         -> refused, other
 *   Dd web/staging     rejected 01-08 (drift_values)     -> a gate catch
 *   De api/staging     signed 01-09 09:57, validated 10:00, succeeded 10:04, verified 10:09
 *                      -> a success; time to deploy 12 min (staging; from the signature)
 *   Df api/production  validated 01-09 12:00, succeeded 12:05, verified 12:30
 *                      -> a success; time to deploy 30 min
 *   R4 api/production  a rollback started 01-10 09:00 without a request (manual, no
 *                      deployment), succeeded, restored 09:04 -> MTTR 4 min, manual
 *   Dg web/production  validated 01-10 10:00, succeeded 10:03, the monitor asks for a
 *                      rollback 10:20; policy notify: rollback.failed not attempted
 *                      -> failed change (its watch failed), escaped; R5: no MTTR time
 *   D7 api/production  validated 01-12: outside the window
 * Unknown event types (deploy.cancelled, target.paused: other versions' operator verbs)
 * come in between and must change nothing.
 */
static dq_fold *history(void)
{
    dq_fold *f = dq_fold_new();

    next_offset = 0;
    validated(f, D(1), "api", "staging", "2026-01-01T10:00:00Z", "2026-01-01T09:00:00Z");
    put(f, DQ_EV_SUCCEEDED, D(1), "api", "staging", "v", "2026-01-01T10:05:00Z", NULL);
    verified(f, D(1), "api", "staging", "2026-01-01T10:15:00Z");

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

    rejected(f, D(4), "api", "production", "2026-01-04T10:00:00Z",
             "[{\"code\":\"promotion\",\"message\":\"not in staging\"}]");

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
    put(f, "deploy.cancelled", D(8), "api", "staging", "v", "2026-01-07T10:02:00Z",
        "{\"by\":\"op\"}");

    rejected(f, D(9), "api", "production", "2026-01-08T10:00:00Z",
             "[{\"code\":\"stale\",\"message\":\"issued 2 h ago\"}]");
    rejected(f, D(a), "api", "production", "2026-01-08T10:01:00Z",
             "[{\"code\":\"replayed_nonce\",\"message\":\"seen\"},"
             "{\"code\":\"freeze\",\"message\":\"frozen\"}]");
    rejected(f, D(b), "web", "production", "2026-01-08T10:02:00Z",
             "[{\"code\":\"schema\",\"message\":\"version: missing\"}]");
    rejected(f, D(c), "web", "staging", "2026-01-08T10:03:00Z",
             "[{\"code\":\"internal\",\"message\":\"redis down\"}]");
    rejected(f, D(d), "web", "staging", "2026-01-08T10:04:00Z",
             "[{\"code\":\"drift_values\",\"message\":\"values differ: FEATURE_FLAGS\"}]");
    put(f, "target.paused", NULL, "web", "staging", NULL, "2026-01-08T11:00:00Z", NULL);

    validated_issued(f, D(e), "api", "staging", "2026-01-09T10:00:00Z", "2026-01-09T09:57:00Z",
                     NULL);
    put(f, DQ_EV_SUCCEEDED, D(e), "api", "staging", "v", "2026-01-09T10:04:00Z", NULL);
    verified(f, D(e), "api", "staging", "2026-01-09T10:09:00Z");
    validated(f, D(f), "api", "production", "2026-01-09T12:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(f), "api", "production", "v", "2026-01-09T12:05:00Z", NULL);
    verified(f, D(f), "api", "production", "2026-01-09T12:30:00Z");

    put(f, DQ_EV_ROLLBACK_STARTED, NULL, "api", "production", "v", "2026-01-10T09:00:00Z",
        "{\"to_version\":\"u\"}");
    put(f, DQ_EV_ROLLBACK_SUCCEEDED, NULL, "api", "production", "v", "2026-01-10T09:05:00Z",
        "{\"to_version\":\"u\",\"method\":\"redeploy\",\"restored_at\":\"2026-01-10T09:04:00Z\"}");

    validated(f, D(g), "web", "production", "2026-01-10T10:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(g), "web", "production", "v", "2026-01-10T10:03:00Z", NULL);
    put(f, DQ_EV_ROLLBACK_REQUESTED, D(g), "web", "production", "v", "2026-01-10T10:20:00Z",
        "{\"reason\":\"5xx\",\"requested_by\":\"deployq-monitor\"}");
    put(f, DQ_EV_ROLLBACK_FAILED, D(g), "web", "production", "v", "2026-01-10T10:20:01Z",
        "{\"reason\":\"policy notify: nothing was rolled back\",\"policy\":\"notify\"}");

    put(f, DQ_EV_ROLLBACK_REQUESTED, D(1), "api", "staging", "v", "2026-01-10T15:00:00Z",
        "{\"reason\":\"looks wrong\",\"requested_by\":\"alice\"}");

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

/* Each figure of the history above, worked out by hand (the old definitions gave what the
 * "was" notes say: each assertion marked so fails against them). */
static void test_figures(void **state)
{
    (void)state;
    dq_fold *f = history();
    dq_report_opts o = window();
    dq_report r;

    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    /* D1..D6, D8, D9, Da..Dg: 15 (D7 is outside) */
    assert_int_equal(r.deployments, 15);
    assert_int_equal(r.succeeded, 7);   /* D1 D2 D5 D6 De Df Dg */
    assert_int_equal(r.failed, 1);      /* D3 */
    assert_int_equal(r.rejected, 6);    /* D4 D9 Da Db Dc Dd */
    assert_int_equal(r.in_progress, 1); /* D8 (deploy.cancelled is unknown here) */
    /* 1. failed changes: D1 (rolled back after its verdict) D2 D5 D6 Dg (watch failed,
     * nothing rolled back) = 5; success rate = (7 - 5) / (7 + 1) = 0.25 (was 7/8) */
    assert_int_equal(r.failed_changes, 5);
    assert_true(r.has_success_rate);
    assert_close(r.success_rate, 0.25);
    assert_close(r.change_failure_rate, 5.0 / 7.0);
    assert_int_equal(r.unverified, 0);
    assert_close(r.window_days, 10.0);
    assert_close(r.deploys_per_day, 0.7); /* 7 / 10 */
    /* 3. caught: gates D4 (promotion) Dd (drift_values) + failed changes outside production D1
     * D6 = 4; escaped D2 D5 Dg = 3; 4 / 7 (was 9 caught: every rejection, D3's failure) */
    assert_int_equal(r.caught_by_gate, 2);
    assert_int_equal(r.caught_outside_production, 2);
    assert_int_equal(r.caught, 4);
    assert_int_equal(r.escaped, 3);
    assert_close(r.stopped_before_production, 4.0 / 7.0);
    assert_int_equal(r.rejected_invalid, 3); /* D9 stale, Da replayed (+freeze), Db schema */
    assert_int_equal(r.rejected_other, 1);   /* Dc internal */
    /* lead: 65 min, 2h2m, 25h10m -> median 2h2m, p90 = 7320000 + 0.8 * (90600000 -
     * 7320000) = 73944000 */
    assert_int_equal(r.lead_time.n, 3);
    assert_close(r.lead_time.median_ms, 7320000);
    assert_close(r.lead_time.p90_ms, 73944000);
    assert_close(r.lead_time.min_ms, 3900000);
    assert_close(r.lead_time.max_ms, 90600000);
    /* 4. time to deploy, request -> verified: De 12 min (09:57 -> 10:09), D1 15 min, Df
     * 30 min: sorted 720000 900000 1800000, median 900000, p90 at 1.8 = 900000 + 0.8 *
     * 900000 = 1620000, max 1800000 (was validated -> succeeded: 5 values, median 5 min) */
    assert_int_equal(r.time_to_deploy.n, 3);
    assert_close(r.time_to_deploy.median_ms, 900000);
    assert_close(r.time_to_deploy.p90_ms, 1620000);
    assert_close(r.time_to_deploy.max_ms, 1800000);
    /* staging: 720000 900000 -> median 810000, p90 720000 + 0.9 * 180000 = 882000 */
    assert_int_equal(r.time_to_deploy_staging.n, 2);
    assert_close(r.time_to_deploy_staging.median_ms, 810000);
    assert_close(r.time_to_deploy_staging.p90_ms, 882000);
    assert_close(r.time_to_deploy_staging.max_ms, 900000);
    /* 2. MTTR, every rollback that ended: R4 4 min (manual, from its start), R3 10 min
     * (failed: to the failure; manual), R1 12 min, R2 30 min; R5 (notify) and R6 (open)
     * have none. Sorted 240000 600000 720000 1800000: median at 1.5 = 660000, p90 at 2.7 =
     * 720000 + 0.7 * 1080000 = 1476000 (was R1 R2 and R4 at 0: n=3, median 12 min) */
    assert_int_equal(r.rollbacks, 6);
    assert_int_equal(r.rollbacks_succeeded, 3);    /* R1 R2 R4 */
    assert_int_equal(r.rollbacks_failed, 1);       /* R3 */
    assert_int_equal(r.rollbacks_not_attempted, 1); /* R5 */
    assert_int_equal(r.rollbacks_open, 1);         /* R6 */
    assert_int_equal(r.mttr.n, 4);
    assert_close(r.mttr.median_ms, 660000);
    assert_close(r.mttr.p90_ms, 1476000);
    assert_close(r.mttr.min_ms, 240000);
    assert_close(r.mttr.max_ms, 1800000);
    assert_int_equal(r.mttr_manual, 2); /* R3 R4 */
    assert_null(r.targets);
    dq_fold_free(f);
}

/* A rollback the notify policy did not attempt (rollback.failed with data.policy
 * "notify") is a rollback request, not a failed rollback, and has no time to restore; the
 * deployment's watch failed: a failed change. */
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
    assert_int_equal(r.rollbacks_not_attempted, 1);
    assert_int_equal(r.mttr.n, 0);
    assert_int_equal(r.failed_changes, 1);
    assert_close(r.success_rate, 0.0); /* (1 - 1) / 1 (was 1.0) */
    dq_fold_free(f);
}

/* Canary steps of deployment dep up to weight `weights` (e.g. {5, 25}), then its abort at the
 * last of them and deploy.failed, from 02-01 10:00 + hour h. */
static void canary_aborted(dq_fold *f, const char *dep, const char *svc, const char *env, int h,
                           const int *weights, size_t n)
{
    char at[32], data[512];

    snprintf(at, sizeof at, "2026-02-01T%02d:00:00Z", h);
    validated(f, dep, svc, env, at, NULL);
    for (size_t i = 0; i < n; i++) {
        snprintf(at, sizeof at, "2026-02-01T%02d:%02zu:00Z", h, i + 1);
        snprintf(data, sizeof data,
                 "{\"step\":%zu,\"steps\":4,\"weight\":%d,\"canary_color\":\"green\","
                 "\"stable_color\":\"blue\",\"router\":\"edge\",\"kind\":\"analysis\","
                 "\"hold_ms\":60000}", i + 1, weights[i]);
        put(f, DQ_EV_CANARY_STEP, dep, svc, env, "v2", at, data);
    }
    snprintf(at, sizeof at, "2026-02-01T%02d:30:00Z", h);
    snprintf(data, sizeof data,
             "{\"step\":%zu,\"weight\":%d,\"max_weight\":%d,\"reason\":\"analysis\","
             "\"canary_color\":\"green\",\"stable_color\":\"blue\",\"weight_restored\":true}", n,
             weights[n - 1], weights[n - 1]);
    put(f, DQ_EV_CANARY_ABORTED, dep, svc, env, "v2", at, data);
    snprintf(at, sizeof at, "2026-02-01T%02d:31:00Z", h);
    put(f, DQ_EV_FAILED, dep, svc, env, "v2", at, "{\"reason\":\"canary_aborted\"}");
}

/* Caught by canary (report.h), window 02-01 .. 02-02:
 *   K1 api/production  canary 5, 25, aborted at 25; the executor's rollback (no request):
 *                      first bad sample 10:03:00, restored 10:30:00 -> caught, share 25;
 *                      MTTR 27 min, automatic (deployq-executor)
 *   K2 api/staging     canary 5, aborted at 5                -> caught, share 5
 *   K3 web/production  canary 5, 25, 50, aborted at 50       -> caught, share 50
 *   K4 web/production  canary 5, 25, 50, 100, aborted at 100 -> reached all traffic: not caught
 *   K5 web/production  succeeded, the monitor's rollback (first failure 15:10, restored
 *                      15:20)                                -> escaped; MTTR 10 min
 * caught 3 (all by canary), escaped 1: stopped 3/4 = 75%; shares 5 25 50: median 25, max 50.
 * MTTR 10 min and 27 min, none manual. */
static void test_caught_by_canary(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    dq_report_opts o = {.since_ms = 0};
    dq_report r;
    const int k1[] = {5, 25}, k2[] = {5}, k3[] = {5, 25, 50}, k4[] = {5, 25, 50, 100};
    cJSON *j;
    char *txt, *buf = NULL;
    size_t len = 0;
    FILE *mem;

    next_offset = 0;
    canary_aborted(f, D(1), "api", "production", 10, k1, 2);
    put(f, DQ_EV_ROLLBACK_STARTED, D(1), "api", "production", "v2", "2026-02-01T10:30:00Z",
        "{\"method\":\"canary_abort\",\"requested_by\":\"deployq-executor\",\"reason\":"
        "\"canary_aborted\",\"from_version\":\"v2\",\"to_version\":\"v1\",\"detected_at\":"
        "\"2026-02-01T10:03:00Z\"}");
    put(f, DQ_EV_ROLLBACK_SUCCEEDED, D(1), "api", "production", "v2", "2026-02-01T10:30:01Z",
        "{\"method\":\"canary_abort\",\"requested_by\":\"deployq-executor\",\"to_version\":\"v1\","
        "\"detected_at\":\"2026-02-01T10:03:00Z\",\"restored_at\":\"2026-02-01T10:30:00Z\"}");
    canary_aborted(f, D(2), "api", "staging", 11, k2, 1);
    canary_aborted(f, D(3), "web", "production", 12, k3, 3);
    canary_aborted(f, D(4), "web", "production", 13, k4, 4);
    validated(f, D(5), "web", "production", "2026-02-01T15:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(5), "web", "production", "v", "2026-02-01T15:05:00Z", NULL);
    put(f, DQ_EV_ROLLBACK_REQUESTED, D(5), "web", "production", "v", "2026-02-01T15:12:00Z",
        "{\"reason\":\"5xx\",\"requested_by\":\"deployq-monitor\",\"evidence\":{"
        "\"first_failure_at\":\"2026-02-01T15:10:00Z\"}}");
    put(f, DQ_EV_ROLLBACK_SUCCEEDED, D(5), "web", "production", "v", "2026-02-01T15:21:00Z",
        "{\"to_version\":\"u\",\"method\":\"redeploy\",\"restored_at\":\"2026-02-01T15:20:00Z\"}");

    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 5);
    assert_int_equal(r.failed, 4);
    assert_int_equal(r.caught_by_canary, 3);
    assert_int_equal(r.caught_by_gate, 0);
    assert_int_equal(r.caught_outside_production, 0);
    assert_int_equal(r.caught, 3);
    assert_int_equal(r.escaped, 1);
    assert_close(r.stopped_before_production, 0.75);
    assert_close(r.canary_share_median, 25.0);
    assert_close(r.canary_share_max, 50.0);
    assert_int_equal(r.mttr.n, 2);
    assert_close(r.mttr.min_ms, 600000.0);
    assert_close(r.mttr.max_ms, 1620000.0);
    assert_int_equal(r.mttr_manual, 0);

    j = dq_report_json(&r);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "deployments"), "caught_by_canary")
                         ->valueint, 3);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "caught_by_canary_share"));
    assert_string_equal(txt, "{\"n\":3,\"median\":25,\"max\":50}");
    free(txt);
    cJSON_Delete(j);

    mem = open_memstream(&buf, &len);
    dq_report_write_csv(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "\n*,*,caught_by_canary,3\n"));
    assert_non_null(strstr(buf, "\n*,*,caught_by_canary_share_median,25.00\n"));
    assert_non_null(strstr(buf, "\n*,*,caught_by_canary_share_max,50.00\n"));
    free(buf);

    buf = NULL;
    mem = open_memstream(&buf, &len);
    dq_report_write_table(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "stopped before production      75.0% (3 caught: 0 by a gate, 3 by "
                                "canary, 0 outside production; 1 escaped)"));
    assert_non_null(strstr(buf, "caught by canary               3 (aborted before 100%; traffic "
                                "reached: median 25.0%, max 50.0%)\n"));
    free(buf);
    dq_report_clear(&r);
    dq_fold_free(f);
}

static void test_filters(void **state)
{
    (void)state;
    dq_fold *f = history();
    dq_report_opts o = window();
    dq_report r;

    /* web: D5 D6 Db Dc Dd Dg; succeeded D5 D6 Dg, all failed changes -> 0 / 3; caught Dd
     * (gate) + D6 (staging) = 2, escaped D5 Dg = 2; MTTR R2 30 min, R3 10 min -> median
     * 20 min (R5 has none) */
    o.service = "web";
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 6);
    assert_close(r.success_rate, 0.0);
    assert_close(r.change_failure_rate, 1.0);
    assert_int_equal(r.caught, 2);
    assert_int_equal(r.escaped, 2);
    assert_close(r.stopped_before_production, 0.5);
    assert_int_equal(r.rejected_invalid, 1);
    assert_int_equal(r.rejected_other, 1);
    assert_int_equal(r.mttr.n, 2);
    assert_close(r.mttr.median_ms, 1200000);
    assert_int_equal(r.time_to_deploy.n, 0);

    /* production: D2 D4 D5 D9 Da Db Df Dg; succeeded D2 D5 Df Dg, failed changes D2 D5 Dg
     * -> 1 / 4; caught D4 = 1, escaped 3 -> 0.25; MTTR R1 12, R2 30, R4 4 min -> median
     * 12 min; time to deploy Df 30 min, none in staging */
    o.service = NULL;
    o.environment = "production";
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.deployments, 8);
    assert_int_equal(r.succeeded, 4);
    assert_int_equal(r.rejected, 4);
    assert_int_equal(r.rejected_invalid, 3);
    assert_close(r.success_rate, 0.25);
    assert_close(r.change_failure_rate, 0.75);
    assert_int_equal(r.caught, 1);
    assert_int_equal(r.escaped, 3);
    assert_close(r.stopped_before_production, 0.25);
    assert_int_equal(r.mttr.n, 3);
    assert_close(r.mttr.median_ms, 720000);
    assert_int_equal(r.time_to_deploy.n, 1);
    assert_close(r.time_to_deploy.median_ms, 1800000);
    assert_int_equal(r.time_to_deploy_staging.n, 0);

    /* no window: everything, D7 included; the window runs from the first to the last event */
    assert_int_equal(dq_report_compute(f, NULL, &r), 0);
    assert_int_equal(r.deployments, 16);
    assert_int_equal(r.succeeded, 8);
    {
        int64_t a, b;

        dq_time_parse("2026-01-01T10:00:00Z", &a);
        dq_time_parse("2026-01-12T10:01:00Z", &b);
        assert_int_equal(r.since_ms, a);
        assert_int_equal(r.until_ms, b);
    }

    o.service = NULL;
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

/* by_target: one report per service/environment, sorted, each equal to the report
 * filtered to it. */
static void test_by_target(void **state)
{
    (void)state;
    dq_fold *f = history();
    dq_report_opts o = window();
    dq_report r, one;
    static const char *const keys[][2] = {{"api", "production"}, {"api", "staging"},
                                          {"web", "production"}, {"web", "staging"}};

    o.by_target = 1;
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.n_targets, 4);
    for (size_t i = 0; i < 4; i++) {
        dq_report_opts fo = window();

        assert_string_equal(r.targets[i].service, keys[i][0]);
        assert_string_equal(r.targets[i].environment, keys[i][1]);
        fo.service = keys[i][0];
        fo.environment = keys[i][1];
        assert_int_equal(dq_report_compute(f, &fo, &one), 0);
        assert_int_equal(r.targets[i].r.deployments, one.deployments);
        assert_int_equal(r.targets[i].r.failed_changes, one.failed_changes);
        assert_int_equal(r.targets[i].r.mttr.n, one.mttr.n);
    }
    /* api/staging: D1 D3 D8 De; success De of D1 De D3 = 1/3; D1 caught outside
     * production; time to deploy D1 15 min, De 12 min; R6 open: no MTTR */
    assert_int_equal(r.targets[1].r.deployments, 4);
    assert_close(r.targets[1].r.success_rate, 1.0 / 3.0);
    assert_int_equal(r.targets[1].r.caught_outside_production, 1);
    assert_int_equal(r.targets[1].r.time_to_deploy.n, 2);
    assert_int_equal(r.targets[1].r.rollbacks_open, 1);
    assert_int_equal(r.targets[1].r.mttr.n, 0);
    /* api/production: R1 12 min and R4 4 min (no deployment: found through its target) */
    assert_int_equal(r.targets[0].r.mttr.n, 2);
    assert_close(r.targets[0].r.mttr.median_ms, 480000);
    dq_report_clear(&r);
    assert_null(r.targets);
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

    o.by_target = 1;
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    j = dq_report_json(&r);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "mttr_ms"));
    assert_string_equal(txt, "{\"n\":4,\"median\":660000,\"p90\":1476000,\"min\":240000,"
                             "\"max\":1800000}");
    free(txt);
    assert_close(cJSON_GetObjectItem(j, "success_rate")->valuedouble, 0.25);
    assert_close(cJSON_GetObjectItem(j, "stopped_before_production")->valuedouble, 0.5714);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "window"));
    assert_string_equal(txt, "{\"since\":\"2026-01-01T00:00:00.000Z\","
                             "\"until\":\"2026-01-11T00:00:00.000Z\",\"days\":10}");
    free(txt);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "rollbacks"));
    assert_string_equal(txt, "{\"total\":6,\"succeeded\":3,\"failed\":1,\"not_attempted\":1,"
                             "\"open\":1,\"manual_in_mttr\":2}");
    free(txt);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "targets")), 4);
    txt = cJSON_PrintUnformatted(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "targets"), 1),
                            "time_to_deploy_ms"));
    assert_string_equal(txt, "{\"n\":2,\"median\":810000,\"p90\":882000,\"min\":720000,"
                             "\"max\":900000}");
    free(txt);
    cJSON_Delete(j);

    mem = open_memstream(&buf, &len);
    dq_report_write_csv(&r, mem);
    fclose(mem);
    assert_memory_equal(buf, "service,environment,metric,value\n", 33);
    assert_non_null(strstr(buf, "\n*,*,success_rate,0.2500\n"));
    assert_non_null(strstr(buf, "\n*,*,refused_invalid,3\n"));
    assert_non_null(strstr(buf, "\n*,*,lead_time_median_ms,7320000\n"));
    assert_non_null(strstr(buf, "\n*,*,mttr_p90_ms,1476000\n"));
    assert_non_null(strstr(buf, "\n*,*,time_to_deploy_staging_p90_ms,882000\n"));
    assert_non_null(strstr(buf, "\nweb,production,failed_changes,2\n"));
    free(buf);

    buf = NULL;
    mem = open_memstream(&buf, &len);
    dq_report_write_table(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "success rate                   25.0% (2 of 8; 5 failed changes)"
                                "  [target > 99%: missed]\n"));
    assert_non_null(strstr(buf, "MTTR (failure -> restored)     median 11m0s, p90 24m36s, "
                                "max 30m0s (n=4)  [target median < 5m: missed]\n"));
    assert_non_null(strstr(buf, "  of which staging             median 13m30s, p90 14m42s, "
                                "max 15m0s (n=2)  [target p90 < 15m: met]\n"));
    assert_non_null(strstr(buf, "refused as invalid input       3 (not counted as catches; "
                                "other refusals 1)\n"));
    assert_non_null(strstr(buf, "\napi/staging "));
    free(buf);
    dq_report_clear(&r);
    dq_fold_free(f);
}

/* CI/CD cost per deployment (report.h) on a history of its own, window 02-01 .. 02-03:
 *   C1 api/staging     succeeded, cost provider_jobs 0.12
 *   C2 api/production  succeeded, cost provider_jobs 0.30
 *   C3 api/production  started, failed, cost provider_jobs 0.05
 *   C4 web/staging     succeeded, cost wall_time 0.04           -> an estimate
 *   C5 web/production  succeeded, no cost (provider not priced) -> not priced, not 0
 *   C6 web/production  started, failed, cost unknown (jobs call failed) -> unknown
 *   C7 api/staging     started only (in progress)               -> not counted
 *   C8 api/staging     failed before any provider started       -> not counted
 *   C9 web/staging     rejected                                 -> not counted
 * Priced: 0.04 0.05 0.12 0.30 -> median (0.05 + 0.12) / 2 = 0.085; p90 at rank 2.7:
 * 0.12 + 0.7 x 0.18 = 0.246; max 0.30; total 0.51; 1 estimated, 1 not priced, 1 unknown.
 * api/production alone: 0.05 0.30 -> median 0.175. */
static void test_cost(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    dq_report_opts o = {0};
    dq_report r;
    char *buf = NULL, *txt;
    size_t len = 0;
    FILE *mem;
    cJSON *j;
    const char *started = "{\"provider\":\"gha\",\"provider_deployment_id\":\"1\",\"attempt\":1}";

    assert_int_equal(dq_time_parse("2026-02-01T00:00:00Z", &o.since_ms), 0);
    assert_int_equal(dq_time_parse("2026-02-03T00:00:00Z", &o.until_ms), 0);
    next_offset = 0;
    validated(f, D(1), "api", "staging", "2026-02-01T10:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(1), "api", "staging", "v", "2026-02-01T10:05:00Z",
        "{\"provider\":\"gha\",\"provider_deployment_id\":\"1\",\"duration_ms\":1,"
        "\"cost\":{\"basis\":\"provider_jobs\",\"amount\":0.12,\"minutes\":15}}");
    validated(f, D(2), "api", "production", "2026-02-01T11:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(2), "api", "production", "v", "2026-02-01T11:05:00Z",
        "{\"provider\":\"gha\",\"provider_deployment_id\":\"2\",\"duration_ms\":1,"
        "\"cost\":{\"basis\":\"provider_jobs\",\"amount\":0.3,\"minutes\":30}}");
    validated(f, D(3), "api", "production", "2026-02-01T12:00:00Z", NULL);
    put(f, DQ_EV_STARTED, D(3), "api", "production", "v", "2026-02-01T12:01:00Z", started);
    put(f, DQ_EV_FAILED, D(3), "api", "production", "v", "2026-02-01T12:05:00Z",
        "{\"reason\":\"build_failed\",\"cost\":{\"basis\":\"provider_jobs\",\"amount\":0.05,\"minutes\":5}}");
    validated(f, D(4), "web", "staging", "2026-02-01T13:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(4), "web", "staging", "v", "2026-02-01T13:05:00Z",
        "{\"provider\":\"sh\",\"provider_deployment_id\":\"4\",\"duration_ms\":1,"
        "\"cost\":{\"basis\":\"wall_time\",\"amount\":0.04,\"minutes\":4}}");
    validated(f, D(5), "web", "production", "2026-02-01T14:00:00Z", NULL);
    put(f, DQ_EV_SUCCEEDED, D(5), "web", "production", "v", "2026-02-01T14:05:00Z",
        "{\"provider\":\"rw\",\"provider_deployment_id\":\"5\",\"duration_ms\":1}");
    validated(f, D(6), "web", "production", "2026-02-01T15:00:00Z", NULL);
    put(f, DQ_EV_STARTED, D(6), "web", "production", "v", "2026-02-01T15:01:00Z", started);
    put(f, DQ_EV_FAILED, D(6), "web", "production", "v", "2026-02-01T15:05:00Z",
        "{\"reason\":\"build_failed\",\"cost\":{\"basis\":\"unknown\",\"detail\":\"list run jobs: HTTP 500\"}}");
    validated(f, D(7), "api", "staging", "2026-02-01T16:00:00Z", NULL);
    put(f, DQ_EV_STARTED, D(7), "api", "staging", "v", "2026-02-01T16:01:00Z", started);
    validated(f, D(8), "api", "staging", "2026-02-01T17:00:00Z", NULL);
    put(f, DQ_EV_FAILED, D(8), "api", "staging", "v", "2026-02-01T17:00:01Z",
        "{\"reason\":\"all_providers_unavailable\"}");
    rejected(f, D(9), "web", "staging", "2026-02-01T18:00:00Z", "[{\"code\":\"freeze\",\"message\":\"x\"}]");

    o.by_target = 1;
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.cost_priced, 4);
    assert_int_equal(r.cost_estimated, 1);
    assert_int_equal(r.cost_not_priced, 1);
    assert_int_equal(r.cost_unknown, 1);
    assert_close(r.cost_median, 0.085);
    assert_close(r.cost_p90, 0.246);
    assert_close(r.cost_max, 0.30);
    assert_close(r.cost_total, 0.51);
    assert_int_equal(r.n_targets, 4);
    assert_string_equal(r.targets[0].environment, "production"); /* api/production */
    assert_int_equal(r.targets[0].r.cost_priced, 2);
    assert_close(r.targets[0].r.cost_median, 0.175);
    assert_int_equal(r.targets[0].r.cost_estimated, 0);
    assert_int_equal(r.targets[3].r.cost_estimated, 1); /* web/staging */

    j = dq_report_json(&r);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "cost_per_deployment"));
    assert_string_equal(txt, "{\"priced\":4,\"estimated\":1,\"not_priced\":1,\"unknown\":1,\"estimate\":true,"
                             "\"median\":0.085,\"p90\":0.246,\"max\":0.3,\"total\":0.51}");
    free(txt);
    cJSON_Delete(j);

    mem = open_memstream(&buf, &len);
    dq_report_write_csv(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "\n*,*,cost_priced,4\n"));
    assert_non_null(strstr(buf, "\n*,*,cost_median,0.085000\n"));
    assert_non_null(strstr(buf, "\n*,*,cost_total,0.510000\n"));
    assert_non_null(strstr(buf, "\napi,production,cost_median,0.175000\n"));
    assert_non_null(strstr(buf, "\napi,staging,cost_median,0.120000\n")); /* C1 alone */
    assert_non_null(strstr(buf, "\nweb,production,cost_median,\n"));     /* nothing priced */
    free(buf);

    buf = NULL;
    mem = open_memstream(&buf, &len);
    dq_report_write_table(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "\nCI/CD cost per deployment      $0.085 median, $0.300 max, $0.510 total over 4 "
                                "priced deploys (estimate: 1 priced by wall time; 1 not priced; 1 unknown)  "
                                "[target median < $0.50: met]\n"));
    assert_non_null(strstr(buf, " $0.040 est. (1)\n"));
    free(buf);
    dq_report_clear(&r);

    /* nothing priced: no figure, and the line says why */
    o.by_target = 0;
    o.environment = "production";
    o.service = "web";
    assert_int_equal(dq_report_compute(f, &o, &r), 0);
    assert_int_equal(r.cost_priced, 0);
    buf = NULL;
    mem = open_memstream(&buf, &len);
    dq_report_write_table(&r, mem);
    fclose(mem);
    assert_non_null(strstr(buf, "\nCI/CD cost per deployment      - (0 priced deploys; 1 not priced; 1 unknown)  "
                                "[target median < $0.50: no data]\n"));
    free(buf);
    dq_report_clear(&r);
    dq_fold_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_figures),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_notify_policy_not_a_failed_rollback),
        cmocka_unit_test(test_caught_by_canary),
        cmocka_unit_test(test_by_target),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_renderings),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
