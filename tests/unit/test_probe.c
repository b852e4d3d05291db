/*
 * test_probe.c - probe.h: reading probe settings (and refusing bad ones with the key
 * named), judging HTTP answers (status, latency, body substring and regex, no answer),
 * judging Prometheus answers (scalar, vector, several series, empty, NaN, errors), and
 * real single-attempt runs against tests/fakes/health.py and prometheus.py, including a
 * 1.5 s endpoint given up at max_latency and a round of probes run at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "probe.h"

/* Test input is trusted text; parsed the house way all the same. */
static cJSON *parse(const char *s)
{
    const char *end = NULL;
    return cJSON_ParseWithLengthOpts(s, strlen(s) + 1, &end, 1); /* the NUL included */
}

static dq_probe *probe_of(const char *json)
{
    char err[512] = "";
    cJSON *o = parse(json);
    dq_probe *p;

    assert_non_null(o);
    p = dq_probe_from_json(o, "m.probes[0]", 1000, err, sizeof err);
    cJSON_Delete(o);
    if (!p)
        fail_msg("probe refused: %s", err);
    return p;
}

static void refused(const char *json, const char *expected_err)
{
    char err[512] = "";
    cJSON *o = parse(json);
    dq_probe *p;

    assert_non_null(o);
    p = dq_probe_from_json(o, "m.probes[0]", 1000, err, sizeof err);
    cJSON_Delete(o);
    assert_null(p);
    assert_string_equal(err, expected_err);
}

static void test_config_http(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"health\",\"type\":\"http\",\"url\":\"http://x/health\","
                           "\"expect_status\":204,\"max_latency\":\"800ms\",\"body_match\":\"ok\","
                           "\"missing\":\"hold\",\"headers\":[\"X-Token: abc\"]}");
    (void)state;
    assert_string_equal(p->name, "health");
    assert_int_equal(p->type, DQ_PROBE_HTTP);
    assert_int_equal(p->expect_status, 204);
    assert_int_equal(p->max_latency_ms, 800);
    /* the default timeout (1000) is below twice max_latency: twice max_latency it is */
    assert_int_equal(p->timeout_ms, 1600);
    assert_string_equal(p->body_match, "ok");
    assert_int_equal(p->missing, DQ_MISSING_HOLD);
    assert_string_equal(p->headers[0], "X-Token: abc");
    assert_null(p->headers[1]);
    dq_probe_free(p);

    p = probe_of("{\"name\":\"h\",\"url\":\"https://x/\",\"timeout\":\"3s\"}");
    assert_int_equal(p->type, DQ_PROBE_HTTP);
    assert_int_equal(p->expect_status, 0);
    assert_int_equal(p->timeout_ms, 3000);
    assert_int_equal(p->missing, DQ_MISSING_FAIL);
    dq_probe_free(p);
    dq_probe_free(NULL);
}

static void test_config_prometheus(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"errors\",\"type\":\"prometheus\",\"url\":\"http://p/api/v1/query\","
                           "\"query\":\"sum(rate(x[1m]))\",\"op\":\"ge\",\"threshold\":0.05,"
                           "\"missing\":\"ignore\"}");
    (void)state;
    assert_int_equal(p->type, DQ_PROBE_PROMETHEUS);
    assert_string_equal(p->query, "sum(rate(x[1m]))");
    assert_int_equal(p->op, DQ_OP_GE);
    assert_true(p->threshold == 0.05);
    assert_int_equal(p->missing, DQ_MISSING_IGNORE);
    dq_probe_free(p);
}

