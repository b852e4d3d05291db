/*
 * test_provider_circleci.c - the CircleCI adapter against the CircleCI double: trigger
 * and workflow polling, the 200-with-message that created nothing, failed and errored
 * pipelines, refusals, the newer /pipeline/run trigger and cancel; a trigger that created
 * its pipeline and then lost the answer (502, or none in time) is adopted, not repeated;
 * a cancel on timeout is confirmed or said not to be; the cost from the workflow's jobs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "provider.h"

#define TOKEN "circle-sekret-token-0c0c0c"

static dq_fake cc;
static const dq_provider_request REQ = {
    .deployment_id = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716",
    .service = "worker",
    .environment = "production",
    .version = "9a8b7c6d",
    .fence = 1234567890123LL,
};
static const dq_chain_options FAST = {.poll_interval_ms = 30};

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_provider_circleci", DQ_LOG_OFF, 0);
    return dq_fake_start(&cc, "circleci");
}

static int teardown(void **state)
{
    dq_fake_stop(&cc);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&cc); }

static dq_provider *circleci(const char *extra)
{
    return dq_fake_provider("{\"type\":\"circleci\"%s,\"base_url\":\"%s\",\"slug\":\"gh/acme/shop\",\"branch\":\"main\","
                            "\"token\":\"" TOKEN "\",\"poll_interval\":\"30ms\",\"deadline\":\"5s\",\"timeout\":\"2s\","
                            "\"retries\":0}",
                            extra ? extra : "", cc.base);
}

static void test_success(void **state)
{
    dq_provider *p = circleci(NULL);
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider, "circleci");
    assert_string_equal(res.provider_status, "success");
    assert_int_equal(strlen(res.provider_id), 36);
    assert_string_equal(res.url, "https://app.circleci.com/pipelines/gh/acme/shop/1001");
    assert_int_equal(strncmp(res.log_url, "https://app.circleci.com/pipelines/workflows/", 45), 0);

    cJSON *calls = dq_fake_calls(&cc);
    assert_int_equal(dq_fake_count(calls, "POST", "/api/v2/project/gh/acme/shop/pipeline"), 1);
    assert_true(dq_fake_count(calls, "GET", "/workflow") >= 3);
    assert_true(dq_fake_all_fenced(calls, 1234567890123LL));
    const cJSON *c = dq_fake_call(calls, "POST", "/pipeline", 0);
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(c, "auth");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(auth, "scheme")->valuestring, "Circle-Token");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "body");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(body, "branch")->valuestring, "main");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(body, "parameters");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(params, "service")->valuestring, "worker");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(params, "version")->valuestring, "9a8b7c6d");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(params, "deployment_id")->valuestring, REQ.deployment_id);
    assert_true(cJSON_GetObjectItemCaseSensitive(params, "fence")->valuedouble == 1234567890123.0);
    assert_int_equal(dq_fake_max_concurrent(calls), 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_message_only_is_no_run(void **state)
{
    dq_provider *p = circleci(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_fake_script(&cc, "{\"mode\":\"no_pipeline\",\"message\":\"Pipeline not created\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "no_run_created");
    assert_int_equal(e.http_status, 200);
    assert_string_equal(e.detail, "trigger pipeline: HTTP 200 without a pipeline: Pipeline not created");
    dq_provider_free(p);
}

static void test_failures(void **state)
{
    static const struct {
        const char *script;
        dq_chain_outcome outcome;
        const char *raw;
    } cases[] = {
        {"{\"mode\":\"fail_after_building\"}", DQ_CHAIN_FAILED, "failed"},
        {"{\"mode\":\"errored\"}", DQ_CHAIN_FAILED, "errored"},
        {"{\"mode\":\"in_flight_forever\"}", DQ_CHAIN_TIMEOUT, "running"},
    };
    dq_provider *p = circleci(",\"deadline\":\"400ms\"");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dq_chain_result res;
        dq_fake_events ev;
        dq_chain_callbacks cb = dq_fake_callbacks(&ev);
        assert_int_equal(dq_fake_script(&cc, cases[i].script), 0);
        assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), cases[i].outcome);
        assert_string_equal(res.provider_status, cases[i].raw);
        assert_int_equal(ev.failed, 0);
        dq_chain_result_clear(&res);
    }
    dq_provider_free(p);
}

static void test_refusals(void **state)
{
    static const struct {
        const char *script;
        const char *cls;
    } cases[] = {
        {"{\"mode\":\"http_402\"}", "payment_required"},
        {"{\"mode\":\"http_401\"}", "unauthorized"},
        {"{\"mode\":\"http_5xx\"}", "http_5xx"},
        {"{\"mode\":\"rate_limit\",\"retry_after\":30}", "rate_limited"},
    };
    dq_provider *p = circleci(",\"retries\":2,\"retry_budget\":\"1s\"");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;
        assert_int_equal(dq_fake_script(&cc, cases[i].script), 0);
        assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
        assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
        assert_string_equal(e.error_class, cases[i].cls);
        assert_null(strstr(e.detail, TOKEN));
    }
    dq_provider_free(p);
}

static void test_pipeline_run_and_cancel(void **state)
{
    dq_provider *p = circleci(",\"definition_id\":\"3f0e8f7c-def1\",\"workflow\":\"deploy\"");
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_deploy_status st;

    assert_int_equal(dq_fake_script(&cc, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    /* first look: no workflow yet, the pipeline is the answer */
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_IN_FLIGHT);
    assert_string_equal(st.raw, "created");
    dq_provider_status_clear(&st);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_IN_FLIGHT);
    assert_string_equal(st.raw, "on_hold");
    dq_provider_status_clear(&st);
    assert_int_equal(dq_provider_cancel(p, &REQ, id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_FAILED);
    assert_string_equal(st.raw, "canceled");
    dq_provider_status_clear(&st);

    cJSON *calls = dq_fake_calls(&cc);
    const cJSON *c = dq_fake_call(calls, "POST", "/pipeline/run", 0);
    assert_non_null(c);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "body");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(body, "definition_id")->valuestring, "3f0e8f7c-def1");
    assert_int_equal(dq_fake_count(calls, "POST", "/cancel"), 1);
    cJSON *active = cJSON_GetObjectItemCaseSensitive(calls, "active");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(active, "worker/production")->valueint, 0);
    cJSON_Delete(calls);
    dq_provider_free(p);
}

