/*
 * test_provider_railway.c - the Railway adapter's rollback against the Railway double.
 *
 * deploymentRollback answers only `true`: Railway then builds the old image as a new
 * deployment while the failing version keeps serving. The adapter must name that new
 * deployment (found with deployments(input, first), newest first) so that the caller can
 * poll it to a terminal state; when the old deployment's canRollback is false it
 * redeploys it instead. The double models the delay (script keys rollback_steps,
 * rollback_seconds) and says what is live at GET /live/<service>/<environment>.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "provider.h"

#define TOKEN "rw-sekret-token-0c41d2"

static dq_fake rw;
static const dq_provider_request REQ = {
    .deployment_id = "5e0b7a52-6d0c-4f3a-8b1e-2c9d7f4a1b63",
    .service = "api",
    .environment = "production",
    .version = "v1",
    .fence = 17,
};
static const dq_chain_options FAST = {.poll_interval_ms = 30};

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_provider_railway", DQ_LOG_OFF, 0);
    return dq_fake_start(&rw, "railway");
}

static int teardown(void **state)
{
    dq_fake_stop(&rw);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&rw); }

static dq_provider *railway(const char *extra)
{
    /* extra comes first: cJSON finds the first of duplicate keys, so it overrides. */
    return dq_fake_provider("{\"type\":\"railway\"%s,\"name\":\"rw\",\"base_url\":\"%s/graphql/v2\","
                            "\"token\":\"" TOKEN "\",\"service_id\":\"svc-9\",\"environment_id\":\"env-9\","
                            "\"rollback\":\"rollback\",\"poll_interval\":\"30ms\",\"deadline\":\"10s\","
                            "\"timeout\":\"2s\",\"retries\":1,\"retry_budget\":\"3s\"}",
                            extra ? extra : "", rw.base);
}

/* Deploy version through the double and poll it to SUCCESS; its id goes to id. */
static void deploy_live(dq_provider *p, const char *version, char *id, size_t idlen)
{
    dq_provider_request req = REQ;
    dq_chain_result res;

    req.version = version;
    assert_int_equal(dq_chain_run(&p, 1, &req, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    dq_strlcpy(id, res.provider_id, idlen);
    dq_chain_result_clear(&res);
}

/* What the double serves now: the live deployment's id and version ("" when none). */
static void live(char *id, size_t idlen, char *version, size_t vlen)
{
    char url[256];
    dq_http_response r;
    cJSON *j = NULL;

    snprintf(url, sizeof url, "%s/live/svc-9/env-9", rw.base);
    dq_http_opts o = {.method = "GET", .url = url, .timeout_ms = 5000};
    if (dq_http_request(&o, &r) == 0 && r.status == 200)
        j = cJSON_ParseWithLengthOpts(r.body, r.body_len, NULL, 0);
    dq_http_response_free(&r);
    assert_non_null(j);
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "live");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(l, "deployment_id");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(l, "version");
    dq_strlcpy(id, cJSON_IsString(d) ? d->valuestring : "", idlen);
    dq_strlcpy(version, cJSON_IsString(v) ? v->valuestring : "", vlen);
    cJSON_Delete(j);
}

/* How many recorded GraphQL calls have a query containing needle. */
static int gql_count(const cJSON *calls, const char *needle)
{
    const cJSON *c;
    int n = 0;

    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls, "calls"))
    {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "query");
        if (cJSON_IsString(q) && strstr(q->valuestring, needle) != NULL)
            n++;
    }
    return n;
}

/* 1 when every recorded GraphQL call carried X-Deployq-Fence equal to fence (the GETs of
 * /live are the test's own observations, not API calls). */
static int gql_all_fenced(const cJSON *calls, const char *want)
{
    const cJSON *c;
    int n = 0;

    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls, "calls"))
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "method");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "fence");
        if (!cJSON_IsString(m) || strcmp(m->valuestring, "POST") != 0)
            continue;
        if (!cJSON_IsString(f) || strcmp(f->valuestring, want) != 0)
            return 0;
        n++;
    }
    return n > 0;
}