static void test_config_refusals(void **state)
{
    (void)state;
    refused("[]", "m.probes[0]: expected a mapping");
    refused("{\"url\":\"http://x/\"}", "m.probes[0].name: required, 1 to 64 characters");
    refused("{\"name\":\"a\",\"url\":\"ftp://x/\"}",
            "m.probes[0].url: required, an http:// or https:// URL");
    refused("{\"name\":\"a\",\"type\":\"tcp\",\"url\":\"http://x/\"}",
            "m.probes[0].type: expected http, prometheus or sentry");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"colour\":1}",
            "m.probes[0]: unknown key 'colour' (known: name, type, url, headers, timeout, missing, "
            "expect_status, max_latency, body_match, body_regex, query, op, threshold, org, project_ids, token, metric)");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"missing\":\"maybe\"}",
            "m.probes[0].missing: expected fail, ignore or hold");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"expect_status\":99}",
            "m.probes[0].expect_status: expected an HTTP status 100..599");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"max_latency\":\"fast\"}",
            "m.probes[0].max_latency: expected a duration (e.g. 500ms)");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"body_regex\":\"(\"}",
            "m.probes[0].body_regex: Unmatched ( or \\(");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"max_latency\":\"2s\",\"timeout\":\"2s\"}",
            "m.probes[0].timeout: must be longer than max_latency");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"op\":\"gt\"}",
            "m.probes[0].op: only for type: prometheus or sentry");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"headers\":[\"no colon\"]}",
            "m.probes[0].headers[0]: expected \"Name: value\"");
    refused("{\"name\":\"a\",\"type\":\"prometheus\",\"url\":\"http://x/\",\"op\":\"gt\",\"threshold\":1}",
            "m.probes[0].query: required for type: prometheus");
    refused("{\"name\":\"a\",\"type\":\"prometheus\",\"url\":\"http://x/\",\"query\":\"q\",\"op\":\"above\","
            "\"threshold\":1}",
            "m.probes[0].op: required, one of gt, ge, lt, le, eq, ne");
    refused("{\"name\":\"a\",\"type\":\"prometheus\",\"url\":\"http://x/\",\"query\":\"q\",\"op\":\"gt\","
            "\"threshold\":\"1\"}",
            "m.probes[0].threshold: required, a number");
    refused("{\"name\":\"a\",\"type\":\"prometheus\",\"url\":\"http://x/\",\"query\":\"q\",\"op\":\"gt\","
            "\"threshold\":1,\"max_latency\":\"1s\"}",
            "m.probes[0].max_latency: only for type: http");
    refused("{\"name\":\"a\",\"url\":\"http://x/\",\"timeout\":\"2m\"}",
            "m.probes[0].timeout: expected a duration up to 60s");
}

static void test_judge_http(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"h\",\"url\":\"http://x/\",\"expect_status\":200,"
                           "\"max_latency\":\"500ms\",\"body_match\":\"ok\"}");
    dq_probe *any = probe_of("{\"name\":\"h\",\"url\":\"http://x/\",\"body_regex\":\"^v[0-9]+ ready$\"}");
    dq_sample s;
    (void)state;

    dq_probe_judge_http(p, 1, 200, "all ok", 6, 120, "", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_string_equal(s.check, DQ_CHECK_OK);
    assert_string_equal(s.detail, "status 200 in 120 ms");

    dq_probe_judge_http(p, 1, 503, "ok", 2, 10, "", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_STATUS);
    assert_string_equal(s.detail, "status 503, expected 200");
    assert_int_equal(s.status, 503);

    /* status is judged before latency, latency before the body */
    dq_probe_judge_http(p, 1, 200, "nope", 4, 812, "", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_LATENCY);
    assert_string_equal(s.detail, "latency 812 ms, limit 500 ms");
    assert_int_equal(s.latency_ms, 812);

    dq_probe_judge_http(p, 1, 200, "fine\x01", 5, 10, "", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_BODY);
    assert_string_equal(s.observed, "fine.");
    assert_string_equal(s.detail, "body \"fine.\" does not contain the expected text");

    dq_probe_judge_http(p, 0, 0, NULL, 0, 0, "Failed to connect to 127.0.0.1 port 9: refused", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.check, DQ_CHECK_NO_RESPONSE);
    assert_string_equal(s.detail, "no response: Failed to connect to 127.0.0.1 port 9: refused");
    assert_int_equal(s.latency_ms, -1);

    /* given up at max_latency: a latency failure, never reported below the limit */
    dq_probe_judge_http_cut(p, 503, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_LATENCY);
    assert_int_equal(s.latency_ms, 503);
    assert_int_equal(s.status, 0);
    assert_string_equal(s.detail, "latency over 500 ms: no complete answer within the limit "
                                  "(gave up after 503 ms)");
    dq_probe_judge_http_cut(p, 499, &s);
    assert_int_equal(s.latency_ms, 501);
    {
        cJSON *o = dq_sample_observed_json(&s), *t = dq_probe_threshold_json(p, s.check);
        assert_true(cJSON_IsNumber(o) && o->valuedouble == 501);
        assert_true(cJSON_IsNumber(t) && t->valuedouble == 500);
        cJSON_Delete(o);
        cJSON_Delete(t);
    }

    /* no expected status: any 2xx */
    dq_probe_judge_http(any, 1, 204, "v12 ready", 9, 10, "", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    dq_probe_judge_http(any, 1, 302, "v12 ready", 9, 10, "", &s);
    assert_string_equal(s.detail, "status 302, expected 2xx");
    dq_probe_judge_http(any, 1, 200, "v12 starting", 12, 10, "", &s);
    assert_string_equal(s.check, DQ_CHECK_BODY);
    assert_string_equal(s.detail, "body \"v12 starting\" does not match the expected pattern");
    dq_probe_free(p);
    dq_probe_free(any);
}

static void test_judge_body_secret_masked(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"h\",\"url\":\"http://x/\",\"body_match\":\"ready\"}");
    dq_sample s;
    (void)state;

    dq_log_redact("hunter2-Secret");
    dq_probe_judge_http(p, 1, 200, "token=hunter2-Secret", 20, 1, "", &s);
    assert_string_equal(s.observed, "token=***");
    assert_null(strstr(s.detail, "hunter2"));
    dq_log_redact_clear();
    dq_probe_free(p);
}

