/*
 * test_watch.c - watch.h: the monitor settings of a target, the verdict rules fed with
 * made-up samples (consecutive failures, error rate, the missing-data policies, the
 * window end and its extension, the schedule), the session state's JSON round trip, the
 * evidence, and the Redis scripts against a real redis-server: start, redelivery, a newer
 * deploy superseding an older one, stale triggers, exclusive leases, a lapsed lease that
 * cannot write, and ended sessions; and rounds against tests/fakes/health.py answering in
 * 1.5 s, which must not stretch the interval (the verdict at threshold x interval).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "testutil.h"
#include "watch.h"

#define T0 1700000000000LL /* a fixed "now" for the pure tests */

/* Test input is trusted text; parsed the house way all the same. */
static cJSON *parse(const char *s)
{
    const char *end = NULL;
    return cJSON_ParseWithLengthOpts(s, strlen(s) + 1, &end, 1); /* the NUL included */
}

static dq_watch_config *config_of(const char *json, const char *defaults)
{
    char err[512] = "";
    cJSON *o = parse(json), *d = defaults ? parse(defaults) : NULL;
    dq_watch_config *c;

    assert_non_null(o);
    c = dq_watch_config_from_json(o, d, "f.yaml:3: m", err, sizeof err);
    cJSON_Delete(o);
    cJSON_Delete(d);
    if (!c)
        fail_msg("config refused: %s", err);
    return c;
}

static void config_refused(const char *json, const char *expected)
{
    char err[512] = "";
    cJSON *o = parse(json);
    dq_watch_config *c = dq_watch_config_from_json(o, NULL, "f.yaml:3: m", err, sizeof err);

    cJSON_Delete(o);
    assert_null(c);
    assert_string_equal(err, expected);
}

#define ONE_HTTP "\"probes\":[{\"name\":\"health\",\"url\":\"http://x/\"}]"
#define TWO "\"probes\":[{\"name\":\"health\",\"url\":\"http://x/\"},"                        \
            "{\"name\":\"errors\",\"type\":\"prometheus\",\"url\":\"http://p/\",\"query\":\"q\"," \
            "\"op\":\"gt\",\"threshold\":0.05,\"missing\":\"%s\"}]"

static void test_config(void **state)
{
    dq_watch_config *c = config_of("{" ONE_HTTP "}", NULL);
    (void)state;

    assert_int_equal(c->interval_ms, 10000);
    assert_int_equal(c->window_ms, 15 * 60 * 1000);
    assert_int_equal(c->failure_threshold, 3);
    assert_true(c->max_error_rate == 0.5);
    assert_int_equal(c->error_rate_window, 10);
    assert_int_equal(c->n_probes, 1);
    assert_int_equal(c->probes[0]->timeout_ms, 10000); /* the interval, capped at 10 s */
    dq_watch_config_free(c);

    /* the environment wins over the top-level defaults */
    c = config_of("{\"interval\":\"1s\",\"failure_threshold\":5," ONE_HTTP "}",
                  "{\"interval\":\"2s\",\"window\":\"30s\",\"max_error_rate\":0.25}");
    assert_int_equal(c->interval_ms, 1000);
    assert_int_equal(c->window_ms, 30000);
    assert_int_equal(c->failure_threshold, 5);
    assert_true(c->max_error_rate == 0.25);
    assert_int_equal(c->probes[0]->timeout_ms, 1000);
    dq_watch_config_free(c);
    dq_watch_config_free(NULL);

    /* an explicit timeout is kept, even longer than the interval (a slow but healthy
     * endpoint passes); the default one is the interval (above) */
    c = config_of("{\"interval\":\"2s\",\"probes\":[{\"name\":\"h\",\"url\":\"http://x/\","
                  "\"max_latency\":\"500ms\",\"timeout\":\"5s\"},{\"name\":\"e\","
                  "\"type\":\"prometheus\",\"url\":\"http://p/\",\"query\":\"q\",\"op\":\"gt\","
                  "\"threshold\":1,\"timeout\":\"30s\"},{\"name\":\"f\",\"url\":\"http://x/\","
                  "\"timeout\":\"1500ms\"}]}", NULL);
    assert_int_equal(c->probes[0]->timeout_ms, 5000);
    assert_int_equal(c->probes[1]->timeout_ms, 30000);
    assert_int_equal(c->probes[2]->timeout_ms, 1500);
    dq_watch_config_free(c);

    config_refused("{\"interval\":\"1s\"}", "f.yaml:3: m.probes: required, a non-empty list");
    config_refused("{\"interval\":\"soon\"," ONE_HTTP "}",
                   "f.yaml:3: m.interval: expected a duration (e.g. 10s)");
    config_refused("{\"interval\":\"10s\",\"window\":\"5s\"," ONE_HTTP "}",
                   "f.yaml:3: m.window: expected a duration of at least one interval");
    config_refused("{\"failure_threshold\":0," ONE_HTTP "}",
                   "f.yaml:3: m.failure_threshold: expected a whole number 1..1000");
    config_refused("{\"max_error_rate\":1.5," ONE_HTTP "}",
                   "f.yaml:3: m.max_error_rate: expected a number from 0 to 1");
    config_refused("{\"error_rate_window\":101," ONE_HTTP "}",
                   "f.yaml:3: m.error_rate_window: expected a whole number 1..100");
    config_refused("{\"windw\":\"1m\"," ONE_HTTP "}",
                   "f.yaml:3: m: unknown key 'windw' (known: interval, window, failure_threshold, "
                   "max_error_rate, error_rate_window, probes)");
    config_refused("{\"probes\":[{\"name\":\"a\",\"url\":\"http://x/\"},{\"name\":\"a\",\"url\":\"http://y/\"}]}",
                   "f.yaml:3: m.probes[1].name: 'a' is used twice");
    config_refused("{\"probes\":[{\"name\":\"a\",\"url\":\"x\"}]}",
                   "f.yaml:3: m.probes[0].url: required, an http:// or https:// URL");
}

