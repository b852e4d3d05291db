/*
 * test_provider_webhook.c - the generic webhook provider against the webhook double:
 * asynchronous deploys polled at status_url, synchronous verdicts, refusals, cancel.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "provider.h"

#define TOKEN "hook-sekret-token-4242"

static dq_fake wh;
static const dq_provider_request REQ = {
    .deployment_id = "aaaabbbb-cccc-4ddd-8eee-ffff00001111",
    .service = "billing",
    .environment = "production",
    .version = "2026.11.26-1",
    .fence = 5,
};
static const dq_chain_options FAST = {.poll_interval_ms = 30};

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_provider_webhook", DQ_LOG_OFF, 0);
    return dq_fake_start(&wh, "webhook");
}

static int teardown(void **state)
{
    dq_fake_stop(&wh);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&wh); }

static dq_provider *webhook(int with_status)
{
    return dq_fake_provider("{\"type\":\"webhook\",\"name\":\"hook\",\"url\":\"%s/deploy\",%s%s%s"
                            "\"cancel_url\":\"%s/cancel/{id}\",\"token\":\"" TOKEN "\",\"deadline\":\"400ms\","
                            "\"retries\":0}",
                            wh.base, with_status ? "\"status_url\":\"" : "", with_status ? wh.base : "",
                            with_status ? "/status/{id}\"," : "", wh.base);
}

static void test_async_success(void **state)
{
    dq_provider *p = webhook(1);
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_id, "wh-1001");
    assert_string_equal(res.provider_status, "succeeded");
    assert_string_equal(res.url, "https://example.test/deploys/wh-1001");
    assert_string_equal(res.log_url, "https://example.test/deploys/wh-1001/log");
    cJSON *calls = dq_fake_calls(&wh);
    assert_int_equal(dq_fake_count(calls, "GET", "/status/wh-1001"), 3);
    assert_true(dq_fake_all_fenced(calls, 5));
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/deploy", 0), "body");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(body, "action")->valuestring, "deploy");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(body, "version")->valuestring, "2026.11.26-1");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(body, "fence")->valueint, 5);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_async_failure_and_timeout(void **state)
{
    dq_provider *p = webhook(1);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&wh, "{\"mode\":\"fail_after_building\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.provider_status, "failed");
    dq_chain_result_clear(&res);

    dq_chain_options o = FAST;
    o.cancel_on_timeout = 1;
    assert_int_equal(dq_fake_script(&wh, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.provider_status, "running");
    cJSON *calls = dq_fake_calls(&wh);
    assert_int_equal(dq_fake_count(calls, "POST", "/cancel/"), 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_sync_verdicts(void **state)
{
    dq_provider *p = webhook(0);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&wh, "{\"sync\":true}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_status, "succeeded");
    dq_chain_result_clear(&res);

    assert_int_equal(dq_fake_script(&wh, "{\"sync\":true,\"mode\":\"fail_after_building\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.provider_status, "failed");
    dq_chain_result_clear(&res);

    dq_deploy_status st;
    dq_provider_error e;
    assert_int_equal(dq_provider_status(p, &REQ, "never-seen", &st, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    dq_provider_free(p);
}

static void test_refusal_unavailable(void **state)
{
    dq_provider *p = webhook(1);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_fake_script(&wh, "{\"mode\":\"http_403\",\"message\":\"token " TOKEN " revoked\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "forbidden");
    assert_string_equal(e.detail, "deploy: HTTP 403: {\"error\": \"token *** revoked\"}");
    dq_provider_free(p);
}

/* A 5xx on the deploy is retried with the same Idempotency-Key (the receiver deduplicates
 * on it); a create is never repeated without one. */
static void test_5xx_retried_with_idempotency_key(void **state)
{
    dq_provider *p = dq_fake_provider("{\"type\":\"webhook\",\"name\":\"hook\",\"url\":\"%s/deploy\","
                                      "\"status_url\":\"%s/status/{id}\",\"retries\":2,"
                                      "\"deadline\":\"2s\"}",
                                      wh.base, wh.base);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_non_null(p);
    assert_int_equal(dq_fake_script(&wh, "{\"mode\":\"http_5xx\",\"fail_times\":1}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    cJSON *calls = dq_fake_calls(&wh);
    assert_int_equal(dq_fake_count(calls, "POST", "/deploy"), 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/deploy", i),
                                                          "headers");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(h, "Idempotency-Key");

        assert_true(cJSON_IsString(k));
        assert_string_equal(k->valuestring, REQ.deployment_id);
    }
    cJSON_Delete(calls);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_async_success, reset),
        cmocka_unit_test_setup(test_async_failure_and_timeout, reset),
        cmocka_unit_test_setup(test_sync_verdicts, reset),
        cmocka_unit_test_setup(test_refusal_unavailable, reset),
        cmocka_unit_test_setup(test_5xx_retried_with_idempotency_key, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