#define PROM(rtype, result) \
    "{\"status\":\"success\",\"data\":{\"resultType\":\"" rtype "\",\"result\":" result "}}"

static void judge_prom(const dq_probe *p, long status, const char *body, dq_sample *s)
{
    dq_probe_judge_prometheus(p, 1, status, body, strlen(body), "", s);
}

static void test_judge_prometheus(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"errors\",\"type\":\"prometheus\",\"url\":\"http://p/\","
                           "\"query\":\"q\",\"op\":\"gt\",\"threshold\":0.05}");
    dq_sample s;
    (void)state;

    judge_prom(p, 200, PROM("vector", "[{\"metric\":{},\"value\":[1700000000.1,\"0.01\"]}]"), &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_true(s.has_value && s.value == 0.01);
    assert_string_equal(s.detail, "value 0.01");

    judge_prom(p, 200, PROM("scalar", "[1700000000.1,\"0.09\"]"), &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_VALUE);
    assert_string_equal(s.detail, "value 0.09 gt 0.05");

    /* several series: any breach fails the probe, and that value is reported */
    judge_prom(p, 200, PROM("vector", "[{\"metric\":{},\"value\":[1,\"0.01\"]},"
                                      "{\"metric\":{},\"value\":[1,\"0.2\"]},"
                                      "{\"metric\":{},\"value\":[1,\"0.02\"]}]"), &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_true(s.value == 0.2);

    judge_prom(p, 200, PROM("vector", "[]"), &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.check, DQ_CHECK_NO_DATA);
    assert_string_equal(s.detail, "no data: empty result");

    judge_prom(p, 200, PROM("vector", "[{\"metric\":{},\"value\":[1,\"NaN\"]}]"), &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.detail, "no data: NaN");

    judge_prom(p, 200, PROM("scalar", "[1,\"+Inf\"]"), &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_true(isinf(s.value));
    {
        cJSON *o = dq_sample_observed_json(&s);
        assert_string_equal(o->valuestring, "+Inf");
        cJSON_Delete(o);
    }

    judge_prom(p, 503, "{\"status\":\"error\"}", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.detail, "no data: prometheus answered 503");

    judge_prom(p, 200, "{\"status\":\"success\"}", &s);
    assert_string_equal(s.detail, "no data: unreadable prometheus answer");
    judge_prom(p, 200, "not json", &s);
    assert_string_equal(s.detail, "no data: unreadable prometheus answer");
    judge_prom(p, 200, PROM("matrix", "[]"), &s);
    assert_string_equal(s.detail, "no data: query result is not a scalar or vector");

    dq_probe_judge_prometheus(p, 0, 0, NULL, 0, "Connection refused", &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.detail, "no data: prometheus unreachable: Connection refused");
    dq_probe_free(p);
}

static void test_compare(void **state)
{
    (void)state;
    assert_true(dq_probe_compare(DQ_OP_GT, 2, 1));
    assert_false(dq_probe_compare(DQ_OP_GT, 1, 1));
    assert_true(dq_probe_compare(DQ_OP_GE, 1, 1));
    assert_true(dq_probe_compare(DQ_OP_LT, 0, 1));
    assert_false(dq_probe_compare(DQ_OP_LE, 2, 1));
    assert_true(dq_probe_compare(DQ_OP_EQ, 1, 1));
    assert_true(dq_probe_compare(DQ_OP_NE, 1, 2));
    assert_string_equal(dq_probe_op_name(DQ_OP_LE), "le");
}


/* Sentry: defaults (sentry.io, op gt, metric errors), the token redacted, refusals. */
static void test_config_sentry(void **state)
{
    char buf[256];
    dq_probe *p = probe_of("{\"name\":\"errors\",\"type\":\"sentry\",\"org\":\"acme\","
                           "\"token\":\"sntrys_probe-Secret-1\",\"threshold\":10}");
    (void)state;
    assert_int_equal(p->type, DQ_PROBE_SENTRY);
    assert_string_equal(p->url, "https://sentry.io");
    assert_string_equal(p->org, "acme");
    assert_int_equal(p->op, DQ_OP_GT);
    assert_int_equal(p->metric, DQ_SENTRY_ERRORS);
    assert_int_equal(p->n_projects, 0);
    assert_true(p->threshold == 10);
    assert_string_equal(dq_probe_type_name(p->type), "sentry");
    /* read once, the token is a secret for every log line after */
    dq_redact("token sntrys_probe-Secret-1 here", buf, sizeof buf);
    assert_null(strstr(buf, "sntrys_probe-Secret-1"));
    dq_probe_free(p);

    p = probe_of("{\"name\":\"e\",\"type\":\"sentry\",\"url\":\"http://sentry.internal/\",\"org\":\"acme\","
                 "\"token\":\"t\",\"project_ids\":[42,7],\"metric\":\"errors_per_minute\",\"op\":\"ge\","
                 "\"threshold\":2.5,\"missing\":\"hold\"}");
    assert_string_equal(p->url, "http://sentry.internal"); /* no trailing slash */
    assert_int_equal(p->n_projects, 2);
    assert_int_equal(p->project_ids[0], 42);
    assert_int_equal(p->project_ids[1], 7);
    assert_int_equal(p->metric, DQ_SENTRY_ERRORS_PER_MINUTE);
    assert_int_equal(p->op, DQ_OP_GE);
    dq_probe_free(p);

    refused("{\"name\":\"e\",\"type\":\"sentry\",\"token\":\"t\",\"threshold\":1}",
            "m.probes[0].org: required, the organization slug (lower-case letters, digits, - and _)");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"Acme Inc\",\"token\":\"t\",\"threshold\":1}",
            "m.probes[0].org: required, the organization slug (lower-case letters, digits, - and _)");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"threshold\":1}",
            "m.probes[0].token: required, a Sentry auth token (e.g. token: ${SENTRY_TOKEN})");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\"}",
            "m.probes[0].threshold: required, a number");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,\"op\":\"over\"}",
            "m.probes[0].op: expected one of gt, ge, lt, le, eq, ne");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,"
            "\"metric\":\"crashes\"}",
            "m.probes[0].metric: expected errors or errors_per_minute");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,"
            "\"project_ids\":[\"api\"]}",
            "m.probes[0].project_ids[0]: expected a numeric project id");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,"
            "\"project_ids\":[]}",
            "m.probes[0].project_ids: expected a list of 1 to 32 numeric project ids");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,"
            "\"url\":\"sentry.io\"}",
            "m.probes[0].url: expected an http:// or https:// URL");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,"
            "\"query\":\"x\"}",
            "m.probes[0].query: only for type: prometheus");
    refused("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":1,"
            "\"expect_status\":200}",
            "m.probes[0].expect_status: only for type: http");
    refused("{\"name\":\"h\",\"url\":\"http://x/\",\"org\":\"acme\"}", "m.probes[0].org: only for type: sentry");
    refused("{\"name\":\"p\",\"type\":\"prometheus\",\"url\":\"http://x/\",\"query\":\"q\",\"op\":\"gt\","
            "\"threshold\":1,\"token\":\"t\"}",
            "m.probes[0].token: only for type: sentry");
}