static dq_watch_state *session(const dq_watch_config *c)
{
    dq_watch_state *st = dq_watch_state_new(c, "deploy.succeeded", "0b7f3c2e-5d1a-4e8b-9c3f-2a1d6e7f8a9b",
                                            T0 - 500, "4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a", "api",
                                            "production", "v2", 42, T0);
    assert_non_null(st);
    return st;
}

static dq_sample sample(int64_t at, dq_sample_outcome o, long status)
{
    dq_sample s;
    memset(&s, 0, sizeof s);
    s.at_ms = at;
    s.outcome = o;
    s.status = status;
    s.latency_ms = o == DQ_SAMPLE_MISSING ? -1 : 5;
    snprintf(s.check, sizeof s.check, "%s",
             o == DQ_SAMPLE_PASS ? DQ_CHECK_OK : o == DQ_SAMPLE_FAIL ? DQ_CHECK_STATUS : DQ_CHECK_NO_RESPONSE);
    snprintf(s.detail, sizeof s.detail, "status %ld", status);
    return s;
}

/* One tick of a one-probe session at T0 + k s. */
static void tick1(const dq_watch_config *c, dq_watch_state *st, int k, dq_sample_outcome o,
                  long status, dq_watch_result *res)
{
    dq_sample s = sample(T0 + k * 1000LL, o, status);
    assert_int_equal(dq_watch_apply(c, st, &s, T0 + k * 1000LL + 10, res), 0);
}

static void test_consecutive_failures(void **state)
{
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"1m\"," ONE_HTTP "}", NULL);
    dq_watch_state *st = session(c);
    dq_watch_result r;
    (void)state;

    assert_int_equal(st->ends_ms, T0 + 60000);
    tick1(c, st, 0, DQ_SAMPLE_PASS, 200, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    assert_int_equal(r.health_changed, 0);
    assert_int_equal(st->next_ms, T0 + 1000);
    tick1(c, st, 1, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.health_changed, 1);
    assert_int_equal(r.degraded, 1);
    assert_int_equal(r.probe, 0);
    assert_int_equal(st->first_failure_ms, T0 + 1000);
    tick1(c, st, 2, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.health_changed, 0); /* a change of state only, not every sample */
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    tick1(c, st, 3, DQ_SAMPLE_FAIL, 502, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_string_equal(r.kind, "consecutive_failures");
    assert_int_equal(r.failures, 3);
    assert_int_equal(r.detected_ms, T0 + 1000);
    assert_int_equal(r.decided_ms, T0 + 3010);
    assert_string_equal(r.reason, "probe health failed 3 times in a row (last: status 502)");

    {
        cJSON *e = dq_watch_evidence(c, st, &r);
        const cJSON *samples = cJSON_GetObjectItem(e, "samples");
        assert_string_equal(cJSON_GetObjectItem(e, "probe")->valuestring, "health");
        assert_string_equal(cJSON_GetObjectItem(e, "kind")->valuestring, "consecutive_failures");
        assert_string_equal(cJSON_GetObjectItem(e, "check")->valuestring, "status");
        assert_int_equal((int)cJSON_GetObjectItem(e, "observed")->valuedouble, 502);
        assert_string_equal(cJSON_GetObjectItem(e, "threshold")->valuestring, "2xx");
        assert_int_equal(cJSON_GetArraySize(samples), 4);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(samples, 0), "outcome")->valuestring, "pass");
        assert_string_equal(cJSON_GetObjectItem(e, "detected_at")->valuestring, "2023-11-14T22:13:21.000Z");
        assert_string_equal(cJSON_GetObjectItem(e, "first_failure_at")->valuestring, "2023-11-14T22:13:21.000Z");
        assert_string_equal(cJSON_GetObjectItem(e, "decided_at")->valuestring, "2023-11-14T22:13:23.010Z");
        cJSON_Delete(e);
    }
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

