/*
 * test_provider.c - the provider registry and config, the Railway adapter against the
 * Railway double, and the failover chain (Railway + GitHub doubles): failover from an
 * unavailable primary with one callback, no failover on a real build failure, timeouts,
 * resume without a second deploy, the fence on every call and no token in any detail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "../fakes/fake_server.h"
#include "execute.h"
#include "log.h"
#include "provider.h"

#define TOKEN "rw-sekret-token-5f3a9c"
#define GH_TOKEN "ghp-sekret-token-77aa01"

static dq_fake rw, gh;
static const dq_provider_request REQ = {
    .deployment_id = "7d1c2b7e-0b5e-4a55-9d6a-1f0c7a3e9b10",
    .service = "api",
    .environment = "production",
    .version = "3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a",
    .fence = 42,
};
static const dq_chain_options FAST = {.poll_interval_ms = 30};

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_provider", DQ_LOG_OFF, 0);
    if (dq_fake_start(&rw, "railway") != 0)
        return -1;
    return dq_fake_start(&gh, "github");
}

static int teardown(void **state)
{
    dq_fake_stop(&rw);
    dq_fake_stop(&gh);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state)
{
    if (dq_fake_reset(&rw) != 0)
        return -1;
    return dq_fake_reset(&gh);
}

static dq_provider *railway(const char *extra)
{
    /* extra comes first: cJSON finds the first of duplicate keys, so it overrides. */
    return dq_fake_provider("{\"type\":\"railway\"%s,\"name\":\"railway-main\",\"base_url\":\"%s/graphql/v2\","
                            "\"token\":\"" TOKEN "\",\"service_id\":\"svc-1\",\"environment_id\":\"env-1\","
                            "\"poll_interval\":\"30ms\",\"deadline\":\"5s\",\"timeout\":\"2s\",\"retries\":1,"
                            "\"retry_budget\":\"3s\"}",
                            extra ? extra : "", rw.base);
}

static dq_provider *github(void)
{
    return dq_fake_provider("{\"type\":\"github-actions\",\"name\":\"gha\",\"base_url\":\"%s\",\"owner\":\"acme\","
                            "\"repo\":\"shop\",\"workflow\":\"deploy.yml\",\"ref\":\"main\",\"token\":\"" GH_TOKEN
                            "\",\"poll_interval\":\"30ms\",\"deadline\":\"5s\",\"timeout\":\"2s\",\"retries\":1}",
                            gh.base);
}

/* ---- config ---- */

static void expect_config_error(const char *json, const char *needle)
{
    char err[256] = "";
    cJSON *cfg = cJSON_Parse(json);
    assert_non_null(cfg);
    assert_null(dq_provider_new(cfg, err, sizeof err));
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
    assert_null(strstr(err, "sekret"));
    cJSON_Delete(cfg);
}