static void judge_sentry(const dq_probe *p, long status, const char *body, int64_t window_ms, dq_sample *s)
{
    memset(s, 0, sizeof *s);
    dq_probe_judge_sentry(p, 1, status, body, strlen(body), "", window_ms, s);
}

static void test_judge_sentry(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"e\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\",\"threshold\":10}");
    dq_probe *rate = probe_of("{\"name\":\"r\",\"type\":\"sentry\",\"org\":\"acme\",\"token\":\"t\","
                              "\"metric\":\"errors_per_minute\",\"threshold\":2}");
    const char *meta = ",\"meta\":{\"fields\":{\"count()\":\"integer\"},\"units\":{\"count()\":null}}}";
    char body[256];
    dq_sample s;
    (void)state;

    snprintf(body, sizeof body, "{\"data\":[{\"count()\":12}]%s", meta);
    judge_sentry(p, 200, body, 30000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_VALUE);
    assert_true(s.has_value && s.value == 12);
    assert_string_equal(s.detail, "errors 12 gt 10");
    snprintf(body, sizeof body, "{\"data\":[{\"count()\":10}]%s", meta);
    judge_sentry(p, 200, body, 30000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_string_equal(s.detail, "errors 10");
    judge_sentry(p, 200, "{\"data\":[]}", 30000, &s); /* no row: nothing matched */
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_true(s.has_value && s.value == 0);

    /* per minute: 6 errors in 2 minutes is 3 a minute; in the first 30 s the window
     * counts as a whole minute */
    snprintf(body, sizeof body, "{\"data\":[{\"count()\":6}]%s", meta);
    judge_sentry(rate, 200, body, 120000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.detail, "errors_per_minute 3 gt 2");
    snprintf(body, sizeof body, "{\"data\":[{\"count()\":2}]%s", meta);
    judge_sentry(rate, 200, body, 30000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_true(s.value == 2);

    /* Sentry's errors are no data, like Prometheus': neither healthy nor unhealthy */
    judge_sentry(p, 401, "{\"detail\":\"Invalid token\"}", 30000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.check, DQ_CHECK_NO_DATA);
    assert_string_equal(s.detail, "no data: sentry answered 401: Invalid token");
    judge_sentry(p, 429, "{\"detail\":\"slow down\"}", 30000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    judge_sentry(p, 200, "<html>", 30000, &s);
    assert_string_equal(s.detail, "no data: unreadable sentry answer");
    judge_sentry(p, 200, "{\"data\":[{\"count\":3}]}", 30000, &s);
    assert_string_equal(s.detail, "no data: sentry answer without count()");
    memset(&s, 0, sizeof s);
    dq_probe_judge_sentry(p, 0, 0, NULL, 0, "Failed to connect to sentry.io port 443", 30000, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.detail, "no data: sentry unreachable: Failed to connect to sentry.io port 443");
    dq_probe_free(p);
    dq_probe_free(rate);
}

/* The events API request: count() of release:"V" in the environment, from the window's
 * start to now, per project. */
static void test_sentry_url(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"e\",\"type\":\"sentry\",\"url\":\"http://127.0.0.1:9/\",\"org\":\"acme\","
                           "\"token\":\"t\",\"project_ids\":[42,7],\"threshold\":1}");
    dq_probe_target t = {"v2 \"rc\"", "production", 1796306400000LL}; /* 2026-12-03T14:00:00Z */
    char *url;
    (void)state;

    url = dq_probe_sentry_url(p, &t, 1796306430500LL);
    assert_non_null(url);
    assert_string_equal(url, "http://127.0.0.1:9/api/0/organizations/acme/events/?field=count%28%29"
                             "&query=release%3A%22v2%20%5C%22rc%5C%22%22&environment=production"
                             "&start=2026-12-03T14:00:00.000Z&end=2026-12-03T14:00:30.500Z&referrer=deployq"
                             "&project=42&project=7");
    free(url);
    dq_probe_free(p);
}

static void test_threshold_json(void **state)
{
    dq_probe *p = probe_of("{\"name\":\"h\",\"url\":\"http://x/\",\"max_latency\":\"250ms\",\"body_match\":\"up\"}");
    cJSON *j;
    (void)state;

    j = dq_probe_threshold_json(p, DQ_CHECK_STATUS);
    assert_string_equal(j->valuestring, "2xx");
    cJSON_Delete(j);
    j = dq_probe_threshold_json(p, DQ_CHECK_LATENCY);
    assert_int_equal((int)j->valuedouble, 250);
    cJSON_Delete(j);
    j = dq_probe_threshold_json(p, DQ_CHECK_BODY);
    assert_string_equal(j->valuestring, "up");
    cJSON_Delete(j);
    j = dq_probe_threshold_json(p, DQ_CHECK_NO_RESPONSE);
    assert_string_equal(j->valuestring, "data");
    cJSON_Delete(j);
    dq_probe_free(p);
}

/* The doubles live in a setup/teardown pair, so a failing assertion cannot leave them
 * running (and the test hanging on their open output). */
static dq_fake health, prom;

static int doubles_up(void **state)
{
    (void)state;
    if (dq_fake_start(&health, "health") != 0)
        return -1;
    return dq_fake_start(&prom, "prometheus");
}

static int doubles_down(void **state)
{
    (void)state;
    if (health.pid > 0)
        dq_fake_stop(&health);
    if (prom.pid > 0)
        dq_fake_stop(&prom);
    return 0;
}

/* Real runs: one attempt, bounded by the timeout, against the doubles. */
static void test_run_against_doubles(void **state)
{
    char json[512];
    dq_probe *p, *q, *dead;
    dq_sample s;
    int64_t t0;
    (void)state;

    snprintf(json, sizeof json,
             "{\"name\":\"h\",\"url\":\"%s/health\",\"expect_status\":200,\"max_latency\":\"300ms\","
             "\"body_match\":\"ok\",\"timeout\":\"3s\"}", health.base);
    p = probe_of(json);
    dq_probe_run(p, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_int_equal(s.status, 200);
    assert_true(s.at_ms > 0);

    assert_int_equal(dq_fake_script(&health, "{\"status\":500,\"body\":\"boom\"}"), 0);
    dq_probe_run(p, &s);
    assert_string_equal(s.detail, "status 500, expected 200");

    /* slower than max_latency: given up at the limit (300 ms), not at the answer
     * (2.5 s) nor at the timeout (3 s), and a latency failure (the margins are wide: a
     * loaded machine must not make this a test of its scheduler) */
    assert_int_equal(dq_fake_script(&health, "{\"latency_ms\":2500}"), 0);
    t0 = dq_mono_ms();
    dq_probe_run(p, &s);
    assert_true(dq_mono_ms() - t0 < 1800);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.check, DQ_CHECK_LATENCY);
    assert_true(s.latency_ms > 300 && s.latency_ms < 1800);
    dq_probe_free(p);

    /* slower than the timeout (no max_latency): no response, after one attempt only */
    snprintf(json, sizeof json, "{\"name\":\"h\",\"url\":\"%s/health\",\"timeout\":\"1s\"}",
             health.base);
    p = probe_of(json);
    assert_int_equal(dq_fake_script(&health, "{\"latency_ms\":2500}"), 0);
    t0 = dq_mono_ms();
    dq_probe_run(p, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.check, DQ_CHECK_NO_RESPONSE);
    assert_true(dq_mono_ms() - t0 < 1800);
    dq_probe_free(p);

    snprintf(json, sizeof json,
             "{\"name\":\"e\",\"type\":\"prometheus\",\"url\":\"%s/api/v1/query\","
             "\"query\":\"sum(rate(http_errors_total{job=\\\"api\\\"}[1m]))\",\"op\":\"gt\",\"threshold\":0.05}",
             prom.base);
    q = probe_of(json);
    assert_int_equal(dq_fake_script(&prom, "{\"value\":0.07}"), 0);
    dq_probe_run(q, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_true(s.value == 0.07);
    {
        /* the query arrived intact (escaped on the way) */
        cJSON *calls = dq_fake_calls(&prom);
        const cJSON *last = cJSON_GetArrayItem(cJSON_GetObjectItem(calls, "calls"), 0);
        assert_string_equal(cJSON_GetObjectItem(last, "query")->valuestring,
                            "sum(rate(http_errors_total{job=\"api\"}[1m]))");
        cJSON_Delete(calls);
    }
    assert_int_equal(dq_fake_script(&prom, "{\"value\":null}"), 0);
    dq_probe_run(q, &s);
    assert_string_equal(s.detail, "no data: empty result");
    assert_int_equal(dq_fake_script(&prom, "{\"value\":\"NaN\",\"result_type\":\"scalar\"}"), 0);
    dq_probe_run(q, &s);
    assert_string_equal(s.detail, "no data: NaN");
    assert_int_equal(dq_fake_script(&prom, "{\"value\":0.01}"), 0);
    dq_probe_run(q, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    dq_probe_free(q);

    /* nothing listens: missing, not a crash and not a retry loop */
    dq_fake_stop(&health);
    snprintf(json, sizeof json, "{\"name\":\"d\",\"url\":\"%s/health\"}", health.base);
    dead = probe_of(json);
    dq_probe_run(dead, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.check, DQ_CHECK_NO_RESPONSE);
    dq_probe_free(dead);
}

/* A 1.5 s endpoint with a 500 ms limit and a 2 s timeout: every attempt gives up at the
 * limit (not after the whole slow answer), as a latency failure; and probes of one round
 * run at once, so two such probes take one limit, not two. The upper bounds leave a loaded
 * machine room (CI's is noisy) but stay below what the failures would take: the whole
 * answer is 1500 ms, and one probe after the other would start 500 ms apart. */
static void test_run_slow_endpoint_cut(void **state)
{
    char json[512];
    dq_probe *ps[2];
    dq_sample s, two[2];
    int64_t t0, took;
    (void)state;

    assert_int_equal(dq_fake_script(&health, "{\"latency_ms\":1500}"), 0);
    for (int i = 0; i < 2; i++) {
        snprintf(json, sizeof json,
                 "{\"name\":\"h%d\",\"url\":\"%s/health\",\"expect_status\":200,"
                 "\"max_latency\":\"500ms\",\"timeout\":\"2s\"}", i, health.base);
        ps[i] = probe_of(json);
    }
    for (int k = 0; k < 3; k++) {
        t0 = dq_mono_ms();
        dq_probe_run(ps[0], &s);
        took = dq_mono_ms() - t0;
        print_message("slow endpoint, probe %d: returned after %lld ms: %s\n", k,
                      (long long)took, s.detail);
        assert_true(took >= 500 && took < 1300);
        assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
        assert_string_equal(s.check, DQ_CHECK_LATENCY);
        assert_true(s.latency_ms > 500 && s.latency_ms < 1300);
    }

    t0 = dq_mono_ms();
    dq_probe_run_all(ps, 2, NULL, two);
    took = dq_mono_ms() - t0;
    print_message("two slow probes in one round: %lld ms, started %lld ms apart\n",
                  (long long)took, (long long)llabs(two[1].at_ms - two[0].at_ms));
    assert_true(took < 1300);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(two[i].check, DQ_CHECK_LATENCY);
        assert_true(two[i].at_ms > 0);
    }
    /* at once: one after the other would start a whole limit (500 ms) apart */
    assert_true(llabs(two[1].at_ms - two[0].at_ms) < 300);
    dq_probe_run_all(ps, 0, NULL, two); /* nothing to run: nothing happens */
    dq_probe_free(ps[0]);
    dq_probe_free(ps[1]);
}


static dq_fake sentry;

static int sentry_up(void **state)
{
    (void)state;
    return dq_fake_start(&sentry, "sentry");
}

static int sentry_down(void **state)
{
    (void)state;
    if (sentry.pid > 0)
        dq_fake_stop(&sentry);
    return 0;
}

static int sentry_calls(void)
{
    cJSON *calls = dq_fake_calls(&sentry);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(calls, "calls"));
    cJSON_Delete(calls);
    return n;
}

/* Real runs against tests/fakes/sentry.py: the window and the release are what is asked
 * about, the token is sent as a Bearer token, a 429's Retry-After is honoured. */
static void test_run_sentry(void **state)
{
    char json[512];
    dq_probe *p;
    dq_sample s;
    int64_t now = dq_now_ms();
    dq_probe_target t = {"v2-bad", "production", now - 60000};
    dq_probe_target clean = {"v1", "production", now - 60000};
    (void)state;

    snprintf(json, sizeof json,
             "{\"events\":[{\"release\":\"v2-bad\",\"environment\":\"production\",\"count\":7,\"at\":%lld},"
             "{\"release\":\"v2-bad\",\"environment\":\"production\",\"count\":100,\"at\":%lld},"
             "{\"release\":\"v2-bad\",\"environment\":\"staging\",\"count\":50},"
             "{\"release\":\"v2-bad\",\"environment\":\"production\",\"project\":9,\"count\":40},"
             "{\"release\":\"v1\",\"environment\":\"production\",\"count\":1}],"
             "\"token\":\"sntrys_run-Secret-2\"}",
             (long long)(now / 1000 - 10), (long long)(now / 1000 - 3600));
    assert_int_equal(dq_fake_script(&sentry, json), 0);
    snprintf(json, sizeof json,
             "{\"name\":\"e\",\"type\":\"sentry\",\"url\":\"%s\",\"org\":\"acme\",\"token\":\"sntrys_run-Secret-2\","
             "\"project_ids\":[42],\"threshold\":5,\"timeout\":\"2s\"}", sentry.base);
    p = probe_of(json);

    /* 7 in the window; the 100 of an hour ago, staging's 50 and project 9's 40 are not */
    dq_probe_run_for(p, &t, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_FAIL);
    assert_string_equal(s.detail, "errors 7 gt 5");
    dq_probe_run_for(p, &clean, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_PASS);
    assert_string_equal(s.detail, "errors 1");
    {
        cJSON *calls = dq_fake_calls(&sentry);
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(calls, "calls"), 0);
        const cJSON *auth = cJSON_GetObjectItem(c, "auth");
        char *text = cJSON_PrintUnformatted(calls);

        assert_string_equal(cJSON_GetObjectItem(c, "path")->valuestring, "/api/0/organizations/acme/events/");
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "query"), "query")->valuestring,
                            "release:\"v2-bad\"");
        assert_string_equal(cJSON_GetObjectItem(auth, "scheme")->valuestring, "Bearer");
        assert_null(strstr(text, "sntrys_run-Secret-2"));
        free(text);
        cJSON_Delete(calls);
    }

    /* no deploy to look at (a probe run outside a watch): missing, nothing asked */
    dq_probe_run(p, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.detail, "no data: sentry unreachable: no release to ask about");
    assert_int_equal(sentry_calls(), 2);

    /* 429 with Retry-After: 2 s: missing, and Sentry is not asked again before then */
    assert_int_equal(dq_fake_script(&sentry, "{\"rate_limit\":1,\"retry_after\":2,"
                                             "\"events\":[{\"release\":\"v2-bad\",\"count\":9}]}"), 0);
    dq_probe_run_for(p, &t, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_int_equal(s.status, 429);
    assert_int_equal(sentry_calls(), 3);
    dq_probe_run_for(p, &t, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_int_equal(s.status, 0);
    assert_non_null(strstr(s.detail, "rate limited by sentry for "));
    assert_int_equal(sentry_calls(), 3);
    dq_sleep_ms(2100);
    dq_probe_run_for(p, &t, &s);
    assert_int_equal(sentry_calls(), 4);
    assert_string_equal(s.detail, "errors 9 gt 5");

    /* a wrong token: Sentry's 401 is no data, and the token is in no detail */
    assert_int_equal(dq_fake_script(&sentry, "{\"token\":\"another\"}"), 0);
    dq_probe_run_for(p, &t, &s);
    assert_int_equal(s.outcome, DQ_SAMPLE_MISSING);
    assert_string_equal(s.detail, "no data: sentry answered 401: Invalid token");
    dq_probe_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_http),
        cmocka_unit_test(test_config_prometheus),
        cmocka_unit_test(test_config_refusals),
        cmocka_unit_test(test_judge_http),
        cmocka_unit_test(test_judge_body_secret_masked),
        cmocka_unit_test(test_judge_prometheus),
        cmocka_unit_test(test_compare),
        cmocka_unit_test(test_config_sentry),
        cmocka_unit_test(test_judge_sentry),
        cmocka_unit_test(test_sentry_url),
        cmocka_unit_test(test_threshold_json),
        cmocka_unit_test_setup_teardown(test_run_sentry, sentry_up, sentry_down),
        cmocka_unit_test_setup_teardown(test_run_against_doubles, doubles_up, doubles_down),
        cmocka_unit_test_setup_teardown(test_run_slow_endpoint_cut, doubles_up, doubles_down),
    };
    dq_log_init("test_probe", DQ_LOG_ERROR, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