/* deploymentRollback starts a deployment: the adapter names it, it is in flight at
 * first (the bad version still serves), and polling it reaches SUCCESS, after which the
 * old version is what is live. */
static void test_rollback_names_the_new_deployment(void **state)
{
    dq_provider *p = railway(NULL);
    char v1[DQ_PROVIDER_ID_LEN], v2[DQ_PROVIDER_ID_LEN], nid[DQ_PROVIDER_ID_LEN];
    char lid[DQ_PROVIDER_ID_LEN], lver[64];
    dq_provider_error e;
    dq_deploy_status st;
    dq_chain_result res;

    assert_non_null(p);
    deploy_live(p, "v1", v1, sizeof v1);
    deploy_live(p, "v2-bad", v2, sizeof v2);
    assert_int_equal(dq_fake_script(&rw, "{\"rollback_steps\":3}"), 0);

    assert_int_equal(dq_provider_rollback(p, &REQ, v1, nid, sizeof nid, &e), 0);
    assert_int_equal(strlen(nid), 36);
    assert_string_not_equal(nid, v1);
    assert_string_not_equal(nid, v2);
    live(lid, sizeof lid, lver, sizeof lver);
    assert_string_equal(lver, "v2-bad"); /* accepted is not restored */

    memset(&st, 0, sizeof st);
    assert_int_equal(dq_provider_status(p, &REQ, nid, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_IN_FLIGHT);
    dq_provider_status_clear(&st);

    assert_int_equal(dq_chain_resume(p, nid, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_id, nid);
    assert_string_equal(res.provider_status, "SUCCESS");
    dq_chain_result_clear(&res);
    live(lid, sizeof lid, lver, sizeof lver);
    assert_string_equal(lid, nid);
    assert_string_equal(lver, "v1");

    cJSON *calls = dq_fake_calls(&rw);
    assert_int_equal(gql_count(calls, "deploymentRollback(id: $id)"), 1);
    assert_int_equal(gql_count(calls, "deploymentRedeploy"), 0);
    assert_int_equal(gql_count(calls, "canRollback"), 1);
    assert_true(gql_count(calls, "deployments(input: $input, first: $first)") >= 2);
    const cJSON *rb = NULL, *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls, "calls"))
    {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "query");
        if (cJSON_IsString(q) && strstr(q->valuestring, "deploymentRollback") != NULL)
            rb = c;
    }
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rb, "body"), "variables");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(vars, "id")->valuestring, v1);
    assert_true(gql_all_fenced(calls, "17"));
    cJSON_Delete(calls);
    dq_provider_free(p);
}