static void test_recovery(void **state)
{
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"1m\"," ONE_HTTP "}", NULL);
    dq_watch_state *st = session(c);
    dq_watch_result r;
    (void)state;

    tick1(c, st, 0, DQ_SAMPLE_FAIL, 500, &r);
    tick1(c, st, 1, DQ_SAMPLE_FAIL, 500, &r);
    tick1(c, st, 2, DQ_SAMPLE_PASS, 200, &r);
    assert_int_equal(r.health_changed, 1);
    assert_int_equal(r.degraded, 0);
    assert_int_equal(r.probe, 0);
    assert_int_equal(st->first_failure_ms, 0);
    /* the streak starts over: two more failures are not three in a row */
    tick1(c, st, 3, DQ_SAMPLE_FAIL, 500, &r);
    tick1(c, st, 4, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    assert_int_equal(st->first_failure_ms, T0 + 3000);
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

static void test_error_rate(void **state)
{
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"1m\",\"max_error_rate\":0.3,"
                                   "\"error_rate_window\":6," ONE_HTTP "}", NULL);
    dq_watch_state *st = session(c);
    dq_watch_result r;
    int k = 0;
    (void)state;

    /* pass, fail, pass, fail, pass: 2 of 5, not yet judged (6 needed) */
    for (; k < 5; k++) {
        tick1(c, st, k, k % 2 ? DQ_SAMPLE_FAIL : DQ_SAMPLE_PASS, k % 2 ? 500 : 200, &r);
        assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    }
    tick1(c, st, k, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_string_equal(r.kind, "error_rate");
    assert_int_equal(r.failures, 3);
    assert_int_equal(r.of, 6);
    assert_true(r.rate == 0.5);
    assert_int_equal(r.detected_ms, T0 + 1000);
    {
        cJSON *e = dq_watch_evidence(c, st, &r);
        assert_true(cJSON_GetObjectItem(e, "observed")->valuedouble == 0.5);
        assert_true(cJSON_GetObjectItem(e, "threshold")->valuedouble == 0.3);
        cJSON_Delete(e);
    }
    dq_watch_state_free(st);
    dq_watch_config_free(c);

    /* exactly at the limit is not above it */
    c = config_of("{\"interval\":\"1s\",\"window\":\"1m\",\"max_error_rate\":0.5,"
                  "\"error_rate_window\":4," ONE_HTTP "}", NULL);
    st = session(c);
    for (k = 0; k < 8; k++) {
        tick1(c, st, k, k % 2 ? DQ_SAMPLE_FAIL : DQ_SAMPLE_PASS, 200, &r);
        assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    }
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

/* Two probes: health always passes, errors yields what the policy test says. */
static void tick2(const dq_watch_config *c, dq_watch_state *st, int k, dq_sample_outcome o2,
                  dq_watch_result *res)
{
    dq_sample s[2] = {sample(T0 + k * 1000LL, DQ_SAMPLE_PASS, 200),
                      sample(T0 + k * 1000LL, o2, 0)};
    if (o2 == DQ_SAMPLE_MISSING)
        snprintf(s[1].check, sizeof s[1].check, "%s", DQ_CHECK_NO_DATA);
    assert_int_equal(dq_watch_apply(c, st, s, T0 + k * 1000LL + 10, res), 0);
}

static void test_missing_policies(void **state)
{
    char json[1024];
    dq_watch_config *c;
    dq_watch_state *st;
    dq_watch_result r;
    (void)state;

    /* fail: three missing samples are three failures */
    snprintf(json, sizeof json, "{\"interval\":\"1s\",\"window\":\"1m\"," TWO "}", "fail");
    c = config_of(json, NULL);
    st = session(c);
    tick2(c, st, 0, DQ_SAMPLE_MISSING, &r);
    assert_int_equal(r.health_changed, 1);
    assert_int_equal(r.probe, 1);
    tick2(c, st, 1, DQ_SAMPLE_MISSING, &r);
    tick2(c, st, 2, DQ_SAMPLE_MISSING, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_int_equal(r.probe, 1);
    {
        cJSON *e = dq_watch_evidence(c, st, &r);
        assert_string_equal(cJSON_GetObjectItem(e, "check")->valuestring, "no_data");
        assert_string_equal(cJSON_GetObjectItem(e, "threshold")->valuestring, "data");
        assert_string_equal(cJSON_GetObjectItem(e, "missing")->valuestring, "fail");
        cJSON_Delete(e);
    }
    dq_watch_state_free(st);
    dq_watch_config_free(c);

    /* ignore: missing samples count for nothing, neither way */
    snprintf(json, sizeof json, "{\"interval\":\"1s\",\"window\":\"1m\",\"error_rate_window\":2," TWO "}",
             "ignore");
    c = config_of(json, NULL);
    st = session(c);
    tick2(c, st, 0, DQ_SAMPLE_FAIL, &r);
    for (int k = 1; k < 10; k++) {
        tick2(c, st, k, DQ_SAMPLE_MISSING, &r);
        assert_int_equal(r.verdict, DQ_VERDICT_NONE);
        assert_int_equal(r.degraded, 1); /* the failure is not washed out either */
    }
    tick2(c, st, 10, DQ_SAMPLE_PASS, &r);
    assert_int_equal(r.degraded, 0);
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    dq_watch_state_free(st);
    dq_watch_config_free(c);

    /* hold: a missing sample repeats the last counted outcome */
    snprintf(json, sizeof json, "{\"interval\":\"1s\",\"window\":\"1m\"," TWO "}", "hold");
    c = config_of(json, NULL);
    st = session(c);
    tick2(c, st, 0, DQ_SAMPLE_MISSING, &r); /* nothing to hold yet: skipped */
    assert_int_equal(r.degraded, 0);
    tick2(c, st, 1, DQ_SAMPLE_PASS, &r);
    tick2(c, st, 2, DQ_SAMPLE_MISSING, &r); /* holds pass */
    assert_int_equal(r.degraded, 0);
    tick2(c, st, 3, DQ_SAMPLE_FAIL, &r);
    tick2(c, st, 4, DQ_SAMPLE_MISSING, &r); /* holds fail */
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    tick2(c, st, 5, DQ_SAMPLE_MISSING, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_int_equal(r.detected_ms, T0 + 3000);
    {
        const dq_watch_probe_state *ps = &st->probes[1];
        assert_string_equal(ps->name, "errors");
        assert_int_equal(ps->samples[ps->n_samples - 1].s.outcome, DQ_SAMPLE_MISSING);
        assert_int_equal(ps->samples[ps->n_samples - 1].counted, DQ_COUNT_FAIL);
        assert_int_equal(ps->samples[0].counted, DQ_COUNT_SKIP);
    }
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

static void test_window_end(void **state)
{
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"3500ms\"," ONE_HTTP "}", NULL);
    dq_watch_state *st = session(c);
    dq_watch_result r;
    (void)state;

    assert_int_equal(dq_watch_plan(c, st, T0), DQ_WATCH_PROBE);
    tick1(c, st, 0, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 1, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 2, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 3, DQ_SAMPLE_PASS, 200, &r);
    /* the close is due exactly at the window's end, not at the next interval */
    assert_int_equal(st->next_ms, T0 + 3500);
    assert_int_equal(dq_watch_plan(c, st, T0 + 3500), DQ_WATCH_VERIFY);
    dq_watch_close(c, st, DQ_WATCH_VERIFY, T0 + 3500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_VERIFIED);
    assert_string_equal(r.reason, "window of 3 s passed clean (4 samples)");
    dq_watch_state_free(st);

    /* degraded at the end: probing goes on, recovery verifies */
    st = session(c);
    tick1(c, st, 0, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 1, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 2, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 3, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(st->next_ms, T0 + 4000);
    assert_int_equal(dq_watch_plan(c, st, T0 + 4000), DQ_WATCH_PROBE);
    tick1(c, st, 4, DQ_SAMPLE_PASS, 200, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_VERIFIED);
    dq_watch_state_free(st);

    /* still degraded (missing samples, ignored) when the extension ends: rollback */
    dq_watch_config_free(c);
    c = config_of("{\"interval\":\"1s\",\"window\":\"3500ms\",\"probes\":[{\"name\":\"h\",\"url\":\"http://x/\","
                  "\"missing\":\"ignore\"}]}", NULL);
    st = session(c);
    tick1(c, st, 3, DQ_SAMPLE_FAIL, 500, &r);
    tick1(c, st, 4, DQ_SAMPLE_MISSING, 0, &r);
    tick1(c, st, 5, DQ_SAMPLE_MISSING, 0, &r);
    assert_int_equal(st->next_ms, T0 + 6000);
    assert_int_equal(dq_watch_plan(c, st, T0 + 6000), DQ_WATCH_PROBE);
    tick1(c, st, 6, DQ_SAMPLE_MISSING, 0, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    assert_int_equal(st->next_ms, T0 + 6500); /* the end of the extension */
    assert_int_equal(dq_watch_plan(c, st, T0 + 6500), DQ_WATCH_EXPIRE);
    dq_watch_close(c, st, DQ_WATCH_EXPIRE, T0 + 6500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_string_equal(r.kind, "degraded_at_window_end");
    assert_int_equal(r.detected_ms, T0 + 3000);
    assert_string_equal(r.reason, "probe h still failing 3 s after the window ended (last: status 500)");
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

/* No verdict without evidence: a window that ends before every probe holds
 * failure_threshold samples (the monitor could not save its ticks: broker or Redis down
 * the whole window) is not "passed clean". Found by the chaos suite: a bad version was
 * verified with 0 samples after a broker outage spanning its window. */
static void test_window_end_without_evidence(void **state)
{
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"3500ms\"," ONE_HTTP "}", NULL);
    dq_watch_state *st = session(c);
    dq_watch_result r;
    (void)state;

    /* nothing was saved during the window: keep probing, do not verify */
    assert_int_equal(dq_watch_plan(c, st, T0 + 3500), DQ_WATCH_PROBE);
    assert_int_equal(dq_watch_plan(c, st, T0 + 60000), DQ_WATCH_PROBE);
    /* the bad version is seen at last, late: sampled at the interval, not spun on... */
    tick1(c, st, 20, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    assert_int_equal(r.degraded, 1);
    assert_int_equal(st->next_ms, T0 + 21000);
    assert_int_equal(dq_watch_plan(c, st, T0 + 21000), DQ_WATCH_PROBE);
    tick1(c, st, 21, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_NONE);
    /* ...and rolled back by the usual rule */
    tick1(c, st, 22, DQ_SAMPLE_FAIL, 500, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_string_equal(r.kind, "consecutive_failures");
    dq_watch_state_free(st);

    /* two good samples in the window are not enough either; the third, late, verifies */
    st = session(c);
    tick1(c, st, 0, DQ_SAMPLE_PASS, 200, &r);
    tick1(c, st, 1, DQ_SAMPLE_PASS, 200, &r);
    assert_int_equal(dq_watch_plan(c, st, T0 + 3500), DQ_WATCH_PROBE);
    tick1(c, st, 9, DQ_SAMPLE_PASS, 200, &r);
    assert_int_equal(r.verdict, DQ_VERDICT_VERIFIED);
    assert_string_equal(r.reason, "window of 3 s passed; clean, with the last samples it lacked "
                                  "taken after it ended (3 samples)");
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

static void test_schedule_late_tick(void **state)
{
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"1m\"," ONE_HTTP "}", NULL);
    dq_watch_state *st = session(c);
    dq_watch_result r;
    dq_sample s;
    (void)state;

    /* due at T0, run 850 ms late (armed late or taken over): the next is an interval
     * after it, not 150 ms later, and the window's end does not move */
    s = sample(T0 + 850, DQ_SAMPLE_PASS, 200);
    dq_watch_apply(c, st, &s, T0 + 860, &r);
    assert_int_equal(st->next_ms, T0 + 1850);
    /* on time again: the anchor holds */
    s = sample(T0 + 1850, DQ_SAMPLE_PASS, 200);
    dq_watch_apply(c, st, &s, T0 + 1900, &r);
    assert_int_equal(st->next_ms, T0 + 2850);
    /* a takeover 5 s late skips the missed rounds */
    s = sample(T0 + 7900, DQ_SAMPLE_PASS, 200);
    dq_watch_apply(c, st, &s, T0 + 7910, &r);
    assert_int_equal(st->next_ms, T0 + 8900);
    assert_int_equal(st->ends_ms, T0 + 60000);
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

static void test_state_round_trip(void **state)
{
    char json[1024], err[256];
    dq_watch_config *c;
    dq_watch_state *st, *back;
    dq_watch_result r;
    char *a, *b;
    (void)state;

    snprintf(json, sizeof json, "{\"interval\":\"1s\",\"window\":\"1m\"," TWO "}", "hold");
    c = config_of(json, NULL);
    st = session(c);
    tick2(c, st, 0, DQ_SAMPLE_FAIL, &r);
    tick2(c, st, 1, DQ_SAMPLE_MISSING, &r);
    a = dq_watch_state_encode(st);
    assert_non_null(a);
    back = dq_watch_state_decode(a, strlen(a), err, sizeof err);
    if (!back)
        fail_msg("decode: %s", err);
    b = dq_watch_state_encode(back);
    assert_string_equal(a, b);
    assert_string_equal(back->id, st->id);
    assert_string_equal(back->version, "v2");
    assert_int_equal(back->fence, 42);
    assert_int_equal(back->probes[1].consecutive, 2);
    assert_int_equal(back->probes[1].samples[1].counted, DQ_COUNT_FAIL);
    /* the same trigger gives the same session id */
    {
        dq_watch_state *again = session(c);
        assert_string_equal(again->id, st->id);
        dq_watch_state_free(again);
    }
    assert_null(dq_watch_state_decode("{\"id\":\"x\"}", 10, err, sizeof err));
    assert_string_equal(err, "session state: missing id, trigger or probes");
    free(a);
    free(b);
    dq_watch_state_free(back);
    dq_watch_state_free(st);
    dq_watch_state_free(NULL);
    dq_watch_config_free(c);
}

/* ---- Redis ---- */

typedef struct {
    int port;
    pid_t pid;
    dq_redis *r;
} server;

static int redis_up(void **state)
{
    server *s = calloc(1, sizeof *s);
    char url[64], err[256];

    assert_non_null(s);
    assert_int_equal(dq_test_redis_start(&s->port, &s->pid), 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", s->port);
    s->r = dq_redis_connect(url, 2000, err, sizeof err);
    assert_non_null(s->r);
    *state = s;
    return 0;
}

static int redis_down(void **state)
{
    server *s = *state;
    dq_redis_free(s->r);
    dq_test_redis_stop(s->pid);
    free(s);
    return 0;
}

static dq_watch_state *session_at(const dq_watch_config *c, const char *trigger_id, int64_t at,
                                  const char *version, int64_t now)
{
    dq_watch_state *st = dq_watch_state_new(c, "deploy.succeeded", trigger_id, at, "dep", "api",
                                            "production", version, 1, now);
    assert_non_null(st);
    return st;
}

#define TRIG1 "11111111-1111-4111-8111-111111111111"
#define TRIG2 "22222222-2222-4222-8222-222222222222"
#define TRIG0 "00000000-0000-4000-8000-000000000000"
#define TRIG_SLOW "44444444-4444-4444-8444-444444444444"

static void test_store(void **state)
{
    server *s = *state;
    dq_watch_config *c = config_of("{\"interval\":\"1s\",\"window\":\"1m\"," ONE_HTTP "}", NULL);
    int64_t now = dq_now_ms();
    dq_watch_state *a = session_at(c, TRIG1, now - 1000, "v1", now);
    dq_watch_state *b, *old, *claimed, *other;
    char sup[DQ_UUID_LEN + 1], err[256], ids[4][DQ_UUID_LEN + 1], status[32];
    int64_t next;
    int error;

    assert_int_equal(dq_watch_store_start(s->r, a, sup, sizeof sup, err, sizeof err), DQ_WATCH_START_NEW);
    assert_string_equal(sup, "");
    /* not due before it is armed */
    assert_int_equal(dq_watch_due(s->r, now + 5000, ids, 4, &next), 0);
    assert_int_equal(next, -1);
    /* a redelivered trigger finds it running */
    assert_int_equal(dq_watch_store_start(s->r, a, sup, sizeof sup, err, sizeof err), DQ_WATCH_START_ACTIVE);
    assert_int_equal(dq_watch_arm(s->r, a->id, now, err, sizeof err), 0);
    assert_int_equal(dq_watch_arm(s->r, a->id, now + 99999, err, sizeof err), 0); /* NX: unchanged */
    assert_int_equal(dq_watch_due(s->r, now, ids, 4, &next), 1);
    assert_string_equal(ids[0], a->id);
    assert_int_equal(next, now);

    /* one holder at a time */
    claimed = dq_watch_claim(s->r, a->id, "token-A", now, 5000, &error);
    assert_non_null(claimed);
    assert_string_equal(claimed->version, "v1");
    assert_null(dq_watch_claim(s->r, a->id, "token-B", now, 5000, &error));
    assert_int_equal(error, 0);
    assert_int_equal(dq_watch_still_mine(s->r, a->id, "token-A", 5000), 1);
    assert_int_equal(dq_watch_still_mine(s->r, a->id, "token-B", 5000), 0);
    claimed->next_ms = now + 1000;
    claimed->ticks = 1;
    assert_int_equal(dq_watch_commit(s->r, claimed, "token-A", NULL, 0), 1);
    /* committed: rescheduled, lease released */
    assert_int_equal(dq_watch_due(s->r, now, ids, 4, &next), 0);
    assert_int_equal(next, now + 1000);
    assert_null(dq_watch_claim(s->r, a->id, "token-B", now, 5000, &error)); /* not due yet */
    other = dq_watch_claim(s->r, a->id, "token-B", now + 1000, 100, &error);
    assert_non_null(other);
    assert_int_equal(other->ticks, 1);
    /* B's lease lapses; A takes the session; B can no longer write */
    dq_test_sleep_ms(250);
    old = dq_watch_claim(s->r, a->id, "token-A", now + 1000, 5000, &error);
    assert_non_null(old);
    other->ticks = 99;
    assert_int_equal(dq_watch_commit(s->r, other, "token-B", NULL, 0), 0);
    assert_int_equal(dq_watch_still_mine(s->r, a->id, "token-B", 5000), 0);
    assert_int_equal(dq_watch_release(s->r, a->id, "token-A"), 0);

    /* a newer deploy of the target ends the older session */
    b = session_at(c, TRIG2, now - 500, "v2", now);
    assert_int_equal(dq_watch_store_start(s->r, b, sup, sizeof sup, err, sizeof err), DQ_WATCH_START_NEW);
    assert_string_equal(sup, a->id);
    assert_int_equal(dq_watch_status(s->r, a->id, status, sizeof status), 0);
    assert_string_equal(status, "superseded");
    assert_null(dq_watch_claim(s->r, a->id, "token-A", now + 5000, 5000, &error));
    /* the superseded holder's verdict is refused */
    assert_int_equal(dq_watch_commit(s->r, old, "token-A", "verified", 1000), 0);
    /* an older trigger arriving late does not start */
    {
        dq_watch_state *z = session_at(c, TRIG0, now - 5000, "v0", now);
        assert_int_equal(dq_watch_store_start(s->r, z, sup, sizeof sup, err, sizeof err),
                         DQ_WATCH_START_STALE);
        dq_watch_state_free(z);
    }
    /* the newer one ends with a verdict; its trigger again starts nothing */
    assert_int_equal(dq_watch_arm(s->r, b->id, now, err, sizeof err), 0);
    claimed->next_ms = 0;
    dq_watch_state_free(claimed);
    claimed = dq_watch_claim(s->r, b->id, "token-C", now, 5000, &error);
    assert_non_null(claimed);
    assert_int_equal(dq_watch_commit(s->r, claimed, "token-C", "rollback_requested", 60000), 1);
    assert_int_equal(dq_watch_status(s->r, b->id, status, sizeof status), 0);
    assert_string_equal(status, "rollback_requested");
    assert_int_equal(dq_watch_due(s->r, now + 100000, ids, 4, &next), 0);
    assert_int_equal(dq_watch_store_start(s->r, b, sup, sizeof sup, err, sizeof err), DQ_WATCH_START_ENDED);
    assert_int_equal(dq_watch_arm(s->r, b->id, now, err, sizeof err), 0);
    assert_int_equal(dq_watch_due(s->r, now + 100000, ids, 4, &next), 0); /* ended: not armed */

    dq_watch_state_free(claimed);
    dq_watch_state_free(other);
    dq_watch_state_free(old);
    dq_watch_state_free(a);
    dq_watch_state_free(b);
    dq_watch_config_free(c);
}

static void test_store_unreadable_session_dropped(void **state)
{
    server *s = *state;
    const char *id = "33333333-3333-4333-8333-333333333333";
    redisReply *rep;
    char ids[2][DQ_UUID_LEN + 1];
    int64_t next;
    int error;

    rep = dq_redis_command(s->r, "HSET deployq:monitor:session:%s state {broken status active", id);
    freeReplyObject(rep);
    rep = dq_redis_command(s->r, "ZADD deployq:monitor:due 5 %s", id);
    freeReplyObject(rep);
    assert_null(dq_watch_claim(s->r, id, "t", 10, 1000, &error));
    assert_int_equal(error, 0);
    assert_int_equal(dq_watch_due(s->r, 10, ids, 2, &next), 0);
}

/* ---- a slow endpoint, for real ---- */

static dq_fake health;

static int health_up(void **state)
{
    (void)state;
    if (dq_fake_start(&health, "health") != 0)
        return -1;
    return dq_fake_script(&health, "{\"latency_ms\":1500}");
}

static int health_down(void **state)
{
    (void)state;
    if (health.pid > 0)
        dq_fake_stop(&health);
    return 0;
}

/* Every answer takes 1.5 s; max_latency 500 ms, interval 1 s, failure_threshold 3, and a
 * timeout of 2 s that would let a probe wait for the whole answer. Run as the monitor's
 * ticker does (wait until the session is due, one round, fold it in): each round gives
 * up at the limit as a latency failure, the rounds are one interval apart, and the
 * verdict comes at about threshold x interval after the first failing probe, not at
 * threshold x 1.5 s (4.5 s). */
static void test_slow_endpoint_detected_on_time(void **state)
{
    char json[512];
    dq_watch_config *c;
    dq_watch_state *st;
    dq_watch_result r;
    dq_sample smp;
    int64_t at[8], took, first = 0;
    int n = 0;
    (void)state;

    snprintf(json, sizeof json,
             "{\"interval\":\"1s\",\"window\":\"1m\",\"failure_threshold\":3,\"probes\":["
             "{\"name\":\"health\",\"url\":\"%s/health\",\"expect_status\":200,"
             "\"max_latency\":\"500ms\",\"timeout\":\"2s\"}]}", health.base);
    c = config_of(json, NULL);
    st = dq_watch_state_new(c, "deploy.succeeded", TRIG_SLOW, dq_now_ms(), "dep", "api",
                            "production", "v-slow", 1, dq_now_ms());
    assert_non_null(st);
    memset(&r, 0, sizeof r);
    while (r.verdict == DQ_VERDICT_NONE && n < 8) {
        int64_t wait = st->next_ms - dq_now_ms(), t0;
        if (wait > 0)
            dq_sleep_ms(wait);
        t0 = dq_mono_ms();
        dq_probe_run_all(c->probes, c->n_probes, NULL, &smp);
        took = dq_mono_ms() - t0;
        assert_int_equal(dq_watch_apply(c, st, &smp, dq_now_ms(), &r), 0);
        print_message("slow endpoint: round %d at +%lld ms took %lld ms: %s\n", n,
                      (long long)(smp.at_ms - (n ? at[0] : smp.at_ms)), (long long)took,
                      smp.detail);
        assert_true(took < 800); /* the limit, plus curl's reaction; never the 1.5 s */
        assert_int_equal(smp.outcome, DQ_SAMPLE_FAIL);
        assert_string_equal(smp.check, DQ_CHECK_LATENCY);
        assert_true(smp.latency_ms >= 500);
        at[n++] = smp.at_ms;
        if (!first)
            first = smp.at_ms;
    }
    assert_int_equal(r.verdict, DQ_VERDICT_ROLLBACK);
    assert_string_equal(r.kind, "consecutive_failures");
    assert_int_equal(n, 3);
    for (int i = 1; i < n; i++) /* on the interval grid, not interval after the last ended */
        assert_true(at[i] - at[i - 1] >= 900 && at[i] - at[i - 1] <= 1300);
    assert_int_equal(r.detected_ms, first);
    print_message("slow endpoint: detected %lld ms after the first failing probe "
                  "(threshold 3 x interval 1 s; 4500 when a probe waits for the answer)\n",
                  (long long)(r.decided_ms - r.detected_ms));
    assert_true(r.decided_ms - r.detected_ms >= 2000);
    assert_true(r.decided_ms - r.detected_ms < 3900);
    {
        cJSON *e = dq_watch_evidence(c, st, &r);
        const cJSON *obs = cJSON_GetObjectItemCaseSensitive(e, "observed");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "check")->valuestring,
                            DQ_CHECK_LATENCY);
        assert_true(cJSON_IsNumber(obs) && obs->valuedouble >= 500);
        assert_true(cJSON_GetObjectItemCaseSensitive(e, "threshold")->valuedouble == 500);
        cJSON_Delete(e);
    }
    dq_watch_state_free(st);
    dq_watch_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_consecutive_failures),
        cmocka_unit_test(test_recovery),
        cmocka_unit_test(test_error_rate),
        cmocka_unit_test(test_missing_policies),
        cmocka_unit_test(test_window_end),
        cmocka_unit_test(test_window_end_without_evidence),
        cmocka_unit_test(test_schedule_late_tick),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test_setup_teardown(test_store, redis_up, redis_down),
        cmocka_unit_test_setup_teardown(test_store_unreadable_session_dropped, redis_up, redis_down),
        cmocka_unit_test_setup_teardown(test_slow_endpoint_detected_on_time, health_up, health_down),
    };
    int rc;

    dq_log_init("test_watch", DQ_LOG_OFF, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