static void test_config(void **state)
{
    expect_config_error("{\"type\":\"heroku\"}", "\"heroku\" is not one of");
    expect_config_error("{\"name\":\"x\"}", "(missing)");
    expect_config_error("{\"type\":\"railway\",\"token\":\"sekret-1234\"}", "\"service_id\" and \"environment_id\"");
    expect_config_error("{\"type\":\"railway\",\"service_id\":\"a\",\"environment_id\":\"b\"}", "a token");
    expect_config_error("{\"type\":\"railway\",\"service_id\":\"a\",\"environment_id\":\"b\",\"token\":\"sekret-1\","
                        "\"token_kind\":\"cookie\"}",
                        "token_kind");
    expect_config_error("{\"type\":\"railway\",\"token_env\":\"DQ_TEST_UNSET_TOKEN\"}", "DQ_TEST_UNSET_TOKEN");
    expect_config_error("{\"type\":\"github-actions\",\"owner\":\"a\",\"repo\":\"b\",\"token\":\"sekret-1\"}",
                        "\"workflow\" is required");
    expect_config_error("{\"type\":\"circleci\",\"slug\":\"repo\",\"token\":\"sekret-1\"}", "\"slug\"");
    expect_config_error("{\"type\":\"webhook\",\"url\":\"ftp://x\"}", "\"url\"");
    expect_config_error("{\"type\":\"command\",\"argv\":[]}", "\"argv\"");
    expect_config_error("{\"type\":\"command\",\"argv\":[\"x\",\"{secret}\"]}", "unknown {placeholder}");
    expect_config_error("{\"type\":\"railway\",\"service_id\":\"a\",\"environment_id\":\"b\",\"token\":\"sekret-1\","
                        "\"deadline\":\"soon\"}",
                        "positive durations");
    /* an unknown key, of any type, is refused and named (issue 14: it was ignored) */
    expect_config_error("{\"type\":\"railway\",\"service_id\":\"a\",\"environment_id\":\"b\",\"token\":\"sekret-1\","
                        "\"servce_id\":\"a\"}",
                        "provider railway: unknown key 'servce_id' (known: type, name,");
    expect_config_error("{\"type\":\"github-actions\",\"name\":\"gha\",\"owner\":\"a\",\"repo\":\"b\",\"workflow\":\"d.yml\","
                        "\"token\":\"sekret-1\",\"branch\":\"main\"}",
                        "provider gha: unknown key 'branch'");
    expect_config_error("{\"type\":\"circleci\",\"slug\":\"gh/a/b\",\"token\":\"sekret-1\",\"dealine\":\"5m\"}",
                        "unknown key 'dealine'");
    expect_config_error("{\"type\":\"command\",\"argv\":[\"true\"],\"env\":{}}", "unknown key 'env'");
    expect_config_error("{\"type\":\"webhook\",\"url\":\"https://x.example\",\"status_ur\":\"https://x.example/s\"}",
                        "unknown key 'status_ur'");

    setenv("DQ_TEST_RW_TOKEN", "from-env-sekret", 1);
    cJSON *cfg = cJSON_Parse("{\"type\":\"railway\",\"service_id\":\"a\",\"environment_id\":\"b\","
                             "\"token_env\":\"DQ_TEST_RW_TOKEN\",\"deadline\":\"2m\",\"poll_interval\":\"1500ms\"}");
    char err[256];
    dq_provider *p = dq_provider_new(cfg, err, sizeof err);
    assert_non_null(p);
    assert_string_equal(dq_provider_name(p), "railway");
    assert_string_equal(dq_provider_type(p), "railway");
    assert_int_equal(dq_provider_deadline_ms(p), 120000);
    assert_int_equal(dq_provider_poll_interval_ms(p), 1500);
    dq_provider_free(p);
    dq_provider_free(NULL);
    cJSON_Delete(cfg);

    size_t n = 0;
    while (dq_provider_types[n] != NULL)
        n++;
    assert_int_equal(n, 5);
}

/* ---- Railway ---- */

/* cost: (provider.h "what a run cost"): the keys, a wall-time estimate where the provider
 * gives no figures, "not priced" (never 0) without cost:, and file:line for a bad key in
 * deployq.yaml (dq_exec_chain_load checks the mapping as written). */