/* A restore that takes wall time at Railway: polling waits for it, however fast it polls. */
static void test_rollback_takes_its_time(void **state)
{
    dq_provider *p = railway(NULL);
    char v1[DQ_PROVIDER_ID_LEN], v2[DQ_PROVIDER_ID_LEN], nid[DQ_PROVIDER_ID_LEN];
    char lid[DQ_PROVIDER_ID_LEN], lver[64];
    dq_provider_error e;
    dq_chain_result res;

    deploy_live(p, "v1", v1, sizeof v1);
    deploy_live(p, "v2-bad", v2, sizeof v2);
    assert_int_equal(dq_fake_script(&rw, "{\"rollback_seconds\":1.2}"), 0);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_provider_rollback(p, &REQ, v1, nid, sizeof nid, &e), 0);
    assert_int_equal(dq_chain_resume(p, nid, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_true(dq_mono_ms() - t0 >= 1100);
    assert_string_equal(res.provider_status, "SUCCESS");
    dq_chain_result_clear(&res);
    live(lid, sizeof lid, lver, sizeof lver);
    assert_string_equal(lid, nid);
    assert_string_equal(lver, "v1");
    dq_provider_free(p);
}

/* canRollback false: no deploymentRollback (Railway would refuse it), a redeploy of the
 * old deployment instead, whose new deployment is polled the same way. */
static void test_cannot_rollback_redeploys(void **state)
{
    dq_provider *p = railway(NULL);
    char v1[DQ_PROVIDER_ID_LEN], v2[DQ_PROVIDER_ID_LEN], nid[DQ_PROVIDER_ID_LEN];
    char lid[DQ_PROVIDER_ID_LEN], lver[64];
    dq_provider_error e;
    dq_chain_result res;

    deploy_live(p, "v1", v1, sizeof v1);
    deploy_live(p, "v2-bad", v2, sizeof v2);
    assert_int_equal(dq_fake_script(&rw, "{\"can_rollback\":false,\"rollback_steps\":2}"), 0);
    assert_int_equal(dq_provider_rollback(p, &REQ, v1, nid, sizeof nid, &e), 0);
    assert_int_equal(strlen(nid), 36);
    assert_string_not_equal(nid, v1);
    assert_int_equal(dq_chain_resume(p, nid, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    dq_chain_result_clear(&res);
    live(lid, sizeof lid, lver, sizeof lver);
    assert_string_equal(lid, nid);
    assert_string_equal(lver, "v1");

    cJSON *calls = dq_fake_calls(&rw);
    assert_int_equal(gql_count(calls, "deploymentRollback"), 0);
    assert_int_equal(gql_count(calls, "deploymentRedeploy(id: $id, usePreviousImageTag: true)"), 1);
    assert_true(gql_all_fenced(calls, "17"));
    cJSON_Delete(calls);
    dq_provider_free(p);
}

/* A restore that crashes at Railway is a failure, and the bad version stays live. */
static void test_rollback_that_crashes_fails(void **state)
{
    dq_provider *p = railway(NULL);
    char v1[DQ_PROVIDER_ID_LEN], v2[DQ_PROVIDER_ID_LEN], nid[DQ_PROVIDER_ID_LEN];
    char lid[DQ_PROVIDER_ID_LEN], lver[64];
    dq_provider_error e;
    dq_chain_result res;

    deploy_live(p, "v1", v1, sizeof v1);
    deploy_live(p, "v2-bad", v2, sizeof v2);
    assert_int_equal(dq_fake_script(&rw, "{\"rollback_mode\":\"crash\",\"rollback_steps\":2}"), 0);
    assert_int_equal(dq_provider_rollback(p, &REQ, v1, nid, sizeof nid, &e), 0);
    assert_int_equal(dq_chain_resume(p, nid, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.provider_status, "CRASHED");
    dq_chain_result_clear(&res);
    live(lid, sizeof lid, lver, sizeof lver);
    assert_string_equal(lid, v2);
    assert_string_equal(lver, "v2-bad");
    dq_provider_free(p);
}

/* A deployment Railway does not know: refused, and nothing was started. */
static void test_rollback_of_unknown_deployment_fails(void **state)
{
    dq_provider *p = railway(NULL);
    char nid[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_provider_rollback(p, &REQ, "no-such-deployment", nid, sizeof nid, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    assert_string_equal(e.error_class, "bad_response");
    assert_null(strstr(e.detail, TOKEN));
    assert_string_equal(nid, "");
    cJSON *calls = dq_fake_calls(&rw);
    assert_int_equal(gql_count(calls, "deploymentRollback"), 0);
    cJSON_Delete(calls);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_rollback_names_the_new_deployment, reset),
        cmocka_unit_test_setup(test_rollback_takes_its_time, reset),
        cmocka_unit_test_setup(test_cannot_rollback_redeploys, reset),
        cmocka_unit_test_setup(test_rollback_that_crashes_fails, reset),
        cmocka_unit_test_setup(test_rollback_of_unknown_deployment_fails, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
