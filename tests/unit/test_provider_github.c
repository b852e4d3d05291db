/*
 * test_provider_github.c - the GitHub Actions adapter against the GitHub double: dispatch
 * with return_run_details, the fallback that finds the run by deployment id when the
 * server refuses that field, "no run created", conclusions, refusals and cancel.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "provider.h"

#define TOKEN "ghp-sekret-token-77aa01"

static dq_fake gh;
static const dq_provider_request REQ = {
    .deployment_id = "0b9f3c1e-2d4a-4e8b-9c7d-5a6b7c8d9e0f",
    .service = "web",
    .environment = "staging",
    .version = "v1.4.2",
    .fence = 9,
};
static const dq_chain_options FAST = {.poll_interval_ms = 30};

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_provider_github", DQ_LOG_OFF, 0);
    return dq_fake_start(&gh, "github");
}

static int teardown(void **state)
{
    dq_fake_stop(&gh);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&gh); }

static dq_provider *github(const char *extra)
{
    return dq_fake_provider("{\"type\":\"github-actions\"%s,\"name\":\"gha\",\"base_url\":\"%s/\",\"owner\":\"acme\","
                            "\"repo\":\"shop\",\"workflow\":\"deploy.yml\",\"ref\":\"release\",\"token\":\"" TOKEN
                            "\",\"poll_interval\":\"30ms\",\"deadline\":\"5s\",\"timeout\":\"2s\",\"retries\":1,"
                            "\"find_run_timeout\":\"3s\",\"inputs\":{\"region\":\"eu\"}}",
                            extra ? extra : "", gh.base);
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b != NULL)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_success_with_run_details(void **state)
{
    dq_provider *p = github(NULL);
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_status, "success");
    assert_string_equal(res.provider_id, "1001");
    assert_string_equal(res.url, "https://github.com/acme/shop/actions/runs/1001");
    assert_int_equal(ev.started, 1);

    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/repos/acme/shop/actions/workflows/deploy.yml/dispatches"), 1);
    assert_int_equal(dq_fake_count(calls, "GET", "/repos/acme/shop/actions/runs/1001"), 3);
    assert_int_equal(dq_fake_count(calls, "GET", "/runs?"), 0);
    assert_true(dq_fake_all_fenced(calls, 9));
    const cJSON *c = dq_fake_call(calls, "POST", "/dispatches", 0);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "body");
    assert_string_equal(str_at(body, "ref", NULL), "release");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "return_run_details")));
    assert_string_equal(str_at(body, "inputs", "service"), "web");
    assert_string_equal(str_at(body, "inputs", "environment"), "staging");
    assert_string_equal(str_at(body, "inputs", "version"), "v1.4.2");
    assert_string_equal(str_at(body, "inputs", "deployment_id"), REQ.deployment_id);
    assert_string_equal(str_at(body, "inputs", "fence"), "9");
    assert_string_equal(str_at(body, "inputs", "region"), "eu");
    assert_string_equal(str_at(c, "headers", "Accept"), "application/vnd.github+json");
    assert_string_equal(str_at(c, "headers", "X-GitHub-Api-Version"), "2022-11-28");
    assert_string_equal(str_at(c, "auth", "scheme"), "Bearer");
    assert_int_equal(dq_fake_max_concurrent(calls), 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_refused_run_details_falls_back(void **state)
{
    dq_provider *p = github(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    /* Another deploy's run on the same workflow must not be taken for ours. */
    dq_provider_request other = REQ;
    other.deployment_id = "11111111-2222-4333-8444-555555555555";
    assert_int_equal(dq_provider_deploy(p, &other, id, sizeof id, &e), 0);
    assert_string_equal(id, "1001");

    assert_int_equal(dq_fake_script(&gh, "{\"refuse_return_run_details\":true,\"steps\":1}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_string_equal(id, "1002");

    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/dispatches"), 3);
    const cJSON *second = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/dispatches", 1), "body");
    const cJSON *third = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/dispatches", 2), "body");
    assert_non_null(cJSON_GetObjectItemCaseSensitive(second, "return_run_details"));
    assert_null(cJSON_GetObjectItemCaseSensitive(third, "return_run_details"));
    const cJSON *list = dq_fake_call(calls, "GET", "/actions/workflows/deploy.yml/runs", 0);
    assert_non_null(list);
    assert_string_equal(str_at(list, "query", "event"), "workflow_dispatch");
    assert_string_equal(str_at(list, "query", "branch"), "release");
    assert_int_equal(strncmp(str_at(list, "query", "created"), ">=20", 4), 0);
    assert_true(dq_fake_all_fenced(calls, 9));
    cJSON_Delete(calls);

    dq_chain_result res;
    assert_int_equal(dq_chain_resume(p, id, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_no_run_created(void **state)
{
    dq_provider *p = github(",\"find_run_timeout\":\"600ms\"");
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"no_run\",\"refuse_return_run_details\":true}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "no_run_created");
    assert_non_null(strstr(e.detail, REQ.deployment_id));

    /* A server that ignores return_run_details (204) is handled the same way. */
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"no_run\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_string_equal(e.error_class, "no_run_created");
    dq_provider_free(p);
}

static void test_conclusions(void **state)
{
    static const struct {
        const char *script;
        dq_chain_outcome outcome;
        const char *raw;
        const char *failure;
    } cases[] = {
        {"{\"mode\":\"fail_after_building\"}", DQ_CHAIN_FAILED, "failure", "build_failed"},
        {"{\"mode\":\"startup_failure\"}", DQ_CHAIN_FAILED, "startup_failure", "build_failed"},
        {"{\"mode\":\"in_flight_forever\"}", DQ_CHAIN_TIMEOUT, "in_progress", "timeout"},
    };
    dq_provider *p = github(",\"deadline\":\"300ms\"");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dq_chain_result res;
        assert_int_equal(dq_fake_script(&gh, cases[i].script), 0);
        assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), cases[i].outcome);
        assert_string_equal(res.provider_status, cases[i].raw);
        assert_string_equal(res.failure, cases[i].failure);
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
        {"{\"mode\":\"http_403\"}", "forbidden"},
        {"{\"mode\":\"http_401\"}", "unauthorized"},
        {"{\"mode\":\"http_5xx\"}", "http_5xx"},
    };
    dq_provider *p = github(NULL);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;
        assert_int_equal(dq_fake_script(&gh, cases[i].script), 0);
        assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
        assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
        assert_string_equal(e.error_class, cases[i].cls);
        assert_null(strstr(e.detail, TOKEN));
    }
    dq_provider_free(p);
}

static void test_cancel(void **state)
{
    dq_provider *p = github(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_deploy_status st;

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_provider_cancel(p, &REQ, id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_FAILED);
    assert_string_equal(st.raw, "cancelled");
    dq_provider_status_clear(&st);
    assert_int_equal(dq_provider_status(p, &REQ, "999999", &st, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    assert_string_equal(e.error_class, "config");
    assert_int_equal(e.http_status, 404);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_success_with_run_details, reset),
        cmocka_unit_test_setup(test_refused_run_details_falls_back, reset),
        cmocka_unit_test_setup(test_no_run_created, reset),
        cmocka_unit_test_setup(test_conclusions, reset),
        cmocka_unit_test_setup(test_refusals, reset),
        cmocka_unit_test_setup(test_cancel, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