static void test_cost_config(void **state)
{
    const char *cmd = "{\"type\":\"command\",\"name\":\"sh\",\"argv\":[\"true\"]";
    char json[512], err[512] = "";
    dq_run_cost c;
    double rate;

    snprintf(json, sizeof json, "%s,\"cost\":{\"per_minute\":0.5,\"per_hour\":3}}", cmd);
    expect_config_error(json, "provider sh: cost: unknown key 'per_hour' (known: per_minute)");
    snprintf(json, sizeof json, "%s,\"cost\":{\"per_minute\":-1}}", cmd);
    expect_config_error(json, "provider sh: cost.per_minute: expected a number >= 0");
    snprintf(json, sizeof json, "%s,\"cost\":{\"per_minute\":\"cheap\"}}", cmd);
    expect_config_error(json, "cost.per_minute: expected a number >= 0");
    snprintf(json, sizeof json, "%s,\"cost\":{}}", cmd);
    expect_config_error(json, "cost.per_minute is required");
    snprintf(json, sizeof json, "%s,\"cost\":0.5}", cmd);
    expect_config_error(json, "cost: expected a mapping");
    /* only GitHub and CircleCI name what ran each job (runner label, resource class) */
    snprintf(json, sizeof json, "%s,\"cost\":{\"per_minute\":{\"default\":0.5}}}", cmd);
    expect_config_error(json, "a rate per runner label (github-actions) or resource class (circleci) is for those "
                              "types only");
    expect_config_error("{\"type\":\"circleci\",\"slug\":\"gh/a/b\",\"token\":\"sekret-1\","
                        "\"cost\":{\"per_minute\":{}}}",
                        "cost.per_minute: name at least one resource class or default");
    expect_config_error("{\"type\":\"circleci\",\"slug\":\"gh/a/b\",\"token\":\"sekret-1\","
                        "\"cost\":{\"per_minute\":\"cheap\"}}",
                        "cost.per_minute: expected a number >= 0 (the price of a minute) or a mapping of resource "
                        "class to that number");
    dq_provider *cp = dq_fake_provider("{\"type\":\"circleci\",\"slug\":\"gh/a/b\",\"token\":\"sekret-1\","
                                       "\"cost\":{\"per_minute\":{\"medium\":0.006,\"default\":0.01}}}");
    assert_non_null(cp);
    assert_true(dq_provider_rate(cp, "medium", &rate) && rate == 0.006);
    assert_true(dq_provider_rate(cp, "xlarge", &rate) && rate == 0.01);
    dq_provider_free(cp);
    expect_config_error("{\"type\":\"github-actions\",\"owner\":\"a\",\"repo\":\"b\",\"workflow\":\"d.yml\","
                        "\"token\":\"sekret-1\",\"cost\":{\"per_minute\":{\"ubuntu-latest\":true}}}",
                        "cost.per_minute.ubuntu-latest: expected a number >= 0");

    /* wall time x rate: 90 s at 0.5 a minute is 0.75, an estimate */
    dq_provider *p = dq_fake_provider("%s,\"cost\":{\"per_minute\":\"0.5\"}}", cmd);
    assert_non_null(p);
    assert_true(dq_provider_rate(p, "anything", &rate));
    assert_true(rate == 0.5);
    dq_provider_cost(p, &REQ, "x", 90000, &c);
    assert_int_equal(c.basis, DQ_COST_WALL_TIME);
    assert_string_equal(dq_cost_basis_name(c.basis), "wall_time");
    assert_true(c.minutes == 1.5);
    assert_true(c.amount == 0.75);
    dq_provider_free(p);
    /* no cost: not priced, which is not a cost of 0 */
    p = dq_fake_provider("%s}", cmd);
    assert_non_null(p);
    assert_false(dq_provider_rate(p, NULL, &rate));
    dq_provider_cost(p, &REQ, "x", 90000, &c);
    assert_int_equal(c.basis, DQ_COST_NONE);
    assert_null(dq_cost_basis_name(c.basis));
    dq_provider_free(p);

    /* from deployq.yaml: the line of the bad key, for a provider named from providers: */
    static const char yaml[] = "providers:\n"
                               "  sh:\n"
                               "    type: command\n"
                               "    argv: [\"true\"]\n"
                               "    cost:\n"
                               "      per_minute: 0.5\n"
                               "      per_mintue: 1\n"
                               "services:\n"
                               "  api:\n"
                               "    environments:\n"
                               "      staging:\n"
                               "        providers: [sh]\n"
                               "      production:\n"
                               "        providers:\n"
                               "          - {type: command, name: local, argv: [\"true\"], cost: {per_minute: -2}}\n";
    dq_config *cfg = dq_config_load_string(yaml, sizeof yaml - 1, "deployq.yaml", err, sizeof err);
    dq_provider **ps;
    size_t n;
    assert_non_null(cfg);
    assert_int_equal(dq_exec_chain_load(cfg, "api", "staging", &ps, &n, err, sizeof err), -1);
    assert_string_equal(err, "deployq.yaml:7: api/staging: provider sh: cost: unknown key 'per_mintue' (known: "
                             "per_minute)");
    assert_int_equal(dq_exec_chain_load(cfg, "api", "production", &ps, &n, err, sizeof err), -1);
    assert_string_equal(err, "deployq.yaml:15: api/production: provider local: cost.per_minute: expected a number "
                             ">= 0 (the price of a minute)");
    dq_config_free(cfg);
}