static void test_create_then_lost_answer(void **state)
{
    static const char *const scripts[] = {"{\"create_then\":\"502\",\"steps\":1}",
                                          "{\"create_then\":\"hang\",\"hang_ms\":3000,\"steps\":1}"};
    dq_provider *p = circleci(NULL);

    for (size_t i = 0; i < 2; i++) {
        dq_fake_events ev;
        dq_chain_callbacks cb = dq_fake_callbacks(&ev);
        dq_chain_result res;
        assert_int_equal(dq_fake_reset(&cc), 0);
        assert_int_equal(dq_fake_script(&cc, scripts[i]), 0);
        assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
        assert_int_equal(ev.started, 1);
        assert_int_equal(ev.failed, 0);
        cJSON *calls = dq_fake_calls(&cc);
        assert_int_equal(dq_fake_count(calls, "POST", "/api/v2/project/gh/acme/shop/pipeline"), 1);
        const cJSON *look = dq_fake_call(calls, "GET", "/api/v2/project/gh/acme/shop/pipeline", 0);
        assert_non_null(look);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(look, "query"),
                                                             "branch")->valuestring,
                            "main");
        assert_true(dq_fake_all_fenced(calls, REQ.fence));
        cJSON_Delete(calls);
        dq_chain_result_clear(&res);
    }

    /* A 5xx that created nothing: looked up, then the error stands (retries 0). */
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    assert_int_equal(dq_fake_reset(&cc), 0);
    assert_int_equal(dq_fake_script(&cc, "{\"mode\":\"http_5xx\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "http_5xx");
    cJSON *calls = dq_fake_calls(&cc);
    assert_int_equal(dq_fake_count(calls, "GET", "/api/v2/project/gh/acme/shop/pipeline"), 1);
    cJSON_Delete(calls);
    dq_provider_free(p);
}

static void test_cancel_on_timeout(void **state)
{
    dq_provider *p = circleci(",\"deadline\":\"300ms\"");
    dq_chain_options o = {.poll_interval_ms = 30, .cancel_on_timeout = 1, .cancel_wait_ms = 400};
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&cc, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "confirmed");
    assert_false(res.outcome_unknown);
    assert_non_null(strstr(res.reason, "cancelled (now canceled)"));
    dq_chain_result_clear(&res);

    assert_int_equal(dq_fake_script(&cc, "{\"mode\":\"in_flight_forever\",\"cancel\":\"refuse\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "unconfirmed");
    assert_true(res.outcome_unknown);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

/* The watched workflow's jobs, with the times, parallelism and resource classes the double
 * is given, priced per resource class (provider.h "what a run cost"): each job billed by the
 * started second times its parallelism, at per_minute / 60. By hand, with medium 0.006,
 * large 0.012, default 0.03 a minute (0.0001, 0.0002, 0.0005 a second):
 *   build   medium           10:00:00 -> 10:02:30      150 s            x 0.0001 = 0.0150
 *   test    large, x4        10:00:00 -> 10:01:00.200  61 s x 4 = 244 s x 0.0002 = 0.0488
 *   hold    approval                                    0
 *   e2e     arm.medium       10:03:00 -> 10:03:01      1 s (default)    x 0.0005 = 0.0005
 *   notify  never started (blocked)                     0
 *   deploy  medium           10:05:00 -> 10:09:00.500  241 s            x 0.0001 = 0.0241
 * medium 2 jobs 391 s (6.516667 min) 0.0391, large 1 job 244 s (4.066667 min) 0.0488,
 * default 1 job 1 s 0.0005: 636 s = 10.6 minutes, 0.0884. Two jobs a page: three pages. */
static void test_cost_from_jobs(void **state)
{
    dq_provider *p = circleci(",\"cost\":{\"per_minute\":{\"medium\":0.006,\"large\":0.012,\"default\":0.03}}");
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(
        dq_fake_script(&cc, "{\"steps\":1,\"jobs_page_size\":2,\"jobs\":["
                            "{\"name\":\"build\",\"started_at\":\"2026-03-01T10:00:00Z\","
                            "\"stopped_at\":\"2026-03-01T10:02:30Z\"},"
                            "{\"name\":\"test\",\"resource_class\":\"large\",\"parallelism\":4,"
                            "\"started_at\":\"2026-03-01T10:00:00Z\",\"stopped_at\":\"2026-03-01T10:01:00.200Z\"},"
                            "{\"name\":\"hold\",\"type\":\"approval\",\"status\":\"success\","
                            "\"started_at\":\"2026-03-01T10:01:00Z\",\"stopped_at\":\"2026-03-01T10:03:00Z\"},"
                            "{\"name\":\"e2e\",\"resource_class\":\"arm.medium\",\"executor\":\"machine\","
                            "\"started_at\":\"2026-03-01T10:03:00Z\",\"stopped_at\":\"2026-03-01T10:03:01Z\"},"
                            "{\"name\":\"notify\"},"
                            "{\"name\":\"deploy\",\"started_at\":\"2026-03-01T10:05:00Z\","
                            "\"stopped_at\":\"2026-03-01T10:09:00.500Z\"}]}"),
        0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_PROVIDER);
    assert_true(res.cost.minutes > 10.6 - 1e-9 && res.cost.minutes < 10.6 + 1e-9);
    assert_true(res.cost.amount > 0.0884 - 1e-9 && res.cost.amount < 0.0884 + 1e-9);
    assert_int_equal(res.cost.n_runners, 3);
    assert_string_equal(res.cost.runners[0].label, "medium");
    assert_int_equal(res.cost.runners[0].jobs, 2);
    assert_true(res.cost.runners[0].minutes > 391 / 60.0 - 1e-9 && res.cost.runners[0].minutes < 391 / 60.0 + 1e-9);
    assert_true(res.cost.runners[0].amount > 0.0391 - 1e-9 && res.cost.runners[0].amount < 0.0391 + 1e-9);
    assert_string_equal(res.cost.runners[1].label, "large");
    assert_int_equal(res.cost.runners[1].jobs, 1);
    assert_true(res.cost.runners[1].amount > 0.0488 - 1e-9 && res.cost.runners[1].amount < 0.0488 + 1e-9);
    assert_string_equal(res.cost.runners[2].label, "default");
    assert_int_equal(res.cost.runners[2].jobs, 1);
    assert_true(res.cost.runners[2].amount > 0.0005 - 1e-9 && res.cost.runners[2].amount < 0.0005 + 1e-9);
    cJSON *calls = dq_fake_calls(&cc);
    int details = dq_fake_count(calls, "GET", "/api/v2/project/gh/acme/shop/job/");
    assert_int_equal(details, 4); /* the jobs that ran, approval aside */
    assert_int_equal(dq_fake_count(calls, "GET", "/job") - details, 3);
    /* a later page asked with the token the first one gave */
    const char *token = NULL;
    for (int i = 0; !token && dq_fake_call(calls, "GET", "/job", i); i++) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "GET", "/job", i), "query");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(q, "page-token");
        token = cJSON_IsString(t) ? t->valuestring : NULL;
    }
    assert_non_null(token);
    assert_string_equal(token, "2");
    assert_true(dq_fake_all_fenced(calls, REQ.fence));
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* the jobs endpoints fail: the deploy still succeeds, its cost is unknown */
    assert_int_equal(dq_fake_script(&cc, "{\"steps\":1,\"jobs_status\":500}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_UNKNOWN);
    assert_non_null(strstr(res.cost.detail, "list workflow jobs: HTTP 500"));
    assert_null(strstr(res.cost.detail, TOKEN));
    dq_chain_result_clear(&res);
    dq_provider_free(p);

    /* a job on a resource class with no rate and no default: unknown, never a guess */
    p = circleci(",\"cost\":{\"per_minute\":{\"large\":0.012}}");
    assert_int_equal(dq_fake_script(&cc, "{\"steps\":1}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_UNKNOWN);
    assert_string_equal(res.cost.detail,
                        "no rate for job deploy (resource class medium): add it, or a default, under cost.per_minute");
    dq_chain_result_clear(&res);
    dq_provider_free(p);

    /* one rate for every class: still the jobs' own figures, under "default" */
    p = circleci(",\"cost\":{\"per_minute\":0.006}");
    assert_int_equal(dq_fake_script(&cc, "{\"steps\":1}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_PROVIDER);
    assert_int_equal(res.cost.n_runners, 1);
    assert_string_equal(res.cost.runners[0].label, "default");
    assert_int_equal(res.cost.runners[0].jobs, 1);
    dq_chain_result_clear(&res);

    /* the pipeline errored before any workflow: nothing ran, nothing billed */
    assert_int_equal(dq_fake_script(&cc, "{\"mode\":\"errored\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_FAILED);
    assert_int_equal(res.cost.basis, DQ_COST_PROVIDER);
    assert_true(res.cost.amount == 0);
    assert_int_equal(res.cost.n_runners, 0);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_success, reset),
        cmocka_unit_test_setup(test_message_only_is_no_run, reset),
        cmocka_unit_test_setup(test_failures, reset),
        cmocka_unit_test_setup(test_refusals, reset),
        cmocka_unit_test_setup(test_pipeline_run_and_cancel, reset),
        cmocka_unit_test_setup(test_create_then_lost_answer, reset),
        cmocka_unit_test_setup(test_cancel_on_timeout, reset),
        cmocka_unit_test_setup(test_cost_from_jobs, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