static void test_railway_success(void **state)
{
    dq_provider *p = railway(NULL);
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"succeed\",\"steps\":3}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider, "railway-main");
    assert_string_equal(res.provider_type, "railway");
    assert_string_equal(res.provider_status, "SUCCESS");
    assert_string_equal(res.url, "https://svc-1-production.up.railway.app");
    assert_string_equal(res.reason, "");
    assert_string_equal(res.failure, "");
    assert_int_equal(strlen(res.provider_id), 36);
    assert_int_equal(ev.started, 1);
    assert_int_equal(ev.failed, 0);
    assert_string_equal(ev.started_id, res.provider_id);

    cJSON *calls = dq_fake_calls(&rw);
    /* one deploy, then 3 polls in flight and the terminal one */
    assert_int_equal(dq_fake_count(calls, "POST", "/graphql/v2"), 5);
    assert_true(dq_fake_all_fenced(calls, 42));
    assert_int_equal(dq_fake_max_concurrent(calls), 1);
    const cJSON *c = dq_fake_call(calls, "POST", "/graphql/v2", 0);
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(c, "auth");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(auth, "scheme")->valuestring, "Bearer");
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "variables");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(vars, "serviceId")->valuestring, "svc-1");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(vars, "environmentId")->valuestring, "env-1");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(vars, "commitSha")->valuestring, REQ.version);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_railway_project_token(void **state)
{
    dq_provider *p = railway(",\"token_kind\":\"project\"");
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    cJSON *calls = dq_fake_calls(&rw);
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/graphql", 0), "auth");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(auth, "scheme")->valuestring, "Project-Access-Token");
    cJSON_Delete(calls);
    dq_provider_free(p);
}

static void test_railway_build_failure_no_failover(void **state)
{
    dq_provider *ps[2] = {railway(NULL), github()};
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"fail_after_building\",\"steps\":2}"), 0);
    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.provider, "railway-main");
    assert_string_equal(res.provider_status, "FAILED");
    assert_non_null(strstr(res.reason, "ended with status FAILED"));
    assert_string_equal(res.failure, "build_failed");
    assert_int_equal(res.providers_tried, 1);
    assert_int_equal(ev.failed, 0);
    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/dispatches"), 0);
    cJSON_Delete(calls);
    calls = dq_fake_calls(&rw);
    /* the statuses seen on the way: QUEUED, BUILDING, FAILED */
    assert_int_equal(dq_fake_count(calls, "POST", "/graphql/v2"), 4);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_railway_crash_is_failure(void **state)
{
    dq_provider *p = railway(NULL);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"crash\",\"steps\":1}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.provider_status, "CRASHED");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_railway_in_flight_forever_times_out(void **state)
{
    dq_provider *p = railway(",\"deadline\":\"400ms\"");
    dq_chain_result res;
    dq_chain_options o = {.poll_interval_ms = 50, .cancel_on_timeout = 1};

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_true(res.duration_ms >= 400);
    assert_true(res.duration_ms < 3000);
    assert_string_equal(res.error_class, "timeout");
    assert_string_equal(res.failure, "timeout");
    assert_string_equal(res.provider_status, "BUILDING");
    assert_int_equal(strncmp(res.reason, "timeout: railway-main", 21), 0);
    cJSON *calls = dq_fake_calls(&rw);
    /* the deploy was cancelled: nothing is left in flight on the target */
    const cJSON *active = cJSON_GetObjectItemCaseSensitive(calls, "active");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(active, "svc-1/env-1")->valueint, 0);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_railway_needs_approval_is_in_flight(void **state)
{
    dq_provider *p = railway(",\"deadline\":\"200ms\"");
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"needs_approval\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.provider_status, "NEEDS_APPROVAL");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_railway_graphql_error(void **state)
{
    dq_provider *p = railway(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    /* The message echoes the token: it must not survive into the detail. */
    assert_int_equal(
        dq_fake_script(&rw, "{\"mode\":\"graphql_error\",\"message\":\"Problem processing request for " TOKEN "\"}"),
        0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    assert_string_equal(e.error_class, "bad_response");
    assert_int_equal(e.http_status, 200);
    assert_string_equal(e.detail, "serviceInstanceDeployV2: GraphQL error: Problem processing request for ***");
    assert_string_equal(id, "");

    dq_chain_result res;
    dq_provider *chain[2] = {p, p};
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    assert_int_equal(dq_chain_run(chain, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.failure, "internal");
    assert_string_equal(res.error_class, "bad_response");
    assert_int_equal(res.providers_tried, 1);
    assert_int_equal(ev.failed, 0);
    assert_null(strstr(res.reason, TOKEN));
    dq_chain_result_clear(&res);

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"graphql_error\",\"message\":\"Not Authorized\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "unauthorized");
    dq_provider_free(p);
}

static void test_railway_refusals_unavailable(void **state)
{
    static const struct {
        const char *script;
        const char *cls;
        long status;
        int calls;
    } cases[] = {
        {"{\"mode\":\"http_402\"}", "payment_required", 402, 1},
        {"{\"mode\":\"http_403\"}", "forbidden", 403, 1},
        {"{\"mode\":\"http_401\"}", "unauthorized", 401, 1},
        /* retries = 1: two deploy calls, each followed by a lookup of what it created */
        {"{\"mode\":\"http_5xx\"}", "http_5xx", 503, 4},
    };
    dq_provider *p = railway(NULL);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;
        assert_int_equal(dq_fake_reset(&rw), 0);
        assert_int_equal(dq_fake_script(&rw, cases[i].script), 0);
        assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
        assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
        assert_string_equal(e.error_class, cases[i].cls);
        assert_int_equal(e.http_status, cases[i].status);
        assert_null(strstr(e.detail, TOKEN));
        cJSON *calls = dq_fake_calls(&rw);
        assert_int_equal(dq_fake_count(calls, "POST", "/graphql/v2"), cases[i].calls);
        cJSON_Delete(calls);
    }
    dq_provider_free(p);
}

static void test_railway_connect_refused(void **state)
{
    dq_provider *p = dq_fake_provider("{\"type\":\"railway\",\"base_url\":\"http://127.0.0.1:1/graphql/v2\","
                                      "\"token\":\"" TOKEN "\",\"service_id\":\"s\",\"environment_id\":\"e\","
                                      "\"retries\":1,\"timeout\":\"1s\"}");
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "connect");
    assert_non_null(strstr(e.detail, "serviceInstanceDeployV2"));
    dq_provider_free(p);
}

static void test_railway_429_retry_after(void **state)
{
    dq_provider *p = railway(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"rate_limit\",\"retry_after\":1,\"fail_times\":1}"), 0);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_true(dq_mono_ms() - t0 >= 1000);
    assert_int_equal(strlen(id), 36);

    /* A Retry-After longer than the budget: unavailable at once, not waited out. */
    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"rate_limit\",\"retry_after\":60}"), 0);
    t0 = dq_mono_ms();
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_true(dq_mono_ms() - t0 < 1000);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "rate_limited");
    assert_non_null(strstr(e.detail, "Retry-After beyond the retry budget"));
    dq_provider_free(p);
}

static void test_railway_status_errors(void **state)
{
    dq_provider *p = railway(NULL);
    dq_deploy_status st;
    dq_provider_error e;

    assert_int_equal(dq_provider_status(p, &REQ, "no-such-deployment", &st, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    assert_string_equal(e.error_class, "bad_response");
    assert_non_null(strstr(e.detail, "Deployment not found"));

    /* A status outage while polling is waited out, never failed over. */
    char id[DQ_PROVIDER_ID_LEN];
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"status_5xx\",\"fail_times\":3}"), 0);
    dq_chain_result res;
    assert_int_equal(dq_chain_resume(p, id, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_status, "SUCCESS");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_railway_rollback_and_cancel(void **state)
{
    dq_provider *p = railway(NULL);
    char id[DQ_PROVIDER_ID_LEN], nid[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_chain_result res;

    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    dq_strlcpy(id, res.provider_id, sizeof id);
    dq_chain_result_clear(&res);

    assert_int_equal(dq_provider_rollback(p, &REQ, id, nid, sizeof nid, &e), 0);
    assert_int_equal(strlen(nid), 36);
    assert_string_not_equal(nid, id);
    assert_int_equal(dq_provider_cancel(p, &REQ, nid, &e), 0);
    dq_deploy_status st;
    assert_int_equal(dq_provider_status(p, &REQ, nid, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_FAILED);
    assert_string_equal(st.raw, "REMOVED");
    dq_provider_status_clear(&st);
    dq_provider_free(p);

    p = railway(",\"rollback\":\"rollback\"");
    assert_int_equal(dq_provider_rollback(p, &REQ, id, nid, sizeof nid, &e), 0);
    assert_int_equal(strlen(nid), 36); /* the deployment the rollback created (test_provider_railway.c) */
    cJSON *calls = dq_fake_calls(&rw);
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(calls, "calls"));
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(calls, "calls"), n - 2);
    const char *q = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "query")->valuestring;
    assert_non_null(strstr(q, "deploymentRollback(id: $id)"));
    assert_true(dq_fake_all_fenced(calls, 42));
    cJSON_Delete(calls);
    dq_provider_free(p);
}

/* ---- the chain ---- */

static void test_chain_fails_over_from_402(void **state)
{
    dq_provider *ps[2] = {railway(NULL), github()};
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"http_402\",\"message\":\"Trial expired for " TOKEN "\"}"), 0);
    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(ev.failed, 1);
    assert_string_equal(ev.failed_provider, "railway-main");
    assert_string_equal(ev.failed_class, "payment_required");
    assert_null(strstr(ev.failed_detail, TOKEN));
    assert_non_null(strstr(ev.failed_detail, "Trial expired for ***"));
    assert_int_equal(ev.started, 1);
    assert_string_equal(ev.started_provider, "gha");
    assert_string_equal(res.provider, "gha");
    assert_string_equal(res.provider_type, "github-actions");
    assert_string_equal(res.provider_status, "success");
    assert_int_equal(res.providers_tried, 2);

    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/dispatches"), 1);
    assert_true(dq_fake_all_fenced(calls, 42));
    assert_int_equal(dq_fake_max_concurrent(calls), 1);
    cJSON_Delete(calls);
    calls = dq_fake_calls(&rw);
    assert_int_equal(dq_fake_max_concurrent(calls), 0);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_chain_all_unavailable(void **state)
{
    dq_provider *ps[2] = {railway(NULL), github()};
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"http_402\"}"), 0);
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"http_403\"}"), 0);
    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_int_equal(ev.failed, 2);
    assert_int_equal(ev.started, 0);
    assert_string_equal(res.reason, "no provider available (railway-main: payment_required; gha: forbidden)");
    assert_string_equal(res.error_class, "forbidden");
    assert_string_equal(res.failure, "all_providers_unavailable");
    assert_string_equal(res.provider_id, "");
    dq_chain_result_clear(&res);

    assert_int_equal(dq_chain_run(ps, 0, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.reason, "no provider available (empty chain)");
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_chain_stops_when_told(void **state)
{
    dq_provider *p = railway(NULL);
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"in_flight_forever\"}"), 0);
    ev.polls_left = 5;
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_STOPPED);
    assert_true(dq_mono_ms() - t0 < 2000);
    assert_int_equal(ev.started, 1);
    assert_int_equal(strlen(res.provider_id), 36);
    dq_chain_result_clear(&res);

    ev.polls_left = 0;
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_STOPPED);
    assert_int_equal(ev.started, 1); /* nothing deployed the second time */
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_chain_resume_does_not_redeploy(void **state)
{
    dq_provider *p = railway(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"succeed\",\"steps\":2}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_chain_resume(p, id, 1000, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_id, id);
    assert_true(res.duration_ms >= 1000);
    cJSON *calls = dq_fake_calls(&rw);
    int deploys = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls, "calls"))
    {
        const char *q =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "query")->valuestring;
        deploys += strstr(q, "serviceInstanceDeployV2") != NULL;
    }
    assert_int_equal(deploys, 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* Time already spent counts against the deadline. */
    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_chain_resume(p, id, 60000, &REQ, NULL, &FAST, &res), DQ_CHAIN_TIMEOUT);
    assert_true(dq_mono_ms() - t0 < 1000);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

/* ---- issue 10: truth at the provider boundary ---- */

/* How many recorded Railway calls ran the operation op (a name in the query text). */
static int rw_ops(const cJSON *calls, const char *op)
{
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls, "calls"))
    {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "query");
        n += cJSON_IsString(q) && strstr(q->valuestring, op) != NULL;
    }
    return n;
}

static void test_chain_fails_over_from_startup_failure(void **state)
{
    dq_provider *ps[2] = {github(), railway(NULL)};
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    /* GitHub accepts, then the run ends startup_failure without a job: unavailable. */
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"startup_failure\"}"), 0);
    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(ev.failed, 1);
    assert_string_equal(ev.failed_provider, "gha");
    assert_string_equal(ev.failed_class, "not_started");
    assert_int_equal(ev.started, 2); /* the GitHub run, then Railway's deployment */
    assert_string_equal(ev.started_provider, "railway-main");
    assert_string_equal(res.provider, "railway-main");
    assert_string_equal(res.provider_status, "SUCCESS");
    assert_int_equal(res.providers_tried, 2);
    dq_chain_result_clear(&res);

    /* The same run that did start a job: a failed deploy, Railway never asked. */
    assert_int_equal(dq_fake_reset(&rw), 0);
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"startup_failure\",\"job_started\":true}"), 0);
    cb = dq_fake_callbacks(&ev);
    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.failure, "build_failed");
    assert_string_equal(res.provider, "gha");
    assert_int_equal(ev.failed, 0);
    cJSON *calls = dq_fake_calls(&rw);
    assert_int_equal(rw_ops(calls, "serviceInstanceDeployV2"), 0);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* After a restart: resuming the recorded GitHub run fails over the same way. */
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"startup_failure\"}"), 0);
    assert_int_equal(dq_provider_deploy(ps[0], &REQ, id, sizeof id, &e), 0);
    cb = dq_fake_callbacks(&ev);
    assert_int_equal(dq_chain_resume_at(ps, 2, 0, id, 500, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(ev.failed, 1);
    assert_int_equal(ev.started, 1);
    assert_string_equal(res.provider, "railway-main");
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_chain_fails_over_from_queued(void **state)
{
    dq_provider *ps[2] = {dq_fake_provider("{\"type\":\"github-actions\",\"name\":\"gha\",\"base_url\":\"%s\","
                                           "\"owner\":\"acme\",\"repo\":\"shop\",\"workflow\":\"deploy.yml\","
                                           "\"token\":\"" GH_TOKEN "\",\"poll_interval\":\"30ms\",\"deadline\":\"5s\","
                                           "\"queue_timeout\":\"400ms\",\"timeout\":\"2s\",\"retries\":1}",
                                           gh.base),
                          railway(NULL)};
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"queued_forever\"}"), 0);
    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider, "railway-main");
    assert_int_equal(ev.failed, 1);
    assert_string_equal(ev.failed_class, "not_started");
    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/cancel"), 1);
    /* cancelled before Railway was asked: never two deploys in flight */
    const cJSON *cancel = dq_fake_call(calls, "POST", "/cancel", 0);
    double cancelled_at = cJSON_GetObjectItemCaseSensitive(cancel, "time")->valuedouble;
    cJSON_Delete(calls);
    calls = dq_fake_calls(&rw);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls, "calls"))
        assert_true(cJSON_GetObjectItemCaseSensitive(c, "time")->valuedouble > cancelled_at);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_railway_create_then_lost_answer(void **state)
{
    static const char *const scripts[] = {"{\"create_then\":\"502\",\"steps\":1}",
                                          "{\"create_then\":\"hang\",\"hang_ms\":3000,\"steps\":1}"};
    dq_provider *ps[2] = {railway(NULL), github()};

    for (size_t i = 0; i < 2; i++) {
        dq_fake_events ev;
        dq_chain_callbacks cb = dq_fake_callbacks(&ev);
        dq_chain_result res;
        assert_int_equal(dq_fake_reset(&rw), 0);
        assert_int_equal(dq_fake_reset(&gh), 0);
        assert_int_equal(dq_fake_script(&rw, scripts[i]), 0);
        assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
        assert_string_equal(res.provider, "railway-main");
        assert_int_equal(ev.failed, 0);
        assert_int_equal(ev.started, 1);
        cJSON *calls = dq_fake_calls(&rw);
        assert_int_equal(rw_ops(calls, "serviceInstanceDeployV2"), 1);
        assert_int_equal(rw_ops(calls, "deployments("), 1);
        assert_int_equal(dq_fake_max_concurrent(calls), 1);
        cJSON_Delete(calls);
        calls = dq_fake_calls(&gh);
        assert_int_equal(dq_fake_count(calls, "POST", "/dispatches"), 0);
        cJSON_Delete(calls);
        dq_chain_result_clear(&res);
    }
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_railway_cancel_confirmed_or_not(void **state)
{
    dq_provider *p = railway(",\"deadline\":\"300ms\"");
    dq_chain_result res;
    dq_chain_options o = {.poll_interval_ms = 30, .cancel_on_timeout = 1, .cancel_wait_ms = 300};

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "confirmed");
    assert_false(res.outcome_unknown);
    assert_non_null(strstr(res.reason, "cancelled (now REMOVED)"));
    dq_chain_result_clear(&res);

    assert_int_equal(dq_fake_script(&rw, "{\"mode\":\"in_flight_forever\",\"cancel\":\"refuse\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "unconfirmed");
    assert_true(res.outcome_unknown);
    assert_string_equal(res.provider_status, "BUILDING");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_cost_config),
        cmocka_unit_test_setup(test_railway_success, reset),
        cmocka_unit_test_setup(test_railway_project_token, reset),
        cmocka_unit_test_setup(test_railway_build_failure_no_failover, reset),
        cmocka_unit_test_setup(test_railway_crash_is_failure, reset),
        cmocka_unit_test_setup(test_railway_in_flight_forever_times_out, reset),
        cmocka_unit_test_setup(test_railway_needs_approval_is_in_flight, reset),
        cmocka_unit_test_setup(test_railway_graphql_error, reset),
        cmocka_unit_test_setup(test_railway_refusals_unavailable, reset),
        cmocka_unit_test(test_railway_connect_refused),
        cmocka_unit_test_setup(test_railway_429_retry_after, reset),
        cmocka_unit_test_setup(test_railway_status_errors, reset),
        cmocka_unit_test_setup(test_railway_rollback_and_cancel, reset),
        cmocka_unit_test_setup(test_chain_fails_over_from_402, reset),
        cmocka_unit_test_setup(test_chain_all_unavailable, reset),
        cmocka_unit_test_setup(test_chain_stops_when_told, reset),
        cmocka_unit_test_setup(test_chain_resume_does_not_redeploy, reset),
        cmocka_unit_test_setup(test_chain_fails_over_from_startup_failure, reset),
        cmocka_unit_test_setup(test_chain_fails_over_from_queued, reset),
        cmocka_unit_test_setup(test_railway_create_then_lost_answer, reset),
        cmocka_unit_test_setup(test_railway_cancel_confirmed_or_not, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
